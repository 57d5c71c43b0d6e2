//! Running the system tools that build the lab (`ip`, `bridge`, `iptables-restore`, `sysctl`,
//! CNI plugins), each either in the root namespace context (`ip -n` commands, which only act
//! on the named namespace) or inside a lab namespace via `ip netns exec`.

use std::io::Write;
use std::process::{Command, Stdio};

use super::LabError;

/// A command line to run, kept as words so it can be shown in errors exactly as run.
#[derive(Debug, Clone)]
pub struct Cmd {
    argv: Vec<String>,
    stdin: Option<String>,
}

impl Cmd {
    pub fn new<I, S>(argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            stdin: None,
        }
    }

    /// `ip -n NS <args>`: acts on the namespace without entering it.
    pub fn ip(ns: &str, args: &str) -> Cmd {
        Cmd::new(
            ["ip", "-n", ns]
                .into_iter()
                .map(String::from)
                .chain(words(args)),
        )
    }

    /// `ip netns exec NS <argv>`: runs a program inside the namespace.
    pub fn in_ns<I, S>(ns: &str, argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all = vec!["ip".to_string(), "netns".into(), "exec".into(), ns.into()];
        all.extend(argv.into_iter().map(Into::into));
        Cmd::new(all)
    }

    pub fn stdin(mut self, input: impl Into<String>) -> Cmd {
        self.stdin = Some(input.into());
        self
    }

    /// Runs to completion; a non-zero exit becomes an error carrying the command and stderr.
    pub fn run(&self) -> Result<String, LabError> {
        let out = self.output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(LabError::Command {
                command: self.to_string(),
                status: out.status.code().unwrap_or(-1),
                stderr: summarize(&out.stderr, &out.stdout),
            })
        }
    }

    /// Runs and reports only whether it succeeded (for probing and best-effort cleanup).
    pub fn succeeds(&self) -> bool {
        self.output().map(|o| o.status.success()).unwrap_or(false)
    }

    fn output(&self) -> Result<std::process::Output, LabError> {
        tracing::debug!(command = %self, "run");
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| LabError::Internal("empty command".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| LabError::Spawn {
            command: self.to_string(),
            source: e,
        })?;
        if let (Some(input), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            // A plugin that exits early closes its stdin; its exit status tells the story.
            let _ = pipe.write_all(input.as_bytes());
        }
        child.wait_with_output().map_err(|e| LabError::Spawn {
            command: self.to_string(),
            source: e,
        })
    }
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.argv.join(" "))
    }
}

fn words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split_whitespace().map(String::from)
}

/// The useful part of a failed command's output: stderr, else stdout (CNI plugins report
/// errors as JSON on stdout), trimmed to a readable size.
fn summarize(stderr: &[u8], stdout: &[u8]) -> String {
    let text = if stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        stderr
    } else {
        stdout
    };
    let s = String::from_utf8_lossy(text);
    let s = s.trim();
    match s.char_indices().nth(600) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Starts `cmd` as one of the lab's long-running processes (a runtime, a responder, a
/// forwarder, an agent, a node's init): stdin closed, stdout and stderr to a new `log`, in its
/// own process group so that a Ctrl-C aimed at `dye lab up` does not stop what a lab that stays
/// up runs (teardown does). `what` names it in errors. Returns its PID.
pub fn spawn_daemon(
    cmd: &mut std::process::Command,
    log: &std::path::Path,
    what: &str,
) -> Result<u32, LabError> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log)
        .map_err(|e| LabError::io(format!("create {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| LabError::io(format!("open {}", log.display()), e))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| LabError::Spawn {
            command: what.to_string(),
            source: e,
        })?;
    Ok(child.id())
}
