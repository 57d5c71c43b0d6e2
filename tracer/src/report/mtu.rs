//! The `dye.mtu/v1` report, projected from the core's typed MTU result: the schema's words,
//! and every sentence — why the link limits, what to configure, what passes but costs, what
//! happened to the PMTU cache.

use std::net::IpAddr;

use dye_core::mtu::links::{Encapsulation, LinkLimit};
use dye_core::mtu::outcome::{Arrival, ProbeOutcome};
use dye_core::mtu::result::{
    Found, Limit as CoreLimit, MtuResult, ProbeResult, Recommendation as CoreRecommendation,
    Warning, Why,
};
use dye_core::mtu::underlay::BeyondNode;
use dye_core::path::{Next, Transport};
use dye_core::seam::{PmtuRemoval, PmtuRestore};
use dye_core::snapshot::Route;

use super::mtu_v1::{
    BeyondNode as BeyondReport, CacheReport, Limit, MtuReport, ProbeRecord, Recommendation,
    Refusal as RefusalReport, SearchReport, Sender, UnderlayHop as UnderlayHopReport, SCHEMA,
};

/// The report of an MTU search.
pub fn project(r: &MtuResult) -> MtuReport {
    let plan = &r.plan;
    MtuReport {
        schema: SCHEMA.to_string(),
        from: plan.from.clone(),
        src: r.src.to_string(),
        to: dye_core::model::Endpoint {
            addr: plan.to,
            port: plan.port,
        }
        .to_string(),
        to_name: plan.to_name.clone(),
        proto: plan.proto.as_str().to_string(),
        path_mtu: r.path_mtu,
        status: r.status,
        limit: r.limit.as_ref().map(|l| limit(l, &plan.from)),
        max_payload: r.max_payload,
        recommendation: r.recommendation.as_ref().map(recommendation),
        warnings: r.warnings.iter().map(|w| warning(w, &plan.from)).collect(),
        pmtu_cache: cache_report(plan.to, &r.source, &r.pmtu),
        search: SearchReport {
            min: r.search.min,
            max: r.search.max,
            source_mtu: r.search.source_mtu,
            probes_sent: r.search.probes_sent,
            probe_wait_ms: r.search.wait.as_millis() as u64,
            elapsed_ms: r.search.elapsed.as_millis() as u64,
            capture_points: r.search.capture_points,
        },
        probes: r.probes.iter().map(probe).collect(),
    }
}

/// `netns/ifname (dir)`.
fn place(n: &Next) -> String {
    format!("{} ({})", n.at, n.direction)
}

fn sizes(s: &[u32]) -> String {
    s.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

fn mtu_word(m: Option<u32>) -> String {
    m.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
}

/// An ICMP error's name, as dye's decoder names it.
fn icmp_words(t: &Transport) -> String {
    match t {
        Transport::Icmp { v6, ty, code, .. } => {
            dye_core::path::icmp_name(*v6, *ty, *code).to_string()
        }
        other => other.to_string(),
    }
}

fn probe(p: &ProbeResult) -> ProbeRecord {
    let last_seen = p.last_seen.as_ref().map(place);
    let detail = match &p.outcome {
        ProbeOutcome::Passed(Arrival::Answer { answer, from }) => format!("{answer} from {from}"),
        ProbeOutcome::Passed(Arrival::DestinationError { error, from }) => {
            format!("ICMP {} from {from}", icmp_words(error))
        }
        ProbeOutcome::Passed(Arrival::SeenEntering) => {
            "seen entering the destination's namespace (no answer)".into()
        }
        ProbeOutcome::TooBig { sender, mtu } => format!(
            "too big: {sender} advertised next-hop MTU {}",
            mtu_word(*mtu)
        ),
        ProbeOutcome::Refused { sender, error } => {
            format!("ICMP {} from {sender}", icmp_words(error))
        }
        ProbeOutcome::Vanished => match (&last_seen, &p.vanished_at) {
            (Some(l), Some(n)) => format!(
                "vanished after {l}; never crossed {} (MTU {})",
                n.name(),
                n.mtu
            ),
            (Some(l), None) => format!("vanished after {l}"),
            (None, _) => "never seen leaving the source".into(),
        },
    };
    ProbeRecord {
        seq: p.seq,
        size: p.size,
        outcome: p.outcome.label().to_string(),
        detail,
        rtt_ms: p.rtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1000.0),
        last_seen,
    }
}

/// The limit at link `l`, explained.
fn limit_at(l: &LinkLimit, explanation: String) -> Limit {
    Limit {
        link: l.name(),
        netns: l.netns.clone(),
        ifname: l.ifname.clone(),
        mtu: l.mtu,
        encapsulation: l.encapsulation.clone(),
        signalled_by: None,
        vanished_after: None,
        also_at_this_mtu: Vec::new(),
        beyond_node: None,
        explanation,
    }
}

fn limit(l: &CoreLimit, from: &str) -> Limit {
    match (&l.found, &l.link) {
        (
            Found::BlackHole {
                vanished_after,
                beyond_node,
            },
            Some(link),
        ) => {
            let after = vanished_after
                .as_ref()
                .map(place)
                .unwrap_or_else(|| "the source".into());
            let beyond = beyond_node.as_deref();
            let explanation = match (&link.encapsulation, beyond) {
                (Some(e), Some(b)) => beyond_words(e, b, link, &after),
                _ => black_hole_words(link, &after),
            };
            Limit {
                vanished_after: vanished_after.as_ref().map(place),
                beyond_node: beyond.map(beyond_report),
                ..limit_at(link, explanation)
            }
        }
        (
            Found::Signalled {
                sender,
                refused,
                outcome,
                last_seen,
            },
            link,
        ) => signalled(sender, *refused, outcome, last_seen.as_ref(), link.as_ref()),
        (
            Found::Healthy {
                underlay,
                own_interface,
                also_at_this_mtu,
            },
            Some(link),
        ) => healthy(
            link,
            underlay.as_ref(),
            *own_interface,
            also_at_this_mtu,
            from,
        ),
        // A black hole or a healthy path always name their link.
        (_, None) => Limit {
            link: String::new(),
            netns: String::new(),
            ifname: String::new(),
            mtu: 0,
            encapsulation: None,
            signalled_by: None,
            vanished_after: None,
            also_at_this_mtu: Vec::new(),
            beyond_node: None,
            explanation: String::new(),
        },
    }
}

/// A tunnel black hole past the node: which router port, how the node learned it, and why
/// the pod never does.
fn beyond_words(e: &Encapsulation, b: &BeyondNode, link: &LinkLimit, after: &str) -> String {
    let u = &b.underlay;
    let path = u
        .path
        .iter()
        .map(|h| format!("{} ({})", h.at, h.mtu))
        .collect::<Vec<_>>()
        .join(" → ");
    let mut out = format!(
        "{} ({}, {} bytes of overhead) sends its outer packets to {} over {path}; {} has MTU {}, so inner packets above {} cannot cross it, and the outer DF bit forbids splitting them",
        e.tunnel, e.kind, e.overhead, u.remote, link.name(), link.mtu, link.fits
    );
    if let Some(r) = &b.evidence.refusal {
        let who = if r.sender_netns.is_empty() {
            r.sender.to_string()
        } else {
            format!("{} ({})", r.sender_netns.join(", "), r.sender)
        };
        out.push_str(&format!(
            ". {who} refused the outer packet with ICMP fragmentation needed (next-hop MTU {}) sent to the node's address {} (seen at {})",
            mtu_word(r.mtu),
            r.to,
            r.seen_at
        ));
    }
    if let Some(p) = u.node_pmtu {
        out.push_str(&format!(
            ". {} cached path MTU {p} towards {} and from then on its {} drops inner packets above {} itself",
            u.node,
            u.remote,
            e.tunnel,
            p.saturating_sub(e.overhead)
        ));
    }
    if let Some(n) = &b.evidence.outer_last_seen {
        out.push_str(&format!(". The outer packet was last seen at {}", place(n)));
    }
    out.push_str(&format!(
        ". Probes above {} were last seen at {after}. The pod is never told: the ICMP error goes to the outer source — the node — not to the pod, and the node's tunnel device drops oversize inner packets without an ICMP error of its own: a black hole",
        link.fits
    ));
    out
}

fn beyond_report(b: &BeyondNode) -> BeyondReport {
    let u = &b.underlay;
    BeyondReport {
        node: u.node.clone(),
        remote: u.remote.to_string(),
        path: u
            .path
            .iter()
            .map(|h| UnderlayHopReport {
                link: h.at.to_string(),
                mtu: h.mtu,
                cached_pmtu: h.cached_pmtu,
            })
            .collect(),
        node_cached_pmtu: u.node_pmtu,
        refused_by: b.evidence.refusal.as_ref().map(|r| RefusalReport {
            sender: r.sender.to_string(),
            netns: r.sender_netns.clone(),
            to: r.to.to_string(),
            advertised_mtu: r.mtu,
            seen_at: r.seen_at.to_string(),
        }),
        outer_last_seen: b.evidence.outer_last_seen.as_ref().map(place),
    }
}

fn black_hole_words(link: &LinkLimit, after: &str) -> String {
    match &link.encapsulation {
        Some(e) => format!(
            "{} MTU {} needs {} on the underlay ({} + {} bytes of {} overhead); {} has {}. Probes above {} were last seen at {after} and never left through {}, and nobody sent ICMP: a black hole",
            e.tunnel, e.tunnel_mtu, e.needs_underlay_mtu, e.tunnel_mtu, e.overhead, e.kind,
            link.name(), link.mtu, link.fits, link.name()
        ),
        None => format!(
            "probes above {} were last seen at {after} and never crossed {} (MTU {}); nobody sent ICMP: a black hole",
            link.fits,
            link.name(),
            link.mtu
        ),
    }
}

fn healthy(
    link: &LinkLimit,
    underlay: Option<&LinkLimit>,
    own_interface: bool,
    also_at_this_mtu: &[dye_core::model::PointRef],
    from: &str,
) -> Limit {
    let explanation = match (&link.encapsulation, underlay) {
        (Some(e), Some(u)) if u.mtu >= e.needs_underlay_mtu => format!(
            "{} ({}) MTU {} needs {} on the underlay ({} bytes of {} overhead); {} has {}: the overlay MTU is what limits the path, and it fits",
            e.tunnel, e.kind, e.tunnel_mtu, e.needs_underlay_mtu, e.overhead, e.kind, u.name(), u.mtu
        ),
        (Some(e), Some(u)) => format!(
            "{} ({}) MTU {} needs {} on the underlay ({} bytes of {} overhead), but {} has {}: full-size packets are fragmented on the underlay",
            e.tunnel, e.kind, e.tunnel_mtu, e.needs_underlay_mtu, e.overhead, e.kind, u.name(), u.mtu
        ),
        (Some(e), None) => format!(
            "{} ({}) MTU {} is the narrowest link on the path",
            e.tunnel, e.kind, e.tunnel_mtu
        ),
        (None, _) if own_interface => format!(
            "{} MTU {} is the narrowest link on the path: {from}'s own interface",
            link.name(),
            link.mtu
        ),
        (None, _) => format!(
            "{} MTU {} is the narrowest link on the path",
            link.name(),
            link.mtu
        ),
    };
    Limit {
        also_at_this_mtu: also_at_this_mtu.iter().map(|p| p.to_string()).collect(),
        ..limit_at(link, explanation)
    }
}

fn signalled(
    sender: &dye_core::mtu::result::Sender,
    size: u32,
    outcome: &ProbeOutcome,
    last_seen: Option<&Next>,
    link: Option<&LinkLimit>,
) -> Limit {
    let address = sender.address;
    let advertised = sender.advertised_mtu;
    let what = match outcome {
        ProbeOutcome::Refused { error, .. } => icmp_words(error),
        _ if address.is_ipv4() => "fragmentation needed".to_string(),
        _ => "packet too big".to_string(),
    };
    let who = if sender.netns.is_empty() {
        address.to_string()
    } else if sender.nat_rewritten {
        format!(
            "{} (its ICMP error reaches the source from {address}: NAT rewrote it on the way back)",
            sender.netns.join(", ")
        )
    } else {
        format!("{address} ({})", sender.netns.join(", "))
    };
    let signalled_by = Some(Sender {
        address: address.to_string(),
        netns: sender.netns.clone(),
        nat_rewritten: sender.nat_rewritten,
        advertised_mtu: advertised,
    });
    let advertised_words = advertised
        .map(|m| format!(" (next-hop MTU {m})"))
        .unwrap_or_default();
    match link {
        Some(l) => {
            let tunnel_note = match &l.encapsulation {
                Some(e) if e.tunnel == l.name() => format!(
                    ", a {} device that leaves {} bytes for its outer headers",
                    e.kind, e.overhead
                ),
                Some(e) => format!(
                    ", the underlay of {} ({} + {} bytes of {} overhead)",
                    e.tunnel, e.tunnel_mtu, e.overhead, e.kind
                ),
                None => String::new(),
            };
            let explanation = format!(
                "{who} refused a {size}-byte probe with ICMP {what}{advertised_words}: it forwards through {} (MTU {}){tunnel_note}",
                l.name(),
                l.mtu,
            );
            Limit {
                signalled_by,
                ..limit_at(l, explanation)
            }
        }
        None => Limit {
            link: format!(
                "beyond {}",
                last_seen
                    .map(place)
                    .unwrap_or_else(|| "the source".into())
            ),
            netns: String::new(),
            ifname: String::new(),
            mtu: advertised.unwrap_or(0),
            encapsulation: None,
            signalled_by,
            vanished_after: None,
            also_at_this_mtu: Vec::new(),
            beyond_node: None,
            explanation: format!(
                "{who} refused a {size}-byte probe with ICMP {what}{advertised_words}; the sender is outside dye's view"
            ),
        },
    }
}

fn recommendation(r: &CoreRecommendation) -> Recommendation {
    let reason = match &r.why {
        Why::UnderlayFragments {
            encapsulation: e,
            underlay: u,
        } => format!(
            "set {} and the pods' interfaces to {} so nothing is fragmented on {} (MTU {}), or raise the underlay MTU to {}",
            e.tunnel, u.fits, u.name(), u.mtu, e.needs_underlay_mtu
        ),
        Why::TunnelBlackHole {
            encapsulation: e,
            link,
        } => format!(
            "set {} and the pods' interfaces to {} (what {} carries after {} bytes of {} overhead), or raise {}'s MTU to {}",
            e.tunnel,
            link.mtu.saturating_sub(e.overhead),
            link.name(),
            e.overhead,
            e.kind,
            link.name(),
            e.needs_underlay_mtu
        ),
        Why::SilentLink { link } => format!(
            "nothing tells senders that {} carries only {}: set the pods' MTU to {}, or let the router there send ICMP",
            link.name(),
            link.mtu,
            r.mtu
        ),
        Why::IcmpWorks { mss } => format!(
            "path MTU discovery works here as long as the ICMP errors get through; if they may be filtered, set the pods' MTU to {} or clamp TCP MSS to {mss}",
            r.mtu
        ),
        Why::KeepTunnel { encapsulation: e } => format!(
            "{} MTU {} is right for its underlay: keep it",
            e.tunnel, e.tunnel_mtu
        ),
        Why::KeepPods { link } => format!(
            "{} MTU {} is the path's limit: keep the pods' MTU at {}",
            link.name(),
            link.mtu,
            r.mtu
        ),
    };
    Recommendation {
        mtu: r.mtu,
        applies_to: r.applies_to.as_str().to_string(),
        reason,
    }
}

fn warning(w: &Warning, from: &str) -> String {
    match w {
        Warning::OuterFragmented {
            size,
            at,
            mtu,
            tunnel,
            sizes: s,
        } => format!(
            "probes of {size} bytes pass, but {at} (MTU {}) fragments their {} packets ({} bytes): every full-size packet costs {} on the underlay and a reassembly at the far end, and is lost whole if one fragment is",
            mtu_word(*mtu),
            tunnel.as_deref().unwrap_or("outer"),
            sizes(s),
            s.len()
        ),
        Warning::ReplyOuterFragmented {
            at,
            mtu,
            tunnel,
            sizes: s,
        } => format!(
            "the replies' {} packets are fragmented too, leaving {at} (MTU {}, {} bytes)",
            tunnel.as_deref().unwrap_or("outer"),
            mtu_word(*mtu),
            sizes(s)
        ),
        Warning::ReplyFragmented {
            size,
            at,
            mtu,
            sizes: s,
        } => format!(
            "replies of {size} bytes were fragmented leaving {at} (MTU {}, {} bytes): the return path carries less than the forward path",
            mtu_word(*mtu),
            sizes(s)
        ),
        Warning::FragmentedDespiteDf {
            size,
            at,
            mtu,
            sizes: s,
        } => format!(
            "probes of {size} bytes were fragmented leaving {at} (MTU {}, {} bytes) despite DF",
            mtu_word(*mtu),
            sizes(s)
        ),
        Warning::BogusIcmp { sender, size, mtu } => format!(
            "{sender} refused a {size}-byte probe with a bogus next-hop MTU {}: dye ignored the value and searched",
            mtu.map(|m| m.to_string()).unwrap_or_else(|| "(none)".into())
        ),
        Warning::VanishedBeforeRefused { size, last_seen } => format!(
            "a {size}-byte probe vanished without ICMP ({}) before others were refused with ICMP",
            last_seen
                .as_ref()
                .map(place)
                .unwrap_or_else(|| "never seen".into())
        ),
        Warning::SourceCeiling { mtu } => format!(
            "{from} cannot send more than its own interface's MTU {mtu}: whether the rest of the path carries more is not measured"
        ),
    }
}

fn describe(r: &Option<Route>) -> Option<String> {
    r.as_ref().map(|r| r.to_string())
}

/// The PMTU cache section of the report, in words.
pub fn cache_report(dst: IpAddr, source: &str, r: &PmtuRestore) -> CacheReport {
    let mtu_before = r.before.as_ref().and_then(|r| r.mtu);
    let mtu_after = r.after.as_ref().and_then(|r| r.mtu);
    let none_or = |m: Option<u32>| m.map(|m| m.to_string()).unwrap_or_else(|| "none".into());
    let (restored, detail) = match &r.removed {
        None if mtu_before == mtu_after => (
            false,
            match mtu_after {
                Some(m) => format!(
                    "the source already had a cached path MTU of {m} towards {dst}; unchanged"
                ),
                None => {
                    format!("no cached path MTU towards {dst} before or after: nothing to restore")
                }
            },
        ),
        None => (
            false,
            format!(
                "the cached path MTU towards {dst} changed from {} to {} during the search; dye left it",
                none_or(mtu_before),
                none_or(mtu_after)
            ),
        ),
        Some(result) => {
            let changed = format!(
                "dye's probes changed the source's cached path MTU towards {dst} from {} to {}",
                none_or(mtu_before),
                none_or(mtu_after)
            );
            let now = r.now.as_ref().and_then(|r| r.mtu);
            let was = mtu_before
                .map(|m| format!("a cached path MTU of {m}"))
                .unwrap_or_else(|| "no cached path MTU".into());
            let how = |r: &PmtuRemoval| match r {
                PmtuRemoval::OneDestination => {
                    format!("removed the cached route towards {dst} in {source}")
                }
                PmtuRemoval::WholeNamespace => format!(
                    "flushed {source}'s cached IPv4 path MTUs (the kernel cannot remove one destination's alone)"
                ),
            };
            match result {
                Ok(r) if now == mtu_before => (true, format!("{changed}; {}, back to {was}", how(r))),
                Ok(r) => (
                    now.is_none(),
                    format!(
                        "{changed}; {}: it had {was} and now has {} (the kernel relearns from the pod's own traffic)",
                        how(r),
                        now.map(|m| format!("a cached path MTU of {m}"))
                            .unwrap_or_else(|| "none".into())
                    ),
                ),
                Err(e) => (
                    false,
                    format!("{changed}, and removing it failed ({e}): run `ip route flush cache` in {source}"),
                ),
            }
        }
    };
    CacheReport {
        before: describe(&r.before),
        after: describe(&r.after),
        restored,
        detail,
    }
}

#[cfg(test)]
mod tests {
    //! The MTU report's words, from real recordings (samples/recordings, lab id `fx`).

    use dye_core::mtu::{run_mtu, MtuPlan};
    use dye_core::recording::{Recording, Replayer};

    use super::*;

    fn replay(name: &str) -> MtuReport {
        let path = format!(
            "{}/../samples/recordings/{name}.dye",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        let rec: Recording<MtuPlan> = serde_json::from_str(&text).expect("parses");
        let mut snapshot = rec.snapshot;
        let mut net = Replayer::new(rec.journal);
        let run = run_mtu(&rec.plan, &mut snapshot, &mut net, &mut |_| {}).expect("replays");
        project(&run.result)
    }

    #[test]
    fn a_black_hole_is_explained_with_the_overhead_and_what_to_set() {
        let r = replay("mtu-black-hole");
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["schema"], "dye.mtu/v1");
        assert_eq!(v["status"], "black_hole");
        assert_eq!(v["limit"]["link"], "dye-fx-node-1/eth0");
        assert_eq!(
            v["limit"]["vanished_after"],
            "dye-fx-node-1/flannel.1 (out)"
        );
        let l = r.limit.expect("limit");
        assert_eq!(
            l.explanation,
            "dye-fx-node-1/flannel.1 MTU 1450 needs 1500 on the underlay (1450 + 50 bytes of vxlan overhead); dye-fx-node-1/eth0 has 1400. Probes above 1350 were last seen at dye-fx-node-1/flannel.1 (out) and never left through dye-fx-node-1/eth0, and nobody sent ICMP: a black hole"
        );
        let rec = r.recommendation.expect("recommendation");
        assert_eq!((rec.mtu, rec.applies_to.as_str()), (1350, "overlay"));
        assert_eq!(
            rec.reason,
            "set dye-fx-node-1/flannel.1 and the pods' interfaces to 1350 (what dye-fx-node-1/eth0 carries after 50 bytes of vxlan overhead), or raise dye-fx-node-1/eth0's MTU to 1500"
        );
        assert!(r.probes.iter().any(|p| p.outcome == "vanished"
            && p.detail == "vanished after dye-fx-node-1/flannel.1 (out); never crossed dye-fx-node-1/eth0 (MTU 1400)"));
    }

    #[test]
    fn a_signalled_limit_names_the_sender_and_its_link() {
        let r = replay("mtu-through-nat");
        let l = r.limit.expect("limit");
        assert!(
            l.explanation.starts_with("dye-fx-fw (its ICMP error reaches the source from 203.0.113.80: NAT rewrote it on the way back) refused a "),
            "{}",
            l.explanation
        );
        assert!(l.explanation.contains("with ICMP fragmentation needed (next-hop MTU 1280): it forwards through dye-fx-fw/eth0 (MTU 1280)"), "{}", l.explanation);
        let by = l.signalled_by.expect("sender");
        assert_eq!(by.address, "203.0.113.80");
        let rec = r.recommendation.expect("recommendation");
        assert_eq!(rec.reason, "path MTU discovery works here as long as the ICMP errors get through; if they may be filtered, set the pods' MTU to 1280 or clamp TCP MSS to 1240");
    }

    #[test]
    fn outer_fragmentation_is_warned_in_words() {
        let r = replay("mtu-outer-fragmenting");
        assert!(
            r.warnings.iter().any(|w| w.starts_with("probes of 1450 bytes pass, but dye-fx-node-1/eth0 (MTU 1400) fragments their vxlan packets (")),
            "{:?}",
            r.warnings
        );
        assert_eq!(
            r.limit.expect("limit").explanation,
            "dye-fx-node-1/flannel.1 (vxlan) MTU 1450 needs 1500 on the underlay (50 bytes of vxlan overhead), but dye-fx-node-1/eth0 has 1400: full-size packets are fragmented on the underlay"
        );
    }

    #[test]
    fn the_pmtu_cache_and_the_probe_details_read_as_before() {
        let r = replay("mtu-v6-packet-too-big");
        assert!(r.pmtu_cache.restored);
        assert!(r.pmtu_cache.detail.starts_with("dye's probes changed the source's cached path MTU towards fd00:10::50 from none to 1280; removed the cached route towards fd00:10::50 in dye-fx-pod-a, back to no cached path MTU"), "{}", r.pmtu_cache.detail);
        assert!(r
            .probes
            .iter()
            .any(|p| p.detail == "too big: fd00:50::254 advertised next-hop MTU 1280"));
        let h = replay("mtu-healthy");
        assert_eq!(
            h.pmtu_cache.detail,
            "no cached path MTU towards 10.244.2.2 before or after: nothing to restore"
        );
        assert!(h
            .probes
            .iter()
            .all(|p| p.detail == "echo reply from 10.244.2.2"));
    }
}
