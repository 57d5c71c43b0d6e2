//! The trace report, schema `dye.trace/v1` (tracer/docs/trace-schema.md): the shape scripts
//! depend on. Fields may be added, never renamed or removed without a new schema version.
//! [`super::trace::project`] fills it from the core's typed trace.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use dye_core::kernel_drop::KernelCause;
use dye_core::model::{Direction, LinkClass};
pub use dye_core::path::{Leg, VerdictKind};

pub const SCHEMA: &str = "dye.trace/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceReport {
    pub schema: String,
    pub probe: ProbeSpec,
    pub verdict: Verdict,
    /// The path of the representative probe (see `probes`), forward leg then return leg.
    pub hops: Vec<Hop>,
    /// One line per probe sent: its own verdict and path, for when probes diverge (a Service
    /// balancing to several endpoints).
    pub probes: Vec<ProbeSummary>,
    /// Where dye listened, and what each capture point saw and lost.
    pub capture: Vec<PointReport>,
    /// Wall time of the whole trace in milliseconds (setup, probes, wait, reconstruction).
    pub elapsed_ms: u64,
    /// Set when the probes changed the source's cached path MTU (an ICMPv6 Packet Too Big about
    /// a big probe does) and dye put it back — or could not. Added in v1; absent in older
    /// reports.
    #[serde(default)]
    pub pmtu_cache: Option<super::mtu_v1::CacheReport>,
    /// Which namespaces dye listened in, how they were chosen, and the kernel sockets that
    /// cost. Added in v1; null in reports replayed from older recordings.
    #[serde(default)]
    pub scope: Option<ScopeReport>,
    /// A trace through agents (`--agents`): clock offsets between nodes and the nodes not
    /// observed. Absent for a single-host trace. Added in v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<super::agents::AgentsReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScopeReport {
    /// `path` (walked by route lookups from the source), `namespaces` (--ns), `all` (--all-ns).
    pub by: dye_core::snapshot::ScopeBy,
    /// The namespaces in scope, in the order the walk reached them.
    pub namespaces: Vec<String>,
    /// `per-namespace` or `per-interface`.
    pub sockets: dye_core::snapshot::SocketModel,
    /// Kernel packet sockets opened.
    pub capture_sockets: u32,
    /// Interfaces the sockets covered (up, not loopback, in the namespaces in scope).
    pub interfaces: usize,
    /// Of those, the interfaces on the walked path (`capture` lists these, and any other that
    /// saw something).
    pub path_interfaces: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// The source namespace as given (name, path, pid:N, host).
    pub from: String,
    /// The source address the probes carried.
    pub src: String,
    /// Destination, `ip` or `ip:port`.
    pub to: String,
    /// The destination as named on the command line when it was a pod (`pod:default/web-0`);
    /// null for an address. Added in v1.
    #[serde(default)]
    pub to_name: Option<String>,
    /// icmp | udp | tcp
    pub proto: String,
    /// IP packet size in bytes.
    pub size: u32,
    pub df: bool,
    /// Random per-trace marker id, 8 hex digits.
    pub trace_id: String,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// In words a person can act on.
    pub detail: String,
    /// Index into `hops` of the last place the probe was seen on its forward leg.
    pub last_seen: Option<usize>,
    /// `netns/ifname` where the probe should have appeared next.
    pub expected_next: Option<String>,
    /// The netfilter rule (or chain policy) that dropped the probe, as the kernel traced it.
    /// Added in v1; null when none was traced.
    #[serde(default)]
    pub dropped_by: Option<DroppedBy>,
    /// The kernel's drop of the probe (its `skb_drop_reason`), from dye's kfree_skb eBPF
    /// program. Added in v1; null when the kernel reported none.
    #[serde(default)]
    pub kernel_drop: Option<KernelDropView>,
}

/// Where and why the kernel dropped the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelDropView {
    /// Which probe (sequence number).
    pub seq: u32,
    /// The namespace (null: outside dye's scope; then `netns_inode` names it).
    pub netns: Option<String>,
    pub netns_inode: u64,
    /// The packet's device at the drop (null: none, or unknown to dye).
    pub ifname: Option<String>,
    /// The kernel's reason less its `SKB_DROP_REASON_` prefix (`IP_RPFILTER`), as its BTF
    /// names it; null when unnamed (then `reason_code`).
    pub reason: Option<String>,
    pub reason_code: u32,
    /// netfilter | reverse_path | no_route | neighbour | ttl_exceeded | too_big | no_socket | other
    pub cause: KernelCause,
    /// The kernel function that let go of it, `ip_error+0x94`.
    pub function: Option<String>,
}

/// A netfilter rule (or chain policy) that decided something about the packet at a hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopRule {
    /// `ip`, `ip6`, `inet`…
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The rule's handle (`nft -a list ruleset`); null for a chain policy.
    pub handle: Option<u64>,
    /// The rule as nft prints it, or `policy drop`.
    pub rule: String,
    /// accept | drop | jump CHAIN | goto CHAIN, as nft says it.
    pub verdict: Option<String>,
    /// In words.
    pub detail: String,
}

/// A netfilter rule that dropped the probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedBy {
    pub netns: String,
    /// `ip`, `ip6`, `inet`…
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The rule's handle (`nft -a list ruleset`); null for a chain policy.
    pub handle: Option<u64>,
    /// The rule as nft prints it, or `policy drop`.
    pub rule: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hop {
    pub index: usize,
    pub netns: String,
    pub ifname: String,
    /// veth | bridge | vxlan | geneve | ipip | gre | tun | physical | loopback | other
    pub kind: LinkClass,
    /// The node the namespace belongs to.
    pub node: String,
    /// in | out
    pub direction: Direction,
    /// Nanoseconds after the probe was injected.
    pub t_ns: u64,
    pub leg: Leg,
    /// Which probe (sequence number) this sighting is of.
    pub seq: u32,
    pub packet: PacketView,
    pub outer: Vec<OuterView>,
    pub fragments: Option<Fragments>,
    pub events: Vec<HopEvent>,
    pub conntrack: Option<Conntrack>,
    /// The netfilter rules that decided something about the packet here, in the order the
    /// kernel ran them: the jumps that led to an accept or a drop, and that accept or drop.
    /// Added in v1; empty when none was traced.
    #[serde(default)]
    pub rules: Vec<HopRule>,
}

/// The innermost packet as seen at a hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketView {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// icmp | icmp6 | udp | tcp | <number>
    pub proto: String,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub ttl: u8,
    /// IP total length.
    pub len: u32,
    pub ip_id: u32,
    pub df: bool,
    /// e.g. "echo request", "unreachable need-frag", "SYN", "SYN-ACK".
    pub what: String,
}

impl PacketView {
    /// Source address and port.
    pub fn source(&self) -> dye_core::model::Endpoint {
        dye_core::model::Endpoint {
            addr: self.src,
            port: self.sport,
        }
    }

    /// Destination address and port.
    pub fn destination(&self) -> dye_core::model::Endpoint {
        dye_core::model::Endpoint {
            addr: self.dst,
            port: self.dport,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OuterView {
    /// vxlan | geneve | gre | gretap | ip-in-udp | ipip | sit | ip6ip6 | ip4ip6
    pub kind: String,
    pub vni: Option<u32>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub ttl: u8,
    pub df: bool,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragments {
    pub count: usize,
    /// IP total length of each fragment.
    pub sizes: Vec<u32>,
    /// outer | inner
    pub layer: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Dnat,
    Snat,
    Encap,
    Decap,
    Fragment,
    Reassemble,
    Ttl,
    Icmp,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub from: Option<String>,
    pub to: Option<String>,
    pub detail: String,
}

pub use dye_core::path::Conntrack;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub seq: u32,
    pub verdict: VerdictKind,
    /// Forward then return hops, as `netns/ifname:dir`.
    pub path: Vec<String>,
    /// Injection to the answer reaching the source again, when answered.
    pub rtt_ns: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointReport {
    /// `netns/ifname`
    pub name: String,
    pub kind: LinkClass,
    pub mtu: u32,
    /// Probe-related frames this point saw.
    pub sightings: u64,
    /// Frames captured (after the kernel filter), both directions.
    pub captured: u64,
    /// Frames the kernel dropped because the ring was full.
    pub kernel_dropped: u64,
    /// Set when the interface disappeared mid-trace.
    pub lost: Option<String>,
}
