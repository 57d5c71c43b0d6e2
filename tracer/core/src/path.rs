//! The reconstructed path, typed: hops, what changed between them, and the verdict with the
//! reason a probe vanished. No prose here — reports and renderers put it into words.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Direction, Endpoint, IcmpKind, LinkClass, PointRef};
use crate::snapshot::{OuterDf, Route, RouteKind};

/// Which leg of the trip a packet is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    Forward,
    Return,
}

/// What the transport layer of a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Tcp {
        flags: u8,
    },
    Udp,
    Icmp {
        v6: bool,
        /// Type and code on the wire.
        ty: u8,
        code: u8,
        kind: IcmpKind,
        /// Next-hop MTU of a Fragmentation Needed / Packet Too Big.
        mtu: Option<u32>,
    },
    Other,
}

impl std::fmt::Display for Transport {
    /// What the packet is, in the words tcpdump-like tools use: `SYN-ACK`, `datagram`,
    /// `echo reply`, `unreachable need-frag mtu 1450`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Transport::Tcp { flags } => {
                let names = [
                    (0x02, "SYN"),
                    (0x10, "ACK"),
                    (0x04, "RST"),
                    (0x01, "FIN"),
                    (0x08, "PSH"),
                ];
                let set: Vec<&str> = names
                    .iter()
                    .filter(|(b, _)| flags & b != 0)
                    .map(|(_, n)| *n)
                    .collect();
                if set.is_empty() {
                    f.write_str("none")
                } else {
                    f.write_str(&set.join("-"))
                }
            }
            Transport::Udp => f.write_str("datagram"),
            Transport::Icmp {
                v6, ty, code, mtu, ..
            } => {
                f.write_str(icmp_name(v6, ty, code))?;
                if let Some(m) = mtu {
                    write!(f, " mtu {m}")?;
                }
                Ok(())
            }
            Transport::Other => Ok(()),
        }
    }
}

/// The short name of an ICMP type and code ("unreachable need-frag", "packet-too-big"), as
/// dye's decoder names them.
pub fn icmp_name(v6: bool, ty: u8, code: u8) -> &'static str {
    dye_decode::Icmp {
        v6,
        kind: ty,
        code,
        id: None,
        seq: None,
        mtu: None,
        quote: None,
    }
    .name()
}

/// The name of an IP protocol number: icmp | icmp6 | tcp | udp | the number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmp6".into(),
        n => n.to_string(),
    }
}

/// The innermost packet as seen at a hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub ttl: u8,
    /// IP total length.
    pub len: u32,
    /// IPv4 id (IPv6: flow label).
    pub ip_id: u32,
    pub df: bool,
    pub transport: Transport,
}

impl Packet {
    pub fn source(&self) -> Endpoint {
        Endpoint {
            addr: self.src,
            port: self.sport,
        }
    }

    pub fn destination(&self) -> Endpoint {
        Endpoint {
            addr: self.dst,
            port: self.dport,
        }
    }

    pub fn is_icmp(&self) -> bool {
        matches!(self.transport, Transport::Icmp { .. })
    }
}

/// One encapsulation layer around the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outer {
    /// vxlan | geneve | gre | gretap | ip-in-udp | ipip | sit | ip6ip6 | ip4ip6 (decode's names)
    pub tunnel: String,
    pub vni: Option<u32>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub ttl: u8,
    pub df: bool,
    pub len: u32,
}

/// Which IP layer was fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FragmentLayer {
    /// The outer (tunnel) packet: split on the underlay.
    Outer,
    /// The inner packet, split before it was encapsulated.
    Inner,
    /// A plain packet, no tunnel around it.
    Ip,
}

impl FragmentLayer {
    pub fn as_str(self) -> &'static str {
        match self {
            FragmentLayer::Outer => "outer",
            FragmentLayer::Inner => "inner",
            FragmentLayer::Ip => "ip",
        }
    }
}

/// A datagram seen as fragments at a hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragments {
    /// IP total length of each fragment.
    pub sizes: Vec<u32>,
    pub layer: FragmentLayer,
}

/// A NAT rewrite's direction of effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rewrite {
    /// The source changed (SNAT forward; un-DNAT of a reply).
    Source,
    /// The destination changed (DNAT forward; un-SNAT of a reply).
    Destination,
}

/// What changed between the previous hop of the same leg and this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HopEvent {
    Nat {
        rewrite: Rewrite,
        netns: String,
        from: Endpoint,
        to: Endpoint,
    },
    Encap {
        netns: String,
        outer: Outer,
    },
    Decap {
        netns: String,
        outer: Outer,
    },
    Ttl {
        netns: String,
        from: u8,
        to: u8,
    },
    /// A router on the underlay forwarded the tunnel's outer packet: its TTL dropped while the
    /// packet inside stayed as it was.
    OuterTtl {
        netns: String,
        from: u8,
        to: u8,
    },
    Fragment {
        fragments: Fragments,
        ifname: String,
        mtu: u32,
    },
    Reassemble {
        netns: String,
        count: usize,
    },
    /// An ICMP error about the probe, first seen here.
    Icmp {
        sender: IpAddr,
        to: IpAddr,
        kind: IcmpKind,
        ty: u8,
        code: u8,
        v6: bool,
        mtu: Option<u32>,
    },
    /// The probe was last seen here.
    Drop {
        expected_next: Option<Next>,
    },
}

/// The conntrack entry that confirms a NAT rewrite, from the namespace that did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conntrack {
    /// Original direction tuple, e.g. "tcp 10.244.1.3:40000 → 10.96.0.10:80".
    pub orig: String,
    /// Reply direction tuple.
    pub reply: String,
    /// The protocol state and flags, e.g. "SYN_RECV ASSURED".
    pub status: String,
}

/// One sighting on the reconstructed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub index: usize,
    pub netns: String,
    pub ifname: String,
    pub kind: LinkClass,
    /// The node the namespace belongs to.
    pub node: String,
    pub direction: Direction,
    /// Nanoseconds after the probe was injected.
    pub t_ns: u64,
    pub leg: Leg,
    pub seq: u32,
    pub packet: Packet,
    pub outer: Vec<Outer>,
    pub fragments: Option<Fragments>,
    pub events: Vec<HopEvent>,
    pub conntrack: Option<Conntrack>,
    /// The netfilter rules that decided something about the packet at this hop: the jumps that
    /// led to an accept or a drop, and that accept or drop (see [`crate::hop_rules`]).
    #[serde(default)]
    pub rules: Vec<crate::seam::RuleEvent>,
}

impl Hop {
    pub fn at(&self) -> PointRef {
        PointRef::new(self.netns.clone(), self.ifname.clone())
    }
}

/// Where a probe should have appeared next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Next {
    pub at: PointRef,
    pub direction: Direction,
}

/// Why a probe that was last seen somewhere did not appear where it should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Nothing more is known.
    Unknown,
    /// The snapshot holds no route lookup for it (an incomplete recording).
    NoRouteLookup {
        netns: String,
        dst: IpAddr,
    },
    /// The namespace has no route to the destination.
    NoRoute {
        netns: String,
        dst: IpAddr,
        error: String,
    },
    /// The route discards it (blackhole, unreachable, prohibit…).
    RouteDiscards {
        netns: String,
        dst: IpAddr,
        route: Route,
    },
    /// Addressed to the namespace itself, but nothing took it.
    LocalUnclaimed {
        netns: String,
        dst: IpAddr,
    },
    RouteWithoutDevice {
        netns: String,
        route: Route,
    },
    /// Routed out of `dev`, never seen leaving: a firewall, rp_filter or conntrack dropped it.
    DroppedInside {
        netns: String,
        in_if: String,
        dev: String,
        route: Route,
    },
    /// Encapsulated, too big for the underlay with DF set (or unknown DF).
    EncapTooBig {
        tunnel: LinkClass,
        inner: u32,
        total: u32,
        under: String,
        under_mtu: u32,
        df: Option<OuterDf>,
    },
    /// Encapsulated, but never left through the underlay.
    EncapNeverLeft {
        under: String,
    },
    /// Left through one end of a veth, never came out of the other.
    VethPeer {
        peer: PointRef,
        peer_mtu: Option<u32>,
    },
    /// Left through a bridge port.
    BridgePort {
        bridge: PointRef,
    },
    /// Left through an interface dye cannot see beyond.
    BeyondSight {
        netns: String,
        ifname: String,
    },
}

impl DropReason {
    /// Only where to look, no finding: the kernel's own reason, whatever it is, says more.
    pub fn is_vague(&self) -> bool {
        matches!(self, DropReason::Unknown | DropReason::DroppedInside { .. })
    }
}

/// What a vanished probe should have done next, and why it did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    pub next: Option<Next>,
    pub reason: DropReason,
}

/// The probe or its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Probe,
    Reply,
}

/// The outcome of one probe, or of the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// The probe reached the destination namespace; no reply was expected or seen.
    Delivered,
    /// A reply came back to the source (echo reply, SYN-ACK, RST, UDP reply).
    Answered,
    /// The probe vanished inside the path.
    Dropped,
    /// An ICMP error came back instead of an answer.
    IcmpError,
    /// Nothing of the probe was seen at all.
    Timeout,
    /// The probe left what was observed towards a node nobody observed (a trace through
    /// agents with a node blind, or no agent where it went): no drop is claimed. The core never
    /// concludes this; the coordinator does, knowing which nodes it could see.
    Unobserved,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Delivered => "delivered",
            VerdictKind::Answered => "answered",
            VerdictKind::Dropped => "dropped",
            VerdictKind::IcmpError => "icmp_error",
            VerdictKind::Timeout => "timeout",
            VerdictKind::Unobserved => "unobserved",
        }
    }

    /// Delivered and answered are successes (exit 0); the rest are not (exit 1).
    pub fn is_success(self) -> bool {
        matches!(self, VerdictKind::Delivered | VerdictKind::Answered)
    }
}

/// What happened, with what the verdict rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered {
        to: Endpoint,
        netns: String,
    },
    Answered {
        /// The answer as it reached the source.
        answer: Transport,
        /// Its source as the source saw it, and as it was sent when NAT changed it.
        seen_as: Endpoint,
        sent_by: Option<Endpoint>,
    },
    Dropped {
        subject: Subject,
        leg: Leg,
        /// Where it was last seen (None: it vanished without a trace on this leg).
        last: Option<Next>,
        expectation: Option<Box<Expectation>>,
    },
    IcmpError {
        sender: IpAddr,
        kind: IcmpKind,
        ty: u8,
        code: u8,
        v6: bool,
        mtu: Option<u32>,
        first_seen_at: PointRef,
    },
    /// Nothing was seen; `sent` tells a probe that was never sent from one never seen.
    Timeout {
        sent: bool,
    },
}

impl Outcome {
    pub fn kind(&self) -> VerdictKind {
        match self {
            Outcome::Delivered { .. } => VerdictKind::Delivered,
            Outcome::Answered { .. } => VerdictKind::Answered,
            Outcome::Dropped { .. } => VerdictKind::Dropped,
            Outcome::IcmpError { .. } => VerdictKind::IcmpError,
            Outcome::Timeout { .. } => VerdictKind::Timeout,
        }
    }
}

/// The verdict of a probe, or of the trace (its representative probe's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Index into `hops` of the last place the probe was seen on its forward leg.
    pub last_seen: Option<usize>,
    /// When probes of one trace diverged: how many got through, of how many, and which one
    /// the verdict is about.
    pub partial: Option<Partial>,
    /// The netfilter rule (or chain policy) that dropped the probe, from the kernel's trace.
    #[serde(default)]
    pub dropped_by: Option<crate::seam::RuleEvent>,
    /// The kernel's drop of the probe the verdict is about: its reason, where, which function.
    #[serde(default)]
    pub kernel_drop: Option<crate::seam::KernelDrop>,
}

impl Verdict {
    pub fn kind(&self) -> VerdictKind {
        self.outcome.kind()
    }

    /// The namespace the probe was dropped inside (routed, never left), when that is the
    /// reason it vanished: where a netfilter rule may have done it.
    pub fn dropped_inside(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Dropped {
                expectation: Some(e),
                ..
            } => match &e.reason {
                DropReason::DroppedInside { netns, .. }
                | DropReason::LocalUnclaimed { netns, .. } => Some(netns),
                _ => None,
            },
            _ => None,
        }
    }

    /// Where the probe should have appeared next, when it vanished.
    pub fn expected_next(&self) -> Option<&Next> {
        match &self.outcome {
            Outcome::Dropped {
                expectation: Some(e),
                ..
            } => e.next.as_ref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub ok: usize,
    pub total: usize,
    pub seq: u32,
}

/// One probe's own verdict and path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub seq: u32,
    pub verdict: VerdictKind,
    /// Forward then return hops.
    pub path: Vec<Next>,
    /// Injection to the answer reaching the source again, when answered.
    pub rtt_ns: Option<u64>,
}

/// The route kinds the kernel discards with.
pub fn discards(kind: &RouteKind) -> bool {
    !matches!(kind, RouteKind::Unicast | RouteKind::Local)
}
