//! Isolated lab nodes (`dye lab up --isolated`): each node is a host of its own, as on a real
//! cluster — its network namespace plus its own mount, PID and UTS namespaces. Its containerd,
//! its pods' sandbox processes and its agent run there; its `/proc` lists only them
//! (`/proc/1/ns/net` is the node's network), its `/run/netns` only its pods' namespaces
//! (`cni-…`, as containerd names them), its hostname is the node's name, and
//! `/run/containerd/containerd.sock` reaches its runtime, where dye looks by default.
//!
//! The node's PID 1 is `dye lab node-init`: it starts containerd, reaps orphans, and exits
//! when told to (SIGTERM) or when the lab's state directory is gone. When a PID namespace's
//! init exits the kernel kills every process in it, so a node never outlives its lab; the
//! launcher holds the init with `unshare --kill-child`, so killing the launcher (even SIGKILL)
//! ends the node too. The host still sees everything (its PID namespace is the parent): the
//! lab publishes pods under `/run/netns` on the host as in a flat lab, by their host PIDs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::LabError;

/// The node's mounts, then its init. Runs as PID 1 of the node's new PID namespace, in its new
/// mount namespace (slave of the host's: the host's mounts appear, the node's stay inside).
/// $1 the lab state directory (bound back into the private /run), $2 containerd's config,
/// $3 the hostname, $4 the dye binary, $5 containerd's socket.
pub const NODE_LAUNCH: &str = concat!(
    "set -e\nexec 3<\"$1\"\n",
    "echo \"$3\" > /proc/sys/kernel/hostname\n",
    super::containerd::private_mounts!(),
    // This node's processes only (a PID namespace's own procfs).
    "mount -t proc proc /proc\n",
    "mkdir -p /run/containerd /run/netns\n",
    "ln -s \"$5\" /run/containerd/containerd.sock\n",
    "exec \"$4\" lab node-init --watch \"$1\" -- containerd --config \"$2\"\n"
);

/// The admin host's mounts, then its init (no runtime): $1 the lab state directory (its
/// certificates stay readable), $3 the hostname, $4 the dye binary.
pub const ADMIN_LAUNCH: &str = concat!(
    "set -e\nexec 3<\"$1\"\n",
    "echo \"$3\" > /proc/sys/kernel/hostname\n",
    super::containerd::private_mounts!(),
    "mount -t proc proc /proc\n",
    "mkdir -p /run/netns\n",
    "exec \"$4\" lab node-init --watch \"$1\"\n"
);

/// Starts a host of its own in network namespace `netns` with `script` (`ADMIN_LAUNCH`'s
/// arguments) and returns its launcher's PID; [`init_pid`] finds its PID 1.
pub fn launch(
    state_dir: &Path,
    netns: &str,
    script: &str,
    hostname: &str,
    log: &Path,
) -> Result<u32, LabError> {
    let exe = std::env::current_exe().map_err(|e| LabError::io("locate the dye binary", e))?;
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}"))
        .args(UNSHARE)
        .args(["sh", "-c", script, "dye-host"])
        .arg(state_dir)
        .arg("-")
        .arg(hostname)
        .arg(exe);
    super::cmd::spawn_daemon(&mut cmd, log, &format!("host {hostname} in {netns}"))
}

/// The `unshare` arguments that make a node its own host: new mount, UTS and PID namespaces
/// (the forked child is PID 1), killed with its launcher.
pub const UNSHARE: &[&str] = &[
    "unshare",
    "--mount",
    "--uts",
    "--pid",
    "--fork",
    "--kill-child",
    "--propagation",
    "slave",
];

/// The node's PID 1 as the host numbers it: the child `unshare --fork` made (`launcher` is the
/// `unshare` process). Waits up to `timeout` for it to exist.
pub fn init_pid(launcher: u32, timeout: Duration) -> Result<u32, LabError> {
    let deadline = Instant::now() + timeout;
    let children = format!("/proc/{launcher}/task/{launcher}/children");
    loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().find_map(|p| p.parse().ok()) {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(LabError::Runtime {
                detail: format!(
                    "the node launcher (pid {launcher}) made no init within {} ms",
                    timeout.as_millis()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `nsenter` into every namespace of the node whose init is `init` (network, mount, UTS, PID:
/// nsenter forks, so the command is in the node's PID namespace and sees its /proc), then
/// `argv`, in the caller's working directory (the node shares the host's files outside /run,
/// /proc, /sys and /var/lib, so relative paths keep working).
pub fn enter(init: u32, argv: &[String]) -> std::process::Command {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--target={init}"))
        .args(["--net", "--mount", "--uts", "--pid"]);
    if let Ok(cwd) = std::env::current_dir() {
        cmd.arg(format!("--wd={}", cwd.display()));
    }
    cmd.arg("--").args(argv);
    cmd
}

/// A command run in network namespace `netns` (a /run/netns name): with `ip netns exec` on a
/// flat lab, or, on an isolated node whose init is `init`, also in the node's mount, UTS and
/// PID namespaces (`nsenter` opens the namespace file before it enters the node's mounts), so
/// the node's /proc lists it and it ends with the node. Append the program and its arguments.
pub fn in_netns(init: Option<u32>, netns: &str) -> std::process::Command {
    match init {
        Some(init) => {
            let mut cmd = std::process::Command::new("nsenter");
            cmd.arg(format!("--target={init}"))
                .args(["--mount", "--uts", "--pid"])
                .arg(format!("--net=/run/netns/{netns}"))
                .arg("--");
            cmd
        }
        None => {
            let mut cmd = std::process::Command::new("ip");
            cmd.args(["netns", "exec", netns]);
            cmd
        }
    }
}

/// The host PID of the first process in cgroup `parent/id` (a container or pod sandbox made
/// with that cgroup parent): how the lab finds, in the host's numbering, a process the node's
/// runtime reports in the node's.
pub fn host_pid_in_cgroup(parent: &str, id: &str) -> Option<u32> {
    let relative = PathBuf::from(parent.trim_start_matches('/')).join(id);
    super::containerd::cgroup_hierarchies()
        .iter()
        .map(|h| h.join(&relative).join("cgroup.procs"))
        .find_map(|procs| {
            std::fs::read_to_string(procs)
                .ok()?
                .split_whitespace()
                .find_map(|p| p.parse().ok())
        })
}

/// The body of `dye lab node-init`: PID 1 of an isolated node. Starts `command` (if any: the
/// admin host runs none), reaps every child the namespace hands it, and returns when SIGTERM/SIGINT arrives or `watch` (the lab's
/// state directory) disappears; its exit then ends every process of the node.
pub fn run_init(watch: &Path, command: &[String]) -> std::io::Result<()> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    // An init gets only the signals it handles, even from the host.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    if let Some((program, args)) = command.split_first() {
        let child = std::process::Command::new(program).args(args).spawn()?;
        tracing::debug!(pid = child.id(), program, "node init started its runtime");
    }
    while !stop.load(Ordering::Relaxed) && watch.exists() {
        // Orphans of the node (shims, exited sandboxes) are ours to reap.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
