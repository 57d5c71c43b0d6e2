//! `dye capture`: tcpdump's job across namespaces, into one pcapng a vendor can open.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use dye_capture::filter::{Semantics, TunnelPorts};
use dye_capture::netlink::LinkKind;
use dye_capture::netns::{self, Netns};
use dye_capture::select::InterfaceSelector;
use dye_capture::{
    CaptureConfig, CapturePoint, CaptureSession, Event, PcapngWriter, PointStats, SectionInfo,
    Topology,
};

use super::EXIT_OK;

#[derive(Debug, Args)]
#[command(after_help = "\
Captures on many interfaces in many network namespaces at once and writes one merged,
time-ordered pcapng: one interface per capture point, named <netns>/<ifname> and described
with its kind, MTU, namespace and node; nanosecond timestamps; inbound/outbound flags;
kernel drop counters in interface statistics blocks. Opens in Wireshark, tshark, capinfos.

Capture points: every interface that is up (loopback excluded) in each selected namespace,
or only those named with -i. -i NAME takes NAME in every selected namespace that has it;
-i NETNS/NAME takes exactly that one (and selects NETNS). Without --ns/--all-ns/-i NETNS/...:
the current namespace, like tcpdump.

NETNS is a name under /run/netns (patterns like 'dye-demo-*' allowed, quote them), a path,
pid:PID, host, or a pod: pod:NAMESPACE/NAME (pod:NAME in namespace default), resolved through
the container runtime (--runtime-endpoint); -i pod:NAMESPACE/NAME/eth0 takes the pod's eth0. FILTER is a pcap filter expression (as for tcpdump), compiled per point
and run in the kernel, so traffic it rejects never reaches dye.

Filters see through tunnels (as Wireshark's display filters do): FILTER matches a packet, or
the packet inside VXLAN, Geneve or flannel's udp backend (IP in UDP) — so `icmp` also keeps
the VXLAN packets on the underlay that carry ICMP. Tunnel ports: VXLAN 4789 and 8472 plus the
dstport of every VXLAN device in the selected namespaces, Geneve 6081 (plus devices' ports),
IP-in-UDP 8285; one tunnel level. It all runs in the kernel: libpcap's own program for FILTER,
compiled for the inner frame (Ethernet or raw IP) and relocated to where that frame starts,
so the semantics are libpcap's and tunnel traffic that does not match never reaches dye.
--outer matches the outer headers only, as tcpdump does.

Stops on Ctrl-C / SIGTERM (the file is still complete), --duration, --count or --max-size.
A per-point packet count is shown on stderr while capturing (when stderr is a terminal); a
summary with captured and kernel-dropped packets per point is always printed at the end.
Interfaces that disappear mid-capture are reported; capture goes on at the other points.

Examples:
  dye capture --ns 'dye-demo-*' -w lab.pcapng icmp --duration 10s
  dye capture --ns dye-demo-node-1 -i eth0 -i flannel.1 -w overlay.pcapng 'udp port 8472'
  dye capture -i dye-demo-pod-a/eth0 -i dye-demo-pod-c/eth0 -w pods.pcapng -c 100
  dye capture --all-ns -w everything.pcapng --max-size 100M --duration 1m
  dye capture --agents 192.168.50.11:7443,192.168.50.12:7443 --certs certs/ \
      --ns 'dye-demo-pod-*' -w pods.pcapng icmp --duration 10s

With --agents, every agent captures on its own node's points that --ns and -i select (all of
them, loopback excepted, without either), runs FILTER in its kernel and streams the frames
back; they go into one pcapng whose interfaces are named <node>/<netns>/<ifname>, timestamps
moved onto this machine's clock (an RPC clock exchange with each agent). Agents bound a
capture's length (2 minutes by default): --duration defaults to that bound. An agent that
cannot be reached or stops answering is named blind (exit 1); the others' frames are kept.")]
pub struct CaptureArgs {
    /// Namespace to capture in (repeatable; patterns allowed).
    #[arg(long = "ns", value_name = "NETNS")]
    pub(super) ns: Vec<String>,
    /// Every network namespace on the host (named ones and those of processes).
    #[arg(long)]
    pub(super) all_ns: bool,
    /// Interface to capture on: NAME (in every selected namespace that has it) or NETNS/NAME.
    /// Repeatable. Default: every interface that is up, except loopback.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub(super) interfaces: Vec<String>,
    /// Output file (pcapng); `-` writes to stdout.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub(super) write: PathBuf,
    /// Stop after this long: 30s, 500ms, 5m, 1h (a bare number is seconds).
    #[arg(long, value_name = "D", value_parser = super::args::parse_positive_duration)]
    pub(super) duration: Option<Duration>,
    /// Stop after this many packets (over all points).
    #[arg(short = 'c', long, value_name = "N")]
    pub(super) count: Option<u64>,
    /// Stop before the file grows past this size: 10M, 1G, 500k (a bare number is bytes).
    #[arg(long, value_name = "S", value_parser = parse_size)]
    pub(super) max_size: Option<u64>,
    /// Kernel ring per point and direction (two per point, so 2 MiB per point by default:
    /// tcpdump's default for one interface).
    #[arg(long, value_name = "S", value_parser = parse_size, default_value = "1M")]
    pub(super) buffer_size: u64,
    /// Bytes kept of each frame.
    #[arg(short = 's', long, value_name = "N", default_value_t = 262_144)]
    pub(super) snaplen: i32,
    /// Deliver every packet at once (TPACKET_V2) instead of in ring blocks every 50 ms;
    /// costs more CPU under load.
    #[arg(long)]
    pub(super) immediate: bool,
    /// Do not put interfaces into promiscuous mode.
    #[arg(short = 'p', long)]
    pub(super) no_promisc: bool,
    /// Match FILTER against the outer headers only (tcpdump's semantics): tunnel packets are
    /// kept only if their own headers match, never for what they carry.
    #[arg(long)]
    pub(super) outer: bool,
    /// Capture through the dye agents at these addresses (ADDR:PORT, comma-separated, or one
    /// NAME:PORT resolving to every agent) instead of on this host.
    #[arg(
        long,
        value_name = "ADDR[,ADDR…]",
        conflicts_with_all = ["all_ns", "immediate", "buffer_size", "no_promisc", "snaplen"],
        requires = "agent_security"
    )]
    pub(super) agents: Option<String>,
    /// With --agents: directory with ca.pem, client.pem and client-key.pem (`dye certs`).
    #[arg(
        long,
        value_name = "DIR",
        requires = "agents",
        group = "agent_security"
    )]
    pub(super) certs: Option<PathBuf>,
    /// With --agents: talk to agents without TLS or authentication (agents started with the
    /// same flag). Only for debugging on loopback.
    #[arg(
        long = "insecure-plaintext-for-local-debugging",
        requires = "agents",
        conflicts_with = "certs",
        group = "agent_security"
    )]
    pub(super) insecure: bool,
    /// pcap filter expression, e.g. `icmp or udp port 8472` (several words are joined).
    #[arg(value_name = "FILTER", trailing_var_arg = true)]
    pub(super) filter: Vec<String>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let i = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(i);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?}: expected e.g. 10M, 1G, 500k"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("bad size unit {u:?} in {s:?}: use k, M or G")),
    };
    let v = n * mult;
    if !v.is_finite() || v < 1.0 {
        return Err(format!("size {s:?} must be at least 1 byte"));
    }
    Ok(v as u64)
}

/// Turns the flags into capture points, and the tunnel ports the selected namespaces use;
/// every error names the bad namespace or interface.
fn select_points(args: &CaptureArgs) -> anyhow::Result<(Vec<CapturePoint>, TunnelPorts)> {
    let interfaces = InterfaceSelector::parse(&args.interfaces)?;
    // The namespaces scanned for plain -i names / all interfaces.
    let base: Vec<Netns> = if args.ns.is_empty() && !args.all_ns {
        if interfaces.qualified().next().is_none() || interfaces.has_plain() {
            vec![Netns::current()?]
        } else {
            Vec::new()
        }
    } else {
        netns::select(&args.ns, args.all_ns)?
    };
    let mut namespaces = base.clone();
    let mut qualified_ns = Vec::new();
    for spec in interfaces.qualified() {
        // The namespace part may be a pattern over /run/netns too (`dye-demo-*/eth0`).
        let ns = spec.netns.clone().unwrap_or_default();
        for handle in netns::select(std::slice::from_ref(&ns), false)? {
            if !namespaces.iter().any(|n| n.id() == handle.id()) {
                namespaces.push(handle.clone());
            }
            qualified_ns.push((handle, spec));
        }
    }
    let topo = Topology::discover(&namespaces).context("interface discovery failed")?;
    let ports = TunnelPorts::well_known().with_devices(&topo);
    let mut points = Vec::new();
    let mut add = |ns: &Netns, link: &dye_capture::netlink::Link, node: &str| {
        let p = CapturePoint {
            netns: ns.clone(),
            ifname: link.name.clone(),
            kind: link.kind.kernel_name().to_string(),
            mtu: link.mtu,
            node: node.to_string(),
        };
        if !points
            .iter()
            .any(|q: &CapturePoint| q.netns == p.netns && q.ifname == p.ifname)
        {
            points.push(p);
        }
    };
    for (handle, spec) in &qualified_ns {
        let name = &spec.ifname;
        let info = topo
            .namespaces
            .iter()
            .find(|n| n.id == handle.id())
            .context("namespace vanished during discovery")?;
        let links: Vec<&dye_capture::netlink::Link> = info
            .links
            .iter()
            // The namespace part already chose `handle`: match the interface part.
            .filter(|l| netns::glob_match(name, &l.name))
            .collect();
        if links.is_empty() {
            bail!(
                "no interface {name:?} in network namespace {:?} (it has: {})",
                handle.name(),
                info.links
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for link in links {
            add(&info.netns, link, &info.node);
        }
    }
    let scoped: Vec<&dye_capture::topology::NamespaceInfo> = topo
        .namespaces
        .iter()
        .filter(|n| base.iter().any(|b| b.id() == n.id))
        .collect();
    for spec in interfaces.specs.iter().filter(|s| s.netns.is_none()) {
        let name = &spec.ifname;
        let mut found = false;
        for info in &scoped {
            for link in info
                .links
                .iter()
                .filter(|l| spec.selects(&info.name, &l.name))
            {
                add(&info.netns, link, &info.node);
                found = true;
            }
        }
        if !found {
            bail!(
                "no interface {name:?} in the selected namespace(s): {}",
                scoped
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if args.interfaces.is_empty() {
        for info in &scoped {
            for link in &info.links {
                if link.kind == LinkKind::Loopback {
                    continue;
                }
                if !link.up {
                    tracing::info!("skipping {}/{}: down", info.name, link.name);
                    continue;
                }
                add(&info.netns, link, &info.node);
            }
        }
    }
    if points.is_empty() {
        bail!(
            "no interface to capture on in {} (all down or loopback); name one with -i",
            namespaces
                .iter()
                .map(|n| n.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok((points, ports))
}

pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    if let Some(spec) = &args.agents {
        return super::capture_agents::run(spec, &args);
    }
    let (points, ports) = select_points(&args)?;
    // Open the output before capturing anything, so an unwritable path fails first; without
    // truncating yet, so a bad filter found later does not destroy an existing file.
    let to_stdout = args.write.as_os_str() == "-";
    let existed = !to_stdout && args.write.exists();
    let out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&args.write)
            .with_context(|| format!("cannot write {}", args.write.display()))?;
        Box::new(TruncateOnFirstWrite(Some(f), None))
    };
    let filter = args.filter.join(" ");
    let mut config = CaptureConfig::new(points);
    config.filter = (!filter.trim().is_empty()).then(|| filter.clone());
    config.semantics = if args.outer {
        Semantics::Outer
    } else {
        tracing::debug!("tunnel ports: {:?}", ports.all());
        Semantics::ThroughTunnels(ports)
    };
    config.duration = args.duration;
    config.max_packets = args.count;
    config.snaplen = args.snaplen.clamp(64, 262_144);
    config.buffer_bytes = i32::try_from(args.buffer_size).unwrap_or(i32::MAX);
    config.immediate = args.immediate;
    config.promisc = !args.no_promisc;

    let stop = Arc::new(AtomicBool::new(false));
    let mut sig_ids = Vec::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C while stopping exits at once.
        if let Ok(id) = signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone()) {
            sig_ids.push(id);
        }
        if let Ok(id) = signal_hook::flag::register(sig, stop.clone()) {
            sig_ids.push(id);
        }
    }
    let result = capture(config, stop, out, &args, &filter);
    for id in sig_ids {
        signal_hook::low_level::unregister(id);
    }
    if result.is_err() && !to_stdout && !existed {
        // Nothing useful was written: do not leave an empty or header-only file behind.
        let _ = std::fs::remove_file(&args.write);
    }
    result
}

/// A file that is truncated only when the first byte is written (after the capture started).
struct TruncateOnFirstWrite(Option<File>, Option<File>);

impl Write for TruncateOnFirstWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = self.0.take() {
            f.set_len(0)?;
            self.1 = Some(f);
        }
        match &mut self.1 {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("output closed")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.1 {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

fn capture(
    config: CaptureConfig,
    stop: Arc<AtomicBool>,
    out: Box<dyn Write>,
    args: &CaptureArgs,
    filter: &str,
) -> anyhow::Result<ExitCode> {
    let session = CaptureSession::start_with_stop(config, stop)?;
    let mut section = SectionInfo::for_this_host();
    if !filter.trim().is_empty() {
        section.comment = section
            .comment
            .map(|c| format!("{c}; filter: {} ({})", filter.trim(), semantics_words(args)));
    }
    let mut writer = PcapngWriter::new(BufWriter::with_capacity(256 * 1024, out), &section)?;
    let points = session.points().to_vec();
    for p in &points {
        writer.add_interface(&p.interface_info())?;
    }
    let names: Vec<String> = points.iter().map(|p| p.point.name()).collect();
    let live = std::io::stderr().is_terminal();
    eprintln!(
        "dye: capturing on {} point(s){}{}; Ctrl-C to stop",
        points.len(),
        if filter.trim().is_empty() {
            String::new()
        } else {
            format!(", filter {:?} ({})", filter.trim(), semantics_words(args))
        },
        if args.write.as_os_str() == "-" {
            String::new()
        } else {
            format!(" -> {}", args.write.display())
        }
    );
    let started = Instant::now();
    let mut last_draw = Instant::now();
    let mut drawn_lines = 0usize;
    let mut size_stop = false;
    let mut lost = Vec::new();
    loop {
        match session.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(Event::Packet(o))) => {
                if size_stop {
                    continue;
                }
                // EPB = 32 bytes + padded data + flags option (12) + end of options (4).
                let need = 48 + o.frame.len().div_ceil(4) as u64 * 4;
                if let Some(max) = args.max_size {
                    if writer.bytes_written() + need > max {
                        size_stop = true;
                        session.stop();
                        continue;
                    }
                }
                writer.write_packet(
                    o.point as u32,
                    o.ts_ns,
                    o.orig_len,
                    &o.frame,
                    Some(o.direction),
                    &[],
                )?;
            }
            Ok(Some(Event::PointLost { point, reason })) => {
                let msg = format!("dye: {} lost: {reason}; capture goes on", names[point]);
                if live && drawn_lines > 0 {
                    eprint!("\x1b[{drawn_lines}A\x1b[J");
                    drawn_lines = 0;
                }
                eprintln!("{msg}");
                lost.push(msg);
            }
            Ok(None) => {}
            Err(()) => break,
        }
        if live && last_draw.elapsed() >= Duration::from_millis(500) {
            drawn_lines = draw_live(&session.stats(), started, drawn_lines);
            last_draw = Instant::now();
        }
    }
    if live && drawn_lines > 0 {
        eprint!("\x1b[{drawn_lines}A\x1b[J");
    }
    let elapsed = started.elapsed();
    let start_ns = session.started_ns();
    let stats = session.join()?;
    let end_ns = start_ns + elapsed.as_nanos() as u64;
    for (i, s) in stats.iter().enumerate() {
        writer.write_stats(
            i as u32,
            start_ns,
            end_ns,
            s.kernel_received,
            s.kernel_dropped,
            s.if_dropped,
            s.captured(),
        )?;
    }
    let bytes = writer.bytes_written();
    let packets = writer.packets_written();
    let mut inner = writer.into_inner();
    inner.flush().context("flushing the capture file")?;
    drop(inner);
    print_summary(&stats, packets, bytes, elapsed, args, size_stop);
    Ok(ExitCode::from(EXIT_OK))
}

fn semantics_words(args: &CaptureArgs) -> &'static str {
    if args.outer {
        "outer headers only"
    } else {
        "through tunnels"
    }
}

fn draw_live(stats: &[PointStats], started: Instant, previous: usize) -> usize {
    let mut s = String::new();
    if previous > 0 {
        s.push_str(&format!("\x1b[{previous}A\x1b[J"));
    }
    let total: u64 = stats.iter().map(|p| p.captured()).sum();
    let drops: u64 = stats.iter().map(|p| p.kernel_dropped).sum();
    s.push_str(&format!(
        "  {:>6.1}s  {total} packets, {drops} kernel-dropped\n",
        started.elapsed().as_secs_f64()
    ));
    let w = stats.iter().map(|p| p.name.len()).max().unwrap_or(10);
    for p in stats {
        s.push_str(&format!(
            "  {:<w$}  {:>8}{}\n",
            p.name,
            p.captured(),
            if p.lost.is_some() { "  (lost)" } else { "" }
        ));
    }
    eprint!("{s}");
    stats.len() + 1
}

fn print_summary(
    stats: &[PointStats],
    packets: u64,
    bytes: u64,
    elapsed: Duration,
    args: &CaptureArgs,
    size_stop: bool,
) {
    let w = stats.iter().map(|p| p.name.len()).max().unwrap_or(5).max(5);
    let mut s = String::new();
    s.push_str(&format!(
        "dye: {packets} packets in {:.1}s -> {} ({bytes} bytes){}\n",
        elapsed.as_secs_f64(),
        if args.write.as_os_str() == "-" {
            "stdout".to_string()
        } else {
            args.write.display().to_string()
        },
        if size_stop {
            ", stopped at --max-size"
        } else {
            ""
        }
    ));
    s.push_str(&format!(
        "  {:<w$}  {:>8}  {:>8}  {:>8}  {:>14}\n",
        "POINT", "IN", "OUT", "CAPTURED", "KERNEL-DROPPED"
    ));
    for p in stats {
        s.push_str(&format!(
            "  {:<w$}  {:>8}  {:>8}  {:>8}  {:>14}{}\n",
            p.name,
            p.captured_in,
            p.captured_out,
            p.captured(),
            p.kernel_dropped,
            p.lost
                .as_ref()
                .map(|r| format!("  lost: {r}"))
                .unwrap_or_default()
        ));
    }
    let t_in: u64 = stats.iter().map(|p| p.captured_in).sum();
    let t_out: u64 = stats.iter().map(|p| p.captured_out).sum();
    let t_drop: u64 = stats.iter().map(|p| p.kernel_dropped).sum();
    let t_tunnel: u64 = stats.iter().map(|p| p.tunnel_discarded).sum();
    s.push_str(&format!(
        "  {:<w$}  {:>8}  {:>8}  {:>8}  {:>14}\n",
        "total",
        t_in,
        t_out,
        t_in + t_out,
        t_drop
    ));
    if t_tunnel > 0 {
        s.push_str(&format!(
            "  {t_tunnel} tunnel packet(s) looked inside and not kept (nothing in them matched)\n"
        ));
    }
    eprint!("{s}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_size("10M").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("512k").unwrap(), 512 * 1024);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1Q").is_err());
    }
}
