//! `dye capture --agents`: every agent captures on its chosen points with the user's pcap
//! filter (run in its kernel, through tunnels unless asked otherwise) and streams the frames
//! back; the coordinator hands them on in time order (a 200 ms reorder window) with each
//! frame's time moved onto its own clock (the RPC clock exchange: there is no probe to time
//! here). It stops every agent's capture when
//! the duration, the count or the caller says so, and collects each agent's counters. An agent
//! that cannot be reached, refuses, or stops answering is named blind; the others go on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dye_core::snapshot::Snapshot;

use super::client::Transport;
use super::network::{self, Blind, StreamMsg};
use super::{calls, CoordError, Reached};
use crate::agent::pb;

/// How long an agent may take to end its capture once asked.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often the stop conditions are looked at while frames are quiet.
const TICK: Duration = Duration::from_millis(100);
/// How long frames wait for other agents' earlier ones before they are handed on.
const REORDER: Duration = Duration::from_millis(200);

/// What to capture on every agent.
#[derive(Debug, Clone)]
pub struct AgentCapturePlan {
    /// A pcap filter expression; empty keeps everything.
    pub filter: String,
    /// Match the outer headers only.
    pub outer: bool,
    pub duration: Duration,
    /// Most bytes each agent sends (0: the agent's own bound).
    pub max_bytes: u64,
}

/// One point an agent opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPoint {
    pub node: String,
    pub netns: String,
    pub ifname: String,
    /// veth, bridge, vxlan…
    pub kind: String,
    pub mtu: u32,
    pub linktype: u32,
}

impl OpenPoint {
    /// `node/netns/ifname`: unique across nodes (two machines both have `host/eth0`).
    pub fn name(&self) -> String {
        format!("{}/{}/{}", self.node, self.netns, self.ifname)
    }
}

/// One frame, its time on the coordinator's clock.
#[derive(Debug)]
pub struct AgentFrame {
    pub point: usize,
    pub ts_ns: u64,
    pub orig_len: u32,
    pub inbound: bool,
    pub data: Vec<u8>,
}

/// Per point: what the agent counted (captured, dropped by the kernel) and whether it was lost.
#[derive(Debug, Clone, Default)]
pub struct AgentPointStats {
    pub captured: u64,
    pub kernel_dropped: u64,
    pub lost: Option<String>,
}

/// What the caller does with each frame: keep going or stop every capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// How it ended.
#[derive(Debug)]
pub struct AgentCaptureOutcome {
    pub points: Vec<OpenPoint>,
    pub stats: Vec<AgentPointStats>,
    pub blind: Vec<Blind>,
}

/// Where the frames go (a pcapng writer).
pub trait FrameSink {
    /// Every opened point, once, before any frame.
    fn opened(&mut self, points: &[OpenPoint]) -> Result<(), String>;
    /// One frame, in arrival order.
    fn frame(&mut self, frame: AgentFrame) -> Result<Flow, String>;
}

/// Captures on the points `select(node, netns, ifname)` picks on every agent at `addrs`.
pub fn capture(
    addrs: &[SocketAddr],
    transport: &Transport,
    plan: &AgentCapturePlan,
    select: &dyn Fn(&str, &str, &str) -> bool,
    stop: Arc<AtomicBool>,
    status: &dyn Fn(&str),
    sink: &mut dyn FrameSink,
) -> Result<AgentCaptureOutcome, CoordError> {
    let rt = super::runtime()?;
    status(&format!("connecting to {} agent(s)", addrs.len()));
    let (reached, mut blind) = rt.block_on(super::greet(addrs, transport))?;
    let snapshots = rt.block_on(calls::node_snapshots(&reached));
    let exchanged = rt.block_on(calls::clock_all(&reached));

    // Each agent's chosen points, by the names it knows them by.
    let mut peers: Vec<(Reached, Vec<OpenPoint>)> = Vec::new();
    for (p, snap) in reached.iter().zip(snapshots) {
        match snap {
            Ok(snap) => {
                let points = chosen_points(&p.node, &snap, select);
                if !points.is_empty() {
                    peers.push((p.clone(), points));
                }
            }
            Err(e) => blind.push(Blind {
                node: p.node.clone(),
                agent: p.addr.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    if peers.is_empty() {
        return Err(CoordError::NotFound {
            what: "a capture point matching the selection".into(),
            unreachable: if blind.is_empty() {
                String::new()
            } else {
                format!("; unreachable: {}", super::locate::blind_list(&blind))
            },
        });
    }

    // Start every capture; one that fails makes its node blind.
    let requests: Vec<pb::CaptureRequest> = peers
        .iter()
        .map(|(_, points)| pb::CaptureRequest {
            points: points
                .iter()
                .map(|pt| pb::PointName {
                    netns: pt.netns.clone(),
                    ifname: pt.ifname.clone(),
                })
                .collect(),
            filter: None,
            duration_ms: plan.duration.as_millis() as u64,
            max_bytes: plan.max_bytes,
            max_packets: 0,
            pcap: Some(pb::PcapFilter {
                expression: plan.filter.clone(),
                outer: plan.outer,
            }),
        })
        .collect();
    let started = rt.block_on(calls::start_all(
        peers.iter().map(|(p, _)| p.clone()).collect(),
        requests,
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut points: Vec<OpenPoint> = Vec::new();
    // Per live agent: its client, capture id, first merged point, offset (ns, agent ahead).
    let mut live: Vec<Live> = Vec::new();
    let mut tasks = Vec::new();
    for ((p, chosen), s) in peers.into_iter().zip(started) {
        let s = s
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match s {
            Ok(s) => {
                let first = points.len();
                let count = chosen.len();
                for (mut pt, lt) in chosen.into_iter().zip(s.linktypes) {
                    pt.linktype = lt;
                    points.push(pt);
                }
                let offset_ns = exchanged
                    .iter()
                    .find(|(n, _)| *n == p.node)
                    .map(|(_, e)| e.offset_ns())
                    .unwrap_or(0);
                tasks.push(rt.spawn(network::forward(live.len(), s.stream, tx.clone())));
                live.push(Live {
                    peer: p,
                    capture_id: s.capture_id,
                    first,
                    count,
                    offset_ns,
                    ended: false,
                });
            }
            Err(reason) => blind.push(Blind {
                node: p.node.clone(),
                agent: p.addr.to_string(),
                reason,
            }),
        }
    }
    drop(tx);
    if live.is_empty() {
        return Err(CoordError::NoAgent(super::locate::blind_list(&blind)));
    }
    sink.opened(&points).map_err(CoordError::Output)?;
    status(&format!(
        "capturing on {} point(s) on {} node(s)",
        points.len(),
        live.len()
    ));

    let mut stats = vec![AgentPointStats::default(); points.len()];
    let mut counted = vec![0u64; points.len()];
    // The agents end on their own at the duration; this is the coordinator's backstop.
    let deadline = Instant::now() + plan.duration + STOP_GRACE;
    let mut stop_sent: Option<Instant> = None;
    let mut out_err = None;
    // Frames wait this long so that those of all agents go out in time order.
    let mut pending: Vec<AgentFrame> = Vec::new();
    let mut handed =
        |pending: &mut Vec<AgentFrame>, upto: Option<u64>, out_err: &mut Option<String>| {
            if out_err.is_some() {
                pending.clear();
                return;
            }
            match flush(pending, upto, sink) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => stop.store(true, Ordering::Relaxed),
                Err(e) => {
                    *out_err = Some(e);
                    stop.store(true, Ordering::Relaxed);
                }
            }
        };
    while live.iter().any(|l| !l.ended) {
        let frontier = now_ns().saturating_sub(REORDER.as_nanos() as u64);
        handed(&mut pending, Some(frontier), &mut out_err);
        let wanted_stop = stop.load(Ordering::Relaxed) || Instant::now() > deadline;
        if wanted_stop && stop_sent.is_none() {
            stop_all(&rt, &live);
            stop_sent = Some(Instant::now());
        }
        if stop_sent.is_some_and(|t| t.elapsed() > STOP_GRACE) {
            for l in live.iter_mut().filter(|l| !l.ended) {
                l.ended = true;
                blind.push(Blind {
                    node: l.peer.node.clone(),
                    agent: l.peer.addr.to_string(),
                    reason: format!("did not end its capture within {STOP_GRACE:?} of being asked"),
                });
            }
            break;
        }
        let (i, msg) = match rx.recv_timeout(TICK) {
            Ok(m) => m,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let l = &mut live[i];
        match msg {
            StreamMsg::Frame(f) => {
                // A point index the agent never opened is garbage: dropped.
                if f.point as usize >= l.count {
                    continue;
                }
                let point = l.first + f.point as usize;
                counted[point] += 1;
                if stop_sent.is_some() && out_err.is_some() {
                    continue;
                }
                let ts_ns = (i128::from(f.ts_ns) - i128::from(l.offset_ns)).max(0) as u64;
                let item = AgentFrame {
                    point,
                    ts_ns,
                    orig_len: f.orig_len,
                    inbound: f.direction == pb::Direction::In as i32,
                    data: f.data,
                };
                pending.push(item);
            }
            StreamMsg::Lost(lost) => {
                if let Some(s) = stats.get_mut(l.first + lost.point as usize) {
                    s.lost = Some(lost.reason);
                }
            }
            StreamMsg::Finished(finished) => {
                l.ended = true;
                for s in finished.stats {
                    if s.point as usize >= l.count {
                        continue;
                    }
                    let out = &mut stats[l.first + s.point as usize];
                    out.captured = s.captured;
                    out.kernel_dropped = s.kernel_dropped;
                    if !s.lost.is_empty() {
                        out.lost = Some(s.lost);
                    }
                }
            }
            StreamMsg::Failed(reason) => {
                l.ended = true;
                blind.push(Blind {
                    node: l.peer.node.clone(),
                    agent: l.peer.addr.to_string(),
                    reason,
                });
            }
        }
    }
    handed(&mut pending, None, &mut out_err);
    for t in tasks {
        t.abort();
    }
    if let Some(e) = out_err {
        return Err(CoordError::Output(e));
    }
    // Where no counters came back (a blind agent), what arrived.
    for (s, n) in stats.iter_mut().zip(&counted) {
        if s.captured == 0 {
            s.captured = *n;
        }
    }
    for b in &blind {
        for (pt, s) in points.iter().zip(stats.iter_mut()) {
            if pt.node == b.node && s.lost.is_none() {
                s.lost = Some(b.reason.clone());
            }
        }
    }
    Ok(AgentCaptureOutcome {
        points,
        stats,
        blind,
    })
}

/// Hands `sink` the pending frames up to `upto` (all of them when None), oldest first; after
/// the sink said stop, the rest are dropped.
fn flush(
    pending: &mut Vec<AgentFrame>,
    upto: Option<u64>,
    sink: &mut dyn FrameSink,
) -> Result<Flow, String> {
    // Stable: one agent's frames with equal times keep their order.
    pending.sort_by_key(|f| f.ts_ns);
    let n = match upto {
        Some(t) => pending.partition_point(|f| f.ts_ns <= t),
        None => pending.len(),
    };
    let mut flow = Flow::Continue;
    for f in pending.drain(..n) {
        if flow == Flow::Continue {
            flow = sink.frame(f)?;
        }
    }
    Ok(flow)
}

/// The coordinator's clock, the one frames are moved onto (ns since the Unix epoch).
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A capture that started on an agent.
struct Live {
    peer: Reached,
    capture_id: u64,
    /// Its first point among all opened points, and how many it opened.
    first: usize,
    count: usize,
    /// How far its clock is ahead of the coordinator's (ns).
    offset_ns: i64,
    ended: bool,
}

/// Asks every agent whose capture runs to end it (each ends its stream with its counters).
fn stop_all(rt: &tokio::runtime::Runtime, live: &[Live]) {
    let calls: Vec<_> = live
        .iter()
        .filter(|l| !l.ended)
        .map(|l| (l.peer.client.clone(), l.capture_id))
        .collect();
    rt.block_on(async move {
        let tasks: Vec<_> = calls
            .into_iter()
            .map(|(mut c, capture_id)| {
                tokio::spawn(async move {
                    let req = pb::StopCaptureRequest { capture_id };
                    let _ = tokio::time::timeout(STOP_GRACE, c.stop_capture(req)).await;
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// The points of `snap` (one node) that `select` picks, loopback left out.
fn chosen_points(
    node: &str,
    snap: &Snapshot,
    select: &dyn Fn(&str, &str, &str) -> bool,
) -> Vec<OpenPoint> {
    snap.points
        .iter()
        .filter(|p| p.class != dye_core::model::LinkClass::Loopback)
        .filter(|p| select(node, &p.netns, &p.ifname))
        .map(|p| OpenPoint {
            node: node.to_string(),
            netns: p.netns.clone(),
            ifname: p.ifname.clone(),
            kind: p.class.as_str().to_string(),
            mtu: p.mtu,
            linktype: p.linktype,
        })
        .collect()
}
