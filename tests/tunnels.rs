//! Tunnels on the lab: filters that see through them, checked against tshark's display filters
//! on the same traffic, and flannel's udp backend (a raw-IP TUN device, encapsulation done in
//! userspace) traced, captured and read back by tshark and capinfos.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{dye, dye_bin, lab_traces, tshark_fields, Lab, TempPcap};

const FLANNEL_UDP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../samples/lab/flannel-udp.toml"
);

/// Starts `dye capture ARGS`; returns once it says it is capturing.
fn start_capture(args: &[&str]) -> Child {
    let mut child = Command::new(dye_bin())
        .arg("capture")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dye capture");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("capturing on"), "dye capture said: {line}");
    std::thread::spawn(move || {
        let mut rest = String::new();
        while stderr.read_line(&mut rest).map(|n| n > 0).unwrap_or(false) {}
        eprint!("{rest}");
    });
    child
}

fn wait(child: &mut Child, limit: Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "dye capture exit {s:?}");
            return;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("dye capture did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Packets per interface name in `pcap`, as tshark counts them with display filter `filter`
/// (None: every packet).
fn tshark_per_interface(
    pcap: &str,
    decode_as: &[&str],
    filter: Option<&str>,
) -> BTreeMap<String, usize> {
    let mut extra: Vec<&str> = Vec::new();
    for d in decode_as {
        extra.extend(["-d", d]);
    }
    if let Some(f) = filter {
        extra.extend(["-Y", f]);
    }
    let mut counts = BTreeMap::new();
    for row in tshark_fields(pcap, &extra, &["frame.interface_name"]) {
        *counts.entry(row[0].clone()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn icmp_filter_sees_through_vxlan_as_tshark_does() {
    let lab = Lab::up();
    let ns = format!("dye-{}-*", lab.id);
    let through = TempPcap::new(&format!("through-{}", lab.id));
    let outer = TempPcap::new(&format!("outer-{}", lab.id));
    let all = TempPcap::new(&format!("all-{}", lab.id));
    // The same traffic three times: `icmp` through tunnels (the default), `icmp --outer`
    // (tcpdump's reading), and no filter at all (what tshark's display filter is run on).
    let mut caps = vec![
        start_capture(&[
            "--ns",
            &ns,
            "-w",
            through.path(),
            "--duration",
            "6s",
            "icmp",
        ]),
        start_capture(&[
            "--ns",
            &ns,
            "-w",
            outer.path(),
            "--duration",
            "6s",
            "--outer",
            "icmp",
        ]),
        start_capture(&["--ns", &ns, "-w", all.path(), "--duration", "6s"]),
    ];
    let pod_c = lab.pod_ip("pod-c");
    let ping = lab.exec(
        "pod-a",
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", &pod_c],
    );
    assert!(ping.status.success(), "ping failed");
    for c in &mut caps {
        wait(c, Duration::from_secs(20));
    }

    let vxlan = ["udp.port==8472,vxlan"];
    let kept = tshark_per_interface(through.path(), &vxlan, None);
    let tshark_icmp = tshark_per_interface(all.path(), &vxlan, Some("icmp"));
    // Per interface, dye's `icmp` kept exactly the packets tshark's `icmp` matches in the
    // unfiltered capture of the same traffic (pods, bridges, VXLAN devices and the underlay).
    assert_eq!(
        kept, tshark_icmp,
        "dye icmp (through tunnels) vs tshark -Y icmp"
    );
    // And tshark agrees that every packet kept is ICMP.
    assert_eq!(
        tshark_per_interface(through.path(), &vxlan, Some("icmp")),
        kept
    );
    // The VXLAN-carried copies: on both nodes' eth0 and on the underlay switch ports, the 3
    // requests and 3 replies.
    for (member, ifname) in [
        ("node-1", "eth0"),
        ("underlay", "node-1"),
        ("underlay", "node-2"),
        ("node-2", "eth0"),
    ] {
        let name = format!("{}/{ifname}", lab.ns(member));
        assert_eq!(kept.get(&name), Some(&6), "{name}: {kept:?}");
    }
    // --outer: tcpdump's semantics, the underlay copies are gone, the rest is the same.
    let outer_kept = tshark_per_interface(outer.path(), &vxlan, None);
    let on_underlay = |name: &str| {
        name.ends_with("/eth0") && name.contains("-node-") || name.contains("-underlay/")
    };
    assert!(
        outer_kept.keys().all(|k| !on_underlay(k)),
        "--outer kept underlay packets: {outer_kept:?}"
    );
    let inner_only: BTreeMap<String, usize> = kept
        .iter()
        .filter(|(k, _)| !on_underlay(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(outer_kept, inner_only);
}

/// The point's name → LINKTYPE of its pcapng interface, read from the file itself.
fn linktypes_by_interface(pcap: &str) -> BTreeMap<String, u32> {
    let names = tshark_fields(pcap, &[], &["frame.interface_name"]);
    let mut r = dye_decode::capfile::CaptureReader::new(std::fs::File::open(pcap).unwrap())
        .expect("dye reads its own pcapng");
    let mut out = BTreeMap::new();
    for row in names {
        let f = r.next_frame().expect("as many frames as tshark").unwrap();
        out.insert(row[0].clone(), f.linktype);
    }
    out
}

#[test]
fn flannel_udp_backend_traced_and_captured_on_raw_ip_points() {
    let lab = Lab::up_with(&["--topology", FLANNEL_UDP]);
    let pod_c = lab.pod_ip("pod-c");
    let node1 = lab.ns("node-1");
    let node2 = lab.ns("node-2");

    // A trace across flannel0: answered, decoded hops on the TUN devices, userspace
    // encapsulation seen on eth0 as IP-in-UDP 8285.
    let pcap = TempPcap::new(&format!("udp-trace-{}", lab.id));
    let out = dye(&[
        "trace",
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &pod_c,
        "--json",
        "--pcap",
        pcap.path(),
    ]);
    assert!(
        out.status.success(),
        "dye trace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["kind"], "answered", "{v}");
    let hops = v["hops"].as_array().unwrap();
    let hop = |netns: &str, ifname: &str, leg: &str| {
        hops.iter()
            .find(|h| h["netns"] == netns && h["ifname"] == ifname && h["leg"] == leg)
            .unwrap_or_else(|| panic!("no {leg} hop at {netns}/{ifname}: {v}"))
    };
    for (ns, leg, src, dst) in [
        (&node1, "forward", "10.244.1.2", pod_c.as_str()),
        (&node2, "forward", "10.244.1.2", pod_c.as_str()),
        (&node2, "return", pod_c.as_str(), "10.244.1.2"),
        (&node1, "return", pod_c.as_str(), "10.244.1.2"),
    ] {
        let h = hop(ns, "flannel0", leg);
        assert_eq!(h["kind"], "tun");
        assert_eq!(h["packet"]["src"], src);
        assert_eq!(h["packet"]["dst"], dst);
        assert_eq!(h["packet"]["proto"], "icmp");
        assert_eq!(
            h["outer"],
            serde_json::json!([]),
            "raw IP, nothing around it"
        );
    }
    let wire = hop(&node1, "eth0", "forward");
    assert_eq!(wire["outer"][0]["kind"], "ip-in-udp");
    assert_eq!(wire["outer"][0]["dport"], 8285);
    assert_eq!(wire["outer"][0]["src"], "192.168.50.11");
    assert_eq!(wire["outer"][0]["dst"], "192.168.50.12");
    // 64-byte probe + outer IPv4 20 + UDP 8.
    assert_eq!(wire["outer"][0]["len"], 92);
    assert!(
        wire["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "encap"),
        "{wire}"
    );
    let decap = hop(&node2, "flannel0", "forward");
    assert!(
        decap["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "decap"),
        "{decap}"
    );

    // TCP: the SYN-ACK carries no marker; dye's trace filter, applied inside IP-in-UDP by the
    // kernel, still keeps it on the underlay.
    let out = dye(&[
        "trace",
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &format!("{pod_c}:8080"),
        "--json",
    ]);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["verdict"]["kind"], "answered", "{t}");
    let back = t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["netns"] == node1.as_str() && h["ifname"] == "eth0" && h["leg"] == "return")
        .unwrap_or_else(|| panic!("no SYN-ACK on node-1 eth0: {t}"));
    assert_eq!(back["outer"][0]["kind"], "ip-in-udp");
    assert_eq!(back["packet"]["proto"], "tcp");

    // The pcapng: flannel0's interfaces are LINKTYPE_RAW (101), and tshark decodes the ICMP
    // inside on them (raw IP) and on eth0 (IP in UDP 8285).
    let linktypes = linktypes_by_interface(pcap.path());
    for ns in [&node1, &node2] {
        assert_eq!(linktypes.get(&format!("{ns}/flannel0")), Some(&101));
        assert_eq!(linktypes.get(&format!("{ns}/eth0")), Some(&1));
    }
    let rows = tshark_fields(
        pcap.path(),
        &["-d", "udp.port==8285,ip"],
        &["frame.interface_name", "frame.protocols", "icmp.type"],
    );
    for ns in [&node1, &node2] {
        let on = |ifname: &str| -> Vec<&Vec<String>> {
            rows.iter()
                .filter(|r| r[0] == format!("{ns}/{ifname}"))
                .collect()
        };
        let tun = on("flannel0");
        assert_eq!(tun.len(), 2, "request and reply on {ns}/flannel0: {rows:?}");
        assert!(
            tun.iter().all(|r| r[1].starts_with("raw:ip:icmp")),
            "{tun:?}"
        );
        let eth = on("eth0");
        assert_eq!(eth.len(), 2, "{rows:?}");
        assert!(eth.iter().all(|r| r[1].contains("udp:ip:icmp")), "{eth:?}");
    }
    let ifs = Command::new("capinfos")
        .arg("-I")
        .arg(pcap.path())
        .output()
        .unwrap();
    let ifs = String::from_utf8_lossy(&ifs.stdout);
    assert!(
        ifs.contains(&format!("Name = {node1}/flannel0"))
            && ifs.contains("tun mtu 1472")
            && ifs.contains("Encapsulation = Raw IP"),
        "{ifs}"
    );

    // dye capture with a filter on the raw-IP point (compiled for DLT_RAW: `icmp` at the IP
    // header, no Ethernet offset) and through the IP-in-UDP tunnel on eth0.
    let cap = TempPcap::new(&format!("udp-capture-{}", lab.id));
    let mut child = start_capture(&[
        "-i",
        &format!("{node1}/flannel0"),
        "-i",
        &format!("{node1}/eth0"),
        "-w",
        cap.path(),
        "--duration",
        "4s",
        "icmp",
    ]);
    let ping = lab.exec(
        "pod-a",
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", &pod_c],
    );
    assert!(ping.status.success());
    // Traffic that must not be kept: TCP to pod-c's responder, through the same tunnel.
    assert_eq!(lab.tcp_hello("pod-a", &pod_c, 8080), "pod-c");
    wait(&mut child, Duration::from_secs(15));
    let counts = tshark_per_interface(cap.path(), &["udp.port==8285,ip"], None);
    let icmp = tshark_per_interface(cap.path(), &["udp.port==8285,ip"], Some("icmp"));
    assert_eq!(
        counts.get(&format!("{node1}/flannel0")),
        Some(&6),
        "{counts:?}"
    );
    assert_eq!(counts.get(&format!("{node1}/eth0")), Some(&6), "{counts:?}");
    assert_eq!(counts, icmp, "everything kept is ICMP to tshark");
    assert_eq!(
        linktypes_by_interface(cap.path()).get(&format!("{node1}/flannel0")),
        Some(&101)
    );

    // A forwarder goes by itself when its lab's state directory goes, and the kernel takes its
    // TUN device with it (a spare one, on another port, in node-1).
    let watch = std::env::temp_dir().join(format!("dye-test-watch-{}", lab.id));
    std::fs::create_dir_all(&watch).unwrap();
    let mut fwd = Command::new("ip")
        .args(["netns", "exec", &node1])
        .arg(dye_bin())
        .args([
            "lab",
            "forward",
            "--tun",
            "dyetest0",
            "--local",
            "192.168.50.11",
        ])
        .args([
            "--port",
            "18285",
            "--peer",
            "10.244.2.0/24=192.168.50.12",
            "--watch",
        ])
        .arg(&watch)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let has_device = || {
        lab.exec("node-1", &["ip", "link", "show", "dyetest0"])
            .status
            .success()
    };
    let t0 = Instant::now();
    while !has_device() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "forwarder made no device"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir(&watch).unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = fwd.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(3) {
            let _ = fwd.kill();
            panic!("forwarder still running 3 s after its state directory went");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "forwarder exit {status:?}");
    assert!(!has_device(), "dyetest0 outlived its forwarder");

    // Down removes the forwarders with everything else (their command lines name the lab's
    // state directory, so lab_traces would list a survivor).
    let id = lab.id.clone();
    drop(lab);
    assert_eq!(lab_traces(&id), Vec::<String>::new(), "lab down left these");
}

/// `dye CMD --json ARGS` → (exit code, report).
fn json_report(cmd: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec![cmd, "--json"];
    all.extend_from_slice(args);
    let out = dye(&all);
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dye {cmd} printed no JSON ({e}); exit {code}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

/// Every event of type `kind` on the hops of `leg`, with the hop's "netns/ifname".
fn events_on(r: &serde_json::Value, leg: &str, kind: &str) -> Vec<(String, serde_json::Value)> {
    r["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .filter(|h| h["leg"] == leg)
        .flat_map(|h| {
            let at = format!(
                "{}/{}",
                h["netns"].as_str().unwrap_or(""),
                h["ifname"].as_str().unwrap_or("")
            );
            h["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["type"] == kind)
                .map(move |e| (at.clone(), e.clone()))
        })
        .collect()
}

/// Output of `argv` in a lab member, which must succeed.
fn run_in(lab: &Lab, member: &str, argv: &[&str]) -> String {
    let out = lab.exec(member, argv);
    assert!(
        out.status.success(),
        "{argv:?} in {member}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn flannel_udp_backend_clusterip_nat_mtu_and_drop() {
    let lab = Lab::up_with(&["--topology", FLANNEL_UDP]);
    let pod_a = lab.pod_ip("pod-a");
    let pod_c = lab.pod_ip("pod-c");
    let node1 = lab.ns("node-1");
    let node2 = lab.ns("node-2");

    // (1) The ClusterIP `web` (10.96.0.10:80 → pod-a, pod-c :8080) from pod-b on node-1:
    // kube-proxy's DNAT hop named in node-1, to an endpoint the kernel's rules name. Its
    // endpoint is picked at random, so trace (a bounded number of times) until one run went
    // to pod-c, across flannel0 and the IP-in-UDP tunnel.
    let nat_rules = run_in(&lab, "node-1", &["iptables-save", "-t", "nat"]);
    let mut across = None;
    for _ in 0..12 {
        let (code, r) = json_report(
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
        let dnat = events_on(&r, "forward", "dnat");
        assert_eq!(dnat.len(), 1, "one DNAT on the way: {dnat:?}");
        let (at, e) = &dnat[0];
        assert!(at.starts_with(&format!("{node1}/")), "DNAT at {at}");
        assert_eq!(e["from"], "10.96.0.10:80");
        let to = e["to"].as_str().unwrap().to_string();
        assert!(
            to == format!("{pod_a}:8080") || to == format!("{pod_c}:8080"),
            "DNAT to {to}, not an endpoint of web"
        );
        // Outside check: node-1's own nat table has an endpoint rule to that address.
        assert!(
            nat_rules.contains(&format!("--to-destination {to}")),
            "no kube-proxy rule DNATs to {to}:\n{nat_rules}"
        );
        // The reply is un-DNATed back to the ClusterIP where it was DNATed.
        let undo = events_on(&r, "return", "snat");
        assert!(
            undo.iter()
                .any(|(at, e)| at.starts_with(&format!("{node1}/"))
                    && e["from"] == to.as_str()
                    && e["to"] == "10.96.0.10:80"),
            "no un-DNAT on node-1: {undo:?}"
        );
        if to == format!("{pod_c}:8080") {
            across = Some(r);
            break;
        }
    }
    let r = across.expect("12 traces never DNATed to pod-c (2 endpoints, 1/4096 by chance)");
    let hops: Vec<String> = r["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["leg"] == "forward")
        .map(|h| {
            format!(
                "{}/{}",
                h["netns"].as_str().unwrap(),
                h["ifname"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        format!("{node1}/flannel0"),
        format!("{node1}/eth0"),
        format!("{node2}/flannel0"),
        format!("{}/eth0", lab.ns("pod-c")),
    ] {
        assert!(hops.contains(&want), "forward leg misses {want}: {hops:?}");
    }
    // After the DNAT the packet inside the tunnel is addressed to pod-c's port 8080.
    let tun = r["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h["leg"] == "forward" && h["netns"] == node2.as_str() && h["ifname"] == "flannel0"
        })
        .unwrap();
    assert_eq!(tun["packet"]["dst"], pod_c.as_str(), "{tun:#}");
    assert_eq!(tun["packet"]["proto"], "tcp", "{tun:#}");

    // (2) MTU. The pods' MTU equals flannel0's (1472 = 1500 - outer IPv4 20 - UDP 8): the
    // source's own interface is the limit, as tracepath finds.
    let (code, m) = json_report("mtu", &["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 0, "{m:#}");
    assert_eq!(
        (m["status"].as_str(), m["path_mtu"].as_u64()),
        (Some("healthy"), Some(1472)),
        "{m:#}"
    );
    assert_eq!(m["limit"]["link"], format!("{}/eth0", lab.ns("pod-a")));
    let tp = run_in(&lab, "pod-a", &["tracepath", "-n", &pod_c]);
    assert!(tp.contains("Resume: pmtu 1472"), "{tp}");

    // An underlay of 1400 under flannel0's 1472: probes still pass, the forwarder's UDP
    // datagrams are split on node-1's eth0. The overlay MTU that avoids it counts the
    // userspace encapsulation's 28 bytes (outer IPv4 20 + UDP 8), read off the wire: 1372.
    lab.fault(&["underlay-mtu", "1400"]);
    let (code, m) = json_report("mtu", &["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 0, "{m:#}");
    assert_eq!(
        (m["status"].as_str(), m["path_mtu"].as_u64()),
        (Some("healthy"), Some(1472)),
        "{m:#}"
    );
    let rec = &m["recommendation"];
    assert_eq!(
        (rec["mtu"].as_u64(), rec["applies_to"].as_str()),
        (Some(1372), Some("overlay")),
        "{rec:#}"
    );
    let reason = rec["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "set {node1}/flannel0 and the pods' interfaces to 1372"
        )) && reason.contains(&format!("{node1}/eth0 (MTU 1400)"))
            && reason.contains("raise the underlay MTU to 1500"),
        "{reason}"
    );
    assert!(
        m["warnings"].as_array().unwrap().iter().any(|w| {
            w.to_string().contains("ip-in-udp") && w.to_string().contains(&format!("{node1}/eth0"))
        }),
        "{:#}",
        m["warnings"]
    );
    // The kernel's own count agrees: node-1 fragments nothing for a 1372-byte packet from
    // pod-a, and does for 1373.
    let frag_creates = || -> u64 {
        let snmp = run_in(&lab, "node-1", &["cat", "/proc/net/snmp"]);
        let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
        let at = names
            .split_whitespace()
            .position(|n| n == "FragCreates")
            .unwrap();
        values.split_whitespace().nth(at).unwrap().parse().unwrap()
    };
    for (size, fragments) in [(1372u32, false), (1373, true)] {
        let before = frag_creates();
        let payload = (size - 28).to_string();
        let ping = lab.exec(
            "pod-a",
            &[
                "ping", "-q", "-c2", "-i0.2", "-W1", "-M", "do", "-s", &payload, &pod_c,
            ],
        );
        assert!(ping.status.success(), "{size}-byte ping");
        assert_eq!(frag_creates() > before, fragments, "{size} bytes");
    }
    lab.fault(&["clear"]);

    // A pod given the underlay's 1500: node-1 refuses the bigger probe with Fragmentation
    // Needed for flannel0 — signalled, flannel0 named, the same PMTU the kernel and
    // tracepath arrive at.
    lab.fault(&["link-mtu", "pod-a/eth0", "1500"]);
    run_in(&lab, "pod-a", &["ip", "route", "flush", "cache"]);
    let (code, m) = json_report("mtu", &["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 0, "{m:#}");
    assert_eq!(
        (m["status"].as_str(), m["path_mtu"].as_u64()),
        (Some("signalled"), Some(1472)),
        "{m:#}"
    );
    let limit = &m["limit"];
    assert_eq!(limit["link"], format!("{node1}/flannel0"), "{limit:#}");
    assert_eq!(limit["mtu"], 1472);
    assert_eq!(limit["signalled_by"]["netns"][0], node1.as_str());
    assert_eq!(limit["signalled_by"]["advertised_mtu"], 1472);
    assert_eq!(m["max_payload"]["tcp_mss"], 1432);
    assert_eq!(m["recommendation"]["mtu"], 1472);
    // ping's view (before tracepath teaches pod-a the PMTU): the refusal comes from node-1's address on cni0 with the same MTU.
    let ping = lab.exec(
        "pod-a",
        &["ping", "-c1", "-W1", "-M", "do", "-s", "1472", &pod_c],
    );
    let ping = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.contains(&format!("From {} ", lab.addr("node-1", "cni0")))
            && ping.contains("mtu = 1472"),
        "{ping}"
    );

    let tp = run_in(&lab, "pod-a", &["tracepath", "-n", &pod_c]);
    assert!(tp.contains("Resume: pmtu 1472"), "{tp}");
    assert_eq!(
        lab.cached_pmtu("pod-a", &pod_c),
        Some(1472),
        "after tracepath"
    );
    // (3) A drop on the far node: last seen decapsulated on node-2's flannel0, the DROP
    // rule named with the handle nft lists for it, and the kernel's drop reason.
    lab.fault(&["drop-pod", "pod-c"]);
    let (code, r) = json_report("trace", &["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 1, "a drop is a failure: {r:#}");
    let v = &r["verdict"];
    assert_eq!(v["kind"], "dropped", "{v:#}");
    let by = &v["dropped_by"];
    assert_eq!(by["netns"], node2.as_str());
    assert_eq!(
        (by["table"].as_str(), by["chain"].as_str()),
        (Some("filter"), Some("FORWARD"))
    );
    let listed = run_in(
        &lab,
        "node-2",
        &["nft", "-a", "list", "chain", "ip", "filter", "FORWARD"],
    );
    let handle = by["handle"].as_u64().expect("handle");
    // nft prints the iptables rule without its comment match: find it by address and verdict,
    // and see that the kernel counted the probe it dropped.
    let line = listed
        .lines()
        .find(|l| l.contains(&format!("ip daddr {pod_c} ")) && l.contains(" drop "))
        .unwrap_or_else(|| panic!("no fault rule:\n{listed}"));
    assert!(
        line.trim_end().ends_with(&format!("# handle {handle}")),
        "dye named handle {handle}: {line}"
    );
    assert!(!line.contains("counter packets 0 "), "{line}");
    let last = &r["hops"][v["last_seen"].as_u64().unwrap() as usize];
    assert_eq!(
        (last["netns"].as_str(), last["ifname"].as_str()),
        (Some(node2.as_str()), Some("flannel0")),
        "{last:#}"
    );
    assert_eq!(v["kernel_drop"]["reason"], "NETFILTER_DROP", "{v:#}");

    // Faults and all, down leaves nothing of the lab.
    let id = lab.id.clone();
    drop(lab);
    assert_eq!(lab_traces(&id), Vec::<String>::new(), "lab down left these");
}
