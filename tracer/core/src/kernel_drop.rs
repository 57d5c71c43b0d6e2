//! The kernel's own account of a dropped probe: its drop reason, classified into the causes a
//! person acts on, and the choice of the drop that explains a verdict — the representative
//! probe's own, in the namespace it vanished in when there are several.

use serde::{Deserialize, Serialize};

use crate::path::{ProbeSummary, Verdict};
use crate::seam::KernelDrop;

/// What a kernel drop reason means for the person reading the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelCause {
    /// NETFILTER_DROP: a netfilter rule or chain policy.
    Netfilter,
    /// IP_RPFILTER: reverse-path filtering.
    ReversePath,
    /// IP_INNOROUTES, IP_OUTNOROUTES: no route to the destination.
    NoRoute,
    /// NEIGH_*: the next hop's link-layer address could not be resolved.
    Neighbour,
    /// IP_INHDR in ip_forward / ip6_forward: the TTL (hop limit) ran out.
    TtlExceeded,
    /// PKT_TOO_BIG: bigger than the next link and not allowed to fragment.
    TooBig,
    /// NO_SOCKET: it reached a host with no socket for it — the end of the path, not a fault
    /// on it (the source's ICMP stack discarding the echo reply dye's raw socket also got; a
    /// closed port, which its ICMP error or RST already tells).
    NoSocket,
    /// Any other reason: named, not explained.
    Other,
}

impl KernelCause {
    /// Classifies a kernel reason name (`IP_RPFILTER`) dropped in `function` (`ip_forward+0x1c`).
    pub fn of(reason: Option<&str>, function: Option<&str>) -> KernelCause {
        let Some(reason) = reason else {
            return KernelCause::Other;
        };
        // `ip_forward+0x1c4` → `ip_forward`; `ip_fragment.constprop.0` → `ip_fragment`.
        let base = function.map(|f| f.split(['+', '.']).next().unwrap_or(f));
        let in_forward = base.is_some_and(|f| f == "ip_forward" || f == "ip6_forward");
        // A DF packet larger than the link is let go in the fragmenter with no reason of its
        // own (NOT_SPECIFIED on 6.18): where it died says what happened.
        let in_fragmenter =
            base.is_some_and(|f| matches!(f, "ip_fragment" | "ip_do_fragment" | "ip6_fragment"));
        match reason {
            _ if in_fragmenter => KernelCause::TooBig,
            "NETFILTER_DROP" => KernelCause::Netfilter,
            "IP_RPFILTER" => KernelCause::ReversePath,
            "IP_INNOROUTES" | "IP_OUTNOROUTES" => KernelCause::NoRoute,
            "PKT_TOO_BIG" => KernelCause::TooBig,
            "NO_SOCKET" => KernelCause::NoSocket,
            "IP_INHDR" if in_forward => KernelCause::TtlExceeded,
            r if r.starts_with("NEIGH_") => KernelCause::Neighbour,
            _ => KernelCause::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KernelCause::Netfilter => "netfilter",
            KernelCause::ReversePath => "reverse_path",
            KernelCause::NoRoute => "no_route",
            KernelCause::Neighbour => "neighbour",
            KernelCause::TtlExceeded => "ttl_exceeded",
            KernelCause::TooBig => "too_big",
            KernelCause::NoSocket => "no_socket",
            KernelCause::Other => "other",
        }
    }
}

impl KernelDrop {
    pub fn cause(&self) -> KernelCause {
        KernelCause::of(self.reason.as_deref(), self.function.as_deref())
    }
}

/// The kernel drop that explains `verdict`: one of the representative probe's own drops (the
/// probe the verdict is about), preferring the namespace it vanished in, then the latest.
/// None for a probe that got through; a drop for want of a socket explains nothing.
pub fn explaining(
    verdict: &Verdict,
    probes: &[ProbeSummary],
    drops: &[KernelDrop],
) -> Option<KernelDrop> {
    let kind = verdict.kind();
    if kind.is_success() {
        return None;
    }
    let seq = match &verdict.partial {
        Some(p) => p.seq,
        None => probes.iter().find(|p| p.verdict == kind)?.seq,
    };
    let own = || {
        drops
            .iter()
            .filter(|d| d.seq == seq && d.cause() != KernelCause::NoSocket)
    };
    let inside = verdict.dropped_inside();
    own()
        .filter(|d| inside.is_some() && d.netns.as_deref() == inside)
        .max_by_key(|d| d.ts_ns)
        .or_else(|| own().max_by_key(|d| d.ts_ns))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{Outcome, Partial, VerdictKind};

    fn drop(seq: u32, netns: &str, reason: &str, ts: u64) -> KernelDrop {
        KernelDrop {
            seq,
            ts_ns: ts,
            netns: Some(netns.into()),
            netns_inode: 1,
            ifname: Some("eth0".into()),
            ifindex: 2,
            reason_code: 0,
            reason: Some(reason.into()),
            function: Some("ip_forward+0x10".into()),
        }
    }

    fn summary(seq: u32, verdict: VerdictKind) -> ProbeSummary {
        ProbeSummary {
            seq,
            verdict,
            path: Vec::new(),
            rtt_ns: None,
        }
    }

    #[test]
    fn a_drop_in_the_fragmenter_is_too_big() {
        assert_eq!(
            KernelCause::of(Some("NOT_SPECIFIED"), Some("ip_fragment.constprop.0+0x84")),
            KernelCause::TooBig
        );
        assert_eq!(
            KernelCause::of(Some("NOT_SPECIFIED"), Some("ip_finish_output2+0x84")),
            KernelCause::Other
        );
    }

    #[test]
    fn a_drop_for_want_of_a_socket_explains_nothing() {
        let v = Verdict {
            outcome: Outcome::Timeout { sent: true },
            last_seen: None,
            partial: None,
            dropped_by: None,
            kernel_drop: None,
        };
        let probes = [summary(1, VerdictKind::Timeout)];
        let drops = [drop(1, "pod-a", "NO_SOCKET", 5)];
        assert_eq!(explaining(&v, &probes, &drops), None);
        let drops = [drops[0].clone(), drop(1, "node-1", "IP_RPFILTER", 3)];
        assert_eq!(
            explaining(&v, &probes, &drops).map(|d| d.cause()),
            Some(KernelCause::ReversePath)
        );
    }

    #[test]
    fn classifies_reasons() {
        assert_eq!(
            KernelCause::of(Some("IP_RPFILTER"), None),
            KernelCause::ReversePath
        );
        assert_eq!(
            KernelCause::of(Some("NEIGH_FAILED"), None),
            KernelCause::Neighbour
        );
        assert_eq!(
            KernelCause::of(Some("IP_INHDR"), Some("ip_forward+0x2a")),
            KernelCause::TtlExceeded
        );
        assert_eq!(
            KernelCause::of(Some("IP_INHDR"), Some("ip_rcv_core+0x2a")),
            KernelCause::Other
        );
        assert_eq!(KernelCause::of(None, None), KernelCause::Other);
    }

    #[test]
    fn the_representative_probes_own_drop() {
        let verdict = Verdict {
            outcome: Outcome::Timeout { sent: true },
            last_seen: None,
            partial: Some(Partial {
                ok: 1,
                total: 2,
                seq: 2,
            }),
            dropped_by: None,
            kernel_drop: None,
        };
        let probes = [
            summary(1, VerdictKind::Answered),
            summary(2, VerdictKind::Timeout),
        ];
        // Probe 1's later drop (a retransmitted clone, say) is not probe 2's.
        let drops = [
            drop(2, "node-2", "IP_RPFILTER", 10),
            drop(1, "node-1", "NETFILTER_DROP", 20),
        ];
        let d = explaining(&verdict, &probes, &drops).unwrap();
        assert_eq!((d.seq, d.reason.as_deref()), (2, Some("IP_RPFILTER")));
        assert!(explaining(&verdict, &probes, &drops[1..]).is_none());
    }
}
