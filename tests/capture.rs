//! `dye capture` on the lab: a cross-node ping captured in pod, node and underlay namespaces
//! into one pcapng that capinfos and tshark read with the right interface names, packet count,
//! nanosecond timestamps and direction flags; Ctrl-C still leaves a valid file; bad references
//! fail before anything is captured, naming the bad thing.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{dye, dye_bin, Lab, TempPcap};

/// Starts `dye capture ARGS` and returns once it reports that it is capturing.
fn start_capture(args: &[&str]) -> Child {
    let mut child = Command::new(dye_bin())
        .arg("capture")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dye capture");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("capturing on"), "dye capture said: {line}");
    // Keep draining stderr in the background so the child never blocks on it.
    std::thread::spawn(move || {
        let mut rest = String::new();
        while stderr.read_line(&mut rest).map(|n| n > 0).unwrap_or(false) {}
        eprint!("{rest}");
    });
    child
}

fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("dye capture did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// interface name, comment, epoch time, packet comment, direction flags, ICMP type — per packet.
fn tshark_fields(path: &Path) -> Vec<Vec<String>> {
    support::tshark_fields(
        path.to_str().unwrap(),
        &[],
        &[
            "frame.interface_name",
            "frame.comment",
            "frame.time_epoch",
            "pkt_comment",
            "frame.packet_flags_direction",
            "icmp.type",
        ],
    )
}

/// pcapng direction flag: 1 inbound, 2 outbound (tshark prints 1/2 or 0x00000001/0x00000002).
fn dir(flag: &str) -> u32 {
    u32::from_str_radix(
        flag.trim_start_matches("0x"),
        if flag.starts_with("0x") { 16 } else { 10 },
    )
    .unwrap_or(0)
}

#[test]
fn cross_node_ping_captured_across_namespaces() {
    let lab = Lab::up();
    // Removed when the guard drops, also when the test fails.
    let pcap = TempPcap::new(&format!("capture-{}", lab.id));
    let file = PathBuf::from(pcap.path());
    let points = [
        ("pod-a", "eth0"),
        ("node-1", "cni0"),
        ("node-1", "flannel.1"),
        ("node-1", "eth0"),
        ("underlay", "br0"),
        ("node-2", "eth0"),
        ("node-2", "flannel.1"),
        ("node-2", "cni0"),
        ("pod-c", "eth0"),
    ];
    let mut args: Vec<String> = Vec::new();
    for (m, i) in points {
        args.push("-i".into());
        args.push(format!("{}/{i}", lab.ns(m)));
    }
    args.extend([
        "-w".into(),
        file.to_str().unwrap().into(),
        "--duration".into(),
        "20s".into(),
    ]);
    args.extend([
        "icmp".into(),
        "or".into(),
        "udp".into(),
        "port".into(),
        "8472".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = start_capture(&argv);
    let pod_c = lab.pod_ip("pod-c");
    let ping = lab.exec(
        "pod-a",
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", &pod_c],
    );
    assert!(
        ping.status.success(),
        "ping failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // Ctrl-C: dye stops, drains and still writes a complete file.
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait(&mut child, Duration::from_secs(10));
    assert!(status.success(), "dye capture exit {status:?}");

    let info = Command::new("capinfos")
        .args(["-c", "-T", "-r", "-k"])
        .arg(&file)
        .output()
        .unwrap();
    let info_s = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success(),
        "capinfos: {}",
        String::from_utf8_lossy(&info.stderr)
    );
    // 3 requests + 3 replies at each of the 9 points.
    assert!(info_s.contains("\t54"), "capinfos: {info_s}");
    assert!(
        info_s.contains("captured by dye on host"),
        "section comment: {info_s}"
    );

    let rows = tshark_fields(&file);
    assert_eq!(rows.len(), 54);
    let mut last = 0f64;
    for r in &rows {
        let frac = r[2].split('.').nth(1).unwrap_or("");
        assert_eq!(frac.len(), 9, "nanosecond timestamp: {r:?}");
        let t: f64 = r[2].parse().unwrap();
        assert!(t >= last, "time-ordered: {r:?}");
        last = t;
    }
    for (m, i) in points {
        let name = format!("{}/{i}", lab.ns(m));
        assert_eq!(rows.iter().filter(|r| r[0] == name).count(), 6, "{name}");
    }
    let at = |m: &str, i: &str, icmp_type: &str| -> Vec<u32> {
        let name = format!("{}/{i}", lab.ns(m));
        rows.iter()
            .filter(|r| r[0] == name && r[5] == icmp_type)
            .map(|r| dir(&r[4]))
            .collect()
    };
    // Echo requests leave pod-a, enter node-1 (cni0), leave through flannel.1, arrive on
    // node-2's flannel.1, leave cni0 and enter pod-c; replies the other way.
    assert_eq!(at("pod-a", "eth0", "8"), vec![2, 2, 2]);
    assert_eq!(at("pod-a", "eth0", "0"), vec![1, 1, 1]);
    assert_eq!(at("node-1", "cni0", "8"), vec![1, 1, 1]);
    assert_eq!(at("node-1", "flannel.1", "8"), vec![2, 2, 2]);
    assert_eq!(at("node-2", "flannel.1", "8"), vec![1, 1, 1]);
    assert_eq!(at("node-2", "cni0", "8"), vec![2, 2, 2]);
    assert_eq!(at("pod-c", "eth0", "8"), vec![1, 1, 1]);
    assert_eq!(at("pod-c", "eth0", "0"), vec![2, 2, 2]);
    // Underlay: VXLAN-encapsulated, so tshark decodes the inner ICMP too; both directions.
    let eth0_dirs: Vec<u32> = rows
        .iter()
        .filter(|r| r[0] == format!("{}/eth0", lab.ns("node-1")))
        .map(|r| dir(&r[4]))
        .collect();
    assert_eq!(eth0_dirs.iter().filter(|&&d| d == 2).count(), 3);
    assert_eq!(eth0_dirs.iter().filter(|&&d| d == 1).count(), 3);

    // Interface descriptions: kind, MTU, namespace, node.
    let ifs = Command::new("capinfos")
        .arg("-I")
        .arg(&file)
        .output()
        .unwrap();
    let ifs = String::from_utf8_lossy(&ifs.stdout);
    assert!(
        ifs.contains(&format!("vxlan mtu 1450, netns {}", lab.ns("node-1"))),
        "{ifs}"
    );
    assert!(ifs.contains(&format!("node {}", lab.ns("node-2"))), "{ifs}");
    assert!(ifs.contains("Time precision = nanoseconds (9)"), "{ifs}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn stops_on_count_and_duration() {
    let lab = Lab::up();
    // Removed when the guard drops, also when the test fails.
    let pcap = TempPcap::new(&format!("capture-count-{}", lab.id));
    let file = PathBuf::from(pcap.path());
    let ns = lab.ns("pod-a");
    let mut child = start_capture(&[
        "--ns",
        &ns,
        "-w",
        file.to_str().unwrap(),
        "-c",
        "4",
        "--duration",
        "20s",
        "icmp",
    ]);
    let pod_b = lab.pod_ip("pod-b");
    let _ = lab.exec(
        "pod-a",
        &["ping", "-c", "4", "-i", "0.2", "-W", "1", &pod_b],
    );
    let status = wait(&mut child, Duration::from_secs(10));
    assert!(status.success());
    assert_eq!(tshark_fields(&file).len(), 4);

    let t0 = Instant::now();
    let out = dye(&[
        "capture",
        "--ns",
        &ns,
        "-w",
        file.to_str().unwrap(),
        "--duration",
        "1s",
        "icmp",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t0.elapsed() < Duration::from_secs(8));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KERNEL-DROPPED") && err.contains(&format!("{ns}/eth0")),
        "{err}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn bad_references_fail_before_capture_naming_them() {
    let lab = Lab::up();
    // Removed when the guard drops, also when the test fails.
    let pcap = TempPcap::new(&format!("capture-bad-{}", lab.id));
    let file = PathBuf::from(pcap.path());
    let f = file.to_str().unwrap();
    let node1 = lab.ns("node-1");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "--ns".into(),
                "dye-nosuchlab-pod-a".into(),
                "-w".into(),
                f.into(),
            ],
            "dye-nosuchlab-pod-a".into(),
        ),
        (
            vec![
                "-i".into(),
                "dye-nosuchlab-pod-a/eth0".into(),
                "-w".into(),
                f.into(),
            ],
            "dye-nosuchlab-pod-a".into(),
        ),
        (
            vec!["-i".into(), format!("{node1}/eth9"), "-w".into(), f.into()],
            "eth9".into(),
        ),
        (
            vec![
                "--ns".into(),
                node1.clone(),
                "-i".into(),
                "nope0".into(),
                "-w".into(),
                f.into(),
            ],
            "nope0".into(),
        ),
        (
            vec![
                "--ns".into(),
                node1.clone(),
                "-w".into(),
                "/nonexistent-dir/x.pcapng".into(),
            ],
            "/nonexistent-dir/x.pcapng".into(),
        ),
        (
            vec![
                "--ns".into(),
                node1.clone(),
                "-w".into(),
                f.into(),
                "icmp".into(),
                "and".into(),
                "and".into(),
            ],
            "icmp and and".into(),
        ),
    ];
    for (args, needle) in cases {
        let mut argv = vec!["capture"];
        argv.extend(args.iter().map(String::as_str));
        let out = dye(&argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&needle),
            "{args:?} should name {needle}: {err}"
        );
        assert!(
            !err.contains("capturing on"),
            "{args:?} started capturing: {err}"
        );
        assert!(!file.exists(), "{args:?} left {f} behind");
    }
    // A bad filter must not destroy an existing file either.
    std::fs::write(&file, "keep").unwrap();
    let out = dye(&["capture", "--ns", &node1, "-w", f, "icmp", "and", "and"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    let _ = std::fs::remove_file(&file);
}
