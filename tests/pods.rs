//! End-to-end tests of `pod:NAMESPACE/NAME` references on the lab, whose pods are real
//! containerd CRI sandboxes (one containerd per node): trace, mtu, capture and topology take
//! pods by name, resolved through the node's CRI socket, and every way a resolution can fail
//! is refused with exit status 2, naming the pod and the runtime endpoint.

#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Stdio};

use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};
use serde_json::Value;
use support::{dye, Lab, TempPcap};

/// A node's CRI socket, as `dye lab status ID --json` reports it.
fn socket(lab: &Lab, node: &str) -> String {
    let out = dye(&["lab", "status", &lab.id, "--json"]);
    assert!(out.status.success(), "dye lab status failed");
    let view: Value = serde_json::from_slice(&out.stdout).expect("lab status prints JSON");
    view["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == node))
        .and_then(|m| m["cri_socket"].as_str())
        .unwrap_or_else(|| panic!("no CRI socket for {node}"))
        .to_string()
}

/// Runs dye with `args`; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = dye(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `dye ARGS --json` and parses the report.
fn json(args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, stdout, stderr) = run(&all);
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}); exit {code}; stderr: {stderr}"));
    (code, v)
}

/// A trace's hops as "netns/ifname:dir", with `rename` applied to namespace names.
fn hop_list(r: &Value, rename: &[(&str, &str)]) -> Vec<String> {
    r["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            let ns = h["netns"].as_str().unwrap();
            let ns = rename
                .iter()
                .find(|(from, _)| *from == ns)
                .map_or(ns, |(_, to)| to);
            format!(
                "{}/{}:{}",
                ns,
                h["ifname"].as_str().unwrap(),
                h["direction"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_trace_between_pods_by_name_takes_the_same_hops_as_by_namespace_name() {
    let lab = Lab::up();
    let (s1, s2) = (socket(&lab, "node-1"), socket(&lab, "node-2"));
    let endpoint2 = format!("unix://{s2}");
    // --from is on node-1, --to on node-2: both runtimes are asked (one per node).
    let (code, by_pod) = json(&[
        "trace",
        "--runtime-endpoint",
        &s1,
        "--runtime-endpoint",
        &endpoint2,
        "--from",
        "pod:default/pod-a",
        "--to",
        "pod:default/pod-c",
    ]);
    assert_eq!(code, 0, "{by_pod}");
    let pod_c = lab.pod_ip("pod-c");
    let (code, by_name) = json(&["trace", "--from", &lab.ns("pod-a"), "--to", &pod_c]);
    assert_eq!(code, 0, "{by_name}");
    assert_eq!(by_pod["probe"]["to"], by_name["probe"]["to"], "{by_pod}");
    // The report names the pod the user asked for, beside its address.
    assert_eq!(by_pod["probe"]["to_name"], "pod:default/pod-c", "{by_pod}");
    assert!(by_name["probe"]["to_name"].is_null());
    // The pods' namespaces read as the pods the user named.
    let names = hop_list(&by_pod, &[]);
    assert!(names[0].starts_with("pod default/pod-a/eth0:"), "{names:?}");
    assert!(
        names
            .iter()
            .any(|h| h.starts_with("pod default/pod-c/eth0:")),
        "{names:?}"
    );
    let (a, c) = (lab.ns("pod-a"), lab.ns("pod-c"));
    assert_eq!(
        hop_list(
            &by_pod,
            &[("pod default/pod-a", &a), ("pod default/pod-c", &c)]
        ),
        hop_list(&by_name, &[])
    );

    // pod → ClusterIP by pod name, with the pod's interface named by pod too.
    let (code, r) = json(&[
        "trace",
        "--runtime-endpoint",
        &s1,
        "--from",
        "pod:pod-b",
        "--to",
        "10.96.0.10:80",
        "-i",
        "pod:default/pod-b/eth0",
        "-i",
        "cni0",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["verdict"]["kind"], "answered", "{r}");
    let hops = hop_list(&r, &[]);
    assert!(
        hops[0].starts_with("pod default/pod-b/eth0:out"),
        "{hops:?}"
    );
    assert!(
        hops.iter()
            .all(|h| h.starts_with("pod default/pod-b/eth0:") || h.contains("/cni0:")),
        "{hops:?}"
    );
}

#[test]
fn mtu_capture_and_topology_take_pods_by_name() {
    let lab = Lab::up();
    let s1 = socket(&lab, "node-1");
    let pod_c = lab.pod_ip("pod-c");

    let (code, r) = json(&[
        "mtu",
        "--runtime-endpoint",
        &s1,
        "--from",
        "pod:default/pod-a",
        "--to",
        &pod_c,
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["path_mtu"], 1450, "{r}");

    let (code, t) = json(&[
        "topology",
        "--runtime-endpoint",
        &s1,
        "--ns",
        "pod:default/pod-a",
    ]);
    assert_eq!(code, 0, "{t}");
    let names: Vec<&str> = t["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pod default/pod-a"], "{t}");

    // Two pings from pod-a, captured in pod-a by pod name: 4 packets, interface named so.
    let pcap = TempPcap::new("pods");
    let child = Command::new(support::dye_bin())
        .args([
            "capture",
            "--runtime-endpoint",
            &s1,
            "--ns",
            "pod:default/pod-a",
            "-c",
            "4",
            "--duration",
            "20s",
            "-w",
            pcap.path(),
            "icmp",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dye capture");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for _ in 0..2 {
        assert!(lab.ping("pod-a", &pod_c, 56));
    }
    let out = child.wait_with_output().expect("dye capture");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("4 packets"), "{stderr}");
    let ifaces = support::tshark_fields(pcap.path(), &[], &["frame.interface_name"]);
    assert_eq!(ifaces.len(), 4, "{ifaces:?}");
    assert!(
        ifaces.iter().all(|f| f[0] == "pod default/pod-a/eth0"),
        "{ifaces:?}"
    );
}

/// A host-network sandbox (sharing its node's network namespace) in the lab, labelled with the
/// lab id so that `dye lab down` removes it. Returns the sandbox id.
fn host_network_sandbox(lab: &Lab, node: &str, name: &str, uid: &str) -> String {
    let socket = socket(lab, node);
    let mut cri = dye_tracer::cri::Cri::connect(std::path::Path::new(&socket)).expect("CRI");
    let labels = dye_tracer::cri::labels(&[
        ("io.kubernetes.pod.name", name),
        ("io.kubernetes.pod.namespace", "default"),
        ("io.kubernetes.pod.uid", uid),
        ("dye.lab/id", &lab.id),
    ]);
    cri.run_pod_sandbox(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        // No hostname: a host-network sandbox has no UTS namespace of its own to set it in.
        labels,
        linux: Some(LinuxPodSandboxConfig {
            // The node's cgroup, as the lab's own pods: removed with the lab.
            cgroup_parent: format!("/dye-{}-{node}", lab.id),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"))
}

/// `dye trace --from FROM --to TO` with these endpoints must fail with exit status 2 and a
/// message containing every one of `wanted`.
fn refused(endpoints: &[&str], from: &str, to: &str, wanted: &[&str]) {
    let mut args = vec!["trace"];
    for e in endpoints {
        args.extend(["--runtime-endpoint", e]);
    }
    args.extend(["--from", from, "--to", to]);
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 2, "{args:?}: {stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "{args:?}: {w:?} not in {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_failed_resolution_names_the_pod_and_the_runtime() {
    let lab = Lab::up();
    let (s1, s2) = (socket(&lab, "node-1"), socket(&lab, "node-2"));
    let (e1, e2) = (format!("unix://{s1}"), format!("unix://{s2}"));
    let pod_c = lab.pod_ip("pod-c");

    // No such pod: the pods that runtime knows, closest first.
    refused(
        &[&s1],
        "pod:default/pod-x",
        &pod_c,
        &[
            "pod:default/pod-x",
            "not known to the container runtime at",
            &e1,
            "most like it: default/pod-a, default/pod-b",
        ],
    );
    // A pod on node-2 is not known to node-1's runtime (one runtime per node).
    refused(
        &[&s1],
        "pod:pod-c",
        &pod_c,
        &[
            "pod:default/pod-c",
            "not known to the container runtime",
            &e1,
        ],
    );
    // --to resolves through the runtimes too.
    refused(
        &[&s1],
        "pod:pod-a",
        "pod:pod-c:80",
        &["--to pod:default/pod-c", "not known", &e1],
    );
    // Unreachable runtime: what was tried, and why.
    let gone = format!("{s1}.gone");
    refused(
        &[&s1, &gone],
        "pod:pod-a",
        &pod_c,
        &[
            "no container runtime answers",
            &format!("unix://{gone} (no such socket)"),
        ],
    );
    refused(
        &["tcp://127.0.0.1:1"],
        "pod:pod-a",
        &pod_c,
        &["bad runtime endpoint \"tcp://127.0.0.1:1\""],
    );
    // Malformed references never reach a runtime.
    for bad in ["pod:", "pod:a/b/c", "pod:Pod-A", "pod:pod-*"] {
        refused(&[&s1], bad, &pod_c, &[&format!("{bad:?}")]);
    }

    // Host network: the sandbox shares its node's namespace.
    host_network_sandbox(
        &lab,
        "node-1",
        "hostnet",
        "00000000-0000-4000-8000-000000000001",
    );
    refused(
        &[&s1],
        "pod:default/hostnet",
        &pod_c,
        &["pod:default/hostnet", "hostNetwork", &e1],
    );
    // Several matches: the same pod known to both nodes' runtimes.
    host_network_sandbox(
        &lab,
        "node-1",
        "twin",
        "00000000-0000-4000-8000-000000000002",
    );
    host_network_sandbox(
        &lab,
        "node-2",
        "twin",
        "00000000-0000-4000-8000-000000000003",
    );
    refused(
        &[&s1, &s2],
        "pod:twin",
        &pod_c,
        &["pod:default/twin", "several ready pod sandboxes", &e1, &e2],
    );
    // Not ready: a stopped sandbox has no network to enter.
    let stopped = host_network_sandbox(
        &lab,
        "node-1",
        "stopped",
        "00000000-0000-4000-8000-000000000004",
    );
    dye_tracer::cri::Cri::connect(std::path::Path::new(&s1))
        .and_then(|mut cri| cri.stop(&stopped))
        .expect("StopPodSandbox");
    refused(
        &[&s1],
        "pod:stopped",
        &pod_c,
        &["pod:default/stopped", "not ready", &e1, &stopped[..13]],
    );

    // Permission denied: not root.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(support::dye_bin())
        .args([
            "trace",
            "--runtime-endpoint",
            &s1,
            "--from",
            "pod:pod-a",
            "--to",
            &pod_c,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pod:default/pod-a")
            && stderr.contains("permission denied")
            && stderr.contains(&e1),
        "{stderr}"
    );
}

#[test]
fn idle_pods_are_real_pods_on_the_bridge_and_leave_the_named_pods_their_addresses() {
    let lab = Lab::up_with(&["--idle-pods", "3"]);
    // The named pods keep the addresses the topology plans (idle ones come after them).
    assert_eq!(lab.pod_ip("pod-a"), "10.244.1.2");
    assert_eq!(lab.pod_ip("pod-c"), "10.244.2.2");
    // An idle pod is a real CRI sandbox on node-1's bridge: trace from it by name.
    let node1 = socket(&lab, "node-1");
    let (code, out, err) = run(&[
        "trace",
        "--json",
        "--runtime-endpoint",
        &node1,
        "--from",
        "pod:default/idle-node-1-3",
        "--to",
        "10.244.2.2",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(r["verdict"]["kind"], "answered", "{r}");
    assert_eq!(r["hops"][0]["netns"], "pod default/idle-node-1-3");
    // Teardown removes them with the rest: 4 named + 2 × 3 idle sandboxes.
    let out = dye(&["lab", "down", &lab.id]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10 pod sandboxes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn too_many_idle_pods_are_refused_before_anything_is_built() {
    let id = support::unique_id();
    let out = dye(&["lab", "up", "--id", &id, "--idle-pods", "241"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--idle-pods 241 is above 240"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&format!("dye-{id}-")));
}
