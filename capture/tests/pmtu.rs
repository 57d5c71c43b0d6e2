//! Per-destination flushing of cached path MTUs (route exceptions) against throwaway
//! namespaces (needs root), checked with `ip route get`. Every packet stays between namespaces
//! created here, and TmpNs removes them on drop, also when a test fails.

mod tmpns;

use std::net::IpAddr;
use std::process::Command;

use dye_capture::netlink::{self, NetlinkError, Rtnl};
use dye_capture::Netns;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `ip [-6] route get DST` in `ns`, as text.
fn ip_route_get(lab: &tmpns::TmpNs, ns: &str, dst: &str) -> String {
    let fam = if dst.contains(':') { "-6" } else { "-4" };
    lab.ip(ns, &[fam, "route", "get", dst])
}

/// Sends one DF ping of 1428 bytes that does not fit the 1300-byte link behind the router: the
/// router answers "fragmentation needed" / "packet too big" and the sender caches a PMTU
/// exception of 1300 towards `dst`. ping's own exit status does not matter.
fn learn_pmtu(from: &str, dst: &str) {
    for _ in 0..2 {
        let _ = Command::new("ip")
            .args([
                "netns", "exec", from, "ping", "-q", "-M", "do", "-s", "1400",
            ])
            .args(["-c", "1", "-W", "1", dst])
            .output();
    }
}

#[test]
fn pmtu_exceptions_flush_one_destination() {
    need_root!();
    let mut ns = tmpns::TmpNs::new();
    let (a, r, b) = tmpns::routed(&mut ns, 95);
    ns.ip(&r, &["link", "set", "rs", "mtu", "1300"]);
    ns.ip(&b, &["link", "set", "eth0", "mtu", "1300"]);
    ns.ip(&b, &["addr", "add", "10.95.2.3/24", "dev", "eth0"]);
    ns.ip(
        &b,
        &[
            "-6",
            "addr",
            "add",
            "fd00:95:2::3/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    let dsts = ["10.95.2.2", "10.95.2.3", "fd00:95:2::2", "fd00:95:2::3"];
    for d in dsts {
        learn_pmtu(&a, d);
    }
    let cached = |d: &str| ip_route_get(&ns, &a, d).contains("mtu 1300");
    for d in dsts {
        assert!(cached(d), "{d}: {}", ip_route_get(&ns, &a, d));
    }

    // route_get reports the exception: cached MTU and remaining lifetime.
    let an = Netns::open_str(&a).unwrap();
    let mut rtnl = Rtnl::open_in(&an).unwrap();
    let links = rtnl.links().unwrap();
    for d in dsts {
        let route = rtnl.route_get(ip(d), &links).unwrap();
        assert_eq!(route.mtu, Some(1300), "{d}: {route}");
        assert!(matches!(route.expires_s, Some(1..=600)), "{d}: {route}");
        assert_eq!(route.dev.as_deref(), Some("eth0"));
    }
    let listed: Vec<String> = rtnl
        .cached_routes(&links)
        .unwrap()
        .into_iter()
        .filter(|r| r.mtu == Some(1300))
        .map(|r| r.dst)
        .collect();
    for want in [
        "10.95.2.2/32",
        "10.95.2.3/32",
        "fd00:95:2::2/128",
        "fd00:95:2::3/128",
    ] {
        assert!(listed.iter().any(|d| d == want), "{want} in {listed:?}");
    }

    // IPv6: exactly one exception goes.
    assert!(rtnl.flush_cached_route(ip("fd00:95:2::2")).unwrap());
    assert!(
        !cached("fd00:95:2::2"),
        "{}",
        ip_route_get(&ns, &a, "fd00:95:2::2")
    );
    for d in ["fd00:95:2::3", "10.95.2.2", "10.95.2.3"] {
        assert!(cached(d), "{d} must survive: {}", ip_route_get(&ns, &a, d));
    }
    let after = rtnl.route_get(ip("fd00:95:2::2"), &links).unwrap();
    assert_eq!((after.mtu, after.expires_s), (None, None), "{after}");
    // Nothing left to remove, and a destination that never had one: false, nothing touched.
    assert!(!netlink::flush_cached_route(&an, ip("fd00:95:2::2")).unwrap());
    assert!(!netlink::flush_cached_route(&an, ip("fd00:95:1::2")).unwrap());
    assert!(cached("fd00:95:2::3"));

    // IPv4: the kernel has no per-destination removal; we refuse rather than flush all, and
    // a destination with nothing cached is simply false.
    assert!(!rtnl.flush_cached_route(ip("10.95.1.2")).unwrap());
    match rtnl.flush_cached_route(ip("10.95.2.2")) {
        Err(e @ NetlinkError::Unsupported { .. }) => {
            assert!(e.to_string().contains("10.95.2.2"), "{e}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(cached("10.95.2.2") && cached("10.95.2.3"));
    // The experiment behind that: RTM_DELROUTE with RTM_F_CLONED for a /32 is answered
    // ESRCH (fib_table_delete looks for a FIB entry, not an exception) and removes nothing.
    assert_eq!(
        raw_delroute_cloned_v4(&an, "10.95.2.2".parse().unwrap()),
        Some(libc::ESRCH)
    );
    assert!(cached("10.95.2.2") && cached("10.95.2.3"));
    // The namespace-wide IPv4 flush takes both, in this namespace only, and leaves IPv6 alone.
    netlink::flush_route_cache_v4(&an).unwrap();
    assert!(!cached("10.95.2.2") && !cached("10.95.2.3"));
    assert!(cached("fd00:95:2::3"));
    let _ = (r, b);
}

/// Sends `RTM_DELROUTE` for `dst/32` with `RTM_F_CLONED` from inside `ns` and returns the errno
/// the kernel answers (None: success).
fn raw_delroute_cloned_v4(ns: &Netns, dst: std::net::Ipv4Addr) -> Option<i32> {
    use netlink_packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
    };
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    let sock = ns
        .run(|| -> std::io::Result<Socket> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind_auto()?;
            s.connect(&SocketAddr::new(0, 0))?;
            Ok(s)
        })
        .unwrap()
        .unwrap();
    let mut req = RouteMessage::default();
    req.header.address_family = AddressFamily::Inet;
    req.header.destination_prefix_length = 32;
    req.header.table = 254;
    req.header.flags = RouteFlags::Cloned;
    req.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut nl = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(req)),
    );
    nl.finalize();
    let mut out = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut out);
    sock.send(&out, 0).unwrap();
    let mut buf = Vec::with_capacity(8192);
    sock.recv(&mut buf, 0).unwrap();
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf)
        .unwrap()
        .payload
    {
        NetlinkPayload::Error(e) => e.code.map(|c| -c.get()),
        other => panic!("unexpected reply {other:?}"),
    }
}
