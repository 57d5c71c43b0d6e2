//! `dye topology`: the cross-namespace picture of interfaces, veth pairs, bridges and tunnels.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use dye_capture::netns;
use dye_capture::Topology;

use super::EXIT_OK;

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
(--runtime-endpoint) and shown as `pod NAMESPACE/NAME`.
Without --ns or --all-ns: the current namespace plus every named one (`ip netns list`).

Examples:
  dye topology --ns 'dye-demo-*'                  # the lab, as text
  dye topology --ns 'dye-demo-*' --mermaid > lab.mmd
  dye topology --ns dye-demo-node-1 --json | jq '.namespaces[0].links'
  dye topology --ns dye-demo-pod-a --route-to 10.244.2.2
  dye topology --all-ns                           # every namespace, incl. containers'")]
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
}

pub fn run(args: TopologyArgs) -> anyhow::Result<ExitCode> {
    let namespaces = netns::select(&args.ns, args.all_ns)?;
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
