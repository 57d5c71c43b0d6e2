//! The coordinator: `dye trace --agents`. It asks every agent which node owns the source and
//! the destination, chooses the agents on the path, takes and merges their snapshots, starts
//! their captures, injects from the source's agent, and runs dye-core's trace unchanged over
//! the merged stream ([`network::AgentsNetwork`]). Afterwards the probe's own crossings between
//! nodes give each node's clock offset ([`dye_core::clock`]); the run is replayed from its
//! journal with the timestamps corrected, so every hop sits on the source node's timeline.

pub mod client;
pub mod merge;
pub mod network;
mod rerun;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dye_core::clock::{self, Exchange, NodeOffset};
use dye_core::recording::{Call, Entry, Recorder, Recording, SCHEMA};
use dye_core::seam::{Event, Wait};
use dye_core::snapshot::Snapshot;
use dye_core::trace::{self as core_trace, TracePlan, TraceRun};
use dye_core::Proto;
use tonic::transport::Channel;

use crate::agent::pb::{self, agent_client::AgentClient};
use crate::agent::tls::{Identity, Role, TlsError};
use client::{AgentError, Transport, CALL_TIMEOUT};
use network::{AgentsNetwork, Blind, Peer};

/// Clock exchanges per agent (the one with the shortest round trip is kept).
const CLOCK_ROUNDS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("--agents {spec:?}: {detail}")]
    BadAgents { spec: String, detail: String },
    #[error("--certs {dir}: {source}")]
    Certs { dir: String, source: TlsError },
    #[error("no agent could be reached: {0}")]
    NoAgent(String),
    #[error("no agent has {what}{unreachable}")]
    NotFound { what: String, unreachable: String },
    #[error("{what} is on more than one node: {nodes}")]
    Ambiguous { what: String, nodes: String },
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Core(#[from] core_trace::TraceError),
    #[error("starting the coordinator's runtime: {0}")]
    Runtime(String),
}

impl CoordError {
    /// True when the request is at fault (exit 2), not an agent mid-trace (exit 3).
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            CoordError::Core(core_trace::TraceError::Seam(_)) | CoordError::Runtime(_)
        )
    }
}

/// The transport `--certs DIR` (or the plaintext debugging flag) asks for.
pub fn transport(certs: Option<&Path>) -> Result<Transport, CoordError> {
    match certs {
        None => Ok(Transport::Plaintext),
        Some(dir) => Identity::load(dir, Role::Client)
            .and_then(Identity::client_config)
            .map(|c| Transport::MutualTls(Arc::new(c)))
            .map_err(|source| CoordError::Certs {
                dir: dir.display().to_string(),
                source,
            }),
    }
}

/// `ADDR[,ADDR…]`: addresses with ports, or names that resolve to every agent (a headless
/// Service's name resolves to one address per agent).
pub fn parse_agents(spec: &str) -> Result<Vec<SocketAddr>, CoordError> {
    let bad = |detail: String| CoordError::BadAgents {
        spec: spec.to_string(),
        detail,
    };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addrs = part
            .to_socket_addrs()
            .map_err(|e| bad(format!("{part}: {e} (expected ADDR:PORT or NAME:PORT)")))?;
        for a in addrs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    if out.is_empty() {
        return Err(bad("no agent address".into()));
    }
    Ok(out)
}

/// A finished trace through agents.
#[derive(Debug)]
pub struct AgentsTrace {
    pub run: TraceRun,
    pub snapshot: Snapshot,
    /// Each node's clock against the source node's.
    pub clocks: Vec<NodeOffset>,
    /// Nodes nobody observed, and why.
    pub blind: Vec<Blind>,
    pub recording: Option<Recording<TracePlan>>,
}

/// A reachable agent.
#[derive(Debug, Clone)]
struct Reached {
    addr: SocketAddr,
    node: String,
    client: AgentClient<Channel>,
}

/// Runs `plan` through the agents at `addrs`.
pub fn trace(
    plan: &TracePlan,
    addrs: &[SocketAddr],
    transport: &Transport,
    stop: Arc<AtomicBool>,
    record: bool,
    status: &dyn Fn(&str),
) -> Result<AgentsTrace, CoordError> {
    plan.validate()?;
    let started = Instant::now();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| CoordError::Runtime(e.to_string()))?,
    );
    status(&format!("connecting to {} agent(s)", addrs.len()));
    let (reached, mut blind) = rt.block_on(hello_all(addrs, transport));
    tracing::info!(elapsed = ?started.elapsed(), reached = reached.len(), "agents greeted");
    if reached.is_empty() {
        let why = blind
            .iter()
            .map(|b| format!("agent {}: {}", b.agent, b.reason))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(CoordError::NoAgent(why));
    }
    let unreachable_hint = |blind: &[Blind]| {
        if blind.is_empty() {
            String::new()
        } else {
            format!(
                " among the agents that answered; unreachable: {}",
                blind
                    .iter()
                    .map(|b| format!("agent {}: {}", b.agent, b.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    };

    // Who owns the source, and the destination.
    let what = if plan.from.starts_with("pod:") {
        pb::resolve_request::What::Pod(plan.from.clone())
    } else {
        pb::resolve_request::What::Netns(plan.from.clone())
    };
    let found = rt.block_on(resolve_all(&reached, what));
    let owners: Vec<(usize, pb::ResolveReply)> = found
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.ok().filter(|r| r.found).map(|r| (i, r)))
        .collect();
    let (source, source_netns) = match owners.as_slice() {
        [(i, r)] => (*i, r.netns.clone()),
        [] => {
            return Err(CoordError::NotFound {
                what: format!("the source namespace {:?}", plan.from),
                unreachable: unreachable_hint(&blind),
            })
        }
        many => {
            return Err(CoordError::Ambiguous {
                what: plan.from.clone(),
                nodes: many
                    .iter()
                    .map(|(i, _)| reached[*i].node.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let dst_owner = rt
        .block_on(resolve_all(
            &reached,
            pb::resolve_request::What::Address(plan.to.to_string()),
        ))
        .into_iter()
        .enumerate()
        .find_map(|(i, r)| r.ok().filter(|r| r.found).map(|_| i));
    // The nodes on the path: the source's and the destination's; when no node owns the
    // destination (a ClusterIP, an outside address), every node may be on it.
    let mut chosen = vec![source];
    match dst_owner {
        Some(d) if d != source => chosen.push(d),
        Some(_) => {}
        None => chosen.extend((0..reached.len()).filter(|i| *i != source)),
    }
    let peers: Vec<Reached> = chosen.iter().map(|&i| reached[i].clone()).collect();
    status(&format!(
        "source {} on {}; observing node(s) {}",
        source_netns,
        peers[0].node,
        peers
            .iter()
            .map(|p| p.node.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // Snapshots and clocks.
    tracing::info!(elapsed = ?started.elapsed(), "resolved");
    let snaps = rt.block_on(snapshots(&peers, &source_netns, plan.to))?;
    tracing::info!(elapsed = ?started.elapsed(), "snapshots taken");
    let exchanged = rt.block_on(clock_all(&peers));
    tracing::info!(elapsed = ?started.elapsed(), "clocks exchanged");
    let rpc_offset = |node: &str| -> i64 {
        let of = |n: &str| {
            exchanged
                .iter()
                .find(|(m, _)| m == n)
                .map(|(_, e)| e.offset_ns())
        };
        match (of(node), of(&peers[0].node)) {
            (Some(x), Some(s)) => x - s,
            _ => 0,
        }
    };
    let parts: Vec<(String, Snapshot)> = peers
        .iter()
        .zip(snaps)
        .map(|(p, s)| (p.node.clone(), s))
        .collect();
    let (mut taken, layout) = merge::merge(&parts, 0, &source_netns);

    // Captures: every chosen agent's points, started before the first probe.
    status(&format!(
        "capturing on {} interfaces on {} node(s)",
        taken.points.len(),
        peers.len()
    ));
    let duration = plan.interval * plan.count + plan.timeout + Duration::from_secs(5);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut tasks = Vec::new();
    let mut live_peers = Vec::new();
    let requests: Vec<pb::CaptureRequest> = layout
        .iter()
        .map(|part| capture_request(plan, &taken, part, duration))
        .collect();
    let started_streams = rt.block_on(async {
        let tasks: Vec<_> = peers
            .iter()
            .cloned()
            .zip(requests)
            .map(|(p, req)| tokio::spawn(async move { start_capture(&p, req).await }))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    });
    for (i, ((p, part), stream)) in peers.iter().zip(layout).zip(started_streams).enumerate() {
        let stream = stream.unwrap_or_else(|e| {
            Err(AgentError::Call {
                addr: p.addr,
                node: p.node.clone(),
                detail: e.to_string(),
            })
        });
        match stream {
            Ok((stream, linktypes)) => {
                for (k, lt) in linktypes.into_iter().enumerate().take(part.points) {
                    taken.points[part.point_offset + k].linktype = lt;
                }
                tasks.push(rt.spawn(network::forward(i, stream, tx.clone())));
            }
            Err(e) if i == 0 => return Err(e.into()),
            Err(e) => {
                blind.push(Blind {
                    node: p.node.clone(),
                    agent: p.addr.to_string(),
                    reason: e.to_string(),
                });
                continue;
            }
        }
        live_peers.push((i, part));
    }
    drop(tx);
    let peers_state: Vec<Peer> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let part = live_peers
                .iter()
                .find(|(k, _)| *k == i)
                .map(|(_, part)| part.clone())
                .unwrap_or(merge::Part {
                    point_offset: 0,
                    points: 0,
                    names: Default::default(),
                });
            Peer {
                addr: p.addr.to_string(),
                node: p.node.clone(),
                client: p.client.clone(),
                part,
                offset_ns: rpc_offset(&p.node),
            }
        })
        .collect();
    let offsets_used: Vec<(String, i64)> = peers_state
        .iter()
        .map(|p| (p.node.clone(), p.offset_ns))
        .collect();
    let mut net = AgentsNetwork::new(
        rt.clone(),
        peers_state,
        0,
        source_netns.clone(),
        plan.to,
        rx,
        tasks,
        stop,
        started,
        taken.points.len(),
    );
    net.pmtu_before = taken
        .route(&taken.source, plan.to)
        .and_then(|r| r.as_ref().ok().cloned());
    // A stream that ended before started counts as ended.
    for (i, p) in net.peers.iter().enumerate() {
        if p.part.points == 0 {
            net.ended[i] = true;
        }
    }

    tracing::info!(elapsed = ?started.elapsed(), "captures started");
    let mut rec = Recorder::new(net);
    let mut snap = taken.clone();
    let first = core_trace::run_trace(plan, &mut snap, &mut rec, &mut |p| {
        if let core_trace::Progress::Sending { count } = p {
            status(&format!("sending {count} probe(s) to {}", plan.to));
        }
    });
    let (mut net, mut journal) = rec.into_parts();
    let first = first?;
    tracing::info!(elapsed = ?started.elapsed(), "probes done");

    // The probe's own crossings: what is left of each node's offset after the RPC estimate
    // (or, where the probe did not cross both ways, the RPC estimate narrowed by causality).
    let reference = peers[0].node.clone();
    let nodes: Vec<String> = peers.iter().map(|p| p.node.clone()).collect();
    let timeline = clock::timeline(
        &reference,
        &nodes,
        &offsets_used,
        &clock::probe_exchanges(&first.sightings, &snap.points, &reference),
        &exchanged,
        &clock::crossings(&first.sightings, &snap.points, &reference),
    );
    let shift: Vec<(usize, i64)> = timeline
        .iter()
        .filter(|(_, d)| *d != 0)
        .flat_map(|(o, d)| {
            snap.points
                .iter()
                .enumerate()
                .filter(move |(_, p)| p.node == o.node)
                .map(move |(i, _)| (i, *d))
        })
        .collect();
    let clocks: Vec<NodeOffset> = timeline.into_iter().map(|(o, _)| o).collect();
    let (run, snapshot) = if shift.is_empty() {
        (first, snap)
    } else {
        // Move those nodes' frames and reconstruct again: the capture side from the journal,
        // the questions (which may differ now that the hops are in order) to the agents.
        let unshifted = journal.clone();
        for entry in &mut journal {
            shift_frame(entry, &shift);
        }
        let mut again = taken.clone();
        let mut second = Recorder::new(rerun::Rerun::new(std::mem::take(&mut journal), &mut net));
        let result = core_trace::run_trace(plan, &mut again, &mut second, &mut |_| {});
        let (_, rerun_journal) = second.into_parts();
        match result {
            Ok(run) => {
                journal = rerun_journal;
                (run, again)
            }
            Err(e) => {
                tracing::warn!("reconstructing on the refined clock offsets failed: {e}");
                journal = unshifted;
                (first, snap)
            }
        }
    };
    blind.extend(net.blind.iter().cloned());
    drop(net);
    let recording = record.then(|| Recording {
        schema: SCHEMA.to_string(),
        command: "trace".to_string(),
        dye_version: env!("CARGO_PKG_VERSION").to_string(),
        plan: plan.clone(),
        snapshot: taken,
        journal,
    });
    Ok(AgentsTrace {
        run,
        snapshot,
        clocks,
        blind,
        recording,
    })
}

fn shift_frame(entry: &mut Entry, shift: &[(usize, i64)]) {
    if let Call::Wait(Wait::Event(Event::Frame(f))) = &mut entry.call {
        if let Some((_, d)) = shift.iter().find(|(p, _)| *p == f.point) {
            f.ts_ns = f.ts_ns.saturating_add_signed(-d);
        }
    }
}

/// Connects to every agent and greets it; the unreachable ones come back as blind nodes.
async fn hello_all(addrs: &[SocketAddr], transport: &Transport) -> (Vec<Reached>, Vec<Blind>) {
    let tasks: Vec<_> = addrs
        .iter()
        .map(|&addr| {
            let transport = transport.clone();
            tokio::spawn(async move {
                let mut c = client::connect(addr, &transport).await?;
                let hello = c
                    .hello(pb::HelloRequest {
                        client_version: env!("CARGO_PKG_VERSION").to_string(),
                    })
                    .await
                    .map_err(|e| AgentError::Unreachable {
                        addr,
                        detail: network::status_text(&e),
                    })?
                    .into_inner();
                Ok::<_, AgentError>(Reached {
                    addr,
                    node: hello.node,
                    client: c,
                })
            })
        })
        .collect();
    let mut reached: Vec<Reached> = Vec::new();
    let mut blind = Vec::new();
    for (t, addr) in tasks.into_iter().zip(addrs) {
        match t.await {
            // Two addresses of one agent (a name resolving to v4 and v6): ask it once.
            Ok(Ok(r)) if reached.iter().any(|k| k.node == r.node) => {
                tracing::info!(agent = %r.addr, node = %r.node, "same node as another address: skipped");
            }
            Ok(Ok(r)) => reached.push(r),
            Ok(Err(AgentError::Unreachable { detail, .. })) => blind.push(Blind {
                node: String::new(),
                agent: addr.to_string(),
                reason: detail,
            }),
            Ok(Err(e)) => blind.push(Blind {
                node: String::new(),
                agent: addr.to_string(),
                reason: e.to_string(),
            }),
            Err(e) => blind.push(Blind {
                node: String::new(),
                agent: addr.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    (reached, blind)
}

async fn resolve_all(
    reached: &[Reached],
    what: pb::resolve_request::What,
) -> Vec<Result<pb::ResolveReply, tonic::Status>> {
    let mut out = Vec::new();
    for r in reached {
        let mut c = r.client.clone();
        out.push(
            c.resolve(pb::ResolveRequest {
                what: Some(what.clone()),
            })
            .await
            .map(|r| r.into_inner()),
        );
    }
    out
}

async fn snapshots(
    peers: &[Reached],
    source: &str,
    to: IpAddr,
) -> Result<Vec<Snapshot>, AgentError> {
    // All agents at once: each discovers its own node.
    let tasks: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = p.clone();
            let req = if i == 0 {
                pb::SnapshotRequest {
                    source: source.to_string(),
                    to: to.to_string(),
                }
            } else {
                pb::SnapshotRequest::default()
            };
            tokio::spawn(async move {
                let call_err = |detail: String| AgentError::Call {
                    addr: p.addr,
                    node: p.node.clone(),
                    detail,
                };
                let reply = p
                    .client
                    .clone()
                    .snapshot(req)
                    .await
                    .map_err(|e| call_err(format!("snapshot: {}", network::status_text(&e))))?
                    .into_inner();
                serde_json::from_slice::<Snapshot>(&reply.snapshot_json)
                    .map_err(|e| call_err(format!("snapshot answer: {e}")))
            })
        })
        .collect();
    let mut out = Vec::new();
    for (t, p) in tasks.into_iter().zip(peers) {
        out.push(t.await.map_err(|e| AgentError::Call {
            addr: p.addr,
            node: p.node.clone(),
            detail: e.to_string(),
        })??);
    }
    Ok(out)
}

/// NTP-style exchanges with every agent; each agent's best against the coordinator's clock.
async fn clock_all(peers: &[Reached]) -> Vec<(String, Exchange)> {
    let mut out = Vec::new();
    for p in peers {
        let mut c = p.client.clone();
        let mut got = Vec::new();
        for _ in 0..CLOCK_ROUNDS {
            let t1 = dye_capture::inject::now_ns();
            let Ok(r) = c.clock(pb::ClockRequest {}).await else {
                break;
            };
            let t4 = dye_capture::inject::now_ns();
            let r = r.into_inner();
            got.push(Exchange {
                t1,
                t2: r.receive_ns,
                t3: r.send_ns,
                t4,
            });
        }
        if let Some(best) = clock::best(&got) {
            out.push((p.node.clone(), best));
        }
    }
    out
}

/// What one agent captures: its points (by the names it knows them by) and the probes' filter.
fn capture_request(
    plan: &TracePlan,
    taken: &Snapshot,
    part: &merge::Part,
    duration: Duration,
) -> pb::CaptureRequest {
    let names = taken.points[part.point_offset..part.point_offset + part.points]
        .iter()
        .map(|pt| pb::PointName {
            netns: part
                .names
                .get(&pt.netns)
                .cloned()
                .unwrap_or_else(|| pt.netns.clone()),
            ifname: pt.ifname.clone(),
        })
        .collect();
    pb::CaptureRequest {
        points: names,
        filter: Some(pb::ProbeFilter {
            trace_id: plan.ids.trace_id,
            proto: match plan.proto {
                Proto::Icmp => pb::Proto::Icmp,
                Proto::Udp => pb::Proto::Udp,
                Proto::Tcp => pb::Proto::Tcp,
            } as i32,
            vxlan_ports: plan.vxlan_ports.iter().map(|p| u32::from(*p)).collect(),
        }),
        duration_ms: duration.as_millis() as u64,
        max_bytes: 64 << 20,
        max_packets: 200_000,
    }
}

/// Starts one agent's capture and waits for it to be open; returns the stream and the link
/// type of each point.
async fn start_capture(
    p: &Reached,
    req: pb::CaptureRequest,
) -> Result<(tonic::Streaming<pb::CaptureEvent>, Vec<u32>), AgentError> {
    let call_err = |detail: String| AgentError::Call {
        addr: p.addr,
        node: p.node.clone(),
        detail,
    };
    let wanted = req.points.len();
    let mut stream = p
        .client
        .clone()
        .capture(req)
        .await
        .map_err(|e| call_err(format!("capture: {}", network::status_text(&e))))?
        .into_inner();
    let first = tokio::time::timeout(CALL_TIMEOUT, stream.message())
        .await
        .map_err(|_| call_err(format!("capture did not start within {CALL_TIMEOUT:?}")))?
        .map_err(|e| call_err(format!("capture: {}", network::status_text(&e))))?;
    match first.and_then(|m| m.event) {
        Some(pb::capture_event::Event::Started(s)) if s.points.len() == wanted => {
            Ok((stream, s.points.iter().map(|p| p.linktype).collect()))
        }
        Some(pb::capture_event::Event::Started(s)) => Err(call_err(format!(
            "capture opened {} points of the {wanted} asked",
            s.points.len()
        ))),
        _ => Err(call_err("capture answered before it started".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_agents;

    #[test]
    fn agents_are_addresses_or_names_and_duplicates_go() {
        let a = parse_agents("10.0.0.1:7443, 10.0.0.2:7443,10.0.0.1:7443").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].to_string(), "10.0.0.2:7443");
        let l = parse_agents("localhost:7443").unwrap();
        assert!(
            l.iter().all(|a| a.ip().is_loopback() && a.port() == 7443),
            "{l:?}"
        );
        assert!(parse_agents("10.0.0.1").is_err(), "a port is required");
        assert!(parse_agents(" , ").is_err());
    }
}
