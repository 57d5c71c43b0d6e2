//! Process ids as the container runtime numbers them, turned into ours. CRI reports a pod's
//! sandbox process by its PID in the runtime's PID namespace. dye on the node's host (or in a
//! hostPID pod) shares it; dye on a host whose runtimes run in PID namespaces of their own (a
//! lab of isolated nodes, a node inside a VM-like sandbox, kind) does not, and
//! `/proc/<that pid>` would be another process — the wrong network namespace, silently.
//!
//! The runtime is found at the other end of its socket (`SO_PEERCRED` gives its PID in ours),
//! its PID namespace compared with ours, and a sandbox PID translated through `NSpid` when they
//! differ: the process whose PID at the runtime's level is the reported one and that lives in
//! the runtime's namespace or below it (a process's children live in its PID namespace or a
//! descendant, so an ancestor-or-self in the runtime's namespace proves it). A runtime whose
//! namespace dye cannot see (dye in a container without hostPID) is an error, never a guess.

use std::path::Path;

/// At most this many parents are followed up from a candidate process.
const MAX_ANCESTORS: usize = 128;

/// The PID of the process serving `socket`, in our PID namespace (0: it is outside it).
pub fn runtime_pid(socket: &Path) -> Result<u32, String> {
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let cred = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("SO_PEERCRED on {}: {e}", socket.display()))?;
    Ok(u32::try_from(cred.pid()).unwrap_or(0))
}

fn pid_ns(pid: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|l| l.display().to_string())
}

/// `NSpid:` of a `/proc/PID/status` text: the PID in each namespace, ours first.
fn nspid(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn parent(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `pid` as the runtime at `runtime` (its PID in ours) numbers it → the same process's PID in
/// ours.
pub fn translate(runtime: u32, pid: u32) -> Result<u32, String> {
    if runtime == 0 {
        return Err(
            "the container runtime runs in a PID namespace dye cannot see into \
                    (run dye in the host's PID namespace: hostPID)"
                .into(),
        );
    }
    let ours = pid_ns("self").ok_or("cannot read /proc/self/ns/pid")?;
    let theirs = std::fs::read_link(format!("/proc/{runtime}/ns/pid"))
        .map(|l| l.display().to_string())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "permission denied on /proc/{runtime}/ns/pid of the container runtime: looking                  into another process's namespaces takes CAP_SYS_PTRACE"
            ),
            _ => format!("cannot read the PID namespace of the runtime (pid {runtime}): {e}"),
        })?;
    if theirs == ours {
        return Ok(pid);
    }
    let level = std::fs::read_to_string(format!("/proc/{runtime}/status"))
        .map(|s| nspid(&s).len())
        .unwrap_or(0);
    let level = level
        .checked_sub(1)
        .filter(|l| *l > 0)
        .ok_or_else(|| format!("the runtime (pid {runtime}) shows no PID namespace below ours"))?;
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("read /proc: {e}"))?;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            continue;
        };
        if name.parse::<u32>().is_err() {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{name}/status")) else {
            continue;
        };
        let ids = nspid(&status);
        if ids.get(level) != Some(&pid) {
            continue;
        }
        if in_namespace_tree(&name, &status, &theirs) {
            return ids
                .first()
                .copied()
                .ok_or_else(|| format!("process {name} has no PID"));
        }
    }
    Err(format!(
        "no process here is the runtime's pid {pid} (the runtime, pid {runtime}, runs in its \
         own PID namespace)"
    ))
}

/// True when `pid` or one of its ancestors runs in PID namespace `ns`.
fn in_namespace_tree(pid: &str, status: &str, ns: &str) -> bool {
    let mut current = pid.to_string();
    let mut status = status.to_string();
    for _ in 0..MAX_ANCESTORS {
        if pid_ns(&current).as_deref() == Some(ns) {
            return true;
        }
        match parent(&status) {
            Some(p) if p > 0 => {
                current = p.to_string();
                match std::fs::read_to_string(format!("/proc/{current}/status")) {
                    Ok(s) => status = s,
                    Err(_) => return false,
                }
            }
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_and_parent_come_from_status() {
        let status = "Name:\tsleep\nPPid:\t4120\nNSpid:\t4242\t71\t1\n";
        assert_eq!(nspid(status), vec![4242, 71, 1]);
        assert_eq!(parent(status), Some(4120));
        assert!(nspid("Name:\tx\n").is_empty());
        assert_eq!(parent("NSpid:\tgarbage\n"), None);
        assert!(nspid("NSpid:\tx y\n").is_empty());
    }

    #[test]
    fn our_own_namespace_translates_to_itself() {
        let me = std::process::id();
        assert_eq!(translate(me, 12345), Ok(12345));
    }

    #[test]
    fn an_invisible_runtime_is_an_error_not_a_guess() {
        let e = translate(0, 71).unwrap_err();
        assert!(e.contains("hostPID"), "{e}");
    }
}
