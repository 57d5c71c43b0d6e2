//! Why a probe died, on the lab: each fault of `dye lab fault` that drops traffic, and the
//! verdict naming the rule that dropped the probe (checked against `nft -a list`) and the
//! kernel's drop reason at the hop where it vanished (checked against the lab's own wiring).
//! After every trace, nothing of dye's is left: no nftables table, no BPF program or link
//! (`bpftool`).

#[path = "support/mod.rs"]
mod support;

use std::sync::RwLock;

use serde_json::Value;
use support::{dye, Lab};

/// Traces hold it shared; the leftover check holds it alone, so no trace of this binary is
/// running while bpftool looks for dye's programs.
static DYE_RUNNING: RwLock<()> = RwLock::new(());

/// Runs `dye trace --json ARGS`; returns (exit code, verdict).
fn trace(args: &[&str]) -> (i32, Value) {
    let (code, report) = trace_report(args);
    (code, report["verdict"].clone())
}

/// Runs `dye trace --json ARGS`; returns (exit code, the whole report).
fn trace_report(args: &[&str]) -> (i32, Value) {
    let out = {
        let _running = DYE_RUNNING.read().unwrap_or_else(|e| e.into_inner());
        let mut all = vec!["trace", "--json"];
        all.extend_from_slice(args);
        dye(&all)
    };
    let code = out.status.code().unwrap_or(-1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "trace printed no JSON ({e}); exit {code}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_no_dye_bpf();
    (code, report)
}

/// No dye kfree_skb program, and no link to one, is loaded (`bpftool`), once no dye of this
/// test binary runs. The kernel frees a program after an RCU grace period: allow a moment.
fn assert_no_dye_bpf() {
    let _alone = DYE_RUNNING.write().unwrap_or_else(|e| e.into_inner());
    let loaded = dye_programs;
    for _ in 0..100 {
        if loaded().is_empty() {
            let links = std::process::Command::new("bpftool")
                .args(["link", "show"])
                .output()
                .expect("bpftool");
            assert!(
                !String::from_utf8_lossy(&links.stdout).contains("dye_kfree_skb"),
                "a link to dye's program is left"
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("dye's kfree_skb program is still loaded: {:?}", loaded());
}

/// The handle `nft -a list` shows for the rule of `chain` (family, table) that contains every
/// one of `words`.
fn nft_handle(lab: &Lab, member: &str, chain: [&str; 3], words: &[&str]) -> u64 {
    let out = lab.exec(
        member,
        &["nft", "-a", "list", "chain", chain[0], chain[1], chain[2]],
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    listing
        .lines()
        .find(|l| words.iter().all(|w| l.contains(w)))
        .and_then(|l| l.rsplit("# handle ").next())
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rule with {words:?} in:\n{listing}"))
}

fn pod_a_to_pod_c(lab: &Lab, timeout: &str) -> (i32, Value) {
    trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--timeout",
        timeout,
    ])
}

fn assert_kernel_drop(v: &Value, netns: &str, ifname: &str, reason: &str, cause: &str) {
    let k = &v["kernel_drop"];
    assert_eq!(k["netns"], netns, "{v}");
    assert_eq!(k["ifname"], ifname, "{v}");
    assert_eq!(k["reason"], reason, "{v}");
    assert_eq!(k["cause"], cause, "{v}");
    assert_eq!(k["seq"], 1, "{v}");
    assert!(
        k["function"].as_str().is_some_and(|f| f.contains("+0x")),
        "{v}"
    );
}

#[test]
fn a_network_policy_nft_drop_names_its_rule_table_chain_and_the_kernel_reason() {
    let lab = Lab::up();
    lab.fault(&["netpol-drop", "pod-c"]);
    let (code, v) = pod_a_to_pod_c(&lab, "1s");
    assert_eq!(code, 1, "{v}");
    let node2 = lab.ns("node-2");
    let by = &v["dropped_by"];
    assert_eq!(by["netns"], node2, "{v}");
    assert_eq!(
        (&by["family"], &by["table"], &by["chain"]),
        (&"inet".into(), &"netpol".into(), &"ingress-pod-c".into())
    );
    // The rule's text as nft itself lists it, on the line with the handle dye named.
    let rule = "ip saddr 10.244.0.0/16 ip saddr != 10.244.2.0/24 drop";
    assert_eq!(by["rule"], rule, "{v}");
    let handle = nft_handle(&lab, "node-2", ["inet", "netpol", "ingress-pod-c"], &[rule]);
    assert_eq!(by["handle"], handle, "{v}");
    assert_kernel_drop(&v, &node2, "flannel.1", "NETFILTER_DROP", "netfilter");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "dropped in {node2} by nft rule `{}` (table inet netpol, chain ingress-pod-c, handle {handle})",
            by["rule"].as_str().unwrap()
        )),
        "{detail}"
    );
}

#[test]
fn the_jump_into_a_policy_chain_and_its_drop_show_under_the_hop_where_the_probe_vanished() {
    let lab = Lab::up();
    lab.fault(&["netpol-drop", "pod-c"]);
    let (code, r) = trace_report(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 1, "{}", r["verdict"]);
    let last = r["verdict"]["last_seen"].as_u64().expect("last seen") as usize;
    let hop = &r["hops"][last];
    assert_eq!(hop["netns"], lab.ns("node-2"), "{hop}");
    let rules: Vec<(&str, &str)> = hop["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| (r["chain"].as_str().unwrap(), r["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rules,
        [("forward", "jump ingress-pod-c"), ("ingress-pod-c", "drop")],
        "{hop}"
    );
    // Both as nft lists them, handles included.
    let jump = &hop["rules"][0];
    let handle = nft_handle(
        &lab,
        "node-2",
        ["inet", "netpol", "forward"],
        &["jump ingress-pod-c"],
    );
    assert_eq!(jump["handle"], handle, "{jump}");
    assert_eq!(
        hop["rules"][1]["handle"],
        r["verdict"]["dropped_by"]["handle"]
    );
    // No other hop carries a drop.
    let drops = r["hops"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| h["rules"].as_array().unwrap())
        .filter(|x| x["verdict"] == "drop")
        .count();
    assert_eq!(drops, 1, "{r}");
}

#[test]
fn an_iptables_drop_rule_is_the_kernels_netfilter_drop_in_the_pods_node() {
    let lab = Lab::up();
    lab.fault(&["drop-pod", "pod-c"]);
    let (code, v) = pod_a_to_pod_c(&lab, "1s");
    assert_eq!(code, 1, "{v}");
    let handle = nft_handle(
        &lab,
        "node-2",
        ["ip", "filter", "FORWARD"],
        &[&lab.pod_ip("pod-c"), "drop"],
    );
    assert_eq!(v["dropped_by"]["handle"], handle, "{v}");
    assert_kernel_drop(
        &v,
        &lab.ns("node-2"),
        "flannel.1",
        "NETFILTER_DROP",
        "netfilter",
    );
}

#[test]
fn a_chain_policy_drop_has_no_handle_and_says_so() {
    let lab = Lab::up();
    lab.fault(&["forward-policy-drop", "node-2"]);
    let (code, v) = pod_a_to_pod_c(&lab, "1s");
    assert_eq!(code, 1, "{v}");
    let by = &v["dropped_by"];
    assert_eq!(by["netns"], lab.ns("node-2"), "{v}");
    assert_eq!(
        (&by["table"], &by["chain"]),
        (&"filter".into(), &"FORWARD".into())
    );
    assert!(by["handle"].is_null(), "{v}");
    assert_eq!(by["rule"], "policy drop");
    let listing = lab.exec(
        "node-2",
        &["nft", "list", "chain", "ip", "filter", "FORWARD"],
    );
    assert!(String::from_utf8_lossy(&listing.stdout).contains("policy drop;"));
    assert_kernel_drop(
        &v,
        &lab.ns("node-2"),
        "flannel.1",
        "NETFILTER_DROP",
        "netfilter",
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("policy drop of chain FORWARD (table ip filter)"),
        "{v}"
    );
}

#[test]
fn strict_rp_filter_with_an_asymmetric_route_is_named_on_the_overlay_device() {
    let lab = Lab::up();
    lab.fault(&["rp-filter", "node-2", "node-1"]);
    // The lab's own check: node-2 now routes pod-a's address back via its underlay uplink.
    let back = lab.exec("node-2", &["ip", "route", "get", &lab.pod_ip("pod-a")]);
    assert!(String::from_utf8_lossy(&back.stdout).contains("dev eth0"));
    let (code, v) = pod_a_to_pod_c(&lab, "1s");
    assert_eq!(code, 1, "{v}");
    let node2 = lab.ns("node-2");
    assert!(v["dropped_by"].is_null(), "no rule dropped it: {v}");
    assert_kernel_drop(&v, &node2, "flannel.1", "IP_RPFILTER", "reverse_path");
    assert!(
        v["detail"].as_str().unwrap().contains(&format!(
            "dropped by reverse-path filtering (IP_RPFILTER) on {node2} flannel.1"
        )),
        "{v}"
    );
}

#[test]
fn a_neighbour_that_never_answers_is_named_on_the_outgoing_device() {
    let lab = Lab::up();
    lab.fault(&["dead-neighbour", "node-1", "node-2"]);
    // ARP gives up after its probes (3 × 1 s): wait longer than that.
    let (code, v) = pod_a_to_pod_c(&lab, "5s");
    assert_eq!(code, 1, "{v}");
    let node1 = lab.ns("node-1");
    assert_kernel_drop(&v, &node1, "eth0", "NEIGH_FAILED", "neighbour");
    assert!(
        v["detail"].as_str().unwrap().contains(&format!(
            "neighbour resolution failed (NEIGH_FAILED) on {node1} eth0"
        )),
        "{v}"
    );
    // The outside check: node-1's neighbour entry for the dead next hop failed.
    let neigh = lab.exec("node-1", &["ip", "neigh", "show", "dev", "eth0"]);
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains("FAILED"),
        "{}",
        String::from_utf8_lossy(&neigh.stdout)
    );
}

#[test]
fn a_conntrack_invalid_segment_is_dropped_by_the_guard_rule_in_the_first_node() {
    let lab = Lab::up();
    lab.fault(&["ct-invalid-drop", "node-1"]);
    // A FIN out of any connection: conntrack in node-1 (the first namespace that tracks
    // connections) calls it INVALID, and the guard drops it before kube-proxy's own rule.
    let (code, v) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &format!("{}:8080", lab.pod_ip("pod-c")),
        "--tcp-segment",
        "fin",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 1, "{v}");
    let node1 = lab.ns("node-1");
    let by = &v["dropped_by"];
    assert_eq!(by["netns"], node1, "{v}");
    assert_eq!(
        (&by["family"], &by["table"], &by["chain"], &by["rule"]),
        (
            &"inet".into(),
            &"ctguard".into(),
            &"forward".into(),
            &"ct state invalid drop".into()
        ),
        "{v}"
    );
    let handle = nft_handle(&lab, "node-1", ["inet", "ctguard", "forward"], &["invalid"]);
    assert_eq!(by["handle"], handle);
    assert_kernel_drop(&v, &node1, "cni0", "NETFILTER_DROP", "netfilter");
    // The same segment as a SYN is a new connection: answered.
    let (code, v) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &format!("{}:8080", lab.pod_ip("pod-c")),
        "--timeout",
        "1s",
    ]);
    assert_eq!((code, &v["kind"]), (0, &"answered".into()), "{v}");
    assert!(v["kernel_drop"].is_null(), "{v}");
}

#[test]
fn a_probe_whose_ttl_runs_out_is_named_where_it_expired() {
    let lab = Lab::up();
    // pod-a → node-1 (TTL 2 → 1) → node-2, where forwarding would make it 0.
    let (code, v) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--ttl",
        "2",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["kind"], "icmp_error", "{v}");
    let node2 = lab.ns("node-2");
    assert_kernel_drop(&v, &node2, "flannel.1", "IP_INHDR", "ttl_exceeded");
    assert!(
        v["kernel_drop"]["function"]
            .as_str()
            .unwrap()
            .starts_with("ip_forward+"),
        "{v}"
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("time-exceeded"), "{detail}");
    assert!(
        detail.contains(&format!("TTL exceeded (IP_INHDR) on {node2} flannel.1")),
        "{detail}"
    );
}

#[test]
fn a_df_probe_too_big_for_the_next_link_is_named_with_the_kernels_reason() {
    let lab = Lab::up();
    // pod-c's link (and node-2's cni0 bridge with it) shrinks to 1300: node-2 cannot forward a
    // 1400-byte DF probe from the overlay, answers "need-frag, MTU 1300" and drops it.
    lab.fault(&["link-mtu", "pod-c/eth0", "1300"]);
    let (code, v) = trace(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--size",
        "1400",
        "--df",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["kind"], "icmp_error", "{v}");
    let node2 = lab.ns("node-2");
    assert_kernel_drop(&v, &node2, "flannel.1", "PKT_TOO_BIG", "too_big");
    assert!(
        v["kernel_drop"]["function"]
            .as_str()
            .unwrap()
            .starts_with("ip_forward+"),
        "{v}"
    );
    // The link it was too big for, as `ip` shows it.
    let link = lab.exec("node-2", &["ip", "-j", "link", "show", "cni0"]);
    let link: Value = serde_json::from_slice(&link.stdout).expect("ip -j link");
    let mtu = &link[0]["mtu"];
    assert_eq!(mtu, 1300, "{link}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("next-hop MTU {mtu}")), "{detail}");
    assert!(
        detail.ends_with(&format!(
            "too big for the next link (PKT_TOO_BIG) on {node2} flannel.1"
        )),
        "{detail}"
    );
}

/// Ids of loaded dye kfree_skb programs.
fn dye_programs() -> Vec<u64> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool");
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"] == "dye_kfree_skb")
                .map(|p| p["id"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sigint_and_sigkill_leave_no_bpf_program_link_or_table() {
    let lab = Lab::up();
    lab.fault(&["drop-pod", "pod-c"]);
    for signal in ["-INT", "-KILL"] {
        {
            let _running = DYE_RUNNING.read().unwrap_or_else(|e| e.into_inner());
            let before = dye_programs();
            // A dropped probe keeps dye waiting for its timeout: signal it while it waits.
            let mut child = std::process::Command::new(support::dye_bin())
                .args([
                    "trace",
                    "--from",
                    &lab.ns("pod-a"),
                    "--to",
                    &lab.pod_ip("pod-c"),
                    "--timeout",
                    "20s",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn dye");
            let armed = (0..200).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                dye_programs().iter().any(|id| !before.contains(id))
            });
            let sent = std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill");
            let status = child.wait().expect("reaped");
            assert!(armed, "dye never loaded its program ({signal})");
            assert!(sent.success());
            if signal == "-INT" {
                assert_eq!(status.code(), Some(130), "interrupted exit status");
            }
        }
        assert_no_dye_bpf();
        for member in ["pod-a", "node-1", "underlay", "node-2", "pod-c"] {
            let tables = lab.exec(member, &["nft", "list", "tables"]);
            assert!(
                !String::from_utf8_lossy(&tables.stdout).contains("dye_"),
                "a dye table is left in {member} after {signal}"
            );
        }
    }
}
