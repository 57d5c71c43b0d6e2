//! `dye trace`: where does my packet go, what happens to it, and where does it die?

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use dye_core::model::TcpSegment;
use dye_core::probe::smallest_probe;
use dye_core::snapshot::Snapshot;
use dye_core::trace::{TracePlan, TraceRun};
use dye_core::Proto;

use crate::live::{self, ScopeRequest};
use crate::render::trace as render;
use crate::render::Style;

use super::{EXIT_INTERRUPTED, EXIT_NEGATIVE, EXIT_OK};

/// Probe transport, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProtoArg {
    Icmp,
    Udp,
    Tcp,
}

impl ProtoArg {
    /// The flag's value, or the default: icmp without a port, tcp with one.
    pub(crate) fn resolve(arg: Option<ProtoArg>, port: Option<u16>) -> Proto {
        match arg {
            Some(ProtoArg::Icmp) => Proto::Icmp,
            Some(ProtoArg::Udp) => Proto::Udp,
            Some(ProtoArg::Tcp) => Proto::Tcp,
            None if port.is_some() => Proto::Tcp,
            None => Proto::Icmp,
        }
    }
}

/// The TCP segment of a tcp probe, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TcpSegmentArg {
    Syn,
    Ack,
    Fin,
}

impl From<TcpSegmentArg> for TcpSegment {
    fn from(a: TcpSegmentArg) -> TcpSegment {
        match a {
            TcpSegmentArg::Syn => TcpSegment::Syn,
            TcpSegmentArg::Ack => TcpSegment::Ack,
            TcpSegmentArg::Fin => TcpSegment::Fin,
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
Probes carry a marker at the end of their payload, so dye recognises them at every hop however
they are rewritten (NAT), wrapped (VXLAN) or split (fragments). By default dye captures in every
namespace reachable from the source through veth pairs — on a node: the pod and the host; in the
lab: the whole emulated cluster.

With --record FILE, everything needed to print the report again is written to FILE — the
topology snapshot, the probes, every captured frame: `dye replay FILE` prints the same report on
any machine, without privileges.

Exit status: 0 delivered or answered, 1 dropped / ICMP error / timeout, 2 usage or setup error,
3 the system failed mid-trace, 130 interrupted.

Examples:
  dye trace --from dye-demo-pod-a --to 10.244.2.2                   # ICMP across nodes
  dye trace --from dye-demo-pod-b --to 10.96.0.10:80                # TCP SYN to a ClusterIP
  dye trace --from dye-demo-office --to 203.0.113.80:80 --json      # through firewall NAT
  dye trace --from 4242 --to 10.244.2.2 --size 1400 --pcap out.pcapng  # from PID 4242's netns
  dye trace --from pod:default/pod-a --to pod:default/pod-c:80       # pods by name (CRI)
  dye trace --agents 192.168.50.11:7443,192.168.50.12:7443 --certs certs/ \
      --from dye-demo-pod-a --to 10.244.2.2     # across machines, through `dye agent`s")]
pub struct TraceArgs {
    /// Source network namespace: a name under /run/netns, a path, a PID, `host`, or a pod
    /// (`pod:NAMESPACE/NAME`, `pod:NAME` in namespace default; see --runtime-endpoint).
    #[arg(long, value_name = "NETNS")]
    from: String,
    /// Destination address, with a port for udp/tcp: 10.96.0.10:80, [fd00::1]:53, or a pod's
    /// address: pod:NAMESPACE/NAME[:PORT].
    #[arg(long, value_name = "IP[:PORT]")]
    to: String,
    /// With --to pod:…: the pod's IPv6 address (default: its IPv4 one).
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,
    /// Probe transport. Default: icmp without a port, tcp with one.
    #[arg(long, value_enum)]
    proto: Option<ProtoArg>,
    /// IP packet size in bytes, headers included (at least 64; at most the source's MTU).
    /// Default: the smallest probe, 64 bytes (76 for TCP over IPv6).
    #[arg(long, value_name = "BYTES")]
    size: Option<u32>,
    /// Set Don't Fragment on the probes (IPv4). IPv6 probes need no flag: routers never
    /// fragment IPv6, so a probe too big for a link is always dropped with a Packet Too Big.
    #[arg(long)]
    df: bool,
    /// TTL (IPv6: hop limit) the probes leave with: a small one shows which router lets the
    /// probe expire (ICMP Time Exceeded, and the kernel's drop reason there).
    #[arg(long, default_value_t = dye_core::probe::DEFAULT_TTL, value_name = "HOPS")]
    ttl: u8,
    /// The TCP segment a tcp probe is: syn (a new connection), ack or fin (out-of-state
    /// segments that conntrack classifies INVALID: finds the rule that drops those).
    #[arg(long, value_enum, default_value = "syn", value_name = "SEGMENT")]
    tcp_segment: TcpSegmentArg,
    /// Number of probes (1-100); each is its own flow, so a Service may balance them apart.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Time between probes (at least 10ms).
    #[arg(long, default_value = "100ms", value_parser = super::args::parse_duration, value_name = "DURATION")]
    interval: Duration,
    /// How long to wait for answers after the last probe.
    #[arg(long, default_value = "2s", value_parser = super::args::parse_duration, value_name = "DURATION")]
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
    /// Also write a recording of this trace (topology snapshot, probes, every capture event)
    /// to FILE: `dye replay FILE` prints the same report anywhere, without privileges.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    #[command(flatten)]
    agents: AgentsArgs,
}

/// Tracing across machines through `dye agent`s.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("agent_security").args(["certs", "insecure_agents"])))]
pub(crate) struct AgentsArgs {
    /// Work through the dye agents at these addresses (ADDR:PORT, comma-separated, or one
    /// NAME:PORT resolving to every agent) instead of on this host: the agents that own the
    /// source and destination capture, the source's agent injects, and what they saw is
    /// merged with every node's clock offset removed.
    #[arg(long, value_name = "ADDR[,ADDR…]", conflicts_with_all = ["namespaces", "all_ns", "interfaces"], requires = "agent_security")]
    pub(crate) agents: Option<String>,
    /// With --agents: directory with ca.pem, client.pem and client-key.pem (`dye certs`).
    #[arg(long, value_name = "DIR", requires = "agents")]
    pub(crate) certs: Option<PathBuf>,
    /// With --agents: talk to agents without TLS or authentication (agents started with the
    /// same flag). Only for debugging on loopback.
    #[arg(
        long = "insecure-plaintext-for-local-debugging",
        id = "insecure_agents",
        requires = "agents",
        conflicts_with = "certs"
    )]
    insecure: bool,
}

/// `--sockets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SocketsArg {
    PerNamespace,
    PerInterface,
}

/// Where to listen: the flags `dye trace` and `dye mtu` share.
#[derive(Debug, Args)]
pub(crate) struct ScopeArgs {
    /// Capture only in these namespaces (repeatable; the source is always included): names,
    /// globs over /run/netns, paths, PIDs, `host`, or pods (`pod:NAMESPACE/NAME`).
    #[arg(long = "ns", value_name = "NETNS")]
    namespaces: Vec<String>,
    /// Capture in every network namespace on the host.
    #[arg(long, conflicts_with = "namespaces")]
    all_ns: bool,
    /// Capture only on these interfaces: IFACE or NETNS/IFACE (repeatable).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// With --sockets per-interface: refuse to open more capture points than this (each is
    /// two kernel handles). Namespace sockets cost nothing per interface.
    #[arg(long, default_value_t = 256)]
    max_points: usize,
    /// Kernel capture sockets: one per namespace, not bound to an interface (the interface
    /// comes with each frame: cost follows the namespaces, not their interfaces), or two
    /// libpcap handles per interface (in and out).
    #[arg(long, value_enum, default_value_t = SocketsArg::PerNamespace)]
    sockets: SocketsArg,
    /// UDP ports decoded as VXLAN (repeatable).
    #[arg(long = "vxlan-port", default_values_t = [8472u16, 4789u16])]
    vxlan_ports: Vec<u16>,
}

impl ScopeArgs {
    /// The scope request and the VXLAN ports to decode. Namespaces in scope without a name of
    /// their own are named after their pods when the runtime at `endpoints` answers.
    pub(crate) fn into_parts(self, endpoints: &live::pods::Endpoints) -> (ScopeRequest, Vec<u16>) {
        (
            ScopeRequest {
                namespaces: self.namespaces,
                all_namespaces: self.all_ns,
                interfaces: self.interfaces,
                max_points: self.max_points,
                sockets: match self.sockets {
                    SocketsArg::PerNamespace => dye_capture::SocketModel::PerNamespace,
                    SocketsArg::PerInterface => dye_capture::SocketModel::PerInterface,
                },
                pod_names: live::pod_names::PodNamer::for_host(endpoints.clone()),
            },
            self.vxlan_ports,
        )
    }
}

/// `--to`: an address (see [`parse_target`]) or `pod:NAMESPACE/NAME[:PORT]`, the pod's IPv4
/// address (IPv6 with `ipv6`) as its container runtime reports it.
pub(crate) fn resolve_target(
    s: &str,
    ipv6: bool,
    endpoints: &live::pods::Endpoints,
) -> anyhow::Result<(IpAddr, Option<u16>)> {
    if let Some(spec) = s.trim().strip_prefix("pod:") {
        return live::pods::target(spec, endpoints, ipv6).map_err(anyhow::Error::msg);
    }
    if ipv6 {
        anyhow::bail!("-6 picks a pod's IPv6 address: --to {s:?} is not a pod:NAMESPACE/NAME");
    }
    parse_target(s)
}

/// `--to` as [`resolve_target`] reads it, except that with `--agents` a `pod:` is asked of
/// the agents (the pod's node's runtime knows it; this host's may not).
pub(crate) fn resolve_target_with(
    s: &str,
    ipv6: bool,
    endpoints: &live::pods::Endpoints,
    agents: &AgentsArgs,
) -> anyhow::Result<(IpAddr, Option<u16>)> {
    let (Some(spec), Some(pod)) = (&agents.agents, s.trim().strip_prefix("pod:")) else {
        return resolve_target(s, ipv6, endpoints);
    };
    let (name, port) = match pod.rsplit_once(':') {
        Some((name, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .with_context(|| format!("--to {s}: bad port {port:?} (expected 1-65535)"))?;
            (name, Some(port))
        }
        None => (pod, None),
    };
    let addrs = crate::coordinator::parse_agents(spec)?;
    let transport = crate::coordinator::transport(agents.certs.as_deref())?;
    let ip = crate::coordinator::pod_address(&addrs, &transport, &format!("pod:{name}"), ipv6)
        .with_context(|| format!("--to {s}"))?;
    Ok((ip, port))
}

/// `--to` as the report names it, when it names a pod (`pod:NS/NAME`, port left out).
pub(crate) fn pod_name(to: &str) -> Option<String> {
    let spec = to.trim().strip_prefix("pod:")?;
    let name = match spec.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        _ => spec,
    };
    Some(if name.contains('/') {
        format!("pod:{name}")
    } else {
        format!("pod:default/{name}")
    })
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

/// Creates an output file up front, so an unwritable path fails before anything is sent.
pub(crate) fn create_output(flag: &str, path: &Path) -> anyhow::Result<File> {
    File::create(path).with_context(|| format!("cannot write {flag} {}", path.display()))
}

/// Writes a recording as JSON.
pub(crate) fn write_recording<T: serde::Serialize>(
    file: File,
    path: &Path,
    recording: &T,
) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut w, recording)
        .map_err(std::io::Error::from)
        .and_then(|()| w.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "dye: recorded to {} (replay with `dye replay {}`)",
        path.display(),
        path.display()
    );
    Ok(())
}

/// How a trace's result is shown: the same for a live trace and a replayed one.
#[derive(Debug)]
pub(crate) struct TraceOutput {
    pub json: bool,
    pub mermaid: bool,
    pub pcap: Option<(File, PathBuf)>,
    pub pcap_all: bool,
}

impl TraceOutput {
    pub(crate) fn emit(self, run: &TraceRun, snapshot: &Snapshot) -> anyhow::Result<ExitCode> {
        self.emit_with(run, snapshot, None)
    }

    /// Emits the report with what a trace through agents adds (clocks, blind nodes); a node
    /// nobody observed makes the trace partial (exit 1).
    pub(crate) fn emit_with(
        self,
        run: &TraceRun,
        snapshot: &Snapshot,
        agents: Option<crate::report::agents::AgentsReport>,
    ) -> anyhow::Result<ExitCode> {
        let mut report = crate::report::project(&run.trace, snapshot);
        let partial = agents.as_ref().is_some_and(|a| !a.blind.is_empty());
        if let Some(a) = &agents {
            // Only the namespaces that running agents captured in count as observed.
            let observed: Vec<String> = snapshot
                .points
                .iter()
                .filter(|p| !a.blind.iter().any(|b| b.node == p.node))
                .map(|p| p.netns.clone())
                .collect();
            crate::report::agents::no_blame_where_unobserved(
                &mut report,
                snapshot,
                &observed,
                &a.blind,
            );
        }
        report.agents = agents;
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        } else if self.mermaid {
            write!(out, "{}", render::mermaid(&report))?;
        } else {
            let style = Style {
                color: std::io::stdout().is_terminal(),
            };
            write!(out, "{}", render::text(&report, style))?;
            if let Some(a) = &report.agents {
                write!(out, "{}", crate::report::agents::text(a))?;
            }
        }
        if let Some((file, path)) = self.pcap {
            let through_agents = report.agents.is_some();
            let name = |p: &dye_core::snapshot::Point| {
                if through_agents {
                    // `node/netns/ifname`, as `dye capture --agents` names it: a namespace
                    // renamed `NODE:NAME` for the merge is NAME under its node.
                    let node_prefix = format!("{}:", p.node);
                    let netns = p.netns.strip_prefix(&node_prefix).unwrap_or(&p.netns);
                    format!("{}/{netns}/{}", p.node, p.ifname)
                } else {
                    p.name()
                }
            };
            let n = render::pcapng_named(
                run,
                &report,
                &snapshot.points,
                std::io::BufWriter::new(file),
                self.pcap_all,
                &name,
            )
            .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("dye: wrote {n} packets to {}", path.display());
        }
        Ok(ExitCode::from(if run.interrupted {
            EXIT_INTERRUPTED
        } else if partial {
            EXIT_NEGATIVE
        } else if run.trace.verdict.kind().is_success() {
            EXIT_OK
        } else {
            EXIT_NEGATIVE
        }))
    }
}

pub fn run(args: TraceArgs, endpoints: &live::pods::Endpoints) -> anyhow::Result<ExitCode> {
    let (to, port) = resolve_target_with(&args.to, args.ipv6, endpoints, &args.agents)?;
    let (scope, vxlan_ports) = args.scope.into_parts(endpoints);
    let proto = ProtoArg::resolve(args.proto, port);
    let plan = TracePlan {
        from: args.from.clone(),
        to,
        to_name: pod_name(&args.to),
        port,
        proto,
        size: args.size.unwrap_or_else(|| smallest_probe(to, proto)),
        df: args.df,
        ttl: args.ttl,
        tcp: args.tcp_segment.into(),
        count: args.count,
        interval: args.interval,
        timeout: args.timeout,
        vxlan_ports,
        keep_all: args.pcap_all,
        ids: live::random_ids()?,
    };
    plan.validate()?;
    // Unwritable outputs fail before anything is captured or sent.
    let pcap = match &args.pcap {
        Some(path) => Some((create_output("--pcap", path)?, path.clone())),
        None => None,
    };
    let record = match &args.record {
        Some(path) => Some((create_output("--record", path)?, path.clone())),
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    let show_progress = std::io::stderr().is_terminal();
    let status = |msg: &str| {
        if show_progress {
            eprintln!("dye: {msg}…");
        }
    };
    if let Some(spec) = &args.agents.agents {
        let addrs = crate::coordinator::parse_agents(spec)?;
        let transport = crate::coordinator::transport(args.agents.certs.as_deref())?;
        let result = crate::coordinator::trace(
            &plan,
            &addrs,
            &transport,
            Arc::clone(&stop),
            record.is_some(),
            &status,
        );
        let done = match result {
            Ok(r) => r,
            Err(e) => {
                for path in [&args.pcap, &args.record].into_iter().flatten() {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e.into());
            }
        };
        if let (Some((file, path)), Some(recording)) = (record, &done.recording) {
            write_recording(file, &path, recording)?;
        }
        let reference = done
            .clocks
            .first()
            .map(|c| c.reference.clone())
            .unwrap_or_default();
        let agents = crate::report::agents::project(&reference, &done.clocks, &done.blind);
        return TraceOutput {
            json: args.json,
            mermaid: args.mermaid,
            pcap,
            pcap_all: args.pcap_all,
        }
        .emit_with(&done.run, &done.snapshot, Some(agents));
    }
    let result = live::trace(&plan, &scope, Arc::clone(&stop), record.is_some(), &status);
    let (run, snapshot, recording) = match result {
        Ok(r) => r,
        Err(e) => {
            for path in [&args.pcap, &args.record].into_iter().flatten() {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    if let (Some((file, path)), Some(recording)) = (record, &recording) {
        write_recording(file, &path, recording)?;
    }
    TraceOutput {
        json: args.json,
        mermaid: args.mermaid,
        pcap,
        pcap_all: args.pcap_all,
    }
    .emit(&run, &snapshot)
}

#[cfg(test)]
mod tests {
    use super::pod_name;

    #[test]
    fn a_pod_destination_is_named_without_its_port() {
        assert_eq!(
            pod_name("pod:default/pod-c:80").as_deref(),
            Some("pod:default/pod-c")
        );
        assert_eq!(pod_name("pod:web-0").as_deref(), Some("pod:default/web-0"));
        assert_eq!(
            pod_name("pod:kube-system/dns").as_deref(),
            Some("pod:kube-system/dns")
        );
        assert_eq!(pod_name("10.0.0.1:80"), None);
        assert_eq!(pod_name("[fd00::1]:53"), None);
    }
}
