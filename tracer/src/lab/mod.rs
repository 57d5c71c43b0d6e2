//! The emulated cluster: a two-node Kubernetes network built from real kernel parts inside
//! network namespaces the lab creates — CNI `bridge` + `host-local` pod networking, a
//! flannel-style VXLAN overlay, kube-proxy iptables chains, an edge firewall doing NAT — so dye
//! and its tests can run the real data path. Nothing is ever added to the root namespace.
//!
//! Pods are real CRI pod sandboxes: every node runs its own containerd (`containerd`), the lab
//! asks it for pods over CRI as the kubelet does (`cri`), with a locally built sandbox image
//! (`image`), and publishes each sandbox's network namespace under the lab's name for the pod.
//!
//! One module per concern: the topology file (`topology`), naming (`names`), running tools
//! (`cmd`), the nodes' CNI network configuration (`cni`), the container runtime
//! (`containerd`, `cri`, `image`), iptables rule sets (`rules`), building (`build`), faults
//! (`faults`), teardown (`teardown`), persisted state (`state`), pod responders (`responder`).
//! Other shapes, chosen by optional topology keys (`shape`): a routed underlay (`router`),
//! Calico-style bridge-less pods (`routed_pods`), kube-proxy's nftables mode (`nft_proxy`), flannel's udp backend (`udp_backend` builds it,
//! `udp_forwarder` is its per-node process); `agents` starts a `dye agent` on every node; `node_host` makes
//! each node a host of its own (`--isolated`: mount, PID and UTS namespaces).

pub mod agents;
mod build;
mod cmd;
mod cni;
mod containerd;
mod cri;
pub mod faults;
mod image;
mod inspect;
mod names;
mod nft_proxy;
pub mod node_host;
pub mod responder;
mod routed_pods;
mod router;
mod rules;
pub mod shape;
mod state;
mod teardown;
pub mod topology;
mod udp_backend;
pub mod udp_forwarder;

use std::path::PathBuf;

pub use build::{up, UpOptions};
pub use faults::{apply_fault, clear_faults, Fault};
pub use inspect::{inspect, Interface, LabView, Member, PodIdentity};
pub use names::{LabId, ADMIN, STATE_ROOT};
pub use state::{list_labs, load_state, LabState, LabSummary, NodeRuntime, PodState};
pub use teardown::{down, Removed};
pub use topology::Topology;

/// Everything that can go wrong while building, changing or removing a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("invalid lab id {0:?}: use 1-12 characters of a-z and 0-9")]
    InvalidId(String),
    #[error(
        "lab {0:?} already exists (state in {1}); pick another --id or run `dye lab down {0}`"
    )]
    IdInUse(String, PathBuf),
    #[error("lab {0:?} does not exist (see `dye lab status`)")]
    UnknownLab(String),
    #[error("topology {path}: {message}")]
    Topology { path: String, message: String },
    #[error("{tool} not found: install the Debian package {package} (scripts/setup.sh does)")]
    MissingTool { tool: String, package: &'static str },
    #[error("the lab must run as root (it creates network namespaces); try sudo")]
    NotRoot,
    #[error("`{command}` failed with exit status {status}: {stderr}")]
    Command {
        command: String,
        status: i32,
        stderr: String,
    },
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("unexpected output from {what}: {detail}")]
    Parse { what: String, detail: String },
    #[error("CRI {call} on {socket}: {message}")]
    Cri {
        call: String,
        socket: String,
        message: String,
    },
    #[error("container runtime: {detail}")]
    Runtime { detail: String },
    #[error("lab {lab}: {detail}")]
    BadFault { lab: String, detail: String },
    #[error("interrupted; everything built so far was removed")]
    Interrupted,
    #[error("internal error: {0}")]
    Internal(String),
}

impl LabError {
    fn io(what: impl Into<String>, source: std::io::Error) -> LabError {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}
