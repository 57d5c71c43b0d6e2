//! `dye image build`: the archive is an OCI image layout whose index names the image the
//! DaemonSet runs, whose config's entrypoint is `dye agent`, and whose one layer holds the dye
//! binary and every library `ldd` (run here, independently) says it links — enough that the
//! binary runs from the layer alone (chroot, root). Then, on a lab node's containerd, the image
//! runs through CRI with the DaemonSet's host namespaces and capabilities (read from
//! deploy/daemonset.yaml), and dye in it sees the node's pods.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

const DYE: &str = env!("CARGO_BIN_EXE_dye");

/// A scratch directory removed however the test ends.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dye-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The archive's entries by name.
fn entries(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in tar::Archive::new(tar_bytes).entries().expect("tar") {
        let mut e = e.expect("tar entry");
        let name = e.path().expect("entry path").display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry data");
        out.insert(name, data);
    }
    out
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = files
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("blob {digest}"));
    let actual: String =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(data))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    assert_eq!(actual, hex, "blob content matches its digest");
    data
}

fn json(data: &[u8]) -> serde_json::Value {
    serde_json::from_slice(data).expect("JSON")
}

/// The libraries ldd lists for `bin`, as paths without the leading '/'.
fn ldd(bin: &str) -> Vec<String> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let target = l.split("=>").last()?.trim();
            let path = target.split(" (").next()?.trim();
            path.starts_with('/')
                .then(|| path.trim_start_matches('/').to_string())
        })
        .collect()
}

#[test]
fn image_is_an_oci_layout_with_dye_its_libraries_and_the_agent_entrypoint() {
    let scratch = Scratch::new("image-test");
    let dir = &scratch.0;
    let out = dir.join("image.tar");
    let built = Command::new(DYE)
        .args(["image", "build"])
        .arg(&out)
        .output()
        .expect("run dye image build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let archive = std::fs::read(&out).unwrap();
    let files = entries(&archive);

    assert!(files.contains_key("oci-layout"));
    let index = json(&files["index.json"]);
    let desc = &index["manifests"][0];
    let reference = dye_tracer::image::reference();
    assert_eq!(
        desc["annotations"]["io.containerd.image.name"],
        reference.as_str()
    );
    let manifest = json(blob(&files, desc["digest"].as_str().unwrap()));
    let config = json(blob(&files, manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/dye", "agent"])
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer_bytes = blob(&files, layers[0]["digest"].as_str().unwrap());
    assert_eq!(
        config["rootfs"]["diff_ids"][0], layers[0]["digest"],
        "uncompressed layer: diff id = digest"
    );
    let layer = entries(layer_bytes);
    assert_eq!(
        layer["usr/local/bin/dye"],
        std::fs::read(DYE).unwrap(),
        "the binary that built it"
    );
    let libs = ldd(DYE);
    assert!(
        libs.iter().any(|l| l.contains("libpcap")),
        "dye links libpcap: {libs:?}"
    );
    for lib in &libs {
        assert!(layer.contains_key(lib), "layer holds {lib}");
    }
    let regular = layer.keys().filter(|k| !k.ends_with('/')).count();
    assert_eq!(
        regular,
        libs.len() + 1,
        "the binary and its libraries, nothing else"
    );

    // The layer alone runs dye: unpack it and run it chrooted (no host library reachable).
    let root = dir.join("rootfs");
    tar::Archive::new(layer_bytes).unpack(&root).unwrap();
    let ran = Command::new("chroot")
        .arg(&root)
        .args(["/usr/local/bin/dye", "--version"])
        .output()
        .expect("chroot");
    let host = Command::new(DYE).arg("--version").output().unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(ran.stdout, host.stdout);
    assert!(String::from_utf8_lossy(&ran.stdout).starts_with("dye "));
}

/// A CRI client for the test's own calls (containers; the product's client does sandboxes).
struct Cri {
    rt: tokio::runtime::Runtime,
    client: k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
}

impl Cri {
    fn connect(socket: &str) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = socket.to_string();
        let channel = {
            let _g = rt.enter();
            tonic::transport::Endpoint::from_static("http://[::1]:50051")
                .timeout(std::time::Duration::from_secs(20))
                .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
        };
        Cri {
            rt,
            client: k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel),
        }
    }
}

/// The DaemonSet's agent container security settings, as the manifest says.
fn daemonset_capabilities() -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml"),
    )
    .unwrap();
    let ds: k8s_openapi::api::apps::v1::DaemonSet = serde_norway::from_str(&text).unwrap();
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.host_pid, Some(true));
    let caps = spec.containers[0]
        .security_context
        .clone()
        .unwrap()
        .capabilities
        .unwrap();
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    caps.add.unwrap()
}

/// Runs `args` from the dye image in a host-network, host-PID container on `node` of `lab`
/// with `caps` (after dropping all), as the kubelet would for the DaemonSet. Returns (exit
/// code, the container's output).
/// Where containers run: a lab node's containerd, logs in a scratch directory.
struct Node<'a> {
    lab: &'a support::Lab,
    name: &'a str,
    socket: &'a str,
    logs: &'a Path,
}

/// A container started from the dye image, and its sandbox.
struct Running {
    sandbox: String,
    container: String,
    log: std::path::PathBuf,
}

/// Runs `args` to completion (see [`start_in_image`]); returns (exit code, its output).
fn run_in_image(
    cri: &mut Cri,
    node: &Node<'_>,
    name: &str,
    caps: &[String],
    args: &[&str],
) -> (i32, String) {
    let r = start_in_image(cri, node, name, caps, args, &[]);
    let code = wait_exit(cri, &r);
    let out = output(&r);
    stop(cri, &r);
    (code, out)
}

/// Starts `args` from the dye image in a host-network, host-PID container on `node`, with
/// `caps` after dropping all, read-only root, the CRI socket and /run/netns
/// (HostToContainer) mounted as the DaemonSet does, plus `extra` (host path, container path)
/// read-only.
fn start_in_image(
    cri: &mut Cri,
    node: &Node<'_>,
    name: &str,
    caps: &[String],
    args: &[&str],
    extra: &[(&str, &str)],
) -> Running {
    use k8s_cri::v1::*;
    let ns = NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let sandbox_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "dye".into(),
            attempt: 0,
        }),
        log_directory: node.logs.display().to_string(),
        labels: [("dye.lab/id".to_string(), node.lab.id.clone())].into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/dye-{}-{}", node.lab.id, node.name),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(ns.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let rt = &cri.rt;
    let c = &mut cri.client;
    let sandbox = rt
        .block_on(c.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        }))
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let log_path = format!("{name}.log");
    let container = rt
        .block_on(
            c.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "agent".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: dye_tracer::image::reference(),
                        ..Default::default()
                    }),
                    command: vec!["/usr/local/bin/dye".into()],
                    args: args.iter().map(|a| a.to_string()).collect(),
                    log_path: log_path.clone(),
                    // The DaemonSet's CRI socket mount.
                    mounts: [
                        Mount {
                            container_path: "/run/containerd/containerd.sock".into(),
                            host_path: node.socket.into(),
                            ..Default::default()
                        },
                        Mount {
                            container_path: "/run/netns".into(),
                            host_path: "/run/netns".into(),
                            readonly: true,
                            propagation: MountPropagation::PropagationHostToContainer as i32,
                            ..Default::default()
                        },
                    ]
                    .into_iter()
                    .chain(extra.iter().map(|(host, inside)| Mount {
                        container_path: inside.to_string(),
                        host_path: host.to_string(),
                        readonly: true,
                        ..Default::default()
                    }))
                    .collect(),
                    linux: Some(LinuxContainerConfig {
                        security_context: Some(LinuxContainerSecurityContext {
                            capabilities: Some(Capability {
                                add_capabilities: caps.to_vec(),
                                drop_capabilities: vec!["ALL".into()],
                                ..Default::default()
                            }),
                            privileged: false,
                            namespace_options: Some(ns),
                            readonly_rootfs: true,
                            no_new_privs: true,
                            run_as_user: Some(Int64Value { value: 0 }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config),
            }),
        )
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.block_on(c.start_container(StartContainerRequest {
        container_id: container.clone(),
    }))
    .expect("StartContainer");
    Running {
        sandbox,
        container,
        log: node.logs.join(log_path),
    }
}

/// Waits (30 s at most) for the container to exit; its exit code.
fn wait_exit(cri: &mut Cri, r: &Running) -> i32 {
    use k8s_cri::v1::*;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = cri
            .rt
            .block_on(cri.client.container_status(ContainerStatusRequest {
                container_id: r.container.clone(),
                verbose: false,
            }))
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status");
        if st.state == ContainerState::ContainerExited as i32 {
            return st.exit_code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container {} still running after 30 s",
            r.container
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The container's output so far (CRI log lines are `TIME STREAM TAG TEXT`).
fn output(r: &Running) -> String {
    let log = std::fs::read_to_string(&r.log).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// StopPodSandbox + RemovePodSandbox (the lab's teardown would find it by label as well).
fn stop(cri: &mut Cri, r: &Running) {
    use k8s_cri::v1::*;
    let _ = cri
        .rt
        .block_on(cri.client.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: r.sandbox.clone(),
        }));
    let _ = cri
        .rt
        .block_on(cri.client.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: r.sandbox.clone(),
        }));
}

/// The lab node's CRI socket, as `dye lab status` reports it.
fn cri_socket(lab: &support::Lab, node: &str) -> String {
    let out = support::dye(&["lab", "status", &lab.id, "--json"]);
    assert!(out.status.success());
    let view = json(&out.stdout);
    view["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == node))
        .and_then(|m| m["cri_socket"].as_str())
        .unwrap_or_else(|| panic!("no CRI socket for {node}"))
        .to_string()
}

#[test]
fn image_runs_through_cri_with_the_daemonsets_settings_and_sees_the_nodes_pods() {
    let lab = support::Lab::up();
    let scratch = Scratch::new("image-cri");
    let dir = &scratch.0;
    let tar = dir.join("image.tar");
    let built = Command::new(DYE)
        .args(["image", "build"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let socket = cri_socket(&lab, "node-1");
    let import = Command::new("ctr")
        .args([
            "--address",
            &socket,
            "--namespace",
            "k8s.io",
            "images",
            "import",
        ])
        .arg(&tar)
        .output()
        .expect("ctr");
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let caps = daemonset_capabilities();
    let mut cri = Cri::connect(&socket);
    let node = Node {
        lab: &lab,
        name: "node-1",
        socket: &socket,
        logs: dir,
    };

    let (code, out) = run_in_image(&mut cri, &node, "dye-version", &caps, &["--version"]);
    assert_eq!(code, 0, "{out}");
    let host = Command::new(DYE).arg("--version").output().unwrap();
    assert_eq!(out, String::from_utf8_lossy(&host.stdout));

    // A pod's topology from inside the container: the pod resolved over the mounted CRI
    // socket, its sandbox's /proc/PID/ns/net opened (hostPID, SYS_PTRACE), entered (SYS_ADMIN)
    // and read over netlink.
    let topology = [
        "topology",
        "--runtime-endpoint",
        "/run/containerd/containerd.sock",
        "--ns",
        "pod:default/pod-a",
        "--json",
    ];
    let (code, out) = run_in_image(&mut cri, &node, "dye-topology", &caps, &topology);
    assert_eq!(code, 0, "{out}");
    let topo = json(out.as_bytes());
    let names: Vec<String> = topo["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["name"].as_str().map(String::from))
        .collect();
    assert!(
        names.iter().any(|n| n.contains("default/pod-a")),
        "{names:?}"
    );

    // Each of these is needed: without SYS_PTRACE the sandbox's /proc/PID/ns/net cannot be
    // opened, without SYS_ADMIN it cannot be entered.
    for (missing, says) in [
        ("SYS_PTRACE", "permission denied"),
        ("SYS_ADMIN", "cannot enter network namespace"),
    ] {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let name = format!("dye-no-{}", missing.to_lowercase().replace('_', "-"));
        let (code, out) = run_in_image(&mut cri, &node, &name, &fewer, &topology);
        eprintln!("without {missing}: exit {code}: {out}");
        assert_ne!(code, 0, "without {missing}: {out}");
        assert!(
            out.to_lowercase().contains(says),
            "without {missing}: {out}"
        );
    }
}

/// Imports the image archive into `node`'s containerd (what the README says to do per node).
fn import(socket: &str, tar: &Path) {
    let import = Command::new("ctr")
        .args([
            "--address",
            socket,
            "--namespace",
            "k8s.io",
            "images",
            "import",
        ])
        .arg(tar)
        .output()
        .expect("ctr");
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
}

#[test]
fn agents_running_from_the_image_as_the_daemonset_serve_a_cross_node_trace() {
    let lab = support::Lab::up();
    let scratch = Scratch::new("image-agents");
    let dir = &scratch.0;
    let tar = dir.join("image.tar");
    let built = Command::new(DYE)
        .args(["image", "build"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let certs = dir.join("certs");
    let made = Command::new(DYE).arg("certs").arg(&certs).output().unwrap();
    assert!(made.status.success());
    let caps = daemonset_capabilities();
    let certs_str = certs.to_str().unwrap();
    let mut running = Vec::new();
    let mut addrs = Vec::new();
    for name in ["node-1", "node-2"] {
        let socket = cri_socket(&lab, name);
        import(&socket, &tar);
        let node = Node {
            lab: &lab,
            name,
            socket: &socket,
            logs: dir,
        };
        let listen = format!(
            "{}:{}",
            lab.addr(name, "eth0"),
            dye_tracer::agent::DEFAULT_PORT
        );
        let mut cri = Cri::connect(&socket);
        // The DaemonSet's arguments, with the agent Secret at /etc/dye/certs.
        let r = start_in_image(
            &mut cri,
            &node,
            &format!("dye-agent-{name}"),
            &caps,
            &[
                "agent",
                "--listen",
                &listen,
                "--certs",
                "/etc/dye/certs",
                "--node-name",
                name,
            ],
            &[(certs_str, "/etc/dye/certs")],
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !output(&r).contains("listening on") {
            assert!(
                std::time::Instant::now() < deadline,
                "agent on {name} not listening: {}",
                output(&r)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        running.push((cri, r));
        addrs.push(listen);
    }
    // The coordinator on node-1, as `kubectl exec ds/dye -- dye trace --agents …` would be.
    let node1 = lab.ns("node-1");
    let agents = addrs.join(",");
    let client = support::dye_bin();
    let out = Command::new("ip")
        .args(["netns", "exec", &node1])
        .arg(&client)
        .args(["trace", "--json", "--agents", &agents, "--certs", certs_str])
        // A containerized agent knows its node's pods by CRI name and CNI namespace, not by
        // the lab's /run/netns names (its containerd has a /run of its own, as a node has).
        .args(["--from", "pod:default/pod-a", "--to", &lab.pod_ip("pod-c")])
        .output()
        .expect("dye trace");
    let logs: Vec<String> = running.iter().map(|(_, r)| output(r)).collect();
    for (cri, r) in &mut running {
        stop(cri, r);
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nagents: {logs:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out.stdout);
    assert_eq!(report["verdict"]["kind"], "answered", "{report}");
    assert!(
        report["agents"]["blind"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let hops = report["hops"].as_array().unwrap();
    let nodes: std::collections::BTreeSet<&str> =
        hops.iter().filter_map(|h| h["node"].as_str()).collect();
    assert_eq!(
        nodes,
        ["node-1", "node-2"].into_iter().collect(),
        "both nodes' agents, from their containers, saw the probe (named by --node-name)"
    );
    // Out of node-1's underlay and into node-2's, and back: the clock offset from the probe.
    assert!(hops.len() >= 16, "{report}");
    let clocks = report["agents"]["clocks"].as_array().unwrap();
    assert!(
        clocks
            .iter()
            .any(|c| c["node"] == "node-2" && c["method"] == "probe"),
        "{clocks:?}"
    );
}
