//! End-to-end tests of `dye mtu` on the lab. Each fault sets a path MTU the topology makes
//! certain; the test asserts the value, the limiting link and how the limit shows itself, and
//! where it can, checks the answer with `ping -M do` (an outside tool) at the boundary.

#[path = "support/mod.rs"]
mod support;

use serde_json::Value;
use support::{dye, Lab};

/// Runs `dye mtu --json ARGS` and returns (exit code, report).
fn mtu(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["mtu", "--json"];
    all.extend_from_slice(args);
    let out = dye(&all);
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mtu printed no JSON ({e}); exit {code}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

/// The report's probes as (size, outcome).
fn probes(r: &Value) -> Vec<(u64, String)> {
    r["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["size"].as_u64().unwrap(),
                p["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// One DF ping of `payload` data bytes from `from` to `to`: answered within a second?
fn df_ping(lab: &Lab, from: &str, to: &str, payload: u32) -> bool {
    lab.exec(
        from,
        &[
            "ping",
            "-c1",
            "-W1",
            "-M",
            "do",
            "-s",
            &payload.to_string(),
            to,
        ],
    )
    .status
    .success()
}

#[test]
fn a_healthy_overlay_is_limited_by_flannel_and_takes_two_probes() {
    let lab = Lab::up();
    let pod_c = lab.pod_ip("pod-c");
    let (code, r) = mtu(&["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["schema"], "dye.mtu/v1");
    assert_eq!(r["path_mtu"], 1450, "{r:#}");
    assert_eq!(r["status"], "healthy");
    let limit = &r["limit"];
    assert_eq!(
        limit["link"],
        format!("{}/flannel.1", lab.ns("node-1")),
        "{limit:#}"
    );
    assert_eq!(limit["encapsulation"]["kind"], "vxlan");
    assert_eq!(limit["encapsulation"]["overhead"], 50);
    assert_eq!(limit["encapsulation"]["needs_underlay_mtu"], 1500);
    assert_eq!(r["max_payload"]["tcp_mss"], 1410);
    assert_eq!(r["recommendation"]["mtu"], 1450);
    assert_eq!(
        probes(&r),
        vec![(68, "passed".into()), (1450, "passed".into())]
    );
    assert!(r["search"]["elapsed_ms"].as_u64().unwrap() < 1000, "{r:#}");
    // ping agrees: the largest ICMP payload dye reports passes with DF.
    let data = r["max_payload"]["icmp_echo_data"].as_u64().unwrap() as u32;
    assert!(df_ping(&lab, "pod-a", &pod_c, data));

    // A UDP probe to a closed port passes when the destination answers port-unreachable.
    let to = format!("{pod_c}:33434");
    let (code, r) = mtu(&["--from", &lab.ns("pod-a"), "--to", &to, "--proto", "udp"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["path_mtu"], 1450);
    let detail = r["probes"][1]["detail"].as_str().unwrap();
    assert!(detail.contains("unreachable port"), "{detail}");
}

#[test]
fn a_vxlan_df_black_hole_is_found_at_the_underlay_egress_in_seconds() {
    let lab = Lab::up();
    lab.fault(&["underlay-mtu", "1400"]);
    lab.fault(&["vxlan-df"]);
    let pod_c = lab.pod_ip("pod-c");
    let (code, r) = mtu(&["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 1, "a black hole is a failure: {r:#}");
    assert_eq!(r["path_mtu"], 1350, "{r:#}");
    assert_eq!(r["status"], "black_hole");
    let limit = &r["limit"];
    assert_eq!(
        limit["link"],
        format!("{}/eth0", lab.ns("node-1")),
        "{limit:#}"
    );
    assert_eq!(limit["mtu"], 1400);
    assert_eq!(limit["signalled_by"], Value::Null);
    assert_eq!(
        limit["encapsulation"]["tunnel"],
        format!("{}/flannel.1", lab.ns("node-1"))
    );
    assert_eq!(
        limit["vanished_after"],
        format!("{}/flannel.1 (out)", lab.ns("node-1"))
    );
    let rec = &r["recommendation"];
    assert_eq!(rec["mtu"], 1350);
    assert_eq!(rec["applies_to"], "overlay");
    // Silent all the way: nobody answered with ICMP, and the search stayed short.
    let p = probes(&r);
    assert!(p.iter().all(|(_, o)| o != "too_big"), "{p:?}");
    assert!(p.contains(&(1351, "vanished".into())), "{p:?}");
    assert!(p.len() <= 8, "{p:?}");
    assert!(r["search"]["elapsed_ms"].as_u64().unwrap() < 5000, "{r:#}");
    // ping agrees at the boundary: 1350 bytes pass, 1351 vanish.
    assert!(df_ping(&lab, "pod-a", &pod_c, 1350 - 28));
    assert!(!df_ping(&lab, "pod-a", &pod_c, 1351 - 28));
}

#[test]
fn without_outer_df_the_overlay_passes_1450_but_warns_of_underlay_fragmentation() {
    let lab = Lab::up();
    lab.fault(&["underlay-mtu", "1400"]);
    let (code, r) = mtu(&["--from", &lab.ns("pod-a"), "--to", &lab.pod_ip("pod-c")]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["path_mtu"], 1450);
    assert_eq!(r["status"], "healthy");
    let warnings: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let node1_eth0 = format!(
        "{}/eth0 (MTU 1400) fragments their vxlan packets",
        lab.ns("node-1")
    );
    assert!(
        warnings.iter().any(|w| w.contains(&node1_eth0)),
        "{warnings:#?}"
    );
    assert_eq!(r["recommendation"]["mtu"], 1350, "{r:#}");
    assert_eq!(r["recommendation"]["applies_to"], "overlay");
}

#[test]
fn a_firewall_link_limit_is_signalled_and_named_with_its_sender_through_nat() {
    let lab = Lab::up();
    lab.fault(&["link-mtu", "fw/eth0", "1280"]);
    // The office reaches the VIP through the firewall's DNAT; fw forwards out eth0 (1280).
    let (code, r) = mtu(&["--from", &lab.ns("office"), "--to", "203.0.113.80:80"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["proto"], "tcp");
    assert_eq!(r["path_mtu"], 1280, "{r:#}");
    assert_eq!(r["status"], "signalled");
    let limit = &r["limit"];
    assert_eq!(limit["link"], format!("{}/eth0", lab.ns("fw")), "{limit:#}");
    let by = &limit["signalled_by"];
    assert_eq!(by["netns"], serde_json::json!([lab.ns("fw")]));
    assert_eq!(by["advertised_mtu"], 1280);
    // The error about a DNATed probe comes back from the VIP, not from fw's own address.
    assert_eq!(by["address"], "203.0.113.80");
    assert_eq!(by["nat_rewritten"], true);
    assert_eq!(probes(&r).len(), 3, "68, 1500 (too big), 1280: {r:#}");
}

#[test]
fn a_pod_mtu_above_the_overlay_is_signalled_by_its_node_and_leaves_the_pmtu_cache_alone() {
    let lab = Lab::up();
    lab.fault(&["link-mtu", "pod-a/eth0", "1500"]);
    let pod_c = lab.pod_ip("pod-c");
    let (code, r) = mtu(&["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["path_mtu"], 1450);
    assert_eq!(r["status"], "signalled");
    let limit = &r["limit"];
    assert_eq!(
        limit["link"],
        format!("{}/flannel.1", lab.ns("node-1")),
        "{limit:#}"
    );
    assert_eq!(limit["signalled_by"]["address"], "10.244.1.1");
    assert_eq!(limit["signalled_by"]["nat_rewritten"], false);
    // dye's probes left no cached path MTU behind; a real DF ping learns one.
    assert_eq!(r["pmtu_cache"]["restored"], false, "{r:#}");
    let cached = |lab: &Lab| lab.cached_pmtu("pod-a", &pod_c) == Some(1450);
    assert!(!cached(&lab), "dye poisoned the pod's route cache");
    df_ping(&lab, "pod-a", &pod_c, 1472);
    assert!(
        cached(&lab),
        "the kernel should learn 1450 from a real ping"
    );
    // A cached path MTU neither stops dye's bigger probes nor is changed by them.
    let (code, again) = mtu(&["--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(again["path_mtu"], 1450);
    assert_eq!(again["probes"][1]["outcome"], "too_big", "{again:#}");
    let detail = again["pmtu_cache"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("already had a cached path MTU of 1450"),
        "{detail}"
    );
    assert!(cached(&lab));
}

#[test]
fn an_ipv6_packet_too_big_from_the_firewall_is_named_and_the_pmtu_cache_restored() {
    let lab = Lab::up();
    lab.fault(&["link-mtu", "fw/eth1", "1280"]);
    let office = lab.addr6("office", "eth0");
    let cached = |lab: &Lab| lab.cached_pmtu("pod-a", &office) == Some(1280);
    assert!(!cached(&lab));
    let (code, r) = mtu(&["--from", &lab.ns("pod-a"), "--to", &office]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["path_mtu"], 1280, "{r:#}");
    assert_eq!(r["status"], "signalled");
    assert_eq!(
        r["search"]["min"], 1280,
        "IPv6 links carry 1280: the search starts there"
    );
    let limit = &r["limit"];
    assert_eq!(limit["link"], format!("{}/eth1", lab.ns("fw")), "{limit:#}");
    assert_eq!(limit["signalled_by"]["address"], lab.addr6("fw", "eth0"));
    assert_eq!(limit["signalled_by"]["advertised_mtu"], 1280);
    assert_eq!(r["max_payload"]["tcp_mss"], 1220);
    assert_eq!(r["probes"][1]["outcome"], "too_big");
    // ICMPv6 Packet Too Big about an echo probe updates the pod's cache: dye must undo it.
    assert_eq!(r["pmtu_cache"]["restored"], true, "{r:#}");
    assert!(
        !cached(&lab),
        "the pod's route cache still holds dye's 1280"
    );
}

#[test]
fn ipv6_pods_configured_above_the_v6_overlay_are_told_by_their_node() {
    let lab = Lab::up();
    // flannel-v6.1 carries 1500 - 70 = 1430; the pods' interfaces say 1450.
    let (code, r) = mtu(&["--from", &lab.ns("pod-a"), "--to", &lab.pod_ip6("pod-c")]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["path_mtu"], 1430, "{r:#}");
    let limit = &r["limit"];
    assert_eq!(limit["link"], format!("{}/flannel-v6.1", lab.ns("node-1")));
    assert_eq!(limit["encapsulation"]["overhead"], 70);
    assert_eq!(
        limit["signalled_by"]["netns"],
        serde_json::json!([lab.ns("node-1")])
    );
}

#[test]
fn a_path_that_passes_nothing_is_reported_unreachable() {
    let lab = Lab::up();
    lab.fault(&["drop-pod", "pod-c"]);
    let (code, r) = mtu(&[
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--wait",
        "300ms",
    ]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["status"], "unreachable");
    assert_eq!(r["path_mtu"], Value::Null);
    assert_eq!(
        probes(&r),
        vec![(68, "vanished".into()), (68, "vanished".into())]
    );
}

#[test]
fn bad_arguments_are_refused_before_anything_is_sent() {
    for (args, needle) in [
        (vec!["--from", "nope-ns", "--to", "10.0.0.1"], "nope-ns"),
        (
            vec![
                "--from", "x", "--to", "10.0.0.1", "--min", "1400", "--max", "1300",
            ],
            "--min 1400",
        ),
        (
            vec!["--from", "x", "--to", "10.0.0.1", "--proto", "udp"],
            "needs a port",
        ),
        (
            vec!["--from", "x", "--to", "10.0.0.1", "--attempts", "0"],
            "--attempts",
        ),
        (vec!["--from", "x", "--to", "not-an-ip"], "not an address"),
    ] {
        let mut all = vec!["mtu"];
        all.extend_from_slice(&args);
        let out = dye(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn a_recorded_black_hole_search_replays_to_the_same_report_after_the_lab_is_gone() {
    let lab = Lab::up();
    lab.fault(&["underlay-mtu", "1400"]);
    lab.fault(&["vxlan-df"]);
    let recording = support::TempPcap::new(&format!("{}-mtu", lab.id));
    let pod_c = lab.pod_ip("pod-c");
    let out = dye(&[
        "mtu",
        "--json",
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &pod_c,
        "--record",
        recording.path(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a black hole is a negative answer"
    );
    let live: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(live["status"], "black_hole");
    drop(lab);
    for (flags, status) in [(vec!["--json"], Some(1)), (vec![], Some(1))] {
        let mut args = vec!["replay", recording.path()];
        args.extend(flags.iter().copied());
        let replay = dye(&args);
        assert_eq!(
            replay.status.code(),
            status,
            "the recorded command's exit status"
        );
        if flags.is_empty() {
            let text = String::from_utf8_lossy(&replay.stdout);
            assert!(text.contains("path MTU   1350 bytes  BLACK HOLE"), "{text}");
        } else {
            assert!(
                replay.stdout == out.stdout,
                "the same JSON bytes as the live search"
            );
        }
    }
    // Trace flags make no sense for an MTU recording.
    let bad = dye(&["replay", recording.path(), "--mermaid"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("are for trace recordings"));
}
