//! End-to-end tests of the emulated cluster itself, with plain tools (ping, ncat, tcpdump,
//! tshark, conntrack): the lab must be right before dye is tested on it.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{
    dye, namespaces_with_prefix, require_root, root_snapshot, tshark_fields, unique_id, Lab,
    TempPcap,
};

/// Captures `count` packets with tcpdump inside `member`'s namespace while `traffic` runs and
/// returns the pcap. tcpdump stops by itself after `count` packets (or after 5 s): stopping it
/// with a signal can lose packets still in its ring.
fn capture_while(
    lab: &Lab,
    member: &str,
    iface: &str,
    filter: &str,
    count: u32,
    traffic: impl FnOnce(),
) -> TempPcap {
    use std::io::Read;
    let pcap = TempPcap::new(&lab.id);
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", &lab.ns(member), "timeout", "5", "tcpdump"])
        .args([
            "--immediate-mode",
            "-U",
            "-n",
            "-i",
            iface,
            "-c",
            &count.to_string(),
        ])
        .args(["-w", pcap.path()])
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    // tcpdump prints "listening on" once its socket is open.
    let mut stderr = tcpdump.stderr.take().expect("tcpdump stderr");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    traffic();
    let _ = tcpdump.wait();
    pcap
}

fn ttl_of_ping(lab: &Lab, from: &str, to: &str) -> Option<u32> {
    let out = lab.exec(from, &["ping", "-c1", "-W1", to]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("ttl=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn pods_on_the_same_node_talk_over_the_bridge() {
    let lab = Lab::up();
    let b = lab.pod_ip("pod-b");
    // Bridged, not routed: the TTL arrives untouched.
    assert_eq!(ttl_of_ping(&lab, "pod-a", &b), Some(64));
    assert_eq!(lab.tcp_hello("pod-a", &b, 8080), "pod-b");
    assert_eq!(lab.udp_hello("pod-a", &b, 5353), "pod-b");
}

#[test]
fn pods_across_nodes_talk_through_vxlan_on_the_underlay() {
    let lab = Lab::up();
    let c = lab.pod_ip("pod-c");
    let pcap = capture_while(&lab, "underlay", "node-1", "udp port 8472", 2, || {
        assert!(
            lab.ping("pod-a", &c, 56),
            "pod-a cannot ping pod-c across nodes"
        );
    });
    // Routed by node-1 and node-2: two TTL decrements.
    assert_eq!(ttl_of_ping(&lab, "pod-a", &c), Some(62));
    assert_eq!(lab.tcp_hello("pod-a", &c, 8080), "pod-c");

    // tshark, not dye, reads the underlay: VXLAN VNI 1 on UDP 8472 between the node addresses,
    // carrying the pod addresses inside.
    let rows = tshark_fields(
        pcap.path(),
        &["-d", "udp.port==8472,vxlan"],
        &["udp.dstport", "vxlan.vni", "ip.src", "ip.dst"],
    );
    assert!(
        rows.len() >= 2,
        "expected request and reply on the underlay, got {rows:?}"
    );
    let a = lab.pod_ip("pod-a");
    let request = rows
        .iter()
        .find(|r| r[2].ends_with(&format!(",{a}")) || r[2].contains(&a))
        .unwrap_or_else(|| panic!("no encapsulated request from {a} in {rows:?}"));
    assert_eq!(request[0], "8472");
    assert_eq!(request[1], "1");
    assert_eq!(request[2], format!("192.168.50.11,{a}"));
    assert_eq!(request[3], format!("192.168.50.12,{c}"));
}

#[test]
fn cluster_ip_reaches_endpoints_on_both_nodes() {
    let lab = Lab::up();
    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    // Random balancing at p = 1/2 per try: 40 tries miss an endpoint with p = 2^-39.
    for _ in 0..40 {
        tcp.insert(lab.tcp_hello("pod-b", "10.96.0.10", 80));
        if tcp.len() == 2 {
            break;
        }
    }
    for _ in 0..40 {
        udp.insert(lab.udp_hello("pod-d", "10.96.0.10", 53));
        if udp.len() == 2 {
            break;
        }
    }
    let both: BTreeSet<String> = ["pod-a", "pod-c"].map(String::from).into();
    assert_eq!(tcp, both, "TCP ClusterIP answers");
    assert_eq!(udp, both, "UDP ClusterIP answers");
    // The DNAT happened in the client's node, visible in its conntrack table.
    let ct = lab.exec("node-1", &["conntrack", "-L", "-d", "10.96.0.10"]);
    let text = String::from_utf8_lossy(&ct.stdout);
    assert!(
        text.contains("dport=80"),
        "no conntrack entry for the ClusterIP: {text}"
    );
}

#[test]
fn office_reaches_the_vip_through_firewall_nat_and_nodeport() {
    let lab = Lab::up();
    let answer = lab.tcp_hello("office", "203.0.113.80", 80);
    assert!(
        answer == "pod-a" || answer == "pod-c",
        "office got {answer:?}"
    );
    // The firewall rewrote both sides: office hidden behind 100.64.0.1, VIP sent to node-1's
    // NodePort.
    let ct = lab.exec(
        "fw",
        &["conntrack", "-L", "-p", "tcp", "--orig-dst", "203.0.113.80"],
    );
    let text = String::from_utf8_lossy(&ct.stdout);
    assert!(
        text.contains("src=192.168.50.11 dst=100.64.0.1 sport=30080"),
        "firewall conntrack shows no SNAT+DNAT: {text}"
    );
    // The overlapping office address never reaches the nodes.
    let ct = lab.exec(
        "node-1",
        &["conntrack", "-L", "-p", "tcp", "--orig-port-dst", "30080"],
    );
    let text = String::from_utf8_lossy(&ct.stdout);
    assert!(text.contains("src=100.64.0.1"), "node-1 saw: {text}");
    assert!(
        !text.contains("src=10.244.2.50"),
        "office address leaked: {text}"
    );
}

#[test]
fn underlay_mtu_fault_fragments_the_outer_packet_and_vxlan_df_turns_it_into_a_drop() {
    let lab = Lab::up();
    let c = lab.pod_ip("pod-c");
    // 1400 bytes of ICMP payload: 1428-byte inner packet, 1478 outer — over a 1400 underlay.
    lab.fault(&["underlay-mtu", "1400"]);
    let pcap = capture_while(
        &lab,
        "underlay",
        "node-1",
        "ip src 192.168.50.11",
        2,
        || {
            assert!(
                lab.ping("pod-a", &c, 1400),
                "outer fragmentation should still deliver"
            );
        },
    );
    let rows = tshark_fields(
        pcap.path(),
        &[],
        &["ip.flags.mf", "ip.frag_offset", "ip.len"],
    );
    assert!(
        rows.iter()
            .any(|r| r[0] == "1" && r[2].parse::<u32>().unwrap_or(0) <= 1400),
        "no outer fragments on the underlay: {rows:?}"
    );

    lab.fault(&["vxlan-df"]);
    assert!(
        !lab.ping("pod-a", &c, 1400),
        "DF on the outer header must drop big probes"
    );
    assert!(lab.ping("pod-a", &c, 1000), "small probes must still pass");

    lab.fault(&["clear"]);
    assert!(lab.ping("pod-a", &c, 1400), "clear restores the path");
}

#[test]
fn drop_fault_blocks_only_that_pod() {
    let lab = Lab::up();
    let (c, d) = (lab.pod_ip("pod-c"), lab.pod_ip("pod-d"));
    lab.fault(&["drop-pod", "pod-c"]);
    assert!(!lab.ping("pod-a", &c, 56));
    assert!(lab.ping("pod-a", &d, 56));
    let rules = lab.exec("node-2", &["iptables", "-S", "FORWARD"]);
    let first_rule = String::from_utf8_lossy(&rules.stdout)
        .lines()
        .find(|l| l.starts_with("-A FORWARD"))
        .map(String::from)
        .unwrap_or_default();
    assert!(
        first_rule.contains(&format!("-d {c}/32")) && first_rule.contains("DROP"),
        "{first_rule}"
    );
    lab.fault(&["clear"]);
    assert!(lab.ping("pod-a", &c, 56));
}

#[test]
fn no_route_fault_cuts_cross_node_traffic_one_way() {
    let lab = Lab::up();
    let c = lab.pod_ip("pod-c");
    lab.fault(&["no-route", "node-1", "node-2"]);
    assert!(!lab.ping("pod-a", &c, 56));
    assert!(
        lab.ping("pod-a", &lab.pod_ip("pod-b"), 56),
        "same-node traffic is unaffected"
    );
    let routes = lab.exec("node-1", &["ip", "route", "show", "10.244.2.0/24"]);
    assert!(routes.stdout.is_empty(), "route still there");
    lab.fault(&["clear"]);
    assert!(lab.ping("pod-a", &c, 56));
}

#[test]
fn two_labs_run_side_by_side_without_interfering() {
    let one = Lab::up();
    let two = Lab::up();
    // Same addresses in both, different namespaces.
    assert_eq!(one.pod_ip("pod-c"), two.pod_ip("pod-c"));
    one.fault(&["drop-pod", "pod-c"]);
    assert!(!one.ping("pod-a", &one.pod_ip("pod-c"), 56));
    assert!(
        two.ping("pod-a", &two.pod_ip("pod-c"), 56),
        "a fault in one lab leaked into the other"
    );
    let two_id = two.id.clone();
    drop(one);
    assert!(
        two.ping("pod-a", &two.pod_ip("pod-c"), 56),
        "tearing down one lab hurt the other"
    );
    assert_eq!(namespaces_with_prefix(&format!("dye-{two_id}-")).len(), 9);
}

#[test]
fn down_removes_everything_and_root_namespace_is_untouched() {
    require_root();
    let before = root_snapshot();
    let lab = Lab::up();
    let id = lab.id.clone();
    lab.fault(&["underlay-mtu", "1400"]);
    assert_eq!(namespaces_with_prefix(&format!("dye-{id}-")).len(), 9);
    assert_eq!(root_snapshot(), before, "lab up changed the root namespace");
    drop(lab);
    assert!(namespaces_with_prefix(&format!("dye-{id}-")).is_empty());
    assert!(!std::path::Path::new(&format!("/run/dye/lab-{id}")).exists());
    let responders = Command::new("pgrep")
        .args(["-f", &format!("/run/dye/lab-{id}/")])
        .output()
        .unwrap();
    assert!(
        responders.stdout.is_empty(),
        "responders survived: {:?}",
        responders.stdout
    );
    assert_eq!(
        root_snapshot(),
        before,
        "lab down left something in the root namespace"
    );
}

#[test]
fn a_failure_half_way_through_up_leaves_nothing_behind() {
    require_root();
    // CNI plugins that exist but fail: up gets past namespaces and links, then fails on the
    // first pod and must remove everything it built.
    let dir = format!("/tmp/dye-test-cni-{}", unique_id());
    std::fs::create_dir_all(&dir).unwrap();
    for plugin in ["bridge", "host-local", "loopback"] {
        let p = format!("{dir}/{plugin}");
        std::fs::write(
            &p,
            "#!/bin/sh\necho '{\"code\":999,\"msg\":\"plugin exploded\"}'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let id = unique_id();
    let out = Command::new(support::dye_bin())
        .args(["lab", "up", "--id", &id])
        .env("CNI_PATH", &dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("plugin exploded"),
        "error should carry the plugin's message: {stderr}"
    );
    assert!(namespaces_with_prefix(&format!("dye-{id}-")).is_empty());
    assert!(!std::path::Path::new(&format!("/run/dye/lab-{id}")).exists());
}

#[test]
fn an_interrupted_up_cleans_up() {
    require_root();
    let id = unique_id();
    let child = Command::new(support::dye_bin())
        .args(["lab", "up", "--id", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt as soon as the first namespaces exist.
    let start = std::time::Instant::now();
    while namespaces_with_prefix(&format!("dye-{id}-")).len() < 2
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let out = child.wait_with_output().unwrap();
    // Either the interrupt landed mid-build (130, cleaned up) or the build had just finished.
    if out.status.code() == Some(0) {
        assert!(dye(&["lab", "down", &id]).status.success());
    } else {
        assert_eq!(
            out.status.code(),
            Some(130),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(namespaces_with_prefix(&format!("dye-{id}-")).is_empty());
    assert!(!std::path::Path::new(&format!("/run/dye/lab-{id}")).exists());
}

#[test]
fn bad_input_gets_a_clear_message_and_builds_nothing() {
    require_root();
    let lab = Lab::up();
    // The id is taken.
    let out = dye(&["lab", "up", "--id", &lab.id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(
        namespaces_with_prefix(&lab.ns("")).len(),
        9,
        "the existing lab was disturbed"
    );

    // A topology error is named with its line, before anything is built.
    let id = unique_id();
    let path = format!("/tmp/dye-test-topo-{id}.toml");
    let text = include_str!("../samples/lab/cluster.toml")
        .replace(r#"publish_to = "node-1""#, r#"publish_to = "node-9""#);
    std::fs::write(&path, &text).unwrap();
    let out = dye(&["lab", "up", "--id", &id, "--topology", &path]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .position(|l| l.starts_with("publish_to"))
        .unwrap()
        + 1;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains(&format!("line {line}: publish_to \"node-9\" is not a node")),
        "{stderr}"
    );
    assert!(namespaces_with_prefix(&format!("dye-{id}-")).is_empty());

    // A missing CNI plugin is named with the package that provides it, before anything is built.
    let id = unique_id();
    let out = Command::new(support::dye_bin())
        .args(["lab", "up", "--id", &id])
        .env("CNI_PATH", "/nonexistent-cni")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/nonexistent-cni/bridge")
            && stderr.contains("containernetworking-plugins"),
        "{stderr}"
    );
    assert!(namespaces_with_prefix(&format!("dye-{id}-")).is_empty());
    assert!(!std::path::Path::new(&format!("/run/dye/lab-{id}")).exists());

    // A bad id, and removing a lab that does not exist (harmless).
    assert_eq!(dye(&["lab", "up", "--id", "Bad/Id"]).status.code(), Some(2));
    let out = dye(&["lab", "down", "nosuchlab"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to remove"));
    // A fault naming something that is not there.
    let out = dye(&["lab", "fault", &lab.id, "drop-pod", "pod-z"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pod \"pod-z\""));
}

#[test]
fn status_reports_the_lab_as_the_kernel_sees_it() {
    let lab = Lab::up();
    let out = dye(&["lab", "status", &lab.id, "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["complete"], true);
    let node1 = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "node-1")
        .unwrap();
    let flannel = node1["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "flannel.1")
        .unwrap();
    assert_eq!(flannel["kind"], "vxlan");
    assert_eq!(flannel["mtu"], 1450);
    lab.fault(&["drop-pod", "pod-b"]);
    let text = String::from_utf8_lossy(&dye(&["lab", "status", &lab.id]).stdout).into_owned();
    assert!(
        text.contains("FAULT: DROP in node-1's FORWARD chain for pod-b"),
        "{text}"
    );
    let list = String::from_utf8_lossy(&dye(&["lab", "status"]).stdout).into_owned();
    assert!(list.contains(&lab.id), "{list}");
}
