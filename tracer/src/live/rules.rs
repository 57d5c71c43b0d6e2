//! Which netfilter rule met the probes: every namespace in scope gets dye's owner-flagged
//! nf_tables table whose rule sets `meta nftrace` on the probes (matched by protocol and their
//! marker, before NAT and conntrack), and a listener for the kernel's trace events. The kernel
//! removes each table when dye's socket closes — on success, error, or SIGKILL.

use std::collections::HashMap;
use std::net::IpAddr;

use dye_capture::nftrace::{Armed, ProbeMatch, TraceKind};
use dye_capture::topology::Topology;
use dye_core::seam::RuleEvent;
use dye_core::snapshot::LegacyTables;

/// Trace events drained per namespace at most: a trace has a handful per probe and namespace.
const MAX_EVENTS: usize = 4096;

/// What marks the probes of one trace for the kernel's rule.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSignature {
    /// `IPPROTO_*`.
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP packet size of the probes.
    pub size: u32,
    pub trace_id: u32,
}

impl ProbeSignature {
    /// The marker's constant half — its magic and the trace id — where it sits in every probe
    /// of the trace: NAT rewrites addresses, not the payload, so this match keeps tracing a
    /// probe downstream of a DNAT, whatever its size (the marker ends the packet).
    fn by_marker(&self) -> ProbeMatch {
        let mut bytes = dye_decode::Marker::MAGIC.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.trace_id.to_be_bytes());
        ProbeMatch::by_marker(self.proto, self.src, self.marker_offset(), bytes)
    }

    /// Where the marker starts, from the transport header.
    fn marker_offset(&self) -> u32 {
        let ip_header = if self.src.is_ipv4() { 20 } else { 40 };
        self.size
            .saturating_sub(ip_header + dye_decode::Marker::LEN as u32)
    }

    /// For a kernel older than 6.2, which reads payload offsets up to 255 only: the probes'
    /// addresses (a NAT on the way rewrites them, so tracing stops there).
    fn by_addresses(&self) -> Option<ProbeMatch> {
        (self.marker_offset() + 8 > 256).then(|| ProbeMatch::new(self.proto, self.src, self.dst))
    }
}

/// The armed namespaces of one trace.
#[derive(Debug, Default)]
pub struct RuleTracer {
    /// (the namespace's name in the topology, its armed table)
    armed: Vec<(String, Armed)>,
}

impl RuleTracer {
    /// Arms every namespace of `topology` for the probes of `probes`. A namespace that cannot
    /// be armed (no nf_tables, no permission) is skipped with a warning: the trace goes on, its
    /// verdict just cannot name a rule there.
    pub fn arm(topology: &Topology, table: &str, probes: &ProbeSignature) -> Self {
        Self::arm_where(topology, table, probes, |_| true)
    }

    /// [`RuleTracer::arm`] in the namespaces of `topology` whose name `wanted` accepts.
    pub fn arm_where(
        topology: &Topology,
        table: &str,
        probes: &ProbeSignature,
        wanted: impl Fn(&str) -> bool,
    ) -> Self {
        let (m, fallback) = (probes.by_marker(), probes.by_addresses());
        let started = std::time::Instant::now();
        let arm = |netns| {
            Armed::arm(netns, table, &m).or_else(|e| match &fallback {
                Some(f) => {
                    tracing::debug!("marker match refused ({e}): matching addresses");
                    Armed::arm(netns, table, f)
                }
                None => Err(e),
            })
        };
        let armed: Vec<(String, Armed)> = topology
            .namespaces
            .iter()
            .filter(|info| wanted(&info.name))
            .filter_map(|info| match arm(&info.netns) {
                Ok(a) => Some((info.name.clone(), a)),
                Err(e) => {
                    tracing::warn!(netns = %info.name, "cannot trace netfilter rules: {e}");
                    None
                }
            })
            .collect();
        tracing::debug!(
            namespaces = armed.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "netfilter tracing armed"
        );
        RuleTracer { armed }
    }

    /// The rules the probes met since arming, dye's own tracing rule left out, each with its
    /// text as nft prints it.
    pub fn events(&mut self, topology: &Topology) -> Vec<RuleEvent> {
        let mut out = Vec::new();
        for (netns, armed) in &mut self.armed {
            let links = topology
                .namespace(netns)
                .map(|n| &n.links[..])
                .unwrap_or(&[]);
            let dev = |ifindex: Option<u32>| {
                let i = ifindex?;
                links
                    .iter()
                    .find(|l| l.ifindex == i)
                    .map(|l| l.name.clone())
            };
            // The kernel reports devices and headers on a hook's first event only (dye's own
            // rule, left out below): each later event of that walk takes them from there.
            let mut seen: HashMap<u32, Crossing> = HashMap::new();
            let events = match armed.drain(MAX_EVENTS) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(%netns, "reading netfilter trace events: {e}");
                    continue;
                }
            };
            let own = armed.table().to_string();
            for ev in events {
                if ev.iif.is_some() || ev.oif.is_some() || !ev.network_header.is_empty() {
                    let crossing = Crossing {
                        iif: dev(ev.iif),
                        oif: dev(ev.oif),
                        ip_id: ip_id(&ev.network_header),
                    };
                    seen.insert(ev.id, crossing);
                }
                if ev.is_from(&own) {
                    continue;
                }
                let crossing = seen.get(&ev.id).cloned().unwrap_or_default();
                let text = armed.describe(&ev);
                out.push(RuleEvent {
                    netns: netns.clone(),
                    trace_id: ev.id,
                    family: family_name(ev.family).to_string(),
                    table: ev.table.clone(),
                    chain: ev.chain.clone(),
                    handle: ev.rule_handle,
                    policy: ev.kind == TraceKind::Policy,
                    verdict: ev.verdict.as_ref().map(|v| v.to_string()),
                    text,
                    iif: crossing.iif,
                    oif: crossing.oif,
                    ip_id: crossing.ip_id,
                });
            }
        }
        out
    }
}

impl Drop for RuleTracer {
    /// Closing an owner socket makes the kernel delete its table, and each close waits for an
    /// RCU grace period: close them side by side (nine in turn took ~120 ms).
    fn drop(&mut self) {
        let started = std::time::Instant::now();
        let armed = std::mem::take(&mut self.armed);
        let n = armed.len();
        if n == 0 {
            return;
        }
        std::thread::scope(|s| {
            for a in armed {
                s.spawn(move || drop(a));
            }
        });
        tracing::debug!(
            namespaces = n,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "netfilter tracing disarmed"
        );
    }
}

/// The namespaces with iptables-legacy tables: their rules drop packets without a trace.
pub fn legacy_iptables(topology: &Topology) -> Vec<LegacyTables> {
    topology
        .namespaces
        .iter()
        .filter_map(
            |info| match dye_capture::nftrace::legacy_tables(&info.netns) {
                Ok(tables) if !tables.is_empty() => Some(LegacyTables {
                    netns: info.name.clone(),
                    tables,
                }),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(netns = %info.name, "{e}");
                    None
                }
            },
        )
        .collect()
}

/// Where a walk crossed a hook, from its first event.
#[derive(Debug, Clone, Default)]
struct Crossing {
    iif: Option<String>,
    oif: Option<String>,
    ip_id: Option<u32>,
}

/// The IPv4 id or IPv6 flow label of the packet whose headers the kernel copied.
fn ip_id(network_header: &[u8]) -> Option<u32> {
    match network_header.first()? >> 4 {
        4 => Some(u32::from(u16::from_be_bytes([
            *network_header.get(4)?,
            *network_header.get(5)?,
        ]))),
        6 => Some(
            u32::from_be_bytes([
                0,
                *network_header.get(1)?,
                *network_header.get(2)?,
                *network_header.get(3)?,
            ]) & 0xf_ffff,
        ),
        _ => None,
    }
}

/// nft's name of an `NFPROTO_*` family.
fn family_name(nfproto: u8) -> &'static str {
    match nfproto {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}
