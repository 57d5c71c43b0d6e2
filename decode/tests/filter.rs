//! The libpcap filter from `filter_expression` compiles for every link type dye reads, and
//! tcpdump (an outside tool) selects exactly the sample packets dye says it should: every packet
//! carrying a marker at the end of the frame, fragments, ICMP errors, and one VXLAN level down.
//!
//! Needs tcpdump (Debian package `tcpdump`); DYE_SKIP_TCPDUMP=1 skips.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use dye_decode::capfile::CaptureReader;
use dye_decode::{dissect, filter_expression, Dissection, LinkType, Marker, Options, Tunnel, L4};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../samples/captures")
        .join(name)
}

const FILES: &[&str] = &[
    "plain.pcap",
    "vlan-qinq.pcap",
    "vxlan.pcap",
    "geneve.pcap",
    "gre.pcap",
    "ip-tunnels.pcap",
    "sll.pcap",
    "sll2.pcap",
    "raw-ip.pcap",
    "ipv6-ext.pcap",
    "icmp-errors.pcap",
    "fragments.pcap",
    "ip-in-udp.pcap",
];

fn skip() -> bool {
    std::env::var_os("DYE_SKIP_TCPDUMP").is_some()
}

/// Timestamps (ns) of the packets tcpdump selects (sample timestamps are unique).
fn tcpdump_matches(file: &Path, expr: &str) -> BTreeSet<u64> {
    let out = Command::new("tcpdump")
        .arg("-nn")
        .arg("-tt")
        .arg("--time-stamp-precision=nano")
        .arg("-r")
        .arg(file)
        .arg(expr)
        .output()
        .expect("tcpdump runs (apt-get install tcpdump, or DYE_SKIP_TCPDUMP=1)");
    assert!(
        out.status.success(),
        "tcpdump failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (s, ns) = l.split_whitespace().next()?.split_once('.')?;
            Some(s.parse::<u64>().ok()? * 1_000_000_000 + ns.parse::<u64>().ok()?)
        })
        .collect()
}

fn icmp_error(d: &Dissection) -> bool {
    matches!(&d.l4, Some(L4::Icmp(i)) if i.is_error())
}

/// What the filter is documented to match, computed from dye's own dissection.
fn expected(frame: &[u8], d: &Dissection, trace: Option<u32>) -> bool {
    let marker = frame.len() >= 64
        && Marker::find_in_bytes(frame).is_some_and(|m| trace.is_none_or(|t| m.trace_id == t));
    let Some(first) = d.ips().next() else {
        return marker;
    };
    let frag = if first.version == 4 {
        first.is_fragment()
    } else {
        first.ext.first().is_some_and(|e| e.kind == 44)
    };
    let outer_icmp_err =
        d.outer.is_empty() && icmp_error(d) && (first.version == 4 || first.ext.is_empty());
    let vxlan_inner = match (d.outer.as_slice(), &d.ip) {
        ([o], Some(inner)) => {
            matches!(o.tunnel, Tunnel::Vxlan { .. })
                && o.inner_link.as_ref().is_some_and(|l| l.vlans.is_empty())
                && (o.ip.version == 4 || o.ip.ext.is_empty())
                && match inner.version {
                    4 => inner.header_len == 20 && (inner.is_fragment() || icmp_error(d)),
                    _ => {
                        inner.ext.first().is_some_and(|e| e.kind == 44)
                            || (inner.ext.is_empty() && icmp_error(d))
                    }
                }
        }
        _ => false,
    };
    // One IP-in-UDP level down (flannel-udp): the same fragments and ICMP errors.
    let ip_in_udp_inner = match (d.outer.as_slice(), &d.ip) {
        ([o], Some(inner)) => {
            matches!(o.tunnel, Tunnel::IpInUdp)
                && o.ip.version == 4
                && match inner.version {
                    4 => inner.header_len == 20 && (inner.is_fragment() || icmp_error(d)),
                    _ => {
                        inner.ext.first().is_some_and(|e| e.kind == 44)
                            || (inner.ext.is_empty() && icmp_error(d))
                    }
                }
        }
        _ => false,
    };
    marker || frag || outer_icmp_err || vxlan_inner || ip_in_udp_inner
}

#[test]
fn filter_compiles_for_every_link_type() {
    if skip() {
        return;
    }
    for file in ["plain.pcap", "sll.pcap", "sll2.pcap", "raw-ip.pcap"] {
        for trace in [None, Some(0x1a2b3c4d)] {
            let out = Command::new("tcpdump")
                .arg("-d")
                .arg("-r")
                .arg(sample(file))
                .arg(filter_expression(trace))
                .output()
                .expect("tcpdump runs");
            assert!(
                out.status.success(),
                "filter does not compile for {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn tcpdump_selects_what_dye_expects() {
    if skip() {
        return;
    }
    let opts = Options::default();
    let mut total = 0;
    for name in FILES {
        let file = sample(name);
        for trace in [None, Some(0x1a2b3c4d), Some(0x0bad_f00d)] {
            let got = tcpdump_matches(&file, &filter_expression(trace));
            let mut want = BTreeSet::new();
            let mut r = CaptureReader::new(std::fs::File::open(&file).unwrap()).unwrap();
            while let Some(fr) = r.next_frame() {
                let fr = fr.unwrap();
                let d = dissect(
                    fr.data,
                    LinkType::from_linktype(fr.linktype).unwrap(),
                    &opts,
                );
                if expected(fr.data, &d, trace) {
                    want.insert(fr.ts_ns);
                }
            }
            assert_eq!(got, want, "{name} with trace {trace:x?}");
            total += got.len();
        }
    }
    // The samples hold dozens of probes: a filter matching nothing would be a bug too.
    assert!(total > 60, "only {total} matches");
}
