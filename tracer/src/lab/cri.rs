//! The kubelet's side of CRI, over gRPC on a lab node's containerd socket: RunPodSandbox with
//! the pod's metadata, labels and hostname; PodSandboxStatus for its address and sandbox
//! process; StopPodSandbox + RemovePodSandbox to take it away. A small current-thread tokio
//! runtime local to each client keeps the rest of the lab synchronous.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxFilter,
    PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use super::LabError;

/// Every call gets this long; containerd answers in well under a second on this machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The label carrying the lab id on every sandbox the lab creates.
pub const LAB_LABEL: &str = "dye.lab/id";

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

/// A CRI client on one containerd socket.
#[derive(Debug)]
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    socket: PathBuf,
}

impl Cri {
    /// Connects to `socket` (no request is made yet: see [`Cri::version`]).
    pub fn connect(socket: &Path) -> Result<Cri, LabError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| LabError::io("start the CRI client runtime", e))?;
        let path = socket.to_path_buf();
        let channel = {
            let _guard = rt.enter();
            // The URI is a placeholder: the connector below always dials the unix socket.
            Endpoint::from_static("http://[::1]:50051")
                .timeout(CALL_TIMEOUT)
                .connect_timeout(Duration::from_secs(2))
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
        };
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            socket: socket.to_path_buf(),
        })
    }

    fn error(&self, call: &str, status: tonic::Status) -> LabError {
        LabError::Cri {
            call: call.to_string(),
            socket: self.socket.display().to_string(),
            message: status.message().to_string(),
        }
    }

    /// CRI Version: answers once containerd's CRI plugin serves.
    pub fn version(&mut self) -> Result<String, LabError> {
        let r = self
            .rt
            .block_on(self.runtime.version(VersionRequest {
                version: "v1".into(),
            }))
            .map_err(|s| self.error("Version", s))?;
        let v = r.into_inner();
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    /// True when the CRI image store knows `image`.
    pub fn has_image(&mut self, image: &str) -> Result<bool, LabError> {
        let r = self
            .rt
            .block_on(self.images.image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            }))
            .map_err(|s| self.error("ImageStatus", s))?;
        Ok(r.into_inner().image.is_some())
    }

    /// RunPodSandbox the way the kubelet asks for a pod: metadata, the `io.kubernetes.pod.*`
    /// labels, hostname = pod name, a cgroup parent, pod network namespace and IPC, a
    /// container-private PID namespace. Returns the sandbox id.
    pub fn run_pod(&mut self, pod: &PodSpec<'_>) -> Result<String, LabError> {
        let labels: HashMap<String, String> = [
            ("io.kubernetes.pod.name", pod.name),
            ("io.kubernetes.pod.namespace", pod.namespace),
            ("io.kubernetes.pod.uid", pod.uid),
            (LAB_LABEL, pod.lab),
            ("dye.lab/node", pod.node),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
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
        let r = self
            .rt
            .block_on(self.runtime.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))
            .map_err(|s| self.error("RunPodSandbox", s))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    /// PodSandboxStatus(verbose): the pod's addresses and its sandbox process.
    pub fn status(&mut self, sandbox: &str) -> Result<SandboxStatus, LabError> {
        let r = self
            .rt
            .block_on(self.runtime.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.into(),
                verbose: true,
            }))
            .map_err(|s| self.error("PodSandboxStatus", s))?
            .into_inner();
        let parse = |detail: String| LabError::Parse {
            what: format!("PodSandboxStatus of {sandbox}"),
            detail,
        };
        let network = r
            .status
            .and_then(|s| s.network)
            .ok_or_else(|| parse("no network status".into()))?;
        let ips: Vec<&str> = std::iter::once(network.ip.as_str())
            .chain(network.additional_ips.iter().map(|i| i.ip.as_str()))
            .collect();
        let ip = ips
            .iter()
            .find_map(|a| a.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| parse(format!("no IPv4 address in {ips:?}")))?;
        let ip6 = ips.iter().find_map(|a| a.parse::<Ipv6Addr>().ok());
        let info = r
            .info
            .get("info")
            .ok_or_else(|| parse("no verbose info".into()))?;
        let pid = sandbox_pid(info).map_err(parse)?;
        Ok(SandboxStatus { ip, ip6, pid })
    }

    /// StopPodSandbox (stops the sandbox process, runs CNI DEL) then RemovePodSandbox, for
    /// all of `sandboxes` at once. Returns each sandbox's outcome.
    pub fn stop_and_remove_all(
        &mut self,
        sandboxes: &[String],
    ) -> Vec<(String, Result<(), LabError>)> {
        let socket = self.socket.display().to_string();
        let client = self.runtime.clone();
        self.rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for id in sandboxes {
                let (mut client, id, socket) = (client.clone(), id.clone(), socket.clone());
                set.spawn(async move {
                    let error = |call: &str, s: tonic::Status| LabError::Cri {
                        call: call.to_string(),
                        socket: socket.clone(),
                        message: s.message().to_string(),
                    };
                    let stopped = client
                        .stop_pod_sandbox(StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await
                        .map_err(|s| error("StopPodSandbox", s));
                    let removed = match stopped {
                        Ok(_) => client
                            .remove_pod_sandbox(RemovePodSandboxRequest {
                                pod_sandbox_id: id.clone(),
                            })
                            .await
                            .map(drop)
                            .map_err(|s| error("RemovePodSandbox", s)),
                        Err(e) => Err(e),
                    };
                    (id, removed)
                });
            }
            let mut out = Vec::new();
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok(outcome) => out.push(outcome),
                    Err(e) => tracing::warn!("a sandbox removal task failed: {e}"),
                }
            }
            out
        })
    }

    /// The sandboxes labelled with lab `lab` (finds them also when the state file lost them).
    pub fn lab_sandboxes(&mut self, lab: &str) -> Result<Vec<String>, LabError> {
        let r = self
            .rt
            .block_on(self.runtime.list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: [(LAB_LABEL.to_string(), lab.to_string())].into(),
                    ..Default::default()
                }),
            }))
            .map_err(|s| self.error("ListPodSandbox", s))?;
        Ok(r.into_inner().items.into_iter().map(|p| p.id).collect())
    }
}

/// The sandbox process id from containerd's verbose `info` JSON (`{"pid": N, …}`).
fn sandbox_pid(info: &str) -> Result<u32, String> {
    let v: serde_json::Value = serde_json::from_str(info).map_err(|e| e.to_string())?;
    v.get("pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| "no sandbox pid in the verbose info".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_pid_comes_from_verbose_info() {
        assert_eq!(
            sandbox_pid(r#"{"pid": 4242, "processStatus": "running"}"#),
            Ok(4242)
        );
        assert!(sandbox_pid(r#"{"pid": 0}"#).is_err());
        assert!(sandbox_pid("not json").is_err());
    }
}
