//! One real containerd per lab node, with its CRI plugin, as the node's container runtime: the
//! daemon runs in the node's network namespace (so CNI's cni0 and the host veths land in the
//! node) and in a private mount namespace with its own /run (pod netns files, shim sockets,
//! runc state), /var/lib (libcni's cache) and a sysfs of the node's namespace with the host's
//! cgroup mounts kept. Everything it writes — root, state, sockets, CNI config, IPAM data — is
//! under the lab's state directory; each node has its own cgroup parent. This module owns the
//! daemon's configuration, start, readiness and removal (with leftover shims, sandbox processes
//! and cgroups).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::cmd::spawn_daemon;
use super::cni;
use super::cri::Cri;
use super::image::SANDBOX_IMAGE;
use super::LabError;

/// Where a node's containerd keeps everything, under the lab's state directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path, node: &str) -> Paths {
        Paths {
            dir: state_dir.join("containerd").join(node),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    pub fn ttrpc_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock.ttrpc")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
}

/// The daemon's configuration (containerd config version 2).
pub fn config(paths: &Paths) -> Value {
    let p = |path: PathBuf| path.display().to_string();
    json!({
        "version": 2,
        "root": p(paths.dir.join("root")),
        "state": p(paths.dir.join("state")),
        "disabled_plugins": [
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.devmapper",
        ],
        "grpc": { "address": p(paths.socket()) },
        "ttrpc": { "address": p(paths.ttrpc_socket()) },
        "plugins": {
            "io.containerd.internal.v1.opt": { "path": p(paths.dir.join("opt")) },
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": SANDBOX_IMAGE,
                // Root here lacks CAP_SYS_RESOURCE: the kubelet's oom_score_adj of -998 would
                // make runc fail ("can't get final child's PID from pipe: EOF").
                "restrict_oom_score_adj": true,
                // The stream server (exec/attach) binds the node's loopback.
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
                "cni": {
                    "bin_dir": p(cni::cni_path()),
                    "conf_dir": p(paths.cni_conf_dir()),
                    "max_conf_num": 1,
                },
                "containerd": {
                    "snapshotter": "overlayfs",
                    "default_runtime_name": "runc",
                    "runtimes": {
                        "runc": {
                            "runtime_type": "io.containerd.runc.v2",
                            "options": { "SystemdCgroup": false },
                        },
                    },
                },
            },
        },
    })
}

/// The private mounts a node's runtime needs, as shell lines run in its new mount namespace
/// with the lab state directory open on fd 3 and named by `$1`: a tmpfs /run (pod netns files,
/// shim sockets, runc state) with the state directory bound back into it, a sysfs of the node's
/// network namespace that keeps the host's cgroup mounts (runc needs them), a tmpfs /var/lib
/// (libcni's cache). A macro, so both launch scripts are one literal each.
macro_rules! private_mounts {
    () => {
        r#"mount -t tmpfs -o mode=0755 dye-run /run
mkdir /run/dye-cgroup
mount --rbind /sys/fs/cgroup /run/dye-cgroup
mount -t sysfs sysfs /sys
mount --move /run/dye-cgroup /sys/fs/cgroup
rmdir /run/dye-cgroup
mount -t tmpfs -o mode=0755 dye-varlib /var/lib
mkdir -p "$1"
mount --no-canonicalize --bind /proc/self/fd/3 "$1"
exec 3<&-
"#
    };
}
pub(super) use private_mounts;

/// Runs in the node's network namespace, in a fresh mount namespace with private propagation
/// (`nsenter --net … unshare --mount --propagation private`), then execs containerd — so the
/// spawned PID is containerd's. `ip netns exec` is not used: its sysfs remount drops the cgroup
/// mounts runc needs. $1 is the lab state directory (bound back into the private /run), $2 the
/// config file.
const LAUNCH: &str = concat!(
    "set -e\nexec 3<\"$1\"\n",
    private_mounts!(),
    "exec containerd --config \"$2\"\n"
);

/// Writes the node's CNI network list and containerd config and starts the daemon in
/// `node_ns` — in a mount namespace of its own, or, for an isolated node (`hostname` given),
/// as the node's runtime inside the node's own mount, PID and UTS namespaces
/// (`node_host`). Returns the PID of the process started (containerd, or the node's launcher),
/// not yet serving: see [`wait_serving`].
pub fn start(
    state_dir: &Path,
    paths: &Paths,
    node_ns: &str,
    network_list: &Value,
    hostname: Option<&str>,
) -> Result<u32, LabError> {
    let io = |what: String| move |e| LabError::io(what, e);
    std::fs::create_dir_all(paths.cni_conf_dir())
        .map_err(io(format!("create {}", paths.cni_conf_dir().display())))?;
    let conflist = paths.cni_conf_dir().join("10-dye.conflist");
    std::fs::write(
        &conflist,
        serde_json::to_string_pretty(network_list).unwrap_or_default(),
    )
    .map_err(io(format!("write {}", conflist.display())))?;
    let text = toml::to_string(&config(paths))
        .map_err(|e| LabError::Internal(format!("containerd config: {e}")))?;
    std::fs::write(paths.config(), text)
        .map_err(io(format!("write {}", paths.config().display())))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{node_ns}"));
    match hostname {
        None => {
            // slave, as on a real node where containerd sees the host's /run/netns mounts
            // come and go (a HostToContainer mount requires it); its own mounts stay inside.
            cmd.args(["unshare", "--mount", "--propagation", "slave"])
                .args(["sh", "-c", LAUNCH, "dye-containerd"])
                .arg(state_dir)
                .arg(paths.config());
        }
        Some(hostname) => {
            let exe =
                std::env::current_exe().map_err(|e| LabError::io("locate the dye binary", e))?;
            cmd.args(super::node_host::UNSHARE)
                .args(["sh", "-c", super::node_host::NODE_LAUNCH, "dye-node"])
                .arg(state_dir)
                .arg(paths.config())
                .arg(hostname)
                .arg(exe)
                .arg(paths.socket());
        }
    }
    let pid = spawn_daemon(&mut cmd, &paths.log(), &format!("containerd in {node_ns}"))?;
    tracing::debug!(node = node_ns, pid, "containerd started");
    Ok(pid)
}

/// Waits until the daemon answers CRI Version; fails with the end of its log if it dies or
/// stays silent past `deadline`.
pub fn wait_serving(
    paths: &Paths,
    pid: u32,
    cri: &mut Cri,
    deadline: Instant,
) -> Result<(), LabError> {
    wait_until(paths, pid, deadline, "serving CRI", || {
        paths.socket().exists() && cri.version().is_ok()
    })
}

/// Waits until CRI's image store knows the imported sandbox image.
pub fn wait_image(
    paths: &Paths,
    pid: u32,
    cri: &mut Cri,
    deadline: Instant,
) -> Result<(), LabError> {
    wait_until(paths, pid, deadline, "showing the sandbox image", || {
        cri.has_image(SANDBOX_IMAGE).unwrap_or(false)
    })
}

fn wait_until(
    paths: &Paths,
    pid: u32,
    deadline: Instant,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), LabError> {
    loop {
        if ready() {
            return Ok(());
        }
        let running = alive(pid);
        if !running || Instant::now() > deadline {
            return Err(LabError::Runtime {
                detail: format!(
                    "containerd (pid {pid}, config {}) {}; its log ends: {}",
                    paths.config().display(),
                    if running {
                        format!("is still not {what}")
                    } else {
                        "exited".to_string()
                    },
                    log_tail(&paths.log())
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Every live process whose argument list satisfies `matches`.
fn processes(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            !argv.is_empty() && matches(&argv) && alive(*pid)
        })
        .collect()
}

fn signal_all(pids: &[u32], sig: Signal) {
    for pid in pids {
        if let Ok(p) = i32::try_from(*pid) {
            let _ = kill(Pid::from_raw(p), sig);
        }
    }
}

/// Waits up to `grace` for all of `pids` to be gone; true if they are.
fn wait_gone(pids: &[u32], grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops node `paths`' containerd (SIGTERM, then SIGKILL), then whatever it leaves behind when
/// it dies with pods running: shims (found by their `-address` argument) and every process in
/// the node's cgroups (sandbox processes), then removes those cgroups in every hierarchy.
/// Returns how many processes were stopped.
pub fn stop(paths: &Paths, cgroup: &str) -> usize {
    let config = paths.config().display().to_string();
    let socket = paths.socket().display().to_string();
    // The daemon, and the launcher if it has not exec'd containerd yet.
    let daemons = processes(|argv| argv.contains(&config));
    signal_all(&daemons, Signal::SIGTERM);
    if !wait_gone(&daemons, Duration::from_secs(2)) {
        signal_all(&daemons, Signal::SIGKILL);
        wait_gone(&daemons, Duration::from_secs(1));
    }
    let shims = processes(|argv| {
        argv.windows(2)
            .any(|w| w[0] == "-address" && w[1] == socket)
    });
    signal_all(&shims, Signal::SIGKILL);
    wait_gone(&shims, Duration::from_secs(1));
    let in_cgroups = remove_cgroups(cgroup);
    daemons.len() + shims.len() + in_cgroups
}

/// Kills (SIGKILL) the lab's own kinds of process — containerd, shims, the launcher, dye's
/// responders — whose arguments name a path under `dir`: the last sweep for a lab whose
/// runtime directories are gone. Returns how many.
pub fn kill_processes_naming(dir: &Path) -> usize {
    const KINDS: &[&str] = &[
        "containerd",
        "containerd-shim-runc-v2",
        "nsenter",
        "unshare",
        "sh",
        "dye",
    ];
    let prefix = format!("{}/", dir.display());
    let pids = processes(|argv| {
        let kind = argv[0].rsplit('/').next().unwrap_or_default();
        KINDS.contains(&kind) && argv.iter().any(|a| a.starts_with(&prefix))
    });
    signal_all(&pids, Signal::SIGKILL);
    wait_gone(&pids, Duration::from_secs(1));
    pids.len()
}

/// The mount points of every cgroup hierarchy (v1 controllers, named ones, and v2).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mount_point = pre.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Kills every process in cgroup `name` (a top-level directory) of every hierarchy, then
/// removes it, children first. Returns how many processes were killed.
fn remove_cgroups(name: &str) -> usize {
    // A process is in one cgroup of every hierarchy: count each once.
    let mut killed = std::collections::BTreeSet::new();
    for root in cgroup_hierarchies() {
        let top = root.join(name);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        let deadline = Instant::now() + Duration::from_secs(3);
        // Deepest first: a cgroup with children cannot be removed.
        for dir in dirs.iter().rev() {
            loop {
                let pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                signal_all(&pids, Signal::SIGKILL);
                killed.extend(pids);
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        tracing::warn!("cannot remove cgroup {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
    killed.len()
}

/// Removes every top-level cgroup whose name starts with `prefix` (`dye-<id>-`), in every
/// hierarchy, with the processes in it. Returns how many processes were killed.
pub fn remove_lab_cgroups(prefix: &str) -> usize {
    let mut names: Vec<String> = cgroup_hierarchies()
        .iter()
        .filter_map(|h| std::fs::read_dir(h).ok())
        .flat_map(|entries| entries.flatten())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names.dedup();
    names.iter().map(|n| remove_cgroups(n)).sum()
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_private_to_the_node() {
        let paths = Paths::new(Path::new("/run/dye/lab-x1"), "node-1");
        let text = toml::to_string(&config(&paths)).unwrap();
        let v: toml::Table = text.parse().unwrap();
        assert_eq!(
            v["root"].as_str(),
            Some("/run/dye/lab-x1/containerd/node-1/root")
        );
        assert_eq!(
            v["grpc"]["address"].as_str(),
            Some("/run/dye/lab-x1/containerd/node-1/containerd.sock")
        );
        let cri = &v["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(cri["sandbox_image"].as_str(), Some(SANDBOX_IMAGE));
        assert_eq!(
            cri["cni"]["conf_dir"].as_str(),
            Some("/run/dye/lab-x1/containerd/node-1/net.d")
        );
        assert_eq!(
            cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(false)
        );
    }
}
