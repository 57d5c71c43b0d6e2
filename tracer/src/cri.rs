//! A CRI client (the kubelet's gRPC API to the container runtime) on one unix socket: what
//! `pod:` references are resolved through, and what the lab drives its containerd with. A
//! small current-thread tokio runtime local to each client keeps callers synchronous.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, CreateContainerRequest, ImageSpec, ImageStatusRequest, ListPodSandboxRequest,
    NamespaceMode, PodSandboxConfig, PodSandboxFilter, PodSandboxState, PodSandboxStatusRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// Every call gets this long; a runtime answers in well under a second.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("start the CRI client runtime: {0}")]
    Runtime(std::io::Error),
    #[error("CRI {call} on {socket}: {message}")]
    Call {
        call: String,
        socket: String,
        message: String,
    },
    #[error("{what}: {detail}")]
    Parse { what: String, detail: String },
}

/// A pod sandbox as ListPodSandbox reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    /// Kubernetes namespace and name: the `io.kubernetes.pod.*` labels, else the metadata.
    pub namespace: String,
    pub name: String,
    pub ready: bool,
}

/// The sandbox as PodSandboxStatus(verbose) reports it.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    /// `status.network.ip` then `additional_ips`, as given (unparseable ones left out).
    pub ips: Vec<IpAddr>,
    /// The sandbox ("pause") process, which holds the pod's namespaces (verbose `info.pid`).
    pub pid: Option<u32>,
    /// The sandbox shares the node's network namespace (`hostNetwork: true`).
    pub host_network: bool,
    pub ready: bool,
}

/// A CRI client on one socket.
#[derive(Debug)]
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    socket: PathBuf,
}

impl Cri {
    /// Connects to `socket` lazily: no request is made yet (see [`Cri::version`]).
    pub fn connect(socket: &Path) -> Result<Cri, CriError> {
        Cri::connect_within(socket, CALL_TIMEOUT)
    }

    /// Like [`Cri::connect`], every call (and the connection) bounded by `deadline`: for
    /// asking a runtime that may be slow or wedged in passing.
    pub fn connect_within(socket: &Path, deadline: Duration) -> Result<Cri, CriError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(CriError::Runtime)?;
        let path = socket.to_path_buf();
        let channel = {
            let _guard = rt.enter();
            // The URI is a placeholder: the connector below always dials the unix socket.
            Endpoint::from_static("http://[::1]:50051")
                .timeout(deadline)
                .connect_timeout(deadline.min(Duration::from_secs(2)))
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

    /// The socket this client dials.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn error(&self, call: &str, status: tonic::Status) -> CriError {
        CriError::Call {
            call: call.to_string(),
            socket: self.socket.display().to_string(),
            message: status.message().to_string(),
        }
    }

    /// CRI Version: answers once the runtime's CRI service serves.
    pub fn version(&mut self) -> Result<String, CriError> {
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
    pub fn has_image(&mut self, image: &str) -> Result<bool, CriError> {
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

    /// RunPodSandbox with `config`; returns the sandbox id.
    pub fn run_pod_sandbox(&mut self, config: PodSandboxConfig) -> Result<String, CriError> {
        let r = self
            .rt
            .block_on(self.runtime.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))
            .map_err(|s| self.error("RunPodSandbox", s))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    /// CreateContainer in `sandbox` (made with `sandbox_config`) then StartContainer; returns
    /// the container id.
    pub fn run_container(
        &mut self,
        sandbox: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, CriError> {
        let id = self
            .rt
            .block_on(self.runtime.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }))
            .map_err(|s| self.error("CreateContainer", s))?
            .into_inner()
            .container_id;
        self.rt
            .block_on(self.runtime.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))
            .map_err(|s| self.error("StartContainer", s))?;
        Ok(id)
    }

    /// StopContainer (SIGTERM, SIGKILL after `grace_s` seconds) then RemoveContainer.
    pub fn stop_and_remove_container(&mut self, id: &str, grace_s: i64) -> Result<(), CriError> {
        self.rt
            .block_on(self.runtime.stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: grace_s,
            }))
            .map_err(|s| self.error("StopContainer", s))?;
        self.rt
            .block_on(self.runtime.remove_container(RemoveContainerRequest {
                container_id: id.into(),
            }))
            .map_err(|s| self.error("RemoveContainer", s))?;
        Ok(())
    }

    /// ListPodSandbox, narrowed by labels when `labels` is not empty.
    pub fn list(&mut self, labels: &[(&str, &str)]) -> Result<Vec<Sandbox>, CriError> {
        let filter = (!labels.is_empty()).then(|| PodSandboxFilter {
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        });
        let r = self
            .rt
            .block_on(
                self.runtime
                    .list_pod_sandbox(ListPodSandboxRequest { filter }),
            )
            .map_err(|s| self.error("ListPodSandbox", s))?;
        Ok(r.into_inner()
            .items
            .into_iter()
            .map(|p| {
                let label = |k: &str| p.labels.get(k).filter(|v| !v.is_empty()).cloned();
                let meta = p.metadata.clone().unwrap_or_default();
                Sandbox {
                    namespace: label("io.kubernetes.pod.namespace").unwrap_or(meta.namespace),
                    name: label("io.kubernetes.pod.name").unwrap_or(meta.name),
                    ready: p.state == PodSandboxState::SandboxReady as i32,
                    id: p.id,
                }
            })
            .collect())
    }

    /// PodSandboxStatus(verbose): the sandbox's addresses, process and network mode. A
    /// malformed answer is an error, never a panic.
    pub fn status(&mut self, sandbox: &str) -> Result<SandboxStatus, CriError> {
        let r = self
            .rt
            .block_on(self.runtime.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.into(),
                verbose: true,
            }))
            .map_err(|s| self.error("PodSandboxStatus", s))?
            .into_inner();
        let status = r.status.ok_or_else(|| CriError::Parse {
            what: format!("PodSandboxStatus of {sandbox}"),
            detail: "no status in the answer".into(),
        })?;
        let ips = status
            .network
            .as_ref()
            .map(|n| {
                std::iter::once(n.ip.as_str())
                    .chain(n.additional_ips.iter().map(|i| i.ip.as_str()))
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .collect()
            })
            .unwrap_or_default();
        let host_network = status
            .linux
            .as_ref()
            .and_then(|l| l.namespaces.as_ref())
            .and_then(|n| n.options.as_ref())
            .is_some_and(|o| o.network == NamespaceMode::Node as i32);
        let pid = r.info.get("info").and_then(|i| sandbox_pid(i).ok());
        Ok(SandboxStatus {
            ips,
            pid,
            host_network,
            ready: status.state == PodSandboxState::SandboxReady as i32,
        })
    }

    /// StopPodSandbox alone: the sandbox stays, NOTREADY.
    pub fn stop(&mut self, sandbox: &str) -> Result<(), CriError> {
        self.rt
            .block_on(self.runtime.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox.into(),
            }))
            .map_err(|s| self.error("StopPodSandbox", s))?;
        Ok(())
    }

    /// StopPodSandbox (stops the sandbox process, runs CNI DEL) then RemovePodSandbox, for
    /// all of `sandboxes` at once. Returns each sandbox's outcome.
    pub fn stop_and_remove_all(
        &mut self,
        sandboxes: &[String],
    ) -> Vec<(String, Result<(), CriError>)> {
        let socket = self.socket.display().to_string();
        let client = self.runtime.clone();
        self.rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for id in sandboxes {
                let (mut client, id, socket) = (client.clone(), id.clone(), socket.clone());
                set.spawn(async move {
                    let error = |call: &str, s: tonic::Status| CriError::Call {
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
}

/// Labels of a sandbox config, from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The sandbox process id from the runtime's verbose `info` JSON (`{"pid": N, …}`).
pub fn sandbox_pid(info: &str) -> Result<u32, String> {
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
        assert!(sandbox_pid(r#"{"pid": -1}"#).is_err());
        assert!(sandbox_pid(r#"{"pid": 99999999999}"#).is_err());
        assert!(sandbox_pid(r#"["pid"]"#).is_err());
        assert!(sandbox_pid("not json").is_err());
    }
}
