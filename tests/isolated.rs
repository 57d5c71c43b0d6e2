//! Isolated lab nodes (`dye lab up --isolated`): every node a host of its own — its own mount,
//! PID and UTS namespaces besides its network, its containerd and pods inside, its agent a
//! container from dye's image made over the node's CRI with the DaemonSet's settings. dye runs
//! the way it runs on a cluster: single-host on one node sees only that node, and a
//! coordinator on node-1 (`dye lab exec node-1 -- dye … --agents …`) sees the whole path
//! through the agents — the same hops single-host dye sees from the lab's root (where, as on
//! a hypervisor, every namespace is visible).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{dye, dye_bin};

/// `dye lab exec --id ID NODE -- ARGV`.
fn on_node(lab: &support::Lab, node: &str, argv: &[&str]) -> Output {
    let mut args = vec!["lab", "exec", "--id", &lab.id, node, "--"];
    args.extend_from_slice(argv);
    dye(&args)
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The agents (`ADDR,ADDR`) and certificates `up --isolated` made.
fn agents_of(lab: &support::Lab) -> (String, String) {
    let agents: Vec<&str> = lab.view["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["address"].as_str().unwrap())
        .collect();
    (
        agents.join(","),
        lab.view["certs"].as_str().expect("certs").to_string(),
    )
}

/// `dye COMMAND --json --agents … --certs … ARGS` on node-1: (exit code, report, stderr).
fn coordinate(
    lab: &support::Lab,
    command: &str,
    args: &[&str],
) -> (i32, serde_json::Value, String) {
    coordinate_from(lab, "node-1", command, args)
}

/// [`coordinate`] on lab host `host` (a node, or `admin`).
fn coordinate_from(
    lab: &support::Lab,
    host: &str,
    command: &str,
    args: &[&str],
) -> (i32, serde_json::Value, String) {
    let (agents, certs) = agents_of(lab);
    let bin = dye_bin();
    let mut argv = vec![bin.to_str().unwrap(), command, "--json"];
    argv.extend_from_slice(&["--agents", &agents, "--certs", &certs]);
    argv.extend_from_slice(args);
    let out = on_node(lab, host, &argv);
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}); exit {code}; stderr: {stderr}"));
    (code, report, stderr)
}

/// The network namespace (`net:[inode]`) of `path` as seen on `node`, or on the host.
fn netns_link(lab: &support::Lab, node: Option<&str>, path: &str) -> String {
    match node {
        Some(node) => text(&on_node(lab, node, &["readlink", path])),
        None => std::fs::read_link(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| {
                // A /run/netns entry is a bind mount of an nsfs file, not a link.
                let out = Command::new("stat")
                    .args(["-L", "-c", "net:[%i]", path])
                    .output()
                    .unwrap();
                text(&out)
            }),
    }
}

/// The inode form of a named namespace file, as `stat` sees it on `node` (or the host).
fn netns_file(lab: &support::Lab, node: Option<&str>, path: &str) -> String {
    let argv = ["stat", "-L", "-c", "net:[%i]", path];
    match node {
        Some(node) => text(&on_node(lab, node, &argv)),
        None => text(&Command::new(argv[0]).args(&argv[1..]).output().unwrap()),
    }
}

/// Every member's namespace as the host names it (`dye-ID-pod-a`), by identity.
fn host_names(lab: &support::Lab) -> BTreeMap<String, String> {
    let prefix = format!("dye-{}-", lab.id);
    support::namespaces_with_prefix(&prefix)
        .into_iter()
        .map(|ns| (netns_file(lab, None, &format!("/run/netns/{ns}")), ns))
        .collect()
}

/// A hop of a trace through agents named as the host names its namespace: the node's own
/// (`node-1:host`), a pod named by reference (`pod NS/NAME`) or by its runtime (`cni-…`, looked
/// up inside the node). (netns, ifname, direction, leg).
fn hops_by_host_name(lab: &support::Lab, r: &serde_json::Value) -> Vec<[String; 4]> {
    let names = host_names(lab);
    let mut cache: BTreeMap<(String, String), String> = BTreeMap::new();
    r["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            let node = h["node"].as_str().unwrap().to_string();
            let netns = h["netns"].as_str().unwrap().to_string();
            let host = cache
                .entry((node.clone(), netns.clone()))
                .or_insert_with(|| {
                    if netns == "host" || netns == format!("{node}:host") {
                        lab.ns(&node)
                    } else if let Some(pod) = netns.strip_prefix("pod default/") {
                        lab.ns(pod)
                    } else {
                        let id = netns_file(lab, Some(&node), &format!("/run/netns/{netns}"));
                        names.get(&id).cloned().unwrap_or(netns.clone())
                    }
                })
                .clone();
            [
                host,
                h["ifname"].as_str().unwrap().to_string(),
                h["direction"].as_str().unwrap().to_string(),
                h["leg"].as_str().unwrap().to_string(),
            ]
        })
        .collect()
}

/// Single-host dye from the lab's root: (netns, ifname, direction, leg) of every hop, the
/// underlay switch left out (no node: nobody runs an agent inside it).
fn single_host_hops(lab: &support::Lab, args: &[&str]) -> (serde_json::Value, Vec<[String; 4]>) {
    let mut argv = vec!["trace", "--json"];
    argv.extend_from_slice(args);
    let out = dye(&argv);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let underlay = lab.ns("underlay");
    let hops = r["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["netns"] != underlay.as_str())
        .map(|h| {
            ["netns", "ifname", "direction", "leg"].map(|k| h[k].as_str().unwrap().to_string())
        })
        .collect();
    (r, hops)
}

/// The effective capability set of `pid` (CapEff, a bit mask).
fn cap_eff(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

/// The agents' host PIDs, from `dye lab status --json`.
fn agent_pids(lab: &support::Lab) -> BTreeMap<String, u64> {
    let out = dye(&["lab", "status", &lab.id, "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    view["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["node"].as_str().unwrap().to_string(),
                a["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn isolated_nodes_are_hosts_of_their_own_and_a_coordinator_on_one_sees_the_whole_path() {
    let root_before = support::root_snapshot();
    let lab = support::Lab::up_with(&["--isolated"]);
    let id = lab.id.clone();
    assert_eq!(lab.view["isolated"], true);

    // Each node: its hostname, its /run/netns (only its pods' namespaces, as containerd names
    // them), its /proc (PID 1 is the node's, in the node's network; no other node's process).
    for (node, mine, theirs) in [
        ("node-1", ["pod-a", "pod-b"], ["pod-c", "pod-d"]),
        ("node-2", ["pod-c", "pod-d"], ["pod-a", "pod-b"]),
    ] {
        assert_eq!(text(&on_node(&lab, node, &["hostname"])), node);
        let node_ns = netns_file(&lab, None, &format!("/run/netns/{}", lab.ns(node)));
        assert_eq!(netns_link(&lab, Some(node), "/proc/1/ns/net"), node_ns);
        let listed = text(&on_node(&lab, node, &["ls", "/run/netns"]));
        let files: Vec<&str> = listed.lines().collect();
        assert_eq!(files.len(), 2, "{node}: {files:?}");
        let inside: Vec<String> = files
            .iter()
            .map(|f| netns_file(&lab, Some(node), &format!("/run/netns/{f}")))
            .collect();
        for pod in mine {
            let id = netns_file(&lab, None, &format!("/run/netns/{}", lab.ns(pod)));
            assert!(inside.contains(&id), "{node} lacks {pod}: {files:?}");
        }
        let everything = text(&on_node(
            &lab,
            node,
            &[
                "sh",
                "-c",
                "for p in /proc/[0-9]*; do readlink $p/ns/net; done | sort -u",
            ],
        ));
        for pod in theirs {
            let id = netns_file(&lab, None, &format!("/run/netns/{}", lab.ns(pod)));
            assert!(!everything.contains(&id), "{node} sees {pod}'s namespace");
        }
        let cmdlines = text(&on_node(
            &lab,
            node,
            &["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
        ));
        let other = if node == "node-1" { "node-2" } else { "node-1" };
        assert!(
            cmdlines.contains(&format!("containerd/{node}/config.toml")),
            "{cmdlines}"
        );
        assert!(
            !cmdlines.contains(&format!("containerd/{other}/")),
            "{node} sees {other}'s processes"
        );
        // The pods' processes (the lab's responders) run on their node like containers do.
        for pod in mine {
            let responder = format!("responder --name {pod} ");
            assert!(
                cmdlines.contains(&responder),
                "{node} lacks {pod}'s process"
            );
        }
        for pod in theirs {
            let responder = format!("responder --name {pod} ");
            assert!(
                !cmdlines.contains(&responder),
                "{node} sees {pod}'s process"
            );
        }
    }

    // The agents: containers from dye's image with the DaemonSet's settings, in their node's
    // network and PID namespaces.
    let caps: u64 = [12, 13, 19, 21, 38, 39] // NET_ADMIN NET_RAW SYS_PTRACE SYS_ADMIN PERFMON BPF
        .iter()
        .map(|b| 1u64 << b)
        .sum();
    for (node, pid) in agent_pids(&lab) {
        assert!(pid > 0, "{node}'s agent has no PID");
        assert_eq!(cap_eff(pid), caps, "{node}'s agent capabilities");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        let root = format!("/proc/{pid}/root");
        assert!(std::path::Path::new(&format!("{root}/usr/local/bin/dye")).exists());
        assert!(!std::path::Path::new(&format!("{root}/bin/sh")).exists());
        let node_ns = netns_file(&lab, None, &format!("/run/netns/{}", lab.ns(&node)));
        assert_eq!(
            netns_link(&lab, None, &format!("/proc/{pid}/ns/net")),
            node_ns
        );
        let node_pid_ns = text(&on_node(&lab, &node, &["readlink", "/proc/1/ns/pid"]));
        assert_eq!(
            netns_link(&lab, None, &format!("/proc/{pid}/ns/pid")),
            node_pid_ns
        );
    }

    // From the lab's root, a node's runtime numbers processes in the node's PID namespace:
    // dye translates the sandbox's PID (through NSpid) and names the right namespace.
    let sockets: BTreeMap<String, String> = lab.view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            Some((
                m["name"].as_str()?.to_string(),
                m["cri_socket"].as_str()?.to_string(),
            ))
        })
        .collect();
    for (node, pod) in [("node-1", "pod-a"), ("node-2", "pod-c")] {
        let out = dye(&[
            "topology",
            "--json",
            "--runtime-endpoint",
            &sockets[node],
            "--ns",
            &format!("pod:{pod}"),
        ]);
        let topo: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let ns = &topo["namespaces"][0];
        assert_eq!(ns["name"], format!("pod default/{pod}").as_str(), "{ns}");
        let inode = netns_file(&lab, None, &format!("/run/netns/{}", lab.ns(pod)));
        assert_eq!(format!("net:[{}]", ns["id"]["ino"]), inode, "{pod}");
    }

    // Single-host dye on node-1 sees node-1 only: a same-node trace answers; across nodes the
    // probe is seen leaving node-1 and nothing beyond it.
    let bin = dye_bin();
    let bin = bin.to_str().unwrap();
    let pod_b = lab.pod_ip("pod-b");
    let pod_c = lab.pod_ip("pod-c");
    let trace_on_node_1 = |to: &str| -> serde_json::Value {
        let out = on_node(
            &lab,
            "node-1",
            &[bin, "trace", "--json", "--from", "pod:pod-a", "--to", to],
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let r = trace_on_node_1(&pod_b);
    assert_eq!(r["verdict"]["kind"], "answered", "{}", r["verdict"]);
    let r = trace_on_node_1(&pod_c);
    let seen: Vec<String> = r["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}/{}",
                h["netns"].as_str().unwrap(),
                h["ifname"].as_str().unwrap()
            )
        })
        .collect();
    assert!(seen.contains(&"host/eth0".to_string()), "{seen:?}");
    assert!(
        !seen.iter().any(|s| s.starts_with("dye-")),
        "node-1 sees the host's names: {seen:?}"
    );

    // Through the agents from node-1: the hops single-host dye sees from the lab's root.
    let pcap = support::TempPcap::new("isolated");
    let (code, via, err) = coordinate(
        &lab,
        "trace",
        &[
            "--from",
            "pod:pod-a",
            "--to",
            "pod:pod-c",
            "--pcap",
            pcap.path(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(via["verdict"]["kind"], "answered");
    assert!(via["agents"]["blind"].as_array().unwrap().is_empty());
    let (_, expected) = single_host_hops(&lab, &["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert!(expected.len() >= 16, "{expected:?}");
    assert_eq!(hops_by_host_name(&lab, &via), expected);
    // Each agent asks its node's runtime: the pods read as pods, not as `cni-…` files.
    for (node, pod) in [
        ("node-1", "pod default/pod-a"),
        ("node-2", "pod default/pod-c"),
    ] {
        assert!(
            via["hops"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["node"] == node && h["netns"] == pod),
            "{pod} on {node}"
        );
    }
    // From the admin host on the underlay (no node, no pods, no agent): the same hops.
    assert_eq!(text(&on_node(&lab, "admin", &["hostname"])), "admin");
    assert_eq!(text(&on_node(&lab, "admin", &["ls", "/run/netns"])), "");
    let (code, from_admin, err) = coordinate_from(
        &lab,
        "admin",
        "trace",
        &["--from", "pod:pod-a", "--to", "pod:pod-c"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(hops_by_host_name(&lab, &from_admin), expected);
    let names = support::tshark_fields(pcap.path(), &[], &["frame.interface_name"]);
    assert_eq!(names.len(), expected.len());
    for node in ["node-1", "node-2"] {
        let eth0 = format!("{node}/host/eth0");
        assert!(names.iter().any(|n| n[0] == eth0), "{names:?}");
    }

    // A ClusterIP: kube-proxy's DNAT on node-1, to a pod that may be on either node.
    let (code, r, err) = coordinate(
        &lab,
        "trace",
        &[
            "--from",
            "pod:pod-b",
            "--to",
            "10.96.0.10:80",
            "--count",
            "6",
            "--interval",
            "20ms",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["verdict"]["kind"], "answered", "{}", r["verdict"]);
    let dnat = support::first_event(&r, "dnat").expect("a DNAT event");
    assert_eq!(dnat.1["from"], "10.96.0.10:80");
    assert_eq!(dnat.0["node"], "node-1");

    drop(lab);
    assert_eq!(support::root_snapshot(), root_before);
    assert_eq!(support::lab_traces(&id), Vec::<String>::new());
}

/// A NetworkPolicy drop on node-2 named from node-1; `dye mtu` and `dye capture` through the
/// agents of isolated nodes.
#[test]
fn on_isolated_nodes_a_drop_on_node_2_is_named_from_node_1_and_mtu_and_capture_work() {
    let lab = support::Lab::up_with(&["--isolated", "--idle-pods", "8"]);
    let pod_c = lab.pod_ip("pod-c");

    // Busy nodes (8 idle pods each): the agents listen only where the probe can go — the
    // points single-host dye picks by its path walk, less the underlay switch (no node).
    let (code, r, err) = coordinate(&lab, "trace", &["--from", "pod:pod-a", "--to", &pod_c]);
    assert_eq!(code, 0, "{err}");
    let points = |r: &serde_json::Value| -> Vec<String> {
        r["capture"]
            .as_array()
            .expect("capture")
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let via = points(&r);
    assert!(!via.iter().any(|p| p.contains("idle-")), "{via:?}");
    let (single, _) = single_host_hops(&lab, &["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    let underlay = format!("{}/", lab.ns("underlay"));
    let expected: Vec<String> = points(&single)
        .into_iter()
        .filter(|p| !p.starts_with(&underlay))
        .collect();
    assert_eq!(via.len(), expected.len(), "{via:?} vs {expected:?}");

    // mtu: healthy, then a black hole behind node-2's uplink only node-2's agent can see.
    let (code, r, err) = coordinate(&lab, "mtu", &["--from", "pod:pod-a", "--to", &pod_c]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["path_mtu"], 1450, "{r}");
    lab.fault(&["link-mtu", "node-2/eth0", "1400"]);
    lab.fault(&["vxlan-df"]);
    let (code, r, err) = coordinate(&lab, "mtu", &["--from", "pod:pod-a", "--to", &pod_c]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(r["path_mtu"], 1350, "{r}");
    assert_eq!(r["status"], "black_hole", "{r}");
    lab.fault(&["clear"]);

    // capture: both nodes' pods and uplinks in one pcapng.
    let pcap = support::TempPcap::new("isolated-capture");
    let (agents, certs) = agents_of(&lab);
    let bin = dye_bin();
    let mut child: Child = Command::new(dye_bin())
        .args(["lab", "exec", "--id", &lab.id, "node-1", "--"])
        .arg(&bin)
        .args(["capture", "--agents", &agents, "--certs", &certs])
        .args(["-i", "eth0", "-w", pcap.path(), "--duration", "4s", "icmp"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !line.contains("capturing on") {
        line.clear();
        let n = stderr.read_line(&mut line).unwrap_or(0);
        assert!(n > 0 && Instant::now() < deadline, "capture did not start");
    }
    let ping = lab.exec("pod-a", &["ping", "-c", "3", "-i", "0.2", &pod_c]);
    assert!(ping.status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let rows = support::tshark_fields(
        pcap.path(),
        &["-d", "udp.port==8472,vxlan"],
        &["frame.interface_name", "icmp.type", "vxlan.vni"],
    );
    for node in ["node-1", "node-2"] {
        let uplink = format!("{node}/host/eth0");
        let inner = rows
            .iter()
            .filter(|r| r[0] == uplink && r[2] == "1" && (r[1] == "8" || r[1] == "0"))
            .count();
        assert_eq!(inner, 6, "{uplink}: {rows:?} {rest}");
    }
    let pod_frames = rows
        .iter()
        .filter(|r| r[0].ends_with("/eth0") && !r[0].contains("/host/") && r[2].is_empty())
        .count();
    assert_eq!(pod_frames, 12, "{rows:?}");

    // A NetworkPolicy drop on node-2, named from node-1 with its handle, as nft lists it there.
    lab.fault(&["netpol-drop", "pod-c"]);
    let (code, r, err) = coordinate(
        &lab,
        "trace",
        &["--from", "pod:pod-a", "--to", &pod_c, "--timeout", "1s"],
    );
    assert_eq!(code, 1, "{err}");
    let v = &r["verdict"];
    assert_eq!(v["kind"], "dropped", "{v}");
    let by = &v["dropped_by"];
    assert_eq!(by["table"], "netpol", "{v}");
    let listed = text(&on_node(
        &lab,
        "node-2",
        &["nft", "-a", "list", "table", "inet", "netpol"],
    ));
    let handle = by["handle"].as_u64().expect("handle");
    assert!(
        listed
            .lines()
            .any(|l| l.contains("drop") && l.ends_with(&format!("# handle {handle}"))),
        "handle {handle} in {listed}"
    );
    assert!(r["hops"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["node"] == "node-2"));
}

/// Clocks on isolated nodes: node-2's agent restarted by the lab's `agent-clock` fault with
/// ±50 ms; then an agent killed mid-trace, and one stopped.
#[test]
fn on_isolated_nodes_clock_offsets_are_found_and_a_lost_agent_is_named() {
    let lab = support::Lab::up_with(&["--isolated"]);
    let pod_c = lab.pod_ip("pod-c");
    for (shift, truth_us) in [("50ms", 50_000.0), ("-50ms", -50_000.0)] {
        lab.fault(&["agent-clock", "node-2", shift]);
        let (code, r, err) = coordinate(&lab, "trace", &["--from", "pod:pod-a", "--to", &pod_c]);
        assert_eq!(code, 0, "{err}");
        let node2 = r["agents"]["clocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["node"] == "node-2")
            .cloned()
            .expect("node-2's clock");
        assert_eq!(node2["method"], "probe", "{node2}");
        let est = node2["offset_us"].as_f64().unwrap();
        assert!((est - truth_us).abs() < 50.0, "{shift}: estimated {est} µs");
        let hops = r["hops"].as_array().unwrap();
        for leg in ["forward", "return"] {
            let times: Vec<i64> = hops
                .iter()
                .filter(|h| h["leg"] == leg)
                .map(|h| h["t_ns"].as_i64().unwrap())
                .collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{shift} {leg}: {times:?}"
            );
        }
        let at = |node: &str, dir: &str, leg: &str| {
            hops.iter()
                .find(|h| {
                    h["netns"] == format!("{node}:host").as_str()
                        && h["ifname"] == "eth0"
                        && h["direction"] == dir
                        && h["leg"] == leg
                })
                .unwrap_or_else(|| panic!("{node} eth0 {dir} {leg}"))["t_ns"]
                .as_i64()
                .unwrap()
        };
        let fwd = at("node-2", "in", "forward") - at("node-1", "out", "forward");
        let back = at("node-1", "in", "return") - at("node-2", "out", "return");
        for (what, d) in [("forward", fwd), ("return", back)] {
            assert!(
                (0..1_000_000).contains(&d),
                "{shift}: underlay {what} {d} ns"
            );
        }
        lab.fault(&["clear"]);
    }

    // node-2's agent killed (SIGKILL from the host) while probes are out.
    let (agents, certs) = agents_of(&lab);
    let bin = dye_bin();
    let started = Instant::now();
    let child = Command::new(dye_bin())
        .args(["lab", "exec", "--id", &lab.id, "node-1", "--"])
        .arg(&bin)
        .args(["trace", "--json", "--agents", &agents, "--certs", &certs])
        .args(["--from", "pod:pod-a", "--to", &pod_c])
        .args(["--count", "8", "--interval", "300ms", "--timeout", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = agent_pids(&lab)["node-2"];
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let blind = r["agents"]["blind"].as_array().unwrap();
    assert_eq!(blind.len(), 1, "{blind:?}");
    assert_eq!(blind[0]["node"], "node-2");
    assert_ne!(r["verdict"]["kind"], "dropped", "{}", r["verdict"]);

    // Stopped by the lab's fault: refused, named blind, the probe never called dropped there.
    lab.fault(&["agent-stop", "node-2"]);
    lab.fault(&["drop-pod", "pod-c"]);
    let (code, r, err) = coordinate(
        &lab,
        "trace",
        &["--from", "pod:pod-a", "--to", &pod_c, "--timeout", "1s"],
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(r["verdict"]["kind"], "unobserved", "{}", r["verdict"]);
    let blind = r["agents"]["blind"].as_array().unwrap();
    assert!(
        blind[0]["reason"].as_str().unwrap().contains("refused"),
        "{blind:?}"
    );

    // Cut off the underlay: node-2's agent cannot be reached (one 3 s connect deadline) and
    // the probe is last seen leaving node-1, with node-2 named as not observed.
    lab.fault(&["clear"]);
    lab.fault(&["underlay-cut", "node-2"]);
    let started = Instant::now();
    let (code, r, err) = coordinate(
        &lab,
        "trace",
        &["--from", "pod:pod-a", "--to", &pod_c, "--timeout", "1s"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, 1, "{err}");
    let v = &r["verdict"];
    assert_eq!(v["kind"], "unobserved", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("node-1:host/eth0 (out)"), "{detail}");
    assert!(!detail.contains("dropped in"), "{detail}");
    let blind = r["agents"]["blind"].as_array().unwrap();
    assert!(
        blind[0]["reason"].as_str().unwrap().contains("within 3s"),
        "{blind:?}"
    );

    // SIGKILL to the hosts' launchers (nodes and admin): each init dies with its launcher, and the
    // kernel ends every process of a PID namespace whose init is gone — containerd, shims,
    // sandboxes, agents — with nothing left to clean up by hand.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/dye/lab-{}/state.json", lab.id)).unwrap(),
    )
    .unwrap();
    let mut node_pid_ns = Vec::new();
    let hosts = state["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .chain(std::iter::once(&state["admin"]));
    for r in hosts {
        let init = r["init_pid"].as_u64().expect("init pid");
        node_pid_ns.push(std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap());
        let launcher = r["pid"].as_u64().unwrap().to_string();
        assert!(Command::new("kill")
            .args(["-9", &launcher])
            .status()
            .unwrap()
            .success());
    }
    let in_nodes = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path().join("ns/pid"))
                    .is_ok_and(|ns| node_pid_ns.contains(&ns))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_nodes() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(in_nodes(), 0, "processes outlived their node");
}
