//! The dye.agent.v1 service: each call answers from this node only, inside the agent's bounds.
//! Namespace, netlink and capture work is blocking, so it runs on tokio's blocking pool; a
//! capture streams from its own blocking task until its bound, the client leaving, or the
//! agent stopping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dye_capture::filter::{Semantics, TunnelPorts};
use dye_capture::{CaptureConfig, CaptureSession, Event as CaptureEvent, Injector, Netns};
use dye_core::seam::ConntrackQuery;
use dye_core::Proto;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::limits::{Limits, RateLimiter};
use super::node::{Node, NodeScope};
use super::pb;
use super::skew::Skew;
use super::watch::{Watch, WatchPlan};

/// How often a running capture looks whether its client is still there or asked it to stop:
/// the coordinator waits for the stream's end after StopCapture, so this is latency on every
/// trace (only while a capture runs; an idle agent does not poll).
const CLIENT_CHECK: Duration = Duration::from_millis(10);
/// Most points one capture opens (each is two kernel capture handles).
const MAX_CAPTURE_POINTS: usize = 256;
/// Most packets one capture delivers.
const MAX_CAPTURE_PACKETS: u64 = 200_000;
/// Longest pcap filter expression accepted.
const MAX_FILTER_BYTES: usize = 4096;
/// A discovery this recent serves a Snapshot or a namespace lookup as it is (one coordinator's
/// Resolve and Snapshot come milliseconds apart); an older one is redone, so a command run
/// right after another (an MTU changed in between) does not get the previous one's picture.
const FRESH: Duration = Duration::from_millis(250);

/// A discovery of this node and when it was made.
type Discovery = (std::time::Instant, Arc<NodeScope>);

/// The agent's state shared by every call.
#[derive(Debug)]
pub struct AgentService {
    node: Node,
    limits: Limits,
    skew: Skew,
    /// Random per process (see `HelloReply.instance`).
    instance: String,
    sessions: Arc<Semaphore>,
    rate: RateLimiter,
    /// The last discovery of this node (calls that need namespace handles reuse it; Snapshot
    /// and a miss refresh it).
    cache: Arc<Mutex<Option<Discovery>>>,
    endpoints: crate::live::pods::Endpoints,
    /// Running captures by id, each with the flag that stops it.
    captures: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>,
}

/// 16 random hex digits naming this agent process.
fn instance_id() -> String {
    let mut id = [0u8; 8];
    // Without randomness the process id still tells two agents on one host apart.
    if dye_capture::random::fill(&mut id).is_err() {
        id = u64::from(std::process::id()).to_be_bytes();
    }
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl AgentService {
    pub fn new(
        node: Node,
        limits: Limits,
        skew: Skew,
        endpoints: crate::live::pods::Endpoints,
    ) -> AgentService {
        AgentService {
            sessions: Arc::new(Semaphore::new(limits.max_sessions as usize)),
            rate: RateLimiter::new(limits.max_probe_rate),
            node,
            limits,
            skew,
            instance: instance_id(),
            cache: Arc::new(Mutex::new(None)),
            endpoints,
            captures: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A fresh discovery of this node, cached.
    async fn discover(&self) -> Result<Arc<NodeScope>, Status> {
        let node = self.node.clone();
        let scope =
            blocking(move || node.scope().map_err(|e| Status::internal(e.to_string()))).await?;
        let scope = Arc::new(scope);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), scope.clone()));
        Ok(scope)
    }

    /// The cached discovery, or a fresh one.
    async fn scope(&self) -> Result<Arc<NodeScope>, Status> {
        self.scope_within(Duration::MAX).await
    }

    /// The cached discovery if it is younger than `age`, else a fresh one.
    async fn scope_within(&self, age: Duration) -> Result<Arc<NodeScope>, Status> {
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match cached {
            Some((at, s)) if at.elapsed() < age => Ok(s),
            _ => self.discover().await,
        }
    }

    /// A namespace on this node by name (a stale discovery that does not know it is redone).
    async fn local_netns(&self, name: &str) -> Result<(Arc<NodeScope>, Netns), Status> {
        for scope in [self.scope().await?, self.scope_within(FRESH).await?] {
            if let Some(ns) = scope.netns(name) {
                let ns = ns.clone();
                return Ok((scope, ns));
            }
        }
        // A name this node used before its pods were named (`cni-…`, `dye-…-pod-c`, then
        // `pod NS/NAME`): the namespace it opens, by identity.
        let scope = self.scope().await?;
        let opened = {
            let name = name.to_string();
            blocking(move || Ok(Netns::open_str(&name).ok())).await?
        };
        if let Some(ns) =
            opened.and_then(|o| scope.name_of(&o).and_then(|n| scope.netns(n)).cloned())
        {
            return Ok((scope, ns));
        }
        Err(Status::not_found(format!(
            "namespace {name:?} is not on this node"
        )))
    }
}

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("agent task failed: {e}")))?
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, Status> {
    s.parse()
        .map_err(|_| Status::invalid_argument(format!("{what} {s:?} is not an IP address")))
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(b).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn hello(
        &self,
        _req: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        let scope = self.scope().await?;
        Ok(Response::new(pb::HelloReply {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            node: scope.name.clone(),
            limits: Some(self.limits.to_proto()),
            instance: self.instance.clone(),
        }))
    }

    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveReply>, Status> {
        use pb::resolve_request::What;
        let what = req
            .into_inner()
            .what
            .ok_or_else(|| Status::invalid_argument("nothing to resolve"))?;
        // The cached discovery, refreshed when it does not know a namespace asked by name.
        let mut scope = self.scope().await?;
        if let What::Netns(name) = &what {
            if scope.netns(name).is_none() {
                scope = self.scope_within(FRESH).await?;
            }
        }
        let node = scope.name.clone();
        let not_here = |detail: String| pb::ResolveReply {
            found: false,
            node: node.clone(),
            detail,
            ..Default::default()
        };
        let reply = match what {
            What::Netns(name) => {
                let opened = {
                    let name = name.clone();
                    blocking(move || Ok(Netns::open_str(&name))).await?
                };
                match opened {
                    Ok(ns) => match scope.name_of(&ns) {
                        Some(n) => pb::ResolveReply {
                            found: true,
                            netns: n.to_string(),
                            node: node.clone(),
                            ..Default::default()
                        },
                        None => not_here(format!("{name} is not a namespace of node {node}")),
                    },
                    Err(e) => not_here(e.to_string()),
                }
            }
            What::Pod(spec) => {
                let endpoints = self.endpoints.clone();
                let spec2 = spec.clone();
                let found = blocking(move || {
                    let pod = dye_capture::PodRef::parse(spec2.trim_start_matches("pod:"))
                        .map_err(Status::invalid_argument)?;
                    Ok(crate::live::pods::resolve(&pod, &endpoints)
                        .and_then(|p| Ok((p.netns()?, p.ips))))
                })
                .await?;
                match found {
                    Ok((ns, ips)) => match scope.name_of(&ns) {
                        Some(n) => pb::ResolveReply {
                            found: true,
                            netns: n.to_string(),
                            node: node.clone(),
                            addresses: ips.iter().map(|a| a.to_string()).collect(),
                            detail: String::new(),
                        },
                        None => not_here(format!("{spec} is not on node {node}")),
                    },
                    Err(e) => not_here(e.to_string()),
                }
            }
            What::Address(a) => {
                let ip = parse_ip(&a, "address")?;
                match scope.owners(ip).as_slice() {
                    [one] => pb::ResolveReply {
                        found: true,
                        netns: one.clone(),
                        node: node.clone(),
                        addresses: vec![ip.to_string()],
                        detail: String::new(),
                    },
                    [] => not_here(format!("no namespace on node {node} owns {ip}")),
                    many => not_here(format!(
                        "{ip} is owned by {} namespaces here: {}",
                        many.len(),
                        many.join(", ")
                    )),
                }
            }
        };
        Ok(Response::new(reply))
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let req = req.into_inner();
        let scope = self.scope_within(FRESH).await?;
        let mut snap = scope.snapshot();
        if req.path_only {
            let to = parse_ip(&req.to, "to")?;
            let (start, src) = if req.source.is_empty() {
                let own = scope.netns(&scope.node).cloned().ok_or_else(|| {
                    Status::internal(format!("node {} lost its own namespace", scope.name))
                })?;
                (own, parse_ip(&req.src, "src")?)
            } else {
                // The source's agent is asked first: the probe leaves from the address its
                // namespace's route towards `to` prefers.
                let ns = self.local_netns(&req.source).await?.1;
                let from = ns.clone();
                let src = blocking(move || {
                    Ok(dye_capture::topology::Topology::route_get(&from, to)
                        .ok()
                        .and_then(|r| r.prefsrc)
                        .unwrap_or(to))
                })
                .await?;
                (ns, src)
            };
            let walker = scope.clone();
            let keep = blocking(move || Ok(walker.path_points(&start, to, src))).await?;
            snap.points
                .retain(|p| keep.contains(&(p.netns.clone(), p.ifname.clone())));
        }
        if !req.source.is_empty() {
            let to = parse_ip(&req.to, "to")?;
            let (scope, ns) = self.local_netns(&req.source).await?;
            let name = req.source.clone();
            let lookups = blocking(move || {
                let _keep = &scope;
                let route = dye_capture::topology::Topology::route_get(&ns, to)
                    .map(|r| crate::live::snapshot::route(&r))
                    .map_err(|e| e.to_string());
                Ok(vec![dye_core::snapshot::RouteLookup {
                    netns: name,
                    dst: to,
                    route,
                }])
            })
            .await?;
            snap.add_lookups(lookups);
        }
        Ok(Response::new(pb::SnapshotReply {
            node: scope.name.clone(),
            snapshot_json: json(&snap)?,
        }))
    }

    type CaptureStream = ReceiverStream<Result<pb::CaptureEvent, Status>>;

    async fn capture(
        &self,
        req: Request<pb::CaptureRequest>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        let req = req.into_inner();
        let duration = Duration::from_millis(req.duration_ms);
        let max_bytes = if req.max_bytes == 0 {
            self.limits.max_capture_bytes
        } else {
            req.max_bytes
        };
        self.limits.check_capture(duration, max_bytes)?;
        let permit = self.sessions.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this agent runs at most {} capture sessions at once",
                self.limits.max_sessions
            ))
        })?;
        if let Some(pcap) = &req.pcap {
            if pcap.expression.len() > MAX_FILTER_BYTES {
                return Err(Status::out_of_range(format!(
                    "a filter of {} bytes exceeds this agent's bound of {MAX_FILTER_BYTES}",
                    pcap.expression.len()
                )));
            }
        }
        // A user's pcap filter replaces the probe filter.
        let probe = match &req.pcap {
            Some(_) => None,
            None => Some(probe_filter(req.filter.clone().unwrap_or_default())?),
        };
        let watch_plan = match (&probe, &req.filter) {
            (Some((_, proto, _)), Some(f)) => WatchPlan::from_filter(f, *proto)?,
            _ => None,
        };
        // The points as the last Snapshot listed them.
        let scope = self.scope().await?;
        if req.points.len() > MAX_CAPTURE_POINTS {
            return Err(Status::out_of_range(format!(
                "{} capture points exceed this agent's bound of {MAX_CAPTURE_POINTS}",
                req.points.len()
            )));
        }
        let mut chosen = Vec::new();
        for want in &req.points {
            let found = scope
                .scope
                .metas
                .iter()
                .position(|m| m.netns == want.netns && m.ifname == want.ifname)
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "no capture point {}/{} on node {}",
                        want.netns, want.ifname, scope.name
                    ))
                })?;
            chosen.push(found);
        }
        if chosen.is_empty() {
            chosen = (0..scope.scope.points.len()).collect();
        }
        if chosen.len() > MAX_CAPTURE_POINTS {
            return Err(Status::out_of_range(format!(
                "{} capture points exceed this agent's bound of {MAX_CAPTURE_POINTS}",
                chosen.len()
            )));
        }
        let mut config = CaptureConfig::new(
            chosen
                .iter()
                .map(|&i| scope.scope.points[i].clone())
                .collect(),
        );
        match &req.pcap {
            Some(pcap) => {
                let expr = pcap.expression.trim();
                config.filter = (!expr.is_empty()).then(|| expr.to_string());
                config.semantics = if pcap.outer {
                    Semantics::Outer
                } else {
                    Semantics::ThroughTunnels(
                        TunnelPorts::well_known().with_devices(&scope.scope.topology),
                    )
                };
            }
            None => {
                let (trace_id, proto, ports) = probe.unwrap_or((0, Proto::Icmp, Vec::new()));
                config.filter = Some(crate::live::capture_filter(trace_id, proto));
                config.semantics = crate::live::trace_semantics(&ports, &scope.scope.topology);
            }
        }
        config.immediate = true;
        config.promisc = false;
        config.buffer_bytes = 256 << 10;
        config.duration = Some(duration);
        // 0: the agent's own bound.
        config.max_packets = Some(match req.max_packets {
            0 => MAX_CAPTURE_PACKETS,
            n => n.min(MAX_CAPTURE_PACKETS),
        });
        // The coordinator merges and orders across nodes; a short window here keeps latency low.
        config.reorder_window = Some(Duration::from_millis(20));
        let names: Vec<(String, String)> = chosen
            .iter()
            .map(|&i| {
                let m = &scope.scope.metas[i];
                (m.netns.clone(), m.ifname.clone())
            })
            .collect();
        let (tx, rx) = mpsc::channel(256);
        let skew = self.skew;
        let mut id = [0u8; 8];
        dye_capture::random::fill(&mut id).map_err(|e| Status::internal(e.to_string()))?;
        let id = u64::from_ne_bytes(id);
        let stop = Arc::new(AtomicBool::new(false));
        self.captures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, stop.clone());
        let captures = self.captures.clone();
        let watched = watch_plan.map(|plan| (plan, scope.clone()));
        let mut listened: Vec<String> = names.iter().map(|(netns, _)| netns.clone()).collect();
        listened.sort();
        listened.dedup();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Armed on this thread (netlink, eBPF), before the capture says it started.
            let watch = watched.map(|(plan, scope)| Watch::arm(&plan, scope, &listened));
            run_capture(
                config,
                names,
                max_bytes,
                skew,
                Running { id, stop },
                watch,
                tx,
            );
            captures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            super::memory::give_back();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn stop_capture(
        &self,
        req: Request<pb::StopCaptureRequest>,
    ) -> Result<Response<pb::StopCaptureReply>, Status> {
        let id = req.into_inner().capture_id;
        let flag = self
            .captures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(f) = &flag {
            f.store(true, Ordering::Relaxed);
        }
        Ok(Response::new(pb::StopCaptureReply {
            found: flag.is_some(),
        }))
    }

    async fn inject(
        &self,
        req: Request<pb::InjectRequest>,
    ) -> Result<Response<pb::InjectReply>, Status> {
        let req = req.into_inner();
        self.limits.check_probes(&req.probes)?;
        let to = parse_ip(&req.to, "to")?;
        let (_, ns) = self.local_netns(&req.source).await?;
        self.rate.take(req.probes.len())?;
        let skew = self.skew;
        let sent = blocking(move || {
            let injector =
                Injector::open(&ns, to).map_err(|e| Status::failed_precondition(e.to_string()))?;
            req.probes
                .iter()
                .map(|p| {
                    injector
                        .send(&p.packet, p.seq, to)
                        .map(|t| skew.apply(t))
                        .map_err(|e| Status::unavailable(format!("sending probe {}: {e}", p.seq)))
                })
                .collect::<Result<Vec<u64>, Status>>()
        })
        .await?;
        Ok(Response::new(pb::InjectReply { sent_ns: sent }))
    }

    async fn routes(
        &self,
        req: Request<pb::RoutesRequest>,
    ) -> Result<Response<pb::RoutesReply>, Status> {
        let wanted = req
            .into_inner()
            .questions
            .iter()
            .map(|q| Ok((q.netns.clone(), parse_ip(&q.dst, "dst")?)))
            .collect::<Result<Vec<_>, Status>>()?;
        if wanted.len() > 1024 {
            return Err(Status::out_of_range("more than 1024 route questions"));
        }
        let scope = self.scope().await?;
        let found = blocking(move || {
            Ok(crate::live::snapshot::lookups(
                &scope.scope.topology,
                &wanted,
            ))
        })
        .await?;
        Ok(Response::new(pb::RoutesReply {
            lookups_json: json(&found)?,
        }))
    }

    async fn conntrack(
        &self,
        req: Request<pb::ConntrackRequest>,
    ) -> Result<Response<pb::ConntrackReply>, Status> {
        let req = req.into_inner();
        let query: ConntrackQuery = from_json(&req.query_json, "query_json")?;
        let (_, ns) = self.local_netns(&req.netns).await?;
        let entry = blocking(move || Ok(crate::live::conntrack::lookup(&ns, &query))).await?;
        Ok(Response::new(pb::ConntrackReply {
            entry_json: json(&entry)?,
        }))
    }

    async fn pmtu(&self, req: Request<pb::PmtuRequest>) -> Result<Response<pb::PmtuReply>, Status> {
        let req = req.into_inner();
        let to = parse_ip(&req.to, "to")?;
        let (_, ns) = self.local_netns(&req.source).await?;
        let out = match req.restore_from_json {
            None => {
                let r = blocking(move || Ok(crate::live::pmtu::cached(&ns, to))).await?;
                json(&r)?
            }
            Some(before) => {
                let before = from_json(&before, "restore_from_json")?;
                let r =
                    blocking(move || Ok(crate::live::pmtu::restore_if_changed(&ns, to, before)))
                        .await?;
                json(&r)?
            }
        };
        Ok(Response::new(pb::PmtuReply { json: out }))
    }

    async fn clock(
        &self,
        _req: Request<pb::ClockRequest>,
    ) -> Result<Response<pb::ClockReply>, Status> {
        let receive_ns = self.skew.apply(dye_capture::inject::now_ns());
        Ok(Response::new(pb::ClockReply {
            receive_ns,
            send_ns: self.skew.apply(dye_capture::inject::now_ns()),
        }))
    }
}

/// Captures until the bound, the byte budget, or the client going away; streams every event.
/// A capture's id and the flag StopCapture sets.
#[derive(Debug)]
struct Running {
    id: u64,
    stop: Arc<AtomicBool>,
}

/// A probe filter's trace id, protocol and VXLAN ports, checked.
fn probe_filter(filter: pb::ProbeFilter) -> Result<(u32, Proto, Vec<u16>), Status> {
    let proto = match pb::Proto::try_from(filter.proto) {
        Ok(pb::Proto::Icmp) => Proto::Icmp,
        Ok(pb::Proto::Udp) => Proto::Udp,
        Ok(pb::Proto::Tcp) => Proto::Tcp,
        _ => {
            return Err(Status::invalid_argument(
                "filter.proto must be icmp, udp or tcp",
            ))
        }
    };
    let ports: Vec<u16> = filter
        .vxlan_ports
        .iter()
        .map(|p| u16::try_from(*p))
        .collect::<Result<_, _>>()
        .map_err(|_| Status::invalid_argument("a VXLAN port is not a UDP port"))?;
    Ok((filter.trace_id, proto, ports))
}

fn run_capture(
    config: CaptureConfig,
    names: Vec<(String, String)>,
    max_bytes: u64,
    skew: Skew,
    running: Running,
    mut watch: Option<Watch>,
    tx: mpsc::Sender<Result<pb::CaptureEvent, Status>>,
) {
    use pb::capture_event::Event as Ev;
    let send = |ev: Ev| {
        tx.blocking_send(Ok(pb::CaptureEvent { event: Some(ev) }))
            .is_ok()
    };
    let session = match CaptureSession::start(config) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.blocking_send(Err(Status::failed_precondition(format!("capture: {e}"))));
            return;
        }
    };
    let started = pb::Started {
        points: session
            .points()
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(i, (open, (netns, ifname)))| pb::PointInfo {
                point: i as u32,
                netns: netns.clone(),
                ifname: ifname.clone(),
                linktype: open.linktype,
            })
            .collect(),
        capture_id: running.id,
    };
    if let Some(w) = &mut watch {
        w.ready();
    }
    let open_names: Vec<String> = session.points().iter().map(|p| p.point.name()).collect();
    let mut reason = "duration".to_string();
    let mut bytes = 0u64;
    if send(Ev::Started(started)) {
        let mut stopping = false;
        loop {
            if tx.is_closed() {
                reason = "client gone".into();
                break;
            }
            // Asked to stop: the session stops reading, what it already has still comes.
            if !stopping && running.stop.load(Ordering::Relaxed) {
                stopping = true;
                reason = "stopped by the client".into();
                session.stop();
            }
            match session.recv_timeout(CLIENT_CHECK) {
                Ok(Some(CaptureEvent::Packet(o))) => {
                    bytes += o.frame.len() as u64;
                    let frame = pb::Frame {
                        point: o.point as u32,
                        direction: match o.direction {
                            dye_capture::Direction::In => pb::Direction::In,
                            dye_capture::Direction::Out => pb::Direction::Out,
                        } as i32,
                        ts_ns: skew.apply(o.ts_ns),
                        orig_len: o.orig_len,
                        data: o.frame,
                    };
                    if !send(Ev::Frame(frame)) {
                        reason = "client gone".into();
                        break;
                    }
                    if bytes >= max_bytes {
                        reason = "bytes".into();
                        break;
                    }
                }
                Ok(Some(CaptureEvent::PointLost { point, reason })) => {
                    let _ = send(Ev::Lost(pb::PointLost {
                        point: point as u32,
                        reason,
                    }));
                }
                Ok(None) => {}
                Err(()) => break,
            }
        }
    }
    session.stop();
    let stats = match session.join() {
        Ok(stats) => stats,
        Err(e) => {
            reason = format!("error: {e}");
            Vec::new()
        }
    };
    let stats = stats
        .iter()
        .filter_map(|s| {
            let i = open_names.iter().position(|n| *n == s.name)?;
            Some(pb::PointStats {
                point: i as u32,
                captured: s.captured(),
                kernel_dropped: s.kernel_dropped,
                lost: s.lost.clone().unwrap_or_default(),
            })
        })
        .collect();
    let (rule_events_json, kernel_drops_json) = watch.map(Watch::collect).unwrap_or_default();
    let _ = send(Ev::Finished(pb::Finished {
        stats,
        reason,
        rule_events_json,
        kernel_drops_json,
    }));
}
