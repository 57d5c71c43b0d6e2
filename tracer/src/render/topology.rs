//! The terminal view of `dye topology --agents`: each node with its namespaces and links, the
//! connections inside nodes, the underlay wires between them, and any node left blind.

use std::fmt::Write;

use dye_core::snapshot::Edge;

use crate::coordinator::topology::AgentsTopology;

pub fn text(t: &AgentsTopology) -> String {
    let mut out = String::new();
    for node in &t.nodes {
        let _ = writeln!(out, "node {} (agent {})", node.node, node.agent);
        for ns in t.namespaces.iter().filter(|n| n.node == node.node) {
            let _ = writeln!(out, "  {}", ns.name);
            for l in ns.links.iter().filter(|l| l.name != "lo") {
                let addrs: Vec<String> = l
                    .addresses
                    .iter()
                    .map(|a| format!("{}/{}", a.addr, a.prefix_len))
                    .collect();
                let master = l
                    .master
                    .as_deref()
                    .map(|m| format!(" master {m}"))
                    .unwrap_or_default();
                let state = if l.up { "" } else { " DOWN" };
                let _ = writeln!(
                    out,
                    "    {:<16} {:<8} mtu {:<5}{state}{master} {}",
                    l.name,
                    l.kind.class().as_str(),
                    l.mtu,
                    addrs.join(" ")
                );
            }
        }
    }
    if !t.edges.is_empty() {
        let _ = writeln!(out, "links:");
        for e in &t.edges {
            let line = match e {
                Edge::VethPair { a, b } => format!("veth   {a} ↔ {b}"),
                Edge::BridgePort { bridge, port } => format!("bridge {bridge} ⊃ {port}"),
                Edge::TunnelUnderlay { tunnel, underlay } => {
                    format!("tunnel {tunnel} → {underlay}")
                }
            };
            let _ = writeln!(out, "  {line}");
        }
    }
    if !t.underlay.is_empty() {
        let _ = writeln!(out, "between nodes (underlay):");
        for w in &t.underlay {
            let _ = writeln!(
                out,
                "  {} {} ↔ {} {}  (subnet {})",
                w.a, w.a_addr, w.b, w.b_addr, w.subnet
            );
        }
    }
    for b in &t.blind {
        // An agent that never answered has no node name.
        let who = if b.node.is_empty() {
            format!("agent {}", b.agent)
        } else {
            format!("{} (agent {})", b.node, b.agent)
        };
        let _ = writeln!(out, "BLIND: {who}: {}", b.reason);
    }
    out
}
