//! Throwaway namespaces for tests: `dyetmp-<random>-<suffix>`, removed on drop (also on panic).
//! Nothing is ever added to the root namespace: veth pairs are created inside a test namespace
//! with the peer sent straight into another test namespace.

#![allow(dead_code)]

use std::process::Command;

pub struct TmpNs {
    pub prefix: String,
    names: Vec<String>,
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TmpNs {
    pub fn new() -> TmpNs {
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        TmpNs {
            prefix: format!("dyetmp-{}", &uuid.trim()[..8]),
            names: Vec::new(),
        }
    }

    /// Creates namespace `<prefix>-<suffix>` with `lo` up; returns its name.
    pub fn add(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        sh(&["ip", "netns", "add", &name]);
        self.names.push(name.clone());
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// A veth pair `a_if`@`a` <-> `b_if`@`b`, both up.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        self.ip(
            a,
            &[
                "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
            ],
        );
        self.ip(a, &["link", "set", a_if, "up"]);
        self.ip(b, &["link", "set", b_if, "up"]);
    }

    /// Runs a command inside a namespace (bounded commands only: ping -c, nc -w).
    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        sh(&v)
    }
}

impl Drop for TmpNs {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A small switched segment: `a` and `c` hang off bridge `br0` in `b` via veths.
/// a/eth0 10.99.0.1/24, c/eth0 10.99.0.2/24, b/br0 10.99.0.3/24 with a VXLAN `vx0`
/// (VNI 42, port 4789, local 10.99.0.3, dev br0, MTU 1450).
pub struct Segment {
    pub ns: TmpNs,
    pub a: String,
    pub b: String,
    pub c: String,
}

pub fn segment() -> Segment {
    let mut ns = TmpNs::new();
    let a = ns.add("a");
    let b = ns.add("b");
    let c = ns.add("c");
    ns.ip(&b, &["link", "add", "br0", "type", "bridge"]);
    ns.ip(&b, &["link", "set", "br0", "up"]);
    ns.ip(&b, &["addr", "add", "10.99.0.3/24", "dev", "br0"]);
    ns.veth(&a, "eth0", &b, "va");
    ns.veth(&c, "eth0", &b, "vc");
    ns.ip(&b, &["link", "set", "va", "master", "br0"]);
    ns.ip(&b, &["link", "set", "vc", "master", "br0"]);
    ns.ip(&a, &["addr", "add", "10.99.0.1/24", "dev", "eth0"]);
    ns.ip(&c, &["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    ns.ip(
        &b,
        &[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "42",
            "dstport",
            "4789",
            "local",
            "10.99.0.3",
            "dev",
            "br0",
            "df",
            "set",
        ],
    );
    ns.ip(&b, &["link", "set", "vx0", "mtu", "1450", "up"]);
    Segment { ns, a, b, c }
}

/// Three namespaces in a line, `c` — `r` — `s`, dual-stack, `r` forwarding:
/// c/eth0 10.N.1.1 fd00:N:1::1 · r/rc 10.N.1.2 fd00:N:1::2 · r/rs 10.N.2.1 fd00:N:2::1 ·
/// s/eth0 10.N.2.2 fd00:N:2::2 (N = `net`), default routes via `r`. Returns (c, r, s).
pub fn routed(ns: &mut TmpNs, net: u8) -> (String, String, String) {
    let c = ns.add("c");
    let r = ns.add("r");
    let s = ns.add("s");
    ns.veth(&c, "eth0", &r, "rc");
    ns.veth(&r, "rs", &s, "eth0");
    let a = |n: &str, dev: &str, v4: String, v6: String| {
        ns.ip(n, &["addr", "add", &v4, "dev", dev]);
        ns.ip(n, &["-6", "addr", "add", &v6, "dev", dev, "nodad"]);
    };
    a(
        &c,
        "eth0",
        format!("10.{net}.1.1/24"),
        format!("fd00:{net}:1::1/64"),
    );
    a(
        &r,
        "rc",
        format!("10.{net}.1.2/24"),
        format!("fd00:{net}:1::2/64"),
    );
    a(
        &r,
        "rs",
        format!("10.{net}.2.1/24"),
        format!("fd00:{net}:2::1/64"),
    );
    a(
        &s,
        "eth0",
        format!("10.{net}.2.2/24"),
        format!("fd00:{net}:2::2/64"),
    );
    ns.ip(
        &c,
        &["route", "add", "default", "via", &format!("10.{net}.1.2")],
    );
    ns.ip(
        &s,
        &["route", "add", "default", "via", &format!("10.{net}.2.1")],
    );
    ns.ip(
        &c,
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd00:{net}:1::2"),
        ],
    );
    ns.ip(
        &s,
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd00:{net}:2::1"),
        ],
    );
    ns.exec(
        &r,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ],
    );
    (c, r, s)
}
