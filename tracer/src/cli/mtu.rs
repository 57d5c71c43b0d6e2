//! `dye mtu`: the path MTU from a namespace to a destination, the link that limits it and why.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use dye_core::mtu::{MtuPlan, MtuRun, Progress, Status};

use crate::live;
use crate::render::mtu as render;
use crate::render::Style;

use super::trace::{
    create_output, pod_name, resolve_target_with, write_recording, AgentsArgs, ProtoArg, ScopeArgs,
};
use super::{EXIT_INTERRUPTED, EXIT_NEGATIVE, EXIT_OK};

#[derive(Debug, Args)]
#[command(after_help = "\
dye sends probes with Don't Fragment set, one at a time, and watches each at every interface
it can reach from the source (as `dye trace` does). Sizes come from a search that converges
fast: the smallest size (is the path up at all?), the largest the source can send (a healthy
path is done in two probes), the MTU an ICMP Fragmentation Needed / Packet Too Big advertises,
or — when a probe vanishes silently — the size the topology says fits through the link where it
vanished; then common MTUs and bisection. A probe that vanishes is sent twice (--attempts)
before its size counts as too big.

A probe that vanishes inside a tunnel where nothing on the node explains it is followed past
the node: the outer packet's way to the remote tunnel endpoint (route lookups, veth peers) gives
the link that limits it — a router port on a routed underlay — with the ICMP the router sent the
node and the path MTU the node cached for the endpoint. A first answer slower than 50 ms (a cold
path) is measured again with the smallest probe before it paces the waits.

Probes must not change the path MTU the source's kernel caches for its real traffic. Over IPv4
they cannot (errors about raw-socket probes reach no socket); an ICMPv6 Packet Too Big about an
echo probe does update the source's cache. dye compares the cached entry before and after,
removes the one cached route its probes caused if they changed it, and says so.

With --record FILE, everything needed to print the report again is written to FILE: `dye replay
FILE` does, on any machine, without privileges.

Exit status: 0 path MTU found (healthy or signalled by ICMP), 1 black hole, unreachable or
incomplete, 2 usage or setup error, 3 the system failed mid-search, 130 interrupted.

Examples:
  dye mtu --from dye-demo-pod-a --to 10.244.2.2                  # pod to pod across the overlay
  dye mtu --from dye-demo-office --to 203.0.113.80:80            # TCP SYNs through firewall NAT
  dye mtu --from 4242 --to 10.244.2.2 --max 9000 --json           # from PID 4242's netns
  dye mtu --agents 192.168.50.11:7443,192.168.50.12:7443 --certs certs/ \
      --from dye-demo-pod-a --to 10.244.2.2                        # through every node's agent")]
pub struct MtuArgs {
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
    /// Probe transport. Default: icmp without a port, tcp with one. A UDP probe to a closed
    /// port counts as passed when the destination answers port-unreachable.
    #[arg(long, value_enum)]
    proto: Option<ProtoArg>,
    /// Smallest probe, IP header included [default: 68 for IPv4, 1280 for IPv6].
    #[arg(long, value_name = "BYTES")]
    min: Option<u32>,
    /// Largest probe [default and ceiling: the MTU of the source's route device].
    #[arg(long, value_name = "BYTES")]
    max: Option<u32>,
    /// Probes that must vanish at one size before it counts as too big (1-5).
    #[arg(long, default_value_t = 2)]
    attempts: u32,
    /// How long to wait for each probe [default: 4× the quickest answer so far + 100ms,
    /// between 150ms and 2s; 2s until the first answer].
    #[arg(long, value_parser = super::args::parse_duration, value_name = "DURATION")]
    wait: Option<Duration>,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Print the report as JSON (schema dye.mtu/v1).
    #[arg(long)]
    json: bool,
    /// Also write a recording of this search (topology snapshot, probes, every capture
    /// event) to FILE: `dye replay FILE` prints the same report anywhere, without privileges.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    #[command(flatten)]
    agents: AgentsArgs,
}

pub fn run(args: MtuArgs, endpoints: &live::pods::Endpoints) -> anyhow::Result<ExitCode> {
    let (to, port) = resolve_target_with(&args.to, args.ipv6, endpoints, &args.agents)?;
    let (scope, vxlan_ports) = args.scope.into_parts(endpoints);
    let plan = MtuPlan {
        from: args.from,
        to,
        to_name: pod_name(&args.to),
        port,
        proto: ProtoArg::resolve(args.proto, port),
        min: args.min,
        max: args.max,
        attempts: args.attempts,
        wait: args.wait,
        vxlan_ports,
        ids: live::random_ids()?,
    };
    plan.validate()?;
    let record = match &args.record {
        Some(path) => Some((create_output("--record", path)?, path.clone())),
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    let terminal = std::io::stderr().is_terminal();
    let status = |msg: &str| {
        if terminal {
            eprintln!("dye: {msg}…");
        }
    };
    // One line, rewritten in place while the search runs.
    let mut progress = |p: Progress| {
        if terminal {
            let bounds = match (p.passes, p.fails) {
                (Some(a), Some(b)) => format!("passes ≤ {a}, fails ≥ {b}"),
                (Some(a), None) => format!("passes ≤ {a}"),
                (None, Some(b)) => format!("fails ≥ {b}"),
                (None, None) => "nothing known yet".into(),
            };
            eprint!(
                "\r\x1b[Kdye: probe {}: {} bytes ({bounds})",
                p.probes, p.size
            );
            let _ = std::io::stderr().flush();
        }
    };
    let result = match &args.agents.agents {
        Some(spec) => through_agents(
            spec,
            &args.agents,
            &plan,
            Arc::clone(&stop),
            record.is_some(),
            &status,
            &mut progress,
        ),
        None => live::mtu(
            &plan,
            &scope,
            Arc::clone(&stop),
            record.is_some(),
            &status,
            &mut progress,
        )
        .map_err(anyhow::Error::from),
    };
    if terminal {
        eprint!("\r\x1b[K");
    }
    let (run, recording) = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(path) = &args.record {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    if let (Some((file, path)), Some(recording)) = (record, &recording) {
        write_recording(file, &path, recording)?;
    }
    emit(&run, args.json)
}

/// The same search through the agents at `spec`; nodes nobody could observe are named on
/// stderr (the search's result stands on what the others saw).
fn through_agents(
    spec: &str,
    agents: &AgentsArgs,
    plan: &MtuPlan,
    stop: Arc<AtomicBool>,
    record: bool,
    status: &dyn Fn(&str),
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<(MtuRun, Option<dye_core::recording::Recording<MtuPlan>>)> {
    let addrs = crate::coordinator::parse_agents(spec)?;
    let transport = crate::coordinator::transport(agents.certs.as_deref())?;
    let done = crate::coordinator::mtu(plan, &addrs, &transport, stop, record, status, progress)?;
    for b in &done.blind {
        eprintln!("dye: blind: {} (agent {}): {}", b.node, b.agent, b.reason);
    }
    Ok((done.run, done.recording))
}

/// Prints an MTU result and chooses the exit status: the same for a live search and a replay.
pub(crate) fn emit(run: &MtuRun, json: bool) -> anyhow::Result<ExitCode> {
    let report = crate::report::mtu::project(&run.result);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let style = Style {
            color: std::io::stdout().is_terminal(),
        };
        write!(out, "{}", render::text(&report, style))?;
    }
    Ok(ExitCode::from(if run.interrupted {
        EXIT_INTERRUPTED
    } else {
        match run.result.status {
            Status::Healthy | Status::Signalled => EXIT_OK,
            _ => EXIT_NEGATIVE,
        }
    }))
}
