//! Which link limits the path, asked of the discovered topology: the link after the place a
//! probe vanished, the narrowest link a passing probe crossed, the link a router that sent ICMP
//! forwards on. Tunnels count with their overhead: a VXLAN device of MTU 1450 needs 1500 bytes
//! on its underlay.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::Direction;
use crate::reconstruct::PointMeta;
use crate::snapshot::{Link, LinkKind, Snapshot as Topology};

/// The encapsulation whose overhead makes a tunnel's underlay the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encapsulation {
    /// vxlan | geneve | ...
    pub kind: String,
    /// `netns/ifname` of the tunnel device.
    pub tunnel: String,
    pub tunnel_mtu: u32,
    /// Bytes of outer headers.
    pub overhead: u32,
    /// The underlay MTU the tunnel's MTU needs (tunnel MTU + overhead).
    pub needs_underlay_mtu: u32,
}

/// A link and the largest inner packet that fits through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLimit {
    pub netns: String,
    pub ifname: String,
    pub mtu: u32,
    /// The largest packet, as the probe was at the last sighting, that fits.
    pub fits: u32,
    pub encapsulation: Option<Encapsulation>,
}

impl LinkLimit {
    pub fn name(&self) -> String {
        format!("{}/{}", self.netns, self.ifname)
    }
}

fn link<'t>(topology: &'t Topology, netns: &str, ifname: &str) -> Option<&'t Link> {
    topology.link(netns, ifname)
}

/// For a tunnel device: its underlay link and what the encapsulation costs.
pub fn underlay_of(topology: &Topology, netns: &str, tunnel: &Link) -> Option<LinkLimit> {
    let t = tunnel.kind.tunnel()?;
    let under = t.underlay.as_deref()?;
    let under_link = link(topology, netns, under)?;
    let overhead = t.overhead();
    Some(LinkLimit {
        netns: netns.to_string(),
        ifname: under.to_string(),
        mtu: under_link.mtu,
        fits: under_link.mtu.saturating_sub(overhead),
        encapsulation: Some(Encapsulation {
            kind: t.kind.as_str().to_string(),
            tunnel: format!("{netns}/{}", tunnel.name),
            tunnel_mtu: tunnel.mtu,
            overhead,
            needs_underlay_mtu: tunnel.mtu + overhead,
        }),
    })
}

/// The underlay under the tunnel an [`Encapsulation`] names.
pub fn tunnel_underlay(topology: &Topology, e: &Encapsulation) -> Option<LinkLimit> {
    let (netns, ifname) = e.tunnel.split_once('/')?;
    underlay_of(topology, netns, link(topology, netns, ifname)?)
}

/// The limit of sending through `ifname` in `netns`: the device itself, or for a tunnel the
/// tighter of the device and its underlay minus the overhead.
fn egress_limit(topology: &Topology, netns: &str, ifname: &str) -> Option<LinkLimit> {
    let l = link(topology, netns, ifname)?;
    let under = underlay_of(topology, netns, l);
    let own = LinkLimit {
        netns: netns.to_string(),
        ifname: ifname.to_string(),
        mtu: l.mtu,
        fits: l.mtu,
        encapsulation: under.as_ref().and_then(|u| u.encapsulation.clone()),
    };
    match under {
        Some(under) if under.fits < own.fits => Some(under),
        _ => Some(own),
    }
}

/// A probe was last seen at `last` going `direction`, as a packet to `dst`: which link should it
/// have crossed next, and how much fits through it?
pub fn next_link(
    topology: &Topology,
    last: &PointMeta,
    direction: Direction,
    dst: IpAddr,
) -> Option<LinkLimit> {
    if direction == Direction::In {
        // Routed (or bridged up to the stack) inside this namespace: the route's device.
        let route = topology.route(&last.netns, dst)?.as_ref().ok()?;
        return egress_limit(topology, &last.netns, route.dev.as_deref()?);
    }
    let here = link(topology, &last.netns, &last.ifname)?;
    if here.kind.tunnel().is_some() {
        return underlay_of(topology, &last.netns, here);
    }
    if let Some(peer) = topology.veth_peer(&last.netns, &last.ifname) {
        let p = link(topology, &peer.netns, &peer.ifname)?;
        return Some(LinkLimit {
            netns: peer.netns.clone(),
            ifname: peer.ifname.clone(),
            mtu: p.mtu,
            fits: p.mtu,
            encapsulation: None,
        });
    }
    None
}

/// The route a router uses towards `dst`: the link whose MTU its ICMP error advertised.
pub fn route_limit(topology: &Topology, netns: &str, dst: IpAddr) -> Option<LinkLimit> {
    let route = topology.route(netns, dst)?.as_ref().ok()?;
    egress_limit(topology, netns, route.dev.as_deref()?)
}

/// The link of `netns` with exactly `mtu` (loopback aside), when there is one.
pub fn link_with_mtu(topology: &Topology, netns: &str, mtu: u32) -> Option<LinkLimit> {
    let l = topology
        .namespace(netns)?
        .links
        .iter()
        .find(|l| l.mtu == mtu && l.kind != LinkKind::Loopback)?;
    Some(LinkLimit {
        netns: netns.to_string(),
        ifname: l.name.clone(),
        mtu,
        fits: mtu,
        encapsulation: None,
    })
}

/// The narrowest of the links a probe crossed (each `netns/ifname` once). A tunnel device wins
/// a tie: its MTU is usually where the others' MTU comes from.
pub fn narrowest(topology: &Topology, crossed: &[(String, String)]) -> Option<LinkLimit> {
    let mut best: Option<(LinkLimit, bool)> = None;
    for (netns, ifname) in crossed {
        let Some(l) = link(topology, netns, ifname) else {
            continue;
        };
        let is_tunnel = l.kind.tunnel().is_some();
        let candidate = LinkLimit {
            netns: netns.clone(),
            ifname: ifname.clone(),
            mtu: l.mtu,
            fits: l.mtu,
            encapsulation: if is_tunnel {
                underlay_of(topology, netns, l).and_then(|u| u.encapsulation)
            } else {
                None
            },
        };
        let better = match &best {
            None => true,
            Some((b, b_tunnel)) => {
                candidate.fits < b.fits || (candidate.fits == b.fits && is_tunnel && !b_tunnel)
            }
        };
        if better {
            best = Some((candidate, is_tunnel));
        }
    }
    best.map(|(b, _)| b)
}

/// Links among `crossed` other than `limit` with the same MTU.
pub fn same_mtu(
    topology: &Topology,
    crossed: &[(String, String)],
    limit: &LinkLimit,
) -> Vec<String> {
    crossed
        .iter()
        .filter(|(n, i)| !(n == &limit.netns && i == &limit.ifname))
        .filter(|(n, i)| link(topology, n, i).map(|l| l.mtu) == Some(limit.mtu))
        .map(|(n, i)| format!("{n}/{i}"))
        .collect()
}
