//! The coordinator's side of the seam: probes go out through the source node's agent, capture
//! events arrive from every chosen agent's stream, merged, with each node's timestamps moved
//! onto the source node's clock (by the RPC clock exchange; the probe's own crossings refine
//! it after the run). Route and conntrack questions go to the agent that owns the namespace.
//! An agent whose stream fails mid-trace is reported blind, and its points lost.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dye_core::model::Direction;
use dye_core::path::Conntrack;
use dye_core::probe::Probe;
use dye_core::seam::{
    ConntrackQuery, Event, Frame, KernelDrop, Network, PmtuRestore, PointStats, RuleEvent,
    SeamError, Wait,
};
use dye_core::snapshot::{Route, RouteLookup};
use tonic::transport::Channel;

use super::merge::Part;
use crate::agent::pb::{self, agent_client::AgentClient};

/// How long one wait for a stream message lasts before the stop flag is looked at again.
const POLL: Duration = Duration::from_millis(20);
/// How long an agent has to answer the liveness call at the end of a trace.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an agent that answered StopCapture may take to end its stream.
const FINISH_TIMEOUT: Duration = Duration::from_secs(3);

/// A node the coordinator could not (or no longer) observe, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blind {
    pub node: String,
    pub agent: String,
    pub reason: String,
}

/// A chosen agent during the trace.
#[derive(Debug)]
pub struct Peer {
    pub addr: String,
    pub node: String,
    pub client: AgentClient<Channel>,
    pub part: Part,
    /// Its clock's offset against the source node's, from the RPC exchange (ns).
    pub offset_ns: i64,
    /// Its capture's id, for StopCapture.
    pub capture_id: u64,
}

/// What a capture stream task forwards.
#[derive(Debug)]
pub enum StreamMsg {
    Frame(pb::Frame),
    Lost(pb::PointLost),
    Finished(pb::Finished),
    Failed(String),
}

/// The merged capture and the source's injector, through the seam.
#[derive(Debug)]
pub struct AgentsNetwork {
    pub rt: Arc<tokio::runtime::Runtime>,
    pub peers: Vec<Peer>,
    pub source: usize,
    /// The source namespace as its agent knows it.
    pub source_netns: String,
    pub to: IpAddr,
    pub events: Receiver<(usize, StreamMsg)>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub stop: Arc<AtomicBool>,
    pub started: Instant,
    pub now: Duration,
    pub pmtu_before: Option<Route>,
    /// Frames per merged point.
    pub counts: Vec<u64>,
    pub ended: Vec<bool>,
    /// Each agent's own counters, once its capture finished.
    finished: Vec<Option<Vec<pb::PointStats>>>,
    /// The agents' rule events and kernel drops, their namespaces renamed as merged.
    rules: Vec<RuleEvent>,
    drops: Vec<KernelDrop>,
    pub blind: Vec<Blind>,
    /// Point-lost events waiting to be handed to the core.
    pending: Vec<Event>,
}

impl AgentsNetwork {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rt: Arc<tokio::runtime::Runtime>,
        peers: Vec<Peer>,
        source: usize,
        source_netns: String,
        to: IpAddr,
        events: Receiver<(usize, StreamMsg)>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
        stop: Arc<AtomicBool>,
        started: Instant,
        points: usize,
    ) -> AgentsNetwork {
        let n = peers.len();
        AgentsNetwork {
            rt,
            peers,
            source,
            source_netns,
            to,
            events,
            tasks,
            stop,
            now: started.elapsed(),
            started,
            pmtu_before: None,
            counts: vec![0; points],
            ended: vec![false; n],
            finished: vec![None; n],
            rules: Vec::new(),
            drops: Vec::new(),
            blind: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// An agent's capture ended: its counters, and its rule events and kernel drops with
    /// their namespaces named as in the merged snapshot. An answer that does not parse loses
    /// only those events (and says so).
    fn take_finished(&mut self, peer: usize, f: pb::Finished) {
        self.finished[peer] = Some(f.stats);
        let part = &self.peers[peer].part;
        let merged = |agent_name: &str| -> String {
            part.names
                .iter()
                .find(|(_, a)| a.as_str() == agent_name)
                .map(|(m, _)| m.clone())
                .unwrap_or_else(|| agent_name.to_string())
        };
        let addr = &self.peers[peer].addr;
        if !f.rule_events_json.is_empty() {
            match serde_json::from_slice::<Vec<RuleEvent>>(&f.rule_events_json) {
                Ok(events) => self.rules.extend(events.into_iter().map(|mut e| {
                    e.netns = merged(&e.netns);
                    e
                })),
                Err(e) => tracing::warn!(agent = %addr, "rule events that do not parse: {e}"),
            }
        }
        if !f.kernel_drops_json.is_empty() {
            match serde_json::from_slice::<Vec<KernelDrop>>(&f.kernel_drops_json) {
                Ok(drops) => self.drops.extend(drops.into_iter().map(|mut d| {
                    d.netns = d.netns.as_deref().map(merged);
                    d
                })),
                Err(e) => tracing::warn!(agent = %addr, "kernel drops that do not parse: {e}"),
            }
        }
    }

    fn tick(&mut self) {
        self.now = self.started.elapsed();
    }

    fn call_err(&self, peer: usize, e: &tonic::Status) -> SeamError {
        let p = &self.peers[peer];
        SeamError::System(format!("agent {} ({}): {}", p.addr, p.node, e.message()))
    }

    /// The agent owning merged namespace `netns`, and its own name for it.
    fn owner(&self, netns: &str) -> Option<(usize, String)> {
        self.peers
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.part.names.get(netns).map(|n| (i, n.clone())))
    }

    /// An agent's stream failed: its node is blind from here on, its points lost.
    fn go_blind(&mut self, peer: usize, reason: String) {
        self.ended[peer] = true;
        let p = &self.peers[peer];
        tracing::warn!(agent = %p.addr, node = %p.node, "agent lost mid-trace: {reason}");
        self.blind.push(Blind {
            node: p.node.clone(),
            agent: p.addr.clone(),
            reason: reason.clone(),
        });
        for i in 0..p.part.points {
            self.pending.push(Event::PointLost {
                point: p.part.point_offset + i,
                reason: format!("agent {} ({}) lost: {reason}", p.addr, p.node),
            });
        }
    }

    fn frame(&mut self, peer: usize, f: pb::Frame) -> Option<Event> {
        let p = &self.peers[peer];
        if f.point as usize >= p.part.points {
            tracing::warn!(agent = %p.addr, point = f.point, "frame from an unknown point ignored");
            return None;
        }
        let point = p.part.point_offset + f.point as usize;
        let direction = match pb::Direction::try_from(f.direction) {
            Ok(pb::Direction::In) => Direction::In,
            Ok(pb::Direction::Out) => Direction::Out,
            _ => return None,
        };
        self.counts[point] += 1;
        Some(Event::Frame(Frame {
            point,
            direction,
            ts_ns: f.ts_ns.saturating_add_signed(-p.offset_ns),
            orig_len: f.orig_len,
            data: f.data,
        }))
    }
}

impl Network for AgentsNetwork {
    fn now(&self) -> Duration {
        self.now
    }

    fn send(&mut self, probe: &Probe) -> Result<u64, SeamError> {
        let mut client = self.peers[self.source].client.clone();
        let req = pb::InjectRequest {
            source: self.source_netns.clone(),
            to: self.to.to_string(),
            probes: vec![pb::Probe {
                seq: probe.seq,
                packet: probe.packet.clone(),
            }],
        };
        let r = self.rt.block_on(client.inject(req));
        self.tick();
        let reply = r.map_err(|e| SeamError::Send {
            seq: probe.seq,
            detail: self.call_err(self.source, &e).to_string(),
        })?;
        reply
            .into_inner()
            .sent_ns
            .first()
            .copied()
            .ok_or_else(|| SeamError::Send {
                seq: probe.seq,
                detail: "the agent reported no send time".into(),
            })
    }

    fn next(&mut self, until: Duration) -> Result<Wait, SeamError> {
        let wait = loop {
            if let Some(ev) = self.pending.pop() {
                break Wait::Event(ev);
            }
            if self.stop.load(Ordering::Relaxed) {
                break Wait::Stopped;
            }
            if self.ended.iter().all(|e| *e) {
                break Wait::Ended;
            }
            let left = until.saturating_sub(self.started.elapsed());
            if left.is_zero() {
                break Wait::Idle;
            }
            match self.events.recv_timeout(left.min(POLL)) {
                Ok((peer, StreamMsg::Frame(f))) => {
                    if let Some(ev) = self.frame(peer, f) {
                        break Wait::Event(ev);
                    }
                }
                Ok((peer, StreamMsg::Lost(l))) => {
                    let p = &self.peers[peer];
                    if (l.point as usize) < p.part.points {
                        break Wait::Event(Event::PointLost {
                            point: p.part.point_offset + l.point as usize,
                            reason: l.reason,
                        });
                    }
                }
                Ok((peer, StreamMsg::Finished(f))) => {
                    self.ended[peer] = true;
                    self.take_finished(peer, f);
                }
                Ok((peer, StreamMsg::Failed(reason))) => self.go_blind(peer, reason),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Wait::Ended,
            }
        };
        self.tick();
        Ok(wait)
    }

    fn routes(&mut self, wanted: &[(String, IpAddr)]) -> Result<Vec<RouteLookup>, SeamError> {
        let mut by_peer: HashMap<usize, Vec<(String, pb::RouteQuestion)>> = HashMap::new();
        for (netns, dst) in wanted {
            if let Some((peer, local)) = self.owner(netns) {
                by_peer.entry(peer).or_default().push((
                    netns.clone(),
                    pb::RouteQuestion {
                        netns: local,
                        dst: dst.to_string(),
                    },
                ));
            }
        }
        let mut out = Vec::new();
        for (peer, questions) in by_peer {
            let mut client = self.peers[peer].client.clone();
            let req = pb::RoutesRequest {
                questions: questions.iter().map(|(_, q)| q.clone()).collect(),
            };
            let reply = match self.rt.block_on(client.routes(req)) {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    tracing::warn!("{}", self.call_err(peer, &e));
                    continue;
                }
            };
            let lookups: Vec<RouteLookup> =
                serde_json::from_slice(&reply.lookups_json).map_err(|e| {
                    SeamError::System(format!("agent {}: routes: {e}", self.peers[peer].addr))
                })?;
            for mut l in lookups {
                // Back to the merged name.
                if let Some((merged, _)) = questions.iter().find(|(_, q)| q.netns == l.netns) {
                    l.netns = merged.clone();
                }
                out.push(l);
            }
        }
        self.tick();
        Ok(out)
    }

    fn conntrack(
        &mut self,
        netns: &str,
        query: &ConntrackQuery,
    ) -> Result<Option<Conntrack>, SeamError> {
        let Some((peer, local)) = self.owner(netns) else {
            self.tick();
            return Ok(None);
        };
        let mut client = self.peers[peer].client.clone();
        let req = pb::ConntrackRequest {
            netns: local,
            query_json: serde_json::to_vec(query).map_err(|e| SeamError::System(e.to_string()))?,
        };
        let r = self.rt.block_on(client.conntrack(req));
        self.tick();
        let entry = match r {
            Ok(r) => serde_json::from_slice(&r.into_inner().entry_json).unwrap_or_else(|e| {
                tracing::warn!("agent {}: conntrack answer: {e}", self.peers[peer].addr);
                None
            }),
            Err(e) => {
                tracing::warn!("{}", self.call_err(peer, &e));
                None
            }
        };
        Ok(entry)
    }

    fn restore_pmtu(&mut self) -> Result<PmtuRestore, SeamError> {
        let mut client = self.peers[self.source].client.clone();
        let req = pb::PmtuRequest {
            source: self.source_netns.clone(),
            to: self.to.to_string(),
            restore_from_json: Some(
                serde_json::to_vec(&self.pmtu_before)
                    .map_err(|e| SeamError::System(e.to_string()))?,
            ),
        };
        let r = self.rt.block_on(client.pmtu(req));
        self.tick();
        let reply = r.map_err(|e| self.call_err(self.source, &e))?;
        serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| SeamError::System(format!("PMTU answer: {e}")))
    }

    fn finish(&mut self) -> Result<Vec<PointStats>, SeamError> {
        // Stop every capture still running. An agent that does not answer within the
        // deadline has hung silently (stopped, its node cut off): it is blind.
        let live: Vec<usize> = (0..self.peers.len())
            .filter(|&i| !self.ended[i] && self.peers[i].part.points > 0)
            .collect();
        let calls: Vec<_> = live
            .iter()
            .map(|&i| (self.peers[i].client.clone(), self.peers[i].capture_id))
            .collect();
        let answers = self.rt.block_on(async move {
            let tasks: Vec<_> = calls
                .into_iter()
                .map(|(mut c, capture_id)| {
                    tokio::spawn(async move {
                        let req = pb::StopCaptureRequest { capture_id };
                        tokio::time::timeout(LIVENESS_TIMEOUT, c.stop_capture(req)).await
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(match t.await {
                    Ok(Ok(Ok(_))) => None,
                    Ok(Ok(Err(e))) => Some(status_text(&e)),
                    Ok(Err(_)) => Some(format!(
                        "stopped answering (no answer within {LIVENESS_TIMEOUT:?} at the end of the trace)"
                    )),
                    Err(e) => Some(e.to_string()),
                });
            }
            out
        });
        for (&i, why) in live.iter().zip(answers) {
            if let Some(why) = why {
                self.go_blind(i, why);
            }
        }
        // The stopped captures end their streams with their counters, rule events and kernel
        // drops (naming those takes an agent a moment: longer than the liveness check, which
        // the StopCapture answer above already passed).
        let deadline = Instant::now() + FINISH_TIMEOUT;
        while !self.ended.iter().all(|e| *e) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.events.recv_timeout(left) {
                Ok((peer, StreamMsg::Finished(f))) => {
                    self.ended[peer] = true;
                    self.take_finished(peer, f);
                }
                Ok((peer, StreamMsg::Failed(reason))) => self.go_blind(peer, reason),
                // After the probe loop: what still arrives is in the agents' counters.
                Ok(_) => {}
                Err(_) => break,
            }
        }
        for &i in &live {
            if self.finished[i].is_none()
                && !self.blind.iter().any(|b| b.agent == self.peers[i].addr)
            {
                tracing::warn!(agent = %self.peers[i].addr, "no capture counters came back; counting frames received instead");
            }
        }
        self.pending.clear();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let lost: HashMap<usize, String> = self
            .blind
            .iter()
            .flat_map(|b| {
                let p = self.peers.iter().find(|p| p.addr == b.agent);
                p.into_iter().flat_map(move |p| {
                    (0..p.part.points).map(move |i| (p.part.point_offset + i, b.reason.clone()))
                })
            })
            .collect();
        // The agents' own counters where they came back (kernel drops included), else what
        // the coordinator received.
        let mut stats: Vec<PointStats> = self
            .counts
            .iter()
            .enumerate()
            .map(|(point, &captured)| PointStats {
                point,
                captured,
                kernel_dropped: 0,
                lost: None,
            })
            .collect();
        for (peer, finished) in self.peers.iter().zip(&self.finished) {
            for s in finished.iter().flatten() {
                let Some(out) = (s.point < peer.part.points as u32)
                    .then(|| stats.get_mut(peer.part.point_offset + s.point as usize))
                    .flatten()
                else {
                    continue;
                };
                out.captured = s.captured;
                out.kernel_dropped = s.kernel_dropped;
                out.lost = (!s.lost.is_empty()).then(|| s.lost.clone());
            }
        }
        for s in &mut stats {
            if let Some(why) = lost.get(&s.point) {
                s.lost = Some(why.clone());
            }
        }
        self.tick();
        Ok(stats)
    }

    fn rule_events(&mut self) -> Result<Vec<RuleEvent>, SeamError> {
        // What the agents' Finished brought (finish() came first).
        self.tick();
        Ok(std::mem::take(&mut self.rules))
    }

    fn kernel_drops(&mut self) -> Result<Vec<KernelDrop>, SeamError> {
        self.tick();
        Ok(std::mem::take(&mut self.drops))
    }
}

/// Reads one agent's capture stream into `tx` until it ends or fails.
pub async fn forward(
    peer: usize,
    mut stream: tonic::Streaming<pb::CaptureEvent>,
    tx: std::sync::mpsc::Sender<(usize, StreamMsg)>,
) {
    use pb::capture_event::Event as Ev;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                let _ = tx.send((
                    peer,
                    StreamMsg::Failed("its capture stream ended early".into()),
                ));
                return;
            }
            Err(e) => {
                let _ = tx.send((peer, StreamMsg::Failed(status_text(&e))));
                return;
            }
        };
        let out = match msg.event {
            Some(Ev::Frame(f)) => StreamMsg::Frame(f),
            Some(Ev::Lost(l)) => StreamMsg::Lost(l),
            Some(Ev::Finished(f)) => {
                let _ = tx.send((peer, StreamMsg::Finished(f)));
                return;
            }
            Some(Ev::Started(_)) | None => continue,
        };
        if tx.send((peer, out)).is_err() {
            return;
        }
    }
}

/// A status as one line: its message, or — for a broken connection — the innermost cause
/// (`peer closed connection without sending TLS close_notify`), without links.
pub fn status_text(e: &tonic::Status) -> String {
    let mut innermost = None;
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        innermost = Some(c.to_string());
        cur = c.source();
    }
    let text = match innermost {
        Some(cause) if e.message().is_empty() || e.message().contains(&cause) => cause,
        Some(cause) => format!("{}: {cause}", e.message()),
        None if e.message().is_empty() => format!("{:?}", e.code()),
        None => e.message().to_string(),
    };
    match text.split_once(": https://") {
        Some((head, _)) => head.to_string(),
        None => text,
    }
}
