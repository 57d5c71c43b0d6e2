//! `dye lab up --agents`: one `dye agent` per node, inside the node's namespace, listening on
//! its underlay address — the lab's stand-in for the DaemonSet. The certificates are made once
//! (`dye certs` code) in the lab's state directory, so a coordinator inside the lab
//! (`dye lab exec node-1 -- dye trace --agents … --certs <state>/certs`) uses the same CA.
//!
//! Each agent is a tracked lab process like the forwarders: recorded in the state as soon as it
//! runs, stopped by `down` (by PID and with every process of its node's namespace), and it
//! exits by itself once the state directory is gone (`--exit-when-gone`), so nothing outlives
//! a lab whose other processes were SIGKILLed.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::names::LabId;
use super::state::LabState;
use super::topology::Topology;
use super::LabError;

/// The port every lab agent listens on (its node's underlay address).
pub const AGENT_PORT: u16 = 7443;
/// How long an agent may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// What the agent prints once it listens (see `cli::agent`).
const LISTENING: &str = ": listening on ";

/// One node's running agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentState {
    pub node: String,
    pub address: SocketAddr,
    pub pid: u32,
}

/// The lab's certificate directory (CA, agent and client certificates).
pub fn certs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("certs")
}

fn log_file(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join(format!("agent-{node}.log"))
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
    for node in &topo.nodes {
        interrupted()?;
        let name = node.name.get_ref();
        let address = SocketAddr::new(IpAddr::V4(*node.address.get_ref()), AGENT_PORT);
        let pid = spawn(id, name, address, &certs, state_dir)?;
        state.agents.push(AgentState {
            node: name.clone(),
            address,
            pid,
        });
        state.save(state_dir)?;
    }
    let deadline = Instant::now() + START_TIMEOUT;
    for agent in &state.agents {
        let log = log_file(state_dir, &agent.node);
        while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains(LISTENING)) {
            interrupted()?;
            if Instant::now() > deadline {
                return Err(LabError::Internal(format!(
                    "the agent of {} did not listen on {} within {} s (log: {})",
                    agent.node,
                    agent.address,
                    START_TIMEOUT.as_secs(),
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// `ip netns exec <node> dye agent …` in its own process group (a Ctrl-C aimed at
/// `dye lab up` must not stop the agents of a lab that stays up), output to a log file.
fn spawn(
    id: &LabId,
    node: &str,
    address: SocketAddr,
    certs: &Path,
    state_dir: &Path,
) -> Result<u32, LabError> {
    let exe = std::env::current_exe().map_err(|e| LabError::io("locate the dye binary", e))?;
    let log_path = log_file(state_dir, node);
    let log = std::fs::File::create(&log_path)
        .map_err(|e| LabError::io(format!("create {}", log_path.display()), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| LabError::io(format!("open {}", log_path.display()), e))?;
    let ns = id.ns(node);
    let child = Command::new("ip")
        .args(["netns", "exec", ns.as_str()])
        .arg(exe)
        .args(["agent", "--listen", &address.to_string()])
        .arg("--certs")
        .arg(certs)
        .arg("--exit-when-gone")
        .arg(state_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| LabError::Spawn {
            command: format!("dye agent in {ns}"),
            source: e,
        })?;
    Ok(child.id())
}
