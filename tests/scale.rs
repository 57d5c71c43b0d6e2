//! A busy node costs what a quiet one does: the same cross-node trace on a plain lab and on a
//! lab whose nodes carry idle pods has the same scope, opens the same kernel sockets and lists
//! the same capture points; the idle pods' veths are covered by the node's one socket, not
//! opened one by one.

mod support;

use serde_json::Value;
use support::{dye, Lab};

const IDLE: usize = 8;

fn trace(lab: &Lab, extra: &[&str]) -> Value {
    let c = lab.pod_ip("pod-c");
    let from = lab.ns("pod-a");
    let mut args = vec!["trace", "--from", &from, "--to", &c, "--json"];
    args.extend_from_slice(extra);
    let out = dye(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a dye.trace/v1 report")
}

/// A name without the lab's prefix, host veths (random names) as `veth*`.
fn plain(lab: &Lab, name: &str) -> String {
    let prefix = format!("dye-{}-", lab.id);
    let name = name.strip_prefix(&prefix).unwrap_or(name);
    match name.split_once('/') {
        Some((ns, i)) if i.starts_with("veth") => format!("{ns}/veth*"),
        _ => name.to_string(),
    }
}

fn scope(lab: &Lab, r: &Value) -> (Vec<String>, u64, u64, Vec<String>) {
    let s = &r["scope"];
    let namespaces = s["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| plain(lab, n.as_str().unwrap()))
        .collect();
    let mut points: Vec<String> = r["capture"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| plain(lab, c["name"].as_str().unwrap()))
        .collect();
    points.sort();
    (
        namespaces,
        s["capture_sockets"].as_u64().unwrap(),
        s["path_interfaces"].as_u64().unwrap(),
        points,
    )
}

#[test]
fn idle_pods_change_neither_the_scope_nor_the_sockets_of_a_cross_node_trace() {
    let quiet = Lab::up();
    let busy = Lab::up_with(&["--idle-pods", &IDLE.to_string()]);
    let (q, b) = (trace(&quiet, &[]), trace(&busy, &[]));
    for r in [&q, &b] {
        assert_eq!(r["verdict"]["kind"], "answered", "{}", r["verdict"]);
        assert_eq!(r["scope"]["by"], "path");
        assert_eq!(r["scope"]["sockets"], "per-namespace");
    }
    let (qs, bs) = (scope(&quiet, &q), scope(&busy, &b));
    assert_eq!(qs, bs, "scope, sockets, path and listed points");
    assert_eq!(
        qs.0,
        ["pod-a", "node-1", "underlay", "node-2", "pod-c"],
        "the path's namespaces: no other pod, not the firewall"
    );
    assert_eq!(qs.1, 5, "one socket per namespace in scope");
    // The idle pods are there — node-1's socket covers their veths — and cost no socket.
    let covered = |r: &Value| r["scope"]["interfaces"].as_u64().unwrap() as usize;
    assert_eq!(covered(&b), covered(&q) + 2 * IDLE, "{}", b["scope"]);
    // The hops are the same, in the same order.
    let path = |lab: &Lab, r: &Value| -> Vec<String> {
        r["probes"][0]["path"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| plain(lab, p.as_str().unwrap()))
            .collect()
    };
    assert_eq!(path(&quiet, &q), path(&busy, &b));
    assert!(path(&quiet, &q).contains(&"pod-c/eth0:in".to_string()));
}

#[test]
fn per_interface_and_per_namespace_sockets_see_the_same_hops() {
    // The two socket models are two ways of listening to the same kernel: a frame crossing a
    // veth is two sightings in both, a bridged frame one per port in both.
    let lab = Lab::up_with(&["--idle-pods", "2"]);
    let ns = trace(&lab, &["--sockets", "per-namespace"]);
    let pi = trace(&lab, &["--sockets", "per-interface"]);
    let hops = |r: &Value| -> Vec<String> {
        r["hops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                format!(
                    "{}/{}:{}:{}:{}",
                    plain(&lab, h["netns"].as_str().unwrap()),
                    h["ifname"],
                    h["direction"],
                    h["leg"],
                    h["packet"]["ttl"]
                )
            })
            .collect()
    };
    assert_eq!(hops(&ns), hops(&pi));
    assert!(hops(&ns).len() >= 20, "{:?}", hops(&ns));
    // Per-interface: two handles for every interface in scope, idle pods' veths included.
    let interfaces = ns["scope"]["interfaces"].as_u64().unwrap();
    assert_eq!(
        pi["scope"]["capture_sockets"].as_u64(),
        Some(2 * interfaces)
    );
    assert_eq!(ns["scope"]["capture_sockets"].as_u64(), Some(5));
}

#[test]
fn dnat_targets_are_in_scope_and_bystanders_are_not() {
    // office → VIP: the firewall DNATs to node-1's NodePort, node-1 DNATs to pod-a or pod-c.
    // Neither endpoint is on a route towards the VIP: the nat rules read on the way put them in
    // scope. pod-b and pod-d, on the same bridges, are no endpoint and stay out.
    let lab = Lab::up();
    let from = lab.ns("office");
    let out = dye(&[
        "trace",
        "--from",
        &from,
        "--to",
        "203.0.113.80:80",
        "--count",
        "4",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ns: Vec<String> = r["scope"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| plain(&lab, n.as_str().unwrap()))
        .collect();
    ns.sort();
    assert_eq!(
        ns,
        ["fw", "node-1", "node-2", "office", "pod-a", "pod-c", "underlay"],
        "{}",
        r["scope"]
    );
    // Every probe was answered by an endpoint the scope holds, and seen arriving there.
    for p in r["probes"].as_array().unwrap() {
        assert_eq!(p["verdict"], "answered", "{p}");
        let path = p["path"].to_string();
        assert!(
            path.contains("-pod-a/eth0:in") || path.contains("-pod-c/eth0:in"),
            "{path}"
        );
    }
}
