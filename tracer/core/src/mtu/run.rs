//! One MTU search over the seam: DF probes one at a time, each size chosen by [`Search`] from
//! what the previous ones did, each watched until something decisive comes back into the
//! source or it is given up as lost; then the source's PMTU cache is restored if the probes
//! changed it, and everything goes to the analysis.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::analyze::{analyze, Inputs, Tried};
use super::outcome::{decisive, Arrival, ProbeOutcome};
use super::result::MtuResult;
use super::search::Search;
use crate::model::Proto;
use crate::observe::{Observer, Sighting};
use crate::oracle::SnapshotOracle;
use crate::path::VerdictKind;
use crate::probe::Probe;
use crate::probe::ProbeTemplate;
use crate::probe_loop::{self, Captured, SentProbe, Strategy, Watch};
use crate::reconstruct::reconstruct;
use crate::routes;
use crate::seam::Network;
use crate::snapshot::Snapshot;
use crate::trace::{check_port, source_route, TraceError, TraceIds};

/// What to measure and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtuPlan {
    /// The source namespace as the user named it.
    pub from: String,
    pub to: IpAddr,
    /// The destination as the user named it when it was not an address (`pod:default/web-0`).
    #[serde(default)]
    pub to_name: Option<String>,
    pub port: Option<u16>,
    pub proto: Proto,
    /// Smallest probe (default: 68 for IPv4, 1280 for IPv6 — the sizes every link must carry).
    pub min: Option<u32>,
    /// Largest probe (default and ceiling: the MTU of the source's egress interface).
    pub max: Option<u32>,
    /// Probes that must vanish at a size before it counts as too big.
    pub attempts: u32,
    /// How long to wait for each probe; None adapts to the path's round trip.
    pub wait: Option<Duration>,
    pub vxlan_ports: Vec<u16>,
    pub ids: TraceIds,
}

/// Bounds that keep a search light and finite.
pub const MAX_PROBES: u32 = 64;
pub const MAX_ATTEMPTS: u32 = 5;
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// The whole search never runs longer than this.
pub const MAX_ELAPSED: Duration = Duration::from_secs(120);
/// The first probe proves the path and measures its round trip: it may take this long.
const FIRST_WAIT: Duration = Duration::from_secs(2);
/// Adaptive waits stay within these bounds.
const MIN_ADAPTIVE_WAIT: Duration = Duration::from_millis(150);
const MAX_ADAPTIVE_WAIT: Duration = Duration::from_secs(2);
/// A first answer slower than this was probably a cold path (neighbour resolution, a proxy
/// ARP delay, a router's slow path): one more smallest probe measures the warm path.
const COLD_FIRST_ANSWER: Duration = Duration::from_millis(50);

impl MtuPlan {
    pub fn min_size(&self) -> u32 {
        self.min
            .unwrap_or(if self.to.is_ipv4() { 68 } else { 1280 })
    }

    /// Checks everything that can be checked before touching the system.
    pub fn validate(&self) -> Result<(), TraceError> {
        let bad = |m: String| Err(TraceError::Invalid(m));
        if self.attempts == 0 || self.attempts > MAX_ATTEMPTS {
            return bad(format!(
                "--attempts {} must be 1..={MAX_ATTEMPTS}",
                self.attempts
            ));
        }
        if let Some(w) = self.wait {
            if w.is_zero() || w > MAX_WAIT {
                return bad(format!(
                    "--wait {w:?} must be above 0 and at most {MAX_WAIT:?}"
                ));
            }
        }
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if min > max {
                return bad(format!("--min {min} is above --max {max}"));
            }
        }
        if let Some(max) = self.max {
            if max > 65535 {
                return bad(format!(
                    "--max {max}: an IP packet holds at most 65535 bytes"
                ));
            }
        }
        check_port(self.proto, self.to, self.port)
    }
}

/// Where the search is, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub probes: u32,
    pub size: u32,
    /// Largest size known to pass.
    pub passes: Option<u32>,
    /// Smallest size known not to pass.
    pub fails: Option<u32>,
}

/// The result of a search.
#[derive(Debug)]
pub struct MtuRun {
    pub result: MtuResult,
    /// Cut short by the user.
    pub interrupted: bool,
}

/// Runs an MTU search through `net`.
pub fn run_mtu(
    plan: &MtuPlan,
    snapshot: &mut Snapshot,
    net: &mut dyn Network,
    progress: &mut dyn FnMut(Progress),
) -> Result<MtuRun, TraceError> {
    plan.validate()?;
    let (src, source_mtu) = source_route(snapshot, &plan.from, plan.to)?;
    let min = plan.min_size();
    // Raw sends are checked against the egress device's MTU: no probe can be larger.
    let max = match (plan.max, source_mtu) {
        (Some(m), Some(s)) => m.min(s),
        (Some(m), None) => m,
        (None, Some(s)) => s,
        (None, None) => 1500,
    };
    let template = ProbeTemplate {
        src,
        dst: plan.to,
        proto: plan.proto,
        dport: plan.port.unwrap_or(0),
        sport_base: plan.ids.sport_base,
        size: min,
        df: true,
        trace_id: plan.ids.trace_id,
        ttl: crate::probe::DEFAULT_TTL,
        tcp: Default::default(),
    };
    template.check()?;
    if min > max {
        return Err(TraceError::Invalid(format!(
            "--min {min} is above the largest probe {} can send ({max}, the MTU of its route's device)",
            plan.from
        )));
    }

    let at_source: Vec<bool> = snapshot
        .points
        .iter()
        .map(|p| p.netns == snapshot.source)
        .collect();
    let linktypes: Vec<u32> = snapshot.points.iter().map(|p| p.linktype).collect();
    let mut observer = Observer::new(plan.ids.trace_id, &plan.vxlan_ports, &linktypes);
    let mut strategy = AdaptiveSearch {
        plan,
        template,
        search: Search::new(min, max, plan.attempts),
        watched: Vec::new(),
        wait: plan.wait.unwrap_or(FIRST_WAIT),
        fastest: None,
        repace: Repace::NotYet,
        at_source,
        decided: None,
        snapshot,
        progress,
    };
    let probed = probe_loop::run(&mut strategy, &mut observer, src, net, false)?;
    let AdaptiveSearch {
        search,
        watched,
        wait,
        snapshot,
        ..
    } = strategy;
    let (sightings, interrupted) = (probed.captured.sightings, probed.interrupted);
    let stats = net.finish()?;
    let dropped: u64 = stats.iter().map(|s| s.kernel_dropped).sum();
    if dropped > 0 {
        tracing::warn!(dropped, "capture rings dropped frames during the search");
    }
    let restore = net.restore_pmtu()?;

    // Every probe against the snapshot, with the routes its analysis asks for.
    let tried: Vec<Tried> = routes::answering(snapshot, net, |snapshot| {
        watched
            .iter()
            .map(|w| tried(w, snapshot, &sightings))
            .collect()
    })?;
    let snapshot: &Snapshot = snapshot;
    let result = analyze(Inputs {
        cfg: plan,
        src,
        snapshot,
        search: &search,
        tried: &tried,
        source_mtu,
        min,
        max,
        wait,
        pmtu: restore,
        complete: !interrupted && search.done(),
        elapsed: net.now(),
    });
    Ok(MtuRun {
        result,
        interrupted,
    })
}

/// `dye mtu`'s strategy: one DF probe at a time, each size chosen by [`Search`] from what the
/// previous ones did, each watched until something decisive comes back into the source or the
/// wait runs out. The fastest answer so far sets the pace of the waits after it.
struct AdaptiveSearch<'a> {
    plan: &'a MtuPlan,
    template: ProbeTemplate,
    search: Search,
    watched: Vec<Watched>,
    wait: Duration,
    /// The quickest answer so far: what the wait is paced by.
    fastest: Option<Duration>,
    /// Whether a slow first answer asked for a second smallest probe to pace by.
    repace: Repace,
    /// Which capture points are in the source namespace.
    at_source: Vec<bool>,
    /// What decided the probe being watched: (outcome, how long dye took to learn it, round
    /// trip by kernel timestamps).
    decided: Option<(ProbeOutcome, Duration, Duration)>,
    snapshot: &'a mut Snapshot,
    progress: &'a mut dyn FnMut(Progress),
}

impl Strategy for AdaptiveSearch<'_> {
    fn next_probe(
        &mut self,
        sent: &[SentProbe],
        now: Duration,
    ) -> Result<Option<Probe>, TraceError> {
        if sent.len() as u32 >= MAX_PROBES || now >= MAX_ELAPSED {
            return Ok(None);
        }
        let size = if self.repace == Repace::Wanted {
            self.repace = Repace::Done;
            self.template.size
        } else {
            match self.search.next() {
                Some(size) => size,
                None => return Ok(None),
            }
        };
        let seq = sent.len() as u32 + 1;
        let probe = ProbeTemplate {
            size,
            ..self.template.clone()
        }
        .build(seq, self.plan.ids.id_base.wrapping_add(seq as u16))?;
        (self.progress)(Progress {
            probes: seq,
            size,
            passes: self.search.passed(),
            fails: self.search.failed().map(|(s, _)| s),
        });
        self.decided = None;
        Ok(Some(probe))
    }

    fn deadline(&self, probe: &SentProbe) -> Duration {
        probe.at + self.wait
    }

    fn seen(&mut self, probe: &SentProbe, s: &Sighting, _: &Captured, now: Duration) -> Watch {
        if s.seq != probe.seq {
            return Watch::On;
        }
        let at_source = &self.at_source;
        match decisive(s, |p| at_source.get(p).copied().unwrap_or(false)) {
            Some(o) => {
                let rtt = Duration::from_nanos(s.ts_ns.saturating_sub(probe.ts_ns));
                self.decided = Some((o, now.saturating_sub(probe.at), rtt));
                Watch::Done
            }
            None => Watch::On,
        }
    }

    fn watched(
        &mut self,
        probe: &SentProbe,
        captured: &Captured,
        interrupted: bool,
        net: &mut dyn Network,
    ) -> Result<(), TraceError> {
        let decided = self.decided.take();
        if decided.is_none() && interrupted {
            return Ok(());
        }
        self.watched.push(Watched {
            seq: probe.seq,
            size: probe.size,
            sent_ns: probe.ts_ns,
            decided,
        });
        let w = self.watched.last().expect("just pushed");
        // The search needs this probe's outcome now, and where it vanished may need a route
        // towards an address the capture just revealed.
        let outcome = routes::answering(self.snapshot, net, |snapshot| {
            provisional_outcome(w, snapshot, &captured.sightings)
        })?;
        self.search.record(probe.size, outcome.search);
        // Answers set the pace: a generous multiple of the quickest time dye took to learn one
        // (capture and reorder delay included, not just the network's round trip). The quickest,
        // not the first: a cold first answer (ARP, a router's slow path) must not stretch every
        // later wait.
        if self.plan.wait.is_none() && outcome.passed {
            if let Some((_, learned, _)) = w.decided {
                if self.fastest.is_none() && learned > COLD_FIRST_ANSWER {
                    self.repace = Repace::Wanted;
                }
                if self.fastest.is_none_or(|f| learned < f) {
                    self.fastest = Some(learned);
                    self.wait = adaptive_wait(learned);
                }
            }
        }
        tracing::debug!(
            seq = probe.seq,
            size = probe.size,
            passed = outcome.passed,
            "probe done"
        );
        Ok(())
    }
}

/// A slow first answer is measured again once, with the smallest probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repace {
    NotYet,
    Wanted,
    Done,
}

/// How long to wait for a probe, given the quickest answer so far.
fn adaptive_wait(learned: Duration) -> Duration {
    (learned * 4 + Duration::from_millis(100)).clamp(MIN_ADAPTIVE_WAIT, MAX_ADAPTIVE_WAIT)
}

/// One probe as watched: when it left and what decided it, if anything did in time.
#[derive(Debug)]
struct Watched {
    seq: u32,
    size: u32,
    sent_ns: u64,
    /// (outcome, how long dye took to learn it, round trip by kernel timestamps)
    decided: Option<(ProbeOutcome, Duration, Duration)>,
}

struct Provisional {
    search: super::search::Outcome,
    passed: bool,
}

/// The outcome the search needs right after a probe: decided, delivered, or vanished (with the
/// size that fits through the link after its last sighting, from the snapshot so far).
fn provisional_outcome(w: &Watched, snapshot: &Snapshot, sightings: &[Sighting]) -> Provisional {
    let t = tried(w, snapshot, sightings);
    Provisional {
        search: t.search_outcome(),
        passed: matches!(t.outcome, ProbeOutcome::Passed(_)),
    }
}

/// A watched probe reconstructed from its sightings: its decisive answer, or — without one —
/// passed when it was seen entering the destination's namespace, else vanished.
fn tried(w: &Watched, snapshot: &Snapshot, sightings: &[Sighting]) -> Tried {
    let oracle = SnapshotOracle { snapshot };
    let mine: Vec<Sighting> = sightings
        .iter()
        .filter(|s| s.seq == w.seq)
        .cloned()
        .collect();
    let rec = reconstruct(
        &snapshot.points,
        &snapshot.source,
        &[(w.seq, w.sent_ns)],
        &mine,
        &oracle,
    );
    let (outcome, rtt) = match &w.decided {
        Some((o, _, rtt)) => (o.clone(), Some(*rtt)),
        None if rec.verdict.kind() == VerdictKind::Delivered => {
            (ProbeOutcome::Passed(Arrival::SeenEntering), None)
        }
        None => (ProbeOutcome::Vanished, None),
    };
    // Every encapsulated packet's (outer source, outer destination): a tunnel's remote
    // endpoint for probes that vanished before reaching the underlay.
    let mut outers: Vec<(IpAddr, IpAddr)> = Vec::new();
    for o in sightings.iter().filter_map(|s| s.outer.first()) {
        if !outers.contains(&(o.src, o.dst)) {
            outers.push((o.src, o.dst));
        }
    }
    Tried::new(
        w.seq, w.size, outcome, rtt, rec.hops, snapshot, &oracle, &outers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_follows_the_quickest_answer_within_bounds() {
        assert_eq!(
            adaptive_wait(Duration::from_millis(20)),
            Duration::from_millis(180)
        );
        // A cold first answer of 391 ms would make 1.66 s waits; a 2 ms answer after it brings
        // the wait back to the floor.
        assert_eq!(
            adaptive_wait(Duration::from_millis(391)),
            Duration::from_millis(1664)
        );
        assert_eq!(adaptive_wait(Duration::from_millis(2)), MIN_ADAPTIVE_WAIT);
        assert_eq!(adaptive_wait(Duration::from_secs(5)), MAX_ADAPTIVE_WAIT);
    }
}
