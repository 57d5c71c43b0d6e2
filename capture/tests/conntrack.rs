//! Conntrack over ctnetlink against throwaway namespaces (needs root), cross-checked with the
//! `conntrack` CLI. Every packet stays between namespaces created here; every rule lives in one of
//! them and goes away with it (TmpNs removes them on drop, also when a test fails).

mod tmpns;

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use dye_capture::conntrack::{self, Family, Status, TcpState, Tuple, IPPROTO_ICMP, IPPROTO_ICMPV6};
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

/// `c` — `r` — `s`: a client, a NAT router and a server, dual-stack.
/// c/eth0 10.97.1.1 fd00:97:1::1 · r/rc 10.97.1.2 fd00:97:1::2 · r/rs 10.97.2.1 fd00:97:2::1 ·
/// s/eth0 10.97.2.2 fd00:97:2::2. In `r`: UDP 10.97.1.2:5353 DNAT to 10.97.2.2:53, masquerade
/// out of `rs` (IPv4); TCP [fd00:97:1::2]:8080 DNAT to [fd00:97:2::2]:80 (IPv6, no SNAT).
struct Lab {
    ns: tmpns::TmpNs,
    c: String,
    r: String,
    s: String,
}

fn nat_lab() -> Lab {
    let mut ns = tmpns::TmpNs::new();
    let (c, r, s) = tmpns::routed(&mut ns, 97);
    let rules = "table ip dyetest {
  chain pre { type nat hook prerouting priority -100; ip daddr 10.97.1.2 udp dport 5353 dnat to 10.97.2.2:53; }
  chain post { type nat hook postrouting priority 100; oifname \"rs\" masquerade; }
}
table ip6 dyetest {
  chain pre { type nat hook prerouting priority -100; ip6 daddr fd00:97:1::2 tcp dport 8080 dnat to [fd00:97:2::2]:80; }
}
";
    let file = std::env::temp_dir().join(format!("{}.nft", ns.prefix));
    std::fs::write(&file, rules).unwrap();
    let loaded = Command::new("ip")
        .args(["netns", "exec", &r, "nft", "-f"])
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    let out = loaded.unwrap();
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Lab { ns, c, r, s }
}

/// `src= dst= sport= dport= type= code= id=` pairs of the first and second tuple of a
/// `conntrack -L` line, in the order printed.
fn cli_tuples(line: &str) -> (Vec<String>, Vec<String>) {
    let mut orig = Vec::new();
    let mut reply = Vec::new();
    for w in line.split_whitespace() {
        let Some((k, _)) = w.split_once('=') else {
            continue;
        };
        if !matches!(
            k,
            "src" | "dst" | "sport" | "dport" | "type" | "code" | "id"
        ) {
            continue;
        }
        if k == "src" && !orig.is_empty() {
            reply.push(w.to_string());
        } else if reply.is_empty() {
            orig.push(w.to_string());
        } else {
            reply.push(w.to_string());
        }
    }
    (orig, reply)
}

/// The same pairs rendered from our tuple, in conntrack's order.
fn our_pairs(t: &Tuple) -> Vec<String> {
    let mut v = vec![format!("src={}", t.src), format!("dst={}", t.dst)];
    if let Some(p) = t.sport {
        v.push(format!("sport={p}"));
    }
    if let Some(p) = t.dport {
        v.push(format!("dport={p}"));
    }
    if let Some(x) = t.icmp_type {
        v.push(format!("type={x}"));
    }
    if let Some(x) = t.icmp_code {
        v.push(format!("code={x}"));
    }
    if let Some(x) = t.icmp_id {
        v.push(format!("id={x}"));
    }
    v
}

/// The one `conntrack -L ARGS` line in `ns`, checked against our entry: same orig and reply
/// tuples field by field, same protocol name, and `[UNREPLIED]` / `[ASSURED]` as our status.
fn cross_check(lab: &Lab, args: &[&str], e: &conntrack::Entry) {
    let mut v = vec!["conntrack", "-L"];
    v.extend_from_slice(args);
    let out = lab.ns.exec(&lab.r, &v);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "conntrack {args:?}: {out}");
    let (o, r) = cli_tuples(lines[0]);
    assert_eq!(o, our_pairs(&e.orig), "orig vs {}", lines[0]);
    assert_eq!(r, our_pairs(&e.reply), "reply vs {}", lines[0]);
    assert_eq!(
        lines[0].split_whitespace().next(),
        Some(e.orig.proto_name())
    );
    for l in ["UNREPLIED", "ASSURED"] {
        assert_eq!(
            lines[0].contains(&format!("[{l}]")),
            e.status.labels().contains(&l),
            "{l}: {} vs {e}",
            lines[0]
        );
    }
    if let Some(s) = e.tcp_state {
        assert!(lines[0].contains(&format!(" {s} ")), "{s}: {}", lines[0]);
    }
}

fn ping(ns: &tmpns::TmpNs, from: &str, args: &[&str]) {
    let mut v = vec!["ping", "-q", "-c", "1", "-W", "2"];
    v.extend_from_slice(args);
    ns.exec(from, &v);
}

#[test]
fn conntrack_ipv4_udp_dnat_snat_and_icmp() {
    need_root!();
    let lab = nat_lab();
    let (c, r, s) = (
        Netns::open_str(&lab.c).unwrap(),
        Netns::open_str(&lab.r).unwrap(),
        Netns::open_str(&lab.s).unwrap(),
    );
    let t = Some(Duration::from_secs(3));
    let server = s.run(|| UdpSocket::bind("10.97.2.2:53")).unwrap().unwrap();
    let client = c
        .run(|| UdpSocket::bind("10.97.1.1:40000"))
        .unwrap()
        .unwrap();
    server.set_read_timeout(t).unwrap();
    client.set_read_timeout(t).unwrap();
    client.send_to(b"dye", "10.97.1.2:5353").unwrap();
    let mut buf = [0u8; 16];
    let (_, seen_from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(seen_from, "10.97.2.1:40000".parse::<SocketAddr>().unwrap());
    server.send_to(b"ack", seen_from).unwrap();
    let (_, answered_by) = client.recv_from(&mut buf).unwrap();
    assert_eq!(answered_by, "10.97.1.2:5353".parse::<SocketAddr>().unwrap());

    let orig = Tuple::udp(ip("10.97.1.1"), 40000, ip("10.97.1.2"), 5353);
    let e = conntrack::lookup(&r, &orig)
        .unwrap()
        .expect("the router has the flow");
    assert_eq!(e.orig, orig);
    assert_eq!(
        e.reply,
        Tuple::udp(ip("10.97.2.2"), 53, ip("10.97.2.1"), 40000)
    );
    assert!(e.is_dnat() && e.is_snat(), "{e} {:?}", e.status);
    assert!(e.status.contains(Status::SEEN_REPLY | Status::CONFIRMED));
    assert_eq!(e.tcp_state, None);
    assert!(matches!(e.timeout_s, Some(1..=180)), "{:?}", e.timeout_s);
    assert_eq!(e.zone, None);
    assert!(
        e.to_string().starts_with(
            "udp 10.97.1.1:40000 → 10.97.1.2:5353, reply udp 10.97.2.2:53 → 10.97.2.1:40000"
        ),
        "{e}"
    );
    cross_check(
        &lab,
        &[
            "-p",
            "udp",
            "--orig-src",
            "10.97.1.1",
            "--orig-port-src",
            "40000",
        ],
        &e,
    );

    // An absent flow: another source port, another destination port, another protocol.
    for absent in [
        Tuple::udp(ip("10.97.1.1"), 40001, ip("10.97.1.2"), 5353),
        Tuple::udp(ip("10.97.1.1"), 40000, ip("10.97.1.2"), 5354),
        Tuple::tcp(ip("10.97.1.1"), 40000, ip("10.97.1.2"), 5353),
    ] {
        assert_eq!(conntrack::lookup(&r, &absent).unwrap(), None, "{absent}");
    }
    // The client has no NAT and so no conntrack hooks: nothing there.
    assert_eq!(conntrack::lookup(&c, &orig).unwrap(), None);

    // A partial tuple goes through a filtered dump and finds the same connection.
    let partial = Tuple::addrs(orig.proto, orig.src, orig.dst);
    let p = conntrack::lookup(&r, &partial).unwrap().unwrap();
    assert_eq!((p.orig, p.reply, p.id), (e.orig, e.reply, e.id));

    // ICMP echo, masqueraded: the dump finds it without the id; the id then works for GET.
    ping(&lab.ns, &lab.c, &["10.97.2.2"]);
    let icmp = conntrack::lookup(
        &r,
        &Tuple::addrs(IPPROTO_ICMP, ip("10.97.1.1"), ip("10.97.2.2")),
    )
    .unwrap()
    .expect("ping entry");
    assert_eq!(
        (icmp.orig.icmp_type, icmp.orig.icmp_code),
        (Some(8), Some(0))
    );
    assert_eq!(icmp.reply.icmp_type, Some(0));
    assert_eq!(icmp.reply.dst, ip("10.97.2.1"));
    assert!(icmp.is_snat() && !icmp.is_dnat());
    let id = icmp.orig.icmp_id.expect("echo id");
    let by_get = conntrack::lookup(
        &r,
        &Tuple::echo_request(ip("10.97.1.1"), ip("10.97.2.2"), id),
    )
    .unwrap()
    .expect("GET with the full ICMP tuple");
    assert_eq!(by_get.id, icmp.id);
    let wrong_id = Tuple::echo_request(ip("10.97.1.1"), ip("10.97.2.2"), id.wrapping_add(1));
    assert_eq!(conntrack::lookup(&r, &wrong_id).unwrap(), None);
    cross_check(&lab, &["-p", "icmp", "--orig-src", "10.97.1.1"], &icmp);

    // Dumps: IPv4 has both flows and nothing else; the IPv6 table is empty here.
    let v4 = conntrack::dump(&r, Family::V4).unwrap();
    assert!(v4.iter().all(|e| e.orig.src.is_ipv4()));
    assert!(v4.iter().any(|x| x.orig == orig) && v4.iter().any(|x| x.orig == icmp.orig));
    assert!(conntrack::dump(&r, Family::V6)
        .unwrap()
        .iter()
        .all(|e| e.orig.src.is_ipv6()));
}

#[test]
fn conntrack_ipv6_tcp_dnat_and_icmpv6() {
    need_root!();
    let lab = nat_lab();
    let (c, r, s) = (
        Netns::open_str(&lab.c).unwrap(),
        Netns::open_str(&lab.r).unwrap(),
        Netns::open_str(&lab.s).unwrap(),
    );
    let listener = s
        .run(|| TcpListener::bind("[fd00:97:2::2]:80"))
        .unwrap()
        .unwrap();
    let to: SocketAddr = "[fd00:97:1::2]:8080".parse().unwrap();
    let stream = c
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)))
        .unwrap()
        .unwrap();
    let sport = stream.local_addr().unwrap().port();
    let (_conn, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), ip("fd00:97:1::1"), "no SNAT for IPv6");

    let orig = Tuple::tcp(ip("fd00:97:1::1"), sport, ip("fd00:97:1::2"), 8080);
    let e = conntrack::lookup(&r, &orig).unwrap().expect("tcp entry");
    assert_eq!(
        e.reply,
        Tuple::tcp(ip("fd00:97:2::2"), 80, ip("fd00:97:1::1"), sport)
    );
    assert!(e.is_dnat() && !e.is_snat(), "{e}");
    assert_eq!(e.tcp_state, Some(TcpState::Established));
    assert!(e.status.contains(Status::SEEN_REPLY));
    assert!(
        e.to_string().starts_with(&format!(
            "tcp [fd00:97:1::1]:{sport} → [fd00:97:1::2]:8080, reply tcp [fd00:97:2::2]:80 → [fd00:97:1::1]:{sport} ESTABLISHED"
        )),
        "{e}"
    );
    let sport_s = sport.to_string();
    cross_check(
        &lab,
        &["-f", "ipv6", "-p", "tcp", "--orig-port-src", &sport_s],
        &e,
    );
    let mut absent = orig;
    absent.sport = Some(sport.wrapping_add(1));
    assert_eq!(conntrack::lookup(&r, &absent).unwrap(), None);

    ping(&lab.ns, &lab.c, &["-6", "fd00:97:2::2"]);
    let icmp = conntrack::lookup(
        &r,
        &Tuple::addrs(IPPROTO_ICMPV6, ip("fd00:97:1::1"), ip("fd00:97:2::2")),
    )
    .unwrap()
    .expect("ping6 entry");
    assert_eq!(
        (icmp.orig.icmp_type, icmp.reply.icmp_type),
        (Some(128), Some(129))
    );
    let full = Tuple::echo_request(
        ip("fd00:97:1::1"),
        ip("fd00:97:2::2"),
        icmp.orig.icmp_id.unwrap(),
    );
    assert_eq!(
        conntrack::lookup(&r, &full).unwrap().map(|x| x.id),
        Some(icmp.id)
    );
    cross_check(&lab, &["-f", "ipv6", "-p", "icmpv6"], &icmp);

    let all = conntrack::dump(&r, Family::Any).unwrap();
    assert!(all.iter().any(|x| x.orig == orig) && all.iter().any(|x| x.orig == icmp.orig));
    drop(stream);
}
