//! The second pass of a trace through agents: the capture side of the first pass's journal
//! played back (with frames moved onto the refined clock offsets), while the questions the
//! reasoning asks afterwards — routes, conntrack — go to the agents again, because a different
//! order of hops can lead it to ask about another namespace than the first pass did.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use dye_core::path::Conntrack;
use dye_core::probe::Probe;
use dye_core::recording::{Call, Entry, Recorder};
use dye_core::seam::{
    ConntrackQuery, Event, KernelDrop, Network, PmtuRestore, PointStats, RuleEvent, SeamError, Wait,
};
use dye_core::snapshot::{RouteLookup, Snapshot};
use dye_core::trace::{self as core_trace, TracePlan, TraceRun};

use super::network::AgentsNetwork;

/// Moves each node's frames in `journal` by its shift (`(merged point, ns)`) and reconstructs
/// again from `taken` (the snapshot as merged); returns the new run, snapshot and journal, or
/// the first pass's (`first`) when the second diverges.
pub fn second_pass(
    plan: &TracePlan,
    taken: &Snapshot,
    first: (TraceRun, Snapshot, Vec<Entry>),
    shift: &[(usize, i64)],
    live: &mut AgentsNetwork,
) -> (TraceRun, Snapshot, Vec<Entry>) {
    let mut journal = first.2.clone();
    for entry in &mut journal {
        if let Call::Wait(Wait::Event(Event::Frame(f))) = &mut entry.call {
            if let Some((_, d)) = shift.iter().find(|(p, _)| *p == f.point) {
                f.ts_ns = f.ts_ns.saturating_add_signed(-d);
            }
        }
    }
    let mut again = taken.clone();
    let mut second = Recorder::new(Rerun::new(journal, live));
    let result = core_trace::run_trace(plan, &mut again, &mut second, &mut |_| {});
    let (_, journal) = second.into_parts();
    match result {
        Ok(run) => (run, again, journal),
        Err(e) => {
            tracing::warn!("reconstructing on the refined clock offsets failed: {e}");
            first
        }
    }
}

/// Journal for the capture side, the live agents for the rest.
#[derive(Debug)]
pub struct Rerun<'a> {
    entries: VecDeque<Entry>,
    live: &'a mut AgentsNetwork,
    now: Duration,
}

impl<'a> Rerun<'a> {
    /// `journal` as the first pass recorded it; its route and conntrack answers are dropped
    /// (they are asked again).
    pub fn new(journal: Vec<Entry>, live: &'a mut AgentsNetwork) -> Rerun<'a> {
        Rerun {
            entries: journal
                .into_iter()
                .filter(|e| !matches!(e.call, Call::Routes(_) | Call::Conntrack(_)))
                .collect(),
            live,
            now: Duration::ZERO,
        }
    }

    fn pop<T>(&mut self, want: &str, take: impl FnOnce(Call) -> Option<T>) -> Result<T, SeamError> {
        let diverged = |found: &str| SeamError::Diverged {
            expected: want.to_string(),
            found: found.to_string(),
        };
        let entry = self
            .entries
            .pop_front()
            .ok_or_else(|| diverged("its end"))?;
        self.now = Duration::from_nanos(entry.at_ns);
        match entry.call {
            Call::Failed(detail) => Err(SeamError::System(detail)),
            call => take(call).ok_or_else(|| diverged("another call")),
        }
    }
}

impl Network for Rerun<'_> {
    fn now(&self) -> Duration {
        self.now
    }

    fn send(&mut self, probe: &Probe) -> Result<u64, SeamError> {
        let seq = probe.seq;
        self.pop("a sent probe", |c| match c {
            Call::Sent { seq: s, ts_ns } if s == seq => Some(ts_ns),
            _ => None,
        })
    }

    fn next(&mut self, _until: Duration) -> Result<Wait, SeamError> {
        self.pop("a capture event", |c| match c {
            Call::Wait(w) => Some(w),
            _ => None,
        })
    }

    fn routes(&mut self, wanted: &[(String, IpAddr)]) -> Result<Vec<RouteLookup>, SeamError> {
        self.live.routes(wanted)
    }

    fn conntrack(
        &mut self,
        netns: &str,
        query: &ConntrackQuery,
    ) -> Result<Option<Conntrack>, SeamError> {
        self.live.conntrack(netns, query)
    }

    fn restore_pmtu(&mut self) -> Result<PmtuRestore, SeamError> {
        self.pop("a PMTU cache restore", |c| match c {
            Call::Pmtu(p) => Some(*p),
            _ => None,
        })
    }

    fn finish(&mut self) -> Result<Vec<PointStats>, SeamError> {
        self.pop("the end of the capture", |c| match c {
            Call::Finish(s) => Some(s),
            _ => None,
        })
    }

    fn kernel_drops(&mut self) -> Result<Vec<KernelDrop>, SeamError> {
        self.pop("kernel drop reasons", |c| match c {
            Call::KernelDrops(d) => Some(d),
            _ => None,
        })
    }

    fn rule_events(&mut self) -> Result<Vec<RuleEvent>, SeamError> {
        self.pop("netfilter rule events", |c| match c {
            Call::Rules(r) => Some(r),
            _ => None,
        })
    }
}
