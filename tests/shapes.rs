//! The lab's second shape (samples/lab/routed.toml) end to end: a router namespace between the
//! nodes' subnets, Calico-style bridge-less pods, VXLAN on 4789 with VNI 4096, kube-proxy in
//! nftables mode. The shape is checked with the kernel's own tools (ip, nft, tracepath, ping),
//! then dye traces across it and measures a black hole behind the router.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{dye, Lab};

const ROUTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/lab/routed.toml");

fn routed_lab() -> Lab {
    Lab::up_with(&["--topology", ROUTED])
}

/// Runs `dye CMD --json ARGS` and returns (exit code, report).
fn json(cmd: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec![cmd, "--json"];
    all.extend_from_slice(args);
    let out = dye(&all);
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{cmd} printed no JSON ({e}); exit {code}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

fn stdout(lab: &Lab, member: &str, argv: &[&str]) -> String {
    let out = lab.exec(member, argv);
    assert!(
        out.status.success(),
        "{argv:?} in {member}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The forward leg's hops as "member/ifname:dir", lab prefix removed.
fn forward(lab: &Lab, r: &Value) -> Vec<String> {
    let prefix = lab.ns("");
    r["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .filter(|h| h["leg"] == "forward")
        .map(|h| {
            format!(
                "{}/{}:{}",
                h["netns"].as_str().unwrap().trim_start_matches(&prefix),
                h["ifname"].as_str().unwrap(),
                h["direction"].as_str().unwrap()
            )
        })
        .collect()
}

fn events<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .flat_map(|h| h["events"].as_array().into_iter().flatten())
        .filter(|e| e["type"] == kind)
        .collect()
}

#[test]
fn the_routed_shape_is_wired_like_calico_and_traced_through_the_router() {
    let lab = routed_lab();
    let pod_c = lab.pod_ip("pod-c");

    // The shape, as the kernel shows it.
    let routes = stdout(&lab, "pod-a", &["ip", "-4", "route"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0 onlink"),
        "{routes}"
    );
    let addr = stdout(
        &lab,
        "pod-a",
        &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
    );
    assert!(
        addr.contains(&format!("{}/32", lab.pod_ip("pod-a"))),
        "{addr}"
    );
    let links = stdout(&lab, "node-1", &["ip", "-o", "link", "show"]);
    assert!(!links.contains("cni0"), "no bridge: {links}");
    let node_routes = stdout(&lab, "node-1", &["ip", "-4", "route"]);
    assert!(
        node_routes.contains("default via 192.168.51.1 dev eth0"),
        "{node_routes}"
    );
    let cali = node_routes
        .lines()
        .find(|l| l.starts_with(&format!("{} dev cali", lab.pod_ip("pod-a"))))
        .unwrap_or_else(|| panic!("no /32 route to pod-a via a cali… veth: {node_routes}"));
    let cali_if = cali.split_whitespace().nth(2).unwrap();
    let proxy = stdout(
        &lab,
        "node-1",
        &[
            "sysctl",
            "-n",
            &format!("net.ipv4.conf.{cali_if}.proxy_arp"),
        ],
    );
    assert_eq!(proxy.trim(), "1");
    let vxlan = stdout(
        &lab,
        "node-1",
        &["ip", "-d", "link", "show", "dev", "vxlan.calico"],
    );
    assert!(
        vxlan.contains("vxlan id 4096") && vxlan.contains("dstport 4789"),
        "{vxlan}"
    );
    let nft = stdout(
        &lab,
        "node-1",
        &["nft", "list", "map", "ip", "kube-proxy", "service-ips"],
    );
    assert!(
        nft.contains("10.96.0.10 . tcp . 80 : goto service-"),
        "{nft}"
    );

    // Answered across the router, inside VXLAN VNI 4096 on 4789.
    let (code, r) = json("trace", &["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["verdict"]["kind"], "answered", "{:#}", r["verdict"]);
    let path = forward(&lab, &r);
    let crossed = |p: &str| path.iter().position(|h| h == p);
    let (a, b) = (crossed("router/node-1:in"), crossed("router/node-2:out"));
    assert!(a.is_some() && b.is_some() && a < b, "{path:?}");
    assert!(crossed("pod-c/eth0:in") > b, "{path:?}");
    let encap = events(&r, "encap");
    assert!(
        encap.iter().any(|e| {
            let d = e["detail"].as_str().unwrap_or("");
            d.contains("vni 4096") && d.contains("udp dport 4789")
        }),
        "{encap:?}"
    );
    let routed = format!(
        "routed by {} on the underlay: outer TTL 64 → 63",
        lab.ns("router")
    );
    assert!(
        events(&r, "ttl")
            .iter()
            .any(|e| e["detail"] == routed.as_str()),
        "{:?}",
        events(&r, "ttl")
    );

    // The pods are real CRI sandboxes here too: `pod:` references resolve over both nodes'
    // runtimes to the same path.
    let socket = |node: &str| {
        lab.view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == node))
            .and_then(|m| m["cri_socket"].as_str())
            .unwrap_or_else(|| panic!("{node} has no CRI socket"))
            .to_string()
    };
    let (s1, s2) = (socket("node-1"), socket("node-2"));
    let (code, by_pod) = json(
        "trace",
        &[
            "--runtime-endpoint",
            &s1,
            "--runtime-endpoint",
            &s2,
            "--from",
            "pod:default/pod-a",
            "--to",
            "pod:default/pod-c",
        ],
    );
    assert_eq!(code, 0, "{by_pod:#}");
    assert_eq!(
        by_pod["probe"]["to"],
        pod_c.as_str(),
        "{:#}",
        by_pod["probe"]
    );
    assert_eq!(forward(&lab, &by_pod).len(), path.len());

    // A ClusterIP in nftables mode: the DNAT hop on node-1, to an endpoint's port 8080.
    let (code, r) = json(
        "trace",
        &[
            "--from",
            &lab.ns("pod-b"),
            "--to",
            "10.96.0.10:80",
            "--proto",
            "tcp",
        ],
    );
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["verdict"]["kind"], "answered", "{:#}", r["verdict"]);
    let dnat = events(&r, "dnat");
    assert_eq!(dnat.len(), 1, "{dnat:?}");
    assert_eq!(dnat[0]["from"], "10.96.0.10:80");
    let to = dnat[0]["to"].as_str().unwrap();
    let endpoints = [
        format!("{}:8080", lab.pod_ip("pod-a")),
        format!("{pod_c}:8080"),
    ];
    assert!(endpoints.iter().any(|e| e == to), "{to}");
    assert!(
        dnat[0]["detail"]
            .as_str()
            .unwrap()
            .contains(&lab.ns("node-1")),
        "{dnat:?}"
    );
    // The endpoint chain the kernel has for it (outside check of what dye named).
    let ep_chains = stdout(
        &lab,
        "node-1",
        &["nft", "list", "table", "ip", "kube-proxy"],
    );
    assert!(
        ep_chains.contains(&format!("dnat to {to}")),
        "no endpoint chain dnats to {to}"
    );

    // A drop on the far node.
    lab.fault(&["drop-pod", "pod-c"]);
    let (_, r) = json("trace", &["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(r["verdict"]["kind"], "dropped", "{:#}", r["verdict"]);
    assert_eq!(r["verdict"]["dropped_by"]["netns"], lab.ns("node-2"));
    assert_eq!(r["verdict"]["dropped_by"]["chain"], "FORWARD");
}

#[test]
fn mtu_behind_the_router_signalled_and_as_a_vxlan_black_hole() {
    let lab = routed_lab();
    lab.fault(&["link-mtu", "router/node-2", "1400"]);

    // Node to node: the router refuses with ICMP, as tracepath also sees.
    let node2 = lab.addr("node-2", "eth0");
    let (code, r) = json("mtu", &["--from", &lab.ns("node-1"), "--to", &node2]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(
        (r["status"].as_str(), r["path_mtu"].as_u64()),
        (Some("signalled"), Some(1400))
    );
    assert_eq!(r["limit"]["link"], format!("{}/node-2", lab.ns("router")));
    assert_eq!(r["limit"]["signalled_by"]["netns"][0], lab.ns("router"));
    let tp = stdout(&lab, "node-1", &["tracepath", "-n", &node2]);
    assert!(tp.contains("Resume: pmtu 1400"), "{tp}");

    // Pod to pod with the outer DF unset: 1450 passes, split on the underlay — by node-1 itself
    // while it remembers the router's MTU (warm), else by the router (cold). Either way the
    // overlay MTU that avoids it comes from the router port.
    let pod_c = lab.pod_ip("pod-c");
    let from = lab.ns("pod-a");
    for round in ["warm", "cold"] {
        if round == "cold" {
            stdout(&lab, "node-1", &["ip", "route", "flush", "cache"]);
        }
        let (code, r) = json("mtu", &["--from", &from, "--to", &pod_c]);
        assert_eq!(code, 0, "{round}: {r:#}");
        assert_eq!(
            (r["status"].as_str(), r["path_mtu"].as_u64()),
            (Some("healthy"), Some(1450))
        );
        let rec = &r["recommendation"];
        assert_eq!(rec["mtu"], 1350, "{round}: {rec:#}");
        let reason = rec["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("{}/node-2 (MTU 1400)", lab.ns("router"))),
            "{round}: {reason}"
        );
    }

    // Pod to pod with the outer DF set: a black hole behind the router. Start cold (the node
    // forgets what the node-to-node search taught it).
    lab.fault(&["vxlan-df"]);
    stdout(&lab, "node-1", &["ip", "route", "flush", "cache"]);
    for round in ["cold", "warm"] {
        let started = Instant::now();
        let (code, r) = json("mtu", &["--from", &from, "--to", &pod_c]);
        let took = started.elapsed();
        assert_eq!(code, 1, "{round}: a black hole is a failure: {r:#}");
        assert_eq!(r["status"], "black_hole", "{round}: {r:#}");
        assert_eq!(r["path_mtu"], 1350, "{round}");
        let limit = &r["limit"];
        assert_eq!(
            limit["link"],
            format!("{}/node-2", lab.ns("router")),
            "{round}: {limit:#}"
        );
        assert_eq!(limit["mtu"], 1400);
        assert_eq!(
            limit["encapsulation"]["tunnel"],
            format!("{}/vxlan.calico", lab.ns("node-1"))
        );
        let beyond = &limit["beyond_node"];
        assert_eq!(beyond["remote"], node2, "{beyond:#}");
        assert_eq!(beyond["node_cached_pmtu"], 1400, "{round}: {beyond:#}");
        if round == "cold" {
            // The router told the node, not the pod.
            let refusal = &beyond["refused_by"];
            assert_eq!(
                refusal["sender"],
                lab.addr("router", "node-1"),
                "{beyond:#}"
            );
            assert_eq!(refusal["to"], lab.addr("node-1", "eth0"));
            assert_eq!(refusal["advertised_mtu"], 1400);
        }
        let why = limit["explanation"].as_str().unwrap();
        assert!(why.contains("The pod is never told"), "{why}");
        assert_eq!(r["recommendation"]["mtu"], 1350);
        assert_eq!(r["recommendation"]["applies_to"], "overlay");
        assert!(
            r["probes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["outcome"] != "too_big"),
            "the pod never gets an ICMP error"
        );
        assert!(took < Duration::from_secs(3), "{round}: took {took:?}");
        assert!(r["search"]["elapsed_ms"].as_u64().unwrap() < 3000);
    }
    // A cold first answer: pod-a's gateway ARP answered after a proxy delay (random below
    // 1 s, as with the kernel's default proxy_delay on a Calico-style veth). It must not
    // stretch the wait for every later probe.
    let routes = stdout(&lab, "node-1", &["ip", "-4", "route"]);
    let cali = routes
        .lines()
        .find(|l| l.starts_with(&format!("{} dev cali", lab.pod_ip("pod-a"))))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("pod-a's host veth")
        .to_string();
    stdout(
        &lab,
        "node-1",
        &[
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv4.neigh.{cali}.proxy_delay=100"),
        ],
    );
    stdout(&lab, "pod-a", &["ip", "neigh", "flush", "dev", "eth0"]);
    let started = Instant::now();
    let (_, r) = json("mtu", &["--from", &from, "--to", &pod_c]);
    let took = started.elapsed();
    assert_eq!(r["path_mtu"], 1350, "{r:#}");
    assert_eq!(r["limit"]["link"], format!("{}/node-2", lab.ns("router")));
    let probes = r["probes"].as_array().unwrap();
    let first_rtt = probes[0]["rtt_ms"].as_f64().unwrap();
    if first_rtt > 50.0 {
        // Measured again with the smallest probe, and paced by that.
        assert_eq!(probes[1]["size"], probes[0]["size"], "{probes:#?}");
        assert!(probes[1]["rtt_ms"].as_f64().unwrap() < 50.0, "{probes:#?}");
    }
    assert!(
        r["search"]["probe_wait_ms"].as_u64().unwrap() < 500,
        "{r:#}"
    );
    assert!(
        took < Duration::from_secs(3),
        "cold first answer ({first_rtt} ms): took {took:?}"
    );

    // What the node's kernel cached, and the boundary, by the plain tools.
    assert_eq!(lab.cached_pmtu("node-1", &node2), Some(1400));
    let df_ping = |size: &str| {
        lab.exec(
            "pod-a",
            &["ping", "-c1", "-W1", "-M", "do", "-s", size, &pod_c],
        )
        .status
        .success()
    };
    assert!(df_ping("1322"), "1350 bytes pass");
    assert!(!df_ping("1323"), "1351 bytes vanish");
}

#[test]
fn a_routed_lab_comes_down_leaving_nothing_and_never_touches_the_root_namespace() {
    support::require_root();
    let before = support::root_snapshot();
    let lab = routed_lab();
    let id = lab.id.clone();
    lab.fault(&["link-mtu", "router/node-2", "1400"]);
    lab.fault(&["vxlan-df"]);
    // router, 2 nodes, 4 pods: no underlay switch on this shape.
    let namespaces = support::namespaces_with_prefix(&format!("dye-{id}-"));
    assert_eq!(namespaces.len(), 7, "{namespaces:?}");
    assert!(namespaces.contains(&lab.ns("router")));
    assert!(!namespaces.contains(&lab.ns("underlay")));
    assert_eq!(
        support::root_snapshot(),
        before,
        "lab up changed the root namespace"
    );
    let held = support::lab_traces(&id);
    assert!(
        held.iter()
            .filter(|t| t.contains("containerd --config"))
            .count()
            == 2,
        "{held:#?}"
    );
    drop(lab);
    assert_eq!(
        support::lab_traces(&id),
        Vec::<String>::new(),
        "lab down left these"
    );
    assert!(support::namespaces_with_prefix(&format!("dye-{id}-")).is_empty());
    assert_eq!(
        support::root_snapshot(),
        before,
        "lab down left something in the root namespace"
    );
}

#[test]
fn an_icmp_capture_across_the_routed_lab_holds_the_vxlan_copies_on_node_and_router_ports() {
    let lab = routed_lab();
    let pcap = support::TempPcap::new(&lab.id);
    let pattern = format!("{}*", lab.ns(""));
    let mut child = std::process::Command::new(support::dye_bin())
        .args(["capture", "--ns", &pattern, "-w", pcap.path()])
        // `icmp` sees through the tunnel: the VXLAN-carried copies on the underlay are kept.
        .args(["--duration", "3s", "icmp"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dye capture");
    // dye says "capturing on N point(s)" once every point is open; then two pings cross.
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).expect("dye capture's first line");
    assert!(
        line.contains("capturing on 14 point"),
        "dye capture said: {line}"
    );
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });
    let pod_c = lab.pod_ip("pod-c");
    let ping = lab.exec("pod-a", &["ping", "-c2", "-i0.2", "-W1", &pod_c]);
    assert!(ping.status.success(), "ping pod-a → pod-c");
    let status = child.wait().expect("dye capture ends");
    let summary = drain.join().unwrap_or_default();
    assert!(status.success(), "{summary}");
    // tshark decodes the file on its own: VXLAN on 4789, VNI 4096, the pods' echo inside.
    let rows = support::tshark_fields(
        pcap.path(),
        &[],
        &["frame.interface_name", "vxlan.vni", "ip.ttl", "icmp.type"],
    );
    // tshark agrees that every frame kept is ICMP (its `icmp` also matches inner packets).
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| !r[3].is_empty()),
        "a frame tshark does not call icmp: {rows:?}"
    );
    let prefix = lab.ns("");
    let seen = |iface: &str, icmp: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r[0].trim_start_matches(&prefix) == iface && r[3] == icmp)
            .map(|r| {
                assert_eq!(r[1], "4096", "{r:?}");
                r[2].split(',').next().unwrap_or("").to_string() // the outer TTL
            })
            .collect()
    };
    for iface in [
        "node-1/eth0",
        "router/node-1",
        "router/node-2",
        "node-2/eth0",
    ] {
        assert_eq!(
            seen(iface, "8").len(),
            2,
            "echo requests at {iface}: {rows:?}"
        );
        assert_eq!(
            seen(iface, "0").len(),
            2,
            "echo replies at {iface}: {rows:?}"
        );
    }
    // The router routes the outer packet: one TTL less on the far side.
    assert_eq!(seen("router/node-1", "8"), ["64", "64"]);
    assert_eq!(seen("router/node-2", "8"), ["63", "63"]);
}
