//! `dye lab up --agents`: one `dye agent` per node, listening on its underlay address — the
//! lab's stand-in for the DaemonSet. The certificates are made once (`dye certs` code) in the
//! lab's state directory, so a coordinator inside the lab
//! (`dye lab exec node-1 -- dye trace --agents … --certs <state>/certs`) uses the same CA.
//!
//! Two ways to run it:
//! - on a flat lab, a tracked lab process in the node's network namespace (`ip netns exec`),
//!   stopped by `down`, exiting by itself once the state directory is gone
//!   (`--exit-when-gone`), so nothing outlives a lab whose other processes were SIGKILLed;
//! - on an isolated lab (`--isolated`), what the DaemonSet runs: a container from dye's own
//!   image (`dye image build`, imported into each node's containerd), made over the node's CRI
//!   with the DaemonSet's host network and PID namespaces, capabilities, read-only root and
//!   mounts. It dies with its node.
//!
//! `restart` replaces one node's agent (the lab faults `agent-stop` and `agent-clock`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};
use serde::{Deserialize, Serialize};

use super::cmd::spawn_daemon;
use super::cri::LAB_LABEL;
use super::names::LabId;
use super::state::{load_state, LabState, NodeRuntime};
use super::topology::Topology;
use super::LabError;

/// The port every lab agent listens on (its node's underlay address).
pub const AGENT_PORT: u16 = 7443;
/// The capabilities deploy/daemonset.yaml adds to the agent (after dropping ALL); a test
/// checks the two agree, so the lab exercises the manifest's security settings.
pub const AGENT_CAPABILITIES: [&str; 6] = [
    "NET_ADMIN",
    "NET_RAW",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "BPF",
    "PERFMON",
];
/// Where the DaemonSet mounts the agent's certificates.
pub const CONTAINER_CERTS: &str = "/etc/dye/certs";
/// How long an agent may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// What the agent prints once it listens (see `cli::agent`).
const LISTENING: &str = ": listening on ";
/// The clock knob the agent reads (a lab and test knob: see `agent::skew`).
const CLOCK_OFFSET_ENV: &str = crate::agent::skew::ENV;

/// One node's running agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentState {
    pub node: String,
    pub address: SocketAddr,
    /// The agent's PID as the host numbers it (0 when it could not be found).
    pub pid: u32,
    /// Its log: the lab's log file, or the container's CRI log.
    #[serde(default)]
    pub log: PathBuf,
    /// `DYE_AGENT_CLOCK_OFFSET` it runs with, if any.
    #[serde(default)]
    pub clock_offset: Option<String>,
    /// The container it runs in, on an isolated lab.
    #[serde(default)]
    pub container: Option<AgentContainer>,
}

/// An agent run as a container through its node's CRI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentContainer {
    pub sandbox: String,
    pub container: String,
    /// Containers made in this sandbox so far (CRI `attempt`).
    pub attempt: u32,
}

/// The lab's certificate directory (CA, agent and client certificates).
pub fn certs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("certs")
}

/// Makes the certificates, starts every node's agent and waits until each listens. Checks
/// `interrupted` between steps.
pub fn install(
    id: &LabId,
    topo: &Topology,
    state: &mut LabState,
    state_dir: &Path,
    interrupted: &dyn Fn() -> Result<(), LabError>,
) -> Result<(), LabError> {
    let certs = certs_dir(state_dir);
    crate::agent::certs::create(&certs)
        .map_err(|e| LabError::Internal(format!("lab certificates: {e}")))?;
    state.certs = Some(certs.clone());
    if state.isolated {
        import_image(state, state_dir, interrupted)?;
    }
    for node in &topo.nodes {
        interrupted()?;
        let name = node.name.get_ref();
        let address = SocketAddr::new(IpAddr::V4(*node.address.get_ref()), AGENT_PORT);
        let agent = start(id, state, state_dir, name, address, None, 0)?;
        state.agents.push(agent);
        state.save(state_dir)?;
    }
    let deadline = Instant::now() + START_TIMEOUT;
    for agent in &state.agents {
        wait_listening(agent, deadline, interrupted)?;
    }
    if state.isolated {
        let pids: Vec<u32> = state
            .agents
            .iter()
            .map(|a| container_pid(state, a).unwrap_or(0))
            .collect();
        for (agent, pid) in state.agents.iter_mut().zip(pids) {
            agent.pid = pid;
        }
        state.save(state_dir)?;
    }
    Ok(())
}

/// Replaces `node`'s agent: stops it, then unless `stop_only`, starts a new one (with
/// `clock_offset` in its environment when given) and waits until it listens.
pub fn restart(
    id: &LabId,
    node: &str,
    stop_only: bool,
    clock_offset: Option<String>,
) -> Result<(), LabError> {
    let state_dir = id.state_dir();
    let mut state = load_state(id)?;
    let Some(index) = state.agents.iter().position(|a| a.node == node) else {
        return Err(LabError::BadFault {
            lab: id.to_string(),
            detail: format!("node {node:?} runs no agent (start the lab with --agents)"),
        });
    };
    let old = state.agents[index].clone();
    stop(&state, &old)?;
    if stop_only {
        state.agents[index].pid = 0;
        return state.save(&state_dir);
    }
    let attempt = old.container.as_ref().map_or(0, |c| c.attempt + 1);
    let mut agent = start(
        id,
        &state,
        &state_dir,
        node,
        old.address,
        clock_offset,
        attempt,
    )?;
    wait_listening(&agent, Instant::now() + START_TIMEOUT, &|| Ok(()))?;
    if agent.container.is_some() {
        agent.pid = container_pid(&state, &agent).unwrap_or(0);
    }
    state.agents[index] = agent;
    state.save(&state_dir)
}

/// Stops one agent: its container over CRI, or its process.
fn stop(state: &LabState, agent: &AgentState) -> Result<(), LabError> {
    match &agent.container {
        Some(c) => {
            let mut cri = crate::cri::Cri::connect(&runtime_of(state, &agent.node)?.cri_socket)?;
            // Already gone is fine: the fault wants it stopped.
            if let Err(e) = cri.stop_and_remove_container(&c.container, 2) {
                tracing::debug!("agent container {} of {}: {e}", c.container, agent.node);
            }
        }
        None if agent.pid > 0 => {
            if let Ok(pid) = i32::try_from(agent.pid) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(3);
                while std::fs::metadata(format!("/proc/{}", agent.pid)).is_ok()
                    && Instant::now() < deadline
                {
                    // Not our child (`up` or an earlier fault started it): init reaps it.
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        None => {}
    }
    Ok(())
}

/// Starts `node`'s agent the lab's way (process or container).
fn start(
    id: &LabId,
    state: &LabState,
    state_dir: &Path,
    node: &str,
    address: SocketAddr,
    clock_offset: Option<String>,
    attempt: u32,
) -> Result<AgentState, LabError> {
    let certs = certs_dir(state_dir);
    if !state.isolated {
        let log = state_dir.join(format!("agent-{node}.log"));
        let pid = spawn(
            id,
            node,
            address,
            &certs,
            state_dir,
            &log,
            clock_offset.as_deref(),
        )?;
        return Ok(AgentState {
            node: node.to_string(),
            address,
            pid,
            log,
            clock_offset,
            container: None,
        });
    }
    let runtime = runtime_of(state, node)?;
    let socket = runtime.cri_socket.clone();
    let logs = state_dir.join("agents").join(node);
    std::fs::create_dir_all(&logs)
        .map_err(|e| LabError::io(format!("create {}", logs.display()), e))?;
    let spec = ContainerSpec {
        lab: id.as_str(),
        node,
        address,
        certs: &certs,
        cri_socket: &socket,
        cgroup_parent: &runtime.cgroup_parent,
        logs: &logs,
        clock_offset: clock_offset.as_deref(),
        attempt,
    };
    let mut cri = crate::cri::Cri::connect(&socket)?;
    let sandbox_config = spec.sandbox_config();
    // One sandbox per node for the lab's life; a restart makes a new container in it, as the
    // kubelet does.
    let sandbox = match state
        .agents
        .iter()
        .find(|a| a.node == node)
        .and_then(|a| a.container.as_ref())
    {
        Some(c) => c.sandbox.clone(),
        None => cri.run_pod_sandbox(sandbox_config.clone())?,
    };
    let container = cri.run_container(&sandbox, spec.container_config(), sandbox_config)?;
    Ok(AgentState {
        node: node.to_string(),
        address,
        pid: 0,
        log: logs.join(spec.log_name()),
        clock_offset,
        container: Some(AgentContainer {
            sandbox,
            container,
            attempt,
        }),
    })
}

fn runtime_of<'s>(state: &'s LabState, node: &str) -> Result<&'s NodeRuntime, LabError> {
    state
        .runtime(node)
        .ok_or_else(|| LabError::Internal(format!("no runtime recorded for {node}")))
}

/// The host PID of an agent container's process (by its cgroup).
fn container_pid(state: &LabState, agent: &AgentState) -> Option<u32> {
    let c = agent.container.as_ref()?;
    let runtime = state.runtime(&agent.node)?;
    super::node_host::host_pid_in_cgroup(&runtime.cgroup_parent, &c.container)
}

/// Builds dye's image from this binary and imports it into every node's containerd (in
/// parallel); the archive is removed afterwards.
fn import_image(
    state: &LabState,
    state_dir: &Path,
    interrupted: &dyn Fn() -> Result<(), LabError>,
) -> Result<(), LabError> {
    let exe = std::env::current_exe().map_err(|e| LabError::io("locate the dye binary", e))?;
    let archive = state_dir.join("dye-image.tar");
    let bytes =
        crate::image::build(&exe).map_err(|e| LabError::Internal(format!("dye's image: {e}")))?;
    std::fs::write(&archive, bytes)
        .map_err(|e| LabError::io(format!("write {}", archive.display()), e))?;
    interrupted()?;
    let results: Vec<Result<(), LabError>> = std::thread::scope(|s| {
        let handles: Vec<_> = state
            .runtimes
            .iter()
            .map(|r| {
                let archive = &archive;
                s.spawn(move || super::image::import(&r.cri_socket, archive))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(LabError::Internal("an import thread panicked".into())))
            })
            .collect()
    });
    let _ = std::fs::remove_file(&archive);
    results.into_iter().collect()
}

/// Waits for the agent's log to say it listens.
fn wait_listening(
    agent: &AgentState,
    deadline: Instant,
    interrupted: &dyn Fn() -> Result<(), LabError>,
) -> Result<(), LabError> {
    while !std::fs::read_to_string(&agent.log).is_ok_and(|l| l.contains(LISTENING)) {
        interrupted()?;
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(&agent.log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(3).collect();
            return Err(LabError::Internal(format!(
                "the agent of {} did not listen on {} within {} s (log {}: {})",
                agent.node,
                agent.address,
                START_TIMEOUT.as_secs(),
                agent.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `ip netns exec <node> dye agent …`, a lab daemon ([`spawn_daemon`]) logging to `log_path`.
fn spawn(
    id: &LabId,
    node: &str,
    address: SocketAddr,
    certs: &Path,
    state_dir: &Path,
    log_path: &Path,
    clock_offset: Option<&str>,
) -> Result<u32, LabError> {
    let exe = std::env::current_exe().map_err(|e| LabError::io("locate the dye binary", e))?;
    let ns = id.ns(node);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.as_str()])
        .arg(exe)
        .args(["agent", "--listen", &address.to_string()])
        .arg("--certs")
        .arg(certs)
        .arg("--exit-when-gone")
        .arg(state_dir)
        .env("RUST_LOG", "info")
        .env_remove(CLOCK_OFFSET_ENV);
    if let Some(offset) = clock_offset {
        cmd.env(CLOCK_OFFSET_ENV, offset);
    }
    spawn_daemon(&mut cmd, log_path, &format!("dye agent in {ns}"))
}

/// What deploy/daemonset.yaml asks of the runtime, for one lab node.
struct ContainerSpec<'a> {
    lab: &'a str,
    node: &'a str,
    address: SocketAddr,
    certs: &'a Path,
    cri_socket: &'a Path,
    cgroup_parent: &'a str,
    logs: &'a Path,
    clock_offset: Option<&'a str>,
    attempt: u32,
}

impl ContainerSpec<'_> {
    /// hostNetwork and hostPID: the node's network and PID namespaces.
    fn namespaces() -> NamespaceOption {
        NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Node as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        }
    }

    fn log_name(&self) -> String {
        format!("agent-{}.log", self.attempt)
    }

    fn sandbox_config(&self) -> PodSandboxConfig {
        let name = format!("dye-{}", self.node);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: format!("{}-{name}", self.lab),
                namespace: "dye".into(),
                attempt: 0,
            }),
            log_directory: self.logs.display().to_string(),
            labels: crate::cri::labels(&[
                (LAB_LABEL, self.lab),
                ("dye.lab/node", self.node),
                ("io.kubernetes.pod.name", &name),
                ("io.kubernetes.pod.namespace", "dye"),
                ("app.kubernetes.io/name", "dye"),
                ("app.kubernetes.io/component", "agent"),
            ]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(Self::namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container_config(&self) -> ContainerConfig {
        let mount = |container: &str, host: &Path, readonly: bool| Mount {
            container_path: container.into(),
            host_path: host.display().to_string(),
            readonly,
            ..Default::default()
        };
        let mut envs = vec![
            KeyValue {
                key: "CONTAINER_RUNTIME_ENDPOINT".into(),
                value: "unix:///run/containerd/containerd.sock".into(),
            },
            KeyValue {
                key: "RUST_LOG".into(),
                value: "info".into(),
            },
        ];
        if let Some(offset) = self.clock_offset {
            envs.push(KeyValue {
                key: CLOCK_OFFSET_ENV.into(),
                value: offset.into(),
            });
        }
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "agent".into(),
                attempt: self.attempt,
            }),
            image: Some(ImageSpec {
                image: crate::image::reference(),
                ..Default::default()
            }),
            // The image's entrypoint is `dye agent`: these are the DaemonSet's args.
            args: vec![
                "--listen".into(),
                self.address.to_string(),
                "--certs".into(),
                CONTAINER_CERTS.into(),
                "--node-name".into(),
                self.node.into(),
            ],
            envs,
            log_path: self.log_name(),
            mounts: vec![
                mount("/run/containerd/containerd.sock", self.cri_socket, false),
                Mount {
                    propagation: MountPropagation::PropagationHostToContainer as i32,
                    ..mount("/run/netns", Path::new("/run/netns"), true)
                },
                mount("/sys/kernel/btf", Path::new("/sys/kernel/btf"), true),
                mount(CONTAINER_CERTS, self.certs, true),
            ],
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(Capability {
                        add_capabilities: AGENT_CAPABILITIES
                            .iter()
                            .map(|c| c.to_string())
                            .collect(),
                        drop_capabilities: vec!["ALL".into()],
                        ..Default::default()
                    }),
                    privileged: false,
                    namespace_options: Some(Self::namespaces()),
                    readonly_rootfs: true,
                    // allowPrivilegeEscalation: false
                    no_new_privs: true,
                    run_as_user: Some(Int64Value { value: 0 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
