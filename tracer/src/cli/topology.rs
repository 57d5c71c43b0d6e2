//! `dye topology`: the cross-namespace picture of interfaces, veth pairs, bridges and tunnels.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use dye_capture::netns;
use dye_capture::Topology;

use super::{EXIT_NEGATIVE, EXIT_OK};
use crate::live::pod_names::PodNamer;

#[derive(Debug, Args)]
#[command(after_help = "\
Reads every selected namespace over netlink (nothing is changed) and joins what it finds:
veth pairs across namespaces (through IFLA_LINK_NETNSID), bridge ports, tunnel devices and
the underlay device they send through (VXLAN VNI/local/remote/port/DF), MTUs, addresses and
routes. A namespace whose only interface is a veth (a pod) is shown as belonging to the
namespace at the other end (its node).

NETNS is a name under /run/netns (shell patterns like 'dye-demo-*' allowed, quote them), a
path to a namespace file, pid:PID (that process's namespace), host (PID 1's), or a pod:
pod:NAMESPACE/NAME (pod:NAME in namespace default), resolved through the container runtime
(--runtime-endpoint) and shown as `pod NAMESPACE/NAME`. When a container runtime answers
(--runtime-endpoint, CONTAINER_RUNTIME_ENDPOINT or the usual sockets), a namespace without a
name of its own (pid:N, or the runtime's /run/netns name cni-<uuid>) that belongs to a ready pod
is shown as `pod NAMESPACE/NAME` too; other /run/netns names stay.
Without --ns or --all-ns: the current namespace plus every named one (`ip netns list`).

Examples:
  dye topology --ns 'dye-demo-*'                  # the lab, as text
  dye topology --ns 'dye-demo-*' --mermaid > lab.mmd
  dye topology --ns dye-demo-node-1 --json | jq '.namespaces[0].links'
  dye topology --ns dye-demo-pod-a --route-to 10.244.2.2
  dye topology --all-ns                           # every namespace, incl. containers'
  dye topology --agents 192.168.50.11:7443,192.168.50.12:7443 --certs certs/

With --agents, every agent describes its own node (the namespace it runs in and its pods) and
the answers are merged into one picture (JSON schema dye.topology.agents/v1): each node's
namespaces and links, the links inside nodes, and the underlay wires between nodes (underlay
devices of tunnels whose addresses share a subnet). A name two nodes share (`host`) is shown as
NODE:NAME. An agent that cannot be reached or does not answer is named BLIND (exit 1); the
other nodes are still shown.")]
pub struct TopologyArgs {
    /// Namespace to include (repeatable; patterns allowed).
    #[arg(long = "ns", value_name = "NETNS")]
    ns: Vec<String>,
    /// Every network namespace on the host: named ones and those of all processes,
    /// deduplicated by inode.
    #[arg(long)]
    all_ns: bool,
    /// Print the graph as JSON (schema dye.topology/v1).
    #[arg(long, conflicts_with = "mermaid")]
    json: bool,
    /// Print the graph as a Mermaid flowchart (paste into any Mermaid renderer).
    #[arg(long)]
    mermaid: bool,
    /// Also show, per namespace, the route the kernel would use to ADDR (`ip route get`).
    #[arg(long, value_name = "ADDR")]
    route_to: Option<IpAddr>,
    /// Ask the dye agents at these addresses (ADDR:PORT, comma-separated, or one NAME:PORT
    /// resolving to every agent) for their nodes instead of looking at this host.
    #[arg(
        long,
        value_name = "ADDR[,ADDR…]",
        conflicts_with_all = ["ns", "all_ns", "route_to", "mermaid"],
        requires = "agent_security"
    )]
    agents: Option<String>,
    /// With --agents: directory with ca.pem, client.pem and client-key.pem (`dye certs`).
    #[arg(
        long,
        value_name = "DIR",
        requires = "agents",
        group = "agent_security"
    )]
    certs: Option<PathBuf>,
    /// With --agents: talk to agents without TLS or authentication (agents started with the
    /// same flag). Only for debugging on loopback.
    #[arg(
        long = "insecure-plaintext-for-local-debugging",
        requires = "agents",
        conflicts_with = "certs",
        group = "agent_security"
    )]
    insecure: bool,
}

pub fn run(
    args: TopologyArgs,
    endpoints: &crate::live::pods::Endpoints,
) -> anyhow::Result<ExitCode> {
    if let Some(spec) = &args.agents {
        return through_agents(spec, args.certs.as_deref(), args.json);
    }
    let mut namespaces = netns::select(&args.ns, args.all_ns)?;
    if let Some(mut namer) = PodNamer::host(endpoints.clone()) {
        namespaces = namer.apply(namespaces, &|_| false);
    }
    let topo = Topology::discover(&namespaces).context("discovery failed")?;
    let mut lookups = Vec::new();
    if let Some(dst) = args.route_to {
        for ns in &namespaces {
            let r = Topology::route_get(ns, dst);
            lookups.push((ns.name().to_string(), r.map_err(|e| e.to_string())));
        }
    }
    if args.json {
        let mut v = serde_json::to_value(&topo)?;
        if let Some(dst) = args.route_to {
            let routes: Vec<serde_json::Value> = lookups
                .iter()
                .map(|(ns, r)| match r {
                    Ok(r) => serde_json::json!({ "netns": ns, "dst": dst, "route": r }),
                    Err(e) => serde_json::json!({ "netns": ns, "dst": dst, "error": e }),
                })
                .collect();
            v["route_lookups"] = serde_json::Value::Array(routes);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if args.mermaid {
        print!("{}", topo.render_mermaid());
    } else {
        print!("{}", topo.render_text());
        if let Some(dst) = args.route_to {
            println!("route to {dst}:");
            for (ns, r) in &lookups {
                match r {
                    Ok(r) => println!("  {ns}: {r}"),
                    Err(e) => println!("  {ns}: {e}"),
                }
            }
        }
    }
    Ok(ExitCode::from(EXIT_OK))
}

/// The merged picture from every agent; exit 1 when some node is blind.
fn through_agents(spec: &str, certs: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let addrs = crate::coordinator::parse_agents(spec)?;
    let transport = crate::coordinator::transport(certs)?;
    let status = |msg: &str| tracing::info!("{msg}");
    let merged = crate::coordinator::topology::topology(&addrs, &transport, &status)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&merged)?);
    } else {
        print!("{}", crate::render::topology::text(&merged));
    }
    Ok(ExitCode::from(if merged.blind.is_empty() {
        EXIT_OK
    } else {
        EXIT_NEGATIVE
    }))
}
