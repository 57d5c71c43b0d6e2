//! The coordinator: `dye trace --agents`. It asks every agent which node owns the source and
//! the destination, chooses the agents on the path, takes and merges their snapshots, starts
//! their captures, injects from the source's agent, and runs dye-core's trace unchanged over
//! the merged stream ([`network::AgentsNetwork`]). Afterwards the probe's own crossings between
//! nodes give each node's clock offset ([`dye_core::clock`]); the run is replayed from its
//! journal with the timestamps corrected, so every hop sits on the source node's timeline.

mod calls;
pub mod capture;
pub mod client;
mod locate;
pub mod merge;
pub mod network;
mod rerun;
pub mod topology;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dye_core::clock::{self, NodeOffset};
use dye_core::mtu::{self as mtu_core, MtuPlan, MtuRun};
use dye_core::recording::{Recorder, Recording, SCHEMA};
use dye_core::snapshot::Snapshot;
use dye_core::trace::{self as core_trace, TracePlan, TraceRun};
use dye_core::Proto;
use tonic::transport::Channel;

use crate::agent::pb::{self, agent_client::AgentClient};
use crate::agent::tls::{Identity, Role, TlsError};
use client::{AgentError, Transport};
use network::{AgentsNetwork, Blind, Peer};

/// Clock exchanges per agent (the one with the shortest round trip is kept).
pub(super) const CLOCK_ROUNDS: usize = 8;

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
    #[error("writing the output: {0}")]
    Output(String),
}

impl CoordError {
    /// True when the request is at fault (exit 2), not an agent mid-trace (exit 3).
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            CoordError::Core(core_trace::TraceError::Seam(_))
                | CoordError::Runtime(_)
                | CoordError::Output(_)
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

/// `--to pod:NS/NAME` through the agents at `addrs`: the pod's address as its node's runtime
/// reports it (IPv6 with `ipv6`).
pub fn pod_address(
    addrs: &[SocketAddr],
    transport: &Transport,
    pod: &str,
    ipv6: bool,
) -> Result<IpAddr, CoordError> {
    runtime()?.block_on(async {
        let (reached, blind) = greet(addrs, transport).await?;
        locate::pod_address(&reached, &blind, pod, ipv6).await
    })
}

/// The coordinator's runtime: two workers forward the agents' streams while the caller waits.
fn runtime() -> Result<tokio::runtime::Runtime, CoordError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CoordError::Runtime(e.to_string()))
}

/// Greets every agent at `addrs`: those that answered, and why the others did not. No agent
/// answering is an error naming each one's reason.
async fn greet(
    addrs: &[SocketAddr],
    transport: &Transport,
) -> Result<(Vec<Reached>, Vec<Blind>), CoordError> {
    let (reached, blind) = calls::hello_all(addrs, transport).await;
    if reached.is_empty() {
        return Err(CoordError::NoAgent(locate::blind_list(&blind)));
    }
    Ok((reached, blind))
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
pub(super) struct Reached {
    pub(super) addr: SocketAddr,
    pub(super) node: String,
    pub(super) client: AgentClient<Channel>,
}

/// What the agents are asked to watch for, whatever runs the probes (a trace, an MTU search).
#[derive(Debug, Clone)]
pub(super) struct Probing {
    /// The source namespace as the user named it (or `pod:…`).
    pub(super) from: String,
    pub(super) to: IpAddr,
    pub(super) trace_id: u32,
    pub(super) proto: Proto,
    pub(super) vxlan_ports: Vec<u16>,
    /// How long the agents' captures may run.
    pub(super) duration: Duration,
    /// Trace the probes (of this IP size) through every node's rules and kernel drops.
    pub(super) trace_rules: Option<u32>,
}

/// The agents on the path, located, snapshotted and capturing: ready for probes.
struct Session {
    peers: Vec<Reached>,
    /// The merged snapshot as taken (before anything the run learns).
    taken: Snapshot,
    net: AgentsNetwork,
    blind: Vec<Blind>,
    exchanged: Vec<(String, clock::Exchange)>,
    offsets_used: Vec<(String, i64)>,
    started: Instant,
}

/// Greets every agent, finds who owns the source and the destination, takes and merges the
/// snapshots of the agents on the path, exchanges clocks and starts their captures.
fn open_session(
    probing: &Probing,
    addrs: &[SocketAddr],
    transport: &Transport,
    stop: Arc<AtomicBool>,
    status: &dyn Fn(&str),
) -> Result<Session, CoordError> {
    let started = Instant::now();
    let rt = Arc::new(runtime()?);
    status(&format!("connecting to {} agent(s)", addrs.len()));
    let (reached, mut blind) = rt.block_on(greet(addrs, transport))?;
    tracing::info!(elapsed = ?started.elapsed(), reached = reached.len(), "agents greeted");
    // Who owns the source, and the destination: the nodes to observe, source's first.
    let (source_netns, chosen) = rt.block_on(locate::locate(probing, &reached, &blind))?;
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
    let snaps = rt.block_on(calls::snapshots(&peers, &source_netns, probing.to))?;
    tracing::info!(elapsed = ?started.elapsed(), "snapshots taken");
    let exchanged = rt.block_on(calls::clock_all(&peers));
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

    // The probes' source address, which the agents' rule tracing matches.
    let src = taken
        .route(&taken.source, probing.to)
        .and_then(|r| r.as_ref().ok())
        .map(|r| r.prefsrc.unwrap_or(probing.to));
    // Captures: every chosen agent's points, started before the first probe.
    status(&format!(
        "capturing on {} interfaces on {} node(s)",
        taken.points.len(),
        peers.len()
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut tasks = Vec::new();
    let mut live_peers = Vec::new();
    let mut capture_ids: Vec<(usize, u64)> = Vec::new();
    let requests: Vec<pb::CaptureRequest> = layout
        .iter()
        .map(|part| calls::capture_request(probing, &taken, part, probing.duration, src))
        .collect();
    let started_streams = rt.block_on(calls::start_all(peers.clone(), requests));
    for (i, ((p, part), stream)) in peers.iter().zip(layout).zip(started_streams).enumerate() {
        let stream = stream.unwrap_or_else(|e| {
            Err(AgentError::Call {
                addr: p.addr,
                node: p.node.clone(),
                detail: e.to_string(),
            })
        });
        match stream {
            Ok(started) => {
                for (k, lt) in started.linktypes.into_iter().enumerate().take(part.points) {
                    taken.points[part.point_offset + k].linktype = lt;
                }
                capture_ids.push((i, started.capture_id));
                tasks.push(rt.spawn(network::forward(i, started.stream, tx.clone())));
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
                capture_id: capture_ids
                    .iter()
                    .find(|(k, _)| *k == i)
                    .map(|(_, id)| *id)
                    .unwrap_or(0),
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
        probing.to,
        rx,
        tasks,
        stop,
        started,
        taken.points.len(),
    );
    net.pmtu_before = taken
        .route(&taken.source, probing.to)
        .and_then(|r| r.as_ref().ok().cloned());
    // A stream that ended before started counts as ended.
    for (i, p) in net.peers.iter().enumerate() {
        if p.part.points == 0 {
            net.ended[i] = true;
        }
    }
    tracing::info!(elapsed = ?started.elapsed(), "captures started");
    Ok(Session {
        peers,
        taken,
        net,
        blind,
        exchanged,
        offsets_used,
        started,
    })
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
    let probing = Probing {
        from: plan.from.clone(),
        to: plan.to,
        trace_id: plan.ids.trace_id,
        proto: plan.proto,
        vxlan_ports: plan.vxlan_ports.clone(),
        duration: plan.interval * plan.count + plan.timeout + Duration::from_secs(5),
        trace_rules: Some(plan.size),
    };
    let Session {
        peers,
        taken,
        net,
        mut blind,
        exchanged,
        offsets_used,
        started,
    } = open_session(&probing, addrs, transport, stop, status)?;
    let mut rec = Recorder::new(net);
    let mut snap = taken.clone();
    let first = core_trace::run_trace(plan, &mut snap, &mut rec, &mut |p| {
        if let core_trace::Progress::Sending { count } = p {
            status(&format!("sending {count} probe(s) to {}", plan.to));
        }
    });
    let (mut net, journal) = rec.into_parts();
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
    let (run, snapshot, journal) = if shift.is_empty() {
        (first, snap, journal)
    } else {
        rerun::second_pass(plan, &taken, (first, snap, journal), &shift, &mut net)
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

/// A finished MTU search through agents.
#[derive(Debug)]
pub struct AgentsMtu {
    pub run: MtuRun,
    /// Nodes nobody observed, and why.
    pub blind: Vec<Blind>,
    pub recording: Option<Recording<MtuPlan>>,
}

/// Runs the MTU search `plan` through the agents at `addrs`: the same adaptive search as on
/// one host, over the merged stream. Sizes, not times, are its result, so the RPC clock
/// estimate (already applied to every frame) is all it needs.
pub fn mtu(
    plan: &MtuPlan,
    addrs: &[SocketAddr],
    transport: &Transport,
    stop: Arc<AtomicBool>,
    record: bool,
    status: &dyn Fn(&str),
    progress: &mut dyn FnMut(mtu_core::Progress),
) -> Result<AgentsMtu, CoordError> {
    plan.validate()?;
    let probing = Probing {
        from: plan.from.clone(),
        to: plan.to,
        trace_id: plan.ids.trace_id,
        proto: plan.proto,
        vxlan_ports: plan.vxlan_ports.clone(),
        // The search's own bound, which is also an agent's default capture bound: no slack
        // on top (an agent refuses a capture longer than its bound), and the coordinator
        // stops the captures as soon as the search is done.
        duration: mtu_core::run::MAX_ELAPSED,
        trace_rules: None,
    };
    let session = open_session(&probing, addrs, transport, stop, status)?;
    let mut blind = session.blind;
    let mut rec = Recorder::new(session.net);
    let mut snap = session.taken.clone();
    let run = mtu_core::run_mtu(plan, &mut snap, &mut rec, progress);
    let (net, journal) = rec.into_parts();
    let run = run?;
    tracing::info!(elapsed = ?session.started.elapsed(), "search done");
    blind.extend(net.blind.iter().cloned());
    drop(net);
    let recording = record.then(|| Recording {
        schema: SCHEMA.to_string(),
        command: "mtu".to_string(),
        dye_version: env!("CARGO_PKG_VERSION").to_string(),
        plan: plan.clone(),
        snapshot: session.taken,
        journal,
    });
    Ok(AgentsMtu {
        run,
        blind,
        recording,
    })
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
