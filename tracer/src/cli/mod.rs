//! Command line: one module per subcommand, each turning its flags into a call on the library.

mod agent;
mod args;
mod capture;
mod capture_agents;
mod certs;
mod decode;
mod image;
mod lab;
mod mtu;
mod replay;
mod topology;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status: the command did what was asked (for a trace: delivered or answered).
pub const EXIT_OK: u8 = 0;
/// Exit status: the command ran but the answer is negative (a probe dropped, a check failed).
pub const EXIT_NEGATIVE: u8 = 1;
/// Exit status: usage or setup error — bad arguments, missing privilege or tool, unknown
/// namespace. clap uses the same code for its own usage errors.
pub const EXIT_SETUP_ERROR: u8 = 2;
/// Exit status: the system failed while dye ran (a capture handle died, a send failed, netlink
/// refused) — not the user's request.
pub const EXIT_RUNTIME_ERROR: u8 = 3;
/// Exit status: stopped by SIGINT/SIGTERM after cleaning up (the shell convention 128 + 2).
pub const EXIT_INTERRUPTED: u8 = 130;

/// An error and its causes on one line. Library errors often carry their cause in their own
/// message as well as in `source()`; a cause already spelled out is not repeated.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// True when the error is stdout's reader having gone away.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit status for an error that reached the top.
pub fn exit_status_for(err: &anyhow::Error) -> u8 {
    if let Some(crate::lab::LabError::Interrupted) = err.downcast_ref::<crate::lab::LabError>() {
        return EXIT_INTERRUPTED;
    }
    if let Some(e) = err.downcast_ref::<crate::coordinator::CoordError>() {
        return if e.is_usage() {
            EXIT_SETUP_ERROR
        } else {
            EXIT_RUNTIME_ERROR
        };
    }
    match err.downcast_ref::<crate::live::LiveError>() {
        Some(e) if !e.is_usage() => EXIT_RUNTIME_ERROR,
        _ => EXIT_SETUP_ERROR,
    }
}

/// dye traces packets through container networks: it enters pod and node network namespaces,
/// injects marked probes, captures them on every interface they cross, and reconstructs each
/// hop — NAT rewrites, encapsulation, fragmentation, TTL, time — and where they vanished.
#[derive(Debug, Parser)]
#[command(name = "dye", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Container runtime CRI socket that `pod:NAMESPACE/NAME` references are resolved
    /// through: unix:///PATH or PATH (repeatable: every one given is asked, and exactly one
    /// must know the pod). Default: $CONTAINER_RUNTIME_ENDPOINT, else the first that answers
    /// of /run/containerd/containerd.sock, /run/crio/crio.sock,
    /// /run/k3s/containerd/containerd.sock. When one answers, pods' namespaces are named
    /// `pod NAMESPACE/NAME` too: by `dye agent` every pod's but the node's own; by trace, mtu
    /// and topology those without a name of their own (pid:N, cni-<uuid>).
    #[arg(long = "runtime-endpoint", global = true, value_name = "ENDPOINT")]
    pub runtime_endpoints: Vec<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring up, inspect, break and tear down the built-in emulated cluster.
    Lab(lab::LabArgs),
    /// Show the network namespaces' interfaces joined into one graph: veth pairs across
    /// namespaces, bridges and their ports, tunnels and their underlay, MTUs, addresses, routes.
    Topology(topology::TopologyArgs),
    /// Capture on many interfaces in many namespaces at once into one pcapng (kernel-filtered,
    /// with direction, nanosecond timestamps and kernel drop counters per capture point).
    Capture(capture::CaptureArgs),
    /// Inject marked probes from a namespace and reconstruct every hop they take: NAT
    /// rewrites, encapsulation, fragmentation, TTL, per-hop time, and where they vanished.
    Trace(trace::TraceArgs),
    /// Find the path MTU from a namespace to a destination with DF probes, and name the link
    /// that limits it and why: tunnel overhead, ICMP-signalled limits, silent black holes.
    Mtu(mtu::MtuArgs),
    /// Replay a recorded trace or MTU search (`--record FILE`): the same report, anywhere,
    /// without privileges.
    Replay(replay::ReplayArgs),
    /// Serve this node to coordinators (`dye trace --agents`) over gRPC with mutual TLS.
    Agent(agent::AgentArgs),
    /// Create a cluster CA with an agent and a client certificate for `dye agent`.
    Certs(certs::CertsArgs),
    /// Read pcap/pcapng captures and print each packet's whole layer stack — tunnels, inner
    /// packet, ICMP quotes, dye markers — one line per packet (or JSON).
    Decode(decode::DecodeArgs),
    /// Build the container image deploy/ runs (maintainers).
    #[command(hide = true)]
    Image(image::ImageArgs),
}

/// Sends `tracing` output to stderr; the level comes from `-v` unless RUST_LOG is set.
pub fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // The lab's CRI client (gRPC over HTTP/2) logs every frame at debug: keep that for -vvv.
    let default = if verbose < 3 {
        format!("{default},h2=info,hyper_util=info,tower=info,tonic=info")
    } else {
        default.to_string()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Runs the parsed command; errors are reported by the caller with exit status 2.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let endpoints = crate::live::pods::Endpoints::from_flags(&cli.runtime_endpoints);
    crate::live::pods::install(endpoints.clone());
    match cli.command {
        Command::Lab(args) => lab::run(args),
        Command::Topology(args) => topology::run(args, &endpoints),
        Command::Capture(args) => capture::run(args),
        Command::Decode(args) => decode::run(args),
        Command::Trace(args) => trace::run(args, &endpoints),
        Command::Mtu(args) => mtu::run(args, &endpoints),
        Command::Replay(args) => replay::run(args),
        Command::Agent(args) => agent::run(args, endpoints),
        Command::Certs(args) => certs::run(args),
        Command::Image(args) => image::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("not found")]
    struct Leaf;

    #[derive(Debug, thiserror::Error)]
    #[error("source namespace: {0}")]
    struct Repeats(#[from] Leaf);

    #[derive(Debug, thiserror::Error)]
    #[error("source namespace")]
    struct Wraps(#[from] Leaf);

    #[test]
    fn causes_are_shown_once() {
        let e = anyhow::Error::from(Repeats(Leaf)).context("tracing");
        assert_eq!(error_chain(&e), "tracing: source namespace: not found");
        let e = anyhow::Error::from(Wraps(Leaf));
        assert_eq!(error_chain(&e), "source namespace: not found");
    }
}
