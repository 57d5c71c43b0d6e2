//! Namespaces, discovery and live capture against throwaway namespaces (needs root).

mod tmpns;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dye_capture::netlink::LinkKind;
use dye_capture::topology::Edge;
use dye_capture::{
    CaptureConfig, CapturePoint, CaptureSession, Direction, Event, Netns, NetnsError, PcapngWriter,
    SectionInfo, SocketModel, Topology,
};

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

#[test]
fn bad_references_are_named() {
    need_root!();
    match Netns::open_str("dyetmp-does-not-exist") {
        Err(NetnsError::NotFound { reference, .. }) => {
            assert_eq!(reference, "dyetmp-does-not-exist")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    match Netns::open_str("/etc/hostname") {
        Err(e @ NetnsError::NotNetns { .. }) => assert!(e.to_string().contains("/etc/hostname")),
        other => panic!("expected NotNetns, got {other:?}"),
    }
    match Netns::open_str("/proc/self/ns/mnt") {
        Err(e @ NetnsError::NotNetns { .. }) => {
            assert!(e.to_string().contains("mount namespace"), "{e}")
        }
        other => panic!("expected NotNetns, got {other:?}"),
    }
    match Netns::open_str("pid:999999999") {
        Err(NetnsError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    // PID 1 may be out of reach in a sandbox: then the error says so and names `host`.
    match Netns::open_str("host") {
        Ok(host) => assert_eq!(host.name(), "host"),
        Err(e @ NetnsError::PermissionDenied { .. }) => assert!(e.to_string().contains("host")),
        Err(e) => panic!("host: {e}"),
    }
}

#[test]
fn run_enters_only_a_dedicated_thread() {
    need_root!();
    let seg = tmpns::segment();
    let a = Netns::open_str(&seg.a).unwrap();
    let mine = Netns::current().unwrap();
    let inside = a.run(|| Netns::current().unwrap().id()).unwrap();
    assert_eq!(inside, a.id());
    assert_eq!(
        Netns::current().unwrap().id(),
        mine.id(),
        "caller must not move"
    );
    let all = Netns::enumerate().unwrap();
    assert!(all.iter().any(|n| n.id() == a.id()));
    let mut ids: Vec<_> = all.iter().map(|n| n.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "deduplicated by inode");
}

#[test]
fn discovery_joins_namespaces() {
    need_root!();
    let seg = tmpns::segment();
    let nss: Vec<Netns> = [&seg.a, &seg.b, &seg.c]
        .iter()
        .map(|n| Netns::open_str(n).unwrap())
        .collect();
    let topo = Topology::discover(&nss).unwrap();
    let peer = topo.veth_peer(&seg.a, "eth0").expect("a/eth0 peer");
    assert_eq!(
        (peer.netns.as_str(), peer.ifname.as_str()),
        (seg.b.as_str(), "va")
    );
    let peer = topo.veth_peer(&seg.b, "vc").expect("b/vc peer");
    assert_eq!(
        (peer.netns.as_str(), peer.ifname.as_str()),
        (seg.c.as_str(), "eth0")
    );
    let ports: Vec<&str> = topo
        .edges
        .iter()
        .filter_map(|e| match e {
            Edge::BridgePort { bridge, port } if bridge.ifname == "br0" => {
                Some(port.ifname.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(ports, vec!["va", "vc"]);
    let b = topo.namespace(&seg.b).unwrap();
    let vx = b.link("vx0").unwrap();
    assert_eq!(vx.mtu, 1450);
    let LinkKind::Vxlan(t) = &vx.kind else {
        panic!("vx0 kind {:?}", vx.kind)
    };
    assert_eq!(t.vni, Some(42));
    assert_eq!(t.port, Some(4789));
    assert_eq!(t.local, Some("10.99.0.3".parse().unwrap()));
    assert_eq!(t.underlay_ifname.as_deref(), Some("br0"));
    assert_eq!(t.df.as_deref(), Some("set"));
    assert!(topo.edges.iter().any(|e| matches!(e, Edge::TunnelUnderlay { tunnel, underlay } if tunnel.ifname == "vx0" && underlay.ifname == "br0")));
    assert_eq!(
        topo.namespace(&seg.a).unwrap().node,
        seg.b,
        "leaf namespace belongs to its peer"
    );
    let r = Topology::route_get(&nss[0], "10.99.0.2".parse::<IpAddr>().unwrap()).unwrap();
    assert_eq!(r.dev.as_deref(), Some("eth0"));
    assert_eq!(r.prefsrc, Some("10.99.0.1".parse().unwrap()));
    let text = topo.render_text();
    assert!(text.contains("vni 42"), "{text}");
    let mermaid = topo.render_mermaid();
    assert!(mermaid.starts_with("flowchart LR"));
    let json = serde_json::to_value(&topo).unwrap();
    assert_eq!(json["schema"], "dye.topology/v1");
}

fn point(ns: &str, ifname: &str) -> CapturePoint {
    CapturePoint {
        netns: Netns::open_str(ns).unwrap(),
        ifname: ifname.into(),
        kind: "veth".into(),
        mtu: 1500,
        node: ns.into(),
    }
}

#[test]
fn capture_directions_order_and_pcapng() {
    need_root!();
    let seg = tmpns::segment();
    let mut cfg = CaptureConfig::new(vec![
        point(&seg.a, "eth0"),
        point(&seg.b, "va"),
        point(&seg.b, "vc"),
        point(&seg.c, "eth0"),
    ]);
    cfg.filter = Some("icmp".into());
    cfg.duration = Some(Duration::from_secs(3));
    let session = CaptureSession::start(cfg).unwrap();
    seg.ns.exec(
        &seg.a,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.99.0.2"],
    );
    let mut obs = Vec::new();
    while let Some(ev) = session.recv() {
        if let Event::Packet(o) = ev {
            obs.push(o);
        }
    }
    let points: Vec<_> = session.points().to_vec();
    let stats = session.join().unwrap();
    assert!(
        obs.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "time-ordered"
    );
    // Echo requests (ICMP type 8 at Ethernet 14 + IP 20): out of a/eth0, in on b/va,
    // out of b/vc, in on c/eth0; replies the other way.
    let count = |p: usize, d: Direction, icmp_type: u8| {
        obs.iter()
            .filter(|o| o.point == p && o.direction == d && o.frame.get(34) == Some(&icmp_type))
            .count()
    };
    assert_eq!(count(0, Direction::Out, 8), 3);
    assert_eq!(count(1, Direction::In, 8), 3);
    assert_eq!(count(2, Direction::Out, 8), 3);
    assert_eq!(count(3, Direction::In, 8), 3);
    assert_eq!(count(3, Direction::Out, 0), 3);
    assert_eq!(count(0, Direction::In, 0), 3);
    assert_eq!(count(0, Direction::In, 8), 0);
    assert_eq!(stats.iter().map(|s| s.captured()).sum::<u64>(), 24);
    assert!(stats.iter().all(|s| s.kernel_dropped == 0));
    // The direction is filtered in the kernel: each ring only received its own direction.
    assert_eq!(
        stats.iter().map(|s| s.kernel_received).sum::<u64>(),
        24,
        "{stats:?}"
    );
    // hop latency is positive along the path
    let req0 = obs
        .iter()
        .find(|o| o.point == 0 && o.frame.get(34) == Some(&8))
        .unwrap();
    let req3 = obs
        .iter()
        .find(|o| o.point == 3 && o.frame.get(34) == Some(&8))
        .unwrap();
    assert!(req3.ts_ns >= req0.ts_ns && req3.ts_ns - req0.ts_ns < 1_000_000_000);

    // pcapng through tshark
    let dir = std::env::temp_dir().join(format!("{}-cap", seg.ns.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.pcapng");
    let mut w = PcapngWriter::new(
        std::io::BufWriter::new(std::fs::File::create(&path).unwrap()),
        &SectionInfo::for_this_host(),
    )
    .unwrap();
    for p in &points {
        w.add_interface(&p.interface_info()).unwrap();
    }
    for o in &obs {
        let c = format!("hop at {}", points[o.point].point.name());
        w.write_packet(
            o.point as u32,
            o.ts_ns,
            o.orig_len,
            &o.frame,
            Some(o.direction),
            &[&c],
        )
        .unwrap();
    }
    drop(w);
    let out = tmpns::sh(&[
        "tshark",
        "-r",
        path.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.comment",
        "-e",
        "frame.time_epoch",
        "-e",
        "frame.packet_flags_direction",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 24, "{out}");
    let first: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(first[0], format!("{}/eth0", seg.a));
    assert_eq!(first[1], format!("hop at {}/eth0", seg.a));
    let frac = first[2].split('.').nth(1).unwrap();
    assert_eq!(frac.len(), 9, "nanosecond timestamps: {}", first[2]);
    assert!(
        first[3] == "2" || first[3] == "0x00000002",
        "outbound flag: {}",
        lines[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vanished_interface_is_reported_not_fatal() {
    need_root!();
    let seg = tmpns::segment();
    let mut cfg = CaptureConfig::new(vec![point(&seg.b, "vc"), point(&seg.a, "eth0")]);
    cfg.filter = Some("icmp".into());
    cfg.duration = Some(Duration::from_secs(3));
    let session = CaptureSession::start(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    seg.ns.ip(&seg.b, &["link", "del", "vc"]);
    let t0 = Instant::now();
    seg.ns.exec(
        &seg.a,
        &["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.99.0.3"],
    );
    let mut lost = None;
    let mut after = 0;
    while let Some(ev) = session.recv() {
        match ev {
            Event::PointLost { point, reason } => lost = Some((point, reason)),
            Event::Packet(o) if o.point == 1 => after += 1,
            _ => {}
        }
    }
    let stats = session.join().unwrap();
    let (p, reason) = lost.expect("PointLost event");
    assert_eq!(p, 0);
    assert!(reason.contains("disappeared"), "{reason}");
    assert!(stats[0].lost.is_some());
    assert!(after >= 4, "capture went on elsewhere ({after} packets)");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn missing_interface_and_bad_filter_fail_before_capture() {
    need_root!();
    let seg = tmpns::segment();
    let err = CaptureSession::start(CaptureConfig::new(vec![point(&seg.a, "nope0")])).unwrap_err();
    assert!(
        err.to_string().contains("nope0") && err.to_string().contains(&seg.a),
        "{err}"
    );
    let mut cfg = CaptureConfig::new(vec![point(&seg.a, "eth0")]);
    cfg.filter = Some("icmp and and".into());
    let err = CaptureSession::start(cfg).unwrap_err();
    assert!(err.to_string().contains("icmp and and"), "{err}");
}

/// Opens (creating) TUN device `name` in the calling thread's namespace; the device has a
/// carrier while the returned fd is open.
#[allow(unsafe_code)]
fn open_tun(name: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: open(2) of a fixed NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: valid fd; `req` is a live ifreq with a NUL-terminated name (shorter than 16).
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::TUNSETIFF as _,
            &mut req,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

#[test]
fn namespace_sockets_see_what_interface_handles_see_and_raw_ip_devices() {
    need_root!();
    let seg = tmpns::segment();
    // A TUN device in a (raw IP, no link header), held open here: it has a carrier.
    let a = Netns::open_str(&seg.a).unwrap();
    let _tun = a.run(|| open_tun("tun0")).unwrap().expect("TUN device");
    seg.ns.ip(&seg.a, &["link", "set", "tun0", "up"]);
    seg.ns
        .ip(&seg.a, &["addr", "add", "10.98.0.1/24", "dev", "tun0"]);
    let mut cfg = CaptureConfig::new(vec![
        point(&seg.a, "eth0"),
        point(&seg.b, "va"),
        point(&seg.b, "vc"),
        point(&seg.c, "eth0"),
        point(&seg.a, "tun0"),
    ]);
    cfg.sockets = SocketModel::PerNamespace;
    cfg.filter = Some("icmp".into());
    cfg.duration = Some(Duration::from_secs(3));
    let session = CaptureSession::start(cfg).unwrap();
    assert_eq!(
        session
            .points()
            .iter()
            .map(|p| p.linktype)
            .collect::<Vec<_>>(),
        [1, 1, 1, 1, 101],
        "Ethernet veths, a raw-IP TUN"
    );
    seg.ns.exec(
        &seg.a,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.99.0.2"],
    );
    // Nobody answers behind the TUN: the pings fail, their requests still leave through it.
    let _ = std::process::Command::new("ip")
        .args([
            "netns", "exec", &seg.a, "ping", "-c", "2", "-i", "0.2", "-W", "1",
        ])
        .arg("10.98.0.2")
        .output();
    let mut obs = Vec::new();
    while let Some(ev) = session.recv() {
        if let Event::Packet(o) = ev {
            obs.push(o);
        }
    }
    let stats = session.join().unwrap();
    assert!(obs.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    // The same sightings per point and direction as per-interface handles
    // (`capture_directions_order_and_pcapng`): one namespace socket serves a, one b, one c.
    let count = |p: usize, d: Direction, icmp_type: u8| {
        obs.iter()
            .filter(|o| o.point == p && o.direction == d && o.frame.get(34) == Some(&icmp_type))
            .count()
    };
    assert_eq!(count(0, Direction::Out, 8), 3);
    assert_eq!(count(1, Direction::In, 8), 3);
    assert_eq!(count(2, Direction::Out, 8), 3);
    assert_eq!(count(3, Direction::In, 8), 3);
    assert_eq!(count(3, Direction::Out, 0), 3);
    assert_eq!(count(0, Direction::In, 0), 3);
    assert_eq!(count(0, Direction::In, 8), 0);
    assert_eq!(
        stats.iter().take(4).map(|s| s.captured()).sum::<u64>(),
        24,
        "{stats:?}"
    );
    assert!(stats.iter().all(|s| s.kernel_dropped == 0));
    // Kernel timestamps, taken as each frame was delivered: the request reaches c after it
    // left a, and within the ping's round trip.
    let first = |p: usize, t: u8| {
        obs.iter()
            .find(|o| o.point == p && o.frame.get(34) == Some(&t))
            .unwrap()
            .ts_ns
    };
    assert!(first(3, 8) >= first(0, 8) && first(3, 8) - first(0, 8) < 100_000_000);
    assert!(first(0, 0) >= first(3, 0));
    // The TUN's frames are bare IPv4 echo requests, going out: the raw-IP program matched.
    let tun: Vec<_> = obs.iter().filter(|o| o.point == 4).collect();
    assert_eq!(tun.len(), 2, "{tun:?}");
    for o in tun {
        assert_eq!(o.direction, Direction::Out);
        assert_eq!(o.frame[0] >> 4, 4, "IPv4 first, no link header");
        assert_eq!((o.frame[9], o.frame[20]), (1, 8), "ICMP echo request");
        assert_eq!(&o.frame[16..20], &[10, 98, 0, 2]);
    }
}
