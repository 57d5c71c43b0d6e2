//! The MTU report, schema `dye.mtu/v1` (tracer/docs/mtu-schema.md): the shape scripts depend
//! on. Fields may be added, never renamed or removed without a new schema version.
//! [`super::mtu::project`] fills it from the core's typed result.

use serde::{Deserialize, Serialize};

pub use dye_core::mtu::links::Encapsulation;
pub use dye_core::mtu::result::{MaxPayload, Status};

pub const SCHEMA: &str = "dye.mtu/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MtuReport {
    pub schema: String,
    /// The source namespace as given.
    pub from: String,
    /// Source address of the probes.
    pub src: String,
    /// Destination, `ip` or `ip:port`.
    pub to: String,
    /// The destination as named on the command line when it was a pod; null for an address.
    /// Added in v1.
    #[serde(default)]
    pub to_name: Option<String>,
    /// icmp | udp | tcp
    pub proto: String,
    /// The largest IP packet that crossed the path with DF set; None when none did.
    pub path_mtu: Option<u32>,
    /// Why the search ended where it did.
    pub status: Status,
    /// The link that limits the path (None when even the smallest probe failed).
    pub limit: Option<Limit>,
    /// Largest payloads that pass, derived from `path_mtu`.
    pub max_payload: Option<MaxPayload>,
    pub recommendation: Option<Recommendation>,
    /// Things that pass but cost: outer fragmentation, return-path fragmentation, bogus ICMP.
    pub warnings: Vec<String>,
    /// The source's cached path MTU towards the destination, and what dye did about it.
    pub pmtu_cache: CacheReport,
    pub search: SearchReport,
    /// Every probe, in the order sent.
    pub probes: Vec<ProbeRecord>,
}

/// The limiting link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limit {
    /// `netns/ifname`
    pub link: String,
    pub netns: String,
    pub ifname: String,
    /// Its configured MTU.
    pub mtu: u32,
    /// The encapsulation whose overhead makes the difference, when the limit is an underlay
    /// under a tunnel.
    pub encapsulation: Option<Encapsulation>,
    /// The router that sent the ICMP error, when the limit was signalled.
    pub signalled_by: Option<Sender>,
    /// Where probes above the limit were last seen, when they vanished.
    pub vanished_after: Option<String>,
    /// Other links on the path with the same MTU.
    pub also_at_this_mtu: Vec<String>,
    /// A tunnel black hole whose limit lies past the node, on the underlay (a router port).
    /// Added in v1.
    #[serde(default)]
    pub beyond_node: Option<BeyondNode>,
    /// In words.
    pub explanation: String,
}

/// The underlay past the node: the outer packets' way to the remote tunnel endpoint, what
/// the node cached about it and what a router told the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BeyondNode {
    /// The namespace that encapsulates, and the remote endpoint its outer packets go to.
    pub node: String,
    pub remote: String,
    /// Each egress link on the way (`netns/ifname`), with its MTU.
    pub path: Vec<UnderlayHop>,
    /// The node's cached path MTU towards the remote endpoint (`ip route get` shows `mtu N`).
    pub node_cached_pmtu: Option<u32>,
    /// The ICMP Fragmentation Needed a router sent the node about an outer packet.
    pub refused_by: Option<Refusal>,
    /// Where the outer packet of a vanished probe was seen last (`netns/ifname (dir)`).
    pub outer_last_seen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnderlayHop {
    pub link: String,
    pub mtu: u32,
    pub cached_pmtu: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    pub sender: String,
    pub netns: Vec<String>,
    /// The node's underlay address it was sent to (the outer source).
    pub to: String,
    pub advertised_mtu: Option<u32>,
    /// `netns/ifname` where it was first seen.
    pub seen_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sender {
    pub address: String,
    /// The sender's namespace(s): those owning the address, or the one the error was first
    /// seen leaving (empty when it is outside dye's view).
    pub netns: Vec<String>,
    /// The source address was rewritten by NAT on the way back (it is not the sender's own).
    pub nat_rewritten: bool,
    /// The next-hop MTU the ICMP advertised (0 or bogus values included as sent).
    pub advertised_mtu: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recommendation {
    /// The MTU to configure.
    pub mtu: u32,
    /// What to set it on: `overlay` (the tunnel device and the pods' interfaces), `pod`.
    pub applies_to: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheReport {
    /// `ip route get` in the source namespace before the search (e.g. `... mtu 1280 expires 598s`).
    pub before: Option<String>,
    pub after: Option<String>,
    /// True when dye's probes changed the cached path MTU and dye removed what they added.
    pub restored: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReport {
    pub min: u32,
    pub max: u32,
    /// MTU of the source's egress interface: dye sends probes whole, so no probe is larger.
    pub source_mtu: Option<u32>,
    pub probes_sent: u32,
    /// How long dye waited for a probe before calling it lost.
    pub probe_wait_ms: u64,
    pub elapsed_ms: u64,
    pub capture_points: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub seq: u32,
    /// IP packet size.
    pub size: u32,
    /// passed | too_big | vanished | refused
    pub outcome: String,
    pub detail: String,
    /// Milliseconds from sending to the answer or error reaching the source, by the kernel's
    /// capture timestamps (None when nothing came back).
    pub rtt_ms: Option<f64>,
    /// `netns/ifname (dir)` of the last place the probe was seen on its way.
    pub last_seen: Option<String>,
}
