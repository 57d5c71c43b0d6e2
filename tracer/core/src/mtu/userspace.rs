//! Tunnels the kernel does not know as tunnels: a TUN device whose packets a userspace
//! forwarder wraps in UDP (flannel's `udp` backend on 8285, and its kind). The snapshot shows
//! only a `tun` link with no underlay, so the encapsulation and its overhead are read from the
//! wire: the outer headers on the uplink the inner packet left by after the TUN device.

use dye_decode::model::Tunnel;

use super::links::{Encapsulation, LinkLimit};
use crate::model::Direction;
use crate::path::{Hop, Leg};
use crate::snapshot::Snapshot;

/// Outer IPv4 or IPv6 header plus UDP: what a userspace IP-in-UDP forwarder adds.
fn ip_in_udp_overhead(hop: &Hop) -> Option<u32> {
    let outer = hop.outer.first()?;
    (outer.tunnel == Tunnel::IpInUdp.name()).then_some(if outer.src.is_ipv4() {
        20 + 8
    } else {
        40 + 8
    })
}

/// For the forward hop `split` (an IP-in-UDP packet leaving a node, seen split on its uplink):
/// the uplink as a limit, with the encapsulation of the TUN device the inner packet left through
/// just before in the same namespace.
pub fn observed_underlay(topology: &Snapshot, hops: &[Hop], split: &Hop) -> Option<LinkLimit> {
    let overhead = ip_in_udp_overhead(split)?;
    let uplink = topology.link(&split.netns, &split.ifname)?;
    let tun = hops
        .iter()
        .take_while(|h| h.index != split.index)
        .filter(|h| {
            h.leg == Leg::Forward
                && h.direction == Direction::Out
                && h.netns == split.netns
                && h.outer.is_empty()
        })
        .last()?;
    let tun_link = topology.link(&tun.netns, &tun.ifname)?;
    Some(LinkLimit {
        netns: split.netns.clone(),
        ifname: split.ifname.clone(),
        mtu: uplink.mtu,
        fits: uplink.mtu.saturating_sub(overhead),
        encapsulation: Some(Encapsulation {
            kind: Tunnel::IpInUdp.name().to_string(),
            tunnel: format!("{}/{}", tun.netns, tun.ifname),
            tunnel_mtu: tun_link.mtu,
            overhead,
            needs_underlay_mtu: tun_link.mtu + overhead,
        }),
    })
}
