//! nftables tracing against throwaway namespaces (needs root): arming, trace events checked
//! against `nft -a list ruleset`, the owner table's lifetime (drop and SIGKILL), and the parser
//! against a message the kernel sent (capture/tests/data/nftrace_drop.bin). Every packet stays
//! between two namespaces created here; every rule lives in one of them.

mod tmpns;

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dye_capture::nftrace::{parse_trace, Armed, ProbeMatch, TraceEvent, TraceKind, Verdict};
use dye_capture::Netns;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

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

const A: &str = "10.96.0.1";
const B: &str = "10.96.0.2";
const A6: &str = "fd00:96::1";
const B6: &str = "fd00:96::2";
const SAVED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nftrace_drop.bin");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `a` — `b` over one veth, a/eth0 10.96.0.1/24, b/eth0 10.96.0.2/24.
struct Lab {
    ns: tmpns::TmpNs,
    a: String,
    b: String,
}

fn lab() -> Lab {
    let mut ns = tmpns::TmpNs::new();
    let a = ns.add("a");
    let b = ns.add("b");
    ns.veth(&a, "eth0", &b, "eth0");
    ns.ip(&a, &["addr", "add", &format!("{A}/24"), "dev", "eth0"]);
    ns.ip(&b, &["addr", "add", &format!("{B}/24"), "dev", "eth0"]);
    ns.ip(
        &a,
        &[
            "-6",
            "addr",
            "add",
            &format!("{A6}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    ns.ip(
        &b,
        &[
            "-6",
            "addr",
            "add",
            &format!("{B6}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    Lab { ns, a, b }
}

fn dye_table(lab: &Lab) -> String {
    format!("dye_{}", lab.ns.prefix.trim_start_matches("dyetmp-"))
}

/// `nft list tables` in `ns`.
fn tables(lab: &Lab, ns: &str) -> String {
    lab.ns.exec(ns, &["nft", "list", "tables"])
}

/// Our drop rule in `a` (`table ip t`, chain `out`, udp dport 4242 drop); returns its handle
/// as `nft -a list ruleset` prints it.
fn drop_rule(lab: &Lab) -> u64 {
    let a = &lab.a;
    lab.ns.exec(a, &["nft", "add", "table", "ip", "t"]);
    lab.ns.exec(
        a,
        &[
            "nft",
            "add chain ip t out { type filter hook output priority 0; }",
        ],
    );
    lab.ns.exec(
        a,
        &[
            "nft", "add", "rule", "ip", "t", "out", "udp", "dport", "4242", "drop",
        ],
    );
    let listing = lab.ns.exec(a, &["nft", "-a", "list", "ruleset"]);
    let line = listing
        .lines()
        .find(|l| l.contains("dport 4242 drop"))
        .unwrap_or_else(|| panic!("no drop rule in {listing}"));
    line.rsplit("# handle ")
        .next()
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no handle in {line:?}"))
}

/// One UDP datagram `dye-nftrace` from A in `ns` (the send of a dropped one fails with EPERM,
/// which is fine).
fn send_udp(ns: &Netns, dst: &str, port: u16) {
    send_from(ns, A, dst, port, b"dye-nftrace");
}

fn send_from(ns: &Netns, src: &str, dst: &str, port: u16, payload: &[u8]) {
    let (src, dst) = (ip(src), SocketAddr::new(ip(dst), port));
    let payload = payload.to_vec();
    ns.run(move || {
        let s = UdpSocket::bind((src, 0)).unwrap();
        let _ = s.send_to(&payload, dst);
    })
    .unwrap();
}

/// Drains until `done` holds for the events so far or 3 s pass.
fn collect(armed: &mut Armed, done: impl Fn(&[TraceEvent]) -> bool) -> Vec<TraceEvent> {
    let until = Instant::now() + Duration::from_secs(3);
    let mut all = Vec::new();
    while Instant::now() < until {
        all.extend(armed.drain(64).unwrap());
        if done(&all) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    all
}

/// A raw listener of the test's own in `ns`, to keep the bytes the kernel sends.
fn raw_listener(ns: &Netns) -> Socket {
    ns.run(|| {
        let mut s = Socket::new(NETLINK_NETFILTER).unwrap();
        s.bind_auto().unwrap();
        s.add_membership(9).unwrap();
        s.set_non_blocking(true).unwrap();
        s
    })
    .unwrap()
}

fn raw_messages(s: &Socket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(65536);
    loop {
        buf.clear();
        match s.recv(&mut buf, libc::MSG_DONTWAIT) {
            Ok(n) => {
                let mut b = &buf[..n];
                while b.len() >= 16 {
                    let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                    if len < 16 || len > b.len() {
                        break;
                    }
                    out.push(b[..len].to_vec());
                    b = &b[((len + 3) & !3).min(b.len())..];
                }
            }
            Err(_) => return out,
        }
    }
}

#[test]
fn traces_a_drop_by_rule_handle_and_dyes_own_events() {
    need_root!();
    let lab = lab();
    let handle = drop_rule(&lab);
    let a = Netns::open_str(&lab.a).unwrap();
    let raw = raw_listener(&a);
    let table = dye_table(&lab);
    let t0 = Instant::now();
    let mut armed = Armed::arm(&a, &table, &ProbeMatch::new(17, ip(A), ip(B))).unwrap();
    eprintln!("armed {} in {:?}", lab.a, t0.elapsed());

    // The first datagram after arming.
    send_udp(&a, B, 4242);
    let events = collect(&mut armed, |ev| {
        ev.iter().any(|e| e.verdict == Some(Verdict::Drop))
    });
    for e in &events {
        eprintln!("{e}");
    }
    let drop = events
        .iter()
        .find(|e| e.table == "t")
        .expect("an event from table t");
    assert_eq!(drop.chain, "out");
    assert_eq!(drop.kind, TraceKind::Rule);
    assert_eq!(drop.rule_handle, Some(handle));
    assert_eq!(drop.verdict, Some(Verdict::Drop));
    assert_eq!(drop.family, 2);
    assert_eq!(&drop.network_header[12..20], &[10, 96, 0, 1, 10, 96, 0, 2]);
    assert_eq!(&drop.transport_header[2..4], &4242u16.to_be_bytes());
    // dye's own events: same packet, recognised by the table name.
    let own: Vec<&TraceEvent> = events.iter().filter(|e| e.is_from(&table)).collect();
    assert!(!own.is_empty(), "no event from {table}");
    assert!(own.iter().all(|e| e.id == drop.id && e.chain == "out"));
    assert!(own
        .iter()
        .any(|e| e.kind == TraceKind::Policy && e.verdict == Some(Verdict::Accept)));
    assert!(events.iter().all(|e| e.id == drop.id));
    assert_eq!(armed.undecoded(), 0);

    // Rule text, asked of the kernel by the handle the trace gave.
    let rule = armed.rule(2, "t", "out", handle).unwrap().unwrap();
    eprintln!("{rule}");
    assert_eq!(rule.text, "meta l4proto udp udp dport 4242 drop");
    assert_eq!(armed.describe(drop), "meta l4proto udp udp dport 4242 drop");
    let mine = own.iter().find(|e| e.rule_handle.is_some()).unwrap();
    assert_eq!(
        armed.describe(mine),
        format!("meta l4proto udp ip saddr {A} ip daddr {B} meta nftrace set 1")
    );
    assert_eq!(armed.rule(2, "t", "out", 999).unwrap(), None);
    assert_eq!(armed.describe(own.last().unwrap()), "policy accept");

    // The kernel's bytes parse to the same event; keep the drop message for the offline test.
    let msgs = raw_messages(&raw);
    let parsed: Vec<TraceEvent> = msgs.iter().map(|m| parse_trace(m).unwrap()).collect();
    assert_eq!(parsed, events);
    let bytes = &msgs[parsed.iter().position(|e| e.table == "t").unwrap()];
    if std::env::var_os("DYE_SAVE_NFTRACE").is_some() {
        std::fs::write(SAVED, bytes).unwrap();
    }

    // Another port: dye's events and t's accept policy, no drop.
    send_udp(&a, B, 4243);
    let events = collect(&mut armed, |ev| ev.iter().any(|e| e.table == "t"));
    for e in &events {
        eprintln!("{e}");
    }
    assert!(events.iter().any(|e| e.table == "t"
        && e.kind == TraceKind::Policy
        && e.verdict == Some(Verdict::Accept)
        && e.rule_handle.is_none()));
    assert!(events.iter().all(|e| e.verdict != Some(Verdict::Drop)));
    assert!(events.iter().any(|e| e.is_from(&table)));
}

#[test]
fn parses_a_message_the_kernel_sent() {
    let bytes = std::fs::read(SAVED).unwrap();
    let e = parse_trace(&bytes).unwrap();
    assert_eq!(e.family, 2);
    assert_eq!(e.nfproto, Some(2));
    assert_eq!((e.table.as_str(), e.chain.as_str()), ("t", "out"));
    assert_eq!(e.kind, TraceKind::Rule);
    assert_eq!(e.rule_handle, Some(2));
    assert_eq!(e.verdict, Some(Verdict::Drop));
    assert_eq!(e.iif, None);
    assert!(e.oif.is_some());
    assert_eq!(e.network_header[0], 0x45);
    assert_eq!(e.network_header[9], 17);
    assert_eq!(&e.network_header[12..20], &[10, 96, 0, 1, 10, 96, 0, 2]);
    assert_eq!(&e.transport_header[2..4], &4242u16.to_be_bytes());
    // Every truncation of it is an error, not a panic.
    for cut in 0..bytes.len() {
        assert!(parse_trace(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn the_table_lives_as_long_as_armed() {
    need_root!();
    let lab = lab();
    let a = Netns::open_str(&lab.a).unwrap();
    let table = dye_table(&lab);
    let armed = Armed::arm(&a, &table, &ProbeMatch::new(17, ip(A), ip(B))).unwrap();
    let listed = tables(&lab, &lab.a);
    assert!(listed.contains(&format!("table ip {table}")), "{listed}");
    // Another socket cannot remove an owned table.
    let del = Command::new("ip")
        .args([
            "netns", "exec", &lab.a, "nft", "delete", "table", "ip", &table,
        ])
        .output()
        .unwrap();
    assert!(!del.status.success());
    // A second arm of the same name is refused and names the table.
    let again = Armed::arm(&a, &table, &ProbeMatch::new(17, ip(A), ip(B))).unwrap_err();
    assert!(again.to_string().contains(&table), "{again}");
    drop(armed);
    let listed = tables(&lab, &lab.a);
    assert!(!listed.contains(&table), "{listed}");
}

#[test]
fn prerouting_in_the_peer_a_marker_and_ipv6() {
    need_root!();
    let lab = lab();
    let (a, b) = (
        Netns::open_str(&lab.a).unwrap(),
        Netns::open_str(&lab.b).unwrap(),
    );
    let table = dye_table(&lab);
    // UDP header (8 bytes), then the payload: `dye-` marks a probe.
    let m = ProbeMatch::new(17, ip(A), ip(B)).with_marker(8, b"dye-".to_vec());
    let mut in_a = Armed::arm(&a, &table, &m).unwrap();
    let mut in_b = Armed::arm(&b, &table, &m).unwrap();

    // Not a probe (no marker): nothing traced, in either namespace.
    send_from(&a, A, B, 4243, b"other");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(in_a.drain(64).unwrap(), vec![]);
    assert_eq!(in_b.drain(64).unwrap(), vec![]);

    // A probe: output in `a`; the flag does not cross the veth, `b`'s own rule sets it again
    // in prerouting.
    send_from(&a, A, B, 4243, b"dye-probe");
    let ea = collect(&mut in_a, |ev| {
        ev.iter().any(|e| e.kind == TraceKind::Policy)
    });
    let eb = collect(&mut in_b, |ev| {
        ev.iter().any(|e| e.kind == TraceKind::Policy)
    });
    for e in ea.iter().chain(&eb) {
        eprintln!("{e} iif {:?} oif {:?}", e.iif, e.oif);
    }
    // The packet (interfaces, headers) comes with the first event of each base chain only.
    assert!(ea.iter().all(|e| e.chain == "out"));
    assert!(ea[0].oif.is_some() && !ea[0].network_header.is_empty());
    assert!(ea[1..]
        .iter()
        .all(|e| e.oif.is_none() && e.network_header.is_empty()));
    assert!(!eb.is_empty());
    assert!(eb.iter().all(|e| e.chain == "pre" && e.oif.is_none()));
    assert!(eb[0].iif.is_some() && eb[0].transport_header.ends_with(b"dye-probe"));
    assert_ne!(ea[0].id, eb[0].id);

    // IPv6: an ip6 table of its own.
    let t6 = format!("{table}_6");
    let mut in_a6 = Armed::arm(&a, &t6, &ProbeMatch::new(17, ip(A6), ip(B6))).unwrap();
    send_from(&a, A6, B6, 4243, b"dye-v6");
    let e6 = collect(&mut in_a6, |ev| {
        ev.iter().any(|e| e.kind == TraceKind::Policy)
    });
    let own: Vec<&TraceEvent> = e6.iter().filter(|e| e.is_from(&t6)).collect();
    assert!(!own.is_empty());
    assert!(own.iter().all(|e| e.family == 10 && e.nfproto == Some(10)));
    assert_eq!(own[0].network_header[0] >> 4, 6);
    // The other listener of the namespace receives the same events: the group is per
    // namespace, not per table.
    let again = collect(&mut in_a, |ev| ev.len() >= e6.len());
    assert_eq!(again, e6);
    let listed = tables(&lab, &lab.a);
    assert!(listed.contains(&format!("table ip6 {t6}")), "{listed}");
}

/// A marker far into the payload (Linux 6.2 took payload offsets from 255 to 65535): a big
/// datagram is selected by it alone, one without it is not.
#[test]
fn a_marker_1200_bytes_in_selects_a_big_datagram() {
    need_root!();
    let lab = lab();
    let a = Netns::open_str(&lab.a).unwrap();
    let table = dye_table(&lab);
    let m = ProbeMatch::by_marker(17, ip(A), 1200, b"dye-far!".to_vec());
    let mut armed = Armed::arm(&a, &table, &m).unwrap();
    let mut payload = vec![0u8; 1300];
    send_from(&a, A, B, 4243, &payload);
    // 1200 bytes from the UDP header: 1192 into the payload.
    payload[1192..1200].copy_from_slice(b"dye-far!");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        armed.drain(64).unwrap(),
        vec![],
        "a datagram without the marker"
    );
    send_from(&a, A, B, 4243, &payload);
    let ev = collect(&mut armed, |ev| {
        ev.iter().any(|e| e.kind == TraceKind::Policy)
    });
    assert!(ev.iter().any(|e| e.is_from(&table)), "{ev:?}");
    // nft shows the rule reading the transport header 1200 bytes (9600 bits) in.
    let listed = Command::new("ip")
        .args([
            "netns", "exec", &lab.a, "nft", "list", "table", "ip", &table,
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("@th,9600,"), "{listed}");
}

#[test]
fn iptables_nft_rules_are_traced_legacy_ones_are_not() {
    need_root!();
    let lab = lab();
    let a = Netns::open_str(&lab.a).unwrap();
    let table = dye_table(&lab);
    let nft = [
        "iptables-nft",
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "--dport",
        "4244",
        "-j",
        "DROP",
    ];
    lab.ns.exec(&lab.a, &nft);
    let legacy = [
        "iptables-legacy",
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "--dport",
        "4245",
        "-j",
        "DROP",
    ];
    lab.ns.exec(&lab.a, &legacy);
    let mut armed = Armed::arm(&a, &table, &ProbeMatch::new(17, ip(A), ip(B))).unwrap();

    send_udp(&a, B, 4244);
    let ev = collect(&mut armed, |ev| {
        ev.iter().any(|e| e.verdict == Some(Verdict::Drop))
    });
    let drop = ev
        .iter()
        .find(|e| e.verdict == Some(Verdict::Drop))
        .expect("the iptables-nft DROP is traced");
    assert_eq!(
        (drop.table.as_str(), drop.chain.as_str()),
        ("filter", "OUTPUT")
    );
    assert!(drop.rule_handle.is_some());
    let text = armed.describe(drop);
    eprintln!("iptables-nft rule: {text}");
    assert!(text.contains("drop"), "{text}");

    // The legacy DROP happens outside nf_tables: dye's chain accepts, then the trace just
    // ends (the legacy hook ran before iptables-nft's chain at the same priority here).
    send_udp(&a, B, 4245);
    let mut ev = collect(&mut armed, |ev| {
        ev.iter()
            .any(|e| e.is_from(&table) && e.kind == TraceKind::Policy)
    });
    std::thread::sleep(Duration::from_millis(200));
    ev.extend(armed.drain(64).unwrap());
    for e in &ev {
        eprintln!("legacy: {e}");
    }
    assert!(ev.iter().any(|e| e.is_from(&table)));
    assert!(ev.iter().all(|e| e.verdict != Some(Verdict::Drop)));
    let counters = lab
        .ns
        .exec(&lab.a, &["iptables-legacy", "-L", "OUTPUT", "-vnx"]);
    assert!(
        counters
            .lines()
            .any(|l| l.contains("dpt:4245") && l.split_whitespace().next() == Some("1")),
        "{counters}"
    );
}

/// Kills the child on drop (also when the test fails).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CHILD_ENV: &str = "DYE_NFTRACE_CHILD";

/// Run by `sigkill_leaves_no_table` in a child process: arms the namespace named in the
/// environment, says so, and sleeps. Does nothing in a normal test run.
#[test]
fn child_arms_and_sleeps() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (ns, table) = spec.split_once(' ').unwrap();
    let a = Netns::open_str(ns).unwrap();
    let _armed = Armed::arm(&a, table, &ProbeMatch::new(17, ip(A), ip(B))).unwrap();
    println!("ARMED");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn sigkill_leaves_no_table() {
    need_root!();
    let lab = lab();
    let table = dye_table(&lab);
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["child_arms_and_sleeps", "--exact", "--nocapture"])
            .env(CHILD_ENV, format!("{} {table}", lab.a))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let armed = out
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("ARMED"));
    assert!(armed, "the child did not arm");
    assert!(tables(&lab, &lab.a).contains(&table));
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let listed = tables(&lab, &lab.a);
    assert!(!listed.contains(&table), "{listed}");
}
