//! `dye agent` and the coordinator (`dye trace --agents`), run as real processes: mutual TLS
//! checked with openssl's client as well as dye's own, and traces merged from agents running
//! inside the lab's node namespaces compared with single-host dye on the same lab.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{dye, dye_bin, require_root};

/// A certificate directory made by `dye certs`, removed on drop.
struct Certs(PathBuf);

impl Certs {
    fn new(tag: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!(
            "dye-agents-{tag}-{}-{}",
            std::process::id(),
            support::unique_id()
        ));
        let out = dye(&["certs", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "dye certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `dye agent`, killed on drop; its stderr is collected.
struct Agent {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts `dye -v agent --listen LISTEN ARGS` (inside `netns` when given) with `env`, and
    /// waits for it to listen.
    fn start(netns: Option<&str>, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(dye_bin());
                c
            }
            None => Command::new(dye_bin()),
        };
        cmd.args(["-v", "agent", "--listen", listen])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start dye agent");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    if let Some(a) = line.trim().strip_prefix("dye agent: listening on ") {
                        let _ = tx.send(a.to_string());
                    }
                    log.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("agent did not listen: {}", log.lock().unwrap());
            }
        };
        Agent { child, addr, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle` (at most 5 s).
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// openssl's TLS client against the agent, with an optional client certificate; returns
/// openssl's output.
fn openssl_connect(agent: &Agent, ca: &str, cert: Option<(&str, &str)>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &agent.addr, "-CAfile", ca])
        .args([
            "-verify_hostname",
            "dye-agent",
            "-alpn",
            "h2",
            "-verify_return_error",
        ]);
    if let Some((c, k)) = cert {
        cmd.args(["-cert", c, "-key", k]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (apt-get install openssl)");
    // Keep stdin open a moment so a TLS 1.3 server's verdict on the client certificate (sent
    // after the client's Finished) arrives before openssl quits.
    std::thread::sleep(Duration::from_millis(500));
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn agent_accepts_only_clients_the_ca_signed_for_the_client_role() {
    require_root();
    let certs = Certs::new("mtls");
    let other = Certs::new("other");
    // Loopback in the test's own namespace: nothing leaves the host.
    let agent = Agent::start(None, "127.0.0.1:0", &["--certs", certs.path()], &[]);
    let ca = certs.file("ca.pem");

    // A client with the right certificate: accepted, and openssl verified the agent against
    // the CA for the name dye-agent.
    let ok = openssl_connect(
        &agent,
        &ca,
        Some((&certs.file("client.pem"), &certs.file("client-key.pem"))),
    );
    assert!(ok.contains("Verify return code: 0 (ok)"), "{ok}");
    assert!(ok.contains("ALPN protocol: h2"), "{ok}");
    let log = agent.wait_log("client accepted");
    assert_eq!(count(&log, "client accepted"), 1, "{log}");
    assert_eq!(count(&log, "refused connection"), 0, "{log}");

    // No certificate: refused, with the reason logged.
    let none = openssl_connect(&agent, &ca, None);
    assert!(none.contains("certificate required"), "{none}");
    let log = agent.wait_log("peer sent no certificates");
    assert!(
        log.contains("refused connection: peer sent no certificates"),
        "{log}"
    );

    // A client certificate from another CA.
    let foreign = openssl_connect(
        &agent,
        &ca,
        Some((&other.file("client.pem"), &other.file("client-key.pem"))),
    );
    assert!(
        !foreign.contains("Verify return code: 0 (ok)") || foreign.contains("alert"),
        "{foreign}"
    );
    let log = agent.wait_log("UnknownIssuer");
    assert!(
        log.contains("refused connection: invalid peer certificate: UnknownIssuer"),
        "{log}"
    );

    // The agent's own certificate presented as a client's: its EKU is serverAuth only.
    let wrong_role = openssl_connect(
        &agent,
        &ca,
        Some((&certs.file("agent.pem"), &certs.file("agent-key.pem"))),
    );
    assert!(
        wrong_role.contains("alert unsupported certificate"),
        "{wrong_role}"
    );
    let log = agent.wait_log("extended key usage");
    assert!(
        log.contains("certificate does not allow extended key usage for client authentication"),
        "{log}"
    );
    // Exactly the one good client got in.
    assert_eq!(count(&log, "client accepted"), 1, "{log}");
    assert_eq!(count(&log, "refused connection"), 3, "{log}");
}
