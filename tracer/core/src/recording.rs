//! Record and replay. A recording (`dye.recording/v1`, JSON) holds what was asked (the trace or
//! MTU plan, random ids included), the topology snapshot, and a journal of every answer the
//! [`Network`] seam gave, with the session time it gave it at. Replaying feeds the journal
//! back through the same core, so the report comes out byte for byte the same, on any
//! machine, without privileges.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::path::Conntrack;
use crate::probe::Probe;
use crate::seam::{
    ConntrackQuery, KernelDrop, Network, PmtuRestore, PointStats, RuleEvent, SeamError, Wait,
};
use crate::snapshot::{RouteLookup, Snapshot};

pub const SCHEMA: &str = "dye.recording/v1";

/// One answer of the seam.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Sent {
        seq: u32,
        ts_ns: u64,
    },
    Wait(Wait),
    Routes(Vec<RouteLookup>),
    Conntrack(Box<ConntrackAnswer>),
    Pmtu(Box<PmtuRestore>),
    Finish(Vec<PointStats>),
    Rules(Vec<RuleEvent>),
    KernelDrops(Vec<KernelDrop>),
    /// The call failed with this message.
    Failed(String),
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::Sent { .. } => "a sent probe",
            Call::Wait(_) => "a capture event",
            Call::Routes(_) => "route lookups",
            Call::Conntrack(_) => "a conntrack answer",
            Call::Pmtu(_) => "a PMTU cache restore",
            Call::Finish(_) => "the end of the capture",
            Call::Rules(_) => "netfilter rule events",
            Call::KernelDrops(_) => "kernel drop reasons",
            Call::Failed(_) => "a failed call",
        }
    }
}

/// A conntrack question and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackAnswer {
    pub netns: String,
    pub query: ConntrackQuery,
    pub entry: Option<Conntrack>,
}

/// A journal entry: the answer and when (session time, ns) it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ns: u64,
    pub call: Call,
}

/// A whole recording. `P` is the plan of the command that was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording<P> {
    pub schema: String,
    /// `trace` | `mtu`
    pub command: String,
    /// The dye version that recorded it.
    pub dye_version: String,
    pub plan: P,
    pub snapshot: Snapshot,
    pub journal: Vec<Entry>,
}

/// The command of a recording, read before its plan is known.
#[derive(Debug, Deserialize)]
pub struct Header {
    pub schema: String,
    pub command: String,
    pub dye_version: String,
}

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("not a dye recording: {0}")]
    Json(#[from] serde_json::Error),
    #[error("recording schema {found:?} is not {SCHEMA:?} (recorded by dye {version})")]
    Schema { found: String, version: String },
}

/// Reads the header of a recording and checks its schema.
pub fn header(text: &str) -> Result<Header, RecordingError> {
    let h: Header = serde_json::from_str(text)?;
    if h.schema != SCHEMA {
        return Err(RecordingError::Schema {
            found: h.schema,
            version: h.dye_version,
        });
    }
    Ok(h)
}

/// Wraps a live network and journals every answer it gives.
#[derive(Debug)]
pub struct Recorder<N> {
    inner: N,
    journal: Vec<Entry>,
}

impl<N: Network> Recorder<N> {
    pub fn new(inner: N) -> Recorder<N> {
        Recorder {
            inner,
            journal: Vec::new(),
        }
    }

    /// The journal so far, and the wrapped network back.
    pub fn into_parts(self) -> (N, Vec<Entry>) {
        (self.inner, self.journal)
    }

    fn log<T>(
        &mut self,
        result: Result<T, SeamError>,
        call: impl FnOnce(&T) -> Call,
    ) -> Result<T, SeamError> {
        let c = match &result {
            Ok(v) => call(v),
            Err(e) => Call::Failed(e.to_string()),
        };
        self.journal.push(Entry {
            at_ns: self.inner.now().as_nanos() as u64,
            call: c,
        });
        result
    }
}

impl<N: Network> Network for Recorder<N> {
    fn now(&self) -> Duration {
        self.inner.now()
    }

    fn send(&mut self, probe: &Probe) -> Result<u64, SeamError> {
        let r = self.inner.send(probe);
        let seq = probe.seq;
        self.log(r, |ts| Call::Sent { seq, ts_ns: *ts })
    }

    fn next(&mut self, until: Duration) -> Result<Wait, SeamError> {
        let r = self.inner.next(until);
        self.log(r, |w| Call::Wait(w.clone()))
    }

    fn routes(&mut self, wanted: &[(String, IpAddr)]) -> Result<Vec<RouteLookup>, SeamError> {
        let r = self.inner.routes(wanted);
        self.log(r, |l| Call::Routes(l.clone()))
    }

    fn conntrack(
        &mut self,
        netns: &str,
        query: &ConntrackQuery,
    ) -> Result<Option<Conntrack>, SeamError> {
        let r = self.inner.conntrack(netns, query);
        self.log(r, |e| {
            Call::Conntrack(Box::new(ConntrackAnswer {
                netns: netns.to_string(),
                query: *query,
                entry: e.clone(),
            }))
        })
    }

    fn restore_pmtu(&mut self) -> Result<PmtuRestore, SeamError> {
        let r = self.inner.restore_pmtu();
        self.log(r, |p| Call::Pmtu(Box::new(p.clone())))
    }

    fn finish(&mut self) -> Result<Vec<PointStats>, SeamError> {
        let r = self.inner.finish();
        self.log(r, |s| Call::Finish(s.clone()))
    }

    fn rule_events(&mut self) -> Result<Vec<RuleEvent>, SeamError> {
        let r = self.inner.rule_events();
        self.log(r, |e| Call::Rules(e.clone()))
    }

    fn kernel_drops(&mut self) -> Result<Vec<KernelDrop>, SeamError> {
        let r = self.inner.kernel_drops();
        self.log(r, |d| Call::KernelDrops(d.clone()))
    }
}

/// Plays a journal back through the seam.
#[derive(Debug)]
pub struct Replayer {
    journal: std::vec::IntoIter<Entry>,
    now: Duration,
}

impl Replayer {
    pub fn new(journal: Vec<Entry>) -> Replayer {
        Replayer {
            journal: journal.into_iter(),
            now: Duration::ZERO,
        }
    }

    /// The next entry, which must be what `want` names.
    fn pop<T>(
        &mut self,
        want: &str,
        take: impl FnOnce(Call) -> Result<T, Call>,
    ) -> Result<T, SeamError> {
        let Some(entry) = self.journal.next() else {
            return Err(SeamError::Diverged {
                expected: want.to_string(),
                found: "its end".to_string(),
            });
        };
        self.now = Duration::from_nanos(entry.at_ns);
        match entry.call {
            Call::Failed(detail) => Err(SeamError::System(detail)),
            call => take(call).map_err(|other| SeamError::Diverged {
                expected: want.to_string(),
                found: other.name().to_string(),
            }),
        }
    }
}

impl Network for Replayer {
    fn now(&self) -> Duration {
        self.now
    }

    fn send(&mut self, probe: &Probe) -> Result<u64, SeamError> {
        let seq = probe.seq;
        self.pop("a sent probe", |c| match c {
            Call::Sent { seq: s, ts_ns } if s == seq => Ok(ts_ns),
            other => Err(other),
        })
    }

    fn next(&mut self, _until: Duration) -> Result<Wait, SeamError> {
        self.pop("a capture event", |c| match c {
            Call::Wait(w) => Ok(w),
            other => Err(other),
        })
    }

    fn routes(&mut self, wanted: &[(String, IpAddr)]) -> Result<Vec<RouteLookup>, SeamError> {
        let found = self.pop("route lookups", |c| match c {
            Call::Routes(r) => Ok(r),
            other => Err(other),
        })?;
        // The recorded answers must be to the questions this replay asks.
        let asked = |l: &RouteLookup| wanted.iter().any(|(n, d)| *n == l.netns && *d == l.dst);
        if let Some(l) = found.iter().find(|l| !asked(l)) {
            return Err(SeamError::Diverged {
                expected: format!("route lookups for {} pairs", wanted.len()),
                found: format!("an answer for {} in {} that was not asked", l.dst, l.netns),
            });
        }
        Ok(found)
    }

    fn conntrack(
        &mut self,
        _netns: &str,
        _query: &ConntrackQuery,
    ) -> Result<Option<Conntrack>, SeamError> {
        self.pop("a conntrack answer", |c| match c {
            Call::Conntrack(answer) => Ok(answer.entry),
            other => Err(other),
        })
    }

    fn restore_pmtu(&mut self) -> Result<PmtuRestore, SeamError> {
        self.pop("a PMTU cache restore", |c| match c {
            Call::Pmtu(p) => Ok(*p),
            other => Err(other),
        })
    }

    fn finish(&mut self) -> Result<Vec<PointStats>, SeamError> {
        self.pop("the end of the capture", |c| match c {
            Call::Finish(s) => Ok(s),
            other => Err(other),
        })
    }

    fn rule_events(&mut self) -> Result<Vec<RuleEvent>, SeamError> {
        self.pop("netfilter rule events", |c| match c {
            Call::Rules(r) => Ok(r),
            other => Err(other),
        })
    }

    /// Recordings made before dye watched kernel drops have no such entry: they replay with
    /// none, as they ran.
    fn kernel_drops(&mut self) -> Result<Vec<KernelDrop>, SeamError> {
        if !matches!(
            self.journal.as_slice().first(),
            Some(Entry {
                call: Call::KernelDrops(_),
                ..
            })
        ) {
            return Ok(Vec::new());
        }
        self.pop("kernel drop reasons", |c| match c {
            Call::KernelDrops(d) => Ok(d),
            other => Err(other),
        })
    }
}
