//! The kubelet's side of CRI for the lab, over the product's CRI client ([`crate::cri`]) on a
//! lab node's containerd socket: RunPodSandbox with the pod's metadata, labels and hostname;
//! PodSandboxStatus for its address and sandbox process; StopPodSandbox + RemovePodSandbox to
//! take it away. Errors become [`LabError`]s here.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};

use super::LabError;
use crate::cri::CriError;

/// The label carrying the lab id on every sandbox the lab creates.
pub const LAB_LABEL: &str = "dye.lab/id";

impl From<CriError> for LabError {
    fn from(e: CriError) -> LabError {
        match e {
            CriError::Runtime(e) => LabError::io("start the CRI client runtime", e),
            CriError::Call {
                call,
                socket,
                message,
            } => LabError::Cri {
                call,
                socket,
                message,
            },
            CriError::Parse { what, detail } => LabError::Parse { what, detail },
        }
    }
}

/// What the kubelet puts in a PodSandboxConfig for a pod.
#[derive(Debug, Clone)]
pub struct PodSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub lab: &'a str,
    pub node: &'a str,
    /// cgroupfs path under which runc puts the sandbox's cgroup.
    pub cgroup_parent: &'a str,
}

/// The sandbox as PodSandboxStatus(verbose) reports it.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    /// The sandbox ("pause") process, which holds the pod's namespaces.
    pub pid: u32,
}

/// A CRI client on one lab node's containerd socket.
#[derive(Debug)]
pub struct Cri(crate::cri::Cri);

impl Cri {
    /// Connects to `socket` (no request is made yet: see [`Cri::version`]).
    pub fn connect(socket: &Path) -> Result<Cri, LabError> {
        Ok(Cri(crate::cri::Cri::connect(socket)?))
    }

    /// CRI Version: answers once containerd's CRI plugin serves.
    pub fn version(&mut self) -> Result<String, LabError> {
        Ok(self.0.version()?)
    }

    /// True when the CRI image store knows `image`.
    pub fn has_image(&mut self, image: &str) -> Result<bool, LabError> {
        Ok(self.0.has_image(image)?)
    }

    /// RunPodSandbox the way the kubelet asks for a pod: metadata, the `io.kubernetes.pod.*`
    /// labels, hostname = pod name, a cgroup parent, pod network namespace and
    /// IPC, a container-private PID namespace. Returns the sandbox id.
    pub fn run_pod(&mut self, pod: &PodSpec<'_>) -> Result<String, LabError> {
        let labels = crate::cri::labels(&[
            ("io.kubernetes.pod.name", pod.name),
            ("io.kubernetes.pod.namespace", pod.namespace),
            ("io.kubernetes.pod.uid", pod.uid),
            (LAB_LABEL, pod.lab),
            ("dye.lab/node", pod.node),
        ]);
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.into(),
                uid: pod.uid.into(),
                namespace: pod.namespace.into(),
                attempt: 0,
            }),
            hostname: pod.name.into(),
            labels,
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: pod.cgroup_parent.into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(self.0.run_pod_sandbox(config)?)
    }

    /// PodSandboxStatus(verbose): the pod's addresses and its sandbox process.
    pub fn status(&mut self, sandbox: &str) -> Result<SandboxStatus, LabError> {
        let s = self.0.status(sandbox)?;
        let parse = |detail: String| LabError::Parse {
            what: format!("PodSandboxStatus of {sandbox}"),
            detail,
        };
        let ip = s
            .ips
            .iter()
            .find_map(|a| match a {
                std::net::IpAddr::V4(v4) => Some(*v4),
                _ => None,
            })
            .ok_or_else(|| parse(format!("no IPv4 address in {:?}", s.ips)))?;
        let ip6 = s.ips.iter().find_map(|a| match a {
            std::net::IpAddr::V6(v6) => Some(*v6),
            _ => None,
        });
        let pid = s
            .pid
            .ok_or_else(|| parse("no sandbox pid in the verbose info".into()))?;
        Ok(SandboxStatus { ip, ip6, pid })
    }

    /// StopPodSandbox (stops the sandbox process, runs CNI DEL) then RemovePodSandbox, for
    /// all of `sandboxes` at once. Returns each sandbox's outcome.
    pub fn stop_and_remove_all(
        &mut self,
        sandboxes: &[String],
    ) -> Vec<(String, Result<(), LabError>)> {
        self.0
            .stop_and_remove_all(sandboxes)
            .into_iter()
            .map(|(id, r)| (id, r.map_err(LabError::from)))
            .collect()
    }

    /// The sandboxes labelled with lab `lab` (finds them also when the state file lost them).
    pub fn lab_sandboxes(&mut self, lab: &str) -> Result<Vec<String>, LabError> {
        Ok(self
            .0
            .list(&[(LAB_LABEL, lab)])?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }
}
