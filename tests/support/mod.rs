//! Shared helpers for the end-to-end tests: a lab that is brought up with a unique id and
//! always torn down (also when the test panics), running commands inside lab namespaces, and
//! snapshots of the root namespace to prove nothing was left behind.
#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The `dye` binary under test.
pub fn dye_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dye"))
}

/// Runs `dye ARGS`, returning the output whatever the exit status.
pub fn dye(args: &[&str]) -> Output {
    Command::new(dye_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run dye")
}

/// The lab tests need root (namespaces, veths, iptables). Fail loudly rather than pass
/// without testing anything.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "end-to-end tests need root: run them through scripts/test.sh as root"
    );
}

/// A unique lab id per test: short (names stay under limits), distinct across processes
/// (pid) and within one (counter).
pub fn unique_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t{:x}x{n}", std::process::id() % 0x10_0000)
}

/// A running lab, torn down on drop.
pub struct Lab {
    pub id: String,
    pub view: serde_json::Value,
}

impl Lab {
    /// Brings up a lab from the built-in topology with a fresh id.
    pub fn up() -> Lab {
        Lab::up_with(&[])
    }

    /// Brings up a lab, passing extra `dye lab up` arguments.
    pub fn up_with(extra: &[&str]) -> Lab {
        require_root();
        let id = unique_id();
        let mut args = vec!["lab", "up", "--id", &id, "--json"];
        args.extend_from_slice(extra);
        let out = dye(&args);
        assert!(
            out.status.success(),
            "dye lab up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let view = serde_json::from_slice(&out.stdout).expect("lab up prints JSON");
        Lab { id, view }
    }

    /// The namespace of lab member `name` (pod-a, node-1, underlay, fw, office…).
    pub fn ns(&self, name: &str) -> String {
        format!("dye-{}-{}", self.id, name)
    }

    /// The first address in `key` (`addresses` or `addresses6`) of a member's interface, as
    /// the lab reports it, without its prefix length.
    fn first_address(&self, member: &str, ifname: &str, key: &str) -> String {
        let m = self.view["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == member))
            .unwrap_or_else(|| panic!("no member {member}"));
        let i = m["interfaces"]
            .as_array()
            .and_then(|is| is.iter().find(|i| i["name"] == ifname))
            .unwrap_or_else(|| panic!("no {member}/{ifname}"));
        let a = i[key][0]
            .as_str()
            .unwrap_or_else(|| panic!("{member}/{ifname} has no {key}"));
        a.split('/').next().unwrap_or(a).to_string()
    }

    /// The IPv4 address of a member's interface.
    pub fn addr(&self, member: &str, ifname: &str) -> String {
        self.first_address(member, ifname, "addresses")
    }

    /// A pod's address.
    pub fn pod_ip(&self, pod: &str) -> String {
        self.addr(pod, "eth0")
    }

    /// The global IPv6 address of a member's interface (dual-stack labs).
    pub fn addr6(&self, member: &str, ifname: &str) -> String {
        self.first_address(member, ifname, "addresses6")
    }

    /// A pod's IPv6 address.
    pub fn pod_ip6(&self, pod: &str) -> String {
        self.addr6(pod, "eth0")
    }

    /// Runs `argv` inside member `name`'s namespace.
    pub fn exec(&self, name: &str, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(name)])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec")
    }

    /// Runs `argv` in a member's namespace with `input` on stdin, keeping stdin open for
    /// `linger_ms` so datagram replies can arrive before the client exits.
    pub fn exec_with_input(
        &self,
        name: &str,
        argv: &[&str],
        input: &str,
        linger_ms: u64,
    ) -> Output {
        let script = format!(
            "(printf '%s' \"$0\"; sleep {}) | ip netns exec {} {}",
            linger_ms as f64 / 1000.0,
            self.ns(name),
            argv.join(" ")
        );
        Command::new("sh")
            .args(["-c", &script, input])
            .stdin(Stdio::null())
            .output()
            .expect("run sh")
    }

    /// True when one ping from `from` to `to` is answered within a second.
    pub fn ping(&self, from: &str, to: &str, payload: usize) -> bool {
        let size = payload.to_string();
        self.exec(from, &["ping", "-c1", "-W1", "-M", "dont", "-s", &size, to])
            .status
            .success()
    }

    /// The path MTU `member`'s kernel has cached towards `dst` (`ip route get` shows
    /// `mtu N` for a cached exception), if any.
    pub fn cached_pmtu(&self, member: &str, dst: &str) -> Option<u32> {
        let out = self.exec(member, &["ip", "route", "get", dst]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "mtu" {
                return words.next().and_then(|m| m.parse().ok());
            }
        }
        None
    }

    /// The first line a TCP service answers with (the responder's pod name), or "".
    pub fn tcp_hello(&self, from: &str, addr: &str, port: u16) -> String {
        let out = self.exec(from, &["ncat", "-w2", addr, &port.to_string()]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// The reply a UDP service gives to one datagram, or "".
    pub fn udp_hello(&self, from: &str, addr: &str, port: u16) -> String {
        let out = self.exec_with_input(
            from,
            &["ncat", "-u", "-w1", addr, &port.to_string()],
            "hi\n",
            400,
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// `dye lab fault ID ARGS…`, asserting success.
    pub fn fault(&self, args: &[&str]) {
        let mut all = vec!["lab", "fault", &self.id];
        all.extend_from_slice(args);
        let out = dye(&all);
        assert!(
            out.status.success(),
            "dye lab fault {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = dye(&["lab", "down", &self.id]);
        if !out.status.success() && !std::thread::panicking() {
            panic!(
                "dye lab down {}: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Namespaces on the host whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// What the root namespace looks like: links, addresses, routes (IPv4 and IPv6), iptables,
/// ip6tables and nftables rules, IPv6 policy rules and permanent neighbours.
/// Equal snapshots before and after prove a test left nothing in the root namespace.
pub fn root_snapshot() -> String {
    let run = |argv: &[&str]| -> String {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .expect("snapshot command");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let iptables: String = run(&["iptables-save"])
        .lines()
        .filter(|l| !l.starts_with('#')) // timestamps
        .map(|l| format!("{}\n", strip_counters(l)))
        .collect();
    let ip6tables: String = run(&["ip6tables-save"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{}\n", strip_counters(l)))
        .collect();
    [
        run(&["ip", "-o", "link", "show"])
            .lines()
            .map(|l| l.split(" qdisc").next().unwrap_or(l).to_string() + "\n")
            .collect::<String>(),
        run(&["ip", "-o", "addr", "show"]),
        run(&["ip", "route", "show", "table", "all"]),
        iptables,
        run(&["nft", "list", "ruleset"]),
        // RA-learned routes count their lifetime down: keep the route, drop the clock.
        run(&["ip", "-6", "route", "show", "table", "all"])
            .lines()
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let mut out = Vec::new();
                let mut skip = false;
                for w in words {
                    if skip {
                        skip = false;
                    } else if w == "expires" {
                        skip = true;
                    } else {
                        out.push(w);
                    }
                }
                out.join(" ") + "\n"
            })
            .collect::<String>(),
        ip6tables,
        run(&["ip", "-6", "rule", "show"]),
        run(&["ip", "-6", "neigh", "show", "nud", "permanent"]),
    ]
    .join("\n---\n")
}

fn strip_counters(line: &str) -> String {
    // ":CHAIN POLICY [packets:bytes]" — counters change with unrelated traffic.
    match line.find(" [") {
        Some(i) if line.starts_with(':') => line[..i].to_string(),
        _ => line.to_string(),
    }
}

/// `tshark -r PCAP -T fields` rows for `fields` (an outside tool's reading of a capture).
pub fn tshark_fields(pcap: &str, extra: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-r", pcap, "-T", "fields", "-E", "separator=|"])
        .args(extra);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(String::from).collect())
        .collect()
}

/// A capture file path under /tmp, removed on drop (also when the test fails).
pub struct TempPcap(String);

impl TempPcap {
    pub fn new(tag: &str) -> TempPcap {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempPcap(format!("/tmp/dye-test-{tag}-{n}.pcap"))
    }

    pub fn path(&self) -> &str {
        &self.0
    }
}

impl Drop for TempPcap {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Everything on the host that belongs to lab `id` besides its namespaces' contents, one line
/// each: live processes (containerd, shims, responders: their command line names the lab's
/// state directory; sandbox "pause" processes: they sit in the lab's cgroups), cgroup
/// directories named `dye-<id>-…` in every hierarchy, mounts naming the lab (the pods'
/// `/run/netns` binds, anything under its state directory), its named namespaces and its
/// state directory. Scoped to the lab, so labs of tests running in parallel do not disturb
/// it: empty before `up`, and empty again after `down` — or else something was left behind.
pub fn lab_traces(id: &str) -> Vec<String> {
    let state_dir = format!("/run/dye/lab-{id}");
    let cgroup = format!("dye-{id}-");
    let mut traces = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if zombie || pid == std::process::id() {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cmdline.contains(&format!("{state_dir}/")) || cgroups.contains(&format!("/{cgroup}")) {
            traces.push(format!("process {pid}: {}", cmdline.trim()));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let (pre, post) = line.split_once(" - ").unwrap_or((line, ""));
        let mount_point = pre.split_whitespace().nth(4).unwrap_or("");
        if post.starts_with("cgroup") {
            let Ok(entries) = std::fs::read_dir(mount_point) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&cgroup) {
                    traces.push(format!("cgroup {}", e.path().display()));
                }
            }
        }
        if line.contains(&cgroup)
            || line.contains(&format!("{state_dir}/"))
            || line.contains(&format!("{state_dir} "))
        {
            traces.push(format!("mount {line}"));
        }
    }
    for ns in namespaces_with_prefix(&cgroup) {
        traces.push(format!("namespace {ns}"));
    }
    if std::path::Path::new(&state_dir).exists() {
        traces.push(format!("state directory {state_dir}"));
    }
    traces
}

/// The first hop of report `r` with an event of `kind` (`dnat`, `snat`, …), and that event.
pub fn first_event<'r>(
    r: &'r serde_json::Value,
    kind: &str,
) -> Option<(&'r serde_json::Value, &'r serde_json::Value)> {
    r["hops"]
        .as_array()?
        .iter()
        .flat_map(|h| {
            h["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |e| (h, e))
        })
        .find(|(_, e)| e["type"] == kind)
}
