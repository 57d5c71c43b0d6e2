//! The topology snapshot: everything reconstruction and MTU analysis may ask of the system,
//! taken once when the scope is chosen — namespaces, links, MTUs, tunnels, addresses, routes,
//! the capture points, and route lookups (`ip route get`) towards the addresses the probes
//! carried, in every namespace in scope. After it is taken the core does no I/O; a recording
//! carries it so a trace replays anywhere.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Family, LinkClass, PointRef, TunnelKind};

/// DF handling of a tunnel's outer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OuterDf {
    Unset,
    Set,
    Inherit,
}

impl OuterDf {
    pub fn as_str(self) -> &'static str {
        match self {
            OuterDf::Unset => "unset",
            OuterDf::Set => "set",
            OuterDf::Inherit => "inherit",
        }
    }
}

/// Encapsulation parameters of a tunnel device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    pub kind: TunnelKind,
    /// VXLAN/Geneve VNI or GRE key.
    pub vni: Option<u32>,
    pub local: Option<IpAddr>,
    pub remote: Option<IpAddr>,
    /// UDP destination port (VXLAN/Geneve).
    pub port: Option<u16>,
    /// The underlay device in the same namespace.
    pub underlay: Option<String>,
    pub df: Option<OuterDf>,
}

impl Tunnel {
    /// The underlay's family: from the local or remote address, IPv4 when neither is known.
    pub fn underlay_family(&self) -> Family {
        self.local
            .or(self.remote)
            .map(Family::of)
            .unwrap_or(Family::V4)
    }

    /// Bytes this tunnel adds to an inner IP packet.
    pub fn overhead(&self) -> u32 {
        self.kind.overhead(self.underlay_family())
    }
}

/// The kind of a link, with the fields the hop model needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LinkKind {
    Loopback,
    Physical,
    Veth,
    Bridge,
    Tunnel(Tunnel),
    /// Anything else, with the kernel's name for it (macvlan, dummy, tun…).
    Other {
        name: String,
    },
}

impl LinkKind {
    pub fn class(&self) -> LinkClass {
        match self {
            LinkKind::Loopback => LinkClass::Loopback,
            LinkKind::Physical => LinkClass::Physical,
            LinkKind::Veth => LinkClass::Veth,
            LinkKind::Bridge => LinkClass::Bridge,
            LinkKind::Tunnel(t) => LinkClass::Tunnel(t.kind),
            LinkKind::Other { name } if name == "tun" => LinkClass::Tun,
            LinkKind::Other { .. } => LinkClass::Other,
        }
    }

    pub fn tunnel(&self) -> Option<&Tunnel> {
        match self {
            LinkKind::Tunnel(t) => Some(t),
            _ => None,
        }
    }
}

/// One interface address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A link as seen from its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub name: String,
    pub kind: LinkKind,
    pub mtu: u32,
    pub up: bool,
    /// The bridge this link is a port of.
    pub master: Option<String>,
    pub addresses: Vec<Address>,
}

/// What the kernel does with packets matching a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    Unicast,
    Local,
    Broadcast,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    Other(String),
}

impl RouteKind {
    pub fn parse(word: &str) -> RouteKind {
        match word {
            "unicast" => RouteKind::Unicast,
            "local" => RouteKind::Local,
            "broadcast" => RouteKind::Broadcast,
            "blackhole" => RouteKind::Blackhole,
            "unreachable" => RouteKind::Unreachable,
            "prohibit" => RouteKind::Prohibit,
            "throw" => RouteKind::Throw,
            other => RouteKind::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RouteKind::Unicast => "unicast",
            RouteKind::Local => "local",
            RouteKind::Broadcast => "broadcast",
            RouteKind::Blackhole => "blackhole",
            RouteKind::Unreachable => "unreachable",
            RouteKind::Prohibit => "prohibit",
            RouteKind::Throw => "throw",
            RouteKind::Other(s) => s,
        }
    }
}

/// A route, from a table dump or a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `default` or `ADDR/LEN`.
    pub dst: String,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
    pub prefsrc: Option<IpAddr>,
    pub table: u32,
    /// universe | link | host | …
    pub scope: String,
    pub kind: RouteKind,
    pub metric: Option<u32>,
    /// Path MTU of a cached route exception (learned from ICMP).
    pub mtu: Option<u32>,
    /// Seconds until that cached entry expires.
    pub expires_s: Option<u32>,
}

impl fmt::Display for Route {
    /// As `ip route` prints it, roughly: `10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != RouteKind::Unicast {
            write!(f, "{} ", self.kind.as_str())?;
        }
        f.write_str(&self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if self.scope != "universe" {
            write!(f, " scope {}", self.scope)?;
        }
        if let Some(src) = self.prefsrc {
            write!(f, " src {src}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if self.table != 254 {
            write!(f, " table {}", self.table)?;
        }
        if let Some(m) = self.mtu {
            write!(f, " mtu {m}")?;
        }
        if let Some(e) = self.expires_s {
            write!(f, " expires {e}s")?;
        }
        Ok(())
    }
}

/// One namespace as discovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    /// The node the namespace belongs to (a pod belongs to the namespace at its veth's far end).
    pub node: String,
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
}

impl Namespace {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// A connection between two interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Edge {
    /// The two ends of a veth pair (possibly in different namespaces).
    VethPair { a: PointRef, b: PointRef },
    /// `port` is enslaved to `bridge`.
    BridgePort { bridge: PointRef, port: PointRef },
    /// `tunnel` sends its encapsulated packets out through `underlay`.
    TunnelUnderlay {
        tunnel: PointRef,
        underlay: PointRef,
    },
}

/// A capture point: where dye listened, and how frames look there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub netns: String,
    pub ifname: String,
    pub class: LinkClass,
    pub node: String,
    pub mtu: u32,
    /// The pcap link type of frames captured here (1 Ethernet, 101 raw IP, 113 Linux cooked…).
    pub linktype: u32,
    /// On the path the scope walked: where the probe is expected. Points off it (another
    /// pod's veth in a namespace on the path) appear in reports only when they saw something.
    /// Every point is on the path when the user chose the namespaces. Added in recording v1.
    #[serde(default = "on_path_default")]
    pub on_path: bool,
}

fn on_path_default() -> bool {
    true
}

/// How the namespaces in scope were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeBy {
    /// Walked from the source by route lookups (the default).
    Path,
    /// Named by the user (`--ns`).
    Namespaces,
    /// Every namespace on the host (`--all-ns`).
    All,
}

/// How the capture listened: which kernel sockets it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SocketModel {
    /// One packet socket per namespace, not bound to an interface.
    PerNamespace,
    /// Two libpcap handles per interface (in, out).
    PerInterface,
}

/// What the scope and the capture cost. Added in recording v1 (absent in older recordings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeInfo {
    pub by: ScopeBy,
    pub sockets: SocketModel,
    /// Kernel packet sockets the capture opened.
    pub capture_sockets: u32,
}

impl Point {
    pub fn name(&self) -> String {
        format!("{}/{}", self.netns, self.ifname)
    }

    pub fn at(&self) -> PointRef {
        PointRef::new(self.netns.clone(), self.ifname.clone())
    }
}

/// The answer to `ip route get DST` inside one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLookup {
    pub netns: String,
    pub dst: IpAddr,
    /// The route, or why there is none (`Network is unreachable`).
    pub route: Result<Route, String>,
}

/// Everything the core knows of the system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Route questions asked of the snapshot that it could not answer (see
    /// [`crate::routes::answering`]). Not part of a recording.
    #[serde(skip)]
    misses: std::cell::RefCell<Vec<(String, IpAddr)>>,
    /// The source namespace's name among `namespaces`.
    pub source: String,
    pub namespaces: Vec<Namespace>,
    pub edges: Vec<Edge>,
    /// Capture points, indexed by the `point` of every capture event.
    pub points: Vec<Point>,
    pub lookups: Vec<RouteLookup>,
    /// Namespaces with iptables-legacy tables (`ip filter`…), whose rules nftables tracing
    /// cannot see. Added in recording v1; empty in older recordings.
    #[serde(default)]
    pub legacy_iptables: Vec<LegacyTables>,
    /// How the scope was chosen and what the capture opened. Added in recording v1.
    #[serde(default)]
    pub scope: Option<ScopeInfo>,
}

/// iptables-legacy tables loaded in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyTables {
    pub netns: String,
    /// `ip filter`, `ip6 nat`…
    pub tables: Vec<String>,
}

impl Snapshot {
    /// A snapshot of these namespaces, edges and capture points, with no route looked up yet.
    pub fn new(
        source: String,
        namespaces: Vec<Namespace>,
        edges: Vec<Edge>,
        points: Vec<Point>,
    ) -> Snapshot {
        Snapshot {
            source,
            namespaces,
            edges,
            points,
            ..Snapshot::default()
        }
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    pub fn link(&self, netns: &str, ifname: &str) -> Option<&Link> {
        self.namespace(netns)?.link(ifname)
    }

    pub fn point(&self, index: usize) -> Option<&Point> {
        self.points.get(index)
    }

    /// The index of the capture point at `netns/ifname`.
    pub fn point_index(&self, netns: &str, ifname: &str) -> Option<usize> {
        self.points
            .iter()
            .position(|p| p.netns == netns && p.ifname == ifname)
    }

    /// The other end of a veth.
    pub fn veth_peer(&self, netns: &str, ifname: &str) -> Option<&PointRef> {
        self.edges.iter().find_map(|e| match e {
            Edge::VethPair { a, b } if a.netns == netns && a.ifname == ifname => Some(b),
            Edge::VethPair { a, b } if b.netns == netns && b.ifname == ifname => Some(a),
            _ => None,
        })
    }

    /// The bridge `netns/ifname` is a port of.
    pub fn bridge_of(&self, netns: &str, ifname: &str) -> Option<&PointRef> {
        self.edges.iter().find_map(|e| match e {
            Edge::BridgePort { bridge, port } if port.netns == netns && port.ifname == ifname => {
                Some(bridge)
            }
            _ => None,
        })
    }

    /// The ports of bridge `netns/ifname`.
    pub fn bridge_ports<'s>(
        &'s self,
        netns: &'s str,
        ifname: &'s str,
    ) -> impl Iterator<Item = &'s PointRef> + 's {
        self.edges.iter().filter_map(move |e| match e {
            Edge::BridgePort { bridge, port }
                if bridge.netns == netns && bridge.ifname == ifname =>
            {
                Some(port)
            }
            _ => None,
        })
    }

    /// Namespaces that own `addr` on one of their links.
    pub fn owners(&self, addr: IpAddr) -> Vec<String> {
        self.namespaces
            .iter()
            .filter(|n| {
                n.links
                    .iter()
                    .any(|l| l.addresses.iter().any(|a| a.addr == addr))
            })
            .map(|n| n.name.clone())
            .collect()
    }

    /// The route `netns` uses towards `dst`, as looked up when the snapshot was taken. `None`
    /// when nobody asked (the snapshot is incomplete), `Some(Err)` when the kernel had none.
    pub fn route(&self, netns: &str, dst: IpAddr) -> Option<&Result<Route, String>> {
        let found = self
            .lookups
            .iter()
            .find(|l| l.netns == netns && l.dst == dst)
            .map(|l| &l.route);
        if found.is_none() && self.namespace(netns).is_some() {
            let mut misses = self.misses.borrow_mut();
            if !misses.iter().any(|(n, d)| n == netns && *d == dst) {
                misses.push((netns.to_string(), dst));
            }
        }
        found
    }

    /// The route questions asked since the last call that the snapshot could not answer.
    pub fn take_misses(&self) -> Vec<(String, IpAddr)> {
        std::mem::take(&mut *self.misses.borrow_mut())
    }

    /// Adds lookups, replacing none that exist.
    pub fn add_lookups(&mut self, lookups: Vec<RouteLookup>) {
        for l in lookups {
            if !self
                .lookups
                .iter()
                .any(|h| h.netns == l.netns && h.dst == l.dst)
            {
                self.lookups.push(l);
            }
        }
    }
}
