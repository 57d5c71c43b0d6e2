//! `down`: removes everything a lab created — its pod sandboxes (over CRI, which also runs
//! CNI DEL), the nodes' containerd daemons with any shim, sandbox process and cgroup they
//! leave, its other processes, namespaces (and with them every link, route and rule inside) and
//! its state directory. Works on a complete lab, a half-built one, and one whose state file is
//! gone (namespaces, runtimes and cgroups are found by name).

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cmd::Cmd;
use super::containerd::{self, Paths};
use super::cri::Cri;
use super::names::{LabId, STATE_ROOT};
use super::state::{lab_namespaces_on_host, load_state, LabState};
use super::LabError;

/// What `down` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub namespaces: Vec<String>,
    /// Pod sandboxes stopped and removed over CRI.
    pub sandboxes: usize,
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

    // Pods and their runtimes first, then every other process: a namespace with a live
    // process outlives `ip netns del`.
    let (sandboxes, processes) = stop_runtimes(id, state.as_ref());
    removed.sandboxes += sandboxes;
    removed.processes += processes;
    for ns in &namespaces {
        removed.processes += stop_processes_in(ns);
    }
    if let Some(state) = &state {
        let agents = state.agents.iter().map(|a| &a.pid);
        for pid in state
            .responders
            .iter()
            .chain(&state.forwarders)
            .chain(agents)
            // 0 is "not running": kill(0) would signal our own process group.
            .filter(|pid| **pid > 0)
        {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
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

/// For every node runtime of the lab (from the state, and from the runtime directories in case
/// the state lost one), side by side: StopPodSandbox + RemovePodSandbox for each of the lab's
/// sandboxes while containerd still serves, then containerd itself, leftover shims and sandbox
/// processes, and the node's cgroups. Finally any cgroup named after the lab, wherever it is.
/// Returns how many sandboxes were removed over CRI and how many processes were stopped.
fn stop_runtimes(id: &LabId, state: Option<&LabState>) -> (usize, usize) {
    let mut nodes: Vec<String> = state
        .map(|s| s.runtimes.iter().map(|r| r.node.clone()).collect())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(id.state_dir().join("containerd")) {
        for e in entries.flatten() {
            if let Some(n) = e.file_name().to_str() {
                if !nodes.iter().any(|x| x == n) {
                    nodes.push(n.to_string());
                }
            }
        }
    }
    let (sandboxes, processes) = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| s.spawn(move || stop_runtime(id, node)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0)))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    });
    let leftovers = containerd::kill_processes_naming(&id.state_dir())
        + containerd::remove_lab_cgroups(&id.ns_prefix());
    (sandboxes, processes + leftovers)
}

fn stop_runtime(id: &LabId, node: &str) -> (usize, usize) {
    let mut removed = 0;
    let paths = Paths::new(&id.state_dir(), node);
    if paths.socket().exists() {
        let serving = Cri::connect(&paths.socket())
            .ok()
            .and_then(|mut cri| cri.version().is_ok().then_some(cri));
        match serving {
            Some(mut cri) => match cri.lab_sandboxes(id.as_str()) {
                Ok(sandboxes) => {
                    for (sb, outcome) in cri.stop_and_remove_all(&sandboxes) {
                        match outcome {
                            Ok(()) => removed += 1,
                            Err(e) => {
                                tracing::warn!("lab {id}: removing pod sandbox {sb} on {node}: {e}")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("lab {id}: listing pod sandboxes on {node}: {e}"),
            },
            None => tracing::debug!("lab {id}: containerd of {node} does not answer"),
        }
    }
    (removed, containerd::stop(&paths, &id.cgroup(node)))
}
