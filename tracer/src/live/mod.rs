//! dye on this host: resolve the source, discover the scope, take the topology snapshot, open
//! the capture and the injector, and hand the core a live [`network::LiveNetwork`] — recorded
//! when the user asked for `--record`. Everything that touches the system for a trace or an
//! MTU search is here; the logic is in `dye-core`.

pub mod conntrack;
pub mod drops;
pub mod host;
pub mod network;
pub mod pmtu;
pub mod pod_names;
pub mod pods;
pub mod rules;
pub mod runtime_pid;
pub mod scope;
pub mod snapshot;
pub mod walk;

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use dye_capture::filter::{Semantics, TunnelPorts};
use dye_capture::topology::Topology;
use dye_capture::{CaptureConfig, CaptureSession, Injector, Netns, SocketModel};
use dye_core::mtu::{self as core_mtu, MtuPlan, MtuRun};
use dye_core::recording::{Recorder, Recording, SCHEMA as RECORDING_SCHEMA};
use dye_core::seam::Network;
use dye_core::snapshot::{Point, RouteLookup, ScopeInfo, Snapshot, SocketModel as CoreSocketModel};
use dye_core::trace::{self as core_trace, TraceIds, TracePlan, TraceRun};
use dye_core::Proto;

pub use scope::{Scope, ScopeError, ScopeRequest};

use network::LiveNetwork;

/// Why dye could not set up or run a trace or search on this host.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("source namespace: {0}")]
    Netns(#[from] dye_capture::NetnsError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("no route from {from} to {to}: {detail}")]
    NoRoute {
        from: String,
        to: IpAddr,
        detail: String,
    },
    #[error("capture: {0}")]
    Capture(#[from] dye_capture::CaptureError),
    #[error(transparent)]
    Inject(#[from] dye_capture::InjectError),
    #[error(transparent)]
    Core(#[from] core_trace::TraceError),
    #[error("random ids: {0}")]
    Random(String),
}

impl LiveError {
    /// True when the user's request is at fault (exit 2), not the system (exit 3).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            LiveError::Netns(_)
                | LiveError::Scope(_)
                | LiveError::NoRoute { .. }
                | LiveError::Core(core_trace::TraceError::Invalid(_))
                | LiveError::Core(core_trace::TraceError::Probe(_))
                | LiveError::Core(core_trace::TraceError::NoRoute { .. })
        )
    }
}

/// Fresh random ids for a trace or search, from the kernel.
pub fn random_ids() -> Result<TraceIds, LiveError> {
    let mut b = [0u8; 8];
    dye_capture::random::fill(&mut b).map_err(|e| LiveError::Random(e.to_string()))?;
    Ok(TraceIds {
        trace_id: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        sport_base: 32768 + (u16::from_ne_bytes([b[4], b[5]]) % 16384),
        id_base: u16::from_ne_bytes([b[6], b[7]]),
    })
}

/// What the capture needs to know about the probes, for its kernel filter.
#[derive(Debug, Clone)]
pub struct CaptureNeeds {
    pub trace_id: u32,
    pub proto: Proto,
    pub vxlan_ports: Vec<u16>,
    /// No kernel filter (keep everything for the pcap).
    pub unfiltered: bool,
    /// Trace the probes through netfilter in every namespace (which rule dropped them).
    pub trace_rules: bool,
    /// IP packet size of the probes (where their marker sits).
    pub probe_size: u32,
    pub reorder_window: Option<Duration>,
    pub duration: Duration,
}

/// A source namespace, its scope and snapshot, and the live network over them.
#[derive(Debug)]
pub struct Setup {
    pub network: LiveNetwork,
    /// The snapshot as taken (before the core completes it): what a recording stores.
    pub snapshot: Snapshot,
}

/// Opens the source, discovers the scope, snapshots it with the route lookups towards the
/// destination and the source address, starts capturing and opens the injector.
pub fn setup(
    from: &str,
    to: IpAddr,
    req: &ScopeRequest,
    needs: &CaptureNeeds,
    stop: Arc<AtomicBool>,
    status: &dyn Fn(&str),
) -> Result<Setup, LiveError> {
    // Session time starts here, so reports' elapsed times include discovery and capture setup.
    let started = std::time::Instant::now();
    // First, so that loading the eBPF program overlaps everything below.
    let drops = needs
        .trace_rules
        .then(|| drops::Arming::start(needs.trace_id));
    let source = Netns::open_str(from)?;
    let no_route = |detail: String| LiveError::NoRoute {
        from: from.to_string(),
        to,
        detail,
    };
    // Before anything is discovered or opened: the source must route the destination and have
    // an address to send from.
    let route = Topology::route_get(&source, to).map_err(|e| no_route(e.to_string()))?;
    if route.prefsrc.is_none() {
        return Err(no_route(format!("route `{route}` has no source address")));
    }
    status(&format!("walking the path from {} to {to}", source.name()));
    let src = route.prefsrc.unwrap_or(to);
    let scope = Scope::discover(&source, req, to, src)?;
    let mut snap = snapshot::from_topology(&scope.topology, &scope.source, scope.metas.clone());
    let namespaces_with_points = {
        let mut ids: Vec<_> = scope.points.iter().map(|p| p.netns.id()).collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    snap.scope = Some(ScopeInfo {
        by: scope.by,
        sockets: match req.sockets {
            SocketModel::PerNamespace => CoreSocketModel::PerNamespace,
            SocketModel::PerInterface => CoreSocketModel::PerInterface,
        },
        capture_sockets: match req.sockets {
            SocketModel::PerNamespace => namespaces_with_points,
            SocketModel::PerInterface => 2 * scope.points.len(),
        } as u32,
    });
    // The source's own route (its address and egress MTU); routes elsewhere are looked up for
    // the namespaces the probes are seen in, as they are.
    snap.add_lookups(vec![RouteLookup {
        netns: scope.source.clone(),
        dst: to,
        route: Ok(snapshot::route(&route)),
    }]);

    let mut capture = CaptureConfig::new(scope.points.clone());
    capture.filter = (!needs.unfiltered).then(|| capture_filter(needs.trace_id, needs.proto));
    capture.semantics = trace_semantics(&needs.vxlan_ports, &scope.topology);
    capture.immediate = true;
    capture.promisc = false;
    // Probes are few: small rings keep a wide trace light (two rings per point).
    capture.buffer_bytes = 256 << 10;
    capture.max_packets = Some(200_000);
    capture.reorder_window = needs.reorder_window;
    capture.duration = Some(needs.duration);
    capture.sockets = req.sockets;
    status(&format!(
        "capturing on {} interfaces in {} namespaces ({} sockets)",
        scope.points.len(),
        scope.topology.namespaces.len(),
        snap.scope.as_ref().map_or(0, |s| s.capture_sockets)
    ));
    let session = CaptureSession::start(capture)?;
    fill_linktypes(&mut snap.points, &session);
    let injector = Injector::open(&source, to)?;
    let rules = needs.trace_rules.then(|| {
        let proto = match (needs.proto, to) {
            (Proto::Icmp, IpAddr::V4(_)) => 1,
            (Proto::Icmp, IpAddr::V6(_)) => 58,
            (Proto::Tcp, _) => 6,
            (Proto::Udp, _) => 17,
        };
        rules::RuleTracer::arm(
            &scope.topology,
            &format!("dye_{:08x}", needs.trace_id),
            &rules::ProbeSignature {
                proto,
                src,
                dst: to,
                size: needs.probe_size,
                trace_id: needs.trace_id,
            },
        )
    });
    if needs.trace_rules {
        snap.legacy_iptables = rules::legacy_iptables(&scope.topology);
    }
    let mut network =
        LiveNetwork::new(session, injector, scope.topology, source, to, stop, started);
    network.trace_rules(rules.unwrap_or_default());
    network.watch_drops(drops.unwrap_or_default());
    network.note_pmtu(Some(snapshot::route(&route)));
    Ok(Setup {
        network,
        snapshot: snap,
    })
}

fn fill_linktypes(points: &mut [Point], session: &CaptureSession) {
    for (p, open) in points.iter_mut().zip(session.points()) {
        p.linktype = open.linktype;
    }
}

/// Runs `f` over the live network, journaling it into a recording when `record` is set.
/// Returns what `f` returned, the snapshot as the core left it (with the routes it asked for),
/// and the recording (which keeps the snapshot as taken: a replay asks the same questions).
fn run_recorded<P: Clone, T>(
    command: &str,
    plan: &P,
    setup: Setup,
    record: bool,
    f: impl FnOnce(&mut Snapshot, &mut dyn Network) -> T,
) -> (T, Snapshot, Option<Recording<P>>) {
    let Setup {
        network,
        snapshot: taken,
    } = setup;
    let mut snap = taken.clone();
    if !record {
        let mut net = network;
        let out = f(&mut snap, &mut net);
        return (out, snap, None);
    }
    let mut rec = Recorder::new(network);
    let out = f(&mut snap, &mut rec);
    let (_, journal) = rec.into_parts();
    let recording = Recording {
        schema: RECORDING_SCHEMA.to_string(),
        command: command.to_string(),
        dye_version: env!("CARGO_PKG_VERSION").to_string(),
        plan: plan.clone(),
        snapshot: taken,
        journal,
    };
    (out, snap, Some(recording))
}

/// A trace on this host.
pub fn trace(
    plan: &TracePlan,
    req: &ScopeRequest,
    stop: Arc<AtomicBool>,
    record: bool,
    status: &dyn Fn(&str),
) -> Result<(TraceRun, Snapshot, Option<Recording<TracePlan>>), LiveError> {
    plan.validate()?;
    let needs = CaptureNeeds {
        trace_id: plan.ids.trace_id,
        proto: plan.proto,
        vxlan_ports: plan.vxlan_ports.clone(),
        unfiltered: plan.keep_all,
        trace_rules: true,
        probe_size: plan.size,
        reorder_window: None,
        duration: plan.interval * plan.count + plan.timeout + Duration::from_secs(5),
    };
    let setup = setup(&plan.from, plan.to, req, &needs, stop, status)?;
    let (run, snapshot, recording) = run_recorded("trace", plan, setup, record, |snap, net| {
        core_trace::run_trace(plan, snap, net, &mut |p| {
            if let core_trace::Progress::Sending { count } = p {
                status(&format!(
                    "sending {count} {} probe(s) of {} bytes to {}",
                    plan.proto, plan.size, plan.to
                ));
            }
        })
    });
    Ok((run?, snapshot, recording))
}

/// An MTU search on this host.
pub fn mtu(
    plan: &MtuPlan,
    req: &ScopeRequest,
    stop: Arc<AtomicBool>,
    record: bool,
    status: &dyn Fn(&str),
    progress: &mut dyn FnMut(core_mtu::Progress),
) -> Result<(MtuRun, Option<Recording<MtuPlan>>), LiveError> {
    plan.validate()?;
    let needs = CaptureNeeds {
        trace_id: plan.ids.trace_id,
        proto: plan.proto,
        vxlan_ports: plan.vxlan_ports.clone(),
        unfiltered: false,
        trace_rules: false,
        probe_size: 0,
        // Probes are watched one at a time, so cross-point ordering can be short.
        reorder_window: Some(Duration::from_millis(20)),
        duration: core_mtu::run::MAX_ELAPSED + Duration::from_secs(5),
    };
    let setup = setup(&plan.from, plan.to, req, &needs, stop, status)?;
    let (run, _, recording) = run_recorded("mtu", plan, setup, record, |snap, net| {
        core_mtu::run_mtu(plan, snap, net, progress)
    });
    Ok((run?, recording))
}

/// The kernel filter: the decode crate's marker/fragment/ICMP-error expression, plus the
/// unmarked answers to TCP probes (SYN-ACK, RST), for the packet itself. The capture applies it
/// through tunnels too ([`trace_semantics`]): in the kernel, to the packet inside VXLAN, Geneve
/// and IP-in-UDP, so the probes, their fragments, ICMP errors and answers are kept on the
/// underlay whatever carries them, and other overlay traffic never reaches dye.
pub fn capture_filter(trace_id: u32, proto: Proto) -> String {
    let mut f = dye_decode::filter_expression_ports(Some(trace_id), &[], &[]);
    if proto == Proto::Tcp {
        f.push_str(" or (tcp and (tcp[13] & 0x12 = 0x12 or tcp[13] & 0x04 != 0))");
        // libpcap's tcp[] only reads IPv4: IPv6 answers (no extension headers) by offset.
        f.push_str(" or (ip6 and ip6[6] = 6 and (ip6[53] & 0x12 = 0x12 or ip6[53] & 0x04 != 0))");
    }
    f
}

/// The trace's filter sees through tunnels on the well-known ports, the ones asked for
/// (`--vxlan-port`) and those of the VXLAN and Geneve devices in scope.
pub fn trace_semantics(vxlan_ports: &[u16], topo: &Topology) -> Semantics {
    Semantics::ThroughTunnels(
        TunnelPorts::well_known()
            .with_vxlan(vxlan_ports.iter().copied())
            .with_devices(topo),
    )
}
