//! `dye trace`: where does my packet go, what happens to it, and where does it die?

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::trace::render::{self, Style};
use crate::trace::{self, Proto, ScopeRequest, TraceConfig};

use super::{EXIT_INTERRUPTED, EXIT_NEGATIVE, EXIT_OK};

#[derive(Debug, Args)]
#[command(after_help = "\
Probes carry a marker at the end of their payload, so dye recognises them at every hop however
they are rewritten (NAT), wrapped (VXLAN) or split (fragments). By default dye captures in every
namespace reachable from the source through veth pairs — on a node: the pod and the host; in the
lab: the whole emulated cluster.

Exit status: 0 delivered or answered, 1 dropped / ICMP error / timeout, 2 usage or setup error,
130 interrupted.

Examples:
  dye trace --from dye-demo-pod-a --to 10.244.2.2                   # ICMP across nodes
  dye trace --from dye-demo-pod-b --to 10.96.0.10:80                # TCP SYN to a ClusterIP
  dye trace --from dye-demo-office --to 203.0.113.80:80 --json      # through firewall NAT
  dye trace --from 4242 --to 10.244.2.2 --size 1400 --pcap out.pcapng  # from PID 4242's netns")]
pub struct TraceArgs {
    /// Source network namespace: a name under /run/netns, a path, a PID, or `host`.
    #[arg(long, value_name = "NETNS")]
    from: String,
    /// Destination address, with a port for udp/tcp: 10.96.0.10:80, [fd00::1]:53.
    #[arg(long, value_name = "IP[:PORT]")]
    to: String,
    /// Probe transport. Default: icmp without a port, tcp with one.
    #[arg(long, value_enum)]
    proto: Option<Proto>,
    /// IP packet size in bytes, headers included (at least 64; at most the source's MTU).
    /// Default: the smallest probe, 64 bytes (76 for TCP over IPv6).
    #[arg(long, value_name = "BYTES")]
    size: Option<u32>,
    /// Set Don't Fragment on the probes (IPv4). IPv6 probes need no flag: routers never
    /// fragment IPv6, so a probe too big for a link is always dropped with a Packet Too Big.
    #[arg(long)]
    df: bool,
    /// Number of probes (1-100); each is its own flow, so a Service may balance them apart.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Time between probes (at least 10ms).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    interval: Duration,
    /// How long to wait for answers after the last probe.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    timeout: Duration,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Print the report as JSON (schema dye.trace/v1).
    #[arg(long, conflicts_with = "mermaid")]
    json: bool,
    /// Print the path as a Mermaid flowchart.
    #[arg(long)]
    mermaid: bool,
    /// Write the probe packets seen at every hop, annotated, to this pcapng file.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// With --pcap: capture without a kernel filter and keep everything from the trace window.
    #[arg(long, requires = "pcap")]
    pcap_all: bool,
}

/// Where to listen: the flags `dye trace` and `dye mtu` share.
#[derive(Debug, Args)]
pub(crate) struct ScopeArgs {
    /// Capture only in these namespaces (repeatable; the source is always included).
    #[arg(long = "ns", value_name = "NETNS")]
    namespaces: Vec<String>,
    /// Capture in every network namespace on the host.
    #[arg(long, conflicts_with = "namespaces")]
    all_ns: bool,
    /// Capture only on these interfaces: IFACE or NETNS/IFACE (repeatable).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// Refuse to open more capture points than this.
    #[arg(long, default_value_t = 256)]
    max_points: usize,
    /// UDP ports decoded as VXLAN (repeatable).
    #[arg(long = "vxlan-port", default_values_t = [8472u16, 4789u16])]
    vxlan_ports: Vec<u16>,
}

impl ScopeArgs {
    /// The scope request and the VXLAN ports to decode.
    pub(crate) fn into_parts(self) -> (ScopeRequest, Vec<u16>) {
        (
            ScopeRequest {
                namespaces: self.namespaces,
                all_namespaces: self.all_ns,
                interfaces: self.interfaces,
                max_points: self.max_points,
            },
            self.vxlan_ports,
        )
    }
}

/// `IP`, `IP:PORT`, `[IPv6]:PORT`.
pub(crate) fn parse_target(s: &str) -> anyhow::Result<(IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    anyhow::bail!(
        "--to {s:?} is not an address (10.244.2.2), address:port (10.96.0.10:80) or [IPv6]:port"
    )
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let (to, port) = parse_target(&args.to)?;
    let (scope, vxlan_ports) = args.scope.into_parts();
    let proto = args.proto.unwrap_or(if port.is_some() {
        Proto::Tcp
    } else {
        Proto::Icmp
    });
    let config = TraceConfig {
        from: args.from.clone(),
        to,
        port,
        proto,
        size: args
            .size
            .unwrap_or_else(|| trace::smallest_probe(to, proto)),
        df: args.df,
        count: args.count,
        interval: args.interval,
        timeout: args.timeout,
        scope,
        vxlan_ports,
        keep_all: args.pcap_all,
    };
    config.validate()?;
    // An unwritable output fails before anything is captured or sent.
    let pcap_file = match &args.pcap {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write --pcap {}", path.display()))?,
        ),
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    let show_progress = std::io::stderr().is_terminal();
    let progress = |msg: &str| {
        if show_progress {
            eprintln!("dye: {msg}…");
        }
    };
    let result = trace::trace(&config, Arc::clone(&stop), &progress);
    let run = match result {
        Ok(run) => run,
        Err(e) => {
            if let Some(path) = &args.pcap {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };

    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &run.report)?;
        writeln!(out)?;
    } else if args.mermaid {
        write!(out, "{}", render::mermaid(&run.report))?;
    } else {
        let style = Style {
            color: std::io::stdout().is_terminal(),
        };
        write!(out, "{}", render::text(&run.report, style))?;
    }
    if let (Some(file), Some(path)) = (pcap_file, &args.pcap) {
        let n = render::pcapng(&run, std::io::BufWriter::new(file), args.pcap_all)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("dye: wrote {n} packets to {}", path.display());
    }
    Ok(ExitCode::from(if run.interrupted {
        EXIT_INTERRUPTED
    } else if run.report.verdict.kind.is_success() {
        EXIT_OK
    } else {
        EXIT_NEGATIVE
    }))
}
