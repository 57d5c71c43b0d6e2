//! One snapshot from several agents' snapshots: their namespaces, edges, capture points and
//! route lookups side by side. Points keep each agent's order, so an agent's frame at its
//! point `i` is the merged point `offset + i`. Namespaces keep their names unless two nodes
//! use the same one, in which case both become `NODE:NAME`; a machine's own `host` always does.

use std::collections::HashMap;

use dye_core::model::PointRef;
use dye_core::snapshot::{Edge, Snapshot};

/// Each node's part of the merged snapshot.
#[derive(Debug, Clone)]
pub struct Part {
    /// First merged point index of this node's points.
    pub point_offset: usize,
    pub points: usize,
    /// Merged namespace name → the name the node's agent knows it by.
    pub names: HashMap<String, String>,
}

/// Merges `parts` (node name, that node's snapshot); `source` is the source namespace's name
/// as its node's agent knows it, `source_part` its node's index.
pub fn merge(
    parts: &[(String, Snapshot)],
    source_part: usize,
    source: &str,
) -> (Snapshot, Vec<Part>) {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, s) in parts {
        for n in &s.namespaces {
            *count.entry(n.name.as_str()).or_default() += 1;
        }
    }
    // `host` is every machine's own namespace: always named after its node, so a trace that
    // reached one agent still says whose uplink the probe left by.
    let rename = |node: &str, name: &str| -> String {
        if name == "host" || count.get(name).copied().unwrap_or(0) > 1 {
            format!("{node}:{name}")
        } else {
            name.to_string()
        }
    };
    let mut merged = Snapshot::default();
    let mut out = Vec::new();
    for (i, (node, s)) in parts.iter().enumerate() {
        let r = |name: &str| rename(node, name);
        let rref = |p: &PointRef| PointRef::new(r(&p.netns), p.ifname.clone());
        let mut names = HashMap::new();
        for n in &s.namespaces {
            let mut n = n.clone();
            names.insert(r(&n.name), n.name.clone());
            n.name = r(&n.name);
            n.node = node.clone();
            merged.namespaces.push(n);
        }
        for e in &s.edges {
            let e = match e {
                Edge::VethPair { a, b } => Edge::VethPair {
                    a: rref(a),
                    b: rref(b),
                },
                Edge::BridgePort { bridge, port } => Edge::BridgePort {
                    bridge: rref(bridge),
                    port: rref(port),
                },
                Edge::TunnelUnderlay { tunnel, underlay } => Edge::TunnelUnderlay {
                    tunnel: rref(tunnel),
                    underlay: rref(underlay),
                },
            };
            if !merged.edges.contains(&e) {
                merged.edges.push(e);
            }
        }
        let offset = merged.points.len();
        for p in &s.points {
            let mut p = p.clone();
            p.netns = r(&p.netns);
            p.node = node.clone();
            merged.points.push(p);
        }
        let mut lookups = s.lookups.clone();
        for l in &mut lookups {
            l.netns = r(&l.netns);
        }
        merged.add_lookups(lookups);
        if i == source_part {
            merged.source = r(source);
        }
        out.push(Part {
            point_offset: offset,
            points: s.points.len(),
            names,
        });
    }
    (merged, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dye_core::model::LinkClass;
    use dye_core::snapshot::{Namespace, Point};

    fn node(name: &str, nss: &[&str]) -> (String, Snapshot) {
        let namespaces = nss
            .iter()
            .map(|n| Namespace {
                name: n.to_string(),
                node: name.to_string(),
                links: Vec::new(),
                routes: Vec::new(),
            })
            .collect();
        let points = nss
            .iter()
            .map(|n| Point {
                netns: n.to_string(),
                ifname: "eth0".into(),
                class: LinkClass::Veth,
                node: name.to_string(),
                mtu: 1500,
                linktype: 1,
                on_path: true,
            })
            .collect();
        (
            name.to_string(),
            Snapshot::new(nss[0].to_string(), namespaces, Vec::new(), points),
        )
    }

    #[test]
    fn points_are_offset_per_node_and_shared_names_are_qualified() {
        let parts = vec![
            node("n1", &["host", "pod-a"]),
            node("n2", &["host", "pod-c", "pod-d"]),
        ];
        let (m, p) = merge(&parts, 0, "pod-a");
        assert_eq!(m.points.len(), 5);
        assert_eq!(p[1].point_offset, 2);
        assert_eq!(m.points[2].netns, "n2:host");
        assert_eq!(m.points[3].netns, "pod-c");
        assert_eq!(m.points[3].node, "n2");
        assert_eq!(m.source, "pod-a");
        assert_eq!(p[0].names["n1:host"], "host");
        assert!(m.namespace("host").is_none());
        assert!(m.namespace("n1:host").is_some());
    }
}
