//! The source's cached path MTU. The probes go out of a raw socket, so for IPv4 nothing is
//! cached: the kernel hands an error about an echo request, a UDP datagram or a TCP SYN to the
//! socket that sent it (ping_err, udp_err, tcp_v4_err) and there is none. IPv6 differs: an ICMPv6
//! Packet Too Big about an echo request updates the destination's path MTU in the source's
//! routing cache regardless of sockets (icmpv6_err → ip6_update_pmtu), exactly as it would for
//! the pod's own traffic. dye reads the cached entry before and after the search and, if its
//! probes changed it, flushes the route cache of the source namespace so that the pod's traffic
//! relearns from its own packets.

use std::net::IpAddr;
use std::process::Command;

use dye_capture::netlink::Route;
use dye_capture::topology::Topology;
use dye_capture::Netns;

use super::report::CacheReport;

/// The route `ip route get` shows for `dst` in `netns`, cache details included.
pub fn snapshot(netns: &Netns, dst: IpAddr) -> Option<Route> {
    Topology::route_get(netns, dst).ok()
}

fn describe(r: &Option<Route>) -> Option<String> {
    r.as_ref().map(|r| r.to_string())
}

/// Compares the cached path MTU with `before`; if the search changed it, flushes the cache and
/// says so.
pub fn restore_if_changed(netns: &Netns, dst: IpAddr, before: Option<Route>) -> CacheReport {
    let after = snapshot(netns, dst);
    let mtu_before = before.as_ref().and_then(|r| r.mtu);
    let mtu_after = after.as_ref().and_then(|r| r.mtu);
    if mtu_before == mtu_after {
        let detail = match mtu_after {
            Some(m) => {
                format!("the source already had a cached path MTU of {m} towards {dst}; unchanged")
            }
            None => format!("no cached path MTU towards {dst} before or after: nothing to restore"),
        };
        return CacheReport {
            before: describe(&before),
            after: describe(&after),
            restored: false,
            detail,
        };
    }
    let family = if dst.is_ipv4() { "-4" } else { "-6" };
    let flushed = netns
        .run(move || {
            Command::new("ip")
                .args([family, "route", "flush", "cache"])
                .output()
        })
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| format!("running ip: {e}")))
        .and_then(|o| {
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
            }
        });
    let restored_route = snapshot(netns, dst);
    let now = restored_route.as_ref().and_then(|r| r.mtu);
    let was = mtu_before
        .map(|m| format!("a cached path MTU of {m}"))
        .unwrap_or_else(|| "no cached path MTU".into());
    let changed = format!(
        "dye's probes changed the source's cached path MTU towards {dst} from {} to {}",
        mtu_before
            .map(|m| m.to_string())
            .unwrap_or_else(|| "none".into()),
        mtu_after
            .map(|m| m.to_string())
            .unwrap_or_else(|| "none".into()),
    );
    let (restored, detail) = match flushed {
        Ok(()) if now == mtu_before => (
            true,
            format!(
                "{changed}; flushed the route cache of {} ({family} route flush cache), back to {was}",
                netns.name()
            ),
        ),
        Ok(()) => (
            now.is_none(),
            format!(
                "{changed}; flushed the route cache of {}: it had {was} and now has {} (the kernel relearns from the pod's own traffic)",
                netns.name(),
                now.map(|m| format!("a cached path MTU of {m}"))
                    .unwrap_or_else(|| "none".into())
            ),
        ),
        Err(e) => (
            false,
            format!(
                "{changed}, and flushing it failed ({e}): run `ip {family} route flush cache` in {}",
                netns.name()
            ),
        ),
    };
    CacheReport {
        before: describe(&before),
        after: describe(&after),
        restored,
        detail,
    }
}
