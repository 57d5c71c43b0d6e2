//! Where to listen: the namespaces a probe can reach from its source (through veth pairs, which
//! also brings in bridges and tunnels living in those namespaces), narrowed or widened by the
//! user, and the capture points on their interfaces. The same discovered topology answers the
//! verdict's questions: who owns an address, and where a vanished probe should have appeared.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;

use dye_capture::netlink::LinkKind;
use dye_capture::topology::{Edge, Topology};
use dye_capture::{CapturePoint, Direction, Netns};

use super::reconstruct::{Expectation, PathOracle, PointMeta};
use super::report::PacketView;

/// Bytes VXLAN adds on an IPv4 underlay: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_V4_OVERHEAD: u32 = 50;

/// How the user shaped the capture.
#[derive(Debug, Clone, Default)]
pub struct ScopeRequest {
    /// Capture only in these namespaces (the source is always included).
    pub namespaces: Vec<String>,
    /// Capture in every namespace on the host.
    pub all_namespaces: bool,
    /// Capture only on interfaces with these names (`IFACE` or `NETNS/IFACE`).
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
    pub metas: Vec<PointMeta>,
    /// The source namespace's name in `topology` (found by inode: `--from 4242` and
    /// `--from dye-demo-pod-a` may name the same namespace).
    pub source: String,
}

impl Scope {
    pub fn discover(source: &Netns, req: &ScopeRequest) -> Result<Scope, ScopeError> {
        let topology = if !req.all_namespaces && !req.namespaces.is_empty() {
            let mut chosen = vec![source.clone()];
            for r in &req.namespaces {
                let ns = Netns::open_str(r)?;
                if !chosen.contains(&ns) {
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
                if !req.interfaces.is_empty()
                    && !req
                        .interfaces
                        .iter()
                        .any(|i| i == &link.name || *i == format!("{}/{}", info.name, link.name))
                {
                    continue;
                }
                points.push(CapturePoint {
                    netns: info.netns.clone(),
                    ifname: link.name.clone(),
                    kind: link.kind.short().to_string(),
                    mtu: link.mtu,
                    node: info.node.clone(),
                });
                metas.push(PointMeta {
                    netns: info.name.clone(),
                    ifname: link.name.clone(),
                    kind: link.kind.short().to_string(),
                    node: info.node.clone(),
                    mtu: link.mtu,
                });
            }
        }
        if let Some(missing) = req
            .interfaces
            .iter()
            .find(|i| !metas.iter().any(|m| &m.ifname == *i || m.name() == **i))
        {
            return Err(ScopeError::NoSuchInterface(missing.clone()));
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

/// Answers the verdict's questions from the discovered topology and live route lookups.
#[derive(Debug)]
pub struct TopologyOracle<'a> {
    pub topology: &'a Topology,
}

impl TopologyOracle<'_> {
    fn link_mtu(&self, netns: &str, ifname: &str) -> Option<u32> {
        self.topology.namespace(netns)?.link(ifname).map(|l| l.mtu)
    }

    /// After a packet enters `ns`: where does the kernel route it?
    fn routed_next(&self, netns: &str, in_if: &str, packet: &PacketView) -> Expectation {
        let Some(info) = self.topology.namespace(netns) else {
            return Expectation {
                next: None,
                explanation: String::new(),
            };
        };
        let Ok(dst) = packet.dst.parse::<IpAddr>() else {
            return Expectation {
                next: None,
                explanation: String::new(),
            };
        };
        let route = match Topology::route_get(&info.netns, dst) {
            Ok(r) => r,
            Err(e) => {
                return Expectation {
                    next: None,
                    explanation: format!("{netns} has no route to {dst} ({e})"),
                }
            }
        };
        if route.kind != "unicast" && route.kind != "local" {
            return Expectation {
                next: None,
                explanation: format!(
                    "{netns} routes {dst} as {} (`{route}`): the kernel discards it",
                    route.kind
                ),
            };
        }
        if route.kind == "local" {
            return Expectation {
                next: None,
                explanation: format!("{dst} is local to {netns} but nothing took the probe: check INPUT rules and the listening socket"),
            };
        }
        let Some(dev) = route.dev.clone() else {
            return Expectation {
                next: None,
                explanation: format!("{netns}: route `{route}` has no device"),
            };
        };
        // A bridge: the next hop is the port leading to the namespace that owns the address.
        let mut next = format!("{netns}/{dev}");
        if info
            .link(&dev)
            .map(|l| l.kind == LinkKind::Bridge)
            .unwrap_or(false)
        {
            let owners = self.owners(dst);
            let port = self.topology.edges.iter().find_map(|e| match e {
                Edge::BridgePort { bridge, port }
                    if bridge.netns == netns && bridge.ifname == dev =>
                {
                    self.topology
                        .veth_peer(&port.netns, &port.ifname)
                        .filter(|peer| owners.contains(&peer.netns))
                        .map(|_| port.to_string())
                }
                _ => None,
            });
            if let Some(p) = port {
                next = p;
            }
        }
        Expectation {
            next: Some(format!("{next} (out)")),
            explanation: format!(
                "{netns} has a route (`{route}`) but the probe never left through {dev}: it was dropped inside {netns} between {in_if} and {dev} — look at its firewall (iptables/nft FORWARD and INPUT, policies, NetworkPolicy chains), rp_filter and conntrack"
            ),
        }
    }
}

impl PathOracle for TopologyOracle<'_> {
    fn expected_next(
        &self,
        last: &PointMeta,
        direction: Direction,
        packet: &PacketView,
        outer_len: Option<u32>,
    ) -> Expectation {
        let ns = &last.netns;
        if direction == Direction::In {
            return self.routed_next(ns, &last.ifname, packet);
        }
        let info = self.topology.namespace(ns);
        let link = info.and_then(|i| i.link(&last.ifname));
        if let Some(tunnel) = link.and_then(|l| l.kind.tunnel()) {
            let under = tunnel
                .underlay_ifname
                .clone()
                .unwrap_or_else(|| "its underlay device".into());
            let under_mtu = self.link_mtu(ns, &under);
            let encapsulated = outer_len.unwrap_or(packet.len + VXLAN_V4_OVERHEAD);
            let df = tunnel.df.as_deref().unwrap_or("unset");
            let mut explanation = format!("the encapsulated packet never left through {under}");
            if let Some(m) = under_mtu {
                if encapsulated > m {
                    explanation = format!(
                        "{} + {} bytes of {} overhead = {encapsulated} bytes, over {under}'s MTU {m}, and the outer header has DF {df}: {} drops it (a black hole for the sender unless it gets ICMP). Lower the overlay MTU to {} or raise the underlay MTU to {}",
                        packet.len,
                        encapsulated - packet.len,
                        last.kind,
                        if df == "set" { "the kernel" } else { "something" },
                        m.saturating_sub(encapsulated - packet.len),
                        encapsulated
                    );
                }
            }
            return Expectation {
                next: Some(format!("{ns}/{under} (out)")),
                explanation,
            };
        }
        if let Some(peer) = self.topology.veth_peer(ns, &last.ifname) {
            return Expectation {
                next: Some(format!("{peer} (in)")),
                explanation: format!("a veth pair delivers what enters one end to the other: {peer} is down, or its namespace discarded the frame (MTU {} on its side?)", self.link_mtu(&peer.netns, &peer.ifname).map(|m| m.to_string()).unwrap_or_else(|| "?".into())),
            };
        }
        // A port of a bridge: the frame should show up on the other ports / the bridge device.
        if let Some(bridge) = self.topology.edges.iter().find_map(|e| match e {
            Edge::BridgePort { bridge, port }
                if port.netns == *ns && port.ifname == last.ifname =>
            {
                Some(bridge.clone())
            }
            _ => None,
        }) {
            return Expectation {
                next: Some(format!("{bridge} (in)")),
                explanation: format!("the frame left through a port of bridge {}", bridge.ifname),
            };
        }
        Expectation {
            next: None,
            explanation: format!(
                "it left {ns} through {} and dye cannot see beyond it",
                last.ifname
            ),
        }
    }

    fn owners(&self, addr: IpAddr) -> Vec<String> {
        self.topology
            .namespaces
            .iter()
            .filter(|n| {
                n.links
                    .iter()
                    .any(|l| l.addresses.iter().any(|a| a.addr == addr))
            })
            .map(|n| n.name.clone())
            .collect()
    }
}
