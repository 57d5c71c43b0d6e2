//! `dye topology` on the lab: every veth pair across namespaces, cni0 and its ports, flannel.1
//! with its VNI / port / underlay device, MTUs exactly as configured; bad references fail
//! with exit 2 and a message naming them.

#[path = "support/mod.rs"]
mod support;

use serde_json::Value;
use support::{dye, Lab};

fn link<'a>(topo: &'a Value, ns: &str, ifname: &str) -> &'a Value {
    topo["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == ns)
        .unwrap_or_else(|| panic!("namespace {ns} missing"))["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == ifname)
        .unwrap_or_else(|| panic!("{ns}/{ifname} missing"))
}

fn veth_pairs(topo: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = topo["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "veth_pair")
        .map(|e| {
            let a = format!(
                "{}/{}",
                e["a"]["netns"].as_str().unwrap(),
                e["a"]["ifname"].as_str().unwrap()
            );
            let b = format!(
                "{}/{}",
                e["b"]["netns"].as_str().unwrap(),
                e["b"]["ifname"].as_str().unwrap()
            );
            if a < b {
                (a, b)
            } else {
                (b, a)
            }
        })
        .collect();
    v.sort();
    v
}

#[test]
fn lab_topology_is_discovered_exactly() {
    let lab = Lab::up();
    let pattern = format!("dye-{}-*", lab.id);
    let out = dye(&["topology", "--ns", &pattern, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let topo: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(topo["schema"], "dye.topology/v1");
    assert_eq!(topo["namespaces"].as_array().unwrap().len(), 9);

    // Every veth pair across namespaces: pods <-> node veths, nodes/fw <-> underlay, fw <-> office.
    let pairs = veth_pairs(&topo);
    assert_eq!(pairs.len(), 8, "{pairs:?}");
    for (member, peer_ns, peer_if) in [
        ("node-1", "underlay", "node-1"),
        ("node-2", "underlay", "node-2"),
        ("fw", "underlay", "fw"),
    ] {
        let a = format!("{}/eth0", lab.ns(member));
        let b = format!("{}/{peer_if}", lab.ns(peer_ns));
        assert!(
            pairs
                .iter()
                .any(|(x, y)| (x == &a && y == &b) || (x == &b && y == &a)),
            "{a} <-> {b} in {pairs:?}"
        );
    }
    let office = format!("{}/eth0", lab.ns("office"));
    let fw1 = format!("{}/eth1", lab.ns("fw"));
    assert!(pairs
        .iter()
        .any(|(x, y)| (x == &office && y == &fw1) || (x == &fw1 && y == &office)));

    for (node, pods) in [
        ("node-1", ["pod-a", "pod-b"]),
        ("node-2", ["pod-c", "pod-d"]),
    ] {
        let node_ns = lab.ns(node);
        // cni0 and its ports: exactly the host ends of this node's pods.
        let cni0 = link(&topo, &node_ns, "cni0");
        assert_eq!(cni0["kind"], "bridge");
        assert_eq!(cni0["mtu"], 1450);
        let mut ports: Vec<String> = topo["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["type"] == "bridge_port"
                    && e["bridge"]["netns"] == node_ns.as_str()
                    && e["bridge"]["ifname"] == "cni0"
            })
            .map(|e| e["port"]["ifname"].as_str().unwrap().to_string())
            .collect();
        ports.sort();
        let mut pod_peers: Vec<String> = pods
            .iter()
            .map(|p| {
                let me = format!("{}/eth0", lab.ns(p));
                let (x, y) = pairs.iter().find(|(x, y)| x == &me || y == &me).unwrap();
                let other = if x == &me { y } else { x };
                assert!(
                    other.starts_with(&format!("{node_ns}/veth")),
                    "{me} <-> {other}"
                );
                other.rsplit('/').next().unwrap().to_string()
            })
            .collect();
        pod_peers.sort();
        assert_eq!(ports, pod_peers);
        for p in pods {
            let eth0 = link(&topo, &lab.ns(p), "eth0");
            assert_eq!(eth0["mtu"], 1450);
            let pod = topo["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["name"] == lab.ns(p).as_str())
                .unwrap();
            assert_eq!(pod["node"], node_ns.as_str(), "pod belongs to its node");
        }
        // flannel.1: VXLAN VNI 1, UDP 8472, local = node address, underlay eth0, MTU 1450.
        let fl = link(&topo, &node_ns, "flannel.1");
        assert_eq!(fl["kind"], "vxlan");
        assert_eq!(fl["vni"], 1);
        assert_eq!(fl["port"], 8472);
        assert_eq!(fl["local"], lab.addr(node, "eth0").as_str());
        assert_eq!(fl["underlay_ifname"], "eth0");
        assert_eq!(fl["mtu"], 1450);
        assert!(topo["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "tunnel_underlay"
                && e["tunnel"]["netns"] == node_ns.as_str()
                && e["tunnel"]["ifname"] == "flannel.1"
                && e["underlay"]["ifname"] == "eth0"));
        assert_eq!(link(&topo, &node_ns, "eth0")["mtu"], 1500);
    }
    let br0 = link(&topo, &lab.ns("underlay"), "br0");
    assert_eq!(br0["kind"], "bridge");

    // Route lookup: pod-a reaches pod-c through its default route on eth0.
    let out = dye(&[
        "topology",
        "--ns",
        &lab.ns("node-1"),
        "--route-to",
        &lab.pod_ip("pod-c"),
        "--json",
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["route_lookups"][0]["route"]["dev"], "flannel.1");

    // Text and Mermaid renderings carry the same facts.
    let out = dye(&["topology", "--ns", &pattern]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vni 1 local") && text.contains("port 8472 dev eth0"),
        "{text}"
    );
    let out = dye(&["topology", "--ns", &pattern, "--mermaid"]);
    let mm = String::from_utf8_lossy(&out.stdout);
    assert!(
        mm.starts_with("flowchart LR") && mm.contains("<-->|veth|") && mm.contains("==>|encap|"),
        "{mm}"
    );
}

#[test]
fn bad_namespace_references_exit_2_naming_them() {
    support::require_root();
    for (arg, needle) in [
        ("dye-nosuchlab-node-1", "dye-nosuchlab-node-1"),
        ("dye-nosuchlab-*", "dye-nosuchlab-*"),
        ("/etc/hostname", "not a network namespace"),
        ("/proc/self/ns/mnt", "mount namespace"),
        ("pid:999999999", "pid:999999999"),
    ] {
        let out = dye(&["topology", "--ns", arg]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains(needle), "{arg}: {err}");
    }
}
