//! Network namespace handles.
//!
//! A [`Netns`] keeps the namespace's fd open for as long as any clone of it lives, so the
//! namespace cannot vanish under us and is identified by its (dev, ino) pair, never by name.
//! Code that must run *inside* a namespace — opening a capture handle, a netlink socket, a raw
//! socket — goes through [`Netns::run`], which spawns a dedicated OS thread, `setns`es it and runs
//! the closure there. The calling thread (a tokio worker, the main thread) never changes
//! namespace. A socket keeps the namespace it was created in, so what `run` returns can be used
//! from any thread afterwards.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use nix::sched::{setns, CloneFlags};
use serde::Serialize;

/// Where `ip netns` keeps named namespaces (bind mounts of nsfs files).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// How a user refers to a namespace on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NetnsRef {
    /// A name under `/run/netns` (what `ip netns add NAME` creates).
    Name(String),
    /// Any nsfs file: `/run/netns/x`, `/proc/123/ns/net`, a bind mount elsewhere.
    Path(PathBuf),
    /// The namespace of a process: `/proc/PID/ns/net`.
    Pid(u32),
    /// The host's namespace: PID 1's.
    Host,
    /// A Kubernetes pod (`pod:NAME`, `pod:NAMESPACE/NAME`): resolved through the container
    /// runtime by the resolver the binary installs ([`set_pod_resolver`]).
    Pod(PodRef),
}

/// Kubernetes' namespace when a pod reference names none.
pub const DEFAULT_POD_NAMESPACE: &str = "default";

/// A pod as the user names it: `pod:NAME` (namespace `default`) or `pod:NAMESPACE/NAME`.
/// Both parts follow Kubernetes' rules (lowercase alphanumerics, `-`, and `.` in names), so
/// a typo such as a glob, a space or a third `/` is refused before any runtime is asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    /// Parses what follows `pod:`.
    pub fn parse(spec: &str) -> Result<PodRef, String> {
        let (namespace, name) = match spec.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (DEFAULT_POD_NAMESPACE, spec),
        };
        if name.contains('/') {
            return Err("expected pod:NAME or pod:NAMESPACE/NAME (one `/` at most)".into());
        }
        check_k8s_name("namespace", namespace, 63, false)?;
        check_k8s_name("pod name", name, 253, true)?;
        Ok(PodRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// `pod NAMESPACE/NAME`: how a namespace resolved from this pod reads in every report.
    pub fn display_name(&self) -> String {
        format!("pod {self}")
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Kubernetes' DNS-1123 label (namespaces) or subdomain (pod names, which may contain dots).
fn check_k8s_name(what: &str, s: &str, max: usize, dots: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("empty {what}"));
    }
    if s.len() > max {
        return Err(format!("{what} longer than {max} characters"));
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    if let Some(bad) = s.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "{what} {s:?} contains {bad:?}: Kubernetes allows lowercase letters, digits, '-'{}",
            if dots { " and '.'" } else { "" }
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(s.chars().next()) || !edge_ok(s.chars().last()) {
        return Err(format!(
            "{what} {s:?} must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Resolves a pod to its network namespace (the binary asks the container runtime). The
/// error is a sentence naming the pod and the runtime endpoint(s) asked.
pub type PodResolver = dyn Fn(&PodRef) -> Result<Netns, String> + Send + Sync;

static POD_RESOLVER: RwLock<Option<Arc<PodResolver>>> = RwLock::new(None);

/// Pods resolved so far, with their namespace under its `pod NS/NAME` name: a pod named twice
/// on one command line (`--from`, `--ns`, `-i`) is asked for once, and discovery names its
/// namespace after the pod ([`Netns::preferred`]).
static PODS: Mutex<Vec<(PodRef, Netns)>> = Mutex::new(Vec::new());

/// Installs the resolver [`NetnsRef::Pod`] references go through.
pub fn set_pod_resolver(resolver: Arc<PodResolver>) {
    if let Ok(mut r) = POD_RESOLVER.write() {
        *r = Some(resolver);
    }
}

/// Records that `netns` is pod `pod`'s namespace (e.g. a destination resolved for `--to`), so
/// discovery names it `pod NS/NAME`. Returns the renamed handle.
pub fn register_pod(pod: &PodRef, netns: &Netns) -> Netns {
    let named = netns.renamed(&pod.display_name());
    if let Ok(mut pods) = PODS.lock() {
        if let Some(known) = pods.iter().find(|(p, _)| p == pod) {
            return known.1.clone();
        }
        pods.push((pod.clone(), named.clone()));
    }
    named
}

fn open_pod(reference: &str, pod: &PodRef) -> Result<Netns, NetnsError> {
    if let Some(known) = PODS
        .lock()
        .ok()
        .and_then(|pods| pods.iter().find(|(p, _)| p == pod).map(|(_, n)| n.clone()))
    {
        return Ok(known);
    }
    let resolver = POD_RESOLVER.read().ok().and_then(|r| r.clone());
    let Some(resolver) = resolver else {
        return Err(NetnsError::Pod {
            reference: reference.to_string(),
            reason: "no container runtime client in this program".into(),
        });
    };
    let netns = resolver(pod).map_err(|reason| NetnsError::Pod {
        reference: reference.to_string(),
        reason,
    })?;
    Ok(register_pod(pod, &netns))
}

impl FromStr for NetnsRef {
    type Err = NetnsError;

    /// `host` → [`NetnsRef::Host`]; `pid:123` or `123` → [`NetnsRef::Pid`]; anything with a `/`
    /// → [`NetnsRef::Path`]; otherwise a name under `/run/netns`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(NetnsError::Invalid {
                reference: s.to_string(),
                reason: "empty namespace reference".into(),
            });
        }
        if s == "host" {
            return Ok(NetnsRef::Host);
        }
        if let Some(spec) = s.strip_prefix("pod:") {
            return PodRef::parse(spec)
                .map(NetnsRef::Pod)
                .map_err(|reason| NetnsError::Invalid {
                    reference: s.to_string(),
                    reason,
                });
        }
        let digits = s.strip_prefix("pid:").unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits
                .parse()
                .map(NetnsRef::Pid)
                .map_err(|_| NetnsError::Invalid {
                    reference: s.to_string(),
                    reason: "PID out of range".into(),
                });
        }
        if s.starts_with("pid:") {
            return Err(NetnsError::Invalid {
                reference: s.to_string(),
                reason: "expected pid:NUMBER".into(),
            });
        }
        if s.contains('/') {
            return Ok(NetnsRef::Path(PathBuf::from(s)));
        }
        Ok(NetnsRef::Name(s.to_string()))
    }
}

impl fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsRef::Name(n) => f.write_str(n),
            NetnsRef::Path(p) => write!(f, "{}", p.display()),
            NetnsRef::Pid(p) => write!(f, "pid:{p}"),
            NetnsRef::Host => f.write_str("host"),
            NetnsRef::Pod(p) => write!(f, "pod:{p}"),
        }
    }
}

impl NetnsRef {
    /// The nsfs file this reference points at (for a pod: none before it is resolved, so its
    /// `pod:` text).
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Pod(p) => PathBuf::from(format!("pod:{p}")),
            NetnsRef::Name(n) => Path::new(NETNS_RUN_DIR).join(n),
            NetnsRef::Path(p) => p.clone(),
            NetnsRef::Pid(p) => PathBuf::from(format!("/proc/{p}/ns/net")),
            NetnsRef::Host => PathBuf::from("/proc/1/ns/net"),
        }
    }
}

/// Identity of a namespace: the (device, inode) of its nsfs file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// Every way a namespace reference or a namespace operation can go wrong; each names the
/// reference the user gave.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {reference:?} not found ({path} does not exist){hint}")]
    NotFound {
        reference: String,
        path: PathBuf,
        hint: String,
    },
    #[error("{reference:?} is not a network namespace ({path}: {what})")]
    NotNetns {
        reference: String,
        path: PathBuf,
        what: String,
    },
    #[error("permission denied opening network namespace {reference:?} ({path}); run as root or with CAP_SYS_ADMIN")]
    PermissionDenied { reference: String, path: PathBuf },
    #[error("{reference}: {reason}")]
    Pod { reference: String, reason: String },
    #[error("bad namespace reference {reference:?}: {reason}")]
    Invalid { reference: String, reason: String },
    #[error("cannot enter network namespace {name:?}: {source}")]
    Enter {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("network namespace {reference:?} ({path}): {source}")]
    Io {
        reference: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("thread running inside network namespace {name:?} panicked")]
    ThreadPanicked { name: String },
}

#[derive(Debug)]
struct Inner {
    name: String,
    path: PathBuf,
    file: File,
    id: NetnsId,
}

/// An open network namespace. Cheap to clone; the fd stays open while any clone lives.
#[derive(Clone, Debug)]
pub struct Netns {
    inner: Arc<Inner>,
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}
impl Eq for Netns {}

impl Netns {
    /// Opens a namespace from a user reference, checking that it really is a network namespace.
    pub fn open(reference: &NetnsRef) -> Result<Netns, NetnsError> {
        let name = match reference {
            NetnsRef::Pod(pod) => return open_pod(&reference.to_string(), pod),
            NetnsRef::Name(n) => n.clone(),
            NetnsRef::Host => "host".to_string(),
            NetnsRef::Pid(p) => format!("pid:{p}"),
            NetnsRef::Path(p) => match (p.parent(), p.file_name()) {
                (Some(dir), Some(file)) if dir == Path::new(NETNS_RUN_DIR) => {
                    file.to_string_lossy().into_owned()
                }
                _ => p.display().to_string(),
            },
        };
        Self::open_path(&reference.to_string(), &name, &reference.path())
    }

    /// Parses and opens a reference in one step.
    pub fn open_str(reference: &str) -> Result<Netns, NetnsError> {
        Self::open(&reference.parse()?)
    }

    /// The namespace of the calling thread (normally the one dye was started in).
    pub fn current() -> Result<Netns, NetnsError> {
        Self::open_path("self", "self", Path::new("/proc/thread-self/ns/net"))
    }

    fn open_path(reference: &str, name: &str, path: &Path) -> Result<Netns, NetnsError> {
        let file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NetnsError::NotFound {
                reference: reference.to_string(),
                path: path.to_path_buf(),
                hint: if path.starts_with(NETNS_RUN_DIR) {
                    known_hint(name, list_named().unwrap_or_default())
                } else {
                    String::new()
                },
            },
            io::ErrorKind::PermissionDenied => NetnsError::PermissionDenied {
                reference: reference.to_string(),
                path: path.to_path_buf(),
            },
            _ => NetnsError::Io {
                reference: reference.to_string(),
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        // The file must live on nsfs (a bind mount or /proc/PID/ns/*) and be a *network*
        // namespace: an unmounted /run/netns entry is an ordinary file, /proc/PID/ns/mnt is a
        // namespace of another type.
        let on_nsfs = nix::sys::statfs::fstatfs(&file)
            .map(|s| s.filesystem_type().0 == NSFS_MAGIC as libc::__fsword_t)
            .unwrap_or(false);
        if !on_nsfs {
            return Err(NetnsError::NotNetns {
                reference: reference.to_string(),
                path: path.to_path_buf(),
                what: "not a namespace file (an unmounted /run/netns entry or an ordinary file?)"
                    .into(),
            });
        }
        match ns_type(&file) {
            Some(t) if t == CloneFlags::CLONE_NEWNET.bits() => {}
            other => {
                return Err(NetnsError::NotNetns {
                    reference: reference.to_string(),
                    path: path.to_path_buf(),
                    what: format!(
                        "a {} namespace, not a network namespace",
                        ns_type_name(other)
                    ),
                })
            }
        }
        let meta = file.metadata().map_err(|e| NetnsError::Io {
            reference: reference.to_string(),
            path: path.to_path_buf(),
            source: e,
        })?;
        let id = NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        Ok(Netns {
            inner: Arc::new(Inner {
                name: name.to_string(),
                path: path.to_path_buf(),
                file,
                id,
            }),
        })
    }

    /// Display name: the `/run/netns` name, `host`, `pid:N`, or the path.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The nsfs path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// (dev, ino) identity.
    pub fn id(&self) -> NetnsId {
        self.inner.id
    }

    /// The open namespace fd (e.g. for `RTM_GETNSID` with `NETNSA_FD`).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.file.as_fd()
    }

    /// This namespace under the name reports should use: `pod NS/NAME` when a pod reference
    /// on the command line resolved to it, otherwise this handle as it is. The user named the
    /// pod, and on a node the runtime's own /run/netns name (`cni-<uuid>`) says nothing.
    pub fn preferred(&self) -> Netns {
        PODS.lock()
            .ok()
            .and_then(|pods| {
                pods.iter()
                    .find(|(_, n)| n.id() == self.id())
                    .map(|(_, n)| n.clone())
            })
            .unwrap_or_else(|| self.clone())
    }

    /// A copy of this handle under another display name (same fd, same identity).
    pub fn renamed(&self, name: &str) -> Netns {
        let file = self.inner.file.try_clone();
        match file {
            Ok(file) => Netns {
                inner: Arc::new(Inner {
                    name: name.to_string(),
                    path: self.inner.path.clone(),
                    file,
                    id: self.inner.id,
                }),
            },
            Err(_) => self.clone(),
        }
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace and returns its result.
    /// The caller's thread never changes namespace. Sockets and capture handles created inside
    /// `f` stay bound to this namespace wherever they are used later.
    pub fn run<F, T>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let name = self.inner.name.clone();
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("dye-netns-{}", truncate(&name, 5)))
                .spawn_scoped(scope, || {
                    setns(self.inner.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NetnsError::Enter {
                            name: name.clone(),
                            source,
                        }
                    })?;
                    Ok(f())
                })
                .map_err(|e| NetnsError::Io {
                    reference: name.clone(),
                    path: self.inner.path.clone(),
                    source: e,
                })?;
            handle
                .join()
                .map_err(|_| NetnsError::ThreadPanicked { name: name.clone() })?
        })
    }

    /// Every network namespace on the host: PID 1's (`host`), the named ones under
    /// `/run/netns`, and those of processes (`/proc/*/ns/net`), deduplicated by inode.
    /// Namespaces that cannot be opened (a process that exited meanwhile) are skipped.
    pub fn enumerate() -> Result<Vec<Netns>, NetnsError> {
        let mut seen: HashMap<NetnsId, ()> = HashMap::new();
        let mut out = Vec::new();
        let mut push = |ns: Netns, out: &mut Vec<Netns>| {
            if seen.insert(ns.id(), ()).is_none() {
                out.push(ns);
            }
        };
        let host = Netns::open(&NetnsRef::Host);
        if let Ok(host) = &host {
            push(host.clone(), &mut out);
        }
        for name in list_named().unwrap_or_default() {
            if let Ok(ns) = Netns::open(&NetnsRef::Name(name)) {
                push(ns, &mut out);
            }
        }
        // PID 1 out of reach (a sandbox, `ip netns exec`): our own namespace, after the named
        // ones so that it keeps its /run/netns name when it has one.
        if host.is_err() {
            if let Ok(me) = Netns::current() {
                push(me, &mut out);
            }
        }
        let mut pids: Vec<u32> = std::fs::read_dir("/proc")
            .map_err(|e| NetnsError::Io {
                reference: "/proc".into(),
                path: "/proc".into(),
                source: e,
            })?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            if let Ok(ns) = Netns::open(&NetnsRef::Pid(pid)) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let name = if comm.trim().is_empty() {
                    format!("pid:{pid}")
                } else {
                    format!("pid:{pid}({})", comm.trim())
                };
                push(ns.renamed(&name), &mut out);
            }
        }
        Ok(out)
    }
}

/// `statfs.f_type` of nsfs.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `NS_GET_NSTYPE` = `_IO(0xb7, 0x3)`: returns the CLONE_NEW* type of a namespace fd.
const NS_GET_NSTYPE: libc::c_ulong = (0xb7 << 8) | 0x3;

/// The CLONE_NEW* type of a namespace fd, via `ioctl(NS_GET_NSTYPE)` (no safe wrapper exists).
#[allow(unsafe_code)]
fn ns_type(file: &File) -> Option<i32> {
    // SAFETY: `file` is an open fd for the duration of the call; NS_GET_NSTYPE takes no
    // argument and only returns an int, so no memory is read or written through pointers.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    (r >= 0).then_some(r)
}

fn ns_type_name(t: Option<i32>) -> &'static str {
    let Some(t) = t else { return "non-network" };
    [
        (CloneFlags::CLONE_NEWNS, "mount"),
        (CloneFlags::CLONE_NEWUTS, "uts"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWUSER, "user"),
        (CloneFlags::CLONE_NEWPID, "pid"),
        (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
    ]
    .iter()
    .find(|(f, _)| f.bits() == t)
    .map(|(_, n)| *n)
    .unwrap_or("non-network")
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Names under `/run/netns`, sorted. A missing directory means none.
pub fn list_named() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => {
            for entry in dir {
                let entry = entry?;
                if let Some(n) = entry.file_name().to_str() {
                    names.push(n.to_string());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// Expands shell-style patterns (`*`, `?`) against the names under `/run/netns`; a reference
/// without a wildcard is returned as is (so errors still name it).
pub fn expand_pattern(pattern: &str) -> Vec<String> {
    if !pattern.contains(['*', '?']) {
        return vec![pattern.to_string()];
    }
    list_named()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| glob_match(pattern, n))
        .collect()
}

/// Resolves command-line namespace references: each may be a glob over `/run/netns` names
/// (`dye-demo-*`), a name, a path, `pid:N` or `host`. `all` adds every namespace on the host.
/// With neither, the result is the current namespace plus every named one. Duplicates (same
/// inode) are dropped; a pattern matching nothing is a [`NetnsError::NotFound`] naming it.
pub fn select(refs: &[String], all: bool) -> Result<Vec<Netns>, NetnsError> {
    let mut out: Vec<Netns> = Vec::new();
    let push = |ns: Netns, out: &mut Vec<Netns>| {
        if !out.iter().any(|n| n.id() == ns.id()) {
            out.push(ns);
        }
    };
    if all {
        for ns in Netns::enumerate()? {
            push(ns, &mut out);
        }
    }
    for r in refs {
        // Pod references are never globs: their own grammar refuses wildcards.
        let names = if r.trim().starts_with("pod:") {
            vec![r.clone()]
        } else {
            expand_pattern(r)
        };
        if names.is_empty() {
            return Err(NetnsError::NotFound {
                reference: r.clone(),
                path: Path::new(NETNS_RUN_DIR).join(r),
                hint: "; the pattern matches no name under /run/netns".into(),
            });
        }
        for n in names {
            push(Netns::open_str(&n)?, &mut out);
        }
    }
    if refs.is_empty() && !all {
        push(Netns::current()?, &mut out);
        for n in list_named().unwrap_or_default() {
            if let Ok(ns) = Netns::open(&NetnsRef::Name(n)) {
                push(ns, &mut out);
            }
        }
    }
    Ok(out)
}

/// Minimal glob: `*` matches any run, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob::Pattern::new(pattern)
        .map(|p| p.matches(text))
        .unwrap_or(false)
}

/// How many known names an error lists: a node with hundreds of pods must not print them all.
const KNOWN_SHOWN: usize = 5;

/// The `shown` names of `known` most like `wanted` (longest common prefix, then by name), and
/// how many more there are: what an error about an unknown name lists.
pub fn closest_names(wanted: &str, mut known: Vec<String>, shown: usize) -> (Vec<String>, usize) {
    let common = |n: &str| {
        n.chars()
            .zip(wanted.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    known.sort_by(|a, b| common(b).cmp(&common(a)).then_with(|| a.cmp(b)));
    let more = known.len().saturating_sub(shown);
    known.truncate(shown);
    (known, more)
}

/// "; known: a, b, c and 212 more", the names most like `wanted` first.
fn known_hint(wanted: &str, known: Vec<String>) -> String {
    if known.is_empty() {
        return "; no named namespaces exist".to_string();
    }
    let (known, more) = closest_names(wanted, known, KNOWN_SHOWN);
    let mut hint = format!("; known: {}", known.join(", "));
    if more > 0 {
        hint.push_str(&format!(" and {more} more (ip netns list)"));
    }
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_name_lists_a_handful_of_the_closest_known_ones() {
        let known: Vec<String> = (0..300)
            .map(|i| format!("cni-{i:04}"))
            .chain(["dye-demo-pod-a".to_string(), "dye-demo-pod-b".to_string()])
            .collect();
        let hint = known_hint("dye-demo-pod-x", known);
        assert!(
            hint.starts_with("; known: dye-demo-pod-a, dye-demo-pod-b, "),
            "{hint}"
        );
        assert!(hint.ends_with(" and 297 more (ip netns list)"), "{hint}");
        assert_eq!(known_hint("x", Vec::new()), "; no named namespaces exist");
    }

    #[test]
    fn parses_references() {
        assert_eq!("host".parse::<NetnsRef>().unwrap(), NetnsRef::Host);
        assert_eq!("pid:42".parse::<NetnsRef>().unwrap(), NetnsRef::Pid(42));
        assert_eq!("42".parse::<NetnsRef>().unwrap(), NetnsRef::Pid(42));
        assert_eq!(
            "/proc/1/ns/net".parse::<NetnsRef>().unwrap(),
            NetnsRef::Path("/proc/1/ns/net".into())
        );
        assert_eq!(
            "dye-1-node-1".parse::<NetnsRef>().unwrap(),
            NetnsRef::Name("dye-1-node-1".into())
        );
        assert!("pid:x".parse::<NetnsRef>().is_err());
        assert!("".parse::<NetnsRef>().is_err());
    }

    #[test]
    fn pod_references() {
        let pod = |ns: &str, name: &str| {
            NetnsRef::Pod(PodRef {
                namespace: ns.into(),
                name: name.into(),
            })
        };
        assert_eq!(
            "pod:pod-a".parse::<NetnsRef>().unwrap(),
            pod("default", "pod-a")
        );
        assert_eq!(
            "pod:kube-system/coredns-5d78c9869d-abcde"
                .parse::<NetnsRef>()
                .unwrap(),
            pod("kube-system", "coredns-5d78c9869d-abcde")
        );
        assert_eq!(
            "pod:default/web.v2".parse::<NetnsRef>().unwrap(),
            pod("default", "web.v2")
        );
        assert_eq!(
            "pod:default/pod-a".parse::<NetnsRef>().unwrap().to_string(),
            "pod:default/pod-a"
        );
        assert_eq!(
            PodRef::parse("pod-a").unwrap().display_name(),
            "pod default/pod-a"
        );
        for bad in [
            "pod:",
            "pod:/pod-a",
            "pod:default/",
            "pod:a/b/c",
            "pod:Default/pod-a",
            "pod:pod_a",
            "pod:pod-*",
            "pod:-pod",
            "pod:pod-",
            "pod:my.ns/pod-a",
            "pod:pod a",
        ] {
            let e = bad.parse::<NetnsRef>().unwrap_err();
            assert!(
                matches!(e, NetnsError::Invalid { ref reference, .. } if reference == bad),
                "{bad}: {e}"
            );
        }
        assert!(PodRef::parse(&"a".repeat(254)).is_err());
        assert!(PodRef::parse(&format!("{}/a", "n".repeat(64))).is_err());
    }

    #[test]
    fn a_pod_without_a_resolver_is_refused_by_name() {
        // No resolver is installed in this crate's tests.
        let e = Netns::open_str("pod:default/nowhere").unwrap_err();
        assert!(e.to_string().contains("pod:default/nowhere"), "{e}");
    }

    #[test]
    fn globbing() {
        assert!(glob_match("dye-1-*", "dye-1-node-1"));
        assert!(glob_match("dye-?-pod-*", "dye-1-pod-a"));
        assert!(!glob_match("dye-1-*", "dye-2-node-1"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", "ab"));
    }
}
