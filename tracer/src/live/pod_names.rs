//! Pods named by their pods: a namespace that belongs to a READY pod sandbox reads
//! `pod NAMESPACE/NAME` (as a `pod:` reference's namespace does), learned from the container
//! runtime that answers (the configured endpoints, see [`super::pods::Endpoints`]).
//!
//! Which namespaces are renamed ([`Policy`]):
//! - never the namespace dye runs in (the node's own: hostNetwork sandboxes share it) nor
//!   `host`;
//! - [`Policy::EveryPod`] (an agent): every other namespace of a ready sandbox. A merged trace
//!   spans nodes, and only the pod name means something beyond one node;
//! - [`Policy::Unnamed`] (dye on one host): only a namespace without a name of its own — one
//!   found through a process (`pid:N(comm)`), a path, or a /run/netns name the runtime made up
//!   (containerd's `cni-<uuid>`, CRI-O's bare `<uuid>`). Any other /run/netns name is the
//!   user's (the lab's `dye-<id>-pod-a`) and stays the name they address the namespace by.
//!
//! Matching is by identity: the (dev, inode) of `/proc/<sandbox pid>/ns/net` against the
//! namespace's. Bounded: one ListPodSandbox per runtime, then PodSandboxStatus(verbose) per
//! ready sandbox not known yet, each call within [`PER_CALL`], all within the namer's budget;
//! what is learned is kept by sandbox id while the sandbox stays READY (its process and
//! namespace do not change meanwhile). A runtime that is absent, slow or answers garbage leaves
//! the names as they were: it is logged at debug level and never fails the caller.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dye_capture::netns::PodRef;
use dye_capture::{Netns, NetnsId, NetnsRef};

use super::pods::{parse_endpoint, Endpoints, DEFAULT_ENDPOINTS};
use crate::cri::{Cri, Sandbox};

/// Longest one CRI call may take: a runtime answers in milliseconds.
pub const PER_CALL: Duration = Duration::from_secs(1);
/// How long an agent's discovery may spend asking (later discoveries ask what is left).
pub const AGENT_BUDGET: Duration = Duration::from_secs(3);
/// How long one command on a host may spend asking.
pub const HOST_BUDGET: Duration = Duration::from_secs(2);

/// Which namespaces take their pod's name (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Every pod's namespace but the node's own (agents).
    EveryPod,
    /// Only namespaces without a name of their own (dye on one host).
    Unnamed,
}

/// Whether a namespace listed as `name` may take its pod's name under `policy`; `own`: it is
/// the namespace dye runs in.
pub fn replaceable(policy: Policy, name: &str, own: bool) -> bool {
    if own || name == "host" {
        return false;
    }
    match policy {
        Policy::EveryPod => true,
        Policy::Unnamed => {
            name.starts_with("pid:") || name.starts_with('/') || runtime_generated(name)
        }
    }
}

/// A /run/netns name a container runtime chose: containerd's `cni-<uuid>`, CRI-O's `<uuid>`.
pub fn runtime_generated(name: &str) -> bool {
    is_uuid(name.strip_prefix("cni-").unwrap_or(name))
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What a ready sandbox's status told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Learned {
    /// The pod and its own network namespace.
    Pod { pod: PodRef, netns: NetnsId },
    /// No namespace of its own (hostNetwork): nothing to name, nothing to ask again.
    HostNetwork,
}

/// A sandbox on one runtime.
type Key = (PathBuf, String);

/// Learns pods' namespaces from the runtime and renames namespaces after them.
#[derive(Debug)]
pub struct PodNamer {
    endpoints: Endpoints,
    policy: Policy,
    /// The namespace dye runs in: never renamed.
    own: NetnsId,
    budget: Duration,
    known: HashMap<Key, Learned>,
}

/// A namer shared by every discovery of a process (an agent's cache lives across calls).
pub type SharedNamer = Arc<Mutex<PodNamer>>;

impl PodNamer {
    pub fn new(endpoints: Endpoints, policy: Policy, own: NetnsId, budget: Duration) -> PodNamer {
        PodNamer {
            endpoints,
            policy,
            own,
            budget,
            known: HashMap::new(),
        }
    }

    /// A namer for dye on this host ([`Policy::Unnamed`]), its own namespace the current one.
    pub fn host(endpoints: Endpoints) -> Option<PodNamer> {
        let own = Netns::current().ok()?.id();
        Some(PodNamer::new(endpoints, Policy::Unnamed, own, HOST_BUDGET))
    }

    /// [`PodNamer::host`], to hand to a scope request.
    pub fn for_host(endpoints: Endpoints) -> Option<SharedNamer> {
        PodNamer::host(endpoints).map(|n| Arc::new(Mutex::new(n)))
    }

    /// `namespaces` in their order, those of ready pods renamed `pod NS/NAME` as the policy
    /// allows, except those `keep` holds to their names.
    pub fn apply(&mut self, namespaces: Vec<Netns>, keep: &dyn Fn(&Netns) -> bool) -> Vec<Netns> {
        let wanted: HashSet<NetnsId> = namespaces
            .iter()
            .filter(|n| replaceable(self.policy, n.name(), n.id() == self.own) && !keep(n))
            .map(Netns::id)
            .collect();
        if wanted.is_empty() {
            return namespaces;
        }
        let pods = self.learn(&wanted);
        namespaces
            .into_iter()
            .map(|n| match pods.get(&n.id()) {
                Some(pod) if wanted.contains(&n.id()) && !keep(&n) => {
                    n.renamed(&pod.display_name())
                }
                _ => n,
            })
            .collect()
    }

    /// The sockets to ask: every given endpoint, else the first usual socket that exists.
    fn sockets(&self) -> Vec<PathBuf> {
        if self.endpoints.given.is_empty() {
            return DEFAULT_ENDPOINTS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .into_iter()
                .collect();
        }
        self.endpoints
            .given
            .iter()
            .filter_map(|e| match parse_endpoint(e) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::debug!("naming pods: {e}");
                    None
                }
            })
            .collect()
    }

    /// The pods owning the namespaces in `wanted`, as far as the runtimes and the budget tell.
    fn learn(&mut self, wanted: &HashSet<NetnsId>) -> HashMap<NetnsId, PodRef> {
        let started = Instant::now();
        let mut found = Owners::default();
        let mut out_of_time = false;
        let mut asked = 0usize;
        for socket in self.sockets() {
            let listed = Cri::connect_within(&socket, PER_CALL).and_then(|mut cri| {
                let listed = cri.list(&[])?;
                Ok((cri, listed))
            });
            let (mut cri, listed) = match listed {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!("naming pods: {e}");
                    continue;
                }
            };
            // The runtime's PID in ours, asked once per runtime (its sandbox PIDs are its own).
            let runtime = super::runtime_pid::runtime_pid(&socket);
            let ready: HashSet<String> = listed
                .iter()
                .filter(|s| s.ready)
                .map(|s| s.id.clone())
                .collect();
            // A sandbox no longer READY may be gone and its namespace with it.
            self.known
                .retain(|(path, id), _| *path != socket || ready.contains(id));
            for sandbox in listed.iter().filter(|s| s.ready) {
                let key = (socket.clone(), sandbox.id.clone());
                if !self.known.contains_key(&key) {
                    // Only what is already known once every namespace asked about is named,
                    // or the time is up (a later discovery asks for the rest).
                    if found.covers(wanted) || out_of_time {
                        continue;
                    }
                    if started.elapsed() >= self.budget {
                        tracing::debug!("naming pods: out of time after {:?}", self.budget);
                        out_of_time = true;
                        continue;
                    }
                    asked += 1;
                    match status(&mut cri, runtime.clone(), sandbox) {
                        Ok(learned) => {
                            self.known.insert(key.clone(), learned);
                        }
                        Err(e) => tracing::debug!("naming pods: {e}"),
                    }
                }
                if let Some(Learned::Pod { pod, netns }) = self.known.get(&key) {
                    found.add(*netns, pod);
                }
            }
        }
        tracing::debug!(
            asked,
            known = self.known.len(),
            elapsed = ?started.elapsed(),
            "naming pods: sandboxes' namespaces learned"
        );
        found.unambiguous()
    }
}

/// Asks one sandbox's status: its process's network namespace, or that it has none.
/// `runtime` is the runtime's PID in ours ([`super::runtime_pid::runtime_pid`]).
fn status(
    cri: &mut Cri,
    runtime: Result<u32, String>,
    sandbox: &Sandbox,
) -> Result<Learned, String> {
    let status = cri.status(&sandbox.id).map_err(|e| e.to_string())?;
    if status.host_network {
        return Ok(Learned::HostNetwork);
    }
    let pid = status.pid.ok_or_else(|| {
        format!(
            "sandbox {} ({}/{}): no process in its verbose status",
            sandbox.id, sandbox.namespace, sandbox.name
        )
    })?;
    let pod = PodRef::parse(&format!("{}/{}", sandbox.namespace, sandbox.name))
        .map_err(|e| format!("sandbox {}: {e}", sandbox.id))?;
    // The runtime's PID, in ours (a runtime in a PID namespace of its own numbers differently).
    let pid = runtime
        .and_then(|runtime| super::runtime_pid::translate(runtime, pid))
        .map_err(|e| format!("sandbox {} ({pod}): {e}", sandbox.id))?;
    let netns = Netns::open(&NetnsRef::Pid(pid))
        .map_err(|e| format!("sandbox {} ({pod}): {e}", sandbox.id))?
        .id();
    Ok(Learned::Pod { pod, netns })
}

/// Namespaces and the pods claiming them; a namespace two pods claim is named by neither.
#[derive(Debug, Default)]
struct Owners(HashMap<NetnsId, Option<PodRef>>);

impl Owners {
    fn add(&mut self, netns: NetnsId, pod: &PodRef) {
        self.0
            .entry(netns)
            .and_modify(|p| {
                if p.as_ref() != Some(pod) {
                    *p = None;
                }
            })
            .or_insert_with(|| Some(pod.clone()));
    }

    fn covers(&self, wanted: &HashSet<NetnsId>) -> bool {
        wanted.iter().all(|w| self.0.contains_key(w))
    }

    fn unambiguous(self) -> HashMap<NetnsId, PodRef> {
        self.0
            .into_iter()
            .filter_map(|(n, p)| Some((n, p?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_name_every_pod_but_the_nodes_own_namespace() {
        for name in [
            "dye-fx-pod-c",
            "cni-3f2a9c1e-0b7d-4e8f-9a6b-1c2d3e4f5a6b",
            "pid:42(pause)",
        ] {
            assert!(replaceable(Policy::EveryPod, name, false), "{name}");
            assert!(!replaceable(Policy::EveryPod, name, true), "{name}");
        }
        assert!(!replaceable(Policy::EveryPod, "host", false));
    }

    #[test]
    fn on_one_host_only_namespaces_without_a_name_of_their_own_are_renamed() {
        for name in [
            "cni-3f2a9c1e-0b7d-4e8f-9a6b-1c2d3e4f5a6b",
            "3F2A9C1E-0B7D-4E8F-9A6B-1C2D3E4F5A6B",
            "pid:4242(pause)",
            "pid:4242",
            "/proc/4242/ns/net",
        ] {
            assert!(replaceable(Policy::Unnamed, name, false), "{name}");
            assert!(!replaceable(Policy::Unnamed, name, true), "{name}");
        }
        for name in [
            "host",
            "dye-fx-pod-a",
            "cni-pod-a",
            "cni-3f2a9c1e-0b7d-4e8f-9a6b",
            "cni-3f2a9c1e-0b7d-4e8f-9a6b-1c2d3e4f5a6g",
            "x-3f2a9c1e-0b7d-4e8f-9a6b-1c2d3e4f5a6b",
            "pod default/pod-a",
        ] {
            assert!(!replaceable(Policy::Unnamed, name, false), "{name}");
        }
    }

    #[test]
    fn a_namespace_two_pods_claim_is_named_by_neither() {
        let id = |ino| NetnsId { dev: 4, ino };
        let pod = |n: &str| PodRef::parse(n).unwrap();
        let mut owners = Owners::default();
        owners.add(id(1), &pod("default/pod-a"));
        owners.add(id(1), &pod("default/pod-a"));
        owners.add(id(2), &pod("default/pod-b"));
        owners.add(id(2), &pod("kube-system/pod-b"));
        assert!(owners.covers(&[id(1), id(2)].into()));
        assert!(!owners.covers(&[id(1), id(3)].into()));
        let named = owners.unambiguous();
        assert_eq!(named.get(&id(1)), Some(&pod("default/pod-a")));
        assert_eq!(named.get(&id(2)), None);
    }

    #[test]
    fn no_runtime_leaves_every_name_as_it_was() {
        let me = Netns::current().expect("this process's namespace");
        let missing = "unix:///nonexistent/dye-test/containerd.sock".to_string();
        let mut namer = PodNamer::new(
            Endpoints {
                given: vec![missing, "tcp://x".into()],
            },
            Policy::EveryPod,
            NetnsId { dev: 0, ino: 0 },
            Duration::from_millis(100),
        );
        let named = namer.apply(vec![me.renamed("pid:1(x)")], &|_| false);
        assert_eq!(named[0].name(), "pid:1(x)");
    }

    #[test]
    fn a_silent_or_garbled_runtime_costs_a_bounded_wait_and_renames_nothing() {
        use std::io::Write;
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("dye-podnames-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (silent, garbled) = (dir.join("silent.sock"), dir.join("garbled.sock"));
        // Accepts and never answers.
        let quiet = UnixListener::bind(&silent).unwrap();
        // Answers every connection with bytes that are no HTTP/2.
        let noisy = UnixListener::bind(&garbled).unwrap();
        std::thread::spawn(move || {
            for mut c in noisy.incoming().flatten() {
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\nnot grpc at all");
            }
        });
        std::thread::spawn(move || {
            let open: Vec<_> = quiet.incoming().take(1).flatten().collect();
            std::thread::sleep(PER_CALL * 5);
            drop(open);
        });
        let me = Netns::current().expect("this process's namespace");
        let mut namer = PodNamer::new(
            Endpoints {
                given: vec![
                    garbled.display().to_string(),
                    format!("unix://{}", silent.display()),
                ],
            },
            Policy::EveryPod,
            NetnsId { dev: 0, ino: 0 },
            AGENT_BUDGET,
        );
        let started = Instant::now();
        let named = namer.apply(vec![me.renamed("cni-x")], &|_| false);
        let took = started.elapsed();
        assert_eq!(named[0].name(), "cni-x");
        // The silent one was waited for, up to one call's deadline (not the client's 30 s).
        assert!(took >= PER_CALL / 2 && took < PER_CALL * 3, "{took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
