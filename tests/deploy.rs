//! deploy/: every manifest parses into typed Kubernetes objects (k8s-openapi), and what the
//! agent needs is there — exactly the listed capabilities, host namespaces, mounts, probes on
//! the agent's port, a headless Service selecting the DaemonSet's pods, the Secrets it mounts,
//! and a Role that grants exec and nothing cluster-wide. Non-root, no cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Secret, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

const NAMESPACE: &str = "dye";
/// The capabilities deploy/README.md lists and justifies, and no others.
const CAPABILITIES: [&str; 6] = [
    "NET_ADMIN",
    "NET_RAW",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "BPF",
    "PERFMON",
];

#[derive(Debug, Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    daemonsets: Vec<DaemonSet>,
    services: Vec<Service>,
    secrets: Vec<Secret>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of every deploy/*.yaml, typed by its kind; an unknown kind fails.
fn load() -> Manifests {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/")
        .map(|e| e.expect("deploy/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "manifests in deploy/: {files:?}");
    let mut m = Manifests::default();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read manifest");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let typed = |what: &str| format!("{}: {kind} as {what}", file.display());
            macro_rules! push {
                ($list:expr) => {
                    $list.push(
                        serde_norway::from_value(value)
                            .unwrap_or_else(|e| panic!("{}: {e}", typed(stringify!($list)))),
                    )
                };
            }
            match kind.as_str() {
                "Namespace" => push!(m.namespaces),
                "DaemonSet" => push!(m.daemonsets),
                "Service" => push!(m.services),
                "Secret" => push!(m.secrets),
                "Role" => push!(m.roles),
                "RoleBinding" => push!(m.role_bindings),
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            }
        }
    }
    m
}

fn daemonset(m: &Manifests) -> &DaemonSet {
    assert_eq!(m.daemonsets.len(), 1, "one DaemonSet");
    &m.daemonsets[0]
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod template spec")
}

fn agent(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1, "one container: the agent");
    &spec.containers[0]
}

#[test]
fn every_object_is_in_namespace_dye_and_nothing_is_cluster_wide() {
    let m = load();
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(m.namespaces[0].metadata.name.as_deref(), Some(NAMESPACE));
    let namespaced = m
        .daemonsets
        .iter()
        .map(|o| &o.metadata)
        .chain(m.services.iter().map(|o| &o.metadata))
        .chain(m.secrets.iter().map(|o| &o.metadata))
        .chain(m.roles.iter().map(|o| &o.metadata))
        .chain(m.role_bindings.iter().map(|o| &o.metadata));
    for meta in namespaced {
        assert_eq!(
            meta.namespace.as_deref(),
            Some(NAMESPACE),
            "{:?}",
            meta.name
        );
    }
    // A ClusterRole or ClusterRoleBinding would have failed `load` as an unexpected kind.
}

#[test]
fn daemonset_runs_in_the_nodes_namespaces_with_exactly_the_listed_capabilities() {
    let m = load();
    let ds = daemonset(&m);
    assert_eq!(ds.metadata.name.as_deref(), Some("dye"));
    let spec = pod_spec(ds);
    assert_eq!(spec.host_network, Some(true), "hostNetwork");
    assert_eq!(
        spec.host_pid,
        Some(true),
        "hostPID: /proc shows the node's processes"
    );
    assert_eq!(
        spec.dns_policy.as_deref(),
        Some("ClusterFirstWithHostNet"),
        "a hostNetwork pod must resolve the headless Service"
    );
    let sc = agent(spec)
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_ne!(sc.privileged, Some(true), "not privileged");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(added, CAPABILITIES.into_iter().collect::<BTreeSet<_>>());
    // The lab's agents (`dye lab up --isolated`) run with exactly these, so the lab exercises
    // the manifest's settings (tests/isolated.rs reads them off the running agents).
    let lab: BTreeSet<&str> = dye_tracer::lab::agents::AGENT_CAPABILITIES
        .into_iter()
        .collect();
    assert_eq!(added, lab, "the lab's agent containers");
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "read-only root (the lab's agents too)"
    );
    // And the README justifies each one.
    let readme = std::fs::read_to_string(deploy_dir().join("README.md")).expect("README");
    for cap in CAPABILITIES {
        assert!(
            readme.contains(&format!("| `{cap}` |")),
            "README row for {cap}"
        );
    }
}

#[test]
fn daemonset_mounts_the_cri_socket_netns_and_btf_and_leaves_proc_to_host_pid() {
    let m = load();
    let spec = pod_spec(daemonset(&m));
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let mounts = agent(spec).volume_mounts.as_deref().unwrap_or_default();
    // (host path, mount path, read-only)
    let mounted = |host: &str| {
        let vol = volumes
            .iter()
            .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == host))
            .unwrap_or_else(|| panic!("a hostPath volume for {host}"));
        mounts
            .iter()
            .find(|vm| vm.name == vol.name)
            .unwrap_or_else(|| panic!("{host} mounted"))
    };
    let cri = mounted("/run/containerd/containerd.sock");
    assert_eq!(cri.mount_path, "/run/containerd/containerd.sock");
    let netns = mounted("/run/netns");
    assert_eq!(netns.mount_path, "/run/netns");
    assert_eq!(
        netns.mount_propagation.as_deref(),
        Some("HostToContainer"),
        "namespaces named after the agent starts must appear"
    );
    let btf = mounted("/sys/kernel/btf");
    assert_eq!(btf.mount_path, "/sys/kernel/btf");
    assert_eq!(btf.read_only, Some(true));
    // /proc comes from hostPID; nothing may shadow it with another view.
    assert!(
        mounts.iter().all(|vm| !vm.mount_path.starts_with("/proc")),
        "{mounts:?}"
    );
    let endpoint = agent(spec)
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "CONTAINER_RUNTIME_ENDPOINT")
        .and_then(|e| e.value.clone());
    assert_eq!(
        endpoint.as_deref(),
        Some("unix:///run/containerd/containerd.sock")
    );
}

#[test]
fn agent_listens_on_the_default_port_and_probes_check_it() {
    let m = load();
    let c = agent(pod_spec(daemonset(&m)));
    let port = i32::from(dye_tracer::agent::DEFAULT_PORT);
    let ports = c.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].container_port, port);
    assert_eq!(ports[0].name.as_deref(), Some("agent"));
    let args = c.args.as_deref().unwrap_or_default();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .expect("--listen ADDR:PORT");
    assert_eq!(listen, &format!("$(POD_IP):{port}"));
    let node_name = args
        .iter()
        .position(|a| a == "--node-name")
        .and_then(|i| args.get(i + 1))
        .expect("--node-name NAME");
    assert_eq!(node_name, "$(NODE_NAME)");
    let from_spec = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(from_spec.as_deref(), Some("spec.nodeName"));
    let certs = args
        .iter()
        .position(|a| a == "--certs")
        .and_then(|i| args.get(i + 1))
        .expect("--certs DIR");
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .any(|vm| &vm.mount_path == certs),
        "--certs {certs} is a mounted directory"
    );
    for (what, probe) in [
        ("readiness", c.readiness_probe.as_ref()),
        ("liveness", c.liveness_probe.as_ref()),
    ] {
        let tcp = probe
            .and_then(|p| p.tcp_socket.as_ref())
            .unwrap_or_else(|| panic!("{what} probe over TCP"));
        let probed = match &tcp.port {
            IntOrString::Int(p) => *p,
            IntOrString::String(name) => ports
                .iter()
                .find(|p| p.name.as_ref() == Some(name))
                .map(|p| p.container_port)
                .unwrap_or_else(|| panic!("{what} probe names unknown port {name}")),
        };
        assert_eq!(probed, port, "{what} probe on the agent port");
    }
}

#[test]
fn headless_service_selects_the_daemonsets_pods_on_the_agent_port() {
    let m = load();
    let ds = daemonset(&m);
    let pod_labels = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|md| md.labels.clone())
        .expect("pod labels");
    let match_labels = ds
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .expect("DaemonSet selector");
    assert!(match_labels
        .iter()
        .all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(m.services.len(), 1);
    let svc = m.services[0].spec.as_ref().expect("Service spec");
    assert_eq!(svc.cluster_ip.as_deref(), Some("None"), "headless");
    let selector = svc.selector.as_ref().expect("Service selector");
    assert!(!selector.is_empty());
    assert!(
        selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "{selector:?} selects {pod_labels:?}"
    );
    let ports = svc.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, i32::from(dye_tracer::agent::DEFAULT_PORT));
    // The plugin dials the Service's DNS name on that port.
    let plugin = std::fs::read_to_string(deploy_dir().join("kubectl-dye")).expect("kubectl-dye");
    let name = m.services[0]
        .metadata
        .name
        .as_deref()
        .expect("Service name");
    assert!(
        plugin.contains(&format!(
            "{name}.${{ns}}.svc.cluster.local:{}",
            ports[0].port
        )),
        "kubectl-dye dials the headless Service"
    );
}

#[test]
fn every_secret_the_daemonset_mounts_is_in_the_layout_with_its_keys() {
    let m = load();
    let spec = pod_spec(daemonset(&m));
    let mut mounted = BTreeSet::new();
    for vol in spec.volumes.iter().flatten() {
        let Some(secret) = &vol.secret else { continue };
        let name = secret.secret_name.as_deref().expect("secretName");
        let layout = m
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("Secret {name} in deploy/secrets.yaml"));
        let keys: BTreeSet<&str> = layout
            .string_data
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .chain(layout.data.iter().flatten().map(|(k, _)| k.as_str()))
            .collect();
        for item in secret.items.iter().flatten() {
            assert!(
                keys.contains(item.key.as_str()),
                "{name} has key {}",
                item.key
            );
        }
        mounted.insert(name.to_string());
    }
    assert_eq!(
        mounted,
        ["dye-agent-certs", "dye-client-certs"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    // The keys are the files `dye certs` writes.
    let all_keys: BTreeSet<String> = m
        .secrets
        .iter()
        .flat_map(|s| s.string_data.iter().flatten().map(|(k, _)| k.clone()))
        .collect();
    let written: BTreeSet<String> = dye_tracer::agent::certs::FILES
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(all_keys, written);
}

#[test]
fn role_grants_exec_into_pods_of_namespace_dye_only() {
    let m = load();
    assert_eq!(m.roles.len(), 1);
    let rules = m.roles[0].rules.as_deref().unwrap_or_default();
    let exec: Vec<_> = rules
        .iter()
        .filter(|r| r.resources.iter().flatten().any(|x| x == "pods/exec"))
        .collect();
    assert_eq!(exec.len(), 1, "one rule for pods/exec");
    assert_eq!(exec[0].verbs, vec!["create".to_string()]);
    assert_eq!(
        exec[0].resources.as_deref(),
        Some(&["pods/exec".to_string()][..])
    );
    // Nothing else may be written, and nothing outside the core/apps read paths.
    for r in rules {
        for verb in &r.verbs {
            let ok = verb == "get" || verb == "list" || (verb == "create" && r == exec[0]);
            assert!(ok, "verb {verb} on {:?}", r.resources);
        }
        assert!(r.resources.iter().flatten().all(|x| !x.contains('*')));
    }
    assert_eq!(m.role_bindings.len(), 1);
    let rb = &m.role_bindings[0];
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(Some(&rb.role_ref.name), m.roles[0].metadata.name.as_ref());
}

#[test]
fn daemonset_names_the_image_dye_builds() {
    let m = load();
    let image = agent(pod_spec(daemonset(&m))).image.clone().expect("image");
    assert_eq!(image, dye_tracer::image::reference());
    assert_eq!(
        agent(pod_spec(daemonset(&m))).image_pull_policy.as_deref(),
        Some("Never"),
        "there is no registry to pull from"
    );
}

/// A fake kubectl that prints each argument on its own line (and stdin, for `apply -f -`).
fn fake_kubectl(dir: &Path) -> PathBuf {
    let path = dir.join("kubectl");
    std::fs::write(
        &path,
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn kubectl_dye_trace_execs_the_coordinator_in_an_agent_pod_with_the_client_certs() {
    let dir = std::env::temp_dir().join(format!("dye-kubectl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubectl = fake_kubectl(&dir);
    let out = std::process::Command::new(deploy_dir().join("kubectl-dye"))
        .args(["trace", "--from", "pod:default/a b", "--to", "pod:web/c"])
        .env("KUBECTL", &kubectl)
        .output()
        .expect("run kubectl-dye");
    let unknown = std::process::Command::new(deploy_dir().join("kubectl-dye"))
        .arg("bogus")
        .env("KUBECTL", &kubectl)
        .output()
        .expect("run kubectl-dye");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let argv: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    let port = dye_tracer::agent::DEFAULT_PORT.to_string();
    let agents = format!("dye.dye.svc.cluster.local:{port}");
    assert_eq!(
        argv,
        [
            "exec",
            "-n",
            "dye",
            "ds/dye",
            "-c",
            "agent",
            "--",
            "dye",
            "trace",
            "--agents",
            &agents,
            "--certs",
            "/etc/dye/client",
            "--from",
            "pod:default/a b",
            "--to",
            "pod:web/c"
        ]
    );
    // The paths it names are where the DaemonSet mounts the client Secret.
    let m = load();
    let c = agent(pod_spec(daemonset(&m)));
    assert!(c
        .volume_mounts
        .iter()
        .flatten()
        .any(|vm| vm.mount_path == "/etc/dye/client"));
    assert_eq!(c.name, "agent");
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn kubectl_dye_certs_fills_both_secrets_with_the_keys_the_daemonset_mounts() {
    let dir = std::env::temp_dir().join(format!("dye-kubectl-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // This fake kubectl logs each call's arguments, one call per line, and what it reads.
    let kubectl = dir.join("kubectl");
    let calls = dir.join("calls");
    std::fs::write(
        &kubectl,
        format!(
            "#!/bin/sh\necho \"$*\" >> {0}\n[ \"$1\" = apply ] && cat >> {0}.stdin\nexit 0\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(deploy_dir().join("kubectl-dye"))
        .arg("certs")
        .env("KUBECTL", &kubectl)
        .env("DYE_BIN", env!("CARGO_BIN_EXE_dye"))
        .output()
        .expect("run kubectl-dye certs");
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = load();
    let spec = pod_spec(daemonset(&m));
    for vol in spec.volumes.iter().flatten() {
        let Some(secret) = &vol.secret else { continue };
        let name = secret.secret_name.as_deref().unwrap();
        let create = log
            .lines()
            .find(|l| l.starts_with(&format!("create secret generic {name} -n dye ")))
            .unwrap_or_else(|| panic!("no create for {name}: {log}"));
        for item in secret.items.iter().flatten() {
            assert!(
                create.contains(&format!("--from-file={}=", item.key)),
                "{name} gets {}: {create}",
                item.key
            );
        }
    }
    assert_eq!(
        log.lines().filter(|l| *l == "apply -f -").count(),
        2,
        "{log}"
    );
    assert!(
        log.lines().any(|l| l == "rollout restart -n dye ds/dye"),
        "{log}"
    );
}
