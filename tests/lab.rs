//! End-to-end tests of the emulated cluster itself, with plain tools (ping, ncat, tcpdump,
//! tshark, conntrack): the lab must be right before dye is tested on it.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{
    dye, lab_traces, namespaces_with_prefix, require_root, root_snapshot, tshark_fields, unique_id,
    Lab, TempPcap,
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
    // What the lab holds on the host while it runs: the detector sees it all.
    let held = lab_traces(&id);
    let count = |what: &str| held.iter().filter(|t| t.contains(what)).count();
    assert_eq!(count("containerd --config"), 2, "{held:#?}");
    assert_eq!(count("containerd-shim-runc-v2"), 4, "{held:#?}");
    assert_eq!(count("busybox sleep infinity"), 4, "{held:#?}");
    assert!(count("cgroup ") >= 2, "{held:#?}");
    assert!(count("mount ") >= 4, "pod netns binds: {held:#?}");
    drop(lab);
    assert_eq!(lab_traces(&id), Vec::<String>::new(), "lab down left these");
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
    // containerd was up when RunPodSandbox failed: it, its cgroups and mounts are gone too.
    assert_eq!(
        lab_traces(&id),
        Vec::<String>::new(),
        "a failed up left these"
    );
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
    assert_eq!(
        lab_traces(&id),
        Vec::<String>::new(),
        "an interrupted up left these"
    );
}

#[test]
fn an_up_interrupted_while_pods_are_made_leaves_no_runtime_behind() {
    require_root();
    let id = unique_id();
    let child = Command::new(support::dye_bin())
        .args(["lab", "up", "--id", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first pod sandbox is published: containerd runs on both nodes and
    // the other pods are still being made.
    let first_pod = format!("dye-{id}-pod-a");
    let start = std::time::Instant::now();
    while !namespaces_with_prefix(&first_pod).contains(&first_pod)
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let during = lab_traces(&id);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let out = child.wait_with_output().unwrap();
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
    assert!(
        during.iter().any(|t| t.contains("containerd --config")),
        "the interrupt was meant to land after containerd started: {during:#?}"
    );
    assert_eq!(
        lab_traces(&id),
        Vec::<String>::new(),
        "an interrupted up left these"
    );
}

#[test]
fn pods_are_real_cri_pod_sandboxes() {
    let lab = Lab::up();
    let member = |name: &str| -> serde_json::Value {
        lab.view["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()
            .clone()
    };
    let node1 = member("node-1");
    let socket = node1["cri_socket"].as_str().unwrap().to_string();
    assert!(
        socket.starts_with(&format!("/run/dye/lab-{}/", lab.id)),
        "{socket}"
    );
    for (pod, node) in [("pod-a", "node-1"), ("pod-c", "node-2")] {
        let identity = &member(pod)["pod"];
        assert_eq!(identity["namespace"], "default", "{identity}");
        assert_eq!(identity["name"], pod);
        assert_eq!(identity["uid"].as_str().unwrap().len(), 36, "{identity}");
        assert_eq!(identity["cri_socket"], member(node)["cri_socket"]);
        let pid = identity["sandbox_pid"].as_u64().unwrap();
        let sandbox = identity["sandbox_id"].as_str().unwrap();
        // The pod's named namespace is the sandbox process's network namespace.
        let inode = |path: &str| {
            std::fs::metadata(path).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
        };
        assert_eq!(
            inode(&format!("/proc/{pid}/ns/net")).unwrap(),
            inode(&format!("/run/netns/{}", lab.ns(pod))).unwrap(),
            "{pod}'s netns is not its sandbox's"
        );
        // The sandbox process is the pause image's sleeper, in the node's cgroup, with the
        // pod's hostname.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(cmdline, b"/bin/busybox\0sleep\0infinity\0");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cgroups.contains(&format!("/dye-{}-{node}/{sandbox}", lab.id)),
            "{cgroups}"
        );
        let host = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-u", "hostname"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&host.stdout).trim(), pod);
        // containerd itself (not dye) knows the sandbox, with the kubelet's labels.
        let info = Command::new("ctr")
            .args(["--address", identity["cri_socket"].as_str().unwrap()])
            .args(["--namespace", "k8s.io", "containers", "info", sandbox])
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout)
            .unwrap_or_else(|e| panic!("ctr containers info {sandbox}: {e}"));
        assert_eq!(info["Labels"]["io.kubernetes.pod.name"], pod);
        assert_eq!(info["Labels"]["io.kubernetes.pod.namespace"], "default");
        assert_eq!(info["Labels"]["io.cri-containerd.kind"], "sandbox");
    }
    // CNI ran in the node (cni0 there, the host veth on it) and addresses are the planned ones.
    assert_eq!(lab.pod_ip("pod-a"), "10.244.1.2");
    assert_eq!(lab.pod_ip("pod-c"), "10.244.2.2");
    assert_eq!(lab.pod_ip6("pod-c"), "fd00:244:2::2");
    let links = lab.exec("node-1", &["ip", "-o", "link", "show", "master", "cni0"]);
    assert_eq!(String::from_utf8_lossy(&links.stdout).lines().count(), 2);
    // Cross-node traffic is routed twice, as before.
    let c = lab.pod_ip("pod-c");
    assert_eq!(ttl_of_ping(&lab, "pod-a", &c), Some(62));
    assert_eq!(lab.tcp_hello("pod-a", &c, 8080), "pod-c");
    // status shows the CRI identity.
    let text = String::from_utf8_lossy(&dye(&["lab", "status", &lab.id]).stdout).into_owned();
    let sandbox_a = member("pod-a")["pod"]["sandbox_id"].as_str().unwrap()[..12].to_string();
    assert!(
        text.contains(&format!("pod default/pod-a (sandbox {sandbox_a}…)")),
        "{text}"
    );
    assert!(text.contains(&format!("containerd {socket}")), "{text}");
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

// ---- IPv6: the built-in lab is dual-stack ----

/// The value of the first (outermost) occurrence of a tshark field, "" when absent.
fn first(field: &str) -> &str {
    field.split(',').next().unwrap_or("")
}

#[test]
fn ipv6_pods_talk_on_one_node_across_nodes_inside_vxlan_and_out_to_the_office() {
    let lab = Lab::up();
    let (a, b, c) = (
        lab.pod_ip6("pod-a"),
        lab.pod_ip6("pod-b"),
        lab.pod_ip6("pod-c"),
    );
    assert_eq!(a, "fd00:244:1::2");
    assert_eq!(c, "fd00:244:2::2");
    // Same node: bridged, the hop limit arrives untouched; the responders answer on IPv6.
    assert_eq!(ttl_of_ping(&lab, "pod-a", &b), Some(64));
    assert_eq!(lab.tcp_hello("pod-a", &b, 8080), "pod-b");
    assert_eq!(lab.udp_hello("pod-a", &b, 5353), "pod-b");

    // Across nodes: routed twice, and on the underlay inside VXLAN VNI 1 (flannel-v6.1: outer
    // IPv6 between the nodes' v6 addresses, inner IPv6 between the pods).
    let pcap = capture_while(
        &lab,
        "underlay",
        "node-1",
        "ip6 and udp port 8472",
        2,
        || {
            assert!(
                lab.ping("pod-a", &c, 56),
                "pod-a cannot ping {c} across nodes"
            );
        },
    );
    assert_eq!(ttl_of_ping(&lab, "pod-a", &c), Some(62));
    assert_eq!(lab.tcp_hello("pod-a", &c, 8080), "pod-c");
    assert_eq!(lab.udp_hello("pod-a", &c, 5353), "pod-c");
    let rows = tshark_fields(
        pcap.path(),
        &["-d", "udp.port==8472,vxlan"],
        &[
            "udp.dstport",
            "vxlan.vni",
            "ipv6.src",
            "ipv6.dst",
            "icmpv6.type",
        ],
    );
    let request = rows
        .iter()
        .find(|r| r[4] == "128")
        .unwrap_or_else(|| panic!("no encapsulated echo request in {rows:?}"));
    assert_eq!(request[0], "8472");
    assert_eq!(request[1], "1");
    assert_eq!(request[2], format!("fd00:50::11,{a}"));
    assert_eq!(request[3], format!("fd00:50::12,{c}"));
    assert!(
        rows.iter()
            .any(|r| r[4] == "129" && r[2] == format!("fd00:50::12,{c}")),
        "no encapsulated echo reply in {rows:?}"
    );

    // Out to the office through the firewall, routed (node-1 and fw decrement), no NAT66: the
    // office sees the pod's own address.
    let office = lab.addr6("office", "eth0");
    assert_eq!(office, "fd00:10::50");
    assert_eq!(ttl_of_ping(&lab, "pod-a", &office), Some(62));
    let ct = lab.exec("fw", &["conntrack", "-L", "-f", "ipv6", "-d", &office]);
    let text = String::from_utf8_lossy(&ct.stdout);
    assert!(
        text.contains(&format!("src={a} dst={office}"))
            && text.contains(&format!("src={office} dst={a}")),
        "fw conntrack: {text}"
    );
    // The firewall's IPv6 FORWARD policy is DROP like its IPv4 one: the office cannot open
    // flows into the cluster.
    assert!(
        !lab.ping("office", &a, 56),
        "office reached a pod over IPv6"
    );
}

#[test]
fn ipv6_packet_too_big_from_the_firewall_reaches_the_pod() {
    let lab = Lab::up();
    let office = lab.addr6("office", "eth0");
    lab.fault(&["link-mtu", "fw/eth1", "1280"]);
    // IPv6 routers never fragment: a 1448-byte packet meets fw's 1280-byte link and fw answers
    // with ICMPv6 Packet Too Big (type 2) carrying MTU 1280, from its underlay address. ping
    // -M dont lets the pod fragment, but it cannot know the path MTU before that answer.
    let pcap = capture_while(&lab, "pod-a", "eth0", "icmp6 and ip6[40] == 2", 1, || {
        assert!(
            !lab.ping("pod-a", &office, 1400),
            "a 1448-byte IPv6 packet crossed a 1280-byte link"
        );
    });
    let rows = tshark_fields(
        pcap.path(),
        &[],
        &["ipv6.src", "ipv6.dst", "icmpv6.type", "icmpv6.mtu"],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(
        first(&r[0]),
        "fd00:50::254",
        "sender is fw's underlay address"
    );
    assert_eq!(first(&r[1]), lab.pod_ip6("pod-a"));
    assert_eq!(first(&r[2]), "2");
    assert_eq!(r[3], "1280");
    // The pod learned the path MTU: the same ping now leaves in 1280-byte fragments and is
    // answered.
    assert!(
        lab.ping("pod-a", &office, 1400),
        "no delivery after the Packet Too Big"
    );
    let route = lab.exec("pod-a", &["ip", "-6", "route", "get", &office]);
    assert!(
        String::from_utf8_lossy(&route.stdout).contains("mtu 1280"),
        "{}",
        String::from_utf8_lossy(&route.stdout)
    );

    // Below IPv6's minimum the kernel would delete IPv6 from the link instead of limiting it:
    // refused with a message that says so, and nothing changed.
    for fault in [
        &["link-mtu", "fw/eth1", "1200"][..],
        &["underlay-mtu", "1000"][..],
    ] {
        let mut args = vec!["lab", "fault", &lab.id];
        args.extend_from_slice(fault);
        let out = dye(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("below 1280, IPv6's minimum link MTU"),
            "{stderr}"
        );
    }
    let link = lab.exec("fw", &["ip", "-o", "link", "show", "eth1"]);
    assert!(String::from_utf8_lossy(&link.stdout).contains("mtu 1280 "));
    let addrs = lab.exec(
        "fw",
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "eth1", "scope", "global",
        ],
    );
    assert!(String::from_utf8_lossy(&addrs.stdout).contains("fd00:10::1/64"));
    lab.fault(&["clear"]);
}

#[test]
fn ipv6_drop_and_no_route_faults_cover_both_families() {
    let lab = Lab::up();
    let (c4, c6, d6) = (
        lab.pod_ip("pod-c"),
        lab.pod_ip6("pod-c"),
        lab.pod_ip6("pod-d"),
    );
    lab.fault(&["drop-pod", "pod-c"]);
    assert!(!lab.ping("pod-a", &c6, 56));
    assert!(!lab.ping("pod-a", &c4, 56));
    assert!(lab.ping("pod-a", &d6, 56));
    lab.fault(&["clear"]);
    assert!(lab.ping("pod-a", &c6, 56));
    lab.fault(&["no-route", "node-1", "node-2"]);
    assert!(!lab.ping("pod-a", &c6, 56));
    let routes = lab.exec("node-1", &["ip", "-6", "route", "show", "fd00:244:2::/64"]);
    assert!(routes.stdout.is_empty(), "v6 route still there");
    lab.fault(&["clear"]);
    assert!(lab.ping("pod-a", &c6, 56), "clear restores the v6 route");
    let routes = lab.exec("node-1", &["ip", "-6", "route", "show", "fd00:244:2::/64"]);
    assert_eq!(
        String::from_utf8_lossy(&routes.stdout).trim(),
        "fd00:244:2::/64 via fd00:244:2:: dev flannel-v6.1 metric 1024 onlink pref medium"
    );
}

#[test]
fn an_ipv4_only_topology_builds_a_lab_without_ipv6() {
    require_root();
    let v6_keys = [
        "subnet6",
        "cluster_cidr6",
        "address6",
        "pod_subnet6",
        "underlay_address6",
        "office_address6",
        "office_subnet6",
    ];
    let text: String = include_str!("../samples/lab/cluster.toml")
        .lines()
        .filter(|l| !v6_keys.iter().any(|k| l.starts_with(&format!("{k} "))))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = format!("/tmp/dye-test-topo-v4-{}.toml", unique_id());
    std::fs::write(&path, &text).unwrap();
    let lab = Lab::up_with(&["--topology", &path]);
    std::fs::remove_file(&path).unwrap();
    assert!(lab.ping("pod-a", &lab.pod_ip("pod-c"), 56));
    assert_eq!(lab.tcp_hello("pod-a", &lab.pod_ip("pod-c"), 8080), "pod-c");
    let pod = &lab.view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "pod-a")
        .unwrap()["interfaces"];
    let eth0 = pod
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .unwrap();
    assert_eq!(eth0["addresses6"], serde_json::json!([]), "{eth0}");
    let links = lab.exec("node-1", &["ip", "-o", "link", "show"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains("flannel-v6"));
}

#[test]
fn a_node_can_put_its_pods_in_another_kubernetes_namespace() {
    require_root();
    let text = include_str!("../samples/lab/cluster.toml").replace(
        r#"pods = ["pod-c", "pod-d"]"#,
        "pods = [\"pod-c\", \"pod-d\"]\npod_namespace = \"shop\"",
    );
    let path = format!("/tmp/dye-test-topo-ns-{}.toml", unique_id());
    std::fs::write(&path, &text).unwrap();
    let lab = Lab::up_with(&["--topology", &path]);
    std::fs::remove_file(&path).unwrap();
    let pod = |name: &str| {
        lab.view["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()["pod"]
            .clone()
    };
    assert_eq!(pod("pod-a")["namespace"], "default");
    assert_eq!(pod("pod-c")["namespace"], "shop");
    let info = Command::new("ctr")
        .args(["--address", pod("pod-c")["cri_socket"].as_str().unwrap()])
        .args(["--namespace", "k8s.io", "containers", "info"])
        .arg(pod("pod-c")["sandbox_id"].as_str().unwrap())
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["Labels"]["io.kubernetes.pod.namespace"], "shop");
    assert!(lab.ping("pod-a", &lab.pod_ip("pod-c"), 56));
}

#[test]
fn a_lab_whose_containerd_died_with_pods_running_still_comes_down_clean() {
    let lab = Lab::up();
    let id = lab.id.clone();
    // containerd of node-1 dies hard: its shims and sandbox processes live on and keep the
    // pods' namespaces alive, and CRI cannot be asked to stop them any more.
    let config = format!("/run/dye/lab-{id}/containerd/node-1/config.toml");
    let daemon: i32 = lab_traces(&id)
        .iter()
        .find(|t| t.ends_with(&format!("containerd --config {config}")))
        .and_then(|t| t.strip_prefix("process ")?.split(':').next()?.parse().ok())
        .expect("node-1's containerd is running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let start = std::time::Instant::now();
    while lab_traces(&id)
        .iter()
        .any(|t| t.contains(&format!("containerd --config {config}")))
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = lab_traces(&id);
    assert_eq!(
        held.iter()
            .filter(|t| t.contains("busybox sleep infinity"))
            .count(),
        4,
        "sandboxes should outlive their containerd: {held:#?}"
    );
    assert!(lab.ping("pod-a", &lab.pod_ip("pod-b"), 56));
    drop(lab);
    assert_eq!(lab_traces(&id), Vec::<String>::new(), "lab down left these");
}

#[test]
fn a_lab_whose_state_directory_was_lost_still_comes_down_clean() {
    require_root();
    let id = unique_id();
    assert!(dye(&["lab", "up", "--id", &id]).status.success());
    // Without its state, down finds the lab by its names: namespaces, the runtime processes
    // naming its directory, cgroups named after it.
    std::fs::remove_dir_all(format!("/run/dye/lab-{id}")).unwrap();
    let out = dye(&["lab", "down", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab_traces(&id), Vec::<String>::new(), "lab down left these");
}

#[test]
fn a_containerd_that_will_not_start_fails_up_with_its_log_and_leaves_nothing() {
    require_root();
    // A `containerd` first on PATH that exits at once, as a broken install would.
    let dir = format!("/tmp/dye-test-bin-{}", unique_id());
    std::fs::create_dir_all(&dir).unwrap();
    let fake = format!("{dir}/containerd");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'containerd: failed to load TOML: broken' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let id = unique_id();
    let path = format!("{dir}:{}", std::env::var("PATH").unwrap_or_default());
    let out = Command::new(support::dye_bin())
        .args(["lab", "up", "--id", &id])
        .env("PATH", path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("containerd (pid") && stderr.contains("failed to load TOML: broken"),
        "the error should name containerd and quote its log: {stderr}"
    );
    assert_eq!(
        lab_traces(&id),
        Vec::<String>::new(),
        "a failed up left these"
    );
}
