//! What an MTU search found, typed: the path MTU and how the limit showed itself, the link
//! that limits it, what to configure and why, and what passes but costs. Reports put it into
//! words (`dye.mtu/v1`).

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::links::{Encapsulation, LinkLimit};
use super::outcome::ProbeOutcome;
use super::run::MtuPlan;
use crate::model::PointRef;
use crate::path::Next;
use crate::seam::PmtuRestore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The largest probe the source can send passed: nothing on the path is narrower.
    Healthy,
    /// A router said the probe was too big (ICMP Fragmentation Needed / Packet Too Big).
    Signalled,
    /// Probes above the path MTU vanished without any ICMP: a black hole.
    BlackHole,
    /// Even the smallest probe did not pass: the path is broken regardless of size.
    Unreachable,
    /// The search was interrupted or hit its probe/time bound before converging.
    Incomplete,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Signalled => "signalled",
            Status::BlackHole => "black_hole",
            Status::Unreachable => "unreachable",
            Status::Incomplete => "incomplete",
        }
    }
}

/// The router that refused a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub address: IpAddr,
    /// The namespace(s) owning the address, or the one the error was first seen leaving.
    pub netns: Vec<String>,
    /// NAT rewrote the error's source on the way back: it is not the sender's own address.
    pub nat_rewritten: bool,
    /// The next-hop MTU the ICMP advertised, as sent.
    pub advertised_mtu: Option<u32>,
}

/// How the limit showed itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    /// Probes above it vanished after `vanished_after`, with no ICMP.
    BlackHole {
        vanished_after: Option<Next>,
        /// Inside a tunnel, the limit lies on the underlay past the node: the outer packet's
        /// way there, what the node cached and what a router told it.
        #[serde(default)]
        beyond_node: Option<Box<super::underlay::BeyondNode>>,
    },
    /// A router refused a probe of `refused` bytes with ICMP (`outcome` says which).
    Signalled {
        sender: Sender,
        refused: u32,
        outcome: ProbeOutcome,
        last_seen: Option<Next>,
    },
    /// The largest probe passed; this is the narrowest link it crossed.
    Healthy {
        /// For a tunnel: the underlay under it.
        underlay: Option<LinkLimit>,
        /// The link is the source's own interface.
        own_interface: bool,
        also_at_this_mtu: Vec<PointRef>,
    },
}

/// The link that limits the path. `link` is None when the sender is outside dye's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub link: Option<LinkLimit>,
    pub found: Found,
}

/// Largest payloads that pass, derived from the path MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxPayload {
    /// TCP maximum segment size (path MTU − IP − 20).
    pub tcp_mss: u32,
    /// Largest UDP payload (path MTU − IP − 8).
    pub udp: u32,
    /// Largest ICMP echo data (path MTU − IP − 8): `ping -s` this with DF.
    pub icmp_echo_data: u32,
}

/// Where the recommended MTU goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliesTo {
    /// The tunnel device and the pods' interfaces.
    Overlay,
    /// The pods' interfaces.
    Pod,
}

impl AppliesTo {
    pub fn as_str(self) -> &'static str {
        match self {
            AppliesTo::Overlay => "overlay",
            AppliesTo::Pod => "pod",
        }
    }
}

/// Why that MTU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// The path passes, but the underlay fragments full-size tunnel packets.
    UnderlayFragments {
        encapsulation: Encapsulation,
        underlay: LinkLimit,
    },
    /// A tunnel's packets vanish on an underlay too small for them.
    TunnelBlackHole {
        encapsulation: Encapsulation,
        link: LinkLimit,
    },
    /// A link drops big packets and tells nobody.
    SilentLink {
        link: LinkLimit,
    },
    /// Path MTU discovery works while ICMP gets through.
    IcmpWorks {
        mss: u32,
    },
    KeepTunnel {
        encapsulation: Encapsulation,
    },
    KeepPods {
        link: LinkLimit,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    pub mtu: u32,
    pub applies_to: AppliesTo,
    pub why: Why,
}

/// What passes but costs, or what the search could not measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Warning {
    /// The largest passing probe's tunnel packets were fragmented leaving `at`.
    OuterFragmented {
        size: u32,
        at: PointRef,
        mtu: Option<u32>,
        tunnel: Option<String>,
        sizes: Vec<u32>,
    },
    ReplyOuterFragmented {
        at: PointRef,
        mtu: Option<u32>,
        tunnel: Option<String>,
        sizes: Vec<u32>,
    },
    /// The return path carries less than the forward path.
    ReplyFragmented {
        size: u32,
        at: PointRef,
        mtu: Option<u32>,
        sizes: Vec<u32>,
    },
    FragmentedDespiteDf {
        size: u32,
        at: PointRef,
        mtu: Option<u32>,
        sizes: Vec<u32>,
    },
    /// An ICMP error advertised an MTU of 0 or not below the probe: ignored.
    BogusIcmp {
        sender: IpAddr,
        size: u32,
        mtu: Option<u32>,
    },
    VanishedBeforeRefused {
        size: u32,
        last_seen: Option<Next>,
    },
    /// The path MTU equals the source's own MTU: what lies beyond is not measured.
    SourceCeiling {
        mtu: u32,
    },
}

/// One probe of the search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub seq: u32,
    pub size: u32,
    pub outcome: ProbeOutcome,
    /// Sending to the answer or error reaching the source, by kernel timestamps.
    pub rtt: Option<Duration>,
    pub last_seen: Option<Next>,
    /// Vanished: the link it should have crossed next.
    pub vanished_at: Option<LinkLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchStats {
    pub min: u32,
    pub max: u32,
    /// MTU of the source's egress interface: dye sends probes whole, so no probe is larger.
    pub source_mtu: Option<u32>,
    pub probes_sent: u32,
    /// How long dye waited for a probe before calling it lost.
    pub wait: Duration,
    pub elapsed: Duration,
    /// The capture points on the walked path (all of them when the user chose the scope).
    pub capture_points: usize,
}

/// The result of an MTU search.
#[derive(Debug, Clone, Serialize)]
pub struct MtuResult {
    pub plan: MtuPlan,
    pub src: IpAddr,
    /// The source namespace's name in the snapshot.
    pub source: String,
    /// The largest IP packet that crossed the path with DF set; None when none did.
    pub path_mtu: Option<u32>,
    pub status: Status,
    pub limit: Option<Limit>,
    pub max_payload: Option<MaxPayload>,
    pub recommendation: Option<Recommendation>,
    pub warnings: Vec<Warning>,
    /// The source's cached path MTU towards the destination, and what dye did about it.
    pub pmtu: PmtuRestore,
    pub search: SearchStats,
    pub probes: Vec<ProbeResult>,
}
