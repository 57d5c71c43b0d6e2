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
                    if let Some((_, a)) = line.trim().split_once(": listening on ") {
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
#[test]
fn dye_refuses_an_agent_presenting_a_client_certificate() {
    require_root();
    let certs = Certs::new("role");
    // An agent directory whose agent certificate is really the client's (clientAuth EKU,
    // client role): the agent serves it, dye must refuse it.
    let swapped = Certs::new("swapped");
    for (from, to) in [
        ("client.pem", "agent.pem"),
        ("client-key.pem", "agent-key.pem"),
    ] {
        std::fs::copy(certs.file(from), swapped.file(to)).unwrap();
    }
    std::fs::copy(certs.file("ca.pem"), swapped.file("ca.pem")).unwrap();
    let agent = Agent::start(None, "127.0.0.1:0", &["--certs", swapped.path()], &[]);
    let out = dye(&[
        "trace",
        "--agents",
        &agent.addr,
        "--certs",
        certs.path(),
        "--from",
        "nowhere",
        "--to",
        "10.0.0.1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("extended key usage"), "{err}");
}

#[test]
fn dye_refuses_an_agent_whose_certificate_another_ca_signed() {
    require_root();
    let certs = Certs::new("srv");
    let other = Certs::new("cli");
    let agent = Agent::start(None, "127.0.0.1:0", &["--certs", certs.path()], &[]);
    let started = Instant::now();
    let out = dye(&[
        "trace",
        "--agents",
        &agent.addr,
        "--certs",
        other.path(),
        "--from",
        "nowhere",
        "--to",
        "10.0.0.1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&agent.addr), "{err}");
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // The agent saw a client from the other CA and said so.
    let log = agent.wait_log("refused connection");
    assert!(log.contains("refused connection"), "{log}");
}

/// Agents in both lab nodes, listening on their underlay addresses; node-2's clock shifted
/// by `node2_offset` (DYE_AGENT_CLOCK_OFFSET) when given.
fn lab_agents(lab: &support::Lab, certs: &Certs, node2_offset: Option<&str>) -> (Agent, Agent) {
    let a1 = Agent::start(
        Some(&lab.ns("node-1")),
        &format!("{}:7443", lab.addr("node-1", "eth0")),
        &["--certs", certs.path()],
        &[],
    );
    let env: Vec<(&str, &str)> = node2_offset
        .map(|o| vec![("DYE_AGENT_CLOCK_OFFSET", o)])
        .unwrap_or_default();
    let a2 = Agent::start(
        Some(&lab.ns("node-2")),
        &format!("{}:7443", lab.addr("node-2", "eth0")),
        &["--certs", certs.path()],
        &env,
    );
    (a1, a2)
}

/// `dye trace --json ARGS` through the agents, run on node-1 (the coordinator reaches the
/// agents over the underlay, as on a cluster node). Returns exit code, report, stderr.
fn agents_trace(
    lab: &support::Lab,
    agents: &str,
    certs: &Certs,
    args: &[&str],
) -> (i32, serde_json::Value, String) {
    let bin = dye_bin();
    let node1 = lab.ns("node-1");
    let mut argv = vec!["netns", "exec", node1.as_str(), bin.to_str().unwrap()];
    argv.extend_from_slice(&[
        "trace",
        "--json",
        "--agents",
        agents,
        "--certs",
        certs.path(),
    ]);
    argv.extend_from_slice(args);
    let out = Command::new("ip")
        .args(&argv)
        .stdin(Stdio::null())
        .output()
        .expect("run dye");
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}); exit {code}; stderr: {stderr}"));
    (code, report, stderr)
}

/// (netns, ifname, direction, leg) of every hop.
fn hop_list(r: &serde_json::Value) -> Vec<(String, String, String, String)> {
    r["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            (
                h["netns"].as_str().unwrap().to_string(),
                h["ifname"].as_str().unwrap().to_string(),
                h["direction"].as_str().unwrap().to_string(),
                h["leg"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn hop_time(r: &serde_json::Value, netns: &str, ifname: &str, dir: &str, leg: &str) -> i64 {
    r["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h["netns"] == netns && h["ifname"] == ifname && h["direction"] == dir && h["leg"] == leg
        })
        .unwrap_or_else(|| panic!("no hop {netns}/{ifname} {dir} {leg}"))["t_ns"]
        .as_i64()
        .unwrap()
}

/// The agents `dye lab up --agents` started ("ADDR,ADDR") and the certificates it made.
fn lab_agents_of(lab: &support::Lab) -> (String, String) {
    let agents: Vec<&str> = lab.view["agents"]
        .as_array()
        .expect("agents in the lab view")
        .iter()
        .map(|a| a["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        agents,
        [
            format!("{}:7443", lab.addr("node-1", "eth0")),
            format!("{}:7443", lab.addr("node-2", "eth0"))
        ]
    );
    let certs = lab.view["certs"].as_str().expect("certs in the lab view");
    (agents.join(","), certs.to_string())
}

/// `dye lab exec --id ID node-1 -- dye trace --json --agents … --certs … ARGS`: the
/// coordinator on node-1, through the lab's own agents. Returns exit code, report, stderr.
fn lab_exec_trace(lab: &support::Lab, args: &[&str]) -> (i32, serde_json::Value, String) {
    lab_exec_dye(lab, "trace", args)
}

/// `dye lab exec --id ID node-1 -- dye COMMAND --json --agents … --certs … ARGS`.
fn lab_exec_dye(
    lab: &support::Lab,
    command: &str,
    args: &[&str],
) -> (i32, serde_json::Value, String) {
    let (agents, certs) = lab_agents_of(lab);
    let bin = dye_bin();
    let mut argv = vec!["lab", "exec", "--id", &lab.id, "node-1", "--"];
    argv.extend_from_slice(&[bin.to_str().unwrap(), command, "--json"]);
    argv.extend_from_slice(&["--agents", &agents, "--certs", &certs]);
    argv.extend_from_slice(args);
    let out = dye(&argv);
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}); exit {code}; stderr: {stderr}"));
    (code, report, stderr)
}

/// The lab's agents, as processes: (pid, command line) of each `dye agent` it runs.
fn agent_processes(id: &str) -> Vec<String> {
    support::lab_traces(id)
        .into_iter()
        .filter(|t| t.starts_with("process ") && t.contains(" agent --listen "))
        .collect()
}

#[test]
fn a_cross_node_trace_through_agents_has_the_hops_single_host_dye_sees() {
    let root_before = support::root_snapshot();
    let lab = support::Lab::up_with(&["--agents"]);
    let id = lab.id.clone();
    // One agent per node, inside the node's namespace, on its underlay address.
    let running = agent_processes(&id);
    assert_eq!(running.len(), 2, "{running:#?}");
    for node in ["node-1", "node-2"] {
        let addr = format!("{}:7443", lab.addr(node, "eth0"));
        let pid: i32 = running
            .iter()
            .find(|t| t.contains(&addr))
            .and_then(|t| t.strip_prefix("process ")?.split(':').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no agent on {addr}: {running:#?}"));
        let own = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        let node_ns = nix_ns_link(&lab.ns(node));
        assert_eq!(
            own, node_ns,
            "the agent on {addr} is not in {node}'s namespace"
        );
    }
    let pod_c = lab.pod_ip("pod-c");
    let pcap = support::TempPcap::new("agents");
    let (code, via_agents, err) = lab_exec_trace(
        &lab,
        &[
            "--from",
            &lab.ns("pod-a"),
            "--to",
            &pod_c,
            "--pcap",
            pcap.path(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    // tshark reads one merged pcapng whose interfaces are named node/netns/ifname.
    let names: Vec<String> = support::tshark_fields(pcap.path(), &[], &["frame.interface_name"])
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    assert_eq!(names.len(), hop_list(&via_agents).len(), "{names:?}");
    assert!(
        names.contains(&format!("{0}/{0}/eth0", lab.ns("node-2"))),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("{}/{}/eth0", lab.ns("node-1"), lab.ns("pod-a"))),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("{}/{}/eth0", lab.ns("node-2"), lab.ns("pod-c"))),
        "{names:?}"
    );
    assert_eq!(via_agents["verdict"]["kind"], "answered", "{via_agents}");

    let out = dye(&[
        "trace",
        "--json",
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &pod_c,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let single: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The underlay switch is no node and runs no agent: on a cluster nobody sees inside it.
    let underlay = lab.ns("underlay");
    let expected: Vec<_> = hop_list(&single)
        .into_iter()
        .filter(|h| h.0 != underlay)
        .collect();
    assert!(expected.len() >= 16, "{expected:?}");
    assert_eq!(hop_list(&via_agents), expected);
    // Both nodes' hops, each attributed to its node.
    for h in via_agents["hops"].as_array().unwrap() {
        let node = h["node"].as_str().unwrap();
        assert!(node == lab.ns("node-1") || node == lab.ns("node-2"), "{h}");
    }
    let clocks = via_agents["agents"]["clocks"].as_array().expect("clocks");
    assert_eq!(clocks.len(), 2, "{clocks:?}");
    assert_eq!(via_agents["agents"]["reference"], lab.ns("node-1"));
    assert_eq!(clocks[1]["method"], "probe");
    assert!(via_agents["agents"]["blind"].as_array().unwrap().is_empty());
    // Agents, captures and the lab gone: the root namespace as it was, no process left.
    drop(lab);
    assert_eq!(support::root_snapshot(), root_before);
    assert_eq!(
        support::lab_traces(&id),
        Vec::<String>::new(),
        "lab down left these"
    );
}

#[test]
fn clock_offsets_come_from_the_probe_and_every_hop_follows_its_cause() {
    let lab = support::Lab::up();
    let certs = Certs::new("clock");
    for (shift, truth_us) in [("50ms", 50_000.0), ("-50ms", -50_000.0)] {
        let (a1, a2) = lab_agents(&lab, &certs, Some(shift));
        let agents = format!("{},{}", a1.addr, a2.addr);
        let (code, r, err) = agents_trace(
            &lab,
            &agents,
            &certs,
            &["--from", &lab.ns("pod-a"), "--to", &lab.pod_ip("pod-c")],
        );
        assert_eq!(code, 0, "{err}");
        let node2 = r["agents"]["clocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["node"] == lab.ns("node-2"))
            .cloned()
            .expect("node-2's clock");
        assert_eq!(node2["method"], "probe", "{node2}");
        let est = node2["offset_us"].as_f64().unwrap();
        let bound = node2["bound_us"].as_f64().unwrap();
        assert!((est - truth_us).abs() < 50.0, "{shift}: estimated {est} µs");
        assert!(bound < 500.0, "{shift}: bound {bound} µs");
        // Every hop of a leg after the one before it: one timeline.
        let hops = r["hops"].as_array().unwrap();
        for leg in ["forward", "return"] {
            let times: Vec<i64> = hops
                .iter()
                .filter(|h| h["leg"] == leg)
                .map(|h| h["t_ns"].as_i64().unwrap())
                .collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{shift} {leg}: {times:?}"
            );
        }
        // The underlay crossings, one way each: ≥ 0 and < 1 ms.
        let (n1, n2) = (lab.ns("node-1"), lab.ns("node-2"));
        let fwd = hop_time(&r, &n2, "eth0", "in", "forward")
            - hop_time(&r, &n1, "eth0", "out", "forward");
        let back =
            hop_time(&r, &n1, "eth0", "in", "return") - hop_time(&r, &n2, "eth0", "out", "return");
        for (what, d) in [("forward", fwd), ("return", back)] {
            assert!(
                (0..1_000_000).contains(&d),
                "{shift}: underlay {what} {d} ns"
            );
        }
        drop((a1, a2));
    }
}

/// Only node-1's agent runs; node-2's address is given but nothing listens there.
#[test]
fn a_node_whose_agent_is_down_is_named_blind_and_never_blamed_for_a_drop() {
    let lab = support::Lab::up();
    let certs = Certs::new("down");
    let a1 = Agent::start(
        Some(&lab.ns("node-1")),
        &format!("{}:7443", lab.addr("node-1", "eth0")),
        &["--certs", certs.path()],
        &[],
    );
    let dead = format!("{}:7443", lab.addr("node-2", "eth0"));
    let agents = format!("{},{dead}", a1.addr);
    let args = [
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--timeout",
        "1s",
    ];

    // Answered, but node-2 was not observed: a partial trace, exit 1.
    let started = Instant::now();
    let (code, r, err) = agents_trace(&lab, &agents, &certs, &args);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(code, 1, "{err}");
    assert_eq!(r["verdict"]["kind"], "answered");
    let blind = r["agents"]["blind"].as_array().unwrap();
    assert_eq!(blind.len(), 1, "{blind:?}");
    assert_eq!(blind[0]["agent"], dead);
    assert!(
        blind[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{blind:?}"
    );
    for h in r["hops"].as_array().unwrap() {
        assert_eq!(h["node"], lab.ns("node-1"), "{h}");
    }

    // node-2 drops the probe: nobody saw it after node-1's uplink, so no drop is claimed.
    lab.fault(&["drop-pod", "pod-c"]);
    let (code, r, err) = agents_trace(&lab, &agents, &certs, &args);
    assert_eq!(code, 1, "{err}");
    let v = &r["verdict"];
    assert_eq!(v["kind"], "unobserved", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{}/eth0 (out)", lab.ns("node-1"))),
        "{detail}"
    );
    assert!(detail.contains(&dead), "{detail}");
    assert!(!detail.contains("dropped in"), "{detail}");
}

#[test]
fn an_agent_killed_mid_trace_leaves_a_partial_trace_naming_its_node() {
    let lab = support::Lab::up();
    let certs = Certs::new("kill");
    let (a1, mut a2) = lab_agents(&lab, &certs, None);
    let agents = format!("{},{}", a1.addr, a2.addr);
    let node1 = lab.ns("node-1");
    let bin = dye_bin();
    let pod_a = lab.ns("pod-a");
    let pod_c = lab.pod_ip("pod-c");
    let started = Instant::now();
    let child = Command::new("ip")
        .args(["netns", "exec", &node1, bin.to_str().unwrap()])
        .args([
            "trace",
            "--json",
            "--agents",
            &agents,
            "--certs",
            certs.path(),
        ])
        .args(["--from", &pod_a, "--to", &pod_c])
        .args(["--count", "8", "--interval", "300ms", "--timeout", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Probes go out for 2.4 s; node-2's agent dies in the middle.
    std::thread::sleep(Duration::from_millis(1500));
    a2.kill();
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let blind = r["agents"]["blind"].as_array().unwrap();
    assert_eq!(blind.len(), 1, "{blind:?}");
    assert_eq!(blind[0]["node"], lab.ns("node-2"));
    // node-2's points are reported lost, node-1's are not.
    let node2: Vec<String> = ["node-2", "pod-c", "pod-d"]
        .iter()
        .map(|m| format!("{}/", lab.ns(m)))
        .collect();
    for p in r["capture"].as_array().unwrap() {
        let on_node2 = node2
            .iter()
            .any(|n| p["name"].as_str().unwrap().starts_with(n.as_str()));
        assert_eq!(!p["lost"].is_null(), on_node2, "{p}");
    }
    // Probes before the kill were seen on node-2; none is called dropped there.
    assert_ne!(r["verdict"]["kind"], "dropped", "{}", r["verdict"]);
}

/// A ClusterIP (owned by no node, so every agent captures) and a drop on node-2, both traced
/// from a coordinator on node-1.
#[test]
fn a_clusterip_dnat_and_a_drop_on_node_2_are_traced_through_agents() {
    let lab = support::Lab::up();
    let certs = Certs::new("cip");
    let (a1, a2) = lab_agents(&lab, &certs, Some("-20ms"));
    let agents = format!("{},{}", a1.addr, a2.addr);
    let (code, r, err) = agents_trace(
        &lab,
        &agents,
        &certs,
        &[
            "--from",
            &lab.ns("pod-b"),
            "--to",
            "10.96.0.10:80",
            "--count",
            "6",
            "--interval",
            "20ms",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["verdict"]["kind"], "answered", "{}", r["verdict"]);
    let dnat = support::first_event(&r, "dnat").expect("a DNAT event");
    assert_eq!(dnat.1["from"], "10.96.0.10:80");
    // The conntrack entry confirming it came from node-1's agent.
    assert!(
        dnat.0["conntrack"]["orig"]
            .as_str()
            .unwrap()
            .contains("10.96.0.10:80"),
        "{}",
        dnat.0
    );
    assert!(r["agents"]["blind"].as_array().unwrap().is_empty());

    // DROP on node-2: localised inside node-2, between its VXLAN device and the pod.
    lab.fault(&["drop-pod", "pod-c"]);
    let (code, r, err) = agents_trace(
        &lab,
        &agents,
        &certs,
        &[
            "--from",
            &lab.ns("pod-a"),
            "--to",
            &lab.pod_ip("pod-c"),
            "--timeout",
            "1s",
        ],
    );
    assert_eq!(code, 1, "{err}");
    let v = &r["verdict"];
    assert_eq!(v["kind"], "dropped", "{v}");
    let node2 = lab.ns("node-2");
    assert!(
        v["expected_next"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{node2}/")),
        "{v}"
    );
    // node-2's agent traced the probe through its rules: the lab's DROP rule is named.
    assert_eq!(v["dropped_by"]["netns"], node2, "{v}");
    assert_eq!(v["dropped_by"]["chain"], "FORWARD", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("dropped in {node2} by nft rule")),
        "{v}"
    );
    // No return leg: node-2's clock comes from the RPC exchange, still about -20 ms.
    let c = r["agents"]["clocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node"] == node2)
        .cloned()
        .unwrap();
    assert_eq!(c["method"], "exchange", "{c}");
    let off = c["offset_us"].as_f64().unwrap();
    let bound = c["bound_us"].as_f64().unwrap();
    assert!((off + 20_000.0).abs() <= bound + 50.0, "{c}");
    assert!(bound < 20_000.0, "{c}");
}

/// What an agent refuses whatever the client asks, through the real coordinator.
#[test]
fn agents_enforce_their_bounds_with_errors_that_name_them() {
    let lab = support::Lab::up();
    let certs = Certs::new("bounds");
    let a1 = Agent::start(
        Some(&lab.ns("node-1")),
        &format!("{}:7443", lab.addr("node-1", "eth0")),
        &["--certs", certs.path(), "--max-probe-rate", "5"],
        &[],
    );
    let pod_c = lab.pod_ip("pod-c");
    let run = |extra: &[&str]| {
        let node1 = lab.ns("node-1");
        let bin = dye_bin();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node1, bin.to_str().unwrap()])
            .args(["trace", "--agents", &a1.addr, "--certs", certs.path()])
            .args(["--from", &lab.ns("pod-a"), "--to", &pod_c])
            .args(extra)
            .stdin(Stdio::null());
        let started = Instant::now();
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
            started.elapsed(),
        )
    };
    // 20 probes 10 ms apart against 5 per second: the sixth is refused.
    let (code, err, took) = run(&["--count", "20", "--interval", "10ms", "--timeout", "200ms"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("at most 5 probes per second"), "{err}");
    assert!(took < Duration::from_secs(10));
    // A capture longer than the agent's 2-minute bound is refused before anything is sent.
    let (code, err, _) = run(&["--count", "3", "--interval", "60s"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("exceeds this agent's bound of 2m"), "{err}");
}

/// What `/proc/PID/ns/net` of a process inside named namespace `ns` reads: `net:[INODE]`.
fn nix_ns_link(ns: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino();
    PathBuf::from(format!("net:[{ino}]"))
}

#[test]
fn an_agent_watching_a_path_stops_once_it_is_gone() {
    require_root();
    let certs = Certs::new("watch");
    let watched = std::env::temp_dir().join(format!("dye-agents-watched-{}", support::unique_id()));
    std::fs::create_dir(&watched).unwrap();
    let mut agent = Agent::start(
        None,
        "127.0.0.1:0",
        &[
            "--certs",
            certs.path(),
            "--exit-when-gone",
            watched.to_str().unwrap(),
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert!(agent.child.try_wait().unwrap().is_none(), "{}", agent.log());
    std::fs::remove_dir(&watched).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {}", agent.log());
    assert!(agent
        .wait_log("is gone: stopping")
        .contains("is gone: stopping"));
}

/// The fields of an MTU report that say what the path is: size, status, limiting link.
fn mtu_verdict(r: &serde_json::Value) -> (u64, String, serde_json::Value) {
    (
        r["path_mtu"].as_u64().expect("path_mtu"),
        r["status"].as_str().unwrap().to_string(),
        r["limit"]["link"].clone(),
    )
}

/// `dye mtu` through the lab's agents runs the same adaptive search over the merged stream:
/// on a healthy path, with node-1's underlay link shrunk, and with node-2's (whose link only
/// node-2's agent knows), it finds what single-host dye finds on the same lab.
#[test]
fn mtu_through_agents_finds_what_single_host_dye_finds() {
    let lab = support::Lab::up_with(&["--agents"]);
    let args = ["--from", &lab.ns("pod-a"), "--to", &lab.pod_ip("pod-c")];
    // Single-host dye on the same lab: it sees every node's namespaces from the root.
    let single = || {
        let mut argv = vec!["mtu", "--json"];
        argv.extend_from_slice(&args);
        let out = dye(&argv);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap(), r)
    };

    let (code, r, err) = lab_exec_dye(&lab, "mtu", &args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(mtu_verdict(&r).0, 1450, "{r}");
    assert_eq!(mtu_verdict(&r).1, "healthy", "{r}");
    let (scode, s) = single();
    // Healthy: node-1's and node-2's flannel.1 both have the path's MTU (1450), and which of two
    // equal links is named follows the forward leg's order, which through agents rests on the
    // clock estimate between the nodes: either is right as long as the other is listed with it.
    let (rv, sv) = (mtu_verdict(&r), mtu_verdict(&s));
    assert_eq!((code, &rv.0, &rv.1), (scode, &sv.0, &sv.1));
    assert_eq!(r["limit"]["mtu"], s["limit"]["mtu"]);
    let named = |x: &serde_json::Value| {
        let mut all = vec![x["limit"]["link"].as_str().unwrap_or_default().to_string()];
        for o in x["limit"]["also_at_this_mtu"]
            .as_array()
            .into_iter()
            .flatten()
        {
            all.push(o.as_str().unwrap_or_default().to_string());
        }
        all
    };
    assert!(
        named(&s).contains(&named(&r)[0]),
        "through agents {r} single-host {s}"
    );

    for link in ["node-1/eth0", "node-2/eth0"] {
        lab.fault(&["clear"]);
        lab.fault(&["link-mtu", link, "1400"]);
        lab.fault(&["vxlan-df"]);
        let (code, r, err) = lab_exec_dye(&lab, "mtu", &args);
        assert_eq!(code, 1, "{link}: {err}");
        assert_eq!(mtu_verdict(&r).0, 1350, "{link}: {r}");
        assert_eq!(mtu_verdict(&r).1, "black_hole", "{link}: {r}");
        let (scode, s) = single();
        assert_eq!(
            (code, mtu_verdict(&r)),
            (scode, mtu_verdict(&s)),
            "{link}: through agents {r} single-host {s}"
        );
        // The search really ran through node-1's agent: its probes were seen by agents.
        let probes = r["probes"].as_array().expect("probes");
        assert!(probes.len() >= 4, "{r}");
    }
}

/// (name, mtu) of every link but `lo` in lab member `member`'s namespace, as `ip -j link` says.
fn ip_links(lab: &support::Lab, member: &str) -> Vec<(String, u64)> {
    let out = lab.exec(member, &["ip", "-j", "link", "show"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut links: Vec<(String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap().to_string(),
                l["mtu"].as_u64().unwrap(),
            )
        })
        .filter(|(n, _)| n != "lo")
        .collect();
    links.sort();
    links
}

/// `dye topology --agents` merges what each node's agent sees: both nodes with their pods
/// (links checked against `ip`), the links inside nodes and none of anything else on the
/// host, the underlay wire between the nodes, and a dead agent named blind (exit 1).
#[test]
fn topology_through_agents_merges_every_nodes_picture() {
    let lab = support::Lab::up_with(&["--agents"]);
    let (code, t, err) = lab_exec_dye(&lab, "topology", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(t["schema"], "dye.topology.agents/v1");
    let nodes: Vec<&str> = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, [lab.ns("node-1"), lab.ns("node-2")]);
    let mut members = Vec::new();
    for ns in t["namespaces"].as_array().unwrap() {
        let name = ns["name"].as_str().unwrap();
        let member = name.strip_prefix(&format!("dye-{}-", lab.id)).unwrap();
        let node = match member {
            "node-1" | "pod-a" | "pod-b" => "node-1",
            "node-2" | "pod-c" | "pod-d" => "node-2",
            other => panic!("{other} is on no node with an agent: {ns}"),
        };
        assert_eq!(ns["node"], lab.ns(node), "{ns}");
        let mut links: Vec<(String, u64)> = ns["links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["name"].as_str().unwrap().to_string(),
                    l["mtu"].as_u64().unwrap(),
                )
            })
            .filter(|(n, _)| n != "lo")
            .collect();
        links.sort();
        assert_eq!(links, ip_links(&lab, member), "{member}");
        members.push(member.to_string());
    }
    members.sort();
    assert_eq!(
        members,
        ["node-1", "node-2", "pod-a", "pod-b", "pod-c", "pod-d"]
    );
    // Every connection touches one of this lab's nodes: nothing of other labs on the host.
    let prefix = format!("dye-{}-", lab.id);
    let edges = t["edges"].as_array().unwrap();
    for e in edges {
        let s = e.to_string();
        assert_eq!(
            s.matches("\"netns\":\"").count(),
            s.matches(&format!("\"netns\":\"{prefix}")).count(),
            "{e}"
        );
    }
    let pod_a_veth = edges
        .iter()
        .find(|e| e["type"] == "veth_pair" && e["b"]["netns"] == lab.ns("pod-a"))
        .unwrap_or_else(|| panic!("pod-a's veth pair: {edges:?}"));
    assert_eq!(pod_a_veth["a"]["netns"], lab.ns("node-1"));
    // The wire between the nodes, which neither agent sees alone.
    let wires = t["underlay"].as_array().unwrap();
    assert!(
        wires
            .iter()
            .any(|w| w["a"] == format!("{}/eth0", lab.ns("node-1"))
                && w["a_addr"] == lab.addr("node-1", "eth0")
                && w["b"] == format!("{}/eth0", lab.ns("node-2"))
                && w["b_addr"] == lab.addr("node-2", "eth0")),
        "{wires:?}"
    );
    assert!(t["blind"].as_array().unwrap().is_empty());

    // A third address where no agent listens: named blind, the two nodes still shown.
    let (agents, certs) = lab_agents_of(&lab);
    let dead = "192.168.50.99:7443";
    let bin = dye_bin();
    let spec = format!("{agents},{dead}");
    let out = dye(&[
        "lab",
        "exec",
        "--id",
        &lab.id,
        "node-1",
        "--",
        bin.to_str().unwrap(),
        "topology",
        "--json",
        "--agents",
        &spec,
        "--certs",
        &certs,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["nodes"].as_array().unwrap().len(), 2);
    let blind = t["blind"].as_array().unwrap();
    assert_eq!(blind.len(), 1, "{blind:?}");
    assert_eq!(blind[0]["agent"], dead);
}

/// Starts `dye capture --agents … ARGS` on node-1 (through `dye lab exec`) and waits until it
/// captures; returns the process.
fn start_agents_capture(lab: &support::Lab, args: &[&str]) -> Child {
    let (agents, certs) = lab_agents_of(lab);
    let bin = dye_bin();
    let mut child = Command::new(dye_bin())
        .args(["lab", "exec", "--id", &lab.id, "node-1", "--"])
        .arg(&bin)
        .args(["capture", "--agents", &agents, "--certs", &certs])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !line.contains("capturing on") {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            let _ = child.kill();
            panic!("the capture did not start: {line}");
        }
    }
    // The rest of stderr (the summary) is read when it ends.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest);
        eprint!("{rest}");
    });
    child
}

/// `dye capture --agents`: both nodes' agents capture with the user's filter and their frames
/// land in one pcapng that tshark reads, interfaces named node/netns/ifname; the filter sees
/// through VXLAN on the nodes' underlay links, as on one host.
#[test]
fn capture_through_agents_writes_one_pcapng_from_every_node() {
    let lab = support::Lab::up_with(&["--agents"]);
    let pcap = support::TempPcap::new("agents-capture");
    let pods = format!("dye-{}-pod-*", lab.id);
    let nodes_eth0 = format!("dye-{}-node-*/eth0", lab.id);
    let mut child = start_agents_capture(
        &lab,
        &[
            "--ns",
            &pods,
            "-i",
            "eth0",
            "-i",
            &nodes_eth0,
            "-w",
            pcap.path(),
            "--duration",
            "4s",
            "icmp",
        ],
    );
    let pod_c = lab.pod_ip("pod-c");
    let ping = lab.exec("pod-a", &["ping", "-c", "3", "-i", "0.2", &pod_c]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    // flannel's VXLAN port is not VXLAN's IANA one: tell tshark.
    let rows = support::tshark_fields(
        pcap.path(),
        &["-d", "udp.port==8472,vxlan"],
        &["frame.interface_name", "icmp.type", "vxlan.vni"],
    );
    let count = |iface: &str, icmp_type: &str, vxlan: bool| {
        rows.iter()
            .filter(|r| r[0] == iface && r[1] == icmp_type && r[2].is_empty() != vxlan)
            .count()
    };
    let name = |node: &str, member: &str| format!("{}/{}/eth0", lab.ns(node), lab.ns(member));
    for (node, member) in [("node-1", "pod-a"), ("node-2", "pod-c")] {
        assert_eq!(count(&name(node, member), "8", false), 3, "{rows:?}");
        assert_eq!(count(&name(node, member), "0", false), 3, "{rows:?}");
    }
    // Through the tunnel: the underlay frames carry the ICMP inside VXLAN (VNI 1).
    for node in ["node-1", "node-2"] {
        assert_eq!(count(&name(node, node), "8", true), 3, "{rows:?}");
        assert_eq!(count(&name(node, node), "0", true), 3, "{rows:?}");
    }
    // One timeline: the frames of both agents in time order (on the RPC clock estimate, so
    // not necessarily in causal order across nodes: that takes a probe, `dye trace`).
    let times: Vec<f64> = support::tshark_fields(pcap.path(), &[], &["frame.time_epoch"])
        .iter()
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // Every point the selection named is an interface of the file, and nothing else.
    let out = Command::new("capinfos")
        .args(["-I", pcap.path()])
        .output()
        .expect("capinfos (Debian package wireshark-common)");
    let text = String::from_utf8_lossy(&out.stdout);
    for (node, member) in [
        ("node-1", "pod-a"),
        ("node-1", "pod-b"),
        ("node-2", "pod-c"),
        ("node-2", "pod-d"),
        ("node-1", "node-1"),
        ("node-2", "node-2"),
    ] {
        assert!(text.contains(&name(node, member)), "{text}");
    }
    assert_eq!(text.matches("Interface #").count(), 6, "{text}");
}

/// A NetworkPolicy-style nftables drop on node-2, traced from a coordinator on node-1: node-2's
/// agent traces the probe through its rules and watches the kernel drop it, and the verdict
/// names the rule (its handle checked against `nft -a list`) and the kernel's reason — what
/// single-host dye says on the same lab.
#[test]
fn a_drop_on_node_2_is_named_by_its_rule_from_a_coordinator_on_node_1() {
    let lab = support::Lab::up_with(&["--agents"]);
    lab.fault(&["netpol-drop", "pod-c"]);
    let args = [
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--timeout",
        "1s",
    ];
    let (code, r, err) = lab_exec_trace(&lab, &args);
    assert_eq!(code, 1, "{err}");
    let v = &r["verdict"];
    assert_eq!(v["kind"], "dropped", "{v}");
    let node2 = lab.ns("node-2");
    let by = &v["dropped_by"];
    assert_eq!(by["netns"], node2, "{v}");
    assert_eq!(
        (&by["family"], &by["table"], &by["chain"]),
        (&"inet".into(), &"netpol".into(), &"ingress-pod-c".into())
    );
    let rule = "ip saddr 10.244.0.0/16 ip saddr != 10.244.2.0/24 drop";
    assert_eq!(by["rule"], rule, "{v}");
    let listing = lab.exec(
        "node-2",
        &[
            "nft",
            "-a",
            "list",
            "chain",
            "inet",
            "netpol",
            "ingress-pod-c",
        ],
    );
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    let handle: u64 = listing
        .lines()
        .find(|l| l.contains(rule))
        .and_then(|l| l.rsplit("# handle ").next())
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rule {rule:?} in:\n{listing}"));
    assert_eq!(by["handle"], handle, "{v}");
    let k = &v["kernel_drop"];
    assert_eq!(k["netns"], node2, "{v}");
    assert_eq!(k["reason"], "NETFILTER_DROP", "{v}");
    // The rules under the hop where the probe vanished, as on one host.
    let last = v["last_seen"].as_u64().expect("last seen") as usize;
    let rules: Vec<(&str, &str)> = r["hops"][last]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| (r["chain"].as_str().unwrap(), r["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rules,
        [("forward", "jump ingress-pod-c"), ("ingress-pod-c", "drop")]
    );
    // Single-host dye on the same lab gives the same rule.
    let mut argv = vec!["trace", "--json"];
    argv.extend_from_slice(&args);
    let out = dye(&argv);
    let single: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(single["verdict"]["dropped_by"], *by);
    // The agents' tracing tables are gone with the trace.
    for node in ["node-1", "node-2"] {
        let tables = lab.exec(node, &["nft", "list", "tables"]);
        let tables = String::from_utf8_lossy(&tables.stdout).to_string();
        assert!(!tables.contains("dye_"), "{node}: {tables}");
    }
}

/// Two agents that call themselves one node would merge into one picture and hide the second
/// node's hops: the second is named blind, with why, and the trace is partial (exit 1).
#[test]
fn two_agents_with_one_node_name_are_not_merged_silently() {
    let lab = support::Lab::up();
    let certs = Certs::new("samename");
    let start = |node: &str| {
        Agent::start(
            Some(&lab.ns(node)),
            &format!("{}:7443", lab.addr(node, "eth0")),
            &["--certs", certs.path(), "--node-name", "worker"],
            &[],
        )
    };
    let (a1, a2) = (start("node-1"), start("node-2"));
    let agents = format!("{},{}", a1.addr, a2.addr);
    let args = ["--from", &lab.ns("pod-a"), "--to", &lab.pod_ip("pod-c")];
    let (code, r, err) = agents_trace(&lab, &agents, &certs, &args);
    assert_eq!(code, 1, "{err}");
    let blind = r["agents"]["blind"].as_array().expect("blind nodes");
    assert_eq!(blind.len(), 1, "{blind:?}");
    assert_eq!(blind[0]["agent"], a2.addr);
    let reason = blind[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("\"worker\"") && reason.contains("--node-name"),
        "{reason}"
    );
}

/// An agent given its node's container runtime names every pod there by its pod, learned
/// over CRI: node-2's agent (`--runtime-endpoint` node-2's containerd) reports pod-c, pod-d and
/// an idle pod (which has no /run/netns name at all) as `pod NAMESPACE/NAME`, in the merged
/// topology and in a trace's hops, which are pod-c's hops as single-host dye names them by
/// netns. Node-2's own namespace keeps its name; node-1's agent, given no runtime, names its
/// pods as before. On one host, dye names only a namespace without a name of its own after its
/// pod: the idle pod, not pod-c (whose /run/netns name the user addresses it by).
#[test]
fn an_agent_with_its_nodes_runtime_names_pods_by_their_pods() {
    let lab = support::Lab::up_with(&["--idle-pods", "1"]);
    let member = |name: &str| {
        lab.view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .unwrap_or_else(|| panic!("no member {name}"))
            .clone()
    };
    let socket = member("node-2")["cri_socket"]
        .as_str()
        .expect("node-2's CRI socket")
        .to_string();
    let pod_c = member("pod-c")["pod"].clone();
    let k8s_ns = pod_c["namespace"].as_str().expect("pod-c's namespace");
    let named = |pod: &str| format!("pod {k8s_ns}/{pod}");
    let certs = Certs::new("podnames");
    let a1 = Agent::start(
        Some(&lab.ns("node-1")),
        &format!("{}:7443", lab.addr("node-1", "eth0")),
        &["--certs", certs.path()],
        &[],
    );
    let a2 = Agent::start(
        Some(&lab.ns("node-2")),
        &format!("{}:7443", lab.addr("node-2", "eth0")),
        &["--certs", certs.path(), "--runtime-endpoint", &socket],
        &[],
    );
    let agents = format!("{},{}", a1.addr, a2.addr);

    // The merged topology: node-2's pods by their pods, each on node-2.
    let bin = dye_bin();
    let node1 = lab.ns("node-1");
    let out = Command::new("ip")
        .args(["netns", "exec", &node1])
        .arg(&bin)
        .args(["topology", "--json", "--agents", &agents, "--certs"])
        .arg(certs.path())
        .stdin(Stdio::null())
        .output()
        .expect("run dye topology");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let on: Vec<(String, String)> = t["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["node"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (n1, n2) = (lab.ns("node-1"), lab.ns("node-2"));
    for (name, node) in [
        (named("pod-c"), &n2),
        (named("pod-d"), &n2),
        (named("idle-node-2-1"), &n2),
        (n2.clone(), &n2),
        (lab.ns("pod-a"), &n1),
        (lab.ns("pod-b"), &n1),
    ] {
        assert!(
            on.contains(&(name.clone(), node.clone())),
            "{name} on {node}: {on:?}"
        );
    }
    assert!(!on.iter().any(|(n, _)| *n == lab.ns("pod-c")), "{on:?}");
    // The idle pod's address, for the single-host check below.
    let idle = t["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == named("idle-node-2-1"))
        .unwrap();
    let idle_ip = idle["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "eth0")
        .and_then(|l| l["addresses"].as_array()?.first()?["addr"].as_str())
        .unwrap_or_else(|| panic!("the idle pod's eth0 address: {idle}"))
        .to_string();

    // A trace through the agents: pod-c's hops read as the pod, on node-2, and are the hops
    // single-host dye sees in dye-ID-pod-c.
    let pcap = support::TempPcap::new("podnames");
    let ip_c = lab.pod_ip("pod-c");
    let (code, via_agents, err) = agents_trace(
        &lab,
        &agents,
        &certs,
        &[
            "--from",
            &lab.ns("pod-a"),
            "--to",
            &ip_c,
            "--pcap",
            pcap.path(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(via_agents["verdict"]["kind"], "answered", "{via_agents}");
    let hops = via_agents["hops"].as_array().unwrap();
    let in_pod_c: Vec<&serde_json::Value> = hops
        .iter()
        .filter(|h| h["netns"] == named("pod-c"))
        .collect();
    assert!(in_pod_c.len() >= 2, "{hops:?}");
    assert!(
        in_pod_c.iter().all(|h| h["node"] == n2.as_str()),
        "{hops:?}"
    );
    // tshark reads the merged pcapng's interface as node/netns/ifname.
    let interfaces: Vec<String> =
        support::tshark_fields(pcap.path(), &[], &["frame.interface_name"])
            .into_iter()
            .map(|row| row[0].clone())
            .collect();
    let pod_c_if = format!("{n2}/{}/eth0", named("pod-c"));
    assert!(interfaces.contains(&pod_c_if), "{interfaces:?}");
    let out = dye(&["trace", "--json", "--from", &lab.ns("pod-a"), "--to", &ip_c]);
    assert!(out.status.success());
    let single: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let underlay = lab.ns("underlay");
    let expected: Vec<_> = hop_list(&single)
        .into_iter()
        .filter(|h| h.0 != underlay)
        .collect();
    let renamed_back: Vec<_> = hop_list(&via_agents)
        .into_iter()
        .map(|mut h| {
            if h.0 == named("pod-c") {
                h.0 = lab.ns("pod-c");
            }
            h
        })
        .collect();
    assert_eq!(renamed_back, expected);
    // From the renamed pod, asked for by its /run/netns name: the source's agent knows it by
    // its pod, and the probes leave from it.
    let ip_a = lab.pod_ip("pod-a");
    let (code, back, err) = agents_trace(
        &lab,
        &agents,
        &certs,
        &["--from", &lab.ns("pod-c"), "--to", &ip_a],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(back["verdict"]["kind"], "answered", "{back}");
    assert_eq!(back["hops"][0]["netns"], named("pod-c").as_str(), "{back}");
    assert_eq!(back["hops"][0]["direction"], "out", "{back}");

    // One host: with node-2's runtime, the idle pod (no /run/netns name) reads as its pod;
    // pod-c keeps the name the user knows it by. Without the runtime, the idle pod is a process's.
    let hop_names = |args: &[&str]| -> Vec<String> {
        let mut argv = vec!["trace", "--json", "--from", &n2, "--to", &idle_ip];
        argv.extend_from_slice(args);
        let out = dye(&argv);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        hop_list(&r).into_iter().map(|h| h.0).collect()
    };
    let with = hop_names(&["--runtime-endpoint", &socket]);
    assert!(with.contains(&named("idle-node-2-1")), "{with:?}");
    let without = hop_names(&[]);
    assert!(!without.contains(&named("idle-node-2-1")), "{without:?}");
    let by_pid = without
        .iter()
        .find(|n| n.starts_with("pid:"))
        .unwrap_or_else(|| panic!("{without:?}"));
    // `dye topology --ns pid:N` of that process names it by its pod as well.
    let pid = by_pid.split('(').next().unwrap();
    let out = dye(&[
        "topology",
        "--json",
        "--runtime-endpoint",
        &socket,
        "--ns",
        pid,
    ]);
    assert!(out.status.success());
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        t["namespaces"][0]["name"],
        named("idle-node-2-1").as_str(),
        "{t}"
    );
    let (code, single_c, err) = {
        let out = dye(&[
            "trace",
            "--json",
            "--runtime-endpoint",
            &socket,
            "--from",
            &n2,
            "--to",
            &ip_c,
        ]);
        (
            out.status.code().unwrap_or(-1),
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = hop_list(&single_c).into_iter().map(|h| h.0).collect();
    assert!(names.contains(&lab.ns("pod-c")), "{names:?}");
    assert!(!names.contains(&named("pod-c")), "{names:?}");
}

/// `dye lab fault ID underlay-cut node-2` from the coordinator's side: node-2's agent cannot
/// be reached, so node-2 is blind with why, the trace is partial and ends where node-1 last
/// saw the probe (its uplink), and nothing is blamed on node-2; `clear` reconnects it.
#[test]
fn a_node_cut_off_the_underlay_is_blind_with_why_and_clear_reconnects_it() {
    let lab = support::Lab::up_with(&["--agents"]);
    let node1 = lab.ns("node-1");
    let node2 = lab.ns("node-2");
    let underlay = lab.ns("underlay");
    let node2_agent = format!("{}:7443", lab.addr("node-2", "eth0"));
    let args = [
        "--from",
        &lab.ns("pod-a"),
        "--to",
        &lab.pod_ip("pod-c"),
        "--timeout",
        "1s",
    ];

    // Healthy first. This also leaves node-1's ARP entry for node-2 fresh, as node-to-node
    // traffic keeps it on a cluster, so the cut shows as it does in its first seconds: the
    // probe leaves node-1 and vanishes on the underlay.
    let (code, r, err) = lab_exec_trace(&lab, &args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["verdict"]["kind"], "answered", "{}", r["verdict"]);
    assert_eq!(link_flags(&underlay, "node-2"), (true, "UP".to_string()));

    lab.fault(&["underlay-cut", "node-2"]);
    // Outside view: the switch port is down; node-2's eth0 stays up but loses its carrier.
    assert_eq!(link_flags(&underlay, "node-2"), (false, "DOWN".to_string()));
    let (admin_up, oper) = link_flags(&node2, "eth0");
    assert!(admin_up, "node-2's own eth0 must not be touched");
    assert_eq!(oper, "DOWN");
    // A second identical cut is refused, saying why.
    let again = dye(&["lab", "fault", &lab.id, "underlay-cut", "node-2"]);
    assert_eq!(again.status.code(), Some(2));
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(
        why.contains("node-2 is already cut off the underlay"),
        "{why}"
    );

    let started = Instant::now();
    let (code, r, err) = lab_exec_trace(&lab, &args);
    let elapsed = started.elapsed();
    eprintln!("trace with node-2 cut off: {elapsed:?}");
    // Partial: exit 1, after the connect deadline (3 s) plus the probe's 1 s timeout and the
    // captures' setup (about 5 s; 10 s leaves room for a loaded host), not after the kernel's
    // SYN retries (~2 min) or a call deadline.
    assert_eq!(code, 1, "{err}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let blind = r["agents"]["blind"].as_array().unwrap();
    assert_eq!(blind.len(), 1, "{blind:?}");
    assert_eq!(blind[0]["agent"], node2_agent, "{blind:?}");
    let reason = blind[0]["reason"].as_str().unwrap();
    assert!(reason.contains("no TCP connection within 3s"), "{reason}");
    // node-1's hops, and only node-1's, up to the probe leaving its uplink.
    let hops = hop_list(&r);
    assert!(
        hops.iter().all(|h| h.0 == node1 || h.0 == lab.ns("pod-a")),
        "{hops:?}"
    );
    assert!(
        hops.contains(&(node1.clone(), "eth0".into(), "out".into(), "forward".into())),
        "{hops:?}"
    );
    for h in r["hops"].as_array().unwrap() {
        assert_eq!(h["node"], node1, "{h}");
    }
    let v = &r["verdict"];
    assert_eq!(v["kind"], "unobserved", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("{node1}/eth0 (out)")), "{detail}");
    assert!(detail.contains(&node2_agent), "{detail}");
    assert!(!detail.contains("dropped in"), "{detail}");
    assert!(!detail.contains(&node2), "{detail}");

    // Long after a cut, node-1 has forgotten node-2's link-layer address (here: its neighbour
    // entry flushed). The probe then never leaves node-1, whose kernel drops it when ARP goes
    // unanswered: a drop on node-1, seen by node-1's agent, still none on node-2.
    let flushed = Command::new("ip")
        .args(["-n", &node1, "neigh", "flush", "to"])
        .arg(lab.addr("node-2", "eth0"))
        .status()
        .unwrap();
    assert!(flushed.success());
    let mut long = args.to_vec();
    // ARP gives up after 3 s (3 solicitations, 1 s apart): wait past that for the drop.
    *long.last_mut().unwrap() = "5s";
    let (code, r, err) = lab_exec_trace(&lab, &long);
    assert_eq!(code, 1, "{err}");
    let v = &r["verdict"];
    assert_eq!(v["kind"], "dropped", "{v}");
    assert_eq!(v["expected_next"], format!("{node1}/eth0 (out)"), "{v}");
    let k = &v["kernel_drop"];
    assert_eq!(
        (&k["netns"], &k["ifname"]),
        (&node1.as_str().into(), &"eth0".into()),
        "{v}"
    );
    assert_eq!(k["reason"], "NEIGH_FAILED", "{v}");
    assert!(!v["detail"].as_str().unwrap().contains(&node2), "{v}");
    let blind = r["agents"]["blind"].as_array().unwrap();
    assert_eq!(blind.len(), 1, "{blind:?}");
    assert_eq!(blind[0]["agent"], node2_agent, "{blind:?}");

    // clear brings the port up, and the same trace answers again through both agents.
    lab.fault(&["clear"]);
    assert_eq!(link_flags(&underlay, "node-2"), (true, "UP".to_string()));
    assert_eq!(link_flags(&node2, "eth0"), (true, "UP".to_string()));
    let (code, r, err) = lab_exec_trace(&lab, &args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["verdict"]["kind"], "answered", "{}", r["verdict"]);
    assert!(r["agents"]["blind"].as_array().unwrap().is_empty(), "{r}");
    assert!(hop_list(&r).iter().any(|h| h.0 == lab.ns("pod-c")));
}

/// (administratively up, operstate) of a link, as `ip -n NS -j link show` reports it.
fn link_flags(ns: &str, ifname: &str) -> (bool, String) {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show", "dev", ifname])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let link = &v[0];
    let up = link["flags"].as_array().unwrap().iter().any(|f| f == "UP");
    (up, link["operstate"].as_str().unwrap().to_string())
}
