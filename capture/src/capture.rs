//! Live capture on many (namespace, interface) points at once.
//!
//! ## Design
//!
//! - **Per-interface handles, two per point.** Each capture point gets two libpcap handles on the
//!   interface itself (not the `any` pseudo-device): one whose kernel filter is
//!   `(FILTER) and inbound`, one with `(FILTER) and outbound`. `inbound`/`outbound` compile to a
//!   load of the packet-type ancillary field (`SKF_AD_PKTTYPE`), so the kernel decides the
//!   direction exactly and discards everything else before it reaches a ring. This keeps real
//!   Ethernet headers (the vendor sees the MACs; the pcapng link type is the interface's own) and
//!   an exact interface identity, which `any` + SLL2 would only give through an ifindex lookup
//!   that can race with interface churn and without destination MACs.
//! - **Handles are opened inside the namespace** on a dedicated OS thread ([`Netns::run`]) and
//!   then all read from one reader thread that `poll`s every fd: one thread whatever the number
//!   of points.
//! - **Rings are sized deliberately** ([`CaptureConfig::buffer_bytes`], per handle) and not in
//!   immediate mode by default: TPACKET_V3 with a short block timeout
//!   ([`CaptureConfig::timeout_ms`]) batches wake-ups under load, which is what keeps a busy node
//!   from being flooded; immediate mode (TPACKET_V2, fixed-size slots) is available for
//!   latency-sensitive callers.
//! - **Merged, time-ordered stream.** Each ring delivers in order; a reorder buffer holds packets
//!   for a window slightly longer than the block timeout and releases them by timestamp. The
//!   buffer is bounded in packets and bytes; the output channel is bounded; when the consumer is
//!   slow the rings fill and the *kernel* counts the drops, which are surfaced per point.
//! - **An interface that disappears** (or goes down) shows up as `POLLERR`/`ENETDOWN` on its
//!   socket: the point is reported with [`Event::PointLost`] and capture goes on elsewhere.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{poll, PollFd, PollFlags};
use pcap::{Active, Capture, Precision};
use serde::Serialize;

use crate::filter::{self, Insn, Semantics, TunnelMatcher};
use crate::netns::{Netns, NetnsError};
use crate::nssock::{self, NsSocket};
use crate::pcapng::InterfaceInfo;

/// Direction of a frame relative to the interface it was captured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received by the interface (PACKET_HOST, BROADCAST, MULTICAST, OTHERHOST).
    In,
    /// Transmitted by the interface (PACKET_OUTGOING).
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// Where to capture: one interface in one namespace.
#[derive(Clone, Debug)]
pub struct CapturePoint {
    pub netns: Netns,
    pub ifname: String,
    /// Link kind (veth, bridge, vxlan, physical, ...) for descriptions.
    pub kind: String,
    pub mtu: u32,
    /// The node the namespace belongs to (see `topology::NamespaceInfo::node`).
    pub node: String,
}

impl CapturePoint {
    /// `<netns>/<ifname>`: the pcapng interface name and the label in every report.
    pub fn name(&self) -> String {
        format!("{}/{}", self.netns.name(), self.ifname)
    }

    /// `if_description` text: kind, MTU, namespace (with inode), node.
    pub fn description(&self) -> String {
        format!(
            "{} mtu {}, netns {} ({}), node {}",
            self.kind,
            self.mtu,
            self.netns.name(),
            self.netns.id(),
            self.node
        )
    }
}

/// How a session maps capture points to kernel sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SocketModel {
    /// Two libpcap handles per point (inbound, outbound), each with its own ring: exact
    /// per-interface counters, and cost that grows with the number of interfaces.
    #[default]
    PerInterface,
    /// One packet socket per namespace, not bound to an interface ([`crate::nssock`]): the
    /// interface comes with each frame, so cost follows the namespaces, not their interfaces.
    PerNamespace,
}

/// Everything a capture session needs; build with [`CaptureConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    pub points: Vec<CapturePoint>,
    /// pcap filter expression applied in the kernel on every handle (None: everything).
    pub filter: Option<String>,
    /// Whether `filter` reads the outer headers only or also the packets inside tunnels.
    pub semantics: Semantics,
    /// Bytes kept of each frame.
    pub snaplen: i32,
    /// Kernel ring size per handle (two handles per point).
    pub buffer_bytes: i32,
    /// Deliver each packet as soon as it arrives (TPACKET_V2) instead of per block.
    pub immediate: bool,
    /// Block timeout of the ring (TPACKET_V3), i.e. the worst-case delivery delay.
    pub timeout_ms: i32,
    /// Put interfaces into promiscuous mode (as tcpdump does); undone when the handle closes.
    pub promisc: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many packets (over all points).
    pub max_packets: Option<u64>,
    /// Bounded output queue (packets) between the reader thread and the consumer.
    pub queue_packets: usize,
    /// Bound of the reorder buffer, in bytes of frame data.
    pub reorder_max_bytes: usize,
    /// Kernel sockets: two libpcap handles per point, or one packet socket per namespace.
    pub sockets: SocketModel,
    /// How long packets wait to be merged in time order across points. None: 100 ms in
    /// immediate mode, twice the block timeout plus 100 ms otherwise. A consumer that orders
    /// by timestamp itself and wants answers fast (the MTU search) can shorten it.
    pub reorder_window: Option<Duration>,
}

impl CaptureConfig {
    pub fn new(points: Vec<CapturePoint>) -> CaptureConfig {
        CaptureConfig {
            points,
            filter: None,
            semantics: Semantics::Outer,
            snaplen: 262_144,
            buffer_bytes: 1024 * 1024,
            immediate: false,
            timeout_ms: 50,
            promisc: true,
            duration: None,
            max_packets: None,
            queue_packets: 1024,
            reorder_max_bytes: 32 * 1024 * 1024,
            reorder_window: None,
            sockets: SocketModel::PerInterface,
        }
    }

    fn reorder_window(&self) -> Duration {
        if let Some(w) = self.reorder_window {
            return w;
        }
        if self.immediate {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(2 * self.timeout_ms.max(1) as u64 + 100)
        }
    }
}

/// A captured frame at one point.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Index into [`CaptureSession::points`].
    pub point: usize,
    pub direction: Direction,
    /// Kernel timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire (≥ `frame.len()` when truncated by the snaplen).
    pub orig_len: u32,
    /// The frame, link-layer header first (Ethernet for veth/bridge/vxlan devices).
    pub frame: Vec<u8>,
}

/// What a session reports, in timestamp order for packets.
#[derive(Clone, Debug)]
pub enum Event {
    Packet(Observation),
    /// The interface went down or disappeared; the point stops, capture goes on elsewhere.
    PointLost {
        point: usize,
        reason: String,
    },
}

/// Counters of one capture point (both directions).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PointStats {
    pub name: String,
    /// Packets delivered to the consumer, per direction.
    pub captured_in: u64,
    pub captured_out: u64,
    /// Packets that passed the kernel filter (`ps_recv`, includes dropped ones).
    pub kernel_received: u64,
    /// Packets the kernel dropped because the ring was full (`ps_drop`).
    pub kernel_dropped: u64,
    /// Packets dropped by the interface/driver (`ps_ifdrop`).
    pub if_dropped: u64,
    /// Tunnel packets the kernel let through whose inner packet did not match the filter
    /// (discarded in userspace; see [`crate::filter`]).
    pub tunnel_discarded: u64,
    /// Set when the point was lost mid-capture.
    pub lost: Option<String>,
}

impl PointStats {
    pub fn captured(&self) -> u64 {
        self.captured_in + self.captured_out
    }
}

/// Errors starting a capture; each names the bad point or filter.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("nothing to capture: no capture points")]
    NoPoints,
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("no interface {ifname:?} in network namespace {netns:?}")]
    NoSuchInterface { netns: String, ifname: String },
    #[error("bad capture filter {filter:?} (on {point}): {message}")]
    Filter {
        filter: String,
        point: String,
        message: String,
    },
    #[error("permission denied capturing on {point}: {message} (needs CAP_NET_RAW)")]
    Permission { point: String, message: String },
    #[error("cannot capture on {point}: {message}")]
    Open { point: String, message: String },
    #[error("capture thread: {0}")]
    Thread(String),
}

/// Stops a running session from anywhere (a signal handler flag, another thread).
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// The flag itself, e.g. for `signal_hook::flag::register`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

#[derive(Debug, Default)]
struct Counters {
    captured_in: AtomicU64,
    captured_out: AtomicU64,
    kernel_received: AtomicU64,
    kernel_dropped: AtomicU64,
    if_dropped: AtomicU64,
    tunnel_discarded: AtomicU64,
    lost: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Shared {
    stop: Arc<AtomicBool>,
    counters: Vec<Counters>,
    names: Vec<String>,
}

impl Shared {
    fn snapshot(&self) -> Vec<PointStats> {
        self.counters
            .iter()
            .zip(&self.names)
            .map(|(c, name)| PointStats {
                name: name.clone(),
                captured_in: c.captured_in.load(Ordering::Relaxed),
                captured_out: c.captured_out.load(Ordering::Relaxed),
                kernel_received: c.kernel_received.load(Ordering::Relaxed),
                kernel_dropped: c.kernel_dropped.load(Ordering::Relaxed),
                if_dropped: c.if_dropped.load(Ordering::Relaxed),
                tunnel_discarded: c.tunnel_discarded.load(Ordering::Relaxed),
                lost: c.lost.lock().map(|l| l.clone()).unwrap_or(None),
            })
            .collect()
    }
}

/// A point as opened: the configuration plus what the handle reported.
#[derive(Clone, Debug)]
pub struct OpenPoint {
    pub point: CapturePoint,
    /// LINKTYPE of the frames (1 = Ethernet, 101 = raw IP), as pcapng files name it.
    pub linktype: u32,
    pub snaplen: u32,
}

impl OpenPoint {
    /// The pcapng interface block for this point.
    pub fn interface_info(&self) -> InterfaceInfo {
        InterfaceInfo {
            name: self.point.name(),
            description: self.point.description(),
            linktype: self.linktype,
            snaplen: self.snaplen,
        }
    }
}

/// Where a handle's frames come from.
enum Source {
    /// A libpcap handle on one point, one direction.
    Pcap {
        cap: Capture<Active>,
        point: usize,
        dir: Direction,
    },
    /// A namespace's packet socket, covering the points in its ifindex map.
    Ns(NsSocket),
}

struct Handle {
    src: Source,
    /// The userspace half of a through-tunnels match, where one is needed.
    tunnel: TunnelCheck,
    alive: bool,
    /// (received, dropped, interface-dropped) as last read.
    last_stats: (u64, u64, u64),
}

impl Handle {
    fn fd(&self) -> BorrowedFd<'_> {
        match &self.src {
            Source::Pcap { cap, .. } => cap.as_fd(),
            Source::Ns(s) => s.as_fd(),
        }
    }

    fn covers(&self, point: usize) -> bool {
        match &self.src {
            Source::Pcap { point: p, .. } => *p == point,
            Source::Ns(s) => s.points.values().any(|p| *p == point),
        }
    }

    /// The point this handle's kernel counters are reported on: a namespace socket's drops
    /// cannot be told apart by interface, so they count on its first point.
    fn counted_on(&self) -> Option<usize> {
        match &self.src {
            Source::Pcap { point, .. } => Some(*point),
            Source::Ns(s) => s.points.values().min().copied(),
        }
    }
}

/// A running capture. Receive events with [`CaptureSession::recv`] until it returns `None`
/// (stopped by duration, count or [`StopHandle`]), then call [`CaptureSession::join`] for the
/// final counters.
#[derive(Debug)]
pub struct CaptureSession {
    points: Vec<OpenPoint>,
    rx: Receiver<Event>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    started_ns: u64,
}

impl CaptureSession {
    /// Opens every handle (inside its namespace) and starts the reader. All errors — missing
    /// interface, bad filter, permission — happen here, before any packet is captured.
    pub fn start(config: CaptureConfig) -> Result<CaptureSession, CaptureError> {
        Self::start_with_stop(config, Arc::new(AtomicBool::new(false)))
    }

    /// Like [`start`](Self::start) with a caller-owned stop flag (e.g. set by SIGINT).
    pub fn start_with_stop(
        config: CaptureConfig,
        stop: Arc<AtomicBool>,
    ) -> Result<CaptureSession, CaptureError> {
        if config.points.is_empty() {
            return Err(CaptureError::NoPoints);
        }
        let mut handles = Vec::new();
        let mut opened = Vec::new();
        // One namespace thread per distinct namespace, opening all its handles.
        let mut groups: Vec<(Netns, Vec<usize>)> = Vec::new();
        for (i, p) in config.points.iter().enumerate() {
            match groups.iter_mut().find(|(ns, _)| *ns == p.netns) {
                Some((_, v)) => v.push(i),
                None => groups.push((p.netns.clone(), vec![i])),
            }
        }
        let mut linktypes = vec![1u32; config.points.len()];
        // A namespace socket's program, compiled once for all of them.
        let ns_program = match config.sockets {
            SocketModel::PerInterface => None,
            SocketModel::PerNamespace => Some(
                nssock::program(
                    config.filter.as_deref(),
                    config.snaplen.max(0) as u32,
                    &config.semantics,
                )
                .map_err(|message| CaptureError::Filter {
                    filter: config.filter.clone().unwrap_or_default(),
                    point: config.points[0].name(),
                    message,
                })?,
            ),
        };
        // Namespaces are opened in parallel (each on its own namespace thread): opening and
        // filtering two handles per point dominates the start-up time of a wide capture.
        let results: Vec<Result<Vec<OpenedHandle>, CaptureError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = groups
                .iter()
                .map(|(ns, idxs)| {
                    let config = &config;
                    let ns_program = ns_program.as_ref();
                    scope.spawn(move || {
                        ns.run(|| -> Result<Vec<OpenedHandle>, CaptureError> {
                            match ns_program {
                                None => open_point_handles(config, idxs),
                                Some(prog) => open_ns_socket(config, idxs, prog).map(|h| vec![h]),
                            }
                        })?
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(CaptureError::Thread(
                            "opening capture handles panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        for got in results {
            for (src, tunnel, types) in got? {
                for (i, t) in types {
                    linktypes[i] = t;
                }
                handles.push(Handle {
                    src,
                    tunnel,
                    alive: true,
                    last_stats: (0, 0, 0),
                });
            }
        }
        for (i, p) in config.points.iter().enumerate() {
            opened.push(OpenPoint {
                point: p.clone(),
                linktype: linktypes[i],
                snaplen: config.snaplen as u32,
            });
        }
        let shared = Arc::new(Shared {
            stop,
            counters: config.points.iter().map(|_| Counters::default()).collect(),
            names: config.points.iter().map(|p| p.name()).collect(),
        });
        let (tx, rx) = mpsc::sync_channel(config.queue_packets.max(1));
        let started_ns = now_ns();
        let reader = Reader {
            handles,
            tx,
            shared: shared.clone(),
            window_ns: config.reorder_window().as_nanos() as u64,
            reorder_max_bytes: config.reorder_max_bytes,
            deadline: config.duration.map(|d| Instant::now() + d),
            max_packets: config.max_packets,
            timeout_ms: config.timeout_ms,
            immediate: config.immediate,
            heap: BinaryHeap::new(),
            heap_bytes: 0,
            seq: 0,
            emitted: 0,
            buf: if config.sockets == SocketModel::PerNamespace {
                vec![0; config.snaplen.max(1) as usize]
            } else {
                Vec::new()
            },
            ns_seen: vec![0; config.points.len()],
            unattributed: 0,
            linktypes: linktypes.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("dye-capture".into())
            .spawn(move || reader.run())
            .map_err(|e| CaptureError::Thread(e.to_string()))?;
        Ok(CaptureSession {
            points: opened,
            rx,
            shared,
            thread: Some(thread),
            started_ns,
        })
    }

    /// The points, in the order of the config; [`Observation::point`] indexes this.
    pub fn points(&self) -> &[OpenPoint] {
        &self.points
    }

    /// Wall-clock start of the capture, nanoseconds since the epoch.
    pub fn started_ns(&self) -> u64 {
        self.started_ns
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.shared.stop.clone())
    }

    /// Asks the reader to stop; events already captured still arrive, then `recv` ends.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// Next event; `None` once the capture has ended and everything was delivered.
    pub fn recv(&self) -> Option<Event> {
        self.rx.recv().ok()
    }

    /// Next event or `Ok(None)` after `timeout`; `Err(())` once the capture has ended.
    #[allow(clippy::result_unit_err)]
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>, ()> {
        match self.rx.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(()),
        }
    }

    /// Live counters (updated by the reader a few times a second).
    pub fn stats(&self) -> Vec<PointStats> {
        self.shared.snapshot()
    }

    /// Stops (if still running), discards undelivered events, waits for the reader and
    /// returns the final counters.
    pub fn join(mut self) -> Result<Vec<PointStats>, CaptureError> {
        self.stop();
        while self.rx.recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| CaptureError::Thread("capture reader panicked".into()))?;
        }
        Ok(self.shared.snapshot())
    }
}

impl Drop for CaptureSession {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // Unblock a reader waiting on a full channel by draining it.
            while self.rx.recv().is_ok() {}
            let _ = t.join();
        }
    }
}

fn open_handle(
    config: &CaptureConfig,
    p: &CapturePoint,
    dir: Direction,
) -> Result<(Capture<Active>, Option<TunnelMatcher>), CaptureError> {
    let point = p.name();
    let classify = |e: pcap::Error| {
        let message = e.to_string();
        if message.contains("ermission") || message.contains("EPERM") {
            CaptureError::Permission {
                point: point.clone(),
                message,
            }
        } else if message.contains("No such device") {
            CaptureError::NoSuchInterface {
                netns: p.netns.name().to_string(),
                ifname: p.ifname.clone(),
            }
        } else {
            CaptureError::Open {
                point: point.clone(),
                message,
            }
        }
    };
    let mut cap = Capture::from_device(p.ifname.as_str())
        .map_err(classify)?
        .snaplen(config.snaplen)
        .buffer_size(config.buffer_bytes)
        .timeout(config.timeout_ms)
        .immediate_mode(config.immediate)
        .promisc(config.promisc)
        .precision(Precision::Nano)
        .open()
        .map_err(classify)?;
    let qualifier = match dir {
        Direction::In => "inbound",
        Direction::Out => "outbound",
    };
    let user = config
        .filter
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    let bad_filter = |f: &str, e: pcap::Error| CaptureError::Filter {
        filter: f.to_string(),
        point: point.clone(),
        message: e.to_string(),
    };
    // 0. Through tunnels: the user's filter compiled for the packet and for inner frames, to be
    //    joined into the kernel filter below and run again in userspace (see `crate::filter`).
    let tunnel = match (&config.semantics, user) {
        (Semantics::ThroughTunnels(ports), Some(f)) => Some(
            TunnelMatcher::new(f, cap.get_datalink().0, ports.clone())
                .map_err(|e| bad_filter(f, e))?,
        ),
        _ => None,
    };
    let kernel = user.map(|f| config.semantics.kernel_expression(f));
    // 1. The kernel's filter through libpcap (checks the syntax, and is what libpcap applies in
    //    userland to the first ring block, which may predate the kernel filter).
    if let Some(f) = kernel.as_deref() {
        cap.filter(f, true).map_err(|e| bad_filter(f, e))?;
    }
    // 2. Direction checked by libpcap on every ring frame from its packet type (exact).
    cap.direction(match dir {
        Direction::In => pcap::Direction::In,
        Direction::Out => pcap::Direction::Out,
    })
    .map_err(classify)?;
    // 3. Direction also in the kernel filter, so the other direction never enters this ring.
    //    `inbound`/`outbound` compile to SKF_AD_PKTTYPE loads, which only the kernel evaluates
    //    (libpcap's userland interpreter rejects them), hence attached here rather than through
    //    pcap_setfilter. Only for Ethernet-framed and raw-IP devices (TUN, ARPHRD_NONE), whose
    //    programs need no rewriting (cooked captures' offsets are libpcap's to fix up).
    let dlt = cap.get_datalink().0;
    if dlt == DLT_EN10MB || dlt == DLT_RAW {
        let program = match (&tunnel, user) {
            // Through tunnels: direction, FILTER, and FILTER on the inner frame, all in the
            // kernel; the plain expression when that program cannot be built.
            (Some(t), Some(f)) => match through_tunnels_program(&cap, t, f, qualifier) {
                Ok(insns) => Some(insns),
                Err(e) => {
                    tracing::debug!("{point}: tunnel packets filtered in userspace: {e}");
                    compiled(&cap, kernel.as_deref(), qualifier)
                }
            },
            _ => compiled(&cap, kernel.as_deref(), qualifier),
        };
        if let Some(insns) = program {
            if let Err(e) = filter::attach(cap.as_fd(), &insns) {
                tracing::debug!("{point}: kernel filter not attached: {e}");
            }
        }
    }
    let cap = cap.setnonblock().map_err(classify)?;
    // The userspace check backs the kernel up (packets that predate its filter, the fallback),
    // unless FILTER reads ancillary data only a socket filter has: then the kernel decides.
    Ok((cap, tunnel.filter(TunnelMatcher::runs_in_userspace)))
}

const DLT_EN10MB: i32 = 1;
/// libpcap's DLT for raw IP on Linux (12; 14 on OpenBSD); LINKTYPE_RAW (101) in files.
const DLT_RAW: i32 = 12;
const DLT_RAW_OPENBSD: i32 = 14;
const LINKTYPE_RAW: u32 = 101;

/// The LINKTYPE a capture file records for a live handle's DLT: they differ for raw IP, whose
/// DLT is platform-specific (what libpcap's `dlt_to_linktype` does when it writes a file).
pub fn linktype_of_dlt(dlt: i32) -> u32 {
    match dlt {
        DLT_RAW | DLT_RAW_OPENBSD => LINKTYPE_RAW,
        other => u32::try_from(other).unwrap_or(0),
    }
}

/// libpcap's program for `(kernel) and qualifier` (or the qualifier alone) on this handle.
fn compiled(cap: &Capture<Active>, kernel: Option<&str>, qualifier: &str) -> Option<Vec<Insn>> {
    let expr = match kernel {
        Some(f) => format!("({f}) and {qualifier}"),
        None => qualifier.to_string(),
    };
    match cap.compile(&expr, true).map(|p| filter::insns(&p)) {
        Ok(Ok(insns)) => Some(insns),
        Ok(Err(e)) => {
            tracing::debug!("{expr:?}: {e}; direction in userland");
            None
        }
        Err(e) => {
            tracing::debug!("{expr:?} not compiled ({e}); direction in userland");
            None
        }
    }
}

/// The through-tunnels socket filter for this handle (see [`crate::filter`]).
fn through_tunnels_program(
    cap: &Capture<Active>,
    tunnel: &TunnelMatcher,
    user: &str,
    qualifier: &str,
) -> Result<Vec<Insn>, String> {
    let direction = cap.compile(qualifier, true).map_err(|e| e.to_string())?;
    let outer = cap.compile(user, true).map_err(|e| e.to_string())?;
    tunnel
        .kernel_program(Some(&direction), &outer)
        .map_err(|e| e.to_string())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct Pending {
    ts: u64,
    seq: u64,
    obs: Observation,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // Reversed: BinaryHeap is a max-heap, we want the oldest first.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.ts, o.seq).cmp(&(self.ts, self.seq))
    }
}

struct Reader {
    handles: Vec<Handle>,
    tx: SyncSender<Event>,
    shared: Arc<Shared>,
    window_ns: u64,
    reorder_max_bytes: usize,
    deadline: Option<Instant>,
    max_packets: Option<u64>,
    timeout_ms: i32,
    immediate: bool,
    heap: BinaryHeap<Pending>,
    heap_bytes: usize,
    seq: u64,
    emitted: u64,
    /// Receive buffer of the namespace sockets (one frame at a time, snaplen bytes).
    buf: Vec<u8>,
    /// Frames each point's namespace socket delivered.
    ns_seen: Vec<u64>,
    /// Frames of namespace sockets on interfaces that are not capture points.
    unattributed: u64,
    /// Each point's LINKTYPE (which of a handle's tunnel checks applies to its frames).
    linktypes: Vec<u32>,
}

/// A handle as opened, with the link type of each point it covers.
type OpenedHandle = (Source, TunnelCheck, Vec<(usize, u32)>);

/// The userspace half of a through-tunnels match ([`crate::filter`]): libpcap's programs for
/// the filter, per link type of the frames a handle delivers. Empty when the kernel decides
/// alone.
#[derive(Default)]
struct TunnelCheck {
    ethernet: Option<TunnelMatcher>,
    raw_ip: Option<TunnelMatcher>,
}

impl TunnelCheck {
    /// The check of a handle whose frames all have `linktype`.
    fn single(linktype: u32, matcher: Option<TunnelMatcher>) -> TunnelCheck {
        if linktype == LINKTYPE_RAW {
            TunnelCheck {
                ethernet: None,
                raw_ip: matcher,
            }
        } else {
            TunnelCheck {
                ethernet: matcher,
                raw_ip: None,
            }
        }
    }

    /// Whether a frame of `linktype` is kept: it or the packet its tunnel carries matches.
    fn keeps(&self, linktype: u32, frame: &[u8]) -> bool {
        let matcher = if linktype == LINKTYPE_RAW {
            &self.raw_ip
        } else {
            &self.ethernet
        };
        matcher.as_ref().is_none_or(|m| m.matches(frame).is_some())
    }
}

/// Two libpcap handles (in, out) for each of the points `idxs`; runs inside their namespace.
fn open_point_handles(
    config: &CaptureConfig,
    idxs: &[usize],
) -> Result<Vec<OpenedHandle>, CaptureError> {
    let mut out = Vec::new();
    for &i in idxs {
        let p = &config.points[i];
        if nix::net::if_::if_nametoindex(p.ifname.as_str()).is_err() {
            return Err(CaptureError::NoSuchInterface {
                netns: p.netns.name().to_string(),
                ifname: p.ifname.clone(),
            });
        }
        for dir in [Direction::In, Direction::Out] {
            let (cap, tunnel) = open_handle(config, p, dir)?;
            let linktype = linktype_of_dlt(cap.get_datalink().0);
            out.push((
                Source::Pcap { cap, point: i, dir },
                TunnelCheck::single(linktype, tunnel),
                vec![(i, linktype)],
            ));
        }
    }
    Ok(out)
}

/// One packet socket for the points `idxs`, all in the calling thread's namespace.
fn open_ns_socket(
    config: &CaptureConfig,
    idxs: &[usize],
    prog: &nssock::NsProgram,
) -> Result<OpenedHandle, CaptureError> {
    let first = &config.points[idxs[0]];
    let open_err = |message: String| CaptureError::Open {
        point: format!("{}/*", first.netns.name()),
        message,
    };
    // One ring carries every interface of the namespace: at least 1 MiB (64 slots).
    let mut sock =
        NsSocket::open(&prog.insns, config.buffer_bytes.max(1 << 20)).map_err(|e| match e {
            nssock::NsSocketError::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                CaptureError::Permission {
                    point: format!("{}/*", first.netns.name()),
                    message: io.to_string(),
                }
            }
            e => open_err(e.to_string()),
        })?;
    let mut types = Vec::new();
    for &i in idxs {
        let p = &config.points[i];
        let no_such = || CaptureError::NoSuchInterface {
            netns: p.netns.name().to_string(),
            ifname: p.ifname.clone(),
        };
        let ifindex = nix::net::if_::if_nametoindex(p.ifname.as_str()).map_err(|_| no_such())?;
        let hatype = sock.hatype(&p.ifname).map_err(|_| no_such())?;
        // A device the program refuses (loopback…) keeps Ethernet's type and sees nothing.
        types.push((i, nssock::linktype_of(hatype).unwrap_or(1)));
        sock.points.insert(ifindex, i);
    }
    // When the kernel could not look inside tunnels itself, it passes every tunnel packet and
    // libpcap's programs decide here, per link type.
    let tunnel = match (
        &config.semantics,
        config.filter.as_deref(),
        prog.inner_in_userspace,
    ) {
        (Semantics::ThroughTunnels(ports), Some(f), true) => {
            let matcher = |dlt: i32| {
                TunnelMatcher::new(f, dlt, ports.clone())
                    .ok()
                    .filter(TunnelMatcher::runs_in_userspace)
            };
            TunnelCheck {
                ethernet: matcher(DLT_EN10MB),
                raw_ip: matcher(DLT_RAW),
            }
        }
        _ => TunnelCheck::default(),
    };
    Ok((Source::Ns(sock), tunnel, types))
}

/// Closes capture handles concurrently. Closing a packet socket waits for an RCU grace period
/// (`synchronize_net` in the kernel); one after another, dozens of handles took a second, while
/// concurrent closes share grace periods.
fn close_all(handles: Vec<Handle>) {
    std::thread::scope(|scope| {
        for h in handles {
            scope.spawn(move || drop(h));
        }
    });
}

/// Packets read from one handle per wake-up before moving on (fairness between points).
const BATCH: usize = 4096;
const STATS_EVERY: Duration = Duration::from_millis(250);

impl Reader {
    fn run(mut self) {
        let mut last_stats = Instant::now();
        let mut ready = vec![false; self.handles.len()];
        let mut errs = vec![false; self.handles.len()];
        'outer: loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            {
                let live: Vec<usize> = (0..self.handles.len())
                    .filter(|&i| self.handles[i].alive)
                    .collect();
                let mut fds: Vec<PollFd<'_>> = live
                    .iter()
                    .map(|&i| PollFd::new(self.handles[i].fd(), PollFlags::POLLIN))
                    .collect();
                let timeout = if self.heap.is_empty() { 100u16 } else { 20u16 };
                if live.is_empty() {
                    std::thread::sleep(Duration::from_millis(timeout as u64));
                } else if let Err(e) = poll(&mut fds, timeout) {
                    if e != nix::errno::Errno::EINTR {
                        tracing::warn!("capture poll: {e}");
                    }
                }
                ready.iter_mut().for_each(|r| *r = false);
                errs.iter_mut().for_each(|r| *r = false);
                for (k, &i) in live.iter().enumerate() {
                    let rev = fds[k].revents().unwrap_or(PollFlags::empty());
                    ready[i] = rev.contains(PollFlags::POLLIN);
                    errs[i] = rev
                        .intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL);
                }
            }
            for i in 0..self.handles.len() {
                if errs[i] {
                    self.check_error(i);
                }
                if ready[i] && self.handles[i].alive {
                    self.drain(i, BATCH);
                }
            }
            if last_stats.elapsed() >= STATS_EVERY {
                self.update_stats();
                last_stats = Instant::now();
            }
            if !self.emit(now_ns().saturating_sub(self.window_ns)) {
                break 'outer;
            }
        }
        let count_reached = self.max_packets.is_some_and(|m| self.emitted >= m);
        if !count_reached {
            // Packets still sitting in a not-yet-retired ring block come out after one block
            // timeout; then read everything that is left.
            if !self.immediate {
                std::thread::sleep(Duration::from_millis(self.timeout_ms.max(1) as u64 + 20));
            }
            // Only handles with something to read: reading an idle handle blocks for its read
            // timeout, which over dozens of handles made stopping take a second.
            while self.drain_ready() {}
            self.emit(u64::MAX);
        }
        self.update_stats();
        if self.unattributed > 0 {
            tracing::debug!(
                "{} frames on interfaces that are not capture points",
                self.unattributed
            );
        }
        self.heap.clear();
        close_all(std::mem::take(&mut self.handles));
    }

    /// Drains every handle that a zero-timeout poll reports readable; false when none was.
    fn drain_ready(&mut self) -> bool {
        let live: Vec<usize> = (0..self.handles.len())
            .filter(|&i| self.handles[i].alive)
            .collect();
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd<'_>> = live
                .iter()
                .map(|&i| PollFd::new(self.handles[i].fd(), PollFlags::POLLIN))
                .collect();
            if poll(&mut fds, 0u16).is_err() {
                return false;
            }
            live.iter()
                .zip(&fds)
                .filter(|(_, fd)| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                .map(|(&i, _)| i)
                .collect()
        };
        for &i in &ready {
            self.drain(i, usize::MAX);
        }
        !ready.is_empty()
    }

    /// Reads up to `max` packets from handle `i` into the reorder buffer.
    fn drain(&mut self, i: usize, max: usize) {
        if matches!(self.handles[i].src, Source::Ns(_)) {
            return self.drain_ns(i, max);
        }
        let mut n = 0;
        while n < max {
            let h = &mut self.handles[i];
            let Source::Pcap {
                cap, point, dir, ..
            } = &mut h.src
            else {
                return;
            };
            let (point, dir) = (*point, *dir);
            match cap.next_packet() {
                Ok(pkt) => {
                    if !h.tunnel.keeps(self.linktypes[point], pkt.data) {
                        // A tunnel packet the kernel let through for a look inside: nothing
                        // in it matches.
                        self.shared.counters[point]
                            .tunnel_discarded
                            .fetch_add(1, Ordering::Relaxed);
                        n += 1;
                        continue;
                    }
                    let ts =
                        pkt.header.ts.tv_sec as u64 * 1_000_000_000 + pkt.header.ts.tv_usec as u64;
                    let obs = Observation {
                        point,
                        direction: dir,
                        ts_ns: ts,
                        orig_len: pkt.header.len,
                        frame: pkt.data.to_vec(),
                    };
                    n += 1;
                    if !self.buffer(obs) {
                        return;
                    }
                }
                Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => break,
                Err(e) => {
                    self.lose(i, e.to_string());
                    break;
                }
            }
        }
    }

    /// Puts a frame in the reorder buffer; false when the consumer is gone.
    fn buffer(&mut self, obs: Observation) -> bool {
        self.heap_bytes += obs.frame.len();
        self.seq += 1;
        self.heap.push(Pending {
            ts: obs.ts_ns,
            seq: self.seq,
            obs,
        });
        // Bounded memory: release the oldest now rather than grow.
        self.heap_bytes <= self.reorder_max_bytes || self.emit(0)
    }

    /// Reads up to `max` frames from namespace socket `i`; frames of interfaces that are not
    /// capture points (created after the start, or left out) are counted and dropped.
    fn drain_ns(&mut self, i: usize, max: usize) {
        let mut n = 0;
        while n < max {
            let read = {
                let Source::Ns(sock) = &mut self.handles[i].src else {
                    return;
                };
                sock.recv(&mut self.buf)
                    .map(|r| r.map(|r| (sock.points.get(&r.ifindex).copied(), r)))
            };
            let (point, got) = match read {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    self.lose(i, format!("capture socket error: {e}"));
                    break;
                }
            };
            n += 1;
            let Some(point) = point else {
                self.unattributed += 1;
                continue;
            };
            let frame = &self.buf[..got.len];
            if !self.handles[i].tunnel.keeps(self.linktypes[point], frame) {
                self.shared.counters[point]
                    .tunnel_discarded
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.ns_seen[point] += 1;
            let obs = Observation {
                point,
                direction: got.direction,
                ts_ns: got.ts_ns,
                orig_len: got.orig_len,
                frame: self.buf[..got.len].to_vec(),
            };
            if !self.buffer(obs) {
                return;
            }
        }
    }

    fn check_error(&mut self, i: usize) {
        let err = nix::sys::socket::getsockopt(
            &self.handles[i].fd(),
            nix::sys::socket::sockopt::SocketError,
        );
        match err {
            Ok(0) => {}
            Ok(code) => {
                let e = nix::errno::Errno::from_raw(code);
                let reason = if e == nix::errno::Errno::ENETDOWN {
                    "interface went down or disappeared".to_string()
                } else {
                    format!("capture socket error: {e}")
                };
                // Read what is still in the ring before giving up on it.
                self.drain(i, usize::MAX);
                self.lose(i, reason);
            }
            Err(e) => self.lose(i, format!("capture socket error: {e}")),
        }
    }

    fn lose(&mut self, i: usize, reason: String) {
        if !self.handles[i].alive {
            return;
        }
        self.read_stats(i);
        self.handles[i].alive = false;
        let covered: Vec<usize> = (0..self.shared.counters.len())
            .filter(|&p| self.handles[i].covers(p))
            .collect();
        for point in covered {
            let all_gone = self
                .handles
                .iter()
                .filter(|h| h.covers(point))
                .all(|h| !h.alive);
            if all_gone {
                if let Ok(mut l) = self.shared.counters[point].lost.lock() {
                    *l = Some(reason.clone());
                }
                tracing::warn!("capture point {} lost: {reason}", self.shared.names[point]);
                let _ = self.tx.send(Event::PointLost {
                    point,
                    reason: reason.clone(),
                });
            }
        }
    }

    fn read_stats(&mut self, i: usize) {
        let h = &mut self.handles[i];
        if !h.alive {
            return;
        }
        match &mut h.src {
            Source::Pcap { cap, .. } => {
                if let Ok(s) = cap.stats() {
                    h.last_stats = (s.received as u64, s.dropped as u64, s.if_dropped as u64);
                }
            }
            Source::Ns(sock) => {
                sock.read_stats();
                h.last_stats = (sock.received, sock.dropped, 0);
            }
        }
    }

    fn update_stats(&mut self) {
        for i in 0..self.handles.len() {
            self.read_stats(i);
        }
        for (p, c) in self.shared.counters.iter().enumerate() {
            // A namespace socket's frames are counted per interface as they are read.
            let (mut r, mut d, mut f) = (self.ns_seen[p], 0, 0);
            for h in self.handles.iter().filter(|h| h.counted_on() == Some(p)) {
                if matches!(h.src, Source::Pcap { .. }) {
                    r += h.last_stats.0;
                }
                d += h.last_stats.1;
                f += h.last_stats.2;
            }
            c.kernel_received.store(r, Ordering::Relaxed);
            c.kernel_dropped.store(d, Ordering::Relaxed);
            c.if_dropped.store(f, Ordering::Relaxed);
        }
    }

    /// Sends every buffered packet with a timestamp ≤ `watermark` (and the oldest ones while
    /// over the byte bound). Returns false when the consumer is gone or the count is reached.
    fn emit(&mut self, watermark: u64) -> bool {
        while let Some(top) = self.heap.peek() {
            if top.ts > watermark && self.heap_bytes <= self.reorder_max_bytes {
                break;
            }
            let Some(p) = self.heap.pop() else { break };
            self.heap_bytes -= p.obs.frame.len();
            let c = &self.shared.counters[p.obs.point];
            match p.obs.direction {
                Direction::In => c.captured_in.fetch_add(1, Ordering::Relaxed),
                Direction::Out => c.captured_out.fetch_add(1, Ordering::Relaxed),
            };
            if self.tx.send(Event::Packet(p.obs)).is_err() {
                self.shared.stop.store(true, Ordering::SeqCst);
                return false;
            }
            self.emitted += 1;
            if self.max_packets.is_some_and(|m| self.emitted >= m) {
                self.shared.stop.store(true, Ordering::SeqCst);
                return false;
            }
        }
        true
    }
}
