//! The live side of the seam: probes leave through a raw socket in the source namespace,
//! capture events come from kernel-filtered packet sockets in every namespace in scope, and
//! the after-capture questions (routes, conntrack, the PMTU cache) go to netlink in the
//! namespace concerned. Session time advances only when a call returns, as the seam requires.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dye_capture::topology::Topology;
use dye_capture::{CaptureSession, Event as CaptureEvent, Injector, Netns};
use dye_core::model::Direction;
use dye_core::path::Conntrack;
use dye_core::probe::Probe;
use dye_core::seam::{
    ConntrackQuery, Event, Frame, KernelDrop, Network, PmtuRestore, PointStats, RuleEvent,
    SeamError, Wait,
};
use dye_core::snapshot::{Route, RouteLookup};

use super::{conntrack, pmtu, snapshot};

/// How long one blocking receive may take before the stop flag is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// A running capture plus the injector, seen through the seam.
#[derive(Debug)]
pub struct LiveNetwork {
    session: Option<CaptureSession>,
    injector: Injector,
    /// The discovered namespaces (their handles answer route and conntrack questions).
    topology: Topology,
    source: Netns,
    dst: IpAddr,
    /// Index → `netns/ifname` of each capture point, to match the capture's counters.
    point_names: Vec<String>,
    stop: Arc<AtomicBool>,
    started: Instant,
    now: Duration,
    /// The source's route towards the destination before the first probe (MTU searches).
    pmtu_before: Option<Route>,
    /// The namespaces armed for netfilter tracing (none for an MTU search).
    rules: super::rules::RuleTracer,
    /// The kernel-drop watcher, maybe still arming (none for an MTU search).
    drops: super::drops::Arming,
}

impl LiveNetwork {
    pub fn new(
        session: CaptureSession,
        injector: Injector,
        topology: Topology,
        source: Netns,
        dst: IpAddr,
        stop: Arc<AtomicBool>,
        started: Instant,
    ) -> LiveNetwork {
        let point_names = session.points().iter().map(|p| p.point.name()).collect();
        LiveNetwork {
            session: Some(session),
            injector,
            topology,
            source,
            dst,
            point_names,
            stop,
            started,
            now: started.elapsed(),
            pmtu_before: None,
            rules: super::rules::RuleTracer::default(),
            drops: super::drops::Arming::default(),
        }
    }

    /// Traces the probes through netfilter with these armed namespaces.
    pub fn trace_rules(&mut self, rules: super::rules::RuleTracer) {
        self.rules = rules;
    }

    /// Reports the kernel's drops of the probes through this watcher.
    pub fn watch_drops(&mut self, drops: super::drops::Arming) {
        self.drops = drops;
    }

    /// Remembers the source's route towards the destination (with any cached path MTU) as it
    /// was before the first probe.
    pub fn note_pmtu(&mut self, before: Option<Route>) {
        self.pmtu_before = before;
    }

    fn tick(&mut self) {
        self.now = self.started.elapsed();
    }
}

impl Network for LiveNetwork {
    fn now(&self) -> Duration {
        self.now
    }

    fn send(&mut self, probe: &Probe) -> Result<u64, SeamError> {
        self.drops.ready();
        let r = self
            .injector
            .send(&probe.packet, probe.seq, self.dst)
            .map_err(|e| SeamError::Send {
                seq: probe.seq,
                detail: e.to_string(),
            });
        self.tick();
        r
    }

    fn next(&mut self, until: Duration) -> Result<Wait, SeamError> {
        let Some(session) = &self.session else {
            return Ok(Wait::Ended);
        };
        let wait = loop {
            if self.stop.load(Ordering::Relaxed) {
                break Wait::Stopped;
            }
            let left = until.saturating_sub(self.started.elapsed());
            if left.is_zero() {
                break Wait::Idle;
            }
            match session.recv_timeout(left.min(POLL)) {
                Ok(Some(CaptureEvent::Packet(o))) => {
                    break Wait::Event(Event::Frame(Frame {
                        point: o.point,
                        direction: match o.direction {
                            dye_capture::Direction::In => Direction::In,
                            dye_capture::Direction::Out => Direction::Out,
                        },
                        ts_ns: o.ts_ns,
                        orig_len: o.orig_len,
                        data: o.frame,
                    }))
                }
                Ok(Some(CaptureEvent::PointLost { point, reason })) => {
                    break Wait::Event(Event::PointLost { point, reason })
                }
                Ok(None) => {}
                Err(()) => break Wait::Ended,
            }
        };
        self.tick();
        Ok(wait)
    }

    fn routes(&mut self, wanted: &[(String, IpAddr)]) -> Result<Vec<RouteLookup>, SeamError> {
        let found = snapshot::lookups(&self.topology, wanted);
        self.tick();
        Ok(found)
    }

    fn conntrack(
        &mut self,
        netns: &str,
        query: &ConntrackQuery,
    ) -> Result<Option<Conntrack>, SeamError> {
        let entry = self
            .topology
            .namespace(netns)
            .and_then(|info| conntrack::lookup(&info.netns, query));
        self.tick();
        Ok(entry)
    }

    fn restore_pmtu(&mut self) -> Result<PmtuRestore, SeamError> {
        let r = pmtu::restore_if_changed(&self.source, self.dst, self.pmtu_before.clone());
        self.tick();
        Ok(r)
    }

    fn rule_events(&mut self) -> Result<Vec<RuleEvent>, SeamError> {
        let events = self.rules.events(&self.topology);
        self.tick();
        Ok(events)
    }

    fn kernel_drops(&mut self) -> Result<Vec<KernelDrop>, SeamError> {
        let drops = self.drops.events(&self.topology);
        self.tick();
        Ok(drops)
    }

    fn finish(&mut self) -> Result<Vec<PointStats>, SeamError> {
        let Some(session) = self.session.take() else {
            return Ok(Vec::new());
        };
        session.stop();
        let stats = session
            .join()
            .map_err(|e| SeamError::Capture(e.to_string()))?;
        let out = self
            .point_names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let s = stats.iter().find(|s| &s.name == name)?;
                Some(PointStats {
                    point: i,
                    captured: s.captured(),
                    kernel_dropped: s.kernel_dropped,
                    lost: s.lost.clone(),
                })
            })
            .collect();
        self.tick();
        Ok(out)
    }
}
