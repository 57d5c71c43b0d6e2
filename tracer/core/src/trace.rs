//! One trace over the seam: build the probes, send them on a fixed schedule through the probe
//! loop, turn capture events into sightings, stop when every probe is answered (or the wait
//! runs out), put back a path MTU the probes taught the source, reconstruct (asking the system
//! for the routes the reasoning needs), and confirm NAT rewrites against conntrack.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kernel_drop;
use crate::model::Proto;
use crate::observe::{Observer, Sighting, SightingKind};
use crate::oracle::SnapshotOracle;
use crate::path::{Hop, HopEvent, Leg, ProbeSummary, Verdict};
use crate::probe::{Probe, ProbeError, ProbeTemplate};
use crate::probe_loop::{self, Captured, SentProbe, Strategy, Watch};
use crate::reconstruct::reconstruct;
use crate::routes;
use crate::seam::{ConntrackQuery, Frame, Network, PmtuRestore, PointStats, RuleEvent, SeamError};
use crate::snapshot::Snapshot;

/// The random values of one trace, drawn at the edge so the core stays deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceIds {
    /// The marker's per-trace id.
    pub trace_id: u32,
    /// First UDP/TCP source port (ICMP: echo identifier).
    pub sport_base: u16,
    /// First IPv4 id.
    pub id_base: u16,
}

/// What to trace and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracePlan {
    /// The source namespace as the user named it.
    pub from: String,
    pub to: IpAddr,
    /// The destination as the user named it when it was not an address (`pod:default/web-0`).
    #[serde(default)]
    pub to_name: Option<String>,
    pub port: Option<u16>,
    pub proto: Proto,
    /// IP packet size of each probe.
    pub size: u32,
    pub df: bool,
    /// IPv4 TTL / IPv6 hop limit of the probes (older recordings: the default, 64).
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    /// The segment of a TCP probe (older recordings: SYN).
    #[serde(default)]
    pub tcp: crate::model::TcpSegment,
    pub count: u32,
    pub interval: Duration,
    /// How long to wait for answers after the last probe.
    pub timeout: Duration,
    pub vxlan_ports: Vec<u16>,
    /// Keep every frame of the window for the pcap, not only the probes'.
    pub keep_all: bool,
    pub ids: TraceIds,
}

fn default_ttl() -> u8 {
    crate::probe::DEFAULT_TTL
}

/// Bounds that keep a trace light on a busy node.
pub const MAX_COUNT: u32 = 100;
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// After the last answer, how long to keep draining: longer than the capture's reorder window,
/// so the hops still in it arrive.
const SETTLE: Duration = Duration::from_millis(150);

/// Why a trace cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A setting out of bounds, in the user's words.
    #[error("{0}")]
    Invalid(String),
    #[error("no route from {from} to {to}: {detail}")]
    NoRoute {
        from: String,
        to: IpAddr,
        detail: String,
    },
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Seam(#[from] SeamError),
}

impl TracePlan {
    /// Checks everything that can be checked before touching the system.
    pub fn validate(&self) -> Result<(), TraceError> {
        let bad = |m: String| Err(TraceError::Invalid(m));
        if self.ttl == 0 {
            return bad("--ttl must be 1..=255".into());
        }
        if self.count == 0 || self.count > MAX_COUNT {
            return bad(format!("--count {} must be 1..={MAX_COUNT}", self.count));
        }
        if self.interval < MIN_INTERVAL {
            return bad(format!(
                "--interval {:?} is below the minimum {:?}",
                self.interval, MIN_INTERVAL
            ));
        }
        if self.timeout > MAX_TIMEOUT {
            return bad(format!(
                "--timeout {:?} is above the maximum {:?}",
                self.timeout, MAX_TIMEOUT
            ));
        }
        check_port(self.proto, self.to, self.port)
    }

    /// The destination as the report writes it: `ip`, `ip:port`, `[ipv6]:port`.
    pub fn target(&self) -> String {
        crate::model::Endpoint {
            addr: self.to,
            port: self.port,
        }
        .to_string()
    }
}

/// A UDP or TCP probe needs a destination port, an ICMP probe has none.
pub fn check_port(proto: Proto, to: IpAddr, port: Option<u16>) -> Result<(), TraceError> {
    match (proto, port) {
        (Proto::Udp | Proto::Tcp, None) => Err(TraceError::Invalid(format!(
            "--proto {} needs a port: --to {to}:PORT",
            proto.as_str()
        ))),
        (Proto::Icmp, Some(p)) => Err(TraceError::Invalid(format!(
            "--proto icmp has no port, but --to names port {p}; add --proto tcp or udp"
        ))),
        _ => Ok(()),
    }
}

/// The source's address towards `to` and its egress MTU, from the snapshot's lookup.
pub fn source_route(
    snapshot: &Snapshot,
    from: &str,
    to: IpAddr,
) -> Result<(IpAddr, Option<u32>), TraceError> {
    let no_route = |detail: String| TraceError::NoRoute {
        from: from.to_string(),
        to,
        detail,
    };
    let route = match snapshot.route(&snapshot.source, to) {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(no_route(e.clone())),
        None => return Err(no_route("the snapshot holds no route lookup for it".into())),
    };
    let src = route
        .prefsrc
        .ok_or_else(|| no_route(format!("route `{route}` has no source address")))?;
    let mtu = route
        .dev
        .as_deref()
        .and_then(|dev| snapshot.link(&snapshot.source, dev))
        .map(|l| l.mtu);
    Ok((src, mtu))
}

/// Where a trace is, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Sending { count: u32 },
    Reconstructing,
}

/// What one capture point saw and lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointResult {
    /// Index into the snapshot's points.
    pub point: usize,
    /// Probe-related frames this point saw.
    pub sightings: u64,
    /// Frames captured (after the kernel filter), both directions.
    pub captured: u64,
    pub kernel_dropped: u64,
    /// Set when the interface disappeared mid-trace.
    pub lost: Option<String>,
}

/// The trace, reconstructed.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub plan: TracePlan,
    /// The source address the probes carried.
    pub src: IpAddr,
    pub verdict: Verdict,
    /// The path of the representative probe, forward leg then return leg.
    pub hops: Vec<Hop>,
    pub probes: Vec<ProbeSummary>,
    pub capture: Vec<PointResult>,
    /// Session time of the whole trace.
    pub elapsed: Duration,
    /// The source's cached path MTU, when the probes changed it (and what restoring did).
    pub pmtu: Option<PmtuRestore>,
}

/// Everything a trace produced.
#[derive(Debug)]
pub struct TraceRun {
    pub trace: Trace,
    /// Every frame in capture order; `None` where it was not kept (not the probe's, or over
    /// the memory bound).
    pub frames: Vec<Option<Frame>>,
    pub sightings: Vec<Sighting>,
    /// The trace was cut short by the user.
    pub interrupted: bool,
}

/// Runs a trace through `net`. The snapshot gains the route lookups the reconstruction needs.
pub fn run_trace(
    plan: &TracePlan,
    snapshot: &mut Snapshot,
    net: &mut dyn Network,
    progress: &mut dyn FnMut(Progress),
) -> Result<TraceRun, TraceError> {
    plan.validate()?;
    let (src, source_mtu) = source_route(snapshot, &plan.from, plan.to)?;
    if let Some(mtu) = source_mtu {
        if plan.size > mtu {
            return Err(TraceError::Invalid(format!(
                "--size {} exceeds the MTU {mtu} of the route's device in {}: dye sends probes whole, so the largest probe here is {mtu}",
                plan.size, plan.from
            )));
        }
    }
    let template = ProbeTemplate {
        src,
        dst: plan.to,
        proto: plan.proto,
        dport: plan.port.unwrap_or(0),
        sport_base: plan.ids.sport_base,
        size: plan.size,
        df: plan.df,
        trace_id: plan.ids.trace_id,
        ttl: plan.ttl,
        tcp: plan.tcp,
    };
    template.check()?;
    let probes: Vec<Probe> = (1..=plan.count)
        .map(|seq| template.build(seq, plan.ids.id_base.wrapping_add(seq as u16)))
        .collect::<Result<_, _>>()?;

    let linktypes: Vec<u32> = snapshot.points.iter().map(|p| p.linktype).collect();
    let mut observer =
        Observer::new(plan.ids.trace_id, &plan.vxlan_ports, &linktypes).tcp_probes(plan.tcp);
    progress(Progress::Sending { count: plan.count });
    let mut schedule = FixedSchedule {
        probes: probes.into_iter(),
        count: plan.count,
        interval: plan.interval,
        timeout: plan.timeout,
        at_source: snapshot
            .points
            .iter()
            .map(|p| p.netns == snapshot.source)
            .collect(),
        settling: false,
    };
    let probed = probe_loop::run(&mut schedule, &mut observer, src, net, plan.keep_all)?;
    let sent: Vec<(u32, u64)> = probed.sent.iter().map(|p| (p.seq, p.ts_ns)).collect();
    let (collected, interrupted) = (probed.captured, probed.interrupted);
    let stats = net.finish()?;
    // A Packet Too Big about a big IPv6 probe updates the source's cached path MTU as if the
    // pod's own traffic had caused it: put it back, and say so.
    let rules = net.rule_events()?;
    let kernel_drops = net.kernel_drops()?;
    let restore = net.restore_pmtu()?;
    let pmtu = restore.removed.is_some().then_some(restore);
    progress(Progress::Reconstructing);

    let mut rec = routes::answering(snapshot, net, |snapshot| {
        reconstruct(
            &snapshot.points,
            &snapshot.source,
            &sent,
            &collected.sightings,
            &SnapshotOracle { snapshot },
        )
    })?;
    confirm_nat(snapshot, net, &mut rec.hops)?;
    rec.verdict.dropped_by = dropping_rule(&rec.verdict, &rules);
    crate::hop_rules::attach(&mut rec.hops, crate::hop_rules::deciding(&rules));
    rec.verdict.kernel_drop = kernel_drop::explaining(&rec.verdict, &rec.probes, &kernel_drops);

    let capture = capture_results(snapshot, &stats, &collected);
    let trace = Trace {
        plan: plan.clone(),
        src,
        verdict: rec.verdict,
        hops: rec.hops,
        probes: rec.probes,
        capture,
        elapsed: net.now(),
        pmtu,
    };
    Ok(TraceRun {
        trace,
        frames: collected.frames,
        sightings: collected.sightings,
        interrupted,
    })
}

/// `dye trace`'s strategy: probe k leaves k × interval after the first; each is watched until
/// the next is due, the last until the timeout — or, once every probe is answered, for as long
/// as stragglers still in the capture's reorder window need to arrive.
#[derive(Debug)]
struct FixedSchedule {
    probes: std::vec::IntoIter<Probe>,
    count: u32,
    interval: Duration,
    timeout: Duration,
    /// Which capture points are in the source namespace.
    at_source: Vec<bool>,
    settling: bool,
}

impl Strategy for FixedSchedule {
    fn next_probe(&mut self, _: &[SentProbe], _: Duration) -> Result<Option<Probe>, TraceError> {
        Ok(self.probes.next())
    }

    fn deadline(&self, probe: &SentProbe) -> Duration {
        if probe.seq == self.count {
            probe.at + self.timeout
        } else {
            probe.at + self.interval
        }
    }

    fn seen(
        &mut self,
        probe: &SentProbe,
        _: &Sighting,
        captured: &Captured,
        now: Duration,
    ) -> Watch {
        if probe.seq == self.count
            && !self.settling
            && all_finished(self.count, &captured.sightings, &self.at_source)
        {
            self.settling = true;
            return Watch::Until(now + SETTLE);
        }
        Watch::On
    }

    fn watched(
        &mut self,
        _: &SentProbe,
        _: &Captured,
        _: bool,
        _: &mut dyn Network,
    ) -> Result<(), TraceError> {
        Ok(())
    }
}

/// True when every probe has its answer (or ICMP error) back in the source namespace.
fn all_finished(count: u32, sightings: &[Sighting], at_source: &[bool]) -> bool {
    (1..=count).all(|seq| {
        sightings.iter().any(|s| {
            s.seq == seq
                && s.leg == Leg::Return
                && at_source.get(s.point).copied().unwrap_or(false)
                && !matches!(s.kind, SightingKind::Probe)
        })
    })
}

/// The rule (or policy) that dropped the probe inside the namespace it vanished in, when the
/// kernel traced it there: the last drop verdict in that namespace.
fn dropping_rule(verdict: &Verdict, rules: &[RuleEvent]) -> Option<RuleEvent> {
    let netns = verdict.dropped_inside()?;
    rules
        .iter()
        .rev()
        .find(|r| r.netns == netns && r.drops())
        .cloned()
}

/// Attaches the conntrack entry to every hop where a NAT rewrite was first seen.
fn confirm_nat(
    snapshot: &Snapshot,
    net: &mut dyn Network,
    hops: &mut [Hop],
) -> Result<(), SeamError> {
    for i in 1..hops.len() {
        let rewrote = hops[i]
            .events
            .iter()
            .any(|e| matches!(e, HopEvent::Nat { .. }));
        if !rewrote || hops[i].leg != Leg::Forward || snapshot.namespace(&hops[i].netns).is_none() {
            continue;
        }
        let before = &hops[i - 1].packet;
        let query = ConntrackQuery {
            proto: before.proto,
            src: before.src,
            dst: before.dst,
            sport: before.sport,
            dport: before.dport,
        };
        hops[i].conntrack = net.conntrack(&hops[i].netns, &query)?;
    }
    Ok(())
}

fn capture_results(snapshot: &Snapshot, stats: &[PointStats], c: &Captured) -> Vec<PointResult> {
    (0..snapshot.points.len())
        .map(|i| {
            let st = stats.iter().find(|s| s.point == i);
            PointResult {
                point: i,
                sightings: c.sightings.iter().filter(|s| s.point == i).count() as u64,
                captured: st.map(|s| s.captured).unwrap_or(0),
                kernel_dropped: st.map(|s| s.kernel_dropped).unwrap_or(0),
                lost: st
                    .and_then(|s| s.lost.clone())
                    .or_else(|| c.lost.iter().find(|(p, _)| *p == i).map(|(_, r)| r.clone())),
            }
        })
        .collect()
}
