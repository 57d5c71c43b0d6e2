//! The topology snapshot the core works from, taken from what capture discovered over netlink:
//! namespaces, links, routes, edges, capture points, and `ip route get` answers towards the
//! probe's addresses in every namespace in scope.

use std::net::IpAddr;

use dye_capture::netlink::{self, Route as NlRoute};
use dye_capture::topology::{Edge as NlEdge, Endpoint, Topology};
use dye_core::model::{LinkClass, PointRef, TunnelKind};
use dye_core::snapshot::{
    Address, Edge, Link, LinkKind, Namespace, OuterDf, Point, Route, RouteKind, RouteLookup,
    Snapshot, Tunnel,
};

/// Converts a discovered topology and the chosen capture points.
pub fn from_topology(topology: &Topology, source: &str, points: Vec<Point>) -> Snapshot {
    Snapshot::new(
        source.to_string(),
        topology
            .namespaces
            .iter()
            .map(|n| Namespace {
                name: n.name.clone(),
                node: n.node.clone(),
                links: n.links.iter().map(link).collect(),
                routes: n.routes.iter().map(route).collect(),
            })
            .collect(),
        topology.edges.iter().map(edge).collect(),
        points,
    )
}

/// The class of a capture point's link.
pub fn class(kind: &netlink::LinkKind) -> LinkClass {
    link_kind(kind).class()
}

fn link(l: &netlink::Link) -> Link {
    Link {
        name: l.name.clone(),
        kind: link_kind(&l.kind),
        mtu: l.mtu,
        up: l.up,
        master: l.master.clone(),
        addresses: l
            .addresses
            .iter()
            .map(|a| Address {
                addr: a.addr,
                prefix_len: a.prefix_len,
            })
            .collect(),
    }
}

fn link_kind(k: &netlink::LinkKind) -> LinkKind {
    use netlink::LinkKind as K;
    let tunnel = |kind: TunnelKind, t: &netlink::Tunnel| {
        LinkKind::Tunnel(Tunnel {
            kind,
            vni: t.vni,
            local: t.local,
            remote: t.remote,
            port: t.port,
            underlay: t.underlay_ifname.clone(),
            df: t.df.as_deref().and_then(|d| match d {
                "unset" => Some(OuterDf::Unset),
                "set" => Some(OuterDf::Set),
                "inherit" => Some(OuterDf::Inherit),
                _ => None,
            }),
        })
    };
    match k {
        K::Loopback => LinkKind::Loopback,
        K::Physical => LinkKind::Physical,
        K::Veth { .. } => LinkKind::Veth,
        K::Bridge => LinkKind::Bridge,
        K::Vxlan(t) => tunnel(TunnelKind::Vxlan, t),
        K::Geneve(t) => tunnel(TunnelKind::Geneve, t),
        K::Gre(t) => tunnel(TunnelKind::Gre, t),
        K::Ipip(t) => tunnel(TunnelKind::Ipip, t),
        K::Other { name } => LinkKind::Other { name: name.clone() },
    }
}

/// A netlink route in the core's terms.
pub fn route(r: &NlRoute) -> Route {
    Route {
        dst: r.dst.clone(),
        gateway: r.gateway,
        dev: r.dev.clone(),
        prefsrc: r.prefsrc,
        table: r.table,
        scope: r.scope.clone(),
        kind: RouteKind::parse(&r.kind),
        metric: r.metric,
        mtu: r.mtu,
        expires_s: r.expires_s,
    }
}

fn point(e: &Endpoint) -> PointRef {
    PointRef::new(e.netns.clone(), e.ifname.clone())
}

fn edge(e: &NlEdge) -> Edge {
    match e {
        NlEdge::VethPair { a, b } => Edge::VethPair {
            a: point(a),
            b: point(b),
        },
        NlEdge::BridgePort { bridge, port } => Edge::BridgePort {
            bridge: point(bridge),
            port: point(port),
        },
        NlEdge::TunnelUnderlay { tunnel, underlay } => Edge::TunnelUnderlay {
            tunnel: point(tunnel),
            underlay: point(underlay),
        },
    }
}

/// `ip route get` for each (namespace, address) pair, in the namespaces `topology` knows: one
/// netlink socket per namespace.
pub fn lookups(topology: &Topology, wanted: &[(String, IpAddr)]) -> Vec<RouteLookup> {
    let mut out = Vec::new();
    for info in &topology.namespaces {
        let dsts: Vec<IpAddr> = wanted
            .iter()
            .filter(|(ns, _)| *ns == info.name)
            .map(|(_, d)| *d)
            .collect();
        if dsts.is_empty() {
            continue;
        }
        let answers: Vec<Result<NlRoute, String>> =
            match Topology::route_get_many(&info.netns, &dsts) {
                Ok(a) => a
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect(),
                Err(e) => dsts.iter().map(|_| Err(e.to_string())).collect(),
            };
        for (dst, answer) in dsts.iter().zip(answers) {
            out.push(RouteLookup {
                netns: info.name.clone(),
                dst: *dst,
                route: answer.map(|r| route(&r)),
            });
        }
    }
    out
}
