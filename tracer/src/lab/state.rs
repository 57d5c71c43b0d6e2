//! What a running lab consists of, persisted as `state.json` in its state directory so that
//! `status`, `fault` and `down` work from any later process (and tests can read pod addresses).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::agents::AgentState;
use super::cmd::Cmd;
use super::faults::FaultRecord;
use super::names::{LabId, STATE_ROOT};
use super::LabError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub id: String,
    /// Where the topology came from: a path, or "builtin".
    pub topology_source: String,
    /// Every namespace created, in creation order (also the ones of a half-built lab).
    pub namespaces: Vec<String>,
    pub pods: Vec<PodState>,
    /// Each node's container runtime, recorded as soon as it is started.
    #[serde(default)]
    pub runtimes: Vec<NodeRuntime>,
    /// PIDs of the pod responders (they also die with their namespaces' processes on `down`).
    pub responders: Vec<u32>,
    /// PIDs of the nodes' udp-backend forwarders (`[overlay] backend = "udp"`).
    #[serde(default)]
    pub forwarders: Vec<u32>,
    /// Every node's `dye agent` (`dye lab up --agents`).
    #[serde(default)]
    pub agents: Vec<AgentState>,
    /// The certificates the agents and coordinators use (`dye lab up --agents`).
    #[serde(default)]
    pub certs: Option<PathBuf>,
    /// MAC address of each node's VXLAN device (as flanneld would publish it).
    pub vtep_macs: Vec<(String, String)>,
    /// MAC address of each node's IPv6 VXLAN device (dual-stack labs).
    #[serde(default)]
    pub vtep_macs6: Vec<(String, String)>,
    pub faults: Vec<FaultRecord>,
    /// False while `up` is still building.
    pub complete: bool,
    /// Every node is its own host (`dye lab up --isolated`).
    #[serde(default)]
    pub isolated: bool,
    /// The admin host of an isolated lab on a switched underlay.
    #[serde(default)]
    pub admin: Option<AdminHost>,
}

/// A host on the underlay that is no node: where a coordinator runs (`dye lab exec admin`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminHost {
    pub address: Ipv4Addr,
    /// Its launcher (`unshare --kill-child`): killing it ends the host.
    pub pid: u32,
    /// Its PID 1, as the host numbers it.
    pub init_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The pod's IPv6 address (dual-stack labs).
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// The node-side veth the CNI bridge plugin created (attached to cni0).
    pub host_veth: String,
    /// The pod's Kubernetes namespace (CRI metadata).
    pub pod_namespace: String,
    /// The pod's UID (CRI metadata).
    pub uid: String,
    /// The CRI pod sandbox id containerd gave the pod.
    pub sandbox_id: String,
    /// The CRI socket of the pod's node (where the sandbox can be asked about).
    pub cri_socket: PathBuf,
    /// The sandbox ("pause") process, whose network namespace is published as `netns`.
    pub sandbox_pid: u32,
}

/// A node's containerd: where to reach it over CRI and what it runs under.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRuntime {
    pub node: String,
    /// The containerd gRPC socket (CRI v1).
    pub cri_socket: PathBuf,
    /// containerd's PID when it was started.
    pub pid: u32,
    /// The cgroup parent of the node's pod sandboxes (in every cgroup hierarchy).
    pub cgroup_parent: String,
    /// An isolated node's PID 1 (`dye lab node-init`), as the host numbers it: the way into
    /// the node's namespaces.
    #[serde(default)]
    pub init_pid: Option<u32>,
}

impl LabState {
    /// Node `node`'s container runtime, as recorded.
    pub fn runtime(&self, node: &str) -> Option<&NodeRuntime> {
        self.runtimes.iter().find(|r| r.node == node)
    }

    pub fn new(id: &LabId, topology_source: String) -> LabState {
        LabState {
            id: id.as_str().to_string(),
            topology_source,
            namespaces: Vec::new(),
            pods: Vec::new(),
            runtimes: Vec::new(),
            responders: Vec::new(),
            forwarders: Vec::new(),
            agents: Vec::new(),
            certs: None,
            vtep_macs: Vec::new(),
            vtep_macs6: Vec::new(),
            faults: Vec::new(),
            complete: false,
            isolated: false,
            admin: None,
        }
    }

    pub fn pod(&self, name: &str) -> Option<&PodState> {
        self.pods.iter().find(|p| p.name == name)
    }

    pub fn save(&self, dir: &Path) -> Result<(), LabError> {
        let path = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| LabError::Internal(format!("serialize state: {e}")))?;
        std::fs::write(&tmp, text)
            .map_err(|e| LabError::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| LabError::io(format!("write {}", path.display()), e))
    }
}

/// Reads the state of lab `id`.
pub fn load_state(id: &LabId) -> Result<LabState, LabError> {
    let path = id.state_dir().join("state.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LabError::UnknownLab(id.to_string()))
        }
        Err(e) => return Err(LabError::io(format!("read {}", path.display()), e)),
    };
    serde_json::from_str(&text).map_err(|e| LabError::Parse {
        what: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// One lab found on this host, from its state directory and/or its namespaces.
#[derive(Debug, Clone, Serialize)]
pub struct LabSummary {
    pub id: String,
    pub namespaces: Vec<String>,
    pub has_state: bool,
    pub complete: bool,
}

/// Every lab on this host: state directories under /run/dye plus namespaces named
/// `dye-<id>-…` (which also finds the remains of a lab whose state was lost).
pub fn list_labs() -> Result<Vec<LabSummary>, LabError> {
    let mut ids = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(STATE_ROOT) {
        for e in entries.flatten() {
            if let Some(id) = e.file_name().to_str().and_then(|n| n.strip_prefix("lab-")) {
                ids.insert(id.to_string());
            }
        }
    }
    let all_ns = lab_namespaces_on_host()?;
    for ns in &all_ns {
        if let Some(id) = ns.strip_prefix("dye-").and_then(|r| r.split('-').next()) {
            if LabId::parse(id).is_ok() {
                ids.insert(id.to_string());
            }
        }
    }
    let mut labs = Vec::new();
    for id in ids {
        let Ok(lab) = LabId::parse(&id) else { continue };
        let prefix = lab.ns_prefix();
        let state = load_state(&lab).ok();
        labs.push(LabSummary {
            namespaces: all_ns
                .iter()
                .filter(|n| n.starts_with(&prefix))
                .cloned()
                .collect(),
            has_state: state.is_some(),
            complete: state.map(|s| s.complete).unwrap_or(false),
            id,
        });
    }
    Ok(labs)
}

/// Named namespaces that look like lab namespaces (`dye-…`).
pub fn lab_namespaces_on_host() -> Result<Vec<String>, LabError> {
    let out = Cmd::new(["ip", "netns", "list"]).run()?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("dye-"))
        .map(String::from)
        .collect())
}
