//! `dye agent`: serve this node's capture, injection and netlink questions to coordinators.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::agent::limits::Limits;
use crate::agent::node::Node;
use crate::agent::service::AgentService;
use crate::agent::skew::Skew;
use crate::agent::tls::{Identity, Role};
use crate::agent::{serve, Security};

#[derive(Debug, Args)]
#[command(after_help = "\
The agent answers from the namespace it runs in and the namespaces that belong to it (its pods),
never from other nodes'. It enforces its own bounds whatever a client asks and refuses what is
over them with a status naming the bound. Idle, it waits in the kernel (no polling).

When the node's container runtime answers (--runtime-endpoint, CONTAINER_RUNTIME_ENDPOINT, or
the usual sockets), every pod's namespace is named `pod NAMESPACE/NAME` (matched by the sandbox
process's namespace, so run it in the node's PID namespace); the node's own namespace, which
hostNetwork pods share, keeps its name. A runtime that does not answer leaves names as they are.

Test and lab knob: DYE_AGENT_CLOCK_OFFSET=37ms (signed: -50ms) in the agent's environment adds
that offset to every timestamp it reports, as if the node's clock were off; the coordinator
estimates and removes it.

Examples:
  dye certs /etc/dye/certs
  dye agent --listen 192.168.50.11:7443 --certs /etc/dye/certs
  ip netns exec dye-demo-node-1 dye agent --listen 192.168.50.11:7443 --certs certs/
  dye agent --listen 10.0.0.5:7443 --certs /etc/dye/certs \\
      --runtime-endpoint unix:///run/containerd/containerd.sock")]
pub struct AgentArgs {
    /// Address and port to listen on (the node's address on the underlay).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Directory with ca.pem, agent.pem and agent-key.pem (made by `dye certs`).
    #[arg(long, value_name = "DIR", required_unless_present = "insecure")]
    certs: Option<PathBuf>,
    /// Serve without TLS or client authentication: anyone who can connect may capture and
    /// inject. Only for debugging on loopback.
    #[arg(
        long = "insecure-plaintext-for-local-debugging",
        id = "insecure",
        conflicts_with = "certs"
    )]
    insecure: bool,
    /// The node's name as coordinators report it (on Kubernetes: the pod's spec.nodeName).
    /// Default: the hostname when the agent runs in the host's network namespace, else the
    /// namespace's name.
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Most capture sessions at once.
    #[arg(long, default_value_t = Limits::default().max_sessions)]
    max_sessions: u32,
    /// Most probes sent per second, all clients together.
    #[arg(long, default_value_t = Limits::default().max_probe_rate)]
    max_probe_rate: u32,
    /// Stop once PATH no longer exists (checked every second): the lab passes its state
    /// directory, so its agents end with the lab however the lab ends.
    #[arg(long, value_name = "PATH")]
    exit_when_gone: Option<PathBuf>,
}

pub fn run(args: AgentArgs, endpoints: crate::live::pods::Endpoints) -> anyhow::Result<ExitCode> {
    let skew = Skew::from_env().map_err(anyhow::Error::msg)?;
    let security = match &args.certs {
        Some(dir) => Security::MutualTls(Box::new(
            Identity::load(dir, Role::Agent)
                .and_then(Identity::server_config)
                .with_context(|| {
                    format!("loading the agent's certificates from {}", dir.display())
                })?,
        )),
        None => {
            tracing::warn!(
                "serving WITHOUT TLS or client authentication (--insecure-plaintext-for-local-debugging): anyone who can reach {} may capture and inject",
                args.listen
            );
            Security::Plaintext
        }
    };
    let limits = Limits {
        max_sessions: args.max_sessions.max(1),
        max_probe_rate: args.max_probe_rate.max(1),
        ..Limits::default()
    };
    // The node is the namespace the agent was started in: read before any thread exists.
    let node = Node::current()
        .context("reading this node's network namespace")?
        .named(args.node_name.clone())
        .naming_pods(endpoints.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("starting the agent's runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        if skew.0 != 0 {
            tracing::warn!(
                "test knob {}: every reported timestamp is shifted by {} ns",
                crate::agent::skew::ENV,
                skew.0
            );
        }
        // Printed for whoever started the agent (tests wait for this line).
        eprintln!(
            "dye agent: node {}: listening on {}",
            node.netns_name(),
            listener.local_addr()?
        );
        let max_message = limits.max_message_bytes;
        let service = AgentService::new(node, limits, skew, endpoints);
        let stop = shutdown(args.exit_when_gone);
        serve(listener, security, service, max_message, stop)
            .await
            .context("serving")?;
        eprintln!("dye agent: stopped");
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })
}

/// SIGINT or SIGTERM, or `watched` disappearing.
async fn shutdown(watched: Option<PathBuf>) {
    use tokio::signal::unix::{signal, SignalKind};
    let gone = async move {
        let Some(path) = watched else {
            return std::future::pending::<()>().await;
        };
        // Once a second: negligible when idle, and a lab's `down` kills agents directly anyway.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            if !path.exists() {
                tracing::info!("{} is gone: stopping", path.display());
                return;
            }
        }
    };
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        gone.await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = gone => {}
    }
}
