//! Pods by name: `pod:NAMESPACE/NAME` (or `pod:NAME`, namespace `default`) wherever dye takes
//! a network namespace, and `--to pod:…` for a pod's address. A pod is resolved through the
//! container runtime's CRI API, as crictl does: ListPodSandbox (the `io.kubernetes.pod.*`
//! labels, else the metadata), only READY sandboxes, PodSandboxStatus(verbose) → the sandbox
//! process → `/proc/PID/ns/net` (the runtime's netns bind mount may live in its own mount
//! namespace), and the pod's addresses from `status.network`.
//!
//! Runtime endpoints: every `--runtime-endpoint` given (repeatable; all of them are asked and
//! must answer, and exactly one may know the pod), else `CONTAINER_RUNTIME_ENDPOINT`, else the
//! first of the usual sockets that answers. One runtime serves one node: a pod on another node
//! is only known to that node's runtime.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dye_capture::netns::{self, PodRef};
use dye_capture::{Netns, NetnsError, NetnsRef};

use crate::cri::{Cri, Sandbox};

/// Where crictl and the kubelet look, in this order, when no endpoint is given.
pub const DEFAULT_ENDPOINTS: [&str; 3] = [
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
];

/// crictl's variable for the runtime endpoint.
pub const ENDPOINT_ENV: &str = "CONTAINER_RUNTIME_ENDPOINT";

/// How many similar pods a "not known" error lists.
const SIMILAR_SHOWN: usize = 5;

/// Why a pod reference could not be resolved. Each message names the runtime endpoint(s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    #[error("bad runtime endpoint {0:?}: expected unix:///PATH or an absolute socket path")]
    BadEndpoint(String),
    #[error("no container runtime answers (tried {tried}); name one with --runtime-endpoint or {ENDPOINT_ENV}")]
    Unreachable { tried: String },
    #[error("permission denied on the container runtime socket {endpoint}; run as root")]
    Permission { endpoint: String },
    #[error("not known to the container runtime at {endpoints}{similar}")]
    NotFound { endpoints: String, similar: String },
    #[error(
        "several ready pod sandboxes match: {matches}; name one runtime with --runtime-endpoint"
    )]
    Several { matches: String },
    #[error(
        "not ready on {endpoint} (sandbox {sandbox} is not READY): it has no network to enter"
    )]
    NotReady { endpoint: String, sandbox: String },
    #[error("runs in the host's network namespace (hostNetwork) on {endpoint}: it has no network namespace of its own; use the node's namespace (`host` on a node) instead")]
    HostNetwork { endpoint: String },
    #[error("{detail} (runtime {endpoint}, sandbox {sandbox})")]
    Sandbox {
        endpoint: String,
        sandbox: String,
        detail: String,
    },
    #[error("{0}")]
    Runtime(String),
}

/// A resolved pod.
#[derive(Debug, Clone)]
pub struct Pod {
    pub endpoint: String,
    pub sandbox: String,
    pub ips: Vec<IpAddr>,
    pub pid: u32,
}

/// The endpoints to ask, as configured; parsed when a pod is first resolved, so a malformed
/// `CONTAINER_RUNTIME_ENDPOINT` troubles no command that names no pod.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// `--runtime-endpoint` values, else the environment's; empty: the usual sockets.
    pub given: Vec<String>,
}

impl Endpoints {
    /// From the flags, else `CONTAINER_RUNTIME_ENDPOINT`.
    pub fn from_flags(flags: &[String]) -> Endpoints {
        let given = if flags.is_empty() {
            std::env::var(ENDPOINT_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .into_iter()
                .collect()
        } else {
            flags.to_vec()
        };
        Endpoints { given }
    }
}

/// `unix:///run/x.sock` or `/run/x.sock` → the socket path.
pub fn parse_endpoint(s: &str) -> Result<PathBuf, PodError> {
    let t = s.trim();
    let path = t.strip_prefix("unix://").unwrap_or(t);
    if path.starts_with('/') && !path.contains("://") {
        Ok(PathBuf::from(path))
    } else {
        Err(PodError::BadEndpoint(s.to_string()))
    }
}

fn show(path: &Path) -> String {
    format!("unix://{}", path.display())
}

/// Can a client connect to `socket` at all? (A plain connect, for a clear reason.)
fn probe(socket: &Path) -> Result<(), std::io::Error> {
    std::os::unix::net::UnixStream::connect(socket).map(drop)
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such socket".into(),
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The runtimes to ask, connected: every given one (each must answer), or the first usual
/// socket that answers.
fn runtimes(endpoints: &Endpoints) -> Result<Vec<Cri>, PodError> {
    let explicit = !endpoints.given.is_empty();
    let paths: Vec<PathBuf> = if explicit {
        endpoints
            .given
            .iter()
            .map(|e| parse_endpoint(e))
            .collect::<Result<_, _>>()?
    } else {
        DEFAULT_ENDPOINTS.iter().map(PathBuf::from).collect()
    };
    let mut tried = Vec::new();
    let mut out = Vec::new();
    for path in paths {
        match probe(&path) {
            Ok(()) => {
                let cri = Cri::connect(&path).map_err(|e| PodError::Runtime(e.to_string()))?;
                out.push(cri);
                if !explicit {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(PodError::Permission {
                    endpoint: show(&path),
                })
            }
            Err(e) => tried.push(format!("{} ({})", show(&path), reason(&e))),
        }
    }
    if out.is_empty() || (explicit && !tried.is_empty()) {
        return Err(PodError::Unreachable {
            tried: tried.join(", "),
        });
    }
    Ok(out)
}

/// Finds `pod` among the runtimes' sandboxes and asks its status.
pub fn resolve(pod: &PodRef, endpoints: &Endpoints) -> Result<Pod, PodError> {
    let mut runtimes = runtimes(endpoints)?;
    let mut everything: Vec<(usize, Sandbox)> = Vec::new();
    for (i, cri) in runtimes.iter_mut().enumerate() {
        let listed = cri
            .list(&[])
            .map_err(|e| PodError::Runtime(e.to_string()))?;
        everything.extend(listed.into_iter().map(|s| (i, s)));
    }
    let names = |i: usize| show(runtimes[i].socket());
    let matching: Vec<&(usize, Sandbox)> = everything
        .iter()
        .filter(|(_, s)| s.namespace == pod.namespace && s.name == pod.name)
        .collect();
    let ready: Vec<&(usize, Sandbox)> = matching.iter().copied().filter(|(_, s)| s.ready).collect();
    let (i, sandbox) = match (ready.as_slice(), matching.first()) {
        ([one], _) => (one.0, one.1.clone()),
        ([], None) => {
            let endpoints = (0..runtimes.len())
                .map(names)
                .collect::<Vec<_>>()
                .join(", ");
            let known: Vec<String> = everything
                .iter()
                .map(|(_, s)| format!("{}/{}", s.namespace, s.name))
                .collect();
            return Err(PodError::NotFound {
                endpoints,
                similar: similar_hint(&pod.to_string(), known),
            });
        }
        ([], Some((i, s))) => {
            return Err(PodError::NotReady {
                endpoint: names(*i),
                sandbox: short(&s.id),
            })
        }
        (several, _) => {
            return Err(PodError::Several {
                matches: several
                    .iter()
                    .map(|(i, s)| format!("{} on {}", short(&s.id), names(*i)))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let endpoint = names(i);
    let status = runtimes[i]
        .status(&sandbox.id)
        .map_err(|e| PodError::Runtime(e.to_string()))?;
    if !status.ready {
        return Err(PodError::NotReady {
            endpoint,
            sandbox: short(&sandbox.id),
        });
    }
    if status.host_network {
        return Err(PodError::HostNetwork { endpoint });
    }
    let pid = status.pid.ok_or_else(|| PodError::Sandbox {
        endpoint: endpoint.clone(),
        sandbox: short(&sandbox.id),
        detail: "the runtime's verbose status names no sandbox process (`info.pid`)".into(),
    })?;
    // The runtime numbers it in its own PID namespace, which need not be ours.
    let pid = super::runtime_pid::runtime_pid(runtimes[i].socket())
        .and_then(|runtime| super::runtime_pid::translate(runtime, pid))
        .map_err(|detail| PodError::Sandbox {
            endpoint: endpoint.clone(),
            sandbox: short(&sandbox.id),
            detail,
        })?;
    Ok(Pod {
        endpoint,
        sandbox: sandbox.id,
        ips: status.ips,
        pid,
    })
}

impl Pod {
    /// The pod's network namespace: its sandbox process's, which must not be the host's.
    pub fn netns(&self) -> Result<Netns, PodError> {
        let ns = Netns::open(&NetnsRef::Pid(self.pid)).map_err(|e| match e {
            NetnsError::PermissionDenied { .. } => PodError::Permission {
                endpoint: format!("/proc/{}/ns/net", self.pid),
            },
            e => PodError::Sandbox {
                endpoint: self.endpoint.clone(),
                sandbox: short(&self.sandbox),
                detail: format!("its sandbox process {} cannot be entered: {e}", self.pid),
            },
        })?;
        if let Ok(host) = Netns::open(&NetnsRef::Host) {
            if host.id() == ns.id() {
                return Err(PodError::HostNetwork {
                    endpoint: self.endpoint.clone(),
                });
            }
        }
        Ok(ns)
    }

    /// The address `--to` means: IPv4 first (IPv6 when the pod has no IPv4), or IPv6 with
    /// `ipv6`.
    pub fn address(&self, ipv6: bool) -> Result<IpAddr, PodError> {
        let v4 = self.ips.iter().find(|a| a.is_ipv4());
        let v6 = self.ips.iter().find(|a| a.is_ipv6());
        let pick = if ipv6 { v6 } else { v4.or(v6) };
        pick.copied().ok_or_else(|| PodError::Sandbox {
            endpoint: self.endpoint.clone(),
            sandbox: short(&self.sandbox),
            detail: format!(
                "the pod has no {}address (the runtime reports {:?})",
                if ipv6 { "IPv6 " } else { "" },
                self.ips
            ),
        })
    }
}

/// Sandbox ids are 64 hex digits; 13 say which, as crictl shows them.
fn short(id: &str) -> String {
    id.chars().take(13).collect()
}

/// "; pods there most like it: a, b (and N more)" — by longest common prefix, then name.
fn similar_hint(wanted: &str, mut known: Vec<String>) -> String {
    known.sort();
    known.dedup();
    if known.is_empty() {
        return "; it runs no pods".into();
    }
    let (known, more) = dye_capture::netns::closest_names(wanted, known, SIMILAR_SHOWN);
    let mut hint = format!("; pods there most like it: {}", known.join(", "));
    if more > 0 {
        hint.push_str(&format!(" and {more} more (crictl pods)"));
    }
    hint
}

/// Lets every namespace reference on this command line be a pod, resolved through
/// `endpoints`; the namespace then reads `pod NS/NAME` in every report.
pub fn install(endpoints: Endpoints) {
    let endpoints = Arc::new(endpoints);
    netns::set_pod_resolver(Arc::new(move |pod: &PodRef| {
        resolve(pod, &endpoints)
            .and_then(|p| p.netns())
            .map_err(|e| e.to_string())
    }));
}

/// `--to pod:NS/NAME[:PORT]` → the pod's address and port. Its namespace, when it can be
/// entered from here, is named after the pod in the report too.
pub fn target(
    spec: &str,
    endpoints: &Endpoints,
    ipv6: bool,
) -> Result<(IpAddr, Option<u16>), String> {
    let (pod_part, port) = split_port(spec)?;
    let pod = PodRef::parse(pod_part).map_err(|e| format!("--to pod:{pod_part}: {e}"))?;
    let fail = |e: PodError| format!("--to pod:{pod}: {e}");
    let resolved = resolve(&pod, endpoints).map_err(fail)?;
    let ip = resolved.address(ipv6).map_err(fail)?;
    if let Ok(ns) = resolved.netns() {
        netns::register_pod(&pod, &ns);
    }
    Ok((ip, port))
}

/// `NS/NAME:PORT` → (`NS/NAME`, PORT); pod names never contain `:`.
fn split_port(spec: &str) -> Result<(&str, Option<u16>), String> {
    match spec.rsplit_once(':') {
        Some((pod, port)) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(|p| (pod, Some(p)))
            .ok_or_else(|| format!("--to pod:{spec}: bad port {port:?} (expected 1-65535)")),
        None => Ok((spec, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_crictl_forms() {
        assert_eq!(
            parse_endpoint("unix:///run/containerd/containerd.sock"),
            Ok(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(
            parse_endpoint("/run/crio/crio.sock"),
            Ok(PathBuf::from("/run/crio/crio.sock"))
        );
        for bad in [
            "tcp://10.0.0.1:1234",
            "unix://relative.sock",
            "run/x.sock",
            "",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_destination_pod_may_carry_a_port() {
        assert_eq!(
            split_port("default/pod-c:80"),
            Ok(("default/pod-c", Some(80)))
        );
        assert_eq!(split_port("pod-c"), Ok(("pod-c", None)));
        assert!(split_port("pod-c:http").is_err());
        assert!(split_port("pod-c:0").is_err());
        assert!(split_port("pod-c:70000").is_err());
    }

    #[test]
    fn similar_pods_are_few_and_closest_first() {
        let known: Vec<String> = (0..20)
            .map(|i| format!("kube-system/proxy-{i:02}"))
            .chain(["default/pod-a".into(), "default/pod-b".into()])
            .collect();
        let hint = similar_hint("default/pod-x", known);
        assert!(
            hint.starts_with("; pods there most like it: default/pod-a, default/pod-b, "),
            "{hint}"
        );
        assert!(hint.ends_with(" and 17 more (crictl pods)"), "{hint}");
        assert_eq!(similar_hint("default/x", Vec::new()), "; it runs no pods");
    }

    #[test]
    fn the_address_is_ipv4_first_or_ipv6_when_asked() {
        let pod = |ips: &[&str]| Pod {
            endpoint: "unix:///x".into(),
            sandbox: "abc".into(),
            ips: ips.iter().map(|a| a.parse().unwrap()).collect(),
            pid: 1,
        };
        let dual = pod(&["fd00:10:244:1::2", "10.244.1.2"]);
        assert_eq!(dual.address(false), Ok("10.244.1.2".parse().unwrap()));
        assert_eq!(dual.address(true), Ok("fd00:10:244:1::2".parse().unwrap()));
        let v6 = pod(&["fd00::2"]);
        assert_eq!(v6.address(false), Ok("fd00::2".parse().unwrap()));
        assert!(pod(&["10.0.0.1"]).address(true).is_err());
    }
}
