//! Discovery of many namespaces joined into one cross-namespace graph.
//!
//! Per namespace: links (with kind, MTU, addresses, master, tunnel parameters) and routes, read
//! over a netlink socket opened inside it. Across namespaces: veth pairs (resolved through
//! `IFLA_LINK_NETNSID` and `RTM_GETNSID`), bridge ports, and tunnel → underlay device edges.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::netlink::{Link, LinkKind, NetlinkError, Route, Rtnl};
use crate::netns::{Netns, NetnsError, NetnsId};

/// Schema tag of the JSON form; fields may be added, never renamed or removed.
pub const TOPOLOGY_SCHEMA: &str = "dye.topology/v1";

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// One interface in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    pub netns: String,
    pub ifname: String,
    pub ifindex: u32,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.netns, self.ifname)
    }
}

/// A connection between two interfaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Edge {
    /// The two ends of a veth pair (possibly in different namespaces).
    VethPair { a: Endpoint, b: Endpoint },
    /// `port` is enslaved to `bridge`.
    BridgePort { bridge: Endpoint, port: Endpoint },
    /// `tunnel` sends its encapsulated packets out through `underlay`.
    TunnelUnderlay {
        tunnel: Endpoint,
        underlay: Endpoint,
    },
}

/// What was found in one namespace.
#[derive(Clone, Debug, Serialize)]
pub struct NamespaceInfo {
    pub name: String,
    pub id: NetnsId,
    /// The node this namespace belongs to: a namespace whose only non-loopback link is a veth
    /// (a pod, a container) belongs to the namespace at the other end; any other namespace is
    /// its own node.
    pub node: String,
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
    #[serde(skip)]
    pub netns: Netns,
}

impl NamespaceInfo {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// The cross-namespace graph.
#[derive(Clone, Debug, Serialize)]
pub struct Topology {
    pub schema: &'static str,
    pub namespaces: Vec<NamespaceInfo>,
    pub edges: Vec<Edge>,
}

impl Topology {
    /// Discovers every namespace in `namespaces` (duplicates by inode are dropped) and joins
    /// them. Veth peers in namespaces outside the set are still named, by looking through all
    /// namespaces on the host.
    pub fn discover(namespaces: &[Netns]) -> Result<Topology, TopologyError> {
        Self::discover_impl(namespaces, true)
    }

    /// Like [`discover`](Self::discover), but a veth whose peer lies outside `namespaces` gets
    /// no edge: nothing is asked of the namespaces left out (a trace's scope on a node with
    /// hundreds of idle pods reads only the namespaces on the probe's path).
    pub fn discover_within(namespaces: &[Netns]) -> Result<Topology, TopologyError> {
        Self::discover_impl(namespaces, false)
    }

    fn discover_impl(namespaces: &[Netns], look_outside: bool) -> Result<Topology, TopologyError> {
        let mut seen = HashMap::new();
        let mut list: Vec<Netns> = Vec::new();
        for ns in namespaces {
            if seen.insert(ns.id(), ()).is_none() {
                // A namespace a pod reference resolved to reads `pod NS/NAME` (see
                // `Netns::preferred`); any other keeps the name it was listed under.
                list.push(ns.preferred());
            }
        }
        let mut socks = Vec::new();
        let mut infos = Vec::new();
        for ns in &list {
            let mut rt = Rtnl::open_in(ns)?;
            let links = rt.links()?;
            let routes = rt.routes(&links)?;
            infos.push(NamespaceInfo {
                name: ns.name().to_string(),
                id: ns.id(),
                node: ns.name().to_string(),
                links,
                routes,
                netns: ns.clone(),
            });
            socks.push(rt);
        }

        let mut edges = Vec::new();
        // nsid tables, filled lazily: (from ns index, nsid) -> endpoint namespace.
        let mut resolver = PeerResolver {
            look_outside,
            ..PeerResolver::default()
        };
        for i in 0..infos.len() {
            for link in infos[i].links.clone() {
                let me = Endpoint {
                    netns: infos[i].name.clone(),
                    ifname: link.name.clone(),
                    ifindex: link.ifindex,
                };
                if let (Some(m), Some(mname)) = (link.master_ifindex, &link.master) {
                    let is_bridge = infos[i]
                        .links
                        .iter()
                        .any(|l| l.ifindex == m && l.kind == LinkKind::Bridge);
                    if is_bridge {
                        edges.push(Edge::BridgePort {
                            bridge: Endpoint {
                                netns: infos[i].name.clone(),
                                ifname: mname.clone(),
                                ifindex: m,
                            },
                            port: me.clone(),
                        });
                    }
                }
                if let Some(t) = link.kind.tunnel() {
                    if let (Some(ui), Some(un)) = (t.underlay_ifindex, &t.underlay_ifname) {
                        edges.push(Edge::TunnelUnderlay {
                            tunnel: me.clone(),
                            underlay: Endpoint {
                                netns: infos[i].name.clone(),
                                ifname: un.clone(),
                                ifindex: ui,
                            },
                        });
                    }
                }
                if let LinkKind::Veth {
                    peer_ifindex: Some(peer),
                    peer_netnsid,
                } = link.kind
                {
                    let peer_ep =
                        match peer_netnsid {
                            None => infos[i].links.iter().find(|l| l.ifindex == peer).map(|l| {
                                Endpoint {
                                    netns: infos[i].name.clone(),
                                    ifname: l.name.clone(),
                                    ifindex: peer,
                                }
                            }),
                            Some(nsid) => resolver.resolve(i, nsid, peer, &mut socks, &infos)?,
                        };
                    if let Some(peer_ep) = peer_ep {
                        // Each pair once: emit from the side that sorts first, or from this
                        // side when the other side is outside the discovered set.
                        let other_inside = infos.iter().any(|n| n.name == peer_ep.netns);
                        let key_me = (me.netns.clone(), me.ifindex);
                        let key_peer = (peer_ep.netns.clone(), peer_ep.ifindex);
                        if !other_inside || key_me < key_peer {
                            edges.push(Edge::VethPair {
                                a: me.clone(),
                                b: peer_ep,
                            });
                        }
                    }
                }
            }
        }

        // Node attribution: a leaf namespace (only lo + one veth) belongs to its peer's node.
        let mut nodes = Vec::new();
        for info in &infos {
            let non_lo: Vec<&Link> = info
                .links
                .iter()
                .filter(|l| l.kind != LinkKind::Loopback)
                .collect();
            let mut node = info.name.clone();
            if let [only] = non_lo.as_slice() {
                if matches!(only.kind, LinkKind::Veth { .. }) {
                    for e in &edges {
                        if let Edge::VethPair { a, b } = e {
                            if a.netns == info.name && a.ifindex == only.ifindex {
                                node = b.netns.clone();
                            } else if b.netns == info.name && b.ifindex == only.ifindex {
                                node = a.netns.clone();
                            }
                        }
                    }
                }
            }
            nodes.push(node);
        }
        for (info, node) in infos.iter_mut().zip(nodes) {
            info.node = node;
        }

        Ok(Topology {
            schema: TOPOLOGY_SCHEMA,
            namespaces: infos,
            edges,
        })
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    /// The peer of a veth end, if known.
    pub fn veth_peer(&self, netns: &str, ifname: &str) -> Option<&Endpoint> {
        self.edges.iter().find_map(|e| match e {
            Edge::VethPair { a, b } if a.netns == netns && a.ifname == ifname => Some(b),
            Edge::VethPair { a, b } if b.netns == netns && b.ifname == ifname => Some(a),
            _ => None,
        })
    }

    /// `ip route get DST` inside `ns`.
    pub fn route_get(ns: &Netns, dst: IpAddr) -> Result<Route, TopologyError> {
        let mut rt = Rtnl::open_in(ns)?;
        let links = rt.links()?;
        Ok(rt.route_get(dst, &links)?)
    }

    /// `ip route get` for each of `dsts` inside `ns`, over one netlink socket.
    pub fn route_get_many(
        ns: &Netns,
        dsts: &[IpAddr],
    ) -> Result<Vec<Result<Route, TopologyError>>, TopologyError> {
        let mut rt = Rtnl::open_in(ns)?;
        let links = rt.links()?;
        Ok(dsts
            .iter()
            .map(|d| rt.route_get(*d, &links).map_err(TopologyError::from))
            .collect())
    }

    /// Human-readable form: one block per namespace, every link with its kind, MTU,
    /// addresses and connections, then the routes.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for ns in &self.namespaces {
            let node = if ns.node != ns.name {
                format!("  (on node {})", ns.node)
            } else {
                String::new()
            };
            let _ = writeln!(out, "{}  {}{}", ns.name, ns.id, node);
            let w = ns
                .links
                .iter()
                .map(|l| l.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            for l in &ns.links {
                let addrs = l
                    .addresses
                    .iter()
                    .filter(|a| !matches!(a.addr, IpAddr::V6(v) if v.segments()[0] == 0xfe80))
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(" ");
                let state = if l.up { "" } else { " DOWN" };
                let mut detail = Vec::new();
                if let Some(m) = &l.master {
                    detail.push(format!("port of {m}"));
                }
                if let Some(t) = l.kind.tunnel() {
                    let mut s = Vec::new();
                    if let Some(v) = t.vni {
                        s.push(format!("vni {v}"));
                    }
                    if let Some(v) = t.local {
                        s.push(format!("local {v}"));
                    }
                    if let Some(v) = t.remote {
                        s.push(format!("remote {v}"));
                    }
                    if let Some(v) = t.port {
                        s.push(format!("port {v}"));
                    }
                    if let Some(v) = &t.underlay_ifname {
                        s.push(format!("dev {v}"));
                    }
                    if let Some(v) = &t.df {
                        s.push(format!("df {v}"));
                    }
                    detail.push(s.join(" "));
                }
                if l.kind == LinkKind::Bridge {
                    let ports: Vec<&str> = ns
                        .links
                        .iter()
                        .filter(|p| p.master_ifindex == Some(l.ifindex))
                        .map(|p| p.name.as_str())
                        .collect();
                    detail.push(format!(
                        "ports: {}",
                        if ports.is_empty() {
                            "none".to_string()
                        } else {
                            ports.join(", ")
                        }
                    ));
                }
                if matches!(l.kind, LinkKind::Veth { .. }) {
                    match self.veth_peer(&ns.name, &l.name) {
                        Some(p) => detail.push(format!("<-> {p}")),
                        None => detail.push("<-> (peer not found)".into()),
                    }
                }
                let _ = writeln!(
                    out,
                    "  {:<w$}  {:<8} mtu {:<5} {}{}{}",
                    l.name,
                    l.kind.kernel_name(),
                    l.mtu,
                    addrs,
                    state,
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "{}{}",
                            if addrs.is_empty() { "" } else { "  " },
                            detail.join("  ")
                        )
                    },
                    w = w
                );
            }
            // IPv6 link-local routes (one per interface) are noise here; JSON keeps them.
            let routes: Vec<&Route> = ns
                .routes
                .iter()
                .filter(|r| !r.dst.starts_with("fe80::"))
                .collect();
            if !routes.is_empty() {
                let _ = writeln!(out, "  routes:");
                for r in routes {
                    let _ = writeln!(out, "    {r}");
                }
            }
            out.push('\n');
        }
        out
    }

    /// A Mermaid flowchart: one subgraph per namespace, veth pairs as solid links, bridge ports
    /// as dotted links, tunnel → underlay as thick arrows. Loopback devices are left out.
    pub fn render_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let id = |netns: &str, ifindex: u32| -> String {
            let i = self
                .namespaces
                .iter()
                .position(|n| n.name == netns)
                .map(|i| i.to_string())
                .unwrap_or_else(|| sanitize(netns));
            format!("n{i}_{ifindex}")
        };
        for ns in &self.namespaces {
            let _ = writeln!(out, "  subgraph {}[\"{}\"]", id(&ns.name, 0), ns.name);
            for l in ns.links.iter().filter(|l| l.kind != LinkKind::Loopback) {
                let mut label = format!("{}<br/>{} mtu {}", l.name, l.kind.kernel_name(), l.mtu);
                for a in l.addresses.iter().filter(|a| a.addr.is_ipv4()) {
                    let _ = write!(label, "<br/>{a}");
                }
                if let Some(t) = l.kind.tunnel() {
                    if let Some(v) = t.vni {
                        let _ = write!(label, "<br/>vni {v}");
                    }
                    if let Some(p) = t.port {
                        let _ = write!(label, " port {p}");
                    }
                }
                let _ = writeln!(out, "    {}[\"{}\"]", id(&ns.name, l.ifindex), label);
            }
            let _ = writeln!(out, "  end");
        }
        for e in &self.edges {
            match e {
                Edge::VethPair { a, b } => {
                    if self.namespace(&b.netns).is_none() {
                        let _ = writeln!(out, "  {}[\"{}\"]", id(&b.netns, b.ifindex), b);
                    }
                    let _ = writeln!(
                        out,
                        "  {} <-->|veth| {}",
                        id(&a.netns, a.ifindex),
                        id(&b.netns, b.ifindex)
                    );
                }
                Edge::BridgePort { bridge, port } => {
                    let _ = writeln!(
                        out,
                        "  {} -.-|port| {}",
                        id(&port.netns, port.ifindex),
                        id(&bridge.netns, bridge.ifindex)
                    );
                }
                Edge::TunnelUnderlay { tunnel, underlay } => {
                    let _ = writeln!(
                        out,
                        "  {} ==>|encap| {}",
                        id(&tunnel.netns, tunnel.ifindex),
                        id(&underlay.netns, underlay.ifindex)
                    );
                }
            }
        }
        out
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Maps (namespace, IFLA_LINK_NETNSID) to the namespace it designates.
#[derive(Default)]
struct PeerResolver {
    /// (from index, candidate id) -> nsid assigned by `from` to candidate.
    cache: HashMap<(usize, NetnsId), Option<i32>>,
    /// All namespaces on the host, opened on first need (peer outside the discovered set).
    all: Option<Vec<Netns>>,
    /// Resolve peers outside the discovered set (else they get no edge).
    look_outside: bool,
}

impl PeerResolver {
    fn resolve(
        &mut self,
        from: usize,
        nsid: i32,
        peer_ifindex: u32,
        socks: &mut [Rtnl],
        infos: &[NamespaceInfo],
    ) -> Result<Option<Endpoint>, TopologyError> {
        for info in infos {
            let key = (from, info.id);
            let got = match self.cache.get(&key) {
                Some(v) => *v,
                None => {
                    let v = socks[from].nsid_of(&info.netns)?;
                    self.cache.insert(key, v);
                    v
                }
            };
            if got == Some(nsid) {
                let ifname = info
                    .links
                    .iter()
                    .find(|l| l.ifindex == peer_ifindex)
                    .map(|l| l.name.clone())
                    .unwrap_or_else(|| format!("if{peer_ifindex}"));
                return Ok(Some(Endpoint {
                    netns: info.name.clone(),
                    ifname,
                    ifindex: peer_ifindex,
                }));
            }
        }
        if !self.look_outside {
            return Ok(None);
        }
        // Outside the set: look through every namespace on the host.
        if self.all.is_none() {
            self.all = Some(Netns::enumerate().unwrap_or_default());
        }
        let all = self.all.clone().unwrap_or_default();
        for ns in all.iter().filter(|n| !infos.iter().any(|i| i.id == n.id())) {
            let key = (from, ns.id());
            let got = match self.cache.get(&key) {
                Some(v) => *v,
                None => {
                    let v = socks[from].nsid_of(ns).unwrap_or(None);
                    self.cache.insert(key, v);
                    v
                }
            };
            if got == Some(nsid) {
                let ifname = Rtnl::open_in(ns)
                    .and_then(|mut r| r.links())
                    .ok()
                    .and_then(|ls| ls.into_iter().find(|l| l.ifindex == peer_ifindex))
                    .map(|l| l.name)
                    .unwrap_or_else(|| format!("if{peer_ifindex}"));
                return Ok(Some(Endpoint {
                    netns: ns.name().to_string(),
                    ifname,
                    ifindex: peer_ifindex,
                }));
            }
        }
        Ok(None)
    }
}
