//! `down`: removes everything a lab created — its processes, CNI attachments, namespaces (and
//! with them every link, route and rule inside) and its state directory. Works on a complete
//! lab, a half-built one, and one whose state file is gone (namespaces are found by name).

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cmd::Cmd;
use super::cni::{self, Sandbox};
use super::names::{LabId, STATE_ROOT};
use super::state::{lab_namespaces_on_host, load_state};
use super::topology::Topology;
use super::LabError;

/// What `down` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub namespaces: Vec<String>,
    pub processes: usize,
    pub state_dir: bool,
}

/// Tears lab `id` down. An unknown id removes nothing and is not an error.
pub fn down(id: &LabId) -> Result<Removed, LabError> {
    let mut removed = Removed::default();
    let state = load_state(id).ok();
    let prefix = id.ns_prefix();
    let mut namespaces: Vec<String> = lab_namespaces_on_host()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if let Some(state) = &state {
        for ns in &state.namespaces {
            if !namespaces.contains(ns) && Cmd::ip(ns, "link show lo").succeeds() {
                namespaces.push(ns.clone());
            }
        }
    }

    // Processes first: a namespace with a live process outlives `ip netns del`.
    for ns in &namespaces {
        removed.processes += stop_processes_in(ns);
    }
    if let Some(state) = &state {
        for pid in &state.responders {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        release_pods(id, state);
    }

    let mut failures = Vec::new();
    for ns in &namespaces {
        match Cmd::new(["ip", "netns", "del", ns.as_str()]).run() {
            Ok(_) => removed.namespaces.push(ns.clone()),
            Err(e) => failures.push(e.to_string()),
        }
    }

    let dir = id.state_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| LabError::io(format!("remove {}", dir.display()), e))?;
        removed.state_dir = true;
    }
    // The parent goes too once the last lab is gone: leave no trace on the host.
    let _ = std::fs::remove_dir(STATE_ROOT);

    let left: Vec<String> = lab_namespaces_on_host()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if !left.is_empty() || !failures.is_empty() {
        return Err(LabError::Internal(format!(
            "lab {id}: could not remove {}: {}",
            left.join(", "),
            failures.join("; ")
        )));
    }
    Ok(removed)
}

/// SIGTERM, then SIGKILL after a grace period, to every process in `ns`.
fn stop_processes_in(ns: &str) -> usize {
    let pids = |ns: &str| -> Vec<i32> {
        Cmd::new(["ip", "netns", "pids", ns])
            .run()
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let found = pids(ns);
    for pid in &found {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    while !pids(ns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids(ns) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    found.len()
}

/// CNI DEL for every attached pod, as the runtime does when a sandbox goes away. Best effort:
/// deleting the namespaces removes the veths regardless.
fn release_pods(id: &LabId, state: &super::state::LabState) {
    let topo_path = id.state_dir().join("topology.toml");
    let Ok(topo) = Topology::load(&topo_path) else {
        return;
    };
    for pod in &state.pods {
        let Some(node) = topo.node(&pod.node) else {
            continue;
        };
        let node_ns = id.ns(&pod.node);
        let list = cni::network_list(&topo, node, &id.state_dir().join("cni").join(&pod.node));
        let sandbox = Sandbox {
            node_ns: &node_ns,
            pod_ns: &pod.netns,
            pod_name: &pod.name,
        };
        if let Err(e) = sandbox.del(&list, &pod.cni_result) {
            tracing::debug!("CNI DEL for {}: {e}", pod.name);
        }
    }
}
