//! `up`: builds a lab from its topology, step by step, recording every namespace and runtime
//! in the state file as soon as it exists. Any failure or an interrupt (SIGINT/SIGTERM) tears
//! down whatever was built, so a half-built lab never stays behind.
//!
//! Pods are made the way the kubelet makes them: each node runs a containerd, the lab asks it
//! over CRI for a pod sandbox (containerd creates the network namespace and runs CNI), then
//! publishes the sandbox's namespace as `dye-<id>-<pod>` (`ip netns attach`), so everything
//! else addresses pods by name as before.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cmd::spawn_daemon;
use super::cmd::Cmd;
use super::cni;
use super::containerd::{self, Paths};
use super::cri::{Cri, PodSpec, SandboxStatus};
use super::image;
use super::names::{LabId, ADMIN, STATE_ROOT, UNDERLAY};
use super::rules::{self, Endpoint};
use super::shape::{PodWiring, ProxyMode};
use super::state::{lab_namespaces_on_host, AdminHost, LabState, NodeRuntime, PodState};
use super::teardown;
use super::topology::{Backend, Node, Topology};
use super::udp_backend;
use super::LabError;
use super::{agents, nft_proxy, node_host, routed_pods, router};

/// Builds lab `id` from the topology `text` (read from `source`, a path or "builtin"). On
/// success the lab is complete and its state saved; on any error everything created so far is
/// removed before the error is returned.
pub fn up(id: &LabId, text: &str, source: &str, options: &UpOptions) -> Result<LabState, LabError> {
    let idle_pods = options.idle_pods;
    let mut parsed = Topology::parse(text).map_err(|message| LabError::Topology {
        path: source.to_string(),
        message,
    })?;
    if let Some(n) = idle_pods {
        if n > super::topology::MAX_IDLE_PODS {
            return Err(LabError::Topology {
                path: source.to_string(),
                message: format!(
                    "--idle-pods {n} is above {} (one /24 of pod addresses)",
                    super::topology::MAX_IDLE_PODS
                ),
            });
        }
        for node in &mut parsed.nodes {
            node.idle_pods = n;
        }
    }
    let topo = &parsed;
    preflight(topo)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let guards = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
        .into_iter()
        .filter_map(|sig| signal_hook::flag::register(sig, Arc::clone(&interrupted)).ok())
        .collect::<Vec<_>>();

    let state_dir = claim_state_dir(id)?;
    if let Err(e) = std::fs::write(state_dir.join("topology.toml"), text) {
        let _ = teardown::down(id);
        return Err(LabError::io("save the topology", e));
    }
    let mut builder = Builder {
        id,
        topo,
        state: LabState::new(id, source.to_string()),
        state_dir: &state_dir,
        interrupted: &interrupted,
        agents: options.agents || options.isolated,
        isolated: options.isolated,
    };
    builder.state.isolated = options.isolated;
    let result = builder.build();
    for g in guards {
        signal_hook::low_level::unregister(g);
    }
    match result {
        Ok(()) => Ok(builder.state),
        Err(err) => {
            tracing::warn!(lab = %id, "build failed, tearing down: {err}");
            if let Err(cleanup) = teardown::down(id) {
                tracing::error!(lab = %id, "teardown after failed build: {cleanup}");
            }
            Err(err)
        }
    }
}

/// How `up` builds beyond the topology.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Replaces every node's `idle_pods`.
    pub idle_pods: Option<u32>,
    /// Start a `dye agent` on every node.
    pub agents: bool,
    /// Make every node its own host (mount, PID and UTS namespaces: `node_host`), its agent a
    /// container from dye's image. Implies `agents`.
    pub isolated: bool,
}

/// Fails early, before anything is created, when privileges or tools are missing.
fn preflight(topo: &Topology) -> Result<(), LabError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    let mut tools: Vec<(&str, &'static str)> = vec![
        ("ip", "iproute2"),
        ("bridge", "iproute2"),
        ("iptables-restore", "iptables"),
        ("iptables", "iptables"),
        ("sysctl", "procps"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
        ("mount", "mount"),
        ("containerd", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
    ];
    if topo.kube_proxy.mode == ProxyMode::Nftables {
        tools.push(("nft", "nftables"));
    }
    if topo.dual_stack() {
        tools.push(("ip6tables-restore", "iptables"));
        tools.push(("ip6tables", "iptables"));
        if !Path::new("/proc/sys/net/ipv6").is_dir() {
            return Err(LabError::Internal(
                "the topology is dual-stack but this kernel has IPv6 disabled \
                 (no /proc/sys/net/ipv6); remove the *6 keys for an IPv4-only lab"
                    .into(),
            ));
        }
    }
    for (tool, package) in &tools {
        if !on_path(tool) {
            return Err(LabError::MissingTool {
                tool: (*tool).to_string(),
                package,
            });
        }
    }
    if !Path::new(image::BUSYBOX).is_file() {
        return Err(LabError::MissingTool {
            tool: format!("{} (the pod sandbox image's sleeper)", image::BUSYBOX),
            package: "busybox-static",
        });
    }
    let routed = [routed_pods::PLUGIN];
    let extra: &[&str] = if topo.pods.wiring == PodWiring::Routed {
        &routed
    } else {
        &[]
    };
    for plugin in cni::PLUGINS.iter().chain(extra) {
        let path = cni::cni_path().join(plugin);
        if !path.is_file() {
            return Err(LabError::MissingTool {
                tool: format!("CNI plugin {}", path.display()),
                package: "containernetworking-plugins",
            });
        }
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Creating the state directory is the lock on the id: it fails if the id is taken.
fn claim_state_dir(id: &LabId) -> Result<std::path::PathBuf, LabError> {
    let dir = id.state_dir();
    if lab_namespaces_on_host()?
        .iter()
        .any(|ns| ns.starts_with(&id.ns_prefix()))
    {
        return Err(LabError::IdInUse(id.to_string(), dir));
    }
    std::fs::create_dir_all(STATE_ROOT)
        .map_err(|e| LabError::io(format!("create {STATE_ROOT}"), e))?;
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(LabError::IdInUse(id.to_string(), dir))
        }
        Err(e) => Err(LabError::io(format!("create {}", dir.display()), e)),
    }
}

struct Builder<'a> {
    id: &'a LabId,
    topo: &'a Topology,
    state: LabState,
    state_dir: &'a Path,
    interrupted: &'a AtomicBool,
    /// Start a `dye agent` on every node.
    agents: bool,
    /// Every node its own host (`node_host`).
    isolated: bool,
}

impl Builder<'_> {
    fn build(&mut self) -> Result<(), LabError> {
        self.state.save(self.state_dir)?;
        self.underlay()?;
        image::write_archive(&self.archive())?;
        for node in &self.topo.nodes {
            self.node(node)?;
        }
        // While the nodes' runtimes make the pods: everything that does not need them.
        self.runtimes_and_pods(|b| {
            b.overlay()?;
            b.firewall_and_office()
        })?;
        self.services()?;
        if self.isolated {
            self.admin_host()?;
        }
        self.settle_ipv6()?;
        self.wait_for_responders()?;
        if self.agents {
            let interrupted = self.interrupted;
            let step = || interrupted_check(interrupted);
            agents::install(self.id, self.topo, &mut self.state, self.state_dir, &step)?;
        }
        self.state.complete = true;
        self.state.save(self.state_dir)
    }

    fn step(&self) -> Result<(), LabError> {
        interrupted_check(self.interrupted)
    }

    /// Creates a namespace with `lo` up, and records it before anything else can fail.
    fn namespace(&mut self, name: &str) -> Result<String, LabError> {
        self.step()?;
        let ns = self.id.ns(name);
        Cmd::new(["ip", "netns", "add", ns.as_str()]).run()?;
        self.state.namespaces.push(ns.clone());
        self.state.save(self.state_dir)?;
        Cmd::ip(&ns, "link set lo up").run()?;
        if self.topo.dual_stack() {
            // No duplicate address detection inside the lab: every address is planned, and a
            // tentative address (1-2 s of DAD) would make the first probe race the kernel.
            // Interfaces created from now on (eth0, cni0, veths, VTEPs) inherit `default`.
            self.sysctl(&ns, "net.ipv6.conf.default.accept_dad=0")?;
            self.sysctl(&ns, "net.ipv6.conf.all.accept_dad=0")?;
        }
        Ok(ns)
    }

    fn sysctl(&self, ns: &str, setting: &str) -> Result<(), LabError> {
        Cmd::in_ns(ns, ["sysctl", "-q", "-w", setting])
            .run()
            .map(drop)
    }

    /// The underlay switch: a bridge in its own namespace that every node's eth0 plugs into.
    fn underlay(&mut self) -> Result<(), LabError> {
        if let Some(r) = &self.topo.router {
            let ns = self.namespace(&r.name)?;
            return router::prepare(&ns);
        }
        let sw = self.namespace(UNDERLAY)?;
        let mtu = self.topo.underlay.mtu;
        Cmd::ip(&sw, &format!("link add br0 mtu {mtu} type bridge")).run()?;
        Cmd::ip(&sw, "link set br0 up").run()?;
        Ok(())
    }

    /// A veth from `ns`'s `ifname` to a port of the underlay switch, with `addr` on it.
    fn plug_into_underlay(
        &self,
        ns: &str,
        ifname: &str,
        port: &str,
        addr: Ipv4Addr,
        addr6: Option<Ipv6Addr>,
    ) -> Result<(), LabError> {
        let sw = self.id.ns(UNDERLAY);
        let mtu = self.topo.underlay.mtu;
        let prefix = self.topo.underlay.subnet.prefix_len();
        Cmd::ip(
            ns,
            &format!("link add {ifname} mtu {mtu} type veth peer name {port} mtu {mtu} netns {sw}"),
        )
        .run()?;
        Cmd::ip(&sw, &format!("link set {port} master br0 up")).run()?;
        Cmd::ip(ns, &format!("addr add {addr}/{prefix} dev {ifname}")).run()?;
        if let (Some(a6), Some(net6)) = (addr6, &self.topo.underlay.subnet6) {
            let prefix6 = net6.get_ref().prefix_len();
            Cmd::ip(
                ns,
                &format!("-6 addr add {a6}/{prefix6} dev {ifname} nodad"),
            )
            .run()?;
        }
        Cmd::ip(ns, &format!("link set {ifname} up")).run()?;
        Ok(())
    }

    /// The admin host of an isolated lab (`names::ADMIN`): a host of its own on the underlay
    /// switch, at the first free address from .100 of the underlay subnet, where a coordinator
    /// runs like an operator's bastion. A routed underlay gets none (no switch to plug into).
    fn admin_host(&mut self) -> Result<(), LabError> {
        if self.topo.router.is_some() {
            return Ok(());
        }
        let subnet = self.topo.underlay.subnet;
        let mut used: Vec<Ipv4Addr> = self
            .topo
            .nodes
            .iter()
            .map(|n| *n.address.get_ref())
            .collect();
        if let Some(fw) = &self.topo.firewall {
            used.push(fw.underlay_address);
        }
        let address = subnet
            .hosts()
            .skip(99)
            .find(|a| !used.contains(a))
            .ok_or_else(|| LabError::Topology {
                path: self.state.topology_source.clone(),
                message: format!("no free address for the admin host in {subnet}"),
            })?;
        let ns = self.namespace(ADMIN)?;
        self.plug_into_underlay(&ns, "eth0", ADMIN, address, None)?;
        let log = self.state_dir.join("admin.log");
        let pid = node_host::launch(self.state_dir, &ns, node_host::ADMIN_LAUNCH, ADMIN, &log)?;
        self.state.admin = Some(AdminHost {
            address,
            pid,
            init_pid: None,
        });
        self.state.save(self.state_dir)?;
        let init = node_host::init_pid(pid, Duration::from_secs(5))?;
        if let Some(admin) = &mut self.state.admin {
            admin.init_pid = Some(init);
        }
        self.state.save(self.state_dir)
    }

    /// A node: its root namespace with the underlay uplink, forwarding on, default route to the
    /// firewall (the underlay gateway) when there is one.
    fn node(&mut self, node: &Node) -> Result<(), LabError> {
        let name = node.name.get_ref();
        let ns = self.namespace(name)?;
        // Its containerd first: it gets ready while the rest of the node is built.
        self.start_runtime(node)?;
        let address6 = node.address6.as_ref().map(|a| *a.get_ref());
        match &self.topo.router {
            Some(r) => router::plug_node(self.topo, &self.id.ns(&r.name), &ns, node)?,
            None => {
                self.plug_into_underlay(&ns, "eth0", name, *node.address.get_ref(), address6)?
            }
        }
        self.sysctl(&ns, "net.ipv4.ip_forward=1")?;
        // kube-proxy needs bridged pod-to-pod replies to pass conntrack (br_netfilter).
        self.sysctl(&ns, "net.bridge.bridge-nf-call-iptables=1")?;
        if self.topo.dual_stack() {
            self.sysctl(&ns, "net.ipv6.conf.all.forwarding=1")?;
            self.sysctl(&ns, "net.bridge.bridge-nf-call-ip6tables=1")?;
        }
        if let Some(fw) = &self.topo.firewall {
            Cmd::ip(
                &ns,
                &format!("route add default via {}", fw.underlay_address),
            )
            .run()?;
            if let (Some(gw6), Some(_)) = (&fw.underlay_address6, address6) {
                Cmd::ip(&ns, &format!("-6 route add default via {}", gw6.get_ref())).run()?;
            }
        }
        Ok(())
    }

    /// Every pod as a CRI pod sandbox from its node's containerd (started with the node).
    /// Nodes work side by side, each on its own thread (wait for containerd, import the
    /// sandbox image, RunPodSandbox for each of its pods in topology order, so host-local hands
    /// out addresses in that order), while this thread runs `meanwhile`; then each sandbox's
    /// namespace is published under the pod's name and its responder started.
    fn runtimes_and_pods(
        &mut self,
        meanwhile: impl FnOnce(&mut Self) -> Result<(), LabError>,
    ) -> Result<(), LabError> {
        self.step()?;
        let archive = self.archive();
        let started: Vec<(&Node, Paths, NodeRuntime)> = self
            .topo
            .nodes
            .iter()
            .filter_map(|node| {
                let runtime = self
                    .state
                    .runtimes
                    .iter()
                    .find(|r| &r.node == node.name.get_ref())?;
                Some((
                    node,
                    Paths::new(self.state_dir, node.name.get_ref()),
                    runtime.clone(),
                ))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (id, interrupted, archive) = (self.id, self.interrupted, archive.as_path());
        let (side, results) = std::thread::scope(|s| {
            let handles: Vec<_> = started
                .iter()
                .map(|(node, paths, runtime)| {
                    s.spawn(move || {
                        node_sandboxes(id, node, paths, runtime, archive, deadline, interrupted)
                    })
                })
                .collect();
            let side = meanwhile(self);
            let results: Vec<Result<Vec<Sandbox>, LabError>> = handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LabError::Internal("a node thread panicked".into()))
                    })
                })
                .collect();
            (side, results)
        });
        side?;
        // Sandboxes that exist are removed by teardown over CRI (it lists them by the lab's
        // label), so a failure on one node can be returned as is.
        for ((node, _, runtime), result) in started.iter().zip(results) {
            for sandbox in result? {
                self.publish_pod(node, runtime, sandbox)?;
            }
        }
        Ok(())
    }

    /// Where the sandbox image archive is written before the nodes' runtimes import it.
    fn archive(&self) -> std::path::PathBuf {
        self.state_dir.join("sandbox-image.tar")
    }

    /// Writes node `node`'s CNI network list and containerd config, starts its containerd in
    /// the node's namespace and records it (it serves a little later: see `node_sandboxes`).
    fn start_runtime(&mut self, node: &Node) -> Result<(), LabError> {
        let name = node.name.get_ref();
        let paths = Paths::new(self.state_dir, name);
        let ipam_dir = self.state_dir.join("cni").join(name);
        let list = match self.topo.pods.wiring {
            PodWiring::Bridge => cni::network_list(self.topo, node, &ipam_dir),
            PodWiring::Routed => routed_pods::network_list(self.topo, node, &ipam_dir),
        };
        let hostname = self.isolated.then_some(name.as_str());
        let pid = containerd::start(self.state_dir, &paths, &self.id.ns(name), &list, hostname)?;
        self.state.runtimes.push(NodeRuntime {
            node: name.clone(),
            cri_socket: paths.socket(),
            pid,
            cgroup_parent: format!("/{}", self.id.cgroup(name)),
            init_pid: None,
        });
        self.state.save(self.state_dir)?;
        if self.isolated {
            let init = node_host::init_pid(pid, Duration::from_secs(5))?;
            if let Some(r) = self.state.runtimes.last_mut() {
                r.init_pid = Some(init);
            }
            self.state.save(self.state_dir)?;
        }
        Ok(())
    }

    /// A pod sandbox's namespace published as `dye-<id>-<pod>`, recorded, with a responder.
    fn publish_pod(
        &mut self,
        node: &Node,
        runtime: &NodeRuntime,
        sandbox: Sandbox,
    ) -> Result<(), LabError> {
        self.step()?;
        let pod = sandbox.pod.as_str();
        let node_ns = self.id.ns(node.name.get_ref());
        let pod_ns = self.id.ns(pod);
        // The runtime numbers the sandbox process in its own PID namespace: on an isolated
        // node that is the node's, so the host finds it by its cgroup.
        let host_pid = if self.isolated {
            node_host::host_pid_in_cgroup(&runtime.cgroup_parent, &sandbox.id).ok_or_else(|| {
                LabError::Runtime {
                    detail: format!(
                        "no process in the cgroup of pod {pod}'s sandbox {} on {}",
                        sandbox.id,
                        node.name.get_ref()
                    ),
                }
            })?
        } else {
            sandbox.status.pid
        };
        // What `ip netns add` would have made, but bound to the sandbox's namespace:
        // /run/netns/<name> bind-mounted from /proc/<sandbox pid>/ns/net.
        Cmd::new([
            "ip".to_string(),
            "netns".into(),
            "attach".into(),
            pod_ns.clone(),
            host_pid.to_string(),
        ])
        .run()?;
        self.state.namespaces.push(pod_ns.clone());
        self.state.save(self.state_dir)?;
        let mut host_veth = host_veth(&pod_ns, &node_ns)?;
        if self.topo.pods.wiring == PodWiring::Routed {
            let cali = routed_pods::host_veth_name(node.pod_namespace(), pod);
            host_veth =
                routed_pods::reshape(&pod_ns, &node_ns, &host_veth, sandbox.status.ip, &cali)?;
        }
        self.state.pods.push(PodState {
            name: pod.to_string(),
            node: node.name.get_ref().clone(),
            netns: pod_ns.clone(),
            ip: sandbox.status.ip,
            ip6: sandbox.status.ip6,
            host_veth,
            pod_namespace: node.pod_namespace().to_string(),
            uid: sandbox.uid,
            sandbox_id: sandbox.id,
            cri_socket: runtime.cri_socket.clone(),
            sandbox_pid: host_pid,
        });
        self.state.save(self.state_dir)?;
        self.start_responder(node.name.get_ref(), &pod_ns, pod)
    }

    /// The pod's TCP/UDP responder, in the pod's network namespace — on an isolated node also
    /// in the node's mount, UTS and PID namespaces, as a container's process would be, so the
    /// node's /proc lists it and it dies with the node.
    fn start_responder(&mut self, node: &str, pod_ns: &str, pod: &str) -> Result<(), LabError> {
        let exe = std::env::current_exe().map_err(|e| LabError::io("locate the dye binary", e))?;
        let log_path = self.state_dir.join(format!("responder-{pod}.log"));
        let r = &self.topo.responder;
        let init = self.state.runtime(node).and_then(|rt| rt.init_pid);
        let mut cmd = node_host::in_netns(init, pod_ns);
        cmd.arg(exe)
            .args(["lab", "responder", "--name", pod])
            .args([
                "--tcp",
                &r.tcp_port.to_string(),
                "--udp",
                &r.udp_port.to_string(),
            ])
            .arg("--ready")
            .arg(self.ready_file(pod));
        let pid = spawn_daemon(&mut cmd, &log_path, &format!("responder in {pod_ns}"))?;
        self.state.responders.push(pid);
        self.state.save(self.state_dir)
    }

    fn ready_file(&self, pod: &str) -> std::path::PathBuf {
        self.state_dir.join(format!("responder-{pod}.ready"))
    }

    fn wait_for_responders(&self) -> Result<(), LabError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for pod in &self.state.pods {
            while !self.ready_file(&pod.name).exists() {
                self.step()?;
                if Instant::now() > deadline {
                    return Err(LabError::Internal(format!(
                        "the responder in {} did not start within 10 s (log: {})",
                        pod.netns,
                        self.state_dir
                            .join(format!("responder-{}.log", pod.name))
                            .display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// flannel's VXLAN backend: a VTEP per node, then for every other node an onlink route to
    /// its pod subnet via its VTEP address, a permanent neighbour entry and an FDB entry
    /// pointing the VTEP's MAC at the node's underlay address — what flanneld installs.
    fn overlay(&mut self) -> Result<(), LabError> {
        if self.topo.overlay.backend == Backend::Udp {
            let interrupted = self.interrupted;
            let step = || interrupted_check(interrupted);
            udp_backend::install(self.id, self.topo, &mut self.state, self.state_dir, &step)?;
            return self.state.save(self.state_dir);
        }
        let o = &self.topo.overlay;
        for node in &self.topo.nodes {
            self.step()?;
            let ns = self.id.ns(node.name.get_ref());
            let dev = &o.device;
            Cmd::ip(
                &ns,
                &format!(
                    "link add {dev} mtu {} type vxlan id {} local {} dev eth0 dstport {} nolearning",
                    o.mtu,
                    o.vni,
                    node.address.get_ref(),
                    o.port
                ),
            )
            .run()?;
            let vtep = node.pod_subnet.get_ref().network();
            Cmd::ip(&ns, &format!("addr add {vtep}/32 dev {dev}")).run()?;
            Cmd::ip(&ns, &format!("link set {dev} up")).run()?;
            let mac = vtep_mac(&ns, dev)?;
            self.state
                .vtep_macs
                .push((node.name.get_ref().clone(), mac));
            if let (Some(a6), Some(s6)) = (&node.address6, &node.pod_subnet6) {
                // flannel's dual-stack VXLAN: a second device with the same VNI and port whose
                // VTEP is the node's IPv6 underlay address (outer IPv6), holding the network
                // address of the node's IPv6 pod range as its /128.
                let dev6 = self.topo.device6();
                Cmd::ip(
                    &ns,
                    &format!(
                        "link add {dev6} mtu {} type vxlan id {} local {} dev eth0 dstport {} nolearning",
                        self.topo.overlay_mtu6(),
                        o.vni,
                        a6.get_ref(),
                        o.port
                    ),
                )
                .run()?;
                let vtep6 = s6.get_ref().network();
                Cmd::ip(&ns, &format!("-6 addr add {vtep6}/128 dev {dev6} nodad")).run()?;
                Cmd::ip(&ns, &format!("link set {dev6} up")).run()?;
                let mac6 = vtep_mac(&ns, &dev6)?;
                self.state
                    .vtep_macs6
                    .push((node.name.get_ref().clone(), mac6));
            }
        }
        for node in &self.topo.nodes {
            for peer in &self.topo.nodes {
                if peer.name.get_ref() == node.name.get_ref() {
                    continue;
                }
                self.install_peer(node, peer)?;
                self.install_peer6(node, peer)?;
            }
        }
        self.state.save(self.state_dir)
    }

    fn install_peer(&self, node: &Node, peer: &Node) -> Result<(), LabError> {
        let ns = self.id.ns(node.name.get_ref());
        let dev = &self.topo.overlay.device;
        let peer_vtep = peer.pod_subnet.get_ref().network();
        let mac = self
            .state
            .vtep_macs
            .iter()
            .find(|(n, _)| n == peer.name.get_ref())
            .map(|(_, m)| m.clone())
            .ok_or_else(|| {
                LabError::Internal(format!("no VTEP MAC for {}", peer.name.get_ref()))
            })?;
        Cmd::ip(
            &ns,
            &format!("neigh replace {peer_vtep} lladdr {mac} dev {dev} nud permanent"),
        )
        .run()?;
        let dst = peer.address.get_ref().to_string();
        Cmd::new([
            "bridge", "-n", &ns, "fdb", "append", &mac, "dev", dev, "dst", &dst,
        ])
        .run()?;
        Cmd::ip(
            &ns,
            &format!(
                "route add {} via {peer_vtep} dev {dev} onlink",
                peer.pod_subnet.get_ref()
            ),
        )
        .run()?;
        Ok(())
    }

    /// The IPv6 half of `install_peer`, on flannel-v6.1: what flanneld installs for a peer
    /// lease with an IPv6 subnet — onlink route via the peer's v6 VTEP, permanent neighbour,
    /// FDB entry towards the peer's IPv6 underlay address.
    fn install_peer6(&self, node: &Node, peer: &Node) -> Result<(), LabError> {
        let (Some(_), Some(peer_addr6), Some(peer_subnet6)) =
            (&node.pod_subnet6, &peer.address6, &peer.pod_subnet6)
        else {
            return Ok(());
        };
        let ns = self.id.ns(node.name.get_ref());
        let dev6 = self.topo.device6();
        let peer_vtep6 = peer_subnet6.get_ref().network();
        let mac = self
            .state
            .vtep_macs6
            .iter()
            .find(|(n, _)| n == peer.name.get_ref())
            .map(|(_, m)| m.clone())
            .ok_or_else(|| {
                LabError::Internal(format!("no IPv6 VTEP MAC for {}", peer.name.get_ref()))
            })?;
        Cmd::ip(
            &ns,
            &format!("-6 neigh replace {peer_vtep6} lladdr {mac} dev {dev6} nud permanent"),
        )
        .run()?;
        let dst = peer_addr6.get_ref().to_string();
        Cmd::new([
            "bridge", "-n", &ns, "fdb", "append", &mac, "dev", &dev6, "dst", &dst,
        ])
        .run()?;
        Cmd::ip(
            &ns,
            &format!(
                "-6 route add {} via {peer_vtep6} dev {dev6} onlink",
                peer_subnet6.get_ref()
            ),
        )
        .run()?;
        Ok(())
    }

    /// Waits until no lab address is still tentative (DAD is off, so this is a check that
    /// normally passes at once) and fails clearly on a duplicate (`dadfailed`).
    fn settle_ipv6(&self) -> Result<(), LabError> {
        if !self.topo.dual_stack() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for ns in &self.state.namespaces {
            loop {
                self.step()?;
                let failed = Cmd::ip(ns, "-6 -o addr show dadfailed").run()?;
                if !failed.trim().is_empty() {
                    return Err(LabError::Internal(format!(
                        "duplicate IPv6 address in {ns}: {}",
                        failed.trim()
                    )));
                }
                let tentative = Cmd::ip(ns, "-6 -o addr show tentative").run()?;
                if tentative.trim().is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(LabError::Internal(format!(
                        "IPv6 addresses in {ns} still tentative after 5 s: {}",
                        tentative.trim()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// kube-proxy's chains on every node, with endpoints resolved to the pods' CNI addresses.
    fn services(&mut self) -> Result<(), LabError> {
        if self.topo.services.is_empty() {
            return Ok(());
        }
        let mut resolved = Vec::new();
        for svc in &self.topo.services {
            let eps = svc
                .endpoints
                .iter()
                .map(|ep| {
                    self.state
                        .pod(ep.get_ref())
                        .map(|p| Endpoint { ip: p.ip })
                        .ok_or_else(|| {
                            LabError::Internal(format!("endpoint {} has no address", ep.get_ref()))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            resolved.push((svc, eps));
        }
        let (text, restore): (String, &[&str]) = match self.topo.kube_proxy.mode {
            ProxyMode::Iptables => (
                rules::kube_proxy(self.topo, &resolved),
                &["iptables-restore", "--noflush"],
            ),
            ProxyMode::Nftables => (
                nft_proxy::ruleset(self.topo, &resolved),
                &["nft", "-f", "-"],
            ),
        };
        std::fs::write(self.state_dir.join("kube-proxy.rules"), &text)
            .map_err(|e| LabError::io("write kube-proxy rules", e))?;
        for node in &self.topo.nodes {
            self.step()?;
            let ns = self.id.ns(node.name.get_ref());
            Cmd::in_ns(&ns, restore.iter().copied())
                .stdin(text.clone())
                .run()?;
        }
        Ok(())
    }

    /// The edge: firewall namespace between the underlay and the office network.
    fn firewall_and_office(&mut self) -> Result<(), LabError> {
        let Some(fw) = &self.topo.firewall else {
            return Ok(());
        };
        let fw_ns = self.namespace(&fw.name)?;
        let fw6 = fw.underlay_address6.as_ref().map(|a| *a.get_ref());
        self.plug_into_underlay(&fw_ns, "eth0", &fw.name, fw.underlay_address, fw6)?;
        self.sysctl(&fw_ns, "net.ipv4.ip_forward=1")?;
        if fw6.is_some() {
            self.sysctl(&fw_ns, "net.ipv6.conf.all.forwarding=1")?;
            // IPv6 is routed, not NATed: the firewall knows where each node's pods live (the
            // static routes a network team adds for routed pod ranges).
            for node in &self.topo.nodes {
                if let (Some(a6), Some(s6)) = (&node.address6, &node.pod_subnet6) {
                    Cmd::ip(
                        &fw_ns,
                        &format!("-6 route add {} via {}", s6.get_ref(), a6.get_ref()),
                    )
                    .run()?;
                }
            }
            if let Some(cidr6) = &self.topo.overlay.cluster_cidr6 {
                let office6 = fw.office_subnet6.as_ref().map(|n| *n.get_ref());
                Cmd::in_ns(&fw_ns, ["ip6tables-restore", "--noflush"])
                    .stdin(rules::firewall6(*cidr6.get_ref(), office6))
                    .run()?;
            }
        }
        let publish = self
            .topo
            .node(fw.publish_to.get_ref())
            .map(|n| *n.address.get_ref())
            .ok_or_else(|| LabError::Internal("publish_to node vanished".into()))?;
        Cmd::in_ns(&fw_ns, ["iptables-restore", "--noflush"])
            .stdin(rules::firewall(fw, publish))
            .run()?;
        if let Some(office) = &self.topo.office {
            let office_ns = self.namespace(&office.name)?;
            let prefix = fw.office_subnet.prefix_len();
            Cmd::ip(
                &fw_ns,
                &format!("link add eth1 type veth peer name eth0 netns {office_ns}"),
            )
            .run()?;
            Cmd::ip(
                &fw_ns,
                &format!("addr add {}/{prefix} dev eth1", fw.office_address),
            )
            .run()?;
            Cmd::ip(&fw_ns, "link set eth1 up").run()?;
            Cmd::ip(
                &office_ns,
                &format!("addr add {}/{prefix} dev eth0", office.address.get_ref()),
            )
            .run()?;
            Cmd::ip(&office_ns, "link set eth0 up").run()?;
            Cmd::ip(
                &office_ns,
                &format!("route add default via {}", fw.office_address),
            )
            .run()?;
            if let (Some(gw6), Some(net6), Some(a6)) =
                (&fw.office_address6, &fw.office_subnet6, &office.address6)
            {
                let p6 = net6.get_ref().prefix_len();
                Cmd::ip(
                    &fw_ns,
                    &format!("-6 addr add {}/{p6} dev eth1 nodad", gw6.get_ref()),
                )
                .run()?;
                Cmd::ip(
                    &office_ns,
                    &format!("-6 addr add {}/{p6} dev eth0 nodad", a6.get_ref()),
                )
                .run()?;
                Cmd::ip(
                    &office_ns,
                    &format!("-6 route add default via {}", gw6.get_ref()),
                )
                .run()?;
            }
        }
        Ok(())
    }
}

/// A pod sandbox a node's containerd made.
struct Sandbox {
    pod: String,
    uid: String,
    id: String,
    status: SandboxStatus,
}

/// One node's side of `runtimes_and_pods`, on its own thread: wait for its containerd, import
/// the sandbox image, then RunPodSandbox + PodSandboxStatus for each of its pods in order.
fn node_sandboxes(
    id: &LabId,
    node: &Node,
    paths: &Paths,
    runtime: &NodeRuntime,
    archive: &Path,
    deadline: Instant,
    interrupted: &AtomicBool,
) -> Result<Vec<Sandbox>, LabError> {
    let step = || interrupted_check(interrupted);
    let mut cri = Cri::connect(&paths.socket())?;
    containerd::wait_serving(paths, runtime.pid, &mut cri, deadline)?;
    step()?;
    image::import(&paths.socket(), archive)?;
    containerd::wait_image(paths, runtime.pid, &mut cri, deadline)?;
    let mut made = Vec::new();
    for pod in &node.pods {
        step()?;
        let pod = pod.get_ref();
        let uid = new_uid()?;
        let spec = PodSpec {
            name: pod,
            namespace: node.pod_namespace(),
            uid: &uid,
            lab: id.as_str(),
            node: node.name.get_ref(),
            cgroup_parent: &runtime.cgroup_parent,
        };
        let sandbox = cri.run_pod(&spec)?;
        tracing::debug!(pod, sandbox = %sandbox, "pod sandbox running");
        let status = cri.status(&sandbox)?;
        made.push(Sandbox {
            pod: pod.clone(),
            uid,
            id: sandbox,
            status,
        });
    }
    // Idle pods come after the named ones, so host-local still hands the named pods the
    // addresses the topology plans. Teardown finds them by the lab's label like the others.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    for k in 1..=node.idle_pods {
        step()?;
        if terminal && k % 20 == 0 {
            eprintln!(
                "dye: {}: {k} of {} idle pods…",
                node.name.get_ref(),
                node.idle_pods
            );
        }
        let name = format!("idle-{}-{k}", node.name.get_ref());
        let uid = new_uid()?;
        let spec = PodSpec {
            name: &name,
            namespace: node.pod_namespace(),
            uid: &uid,
            lab: id.as_str(),
            node: node.name.get_ref(),
            cgroup_parent: &runtime.cgroup_parent,
        };
        cri.run_pod(&spec)?;
    }
    if node.idle_pods > 0 {
        tracing::info!(node = %node.name.get_ref(), idle = node.idle_pods, "idle pods running");
    }
    Ok(made)
}

/// `Interrupted` once SIGINT/SIGTERM has set `interrupted`: checked between build steps.
fn interrupted_check(interrupted: &AtomicBool) -> Result<(), LabError> {
    if interrupted.load(Ordering::Relaxed) {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

/// A random pod UID in the UUID form Kubernetes uses.
fn new_uid() -> Result<String, LabError> {
    let mut b = [0u8; 16];
    dye_capture::random::fill(&mut b).map_err(|e| LabError::Internal(format!("pod uid: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// The node-side end of a pod's eth0: the node interface whose index is eth0's peer index.
fn host_veth(pod_ns: &str, node_ns: &str) -> Result<String, LabError> {
    let parse = |what: &str, out: &str| -> Result<serde_json::Value, LabError> {
        serde_json::from_str(out).map_err(|e| LabError::Parse {
            what: what.to_string(),
            detail: e.to_string(),
        })
    };
    let what = format!("ip -j link show eth0 in {pod_ns}");
    let eth0 = parse(
        &what,
        &Cmd::new(["ip", "-n", pod_ns, "-j", "link", "show", "dev", "eth0"]).run()?,
    )?;
    let peer = eth0[0]["link_index"]
        .as_u64()
        .ok_or_else(|| LabError::Parse {
            what: what.clone(),
            detail: "no link_index (eth0 is not a veth?)".into(),
        })?;
    let what = format!("ip -j link show in {node_ns}");
    let links = parse(
        &what,
        &Cmd::new(["ip", "-n", node_ns, "-j", "link", "show"]).run()?,
    )?;
    links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["ifindex"].as_u64() == Some(peer))
        .and_then(|l| l["ifname"].as_str())
        .map(String::from)
        .ok_or_else(|| LabError::Parse {
            what,
            detail: format!("no interface with index {peer} (the peer of {pod_ns}'s eth0)"),
        })
}

/// The MAC address of a device, from `ip -j link show`.
fn vtep_mac(ns: &str, dev: &str) -> Result<String, LabError> {
    let out = Cmd::new(["ip", "-n", ns, "-j", "link", "show", "dev", dev]).run()?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| LabError::Parse {
        what: format!("ip -j link show {dev} in {ns}"),
        detail: e.to_string(),
    })?;
    v.get(0)
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .map(String::from)
        .ok_or_else(|| LabError::Parse {
            what: format!("ip -j link show {dev} in {ns}"),
            detail: "no address".into(),
        })
}
