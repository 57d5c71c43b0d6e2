//! Where to listen: the namespaces a probe can reach from its source (through veth pairs, which
//! also brings in bridges and tunnels living in those namespaces), narrowed or widened by the
//! user, and the capture points on their interfaces.

use std::collections::{BTreeSet, VecDeque};

use dye_capture::netlink::LinkKind;
use dye_capture::select::{BadInterface, InterfaceSelector};
use dye_capture::topology::{Edge, Topology};
use dye_capture::{CapturePoint, Netns};
use dye_core::snapshot::Point;

/// How the user shaped the capture.
#[derive(Debug, Clone, Default)]
pub struct ScopeRequest {
    /// Capture only in these namespaces (names, paths, PIDs, `host`, or globs over /run/netns;
    /// the source is always included).
    pub namespaces: Vec<String>,
    /// Capture in every namespace on the host.
    pub all_namespaces: bool,
    /// Capture only on interfaces with these names (`IFACE` or `NETNS/IFACE`, globs allowed).
    pub interfaces: Vec<String>,
    /// Refuse more points than this (each point is two kernel capture handles).
    pub max_points: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error(transparent)]
    Netns(#[from] dye_capture::NetnsError),
    #[error("discovering the network topology: {0}")]
    Topology(#[from] dye_capture::TopologyError),
    #[error(transparent)]
    BadInterface(#[from] BadInterface),
    #[error("no capture point matches -i {0:?} in the namespaces in scope")]
    NoSuchInterface(String),
    #[error("{count} capture points exceed --max-points {max}; narrow the scope with --ns or -i")]
    TooManyPoints { count: usize, max: usize },
}

/// The namespaces and capture points of one trace.
#[derive(Debug)]
pub struct Scope {
    pub topology: Topology,
    pub points: Vec<CapturePoint>,
    /// The same points as the core sees them (link types are filled in once capture opens).
    pub metas: Vec<Point>,
    /// The source namespace's name in `topology` (found by inode: `--from 4242` and
    /// `--from dye-demo-pod-a` may name the same namespace).
    pub source: String,
}

impl Scope {
    pub fn discover(source: &Netns, req: &ScopeRequest) -> Result<Scope, ScopeError> {
        let mut interfaces = InterfaceSelector::parse(&req.interfaces)?;
        interfaces.resolve_pods()?;
        let topology = if !req.all_namespaces && !req.namespaces.is_empty() {
            // Names, paths, PIDs, `host`, or patterns over /run/netns (`dye-demo-*`), as
            // `dye capture --ns` takes them.
            let mut chosen = vec![source.clone()];
            for ns in dye_capture::netns::select(&req.namespaces, false)? {
                if !chosen.iter().any(|c| c.id() == ns.id()) {
                    chosen.push(ns);
                }
            }
            Topology::discover(&chosen)?
        } else {
            // One discovery of every namespace; the default scope then keeps those reachable.
            let mut all = Netns::enumerate()?;
            all.push(source.clone()); // dropped again if already listed (same inode)
            let mut topology = Topology::discover(&all)?;
            if !req.all_namespaces {
                retain_reachable(&mut topology, source);
            }
            topology
        };
        let source_name = topology
            .namespaces
            .iter()
            .find(|n| n.id == source.id())
            .map(|n| n.name.clone())
            .unwrap_or_else(|| source.name().to_string());
        let mut points = Vec::new();
        let mut metas = Vec::new();
        for info in &topology.namespaces {
            for link in &info.links {
                if link.kind == LinkKind::Loopback || !link.up {
                    continue;
                }
                if !interfaces.selects(&info.name, &link.name) {
                    continue;
                }
                points.push(CapturePoint {
                    netns: info.netns.clone(),
                    ifname: link.name.clone(),
                    kind: link.kind.short().to_string(),
                    mtu: link.mtu,
                    node: info.node.clone(),
                });
                metas.push(Point {
                    netns: info.name.clone(),
                    ifname: link.name.clone(),
                    class: super::snapshot::class(&link.kind),
                    node: info.node.clone(),
                    mtu: link.mtu,
                    linktype: 1,
                });
            }
        }
        let found: Vec<(&str, &str)> = metas
            .iter()
            .map(|m| (m.netns.as_str(), m.ifname.as_str()))
            .collect();
        if let Some(missing) = interfaces.unmatched(&found) {
            return Err(ScopeError::NoSuchInterface(missing.text.clone()));
        }
        if req.max_points > 0 && points.len() > req.max_points {
            return Err(ScopeError::TooManyPoints {
                count: points.len(),
                max: req.max_points,
            });
        }
        Ok(Scope {
            topology,
            points,
            metas,
            source: source_name,
        })
    }
}

/// Keeps only the namespaces connected to `source` through veth pairs, transitively. Edges to
/// namespaces outside stay: they still name the far end of a veth.
fn retain_reachable(topology: &mut Topology, source: &Netns) {
    let Some(start) = topology.namespaces.iter().find(|n| n.id == source.id()) else {
        return;
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue = VecDeque::from([start.name.clone()]);
    while let Some(ns) = queue.pop_front() {
        if !seen.insert(ns.clone()) {
            continue;
        }
        for e in &topology.edges {
            if let Edge::VethPair { a, b } = e {
                if a.netns == ns && !seen.contains(&b.netns) {
                    queue.push_back(b.netns.clone());
                }
                if b.netns == ns && !seen.contains(&a.netns) {
                    queue.push_back(a.netns.clone());
                }
            }
        }
    }
    topology.namespaces.retain(|n| seen.contains(&n.name));
}
