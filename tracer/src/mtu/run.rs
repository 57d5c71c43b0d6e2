//! One MTU search from start to finish: resolve the source, its route and egress MTU, note the
//! source's cached path MTU, capture at every reachable interface, then send DF probes one at a
//! time — each size chosen by [`Search`] from what the previous ones did — and watch each probe
//! until something decisive comes back or it is given up as lost. Finally restore the PMTU cache
//! if the probes changed it, and hand everything to the analysis.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dye_capture::{CaptureConfig, CaptureSession, Event};

use super::analyze::{analyze, Tried};
use super::cache;
use super::outcome::{decisive, ProbeOutcome};
use super::report::MtuReport;
use super::search::Search;
use crate::trace::inject::Injector;
use crate::trace::observe::{Observer, Sighting};
use crate::trace::probe::{ProbeTemplate, Proto};
use crate::trace::reconstruct::reconstruct;
use crate::trace::report::VerdictKind;
use crate::trace::run::{capture_filter, check_port, open_source, random_u32};
use crate::trace::scope::{Scope, ScopeRequest, TopologyOracle};
use crate::trace::TraceError;

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct MtuConfig {
    /// Source namespace reference: a name under /run/netns, a path, a PID or `host`.
    pub from: String,
    pub to: IpAddr,
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
    pub scope: ScopeRequest,
    pub vxlan_ports: Vec<u16>,
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
/// Probes are watched one at a time, so cross-point ordering can be short: answers arrive fast.
const REORDER_WINDOW: Duration = Duration::from_millis(20);

impl MtuConfig {
    fn min_size(&self) -> u32 {
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
    pub report: MtuReport,
    /// Cut short by SIGINT/SIGTERM.
    pub interrupted: bool,
}

/// Runs an MTU search. `stop` ends it early; what was learned is still reported.
pub fn mtu(
    cfg: &MtuConfig,
    stop: Arc<AtomicBool>,
    progress: &dyn Fn(Progress),
    status: &dyn Fn(&str),
) -> Result<MtuRun, TraceError> {
    let started = Instant::now();
    cfg.validate()?;
    let (source, route, src) = open_source(&cfg.from, cfg.to)?;
    status(&format!(
        "discovering namespaces reachable from {}",
        source.name()
    ));
    let scope = Scope::discover(&source, &cfg.scope)?;
    let source_mtu = route
        .dev
        .as_deref()
        .and_then(|dev| scope.topology.namespace(&scope.source)?.link(dev))
        .map(|l| l.mtu);
    let min = cfg.min_size();
    // Raw sends are checked against the egress device's MTU: no probe can be larger.
    let max = match (cfg.max, source_mtu) {
        (Some(m), Some(s)) => m.min(s),
        (Some(m), None) => m,
        (None, Some(s)) => s,
        (None, None) => 1500,
    };
    let template = ProbeTemplate {
        src,
        dst: cfg.to,
        proto: cfg.proto,
        dport: cfg.port.unwrap_or(0),
        sport_base: 32768 + (random_u32() % 16384) as u16,
        size: min,
        df: true,
        trace_id: random_u32(),
    };
    template.check()?;
    if min > max {
        return Err(TraceError::Invalid(format!(
            "--min {min} is above the largest probe {} can send ({max}, the MTU of its route's device)",
            cfg.from
        )));
    }

    let cache_before = cache::snapshot(&source, cfg.to);

    let mut capture = CaptureConfig::new(scope.points.clone());
    capture.filter = Some(capture_filter(
        template.trace_id,
        cfg.proto,
        &cfg.vxlan_ports,
    ));
    capture.immediate = true;
    capture.promisc = false;
    capture.buffer_bytes = 256 << 10;
    capture.reorder_window = Some(REORDER_WINDOW);
    capture.duration = Some(MAX_ELAPSED + Duration::from_secs(5));
    status(&format!(
        "capturing on {} interfaces in {} namespaces",
        scope.points.len(),
        scope.topology.namespaces.len()
    ));
    let session = CaptureSession::start(capture)?;
    let injector = Injector::open(&source, cfg.to)?;

    let at_source: Vec<bool> = scope
        .metas
        .iter()
        .map(|m| m.netns == scope.source)
        .collect();
    let oracle = TopologyOracle {
        topology: &scope.topology,
    };
    let mut observer = Observer::new(template.trace_id, &cfg.vxlan_ports);
    let mut sightings: Vec<Sighting> = Vec::new();
    let mut search = Search::new(min, max, cfg.attempts);
    let mut tried: Vec<Tried> = Vec::new();
    let mut wait = cfg.wait.unwrap_or(FIRST_WAIT);
    let id_base = random_u32() as u16;
    let mut frame_index = 0usize;
    let mut capture_ended = false;

    while let Some(size) = search.next() {
        if stop.load(Ordering::Relaxed)
            || capture_ended
            || tried.len() as u32 >= MAX_PROBES
            || started.elapsed() >= MAX_ELAPSED
        {
            break;
        }
        let seq = tried.len() as u32 + 1;
        let probe = ProbeTemplate {
            size,
            ..template.clone()
        }
        .build(seq, id_base.wrapping_add(seq as u16))?;
        observer.sent(src, probe.ip_id, seq);
        progress(Progress {
            probes: seq,
            size,
            passes: search.passed(),
            fails: search.failed().map(|(s, _)| s),
        });
        let sent_at = Instant::now();
        let sent_ns = injector.send(&probe, cfg.to)?;
        let deadline = sent_at + wait;

        // Watch until something decisive comes back into the source, or the wait runs out.
        // (outcome, when dye learned it, round trip by the kernel's timestamps)
        let mut decided: Option<(ProbeOutcome, Duration, Duration)> = None;
        while decided.is_none() && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            match session.recv_timeout(Duration::from_millis(10)) {
                Ok(Some(Event::Packet(obs))) => {
                    let s = observer.observe(
                        frame_index,
                        obs.point,
                        obs.direction,
                        obs.ts_ns,
                        &obs.frame,
                    );
                    frame_index += 1;
                    let Some(s) = s else { continue };
                    if s.seq == seq {
                        decided =
                            decisive(&s, |p| at_source.get(p).copied().unwrap_or(false)).map(|o| {
                                let rtt = Duration::from_nanos(s.ts_ns.saturating_sub(sent_ns));
                                (o, sent_at.elapsed(), rtt)
                            });
                    }
                    sightings.push(s);
                }
                Ok(Some(Event::PointLost { point, reason })) => {
                    tracing::warn!(point, reason, "capture point lost");
                }
                Ok(None) => {}
                Err(()) => {
                    capture_ended = true;
                    break;
                }
            }
        }
        let mine: Vec<Sighting> = sightings.iter().filter(|s| s.seq == seq).cloned().collect();
        let rec = reconstruct(
            &scope.metas,
            &scope.source,
            &[(seq, sent_ns)],
            &mine,
            &oracle,
        );
        let (outcome, learned, rtt) = match decided {
            Some((o, learned, rtt)) => (o, Some(learned), Some(rtt)),
            None if rec.verdict.kind == VerdictKind::Delivered => (
                ProbeOutcome::Passed {
                    how: "seen entering the destination's namespace (no answer)".into(),
                },
                None,
                None,
            ),
            None if stop.load(Ordering::Relaxed) => break,
            None => (ProbeOutcome::Vanished, None, None),
        };
        let t = Tried::new(seq, size, outcome, rtt, rec.hops, &scope, &oracle);
        search.record(size, t.search_outcome());
        // The first answer sets the pace: a generous multiple of the time dye took to learn it
        // (capture and reorder delay included, not just the network's round trip).
        if cfg.wait.is_none() && matches!(t.outcome, ProbeOutcome::Passed { .. }) {
            if let Some(learned) = learned {
                if tried.iter().all(|t| t.rtt.is_none()) {
                    wait = (learned * 4 + Duration::from_millis(100))
                        .clamp(MIN_ADAPTIVE_WAIT, MAX_ADAPTIVE_WAIT);
                }
            }
        }
        tracing::debug!(seq, size, outcome = t.outcome.label(), "probe done");
        tried.push(t);
    }
    session.stop();
    let stats = session.join()?;
    let dropped: u64 = stats.iter().map(|s| s.kernel_dropped).sum();
    if dropped > 0 {
        tracing::warn!(dropped, "capture rings dropped frames during the search");
    }
    let cache = cache::restore_if_changed(&source, cfg.to, cache_before);
    let interrupted = stop.load(Ordering::Relaxed);
    let report = analyze(super::analyze::Inputs {
        cfg,
        src,
        scope: &scope,
        search: &search,
        tried: &tried,
        source_mtu,
        min,
        max,
        wait,
        cache,
        complete: !interrupted && search.done(),
        elapsed: started.elapsed(),
    });
    Ok(MtuRun {
        report,
        interrupted,
    })
}
