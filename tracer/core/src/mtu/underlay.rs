//! Limits beyond the node: a tunnel's outer packets cross the underlay, and on a routed
//! underlay a router port further on may be narrower than anything on the node. When a probe
//! vanishes inside a tunnel and nothing on the node explains it, the outer packet's way to the
//! remote endpoint is walked through the snapshot (route lookups, veth peers) to the link that
//! does — and what the node learned on the way is gathered: the ICMP Fragmentation Needed a
//! router sent it about the outer packet, and the path MTU it cached for the remote endpoint.
//!
//! Why the pod never hears of it: the router's ICMP goes to the outer source (the node), which
//! caches the path MTU for the remote endpoint; from then on the node's tunnel device drops
//! inner packets that no longer fit, and nobody sends the pod an ICMP error about them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::links::{Encapsulation, LinkLimit};
use crate::model::{Direction, IcmpKind, PointRef};
use crate::path::{Hop, Leg, Next, Transport};
use crate::snapshot::Snapshot;

/// How far a walk over the underlay goes (namespaces): a lab or a node's view is small.
const MAX_HOPS: usize = 8;

/// One link the outer packet leaves through on its way to the remote endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnderlayHop {
    pub at: PointRef,
    pub mtu: u32,
    /// The path MTU this namespace has cached towards the remote endpoint (route exception).
    pub cached_pmtu: Option<u32>,
}

/// The underlay between a node's tunnel and its remote endpoint, and the limit on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beyond {
    /// The namespace that encapsulates (the node) and the remote endpoint (the peer's VTEP).
    pub node: String,
    pub remote: IpAddr,
    /// Every egress link on the way, in order.
    pub path: Vec<UnderlayHop>,
    /// The narrowest of them: `fits` is what an inner packet may be after the overhead.
    pub limit: LinkLimit,
    /// The node's cached path MTU towards `remote`, when it has one.
    pub node_pmtu: Option<u32>,
}

/// An ICMP Fragmentation Needed (or Packet Too Big) about an outer packet, sent to the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub sender: IpAddr,
    /// The namespace(s) owning the sender's address.
    pub sender_netns: Vec<String>,
    /// The node it was sent to (the outer source).
    pub to: IpAddr,
    pub mtu: Option<u32>,
    /// Where it was first seen.
    pub seen_at: PointRef,
}

/// What dye saw of the outer packets on the underlay: for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The refusal the node got, if one was captured.
    pub refusal: Option<Refusal>,
    /// Where the outer packet of a vanished probe was seen last, beyond its node.
    pub outer_last_seen: Option<Next>,
}

/// The limit beyond the node, with what the capture showed of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeyondNode {
    pub underlay: Beyond,
    pub evidence: Evidence,
}

/// The limit `bounding` found beyond its node, with the refusal and the outer packet's last
/// sighting taken from every probe of the search.
pub fn beyond_node(
    snapshot: &Snapshot,
    bounding: &Beyond,
    probes: &[(bool, &[Hop])],
) -> BeyondNode {
    let refusal = probes
        .iter()
        .find_map(|(_, hops)| refusal(snapshot, &bounding.node, hops));
    let outer_last_seen = probes
        .iter()
        .filter(|(vanished, _)| *vanished)
        .filter_map(|(_, hops)| outer_last_seen(&bounding.node, hops))
        .next();
    BeyondNode {
        underlay: bounding.clone(),
        evidence: Evidence {
            refusal,
            outer_last_seen,
        },
    }
}

/// The remote endpoint `node` sends its tunnel's packets to, as the capture showed it: the
/// outer destination of a packet whose outer source the node owns.
pub fn remote_of(snapshot: &Snapshot, node: &str, outers: &[(IpAddr, IpAddr)]) -> Option<IpAddr> {
    outers
        .iter()
        .find(|(src, _)| snapshot.owners(*src).iter().any(|o| o == node))
        .map(|(_, dst)| *dst)
}

/// Walks the outer packet's way from `from` to `remote`: at each namespace the route towards
/// `remote`, its device, then the veth peer, until a namespace owning `remote` (or a bridge,
/// a switched segment, or a namespace dye cannot see). `tunnel` gives the overhead.
pub fn walk(
    snapshot: &Snapshot,
    node: &str,
    from: &str,
    remote: IpAddr,
    tunnel: &Encapsulation,
) -> Option<Beyond> {
    let mut path: Vec<UnderlayHop> = Vec::new();
    let mut ns = from.to_string();
    let mut node_pmtu = None;
    for _ in 0..MAX_HOPS {
        if snapshot.owners(remote).contains(&ns) {
            break;
        }
        let Some(Ok(route)) = snapshot.route(&ns, remote) else {
            break;
        };
        let Some(dev) = route.dev.as_deref() else {
            break;
        };
        let Some(link) = snapshot.link(&ns, dev) else {
            break;
        };
        if ns == node {
            node_pmtu = route.mtu;
        }
        path.push(UnderlayHop {
            at: PointRef::new(ns.clone(), dev.to_string()),
            mtu: link.mtu,
            cached_pmtu: route.mtu,
        });
        let Some(peer) = snapshot.veth_peer(&ns, dev) else {
            break;
        };
        let far = snapshot.link(&peer.netns, &peer.ifname);
        if far.is_none_or(|l| l.master.is_some()) || path.iter().any(|h| h.at.netns == peer.netns) {
            // A switch port (the segment's far side is the next hop itself), a namespace out
            // of view, or a loop.
            break;
        }
        ns = peer.netns.clone();
    }
    let narrowest = path.iter().min_by_key(|h| h.mtu)?;
    let limit = LinkLimit {
        netns: narrowest.at.netns.clone(),
        ifname: narrowest.at.ifname.clone(),
        mtu: narrowest.mtu,
        fits: narrowest.mtu.saturating_sub(tunnel.overhead),
        encapsulation: Some(tunnel.clone()),
    };
    Some(Beyond {
        node: node.to_string(),
        remote,
        path,
        limit,
        node_pmtu,
    })
}

/// The ICMP errors about too-big packets sent to `node` (not to the probe's source) among a
/// probe's hops: a router refusing an outer packet.
pub fn refusal(snapshot: &Snapshot, node: &str, hops: &[Hop]) -> Option<Refusal> {
    hops.iter()
        .filter(|h| h.leg == Leg::Return && h.direction == Direction::Out)
        .find_map(|h| {
            let Transport::Icmp {
                kind: IcmpKind::TooBig,
                mtu,
                ..
            } = h.packet.transport
            else {
                return None;
            };
            if !snapshot.owners(h.packet.dst).iter().any(|o| o == node) {
                return None;
            }
            Some(Refusal {
                sender: h.packet.src,
                sender_netns: snapshot.owners(h.packet.src),
                to: h.packet.dst,
                mtu,
                seen_at: h.at(),
            })
        })
}

/// The last forward sighting of an encapsulated probe outside `node`: how far the outer
/// packet got.
pub fn outer_last_seen(node: &str, hops: &[Hop]) -> Option<Next> {
    hops.iter()
        .rev()
        .find(|h| h.leg == Leg::Forward && !h.outer.is_empty() && h.netns != node)
        .map(|h| Next {
            at: h.at(),
            direction: h.direction,
        })
}
