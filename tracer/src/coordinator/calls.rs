//! The coordinator's calls to its agents, each agent's answer checked and every failure
//! naming the agent: greeting, resolving, snapshots, clock exchanges, starting captures.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dye_core::clock::{self, Exchange};
use dye_core::snapshot::Snapshot;
use dye_core::Proto;

use super::client::{self, AgentError, Transport, CALL_TIMEOUT};
use super::merge;
use super::network::{self, Blind};
use super::{Probing, Reached, CLOCK_ROUNDS};
use crate::agent::pb;

/// Connects to every agent and greets it; the unreachable ones come back as blind nodes.
pub(super) async fn hello_all(
    addrs: &[SocketAddr],
    transport: &Transport,
) -> (Vec<Reached>, Vec<Blind>) {
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
                Ok::<_, AgentError>((
                    Reached {
                        addr,
                        node: hello.node,
                        client: c,
                    },
                    hello.instance,
                ))
            })
        })
        .collect();
    let mut reached: Vec<Reached> = Vec::new();
    let mut instances: Vec<String> = Vec::new();
    let mut blind = Vec::new();
    for (t, addr) in tasks.into_iter().zip(addrs) {
        match t.await {
            Ok(Ok((r, instance))) => match reached.iter().position(|k| k.node == r.node) {
                None => {
                    reached.push(r);
                    instances.push(instance);
                }
                // Two addresses of one agent (a name resolving to v4 and v6): ask it once.
                Some(k) if instances[k] == instance => {
                    tracing::info!(agent = %r.addr, node = %r.node, "same agent as another address: skipped");
                }
                // Two agents calling themselves one node would merge into one picture and hide
                // the second node's hops: that node is blind, and the user is told why.
                Some(k) => blind.push(Blind {
                    node: r.node.clone(),
                    agent: addr.to_string(),
                    reason: format!(
                        "it reports the node name {:?} that agent {} also reports; give each agent \
                         its own name (dye agent --node-name)",
                        r.node, reached[k].addr
                    ),
                }),
            },
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

pub(super) async fn resolve_all(
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

/// The snapshots of the agents on the path, each scoped to the probe's path on its node: the
/// source's agent first (its route towards `to` gives the probe's source address), then the
/// others at once.
pub(super) async fn snapshots(
    peers: &[Reached],
    source: &str,
    to: IpAddr,
) -> Result<Vec<Snapshot>, AgentError> {
    let Some((first, rest)) = peers.split_first() else {
        return Ok(Vec::new());
    };
    let mut out = path_snapshots(
        std::slice::from_ref(first),
        pb::SnapshotRequest {
            source: source.to_string(),
            to: to.to_string(),
            path_only: true,
            src: String::new(),
        },
    )
    .await?;
    let src = out
        .first()
        .and_then(|s| s.route(source, to))
        .and_then(|r| r.as_ref().ok())
        .and_then(|r| r.prefsrc);
    out.extend(
        path_snapshots(
            rest,
            pb::SnapshotRequest {
                source: String::new(),
                to: to.to_string(),
                // Without the probe's source address the walk back cannot be asked: every
                // point.
                path_only: src.is_some(),
                src: src.map(|a| a.to_string()).unwrap_or_default(),
            },
        )
        .await?,
    );
    Ok(out)
}

/// `peers`' snapshots at once, each asked with `request`; the first failure fails them all.
async fn path_snapshots(
    peers: &[Reached],
    request: pb::SnapshotRequest,
) -> Result<Vec<Snapshot>, AgentError> {
    snapshots_each(peers, request).await.into_iter().collect()
}

/// Every agent's whole-node snapshot, each answer on its own (one failing agent does not
/// fail the others).
pub(super) async fn node_snapshots(peers: &[Reached]) -> Vec<Result<Snapshot, AgentError>> {
    snapshots_each(peers, pb::SnapshotRequest::default()).await
}

/// `peers`' snapshots at once, each asked with `request`, each answer on its own. The
/// channel's per-call deadline bounds the wait.
async fn snapshots_each(
    peers: &[Reached],
    request: pb::SnapshotRequest,
) -> Vec<Result<Snapshot, AgentError>> {
    let tasks: Vec<_> = peers
        .iter()
        .cloned()
        .map(|p| {
            let req = request.clone();
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
        out.push(t.await.unwrap_or_else(|e| {
            Err(AgentError::Call {
                addr: p.addr,
                node: p.node.clone(),
                detail: e.to_string(),
            })
        }));
    }
    out
}

/// NTP-style exchanges with every agent; each agent's best against the coordinator's clock.
pub(super) async fn clock_all(peers: &[Reached]) -> Vec<(String, Exchange)> {
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
pub(super) fn capture_request(
    plan: &Probing,
    taken: &Snapshot,
    part: &merge::Part,
    duration: Duration,
    src: Option<IpAddr>,
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
            trace_id: plan.trace_id,
            proto: match plan.proto {
                Proto::Icmp => pb::Proto::Icmp,
                Proto::Udp => pb::Proto::Udp,
                Proto::Tcp => pb::Proto::Tcp,
            } as i32,
            vxlan_ports: plan.vxlan_ports.iter().map(|p| u32::from(*p)).collect(),
            // Rules and drops are traced where the probes' source address is known.
            trace_rules: plan.trace_rules.is_some() && src.is_some(),
            src: src.map(|a| a.to_string()).unwrap_or_default(),
            dst: plan.to.to_string(),
            probe_size: plan.trace_rules.unwrap_or(0),
        }),
        duration_ms: duration.as_millis() as u64,
        max_bytes: 64 << 20,
        max_packets: 200_000,
        pcap: None,
    }
}

/// A capture that is open on its agent.
#[derive(Debug)]
pub(super) struct StartedCapture {
    pub stream: tonic::Streaming<pb::CaptureEvent>,
    /// The pcap link type of each point.
    pub linktypes: Vec<u32>,
    pub capture_id: u64,
}

/// Starts one agent's capture and waits for it to be open; returns the stream and the link
/// type of each point.
/// Starts every capture at once, `requests[i]` on `peers[i]`; each outcome on its own (a
/// task that panicked is an `Err` of the join).
pub(super) async fn start_all(
    peers: Vec<Reached>,
    requests: Vec<pb::CaptureRequest>,
) -> Vec<Result<Result<StartedCapture, AgentError>, tokio::task::JoinError>> {
    let tasks: Vec<_> = peers
        .into_iter()
        .zip(requests)
        .map(|(p, req)| tokio::spawn(async move { start_capture(&p, req).await }))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

pub(super) async fn start_capture(
    p: &Reached,
    req: pb::CaptureRequest,
) -> Result<StartedCapture, AgentError> {
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
            Ok(StartedCapture {
                stream,
                linktypes: s.points.iter().map(|p| p.linktype).collect(),
                capture_id: s.capture_id,
            })
        }
        Some(pb::capture_event::Event::Started(s)) => Err(call_err(format!(
            "capture opened {} points of the {wanted} asked",
            s.points.len()
        ))),
        _ => Err(call_err("capture answered before it started".into())),
    }
}
