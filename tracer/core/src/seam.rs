//! The one seam between the core and the system. Probes go out and capture events come back
//! through [`Network`]; so do the few questions the core asks after the capture (route
//! lookups for addresses the capture revealed, conntrack entries, the PMTU cache). A live
//! implementation wraps namespaces, packet sockets and netlink; [`crate::recording`] wraps any
//! implementation to journal every answer, and replays a journal without privileges.
//!
//! Time is the seam's too: [`Network::now`] only advances when a call returns, so the core's
//! decisions (how long a probe took to answer, when to stop waiting) come out the same when a
//! journal is replayed.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Direction;
use crate::path::Conntrack;
use crate::probe::Probe;
use crate::snapshot::{Route, RouteLookup};

/// One frame captured at a point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Index into the snapshot's capture points.
    pub point: usize,
    pub direction: Direction,
    /// Kernel capture timestamp, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire (the frame may be cut at the snap length).
    pub orig_len: u32,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

/// What the capture side reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Frame(Frame),
    /// A capture point stopped working (its interface vanished).
    PointLost {
        point: usize,
        reason: String,
    },
}

/// The answer to waiting for the next event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    Event(Event),
    /// The wait ran out with nothing to report.
    Idle,
    /// The user asked to stop (SIGINT, SIGTERM).
    Stopped,
    /// The capture ended on its own (its duration or packet bound).
    Ended,
}

/// What one capture point saw and lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointStats {
    pub point: usize,
    pub captured: u64,
    pub kernel_dropped: u64,
    /// Set when the interface disappeared mid-capture.
    pub lost: Option<String>,
}

/// The conntrack question: the flow as it looked before a rewrite, in the namespace that
/// rewrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackQuery {
    /// IP protocol number.
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// The source's cached path MTU around an MTU search, and what restoring it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmtuRestore {
    /// The route towards the destination before the first probe and after the last.
    pub before: Option<Route>,
    pub after: Option<Route>,
    /// Whether dye removed the exception its probes left, and how (None: nothing to remove).
    pub removed: Option<Result<PmtuRemoval, String>>,
    /// The route after the removal.
    pub now: Option<Route>,
}

/// How a cached path MTU was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PmtuRemoval {
    /// The exception towards the destination alone (IPv6: the kernel deletes one cached route).
    OneDestination,
    /// Every IPv4 exception of the namespace: the kernel has no per-destination removal there.
    WholeNamespace,
}

/// One step of a probe through a netfilter (nf_tables) chain, from the kernel's trace of it in
/// one namespace: the rule that matched (or the chain's policy) and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleEvent {
    pub netns: String,
    /// The kernel's per-packet trace id (one walk through one namespace).
    pub trace_id: u32,
    /// `ip`, `ip6`, `inet`…
    pub family: String,
    pub table: String,
    pub chain: String,
    /// None for a chain policy or the end of a chain.
    pub handle: Option<u64>,
    /// True when the chain's policy decided.
    pub policy: bool,
    /// `accept`, `drop`, `continue`, `jump CHAIN`…
    pub verdict: Option<String>,
    /// The rule as nft would print it (`ip daddr 10.244.2.2 counter drop`), or `policy drop`.
    pub text: String,
    /// The devices the packet came in on and was to leave by at this hook (the kernel reports
    /// them on a hook's first event; dye copies them to the rest). None in older recordings.
    #[serde(default)]
    pub iif: Option<String>,
    #[serde(default)]
    pub oif: Option<String>,
    /// The walked packet's IPv4 id or IPv6 flow label, which tells the probe (and its leg)
    /// the walk belongs to. None in older recordings.
    #[serde(default)]
    pub ip_id: Option<u32>,
}

/// What a rule (or a chain's policy) did with the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleVerdict {
    Accept,
    Drop,
    /// On to the next rule (a rule that did not decide, or the end of a chain).
    Continue,
    Return,
    Jump(String),
    Goto(String),
    /// queue, break, or what dye does not know.
    Other(String),
}

impl RuleEvent {
    /// The verdict, typed (the recording keeps nft's word for it).
    pub fn verdict_kind(&self) -> RuleVerdict {
        let Some(v) = self.verdict.as_deref() else {
            return RuleVerdict::Continue;
        };
        match v.split_once(' ') {
            Some(("jump", chain)) => RuleVerdict::Jump(chain.to_string()),
            Some(("goto", chain)) => RuleVerdict::Goto(chain.to_string()),
            _ => match v {
                "accept" => RuleVerdict::Accept,
                "drop" => RuleVerdict::Drop,
                "continue" => RuleVerdict::Continue,
                "return" => RuleVerdict::Return,
                other => RuleVerdict::Other(other.to_string()),
            },
        }
    }

    /// The packet was let go here.
    pub fn drops(&self) -> bool {
        self.verdict_kind() == RuleVerdict::Drop
    }

    /// The end of a chain was reached (no rule decided there).
    pub fn ends_chain(&self) -> bool {
        self.handle.is_none() && !self.policy && self.verdict_kind() == RuleVerdict::Continue
    }
}

/// A probe the kernel freed as dropped (`kfree_skb` with a drop reason), as dye's eBPF
/// program saw it: which probe, where, why, and the function that let go of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelDrop {
    /// The probe's sequence number (from its marker).
    pub seq: u32,
    /// When, in the capture clock (ns since the Unix epoch).
    pub ts_ns: u64,
    /// The namespace's name in the topology; None for a namespace outside dye's scope.
    pub netns: Option<String>,
    /// The namespace's inode (`net:[…]`), which names it when `netns` cannot.
    pub netns_inode: u64,
    /// The packet's device when it was dropped (None: no device, or one dye does not know).
    pub ifname: Option<String>,
    pub ifindex: u32,
    /// The kernel's `enum skb_drop_reason` value and its name from the kernel's BTF, less the
    /// `SKB_DROP_REASON_` prefix (`IP_RPFILTER`); None when BTF did not name it.
    pub reason_code: u32,
    pub reason: Option<String>,
    /// The function that freed it, `ip_error+0x94` (None without /proc/kallsyms).
    pub function: Option<String>,
}

/// Why the seam failed.
#[derive(Debug, thiserror::Error)]
pub enum SeamError {
    #[error("sending probe {seq}: {detail}")]
    Send { seq: u32, detail: String },
    #[error("capture: {0}")]
    Capture(String),
    #[error("{0}")]
    System(String),
    /// A replayed journal does not match what the core asks (another dye version's logic, or
    /// a damaged file).
    #[error(
        "the recording does not match this replay: expected {expected}, the journal has {found}"
    )]
    Diverged { expected: String, found: String },
}

/// How the core reaches the system.
pub trait Network {
    /// Time since the session started; advances only when a call of this trait returns.
    fn now(&self) -> Duration;
    /// Sends one probe; returns when it left, in the capture clock (ns since the Unix epoch).
    fn send(&mut self, probe: &Probe) -> Result<u64, SeamError>;
    /// Waits for the next capture event, at most until `until` (session time).
    fn next(&mut self, until: Duration) -> Result<Wait, SeamError>;
    /// `ip route get` answers for addresses the capture revealed.
    fn routes(&mut self, wanted: &[(String, IpAddr)]) -> Result<Vec<RouteLookup>, SeamError>;
    /// The conntrack entry of `query`'s flow in `netns`.
    fn conntrack(
        &mut self,
        netns: &str,
        query: &ConntrackQuery,
    ) -> Result<Option<Conntrack>, SeamError>;
    /// Restores the source's cached path MTU towards the destination if the probes changed it.
    fn restore_pmtu(&mut self) -> Result<PmtuRestore, SeamError>;
    /// Stops capturing; what each point saw and lost.
    fn finish(&mut self) -> Result<Vec<PointStats>, SeamError>;
    /// The netfilter rules the probes met, in the namespaces dye could trace (after `finish`).
    fn rule_events(&mut self) -> Result<Vec<RuleEvent>, SeamError>;
    /// The probes the kernel dropped, with its reasons (after `rule_events`).
    fn kernel_drops(&mut self) -> Result<Vec<KernelDrop>, SeamError>;
}

/// Frames as base64 in JSON: a third of hex's overhead, and still text.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
