//! One trace from start to finish: resolve the source and the route, choose capture points,
//! start capturing, inject the probes from the source namespace, turn what was captured into
//! sightings, reconstruct the path, and confirm NAT rewrites against conntrack.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dye_capture::topology::Topology;
use dye_capture::{CaptureConfig, CaptureSession, Direction, Event, Netns};

use super::conntrack;
use super::inject::{now_ns, Injector};
use super::observe::{Observer, Sighting, SightingKind};
use super::probe::{Probe, ProbeTemplate, Proto};
use super::reconstruct::{reconstruct, PointMeta};
use super::report::{EventType, Leg, PointReport, ProbeSpec, TraceReport, SCHEMA};
use super::scope::{Scope, ScopeRequest, TopologyOracle};

/// What to trace and how.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// Source namespace reference: a name under /run/netns, a path, a PID or `host`.
    pub from: String,
    pub to: IpAddr,
    pub port: Option<u16>,
    pub proto: Proto,
    /// IP packet size of each probe.
    pub size: u32,
    pub df: bool,
    pub count: u32,
    pub interval: Duration,
    /// How long to wait for answers after the last probe.
    pub timeout: Duration,
    pub scope: ScopeRequest,
    pub vxlan_ports: Vec<u16>,
    /// Capture everything in the window (no kernel filter) and keep it for the pcap.
    pub keep_all: bool,
}

/// Bounds that keep a trace light on a busy node.
pub const MAX_COUNT: u32 = 100;
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_FRAMES: usize = 100_000;
const MAX_FRAME_BYTES: usize = 64 << 20;
/// After the last answer, how long to keep draining: longer than capture's 100 ms reorder window
/// in immediate mode, so the hops still in it arrive.
const SETTLE: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{0}")]
    Invalid(String),
    #[error("source namespace: {0}")]
    Netns(#[from] dye_capture::NetnsError),
    #[error(transparent)]
    Scope(#[from] super::scope::ScopeError),
    #[error("no route from {from} to {to}: {detail}")]
    NoRoute {
        from: String,
        to: IpAddr,
        detail: String,
    },
    #[error(transparent)]
    Probe(#[from] super::probe::ProbeError),
    #[error("capture: {0}")]
    Capture(#[from] dye_capture::CaptureError),
    #[error(transparent)]
    Inject(#[from] super::inject::InjectError),
}

impl TraceConfig {
    /// Checks everything that can be checked before touching the system.
    pub fn validate(&self) -> Result<(), TraceError> {
        let bad = |m: String| Err(TraceError::Invalid(m));
        if self.count == 0 || self.count > MAX_COUNT {
            return bad(format!("--count {} must be 1..={MAX_COUNT}", self.count));
        }
        if self.interval < MIN_INTERVAL {
            return bad(format!(
                "--interval {:?} is below the minimum {:?}",
                self.interval, MIN_INTERVAL
            ));
        }
        if self.timeout > MAX_TIMEOUT {
            return bad(format!(
                "--timeout {:?} is above the maximum {:?}",
                self.timeout, MAX_TIMEOUT
            ));
        }
        check_port(self.proto, self.to, self.port)
    }
}

/// A UDP or TCP probe needs a destination port, an ICMP probe has none.
pub(crate) fn check_port(proto: Proto, to: IpAddr, port: Option<u16>) -> Result<(), TraceError> {
    match (proto, port) {
        (Proto::Udp | Proto::Tcp, None) => Err(TraceError::Invalid(format!(
            "--proto {} needs a port: --to {to}:PORT",
            proto.as_str()
        ))),
        (Proto::Icmp, Some(p)) => Err(TraceError::Invalid(format!(
            "--proto icmp has no port, but --to names port {p}; add --proto tcp or udp"
        ))),
        _ => Ok(()),
    }
}

/// A frame kept for the pcap.
#[derive(Debug, Clone)]
pub struct Frame {
    pub point: usize,
    pub direction: Direction,
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Everything a trace produced.
#[derive(Debug)]
pub struct TraceRun {
    pub report: TraceReport,
    pub points: Vec<PointMeta>,
    pub frames: Vec<Option<Frame>>,
    pub sightings: Vec<Sighting>,
    /// The trace was cut short by SIGINT/SIGTERM.
    pub interrupted: bool,
}

/// Random bits from the kernel (for trace ids, ports, IP ids).
pub(crate) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u32::from_ne_bytes(b) ^ (now_ns() as u32)
}

/// Opens the source namespace and asks it how it reaches `to`: the route and the source
/// address probes must carry.
pub(crate) fn open_source(
    from: &str,
    to: IpAddr,
) -> Result<(Netns, dye_capture::netlink::Route, IpAddr), TraceError> {
    let source = Netns::open_str(from)?;
    let no_route = |detail: String| TraceError::NoRoute {
        from: from.to_string(),
        to,
        detail,
    };
    let route = Topology::route_get(&source, to).map_err(|e| no_route(e.to_string()))?;
    let src = route
        .prefsrc
        .ok_or_else(|| no_route(format!("route `{route}` has no source address")))?;
    Ok((source, route, src))
}

/// Runs a trace. `stop` ends it early (SIGINT); what was seen is still reconstructed.
pub fn trace(
    cfg: &TraceConfig,
    stop: Arc<AtomicBool>,
    progress: &dyn Fn(&str),
) -> Result<TraceRun, TraceError> {
    let started = Instant::now();
    cfg.validate()?;
    let (source, route, src) = open_source(&cfg.from, cfg.to)?;
    progress(&format!(
        "discovering namespaces reachable from {}",
        source.name()
    ));
    let scope = Scope::discover(&source, &cfg.scope)?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        points = scope.points.len(),
        "scope discovered"
    );
    if let (Some(dev), Some(info)) = (&route.dev, scope.topology.namespace(&scope.source)) {
        if let Some(link) = info.link(dev) {
            if cfg.size > link.mtu {
                return Err(TraceError::Invalid(format!(
                    "--size {} exceeds the MTU {} of {dev} in {}: dye sends probes whole, so the largest probe here is {}",
                    cfg.size, link.mtu, cfg.from, link.mtu
                )));
            }
        }
    }

    let trace_id = random_u32();
    let template = ProbeTemplate {
        src,
        dst: cfg.to,
        proto: cfg.proto,
        dport: cfg.port.unwrap_or(0),
        sport_base: 32768 + (random_u32() % 16384) as u16,
        size: cfg.size,
        df: cfg.df,
        trace_id,
    };
    template.check()?;
    let id_base = random_u32() as u16;
    let probes: Vec<Probe> = (1..=cfg.count)
        .map(|seq| template.build(seq, id_base.wrapping_add(seq as u16)))
        .collect::<Result<_, _>>()?;

    let mut capture = CaptureConfig::new(scope.points.clone());
    capture.filter = (!cfg.keep_all).then(|| capture_filter(trace_id, cfg.proto, &cfg.vxlan_ports));
    capture.immediate = true;
    capture.promisc = false;
    // Probes are few: small rings keep a wide trace light (two rings per point).
    capture.buffer_bytes = 256 << 10;
    capture.max_packets = Some(MAX_FRAMES as u64 * 2);
    capture.duration = Some(cfg.interval * cfg.count + cfg.timeout + Duration::from_secs(5));
    progress(&format!(
        "capturing on {} interfaces in {} namespaces",
        scope.points.len(),
        scope.topology.namespaces.len()
    ));
    // The session gets its own stop flag: stopping it must not read as a user interrupt.
    let session = CaptureSession::start(capture)?;
    let injector = Injector::open(&source, cfg.to)?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "capture started"
    );

    let mut observer = Observer::new(trace_id, &cfg.vxlan_ports);
    for p in &probes {
        observer.sent(src, p.ip_id, p.seq);
    }
    let source_points: Vec<bool> = scope
        .metas
        .iter()
        .map(|m| m.netns == scope.source)
        .collect();
    let mut frames: Vec<Option<Frame>> = Vec::new();
    let mut frame_bytes = 0usize;
    let mut sightings: Vec<Sighting> = Vec::new();
    let mut lost_points: Vec<(usize, String)> = Vec::new();

    let sending_done = AtomicBool::new(false);
    let sent = std::thread::scope(|s| -> Result<Vec<(u32, u64)>, TraceError> {
        let sender = s.spawn(|| {
            let r = injector.send_all(&probes, cfg.to, cfg.interval, &|| {
                stop.load(Ordering::Relaxed)
            });
            sending_done.store(true, Ordering::Release);
            r
        });
        progress(&format!(
            "sending {} {} probe(s) of {} bytes to {}",
            cfg.count,
            cfg.proto.as_str(),
            cfg.size,
            cfg.to
        ));
        let mut deadline: Option<Instant> = None;
        let mut settled_at: Option<Instant> = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            if sending_done.load(Ordering::Acquire) && deadline.is_none() {
                deadline = Some(now + cfg.timeout);
            }
            if deadline.map(|d| now >= d).unwrap_or(false)
                || settled_at.map(|t| now >= t).unwrap_or(false)
            {
                break;
            }
            match session.recv_timeout(Duration::from_millis(20)) {
                Ok(Some(Event::Packet(obs))) => {
                    let index = frames.len();
                    let s =
                        observer.observe(index, obs.point, obs.direction, obs.ts_ns, &obs.frame);
                    let keep = cfg.keep_all || s.is_some() || is_fragment_candidate(&obs.frame);
                    if keep
                        && frames.len() < MAX_FRAMES
                        && frame_bytes + obs.frame.len() <= MAX_FRAME_BYTES
                    {
                        frame_bytes += obs.frame.len();
                        frames.push(Some(Frame {
                            point: obs.point,
                            direction: obs.direction,
                            ts_ns: obs.ts_ns,
                            orig_len: obs.orig_len,
                            data: obs.frame,
                        }));
                    } else {
                        frames.push(None);
                    }
                    if let Some(s) = s {
                        sightings.push(s);
                        if sending_done.load(Ordering::Acquire)
                            && settled_at.is_none()
                            && all_finished(cfg.count, &sightings, &source_points)
                        {
                            settled_at = Some(Instant::now() + SETTLE);
                        }
                    }
                }
                Ok(Some(Event::PointLost { point, reason })) => lost_points.push((point, reason)),
                Ok(None) => {}
                Err(()) => break, // the capture ended (duration or packet bound)
            }
        }
        sender
            .join()
            .map_err(|_| TraceError::Invalid("probe sender panicked".into()))?
            .map_err(TraceError::from)
    })?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        sightings = sightings.len(),
        "probing done"
    );
    session.stop();
    let stats = session.join()?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "capture stopped"
    );

    let oracle = TopologyOracle {
        topology: &scope.topology,
    };
    let mut rec = reconstruct(&scope.metas, &scope.source, &sent, &sightings, &oracle);
    confirm_nat(&scope, &mut rec.hops);

    let capture_report = scope
        .metas
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let st = stats.iter().find(|s| s.name == m.name());
            PointReport {
                name: m.name(),
                kind: m.kind.clone(),
                mtu: m.mtu,
                sightings: sightings.iter().filter(|s| s.point == i).count() as u64,
                captured: st.map(|s| s.captured()).unwrap_or(0),
                kernel_dropped: st.map(|s| s.kernel_dropped).unwrap_or(0),
                lost: st.and_then(|s| s.lost.clone()).or_else(|| {
                    lost_points
                        .iter()
                        .find(|(p, _)| *p == i)
                        .map(|(_, r)| r.clone())
                }),
            }
        })
        .collect();
    let to = match cfg.port {
        Some(p) if cfg.to.is_ipv6() => format!("[{}]:{p}", cfg.to),
        Some(p) => format!("{}:{p}", cfg.to),
        None => cfg.to.to_string(),
    };
    let report = TraceReport {
        schema: SCHEMA.to_string(),
        probe: ProbeSpec {
            from: cfg.from.clone(),
            src: src.to_string(),
            to,
            proto: cfg.proto.as_str().to_string(),
            size: cfg.size,
            df: cfg.df,
            trace_id: format!("{trace_id:08x}"),
            count: cfg.count,
        },
        verdict: rec.verdict,
        hops: rec.hops,
        probes: rec.probes,
        capture: capture_report,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    Ok(TraceRun {
        report,
        points: scope.metas,
        frames,
        sightings,
        interrupted: stop.load(Ordering::Relaxed),
    })
}

/// True when every probe has its answer (or ICMP error) back in the source namespace.
fn all_finished(count: u32, sightings: &[Sighting], source_points: &[bool]) -> bool {
    (1..=count).all(|seq| {
        sightings.iter().any(|s| {
            s.seq == seq
                && s.leg == Leg::Return
                && source_points.get(s.point).copied().unwrap_or(false)
                && !matches!(s.kind, SightingKind::Probe)
        })
    })
}

/// IPv4 fragments are kept until their datagram completes (the last one carries the marker).
pub(crate) fn is_fragment_candidate(frame: &[u8]) -> bool {
    frame.len() > 21
        && frame.get(12..14) == Some(&[0x08, 0x00])
        && frame
            .get(20..22)
            .map(|f| (u16::from_be_bytes([f[0], f[1]]) & 0x3fff) != 0)
            .unwrap_or(false)
}

/// The kernel filter: the decode crate's marker/fragment/ICMP-error expression, plus the
/// unmarked answers to TCP probes (SYN-ACK, RST) plain and one VXLAN level down.
pub(crate) fn capture_filter(trace_id: u32, proto: Proto, vxlan_ports: &[u16]) -> String {
    let mut f = dye_decode::filter_expression_with(Some(trace_id), vxlan_ports);
    if proto == Proto::Tcp {
        f.push_str(" or (tcp and (tcp[13] & 0x12 = 0x12 or tcp[13] & 0x04 != 0))");
        // libpcap's tcp[] only reads IPv4: IPv6 answers (no extension headers) by offset, plain
        // and inside VXLAN over an IPv6 underlay (inner IPv6 at ip6[70], its TCP flags at ip6[123]).
        f.push_str(" or (ip6 and ip6[6] = 6 and (ip6[53] & 0x12 = 0x12 or ip6[53] & 0x04 != 0))");
        if !vxlan_ports.is_empty() {
            let ports = vxlan_ports
                .iter()
                .map(|p| format!("ip6[42:2] = {p}"))
                .collect::<Vec<_>>()
                .join(" or ");
            f.push_str(&format!(" or (ip6 and ip6[6] = 17 and ({ports}) and ip6[68:2] = 0x86dd and ip6[76] = 6 and (ip6[123] & 0x12 = 0x12 or ip6[123] & 0x04 != 0))"));
        }
        if !vxlan_ports.is_empty() {
            let ports = vxlan_ports
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" or ");
            // udp[30..] inner IPv4 without options: protocol at udp[39], TCP flags at udp[63].
            f.push_str(&format!(" or (udp dst port ({ports}) and udp[28:2] = 0x0800 and udp[39] = 6 and (udp[63] & 0x12 = 0x12 or udp[63] & 0x04 != 0))"));
        }
    }
    f
}

/// Attaches the conntrack entry to every hop where a NAT rewrite was first seen.
fn confirm_nat(scope: &Scope, hops: &mut [super::report::Hop]) {
    for i in 1..hops.len() {
        let rewrote = hops[i]
            .events
            .iter()
            .any(|e| matches!(e.kind, EventType::Dnat | EventType::Snat));
        if !rewrote || hops[i].leg != Leg::Forward {
            continue;
        }
        let before = hops[i - 1].packet.clone();
        let Some(info) = scope.topology.namespace(&hops[i].netns) else {
            continue;
        };
        hops[i].conntrack = conntrack::lookup(&info.netns, &before);
    }
}
