//! End-to-end tests of `dye trace` on the lab: each asserts the hops, the events between them
//! and the verdict against what the lab's topology says must happen.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{dye, root_snapshot, tshark_fields, Lab, TempPcap};

/// Runs `dye trace --json ARGS` and returns (exit code, report).
fn trace(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["trace", "--json"];
    all.extend_from_slice(args);
    let out = dye(&all);
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "trace printed no JSON ({e}); exit {code}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

fn hops(r: &Value) -> &Vec<Value> {
    r["hops"].as_array().expect("hops")
}

/// Hops of one leg as "netns/ifname:dir", with the lab prefix removed.
fn path(lab: &Lab, r: &Value, leg: &str) -> Vec<String> {
    let prefix = lab.ns("");
    hops(r)
        .iter()
        .filter(|h| h["leg"] == leg)
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

fn hop_at<'a>(
    lab: &Lab,
    r: &'a Value,
    member: &str,
    ifname: &str,
    dir: &str,
    leg: &str,
) -> &'a Value {
    let ns = lab.ns(member);
    hops(r)
        .iter()
        .find(|h| {
            h["netns"] == ns.as_str()
                && h["ifname"] == ifname
                && h["direction"] == dir
                && h["leg"] == leg
        })
        .unwrap_or_else(|| {
            panic!(
                "no {leg} hop {member}/{ifname}:{dir} in {:?}",
                path(lab, r, leg)
            )
        })
}

fn events_of(h: &Value, kind: &str) -> Vec<Value> {
    h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

/// The host-side veth of a pod, as the lab reports it.
fn host_veth(lab: &Lab, pod: &str) -> String {
    let out = lab.exec(pod, &["cat", "/sys/class/net/eth0/iflink"]);
    let peer_index = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let node = lab.view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == pod)
        .unwrap()["node"]
        .as_str()
        .unwrap()
        .to_string();
    let links = lab.exec(&node, &["ip", "-o", "link"]);
    String::from_utf8_lossy(&links.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{peer_index}:")))
        .and_then(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .expect("host veth")
}

#[test]
fn icmp_across_nodes_shows_every_hop_vxlan_and_the_return_leg() {
    let lab = Lab::up();
    let c = lab.pod_ip("pod-c");
    let (code, r) = trace(&["--from", &lab.ns("pod-a"), "--to", &c]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["schema"], "dye.trace/v1");
    assert_eq!(r["verdict"]["kind"], "answered", "{}", r["verdict"]);

    let a_veth = host_veth(&lab, "pod-a");
    let c_veth = host_veth(&lab, "pod-c");
    let forward = path(&lab, &r, "forward");
    let expected = [
        "pod-a/eth0:out".to_string(),
        format!("node-1/{a_veth}:in"),
        "node-1/cni0:in".into(),
        "node-1/flannel.1:out".into(),
        "node-1/eth0:out".into(),
        "underlay/node-1:in".into(),
        "underlay/node-2:out".into(),
        "node-2/eth0:in".into(),
        "node-2/flannel.1:in".into(),
        "node-2/cni0:out".into(),
        format!("node-2/{c_veth}:out"),
        "pod-c/eth0:in".into(),
    ];
    assert_eq!(forward, expected);
    // The return leg walks the same devices back to pod-a.
    let ret = path(&lab, &r, "return");
    assert_eq!(ret.first().map(String::as_str), Some("pod-c/eth0:out"));
    assert_eq!(ret.last().map(String::as_str), Some("pod-a/eth0:in"));
    assert_eq!(ret.len(), expected.len());

    // Encapsulation on node-1's uplink: VXLAN VNI 1, UDP 8472, node addresses outside.
    let up = hop_at(&lab, &r, "node-1", "eth0", "out", "forward");
    let outer = &up["outer"][0];
    assert_eq!(
        (
            outer["kind"].as_str(),
            outer["vni"].as_u64(),
            outer["dport"].as_u64()
        ),
        (Some("vxlan"), Some(1), Some(8472))
    );
    assert_eq!(
        (outer["src"].as_str(), outer["dst"].as_str()),
        (Some("192.168.50.11"), Some("192.168.50.12"))
    );
    assert_eq!(events_of(up, "encap").len(), 1);
    assert_eq!(
        events_of(
            hop_at(&lab, &r, "node-2", "flannel.1", "in", "forward"),
            "decap"
        )
        .len(),
        1
    );
    // Two routing steps: node-1 and node-2 each decrement the TTL.
    let ttl: Vec<u64> = hops(&r)
        .iter()
        .filter(|h| h["leg"] == "forward")
        .map(|h| h["packet"]["ttl"].as_u64().unwrap())
        .collect();
    assert_eq!((ttl.first(), ttl.last()), (Some(&64), Some(&62)));
    let ttl_events = hops(&r)
        .iter()
        .filter(|h| h["leg"] == "forward")
        .flat_map(|h| events_of(h, "ttl"))
        .count();
    assert_eq!(ttl_events, 2);
    // Time moves forward along the path.
    let t: Vec<u64> = hops(&r)
        .iter()
        .map(|h| h["t_ns"].as_u64().unwrap())
        .collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
}

#[test]
fn pod_to_pod_on_one_node_is_bridged_without_routing() {
    let lab = Lab::up();
    let b = lab.pod_ip("pod-b");
    let (code, r) = trace(&["--from", &lab.ns("pod-a"), "--to", &b, "--proto", "icmp"]);
    assert_eq!(code, 0, "{r}");
    let forward = path(&lab, &r, "forward");
    assert_eq!(
        forward,
        vec![
            "pod-a/eth0:out".to_string(),
            format!("node-1/{}:in", host_veth(&lab, "pod-a")),
            format!("node-1/{}:out", host_veth(&lab, "pod-b")),
            "pod-b/eth0:in".into()
        ]
    );
    assert!(
        hops(&r)
            .iter()
            .all(|h| h["events"].as_array().unwrap().is_empty()),
        "bridging changes nothing: {r}"
    );
}

#[test]
fn udp_and_tcp_across_nodes_are_answered() {
    let lab = Lab::up();
    let c = lab.pod_ip("pod-c");
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &format!("{c}:5353"),
        "--proto",
        "udp",
    ]);
    assert_eq!(code, 0, "{}", r["verdict"]);
    assert_eq!(r["probe"]["proto"], "udp");
    assert!(path(&lab, &r, "forward").contains(&"node-1/flannel.1:out".to_string()));
    assert_eq!(
        hop_at(&lab, &r, "pod-c", "eth0", "in", "forward")["packet"]["dport"],
        5353
    );

    let (code, r) = trace(&["--from", &lab.ns("pod-a"), "--to", &format!("{c}:8080")]);
    assert_eq!(code, 0, "{}", r["verdict"]);
    assert_eq!(r["probe"]["proto"], "tcp");
    assert!(
        r["verdict"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("SYN-ACK"),
        "{}",
        r["verdict"]
    );
    let reply = hop_at(&lab, &r, "pod-a", "eth0", "in", "return");
    assert_eq!(reply["packet"]["what"], "SYN-ACK");
}

#[test]
fn cluster_ip_dnat_is_named_confirmed_by_conntrack_and_undone_on_return() {
    let lab = Lab::up();
    // Several probes, each its own flow: the Service balances them over both endpoints.
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-b"),
        "--to",
        "10.96.0.10:80",
        "--count",
        "14",
        "--interval",
        "10ms",
    ]);
    assert_eq!(code, 0, "{}", r["verdict"]);
    let dnat_hop = hops(&r)
        .iter()
        .find(|h| h["leg"] == "forward" && !events_of(h, "dnat").is_empty())
        .unwrap_or_else(|| panic!("no DNAT in {r}"));
    assert!(
        dnat_hop["netns"].as_str().unwrap().ends_with("-node-1"),
        "DNAT happens on the client's node"
    );
    let dnat = &events_of(dnat_hop, "dnat")[0];
    assert_eq!(dnat["from"], "10.96.0.10:80");
    let endpoint = dnat["to"].as_str().unwrap();
    let pod_a = format!("{}:8080", lab.pod_ip("pod-a"));
    let pod_c = format!("{}:8080", lab.pod_ip("pod-c"));
    assert!(endpoint == pod_a || endpoint == pod_c, "{endpoint}");
    let ct = &dnat_hop["conntrack"];
    assert!(
        ct["orig"].as_str().unwrap().contains("→ 10.96.0.10:80"),
        "{ct}"
    );
    assert!(
        ct["reply"]
            .as_str()
            .unwrap()
            .starts_with(&format!("tcp {endpoint}")),
        "{ct}"
    );
    // The answer reaches pod-b from the ClusterIP again: the return leg was un-NATed.
    let back = hop_at(&lab, &r, "pod-b", "eth0", "in", "return");
    assert_eq!(back["packet"]["src"], "10.96.0.10");
    assert_eq!(back["packet"]["sport"], 80);
    assert!(hops(&r)
        .iter()
        .filter(|h| h["leg"] == "return")
        .any(|h| !events_of(h, "snat").is_empty()));
    // Probes that went to the other node crossed the overlay; both endpoints were reached.
    let paths: Vec<String> = r["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].to_string())
        .collect();
    let cross = paths.iter().filter(|p| p.contains("flannel.1")).count();
    assert!(
        cross > 0 && cross < 14,
        "14 probes over two endpoints should split (p = 1/8192 not to): {cross} crossed"
    );
}

#[test]
fn office_to_vip_names_every_rewrite_where_it_happens() {
    let lab = Lab::up();
    let (code, r) = trace(&["--from", &lab.ns("office"), "--to", "203.0.113.80:80"]);
    assert_eq!(code, 0, "{}", r["verdict"]);
    // The firewall rewrites both sides at once.
    let fw = hop_at(&lab, &r, "fw", "eth0", "out", "forward");
    let snat = &events_of(fw, "snat")[0];
    let dnat = &events_of(fw, "dnat")[0];
    assert!(snat["from"].as_str().unwrap().starts_with("10.244.2.50:"));
    assert!(snat["to"].as_str().unwrap().starts_with("100.64.0.1:"));
    assert_eq!(dnat["from"], "203.0.113.80:80");
    assert_eq!(dnat["to"], "192.168.50.11:30080");
    assert!(
        fw["conntrack"]["reply"]
            .as_str()
            .unwrap()
            .contains("192.168.50.11:30080 → 100.64.0.1"),
        "{}",
        fw["conntrack"]
    );
    // node-1: NodePort DNAT to an endpoint and masquerade, confirmed by node-1's conntrack.
    let node = hops(&r)
        .iter()
        .find(|h| {
            h["leg"] == "forward"
                && h["netns"].as_str().unwrap().ends_with("-node-1")
                && !events_of(h, "dnat").is_empty()
        })
        .unwrap_or_else(|| panic!("no NodePort DNAT on node-1: {r}"));
    assert_eq!(events_of(node, "dnat")[0]["from"], "192.168.50.11:30080");
    assert_eq!(events_of(node, "snat").len(), 1, "masquerade");
    assert!(
        node["conntrack"]["orig"]
            .as_str()
            .unwrap()
            .contains("100.64.0.1"),
        "{}",
        node["conntrack"]
    );
    // If the endpoint is on node-2, the rest of the way is VXLAN.
    let to = events_of(node, "dnat")[0]["to"]
        .as_str()
        .unwrap()
        .to_string();
    if to.starts_with(&lab.pod_ip("pod-c")) {
        assert!(!events_of(
            hop_at(&lab, &r, "node-1", "eth0", "out", "forward"),
            "encap"
        )
        .is_empty());
    }
    // The office gets its answer from the VIP, never from a pod address.
    let back = hop_at(&lab, &r, "office", "eth0", "in", "return");
    assert_eq!(back["packet"]["src"], "203.0.113.80");
}

#[test]
fn a_forward_drop_is_located_with_the_hop_expected_next() {
    let lab = Lab::up();
    lab.fault(&["drop-pod", "pod-c"]);
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 1, "{}", r["verdict"]);
    let v = &r["verdict"];
    assert_eq!(v["kind"], "dropped");
    let last = &hops(&r)[v["last_seen"].as_u64().unwrap() as usize];
    assert_eq!(last["netns"], lab.ns("node-2"));
    assert!(
        last["ifname"] == "flannel.1" || last["ifname"] == "cni0",
        "{last}"
    );
    assert_eq!(last["direction"], "in");
    assert_eq!(
        v["expected_next"],
        format!("{}/{} (out)", lab.ns("node-2"), host_veth(&lab, "pod-c"))
    );
    assert!(path(&lab, &r, "return").is_empty());
    // The kernel's trace names the rule: the handle nft shows for the DROP the fault inserted.
    let by = &v["dropped_by"];
    assert_eq!(by["netns"], lab.ns("node-2"), "{v}");
    assert_eq!(
        (&by["table"], &by["chain"]),
        (&"filter".into(), &"FORWARD".into())
    );
    let listing = lab.exec(
        "node-2",
        &["nft", "-a", "list", "chain", "ip", "filter", "FORWARD"],
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    let handle = listing
        .lines()
        .find(|l| l.contains("10.244.2.2") && l.contains("drop"))
        .and_then(|l| l.rsplit("# handle ").next())
        .and_then(|h| h.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no DROP rule for pod-c in:\n{listing}"));
    assert_eq!(by["handle"], handle, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "(table ip filter, chain FORWARD, handle {handle})"
        )),
        "{detail}"
    );
    // dye's tracing tables went with its sockets: none is left in any lab namespace.
    assert_no_tracing_table(&lab);
}

/// No lab namespace holds one of dye's nftables tracing tables.
fn assert_no_tracing_table(lab: &Lab) {
    for member in [
        "pod-a", "node-1", "underlay", "node-2", "pod-c", "fw", "office",
    ] {
        let tables = lab.exec(member, &["nft", "list", "tables"]);
        assert!(
            !String::from_utf8_lossy(&tables.stdout).contains("dye_"),
            "a dye table is left in {member}"
        );
    }
}

#[test]
fn the_firewalls_default_deny_policy_is_named_when_it_drops_the_probe() {
    let lab = Lab::up();
    // Without node-1's overlay route, pod-c's address goes the default way: to the firewall,
    // whose FORWARD chain denies by default.
    lab.fault(&["no-route", "node-1", "node-2"]);
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 1, "{}", r["verdict"]);
    let by = &r["verdict"]["dropped_by"];
    assert_eq!(by["netns"], lab.ns("fw"), "{r}");
    assert_eq!(by["chain"], "FORWARD");
    assert!(by["handle"].is_null());
    assert_eq!(by["rule"], "policy drop");
    // The outside check: the firewall's FORWARD policy is drop.
    let listing = lab.exec("fw", &["nft", "list", "chain", "ip", "filter", "FORWARD"]);
    assert!(String::from_utf8_lossy(&listing.stdout).contains("policy drop;"));
}

#[test]
fn underlay_mtu_fragments_outside_and_df_makes_a_located_black_hole() {
    let lab = Lab::up();
    let c = lab.pod_ip("pod-c");
    lab.fault(&["underlay-mtu", "1400"]);
    let (code, r) = trace(&["--from", &lab.ns("pod-a"), "--to", &c, "--size", "1450"]);
    assert_eq!(code, 0, "{}", r["verdict"]);
    let up = hop_at(&lab, &r, "node-1", "eth0", "out", "forward");
    let f = &up["fragments"];
    assert_eq!(
        (f["count"].as_u64(), f["layer"].as_str()),
        (Some(2), Some("outer")),
        "{up}"
    );
    // 1450 + 50 bytes of VXLAN = 1500, cut at 1400.
    assert_eq!(f["sizes"], serde_json::json!([1396, 124]));
    assert_eq!(events_of(up, "fragment").len(), 1);
    assert!(
        hops(&r)
            .iter()
            .any(|h| h["netns"] == lab.ns("node-2") && !events_of(h, "reassemble").is_empty()),
        "no reassembly on node-2"
    );

    lab.fault(&["vxlan-df"]);
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &c,
        "--size",
        "1450",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 1);
    let v = &r["verdict"];
    assert_eq!(v["kind"], "dropped");
    let last = &hops(&r)[v["last_seen"].as_u64().unwrap() as usize];
    assert_eq!(
        (last["netns"].as_str(), last["ifname"].as_str()),
        (Some(lab.ns("node-1").as_str()), Some("flannel.1"))
    );
    assert_eq!(
        v["expected_next"],
        format!("{}/eth0 (out)", lab.ns("node-1"))
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("1500 bytes") && detail.contains("MTU 1400") && detail.contains("1350"),
        "{detail}"
    );
}

/// Everything a trace could leave behind in the lab's namespaces: rules, links, their flags and
/// promiscuity (timers and counters, which move by themselves, are left out).
fn lab_state(lab: &Lab) -> BTreeMap<String, String> {
    let text = |o: std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let mut m = BTreeMap::new();
    for member in lab.view["members"].as_array().unwrap() {
        let name = member["name"].as_str().unwrap();
        let links = text(lab.exec(name, &["ip", "-o", "link"]));
        let promisc: Vec<String> = text(lab.exec(name, &["ip", "-d", "-o", "link"]))
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "promiscuity")
                    .take(4)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let rules: String = text(lab.exec(name, &["iptables-save"]))
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string() + "\n")
            .collect();
        let rules6: String = text(lab.exec(name, &["ip6tables-save"]))
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string() + "\n")
            .collect();
        let nft: String = text(lab.exec(name, &["nft", "list", "ruleset"]))
            .lines()
            .map(|l| l.split(" counter packets").next().unwrap_or(l).to_string() + "\n")
            .collect();
        m.insert(
            name.to_string(),
            format!("{links}{}\n{rules}{rules6}{nft}", promisc.join("\n")),
        );
    }
    m
}

#[test]
fn a_trace_leaves_nothing_behind_and_writes_an_annotated_pcap() {
    let lab = Lab::up();
    let before = (root_snapshot(), lab_state(&lab));
    let pcap_file = TempPcap::new(&lab.id);
    let pcap = pcap_file.path().to_string();
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--pcap",
        &pcap,
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        (root_snapshot(), lab_state(&lab)),
        before,
        "the trace changed rules or links"
    );

    // tshark reads the file: every hop is a packet on an interface named after its point, and
    // each carries the hop comment.
    let rows = tshark_fields(
        &pcap,
        &[],
        &[
            "frame.interface_name",
            "frame.comment",
            "frame.packet_flags_direction",
        ],
    );
    // Packets are in capture (time) order; each names its hop in the comment.
    let mut seen = std::collections::BTreeSet::new();
    for row in &rows {
        let index: usize = row[1]
            .split("hop ")
            .nth(1)
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no hop number in {row:?}"));
        let hop = &hops(&r)[index];
        assert_eq!(
            row[0],
            format!(
                "{}/{}",
                hop["netns"].as_str().unwrap(),
                hop["ifname"].as_str().unwrap()
            ),
            "{row:?}"
        );
        // EPB flags: inbound 1, outbound 2 (tshark shows the direction bits).
        let inbound = hop["direction"] == "in";
        assert_eq!(
            row[2].trim_start_matches("0x").trim_start_matches('0'),
            if inbound { "1" } else { "2" },
            "{row:?}"
        );
        seen.insert(index);
    }
    assert_eq!(seen.len(), hops(&r).len(), "every hop is in the pcap once");
    let encap_row = rows
        .iter()
        .find(|row| row[0] == format!("{}/eth0", lab.ns("node-1")) && row[1].contains("forward"))
        .unwrap();
    assert!(
        encap_row[1].contains("VXLAN encapsulation"),
        "{encap_row:?}"
    );
}

#[test]
fn bad_input_fails_before_anything_is_sent() {
    let lab = Lab::up();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--from", "dye-nosuch-ns", "--to", "10.244.2.2"],
            "dye-nosuch-ns",
        ),
        (&["--from", "host", "--to", "10.244.2.300"], "10.244.2.300"),
        (
            &["--from", "host", "--to", "10.96.0.10", "--proto", "udp"],
            "needs a port",
        ),
        (
            &["--from", "host", "--to", "10.96.0.10:80", "--proto", "icmp"],
            "no port",
        ),
        (
            &["--from", "host", "--to", "10.96.0.10", "--count", "1000"],
            "--count",
        ),
    ];
    let (from, to) = (lab.ns("pod-a"), lab.pod_ip("pod-c"));
    let lab_cases: &[(&[&str], &str)] = &[
        (
            &["--from", &from, "--to", &to, "--size", "4000"],
            "MTU 1450",
        ),
        (
            &[
                "--from",
                &from,
                "--to",
                &to,
                "--pcap",
                "/nonexistent-dir/x.pcapng",
            ],
            "/nonexistent-dir/x.pcapng",
        ),
    ];
    for (args, needle) in cases.iter().chain(lab_cases) {
        let mut all = vec!["trace"];
        all.extend_from_slice(args);
        let out = dye(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_source_given_by_pid_is_the_same_namespace_as_its_name() {
    let lab = Lab::up();
    // pod-a's responder lives in pod-a's namespace: `--from PID` must find it by inode, name
    // its hops as pod-a, and see the answer come home.
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", &lab.ns("pod-a")])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .next()
        .expect("a process in pod-a")
        .to_string();
    let (code, r) = trace(&["--from", &pid, "--to", &lab.pod_ip("pod-c")]);
    assert_eq!(code, 0, "{}", r["verdict"]);
    assert_eq!(r["verdict"]["kind"], "answered");
    let forward = path(&lab, &r, "forward");
    assert_eq!(
        forward.first().map(String::as_str),
        Some("pod-a/eth0:out"),
        "{forward:?}"
    );
    assert!(
        forward.contains(&"node-1/flannel.1:out".to_string()),
        "{forward:?}"
    );
}

// ---- IPv6 ----

#[test]
fn ipv6_icmp_udp_and_tcp_across_nodes_cross_the_v6_overlay_and_are_answered() {
    let lab = Lab::up();
    let c = lab.pod_ip6("pod-c");
    let (code, r) = trace(&["--from", &lab.ns("pod-a"), "--to", &c]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["verdict"]["kind"], "answered", "{}", r["verdict"]);
    assert_eq!(r["probe"]["src"], lab.pod_ip6("pod-a"));
    let a_veth = host_veth(&lab, "pod-a");
    let c_veth = host_veth(&lab, "pod-c");
    let expected = [
        "pod-a/eth0:out".to_string(),
        format!("node-1/{a_veth}:in"),
        "node-1/cni0:in".into(),
        "node-1/flannel-v6.1:out".into(),
        "node-1/eth0:out".into(),
        "underlay/node-1:in".into(),
        "underlay/node-2:out".into(),
        "node-2/eth0:in".into(),
        "node-2/flannel-v6.1:in".into(),
        "node-2/cni0:out".into(),
        format!("node-2/{c_veth}:out"),
        "pod-c/eth0:in".into(),
    ];
    assert_eq!(path(&lab, &r, "forward"), expected);
    let ret = path(&lab, &r, "return");
    assert_eq!(ret.first().map(String::as_str), Some("pod-c/eth0:out"));
    assert_eq!(ret.last().map(String::as_str), Some("pod-a/eth0:in"));
    assert_eq!(
        hop_at(&lab, &r, "pod-a", "eth0", "in", "return")["packet"]["what"],
        "echo reply"
    );
    // flannel-v6.1 encapsulates in IPv6 between the nodes' v6 underlay addresses.
    let up = hop_at(&lab, &r, "node-1", "eth0", "out", "forward");
    let outer = &up["outer"][0];
    assert_eq!(
        (
            outer["kind"].as_str(),
            outer["vni"].as_u64(),
            outer["dport"].as_u64(),
            outer["src"].as_str(),
            outer["dst"].as_str()
        ),
        (
            Some("vxlan"),
            Some(1),
            Some(8472),
            Some("fd00:50::11"),
            Some("fd00:50::12")
        )
    );
    assert_eq!(events_of(up, "encap").len(), 1);
    assert_eq!(
        events_of(
            hop_at(&lab, &r, "node-2", "flannel-v6.1", "in", "forward"),
            "decap"
        )
        .len(),
        1
    );
    // Hop limit: node-1 and node-2 each decrement it, shown as ttl events where it happened.
    let forward: Vec<&Value> = hops(&r).iter().filter(|h| h["leg"] == "forward").collect();
    let hl: Vec<u64> = forward
        .iter()
        .map(|h| h["packet"]["ttl"].as_u64().unwrap())
        .collect();
    assert_eq!((hl.first(), hl.last()), (Some(&64), Some(&62)));
    let ttl_at: Vec<String> = forward
        .iter()
        .filter(|h| !events_of(h, "ttl").is_empty())
        .map(|h| {
            format!(
                "{}/{}",
                h["netns"].as_str().unwrap(),
                h["ifname"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ttl_at,
        vec![
            format!("{}/flannel-v6.1", lab.ns("node-1")),
            format!("{}/cni0", lab.ns("node-2"))
        ]
    );

    // UDP to the responder, which answers on IPv6 with the probe echoed (marker included).
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &format!("[{c}]:5353"),
        "--proto",
        "udp",
    ]);
    assert_eq!(code, 0, "{}", r["verdict"]);
    assert_eq!(r["verdict"]["kind"], "answered");
    assert_eq!(r["probe"]["to"], format!("[{c}]:5353"));
    assert!(path(&lab, &r, "forward").contains(&"node-1/flannel-v6.1:out".to_string()));
    assert_eq!(
        hop_at(&lab, &r, "pod-c", "eth0", "in", "forward")["packet"]["dport"],
        5353
    );
    assert!(path(&lab, &r, "return").contains(&"node-2/flannel-v6.1:out".to_string()));

    // TCP: the default probe size grows to hold an IPv6 + TCP header and the marker, and the
    // unmarked SYN-ACK is recognised at every hop back, inside VXLAN too.
    let (code, r) = trace(&["--from", &lab.ns("pod-a"), "--to", &format!("[{c}]:8080")]);
    assert_eq!(code, 0, "{}", r["verdict"]);
    assert_eq!(r["probe"]["size"], 76);
    assert!(
        r["verdict"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("SYN-ACK"),
        "{}",
        r["verdict"]
    );
    assert_eq!(
        hop_at(&lab, &r, "pod-a", "eth0", "in", "return")["packet"]["what"],
        "SYN-ACK"
    );
    let back = hop_at(&lab, &r, "node-2", "eth0", "out", "return");
    assert_eq!(back["outer"][0]["src"], "fd00:50::12");
    assert_eq!(back["packet"]["what"], "SYN-ACK");
}

#[test]
fn ipv6_packet_too_big_from_the_firewall_is_the_verdict() {
    let lab = Lab::up();
    let office = lab.addr6("office", "eth0");
    lab.fault(&["link-mtu", "fw/eth1", "1280"]);
    // A plain ping first, so the pod has already cached path MTU 1280 for the office: dye must
    // still send its 1400-byte probe at the device MTU and show where the limit is.
    assert!(!lab.ping("pod-a", &office, 1400));
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &office,
        "--size",
        "1400",
        "--df",
        "--count",
        "2",
        "--interval",
        "10ms",
    ]);
    assert_eq!(code, 1, "{r}");
    let v = &r["verdict"];
    assert_eq!(v["kind"], "icmp_error", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("fd00:50::254 sent ICMP packet-too-big") && detail.contains("MTU 1280"),
        "{detail}"
    );
    // The probe's last sighting is fw's underlay side: eth1 is where it would have gone.
    let last = &hops(&r)[v["last_seen"].as_u64().unwrap() as usize];
    assert_eq!(
        (
            last["netns"].as_str(),
            last["ifname"].as_str(),
            last["direction"].as_str()
        ),
        (Some(lab.ns("fw").as_str()), Some("eth0"), Some("in"))
    );
    // Each probe got its own error (matched by flow label: the quote stops before the marker),
    // and the error comes back to the pod from fw's underlay address.
    for p in r["probes"].as_array().unwrap() {
        assert_eq!(p["verdict"], "icmp_error", "{p}");
    }
    let back = hop_at(&lab, &r, "pod-a", "eth0", "in", "return");
    assert_eq!(back["packet"]["src"], "fd00:50::254");
    assert_eq!(back["packet"]["proto"], "icmp6");
    assert_eq!(back["packet"]["what"], "packet-too-big mtu 1280");
    assert!(
        hops(&r)
            .iter()
            .filter(|h| h["leg"] == "return")
            .all(|h| h["seq"] == 1 || h["seq"] == 2),
        "{r}"
    );
}

#[test]
fn ipv6_error_with_a_short_quote_is_seen_inside_vxlan_on_the_underlay() {
    let lab = Lab::up();
    let c = lab.pod_ip6("pod-c");
    // A 1400-byte UDP probe to a closed port: pod-c's ICMPv6 port unreachable quotes only the
    // first 1232 bytes (no marker at the end of the frame), and crosses back inside VXLAN.
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &format!("[{c}]:9999"),
        "--proto",
        "udp",
        "--size",
        "1400",
    ]);
    assert_eq!(code, 1, "{}", r["verdict"]);
    assert_eq!(r["verdict"]["kind"], "icmp_error");
    let ret = path(&lab, &r, "return");
    for hop in [
        "node-2/flannel-v6.1:out",
        "node-2/eth0:out",
        "underlay/node-2:in",
        "underlay/node-1:out",
        "node-1/eth0:in",
        "pod-a/eth0:in",
    ] {
        assert!(ret.contains(&hop.to_string()), "{hop} missing from {ret:?}");
    }
    let wire = hop_at(&lab, &r, "underlay", "node-1", "out", "return");
    assert_eq!(wire["outer"][0]["dst"], "fd00:50::11");
    assert_eq!(wire["packet"]["what"], "unreachable port");
    assert_eq!(wire["packet"]["len"], 1280);
}

#[test]
fn a_recorded_trace_replays_to_the_same_report_after_the_lab_is_gone_without_privileges() {
    let lab = Lab::up();
    let recording = TempPcap::new(&format!("{}-rec", lab.id));
    let out = dye(&[
        "trace",
        "--json",
        "--from",
        &lab.ns("pod-b"),
        "--to",
        "10.96.0.10:80",
        "--record",
        recording.path(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let live_bytes = out.stdout;
    let live: Value = serde_json::from_slice(&live_bytes).expect("live JSON");
    let ns_names: Vec<String> = ["pod-b", "node-1"].iter().map(|m| lab.ns(m)).collect();
    drop(lab);
    let listed = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns")
            .stdout,
    )
    .to_string();
    assert!(
        ns_names.iter().all(|n| !listed.contains(n.as_str())),
        "the lab is gone"
    );

    // A fresh process without network privileges prints the same report, byte for byte.
    let replay = std::process::Command::new("capsh")
        .args([
            "--drop=cap_net_admin,cap_net_raw,cap_sys_admin",
            "--",
            "-c",
            &format!(
                "{} replay --json {}",
                support::dye_bin().display(),
                recording.path()
            ),
        ])
        .output()
        .expect("capsh");
    assert!(
        replay.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed: Value = serde_json::from_slice(&replay.stdout).expect("replay JSON");
    assert_eq!(replayed, live);
    assert!(
        replay.stdout == live_bytes,
        "the replay printed other bytes than the live run's --json"
    );

    // The vendor pcap comes out of the recording too, and tshark reads every hop in it.
    let pcap = TempPcap::new("replayed");
    let out = dye(&["replay", recording.path(), "--pcap", pcap.path()]);
    assert_eq!(out.status.code(), Some(0));
    let rows = tshark_fields(pcap.path(), &[], &["frame.interface_name", "tcp.dstport"]);
    assert_eq!(rows.len(), hops(&live).len());
    assert!(
        rows.iter().any(|r| r[1] == "8080"),
        "the DNATed SYN: {rows:?}"
    );
}

#[test]
fn replay_refuses_what_is_not_a_recording() {
    let junk = TempPcap::new("junk");
    std::fs::write(
        junk.path(),
        b"{\"schema\":\"something/else\",\"command\":\"trace\",\"dye_version\":\"0\"}",
    )
    .expect("write");
    let out = dye(&["replay", junk.path()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a dye recording"), "{err}");
    let out = dye(&["replay", "/nonexistent/trace.dye"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/trace.dye"));
}

#[test]
fn a_big_ipv6_probe_leaves_no_cached_path_mtu_in_the_source() {
    let lab = Lab::up();
    lab.fault(&["link-mtu", "fw/eth1", "1280"]);
    let office = lab.addr6("office", "eth0");
    let cached = |lab: &Lab| {
        String::from_utf8_lossy(
            &lab.exec("pod-a", &["ip", "-6", "route", "get", &office])
                .stdout,
        )
        .contains("mtu 1280")
    };
    assert!(!cached(&lab));
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &office,
        "--size",
        "1400",
    ]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["verdict"]["kind"], "icmp_error");
    // The Packet Too Big taught pod-a's kernel 1280 for the office, as if the pod's own traffic
    // had: dye removed that one cached route again and says so.
    let c = &r["pmtu_cache"];
    assert_eq!(c["restored"], true, "{c}");
    assert!(c["after"].as_str().unwrap().contains("mtu 1280"), "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("removed the cached route towards fd00:10::50"),
        "{c}"
    );
    assert_eq!(
        lab.cached_pmtu("pod-a", &office),
        None,
        "the cached path MTU is gone"
    );
    // A small probe changes nothing, and the report says nothing about the cache.
    let (code, r) = trace(&["--from", &lab.ns("pod-a"), "--to", &office]);
    assert_eq!(code, 0, "{r}");
    assert!(r["pmtu_cache"].is_null(), "{r}");
}

#[test]
fn a_trace_killed_with_sigkill_leaves_no_tracing_table() {
    let lab = Lab::up();
    lab.fault(&["drop-pod", "pod-c"]);
    // A dropped probe keeps dye waiting for its timeout: kill it while it waits.
    let mut child = std::process::Command::new(support::dye_bin())
        .args([
            "trace",
            "--from",
            &lab.ns("pod-a"),
            "--to",
            &lab.pod_ip("pod-c"),
            "--timeout",
            "10s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn dye");
    // Armed within a second (discovery and arming take ~0.1 s); check, then SIGKILL.
    let armed = (0..40).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t = lab.exec("node-2", &["nft", "list", "tables"]);
        String::from_utf8_lossy(&t.stdout).contains("dye_")
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert!(armed, "dye never armed node-2");
    // The kernel removed each table with the killed process's socket.
    assert_no_tracing_table(&lab);
}

#[test]
fn the_dropping_rule_is_named_downstream_of_a_cluster_ip_dnat() {
    dropped_downstream_of_a_cluster_ip_dnat(64);
}

/// The marker ends the probe, here ~1160 bytes past the transport header: beyond what a
/// payload match could read before Linux 6.2, so an address match would have been needed —
/// and it stops matching once node-1's DNAT rewrites the destination.
#[test]
fn a_big_probes_dropping_rule_is_named_downstream_of_a_cluster_ip_dnat() {
    dropped_downstream_of_a_cluster_ip_dnat(1200);
}

fn dropped_downstream_of_a_cluster_ip_dnat(size: u32) {
    let lab = Lab::up();
    lab.fault(&["drop-pod", "pod-c"]);
    // pod-b → ClusterIP: node-1 DNATs each probe to pod-a or pod-c; those sent to pod-c die in
    // node-2's FORWARD chain, where the probe no longer carries the address it was sent to.
    // dye's tracing rule matches the probe's marker, not its addresses, so node-2 traces it.
    let size = size.to_string();
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-b"),
        "--to",
        "10.96.0.10:80",
        "--size",
        &size,
        "--count",
        "14",
        "--interval",
        "10ms",
        "--timeout",
        "1s",
    ]);
    assert_eq!(r["probe"]["size"].to_string(), size);
    assert_eq!(code, 1, "{}", r["verdict"]);
    assert_eq!(
        r["verdict"]["kind"], "dropped",
        "14 probes, p = 1/16384 none went to pod-c"
    );
    let by = &r["verdict"]["dropped_by"];
    assert_eq!(by["netns"], lab.ns("node-2"), "{}", r["verdict"]);
    assert_eq!(
        (&by["table"], &by["chain"]),
        (&"filter".into(), &"FORWARD".into())
    );
    assert!(
        by["rule"]
            .as_str()
            .unwrap()
            .starts_with("ip daddr 10.244.2.2 "),
        "{by}"
    );
    // The representative probe was DNATed on its way: the rule matched the rewritten packet.
    assert!(
        hops(&r).iter().any(|h| !events_of(h, "dnat").is_empty()),
        "{r}"
    );
}

#[test]
fn a_drop_by_an_iptables_legacy_rule_is_said_to_be_out_of_the_traces_sight() {
    let lab = Lab::up();
    // iptables-legacy rules live in x_tables, which nftables tracing cannot see.
    let add = lab.exec(
        "node-2",
        &[
            "iptables-legacy",
            "-I",
            "FORWARD",
            "-d",
            &lab.pod_ip("pod-c"),
            "-j",
            "DROP",
        ],
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let (code, r) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 1, "{}", r["verdict"]);
    let v = &r["verdict"];
    assert!(
        v["dropped_by"].is_null(),
        "no nftables rule dropped it: {v}"
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "{} has iptables-legacy tables (ip filter), whose rules nftables tracing cannot see",
            lab.ns("node-2")
        )),
        "{detail}"
    );
}

#[test]
fn a_cluster_ip_trace_shows_the_kube_sep_dnat_rule_at_node_1s_hop() {
    let lab = Lab::up();
    let (code, r) = trace(&["--from", &lab.ns("pod-b"), "--to", "10.96.0.10:80"]);
    assert_eq!(code, 0, "{}", r["verdict"]);
    let node1 = lab.ns("node-1");
    let at_node1: Vec<&Value> = hops(&r)
        .iter()
        .filter(|h| h["netns"] == node1.as_str() && h["leg"] == "forward")
        .collect();
    let rules: Vec<&Value> = at_node1
        .iter()
        .flat_map(|h| h["rules"].as_array().expect("rules").iter())
        .collect();
    // kube-proxy's chain of decisions, in the order the kernel ran them.
    let sep = rules
        .iter()
        .position(|r| r["chain"].as_str().unwrap().starts_with("KUBE-SEP-"))
        .unwrap_or_else(|| panic!("no KUBE-SEP rule at node-1: {rules:?}"));
    let dnat = rules[sep];
    assert_eq!(dnat["verdict"], "accept", "{dnat}");
    assert!(dnat["rule"].as_str().unwrap().contains("DNAT"), "{dnat}");
    let chain = dnat["chain"].as_str().unwrap();
    assert!(sep >= 1, "{rules:?}");
    assert_eq!(rules[sep - 1]["verdict"], format!("jump {chain}"));
    assert!(rules[sep - 1]["chain"]
        .as_str()
        .unwrap()
        .starts_with("KUBE-SVC-"));
    assert!(dnat["detail"].as_str().unwrap().contains(chain));
    // nft agrees: that handle in that chain is the DNAT to the endpoint the probe went to.
    let listing = lab.exec(
        "node-1",
        &["nft", "-a", "list", "chain", "ip", "nat", chain],
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    let handle = format!("# handle {}", dnat["handle"]);
    let line = listing
        .lines()
        .find(|l| l.trim_end().ends_with(&handle))
        .unwrap_or_else(|| panic!("no {handle} in {listing}"));
    let to = at_node1
        .iter()
        .flat_map(|h| events_of(h, "dnat"))
        .next()
        .expect("a DNAT at node-1")["to"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(line.contains(&format!("dnat to {to}")), "{line} vs {to}");
    // The text report shows it under the hop.
    let text = dye(&["trace", "--from", &lab.ns("pod-b"), "--to", "10.96.0.10:80"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("↳ nft ip nat KUBE-SEP-") && l.ends_with("→ accept")),
        "{text}"
    );
}
