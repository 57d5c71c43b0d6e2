//! The source's cached path MTU. The probes go out of a raw socket, so for IPv4 nothing is
//! cached: the kernel hands an error about an echo request, a UDP datagram or a TCP SYN to the
//! socket that sent it (ping_err, udp_err, tcp_v4_err) and there is none. IPv6 differs: an ICMPv6
//! Packet Too Big about an echo request updates the destination's path MTU in the source's
//! routing cache regardless of sockets (icmpv6_err → ip6_update_pmtu), exactly as it would for
//! the pod's own traffic. dye reads the cached entry before and after the search and, if its
//! probes changed it, removes it so that the pod's traffic relearns from its own packets.

use std::net::IpAddr;

use dye_capture::netlink::{self, NetlinkError};
use dye_capture::topology::Topology;
use dye_capture::Netns;
use dye_core::seam::{PmtuRemoval, PmtuRestore};
use dye_core::snapshot::Route;

use super::snapshot::route;

/// The route `ip route get` shows for `dst` in `netns`, cache details included.
pub fn cached(netns: &Netns, dst: IpAddr) -> Option<Route> {
    Topology::route_get(netns, dst).ok().map(|r| route(&r))
}

/// Compares the cached path MTU with `before`; if the search changed it, removes it.
pub fn restore_if_changed(netns: &Netns, dst: IpAddr, before: Option<Route>) -> PmtuRestore {
    let after = cached(netns, dst);
    let mtu_before = before.as_ref().and_then(|r| r.mtu);
    let mtu_after = after.as_ref().and_then(|r| r.mtu);
    if mtu_before == mtu_after {
        return PmtuRestore {
            before,
            now: after.clone(),
            after,
            removed: None,
        };
    }
    let removed = remove_cached(netns, dst);
    PmtuRestore {
        before,
        after,
        removed: Some(removed),
        now: cached(netns, dst),
    }
}

/// Removes the exception towards `dst` alone (IPv6); IPv4 has no per-destination removal, so
/// the namespace's IPv4 exceptions are invalidated together, and the report says so.
fn remove_cached(netns: &Netns, dst: IpAddr) -> Result<PmtuRemoval, String> {
    match netlink::flush_cached_route(netns, dst) {
        Ok(_) => Ok(PmtuRemoval::OneDestination),
        Err(NetlinkError::Unsupported { .. }) => netlink::flush_route_cache_v4(netns)
            .map(|()| PmtuRemoval::WholeNamespace)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
