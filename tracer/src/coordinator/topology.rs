//! `dye topology --agents`: every agent's picture of its node, merged into one — the same
//! snapshots a trace takes (whole node, no source), side by side with shared names qualified
//! as `NODE:NAME` — plus what no single node can see: which nodes' underlay links share a
//! subnet (the wire between them). An agent that cannot be reached or does not answer is
//! named blind; the others' nodes are still shown.

use std::net::{IpAddr, SocketAddr};

use dye_core::snapshot::{Address, Snapshot};
use ipnet::IpNet;
use serde::Serialize;

use super::client::Transport;
use super::network::Blind;
use super::{calls, merge, CoordError};

/// The schema of `dye topology --agents --json`.
pub const SCHEMA: &str = "dye.topology.agents/v1";

/// One node whose agent answered.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub node: String,
    pub agent: String,
}

/// Two nodes' underlay links on one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnderlayWire {
    pub subnet: String,
    /// `NETNS/IFNAME` and its address on each side.
    pub a: String,
    pub a_addr: IpAddr,
    pub b: String,
    pub b_addr: IpAddr,
}

/// The merged picture.
#[derive(Debug, Serialize)]
pub struct AgentsTopology {
    pub schema: &'static str,
    pub nodes: Vec<NodeView>,
    pub blind: Vec<Blind>,
    pub namespaces: Vec<dye_core::snapshot::Namespace>,
    pub edges: Vec<dye_core::snapshot::Edge>,
    pub underlay: Vec<UnderlayWire>,
}

/// Asks every agent at `addrs` for its node and merges the answers.
pub fn topology(
    addrs: &[SocketAddr],
    transport: &Transport,
    status: &dyn Fn(&str),
) -> Result<AgentsTopology, CoordError> {
    let rt = super::runtime()?;
    status(&format!("connecting to {} agent(s)", addrs.len()));
    let (reached, mut blind) = rt.block_on(super::greet(addrs, transport))?;
    let answers = rt.block_on(calls::node_snapshots(&reached));
    let mut parts = Vec::new();
    let mut nodes = Vec::new();
    for (p, answer) in reached.iter().zip(answers) {
        match answer {
            Ok(s) => {
                parts.push((p.node.clone(), s));
                nodes.push(NodeView {
                    node: p.node.clone(),
                    agent: p.addr.to_string(),
                });
            }
            Err(e) => blind.push(Blind {
                node: p.node.clone(),
                agent: p.addr.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    let (merged, _) = merge::merge(&parts, 0, "");
    let underlay = underlay_wires(&merged);
    Ok(AgentsTopology {
        schema: SCHEMA,
        nodes,
        blind,
        namespaces: merged.namespaces,
        edges: merged.edges,
        underlay,
    })
}

/// Links that carry a tunnel's packets (the tunnels' underlay devices), paired across nodes
/// when their addresses share a subnet.
fn underlay_wires(merged: &Snapshot) -> Vec<UnderlayWire> {
    // (node, NETNS/IFNAME, address) of every underlay device.
    let mut ends: Vec<(String, String, Address)> = Vec::new();
    for ns in &merged.namespaces {
        for link in &ns.links {
            let Some(dev) = link.kind.tunnel().and_then(|t| t.underlay.as_ref()) else {
                continue;
            };
            let Some(under) = ns.link(dev) else { continue };
            // Link-local addresses share a prefix on every link: they say nothing of a wire.
            for a in under.addresses.iter().filter(|a| !link_local(a.addr)) {
                let end = (ns.node.clone(), format!("{}/{}", ns.name, dev), *a);
                if !ends.contains(&end) {
                    ends.push(end);
                }
            }
        }
    }
    let mut wires = Vec::new();
    for (i, (node_a, a, addr_a)) in ends.iter().enumerate() {
        let Ok(net) = IpNet::new(addr_a.addr, addr_a.prefix_len) else {
            continue;
        };
        for (node_b, b, addr_b) in &ends[i + 1..] {
            if node_a != node_b && net.trunc().contains(&addr_b.addr) {
                wires.push(UnderlayWire {
                    subnet: net.trunc().to_string(),
                    a: a.clone(),
                    a_addr: addr_a.addr,
                    b: b.clone(),
                    b_addr: addr_b.addr,
                });
            }
        }
    }
    wires
}

fn link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.is_unicast_link_local(),
    }
}
