//! The kernel-drop eBPF program against throwaway namespaces (needs root): marked probes that
//! the kernel drops (no route, TTL out, an nft rule) are reported with the reason the kernel
//! gave, named from BTF and cross-checked with `bpftool btf dump`; the namespace and device are
//! checked against `ip`; a probe of another trace is not reported (the kernel-side filter); and
//! after the handle drops — or its process is SIGKILLed — `bpftool prog` / `bpftool link` show
//! nothing of it. Every packet stays between namespaces created here.

mod tmpns;

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use dye_capture::dropwatch::{DropWatch, KernelDrop, Names};
use dye_capture::{Injector, Netns};
use dye_decode::build::{self, V4};
use dye_decode::Marker;

const CHILD_ENV: &str = "DYE_TEST_DROPWATCH_CHILD";
const PROGRAM: &str = "dye_kfree_skb";

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

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    u32::from_ne_bytes(b) | 1
}

/// A 64-byte UDP probe of `trace`/`seq` from c (10.95.1.1) to `dst`.
fn probe(trace: u32, seq: u32, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    probe_to_port(trace, seq, dst, 33434, ttl)
}

fn probe_to_port(trace: u32, seq: u32, dst: Ipv4Addr, dport: u16, ttl: u8) -> Vec<u8> {
    let src = Ipv4Addr::new(10, 95, 1, 1);
    let payload = Marker::new(trace, seq)
        .payload_with_marker(64 - 28)
        .unwrap();
    let udp = build::udp(src.into(), dst.into(), 40000 + seq as u16, dport, &payload);
    build::ipv4(&V4::new(src, dst).ttl(ttl).id(seq as u16), 17, &udp)
}

fn netns_inode(name: &str) -> u32 {
    std::fs::metadata(format!("/run/netns/{name}"))
        .unwrap()
        .ino() as u32
}

fn ifindex(ns: &tmpns::TmpNs, netns: &str, ifname: &str) -> u32 {
    let j: serde_json::Value =
        serde_json::from_str(&ns.ip(netns, &["-j", "link", "show", ifname])).unwrap();
    j[0]["ifindex"].as_u64().unwrap() as u32
}

/// Every name `bpftool btf dump` gives a value of enum skb_drop_reason (the outside check).
fn bpftool_reason(value: u32) -> String {
    let out = tmpns::sh(&["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"]);
    let mut inside = false;
    for line in out.lines() {
        if line.contains("ENUM 'skb_drop_reason'") {
            inside = true;
            continue;
        }
        if inside {
            let Some(rest) = line.trim().strip_prefix('\'') else {
                break;
            };
            let (name, val) = rest.split_once("' val=").unwrap();
            if val.trim() == value.to_string() {
                return name.to_string();
            }
        }
    }
    panic!("bpftool shows no skb_drop_reason value {value}")
}

/// Ids of loaded programs named dye_kfree_skb, and the links that reference any program.
fn dye_programs() -> Vec<u64> {
    let j: serde_json::Value =
        serde_json::from_str(&tmpns::sh(&["bpftool", "-j", "prog", "show"])).unwrap();
    j.as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == PROGRAM)
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

fn links_of(progs: &[u64]) -> Vec<u64> {
    let j: serde_json::Value =
        serde_json::from_str(&tmpns::sh(&["bpftool", "-j", "link", "show"])).unwrap();
    j.as_array()
        .unwrap()
        .iter()
        .filter(|l| progs.contains(&l["prog_id"].as_u64().unwrap_or(0)))
        .map(|l| l["id"].as_u64().unwrap())
        .collect()
}

fn drops_of(watch: &mut DropWatch, n: usize) -> Vec<KernelDrop> {
    let mut got = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while got.len() < n && std::time::Instant::now() < until {
        got.extend(watch.drain_waiting(64, Duration::from_millis(200)));
    }
    got
}

#[test]
fn names_the_kernel_reason_where_the_probe_died_and_leaves_nothing_loaded() {
    need_root!();
    let mut ns = tmpns::TmpNs::new();
    let (c, r, _s) = tmpns::routed(&mut ns, 95);
    // In r: an nft rule drops UDP to port 33434 for s (10.95.2.2).
    ns.exec(&r, &["nft", "add", "table", "ip", "dyetest"]);
    ns.exec(
        &r,
        &[
            "nft",
            "add chain ip dyetest filter_fw { type filter hook forward priority 0; }",
        ],
    );
    ns.exec(
        &r,
        &[
            "nft",
            "add rule ip dyetest filter_fw ip daddr 10.95.2.2 udp dport 33434 drop",
        ],
    );

    let before = dye_programs();
    let trace = random_u32();
    let mut watch = DropWatch::arm(trace).unwrap();
    let ours: Vec<u64> = dye_programs()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(ours.len(), 1, "one program loaded by this watch");
    assert_eq!(links_of(&ours).len(), 1, "attached by one link");

    let cns = Netns::open_str(&c).unwrap();
    let nowhere = Ipv4Addr::new(10, 95, 9, 9);
    let s = Ipv4Addr::new(10, 95, 2, 2);
    let inj = Injector::open(&cns, IpAddr::V4(nowhere)).unwrap();
    // seq 1: no route in r; seq 2: TTL 1 runs out in r; seq 3: the nft rule in r; a probe of
    // another trace (no route either) must not be reported.
    inj.send(&probe(trace, 1, nowhere, 64), 1, nowhere.into())
        .unwrap();
    inj.send(&probe_to_port(trace, 2, s, 7, 1), 2, s.into())
        .unwrap();
    inj.send(&probe(trace, 3, s, 64), 3, s.into()).unwrap();
    inj.send(
        &probe(trace ^ 0x8000_0000, 4, nowhere, 64),
        4,
        nowhere.into(),
    )
    .unwrap();
    let drops = drops_of(&mut watch, 3);
    let names = Names::load();
    for d in &drops {
        eprintln!(
            "seq {} reason {} ({:?}) netns {} ifindex {} at {:?}",
            d.seq,
            d.reason,
            names.reason(d.reason),
            d.netns_inode,
            d.ifindex,
            names.function(d.location)
        );
    }
    let by_seq = |seq: u32| {
        drops
            .iter()
            .find(|d| d.seq == seq)
            .unwrap_or_else(|| panic!("no drop reported for probe {seq}: {drops:?}"))
    };
    assert!(drops.iter().all(|d| d.seq != 4), "another trace's probe");
    let (r_ino, rc) = (netns_inode(&r), ifindex(&ns, &r, "rc"));
    for seq in 1..=3 {
        let d = by_seq(seq);
        assert_eq!(d.netns_inode, r_ino, "probe {seq} died in r");
        assert_eq!(d.ifindex, rc, "probe {seq} came in on r/rc");
        assert_eq!(d.src, IpAddr::V4(Ipv4Addr::new(10, 95, 1, 1)));
        let name = names.reason(d.reason).unwrap();
        assert_eq!(
            format!("SKB_DROP_REASON_{name}"),
            bpftool_reason(d.reason),
            "BTF name as bpftool reads it"
        );
        assert!(names.function(d.location).is_some(), "a kernel function");
    }
    assert_eq!(names.reason(by_seq(1).reason), Some("IP_INNOROUTES"));
    assert_eq!(names.reason(by_seq(3).reason), Some("NETFILTER_DROP"));
    // ip_forward's TTL check names no reason of its own: the kernel says IP_INHDR.
    assert_eq!(names.reason(by_seq(2).reason), Some("IP_INHDR"));

    drop(watch);
    assert_unloaded(&ours);
}

/// The kernel frees a program once its last fd closes, after an RCU grace period: wait for it.
fn assert_unloaded(ids: &[u64]) {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = dye_programs();
        if ids.iter().all(|id| !left.contains(id)) && links_of(ids).is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "still loaded: {ids:?} in {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run by `sigkill_leaves_nothing_loaded` in a child process: arms, says so, sleeps.
#[test]
fn child_arms_and_sleeps() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let _watch = DropWatch::arm(random_u32()).unwrap();
    println!("ARMED");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn sigkill_leaves_nothing_loaded() {
    need_root!();
    let before = dye_programs();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_arms_and_sleeps", "--exact", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let armed = out
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("ARMED"));
    let theirs: Vec<u64> = dye_programs()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(armed, "the child did not arm");
    assert!(!theirs.is_empty(), "the child's program was loaded");
    assert_unloaded(&theirs);
}
