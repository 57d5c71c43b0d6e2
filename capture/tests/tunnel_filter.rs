//! The through-tunnels socket filter, run by the kernel, keeps exactly the frames that libpcap's
//! own programs keep (FILTER on the frame, or FILTER compiled for the inner frame and run by
//! `pcap_offline_filter` on it): every sample capture and a set of built tunnel frames, under a
//! dozen filters. The kernel runs the program as the receive filter of an AF_UNIX datagram
//! socket (the datagram is the frame), so no privileges are needed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use dye_capture::filter::{attach, TunnelMatcher, TunnelPorts};
use dye_decode::build::{self, V4};
use dye_decode::capfile::CaptureReader;
use pcap::{Capture, Linktype};

const FILTERS: &[&str] = &[
    "icmp",
    "icmp and host 10.244.2.3",
    "udp port 33434",
    "tcp port 80",
    "tcp[13] & 2 != 0",
    "ip[6:2] & 0x3fff != 0",
    "ip6",
    "icmp6 or ip6 proto 44",
    "len > 200",
    "greater 1000 and ip",
    "ether host 0a:58:0a:f4:02:03",
    "vlan 42",
    "udp dst port 8472",
    "net 10.244.1.0/24 and not icmp",
];

/// Every Ethernet frame of the sample captures.
fn sample_frames() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/captures");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let Ok(mut r) = CaptureReader::new(std::fs::File::open(&path).unwrap()) else {
            continue;
        };
        while let Some(f) = r.next_frame() {
            let f = f.unwrap();
            if f.linktype == 1 && f.data.len() < 60_000 {
                out.push(f.data.to_vec());
            }
        }
    }
    out
}

fn v4(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

fn ping(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let icmp = build::icmp4(8, 0, build::echo_rest(7, 1), &vec![0x61; payload]);
    build::ipv4(&V4::new(v4(src), v4(dst)), 1, &icmp)
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    build::ethernet(
        [0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x03],
        [2; 6],
        &[],
        ethertype,
        payload,
    )
}

/// Tunnel frames the samples lack: IPv4 outer with options, IPv6 outer, each tunnel kind with
/// matching and non-matching inner packets, short and odd payloads on tunnel ports.
fn built_frames() -> Vec<Vec<u8>> {
    let (n1, n2) = (v4([192, 168, 50, 11]), v4([192, 168, 50, 12]));
    let (m1, m2): (Ipv6Addr, Ipv6Addr) = (
        "fd00:50::11".parse().unwrap(),
        "fd00:50::12".parse().unwrap(),
    );
    let inners: Vec<Vec<u8>> = vec![
        ping([10, 244, 1, 2], [10, 244, 2, 3], 56),
        ping([10, 244, 1, 2], [10, 244, 1, 9], 1200),
        build::ipv4(
            &V4::new(v4([10, 244, 1, 2]), v4([10, 244, 2, 3])),
            17,
            &build::udp(
                IpAddr::V4(v4([10, 244, 1, 2])),
                IpAddr::V4(v4([10, 244, 2, 3])),
                40000,
                33434,
                &[0u8; 40],
            ),
        ),
        build::ipv6(
            "fd00:244:1::2".parse().unwrap(),
            "fd00:244:2::3".parse().unwrap(),
            64,
            58,
            &[],
            &build::icmp6(
                "fd00:244:1::2".parse().unwrap(),
                "fd00:244:2::3".parse().unwrap(),
                128,
                0,
                [0, 7, 0, 1],
                &[0u8; 20],
            ),
        ),
    ];
    let mut out = Vec::new();
    for inner in &inners {
        let inner_eth = if inner[0] >> 4 == 6 {
            eth(0x86dd, inner)
        } else {
            eth(0x0800, inner)
        };
        let payloads: Vec<(u16, Vec<u8>)> = vec![
            (8472, build::vxlan(1, &inner_eth)),
            (4789, build::vxlan(0xabcdef, &inner_eth)),
            (6081, build::geneve(7, 0x6558, &[], &inner_eth)),
            (
                6081,
                build::geneve(7, 0x0800, &[1, 2, 0x80, 1, 9, 9, 9, 9], inner),
            ),
            (8285, inner.clone()),
            (9999, inner.clone()),
        ];
        for (port, payload) in payloads {
            let u4 = build::udp(IpAddr::V4(n1), IpAddr::V4(n2), 40001, port, &payload);
            out.push(eth(0x0800, &build::ipv4(&V4::new(n1, n2), 17, &u4)));
            // IPv4 header with 4 bytes of options (IHL 6).
            let mut opt = build::ipv4(&V4::new(n1, n2), 17, &u4);
            opt.splice(20..20, [1u8, 1, 1, 0]);
            opt[0] = 0x46;
            let total = u16::try_from(opt.len()).unwrap().to_be_bytes();
            opt[2..4].copy_from_slice(&total);
            out.push(eth(0x0800, &opt));
            let u6 = build::udp(IpAddr::V6(m1), IpAddr::V6(m2), 40002, port, &payload);
            out.push(eth(0x86dd, &build::ipv6(m1, m2, 64, 17, &[], &u6)));
        }
    }
    // Odd things on tunnel ports: empty, short, a bad Geneve version, IP-in-UDP that is not IP.
    for (port, payload) in [
        (8472, vec![]),
        (8472, vec![8, 0, 0, 0, 0, 0, 1, 0]),
        (6081, vec![0xc0, 0, 0x65, 0x58, 0, 0, 7, 0]),
        (8285, vec![0x55; 40]),
    ] {
        let u4 = build::udp(IpAddr::V4(n1), IpAddr::V4(n2), 40003, port, &payload);
        out.push(eth(0x0800, &build::ipv4(&V4::new(n1, n2), 17, &u4)));
    }
    out
}

/// Frames whose outer headers the kernel program does not look into (documented): VLAN tags
/// in the frame (live, the kernel holds them in metadata) and IPv6 extension headers before UDP.
fn kernel_reads(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x81, 0x00]) | Some([0x88, 0xa8]) | Some([0x91, 0x00]) => false,
        Some([0x86, 0xdd]) => !matches!(frame.get(20), Some(0 | 43 | 60)),
        _ => true,
    }
}

#[test]
fn kernel_program_keeps_what_libpcap_keeps() {
    let mut frames = sample_frames();
    frames.extend(built_frames());
    let frames: Vec<Vec<u8>> = frames.into_iter().filter(|f| kernel_reads(f)).collect();
    assert!(frames.len() > 120, "{} frames", frames.len());
    let mut compared = 0;
    let mut kept_inner = 0;
    // dye's own trace filters (marker at the frame's end, fragments, ICMP errors), any trace
    // and one trace id.
    let mut filters: Vec<String> = FILTERS.iter().map(|f| f.to_string()).collect();
    filters.push(dye_decode::filter_expression_ports(None, &[], &[]));
    filters.push(dye_decode::filter_expression_ports(
        Some(0x1a2b3c4d),
        &[],
        &[],
    ));
    for filter in &filters {
        let matcher = TunnelMatcher::new(filter, 1, TunnelPorts::well_known()).unwrap();
        let outer = Capture::dead(Linktype(1))
            .unwrap()
            .compile(filter, true)
            .unwrap();
        let program = matcher.kernel_program(None, &outer).unwrap();
        let (tx, rx) = UnixDatagram::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        attach(rx.as_fd(), &program).unwrap();
        let mut buf = vec![0u8; 70_000];
        for (i, frame) in frames.iter().enumerate() {
            tx.send(frame).unwrap();
            let kernel = rx.recv(&mut buf).is_ok();
            let want = matcher.matches(frame);
            assert_eq!(
                kernel,
                want.is_some(),
                "filter {filter:?}, frame {i} ({} bytes): kernel {kernel}, libpcap {want:?}",
                frame.len()
            );
            if matches!(want, Some(dye_capture::filter::Match::Inner { .. })) {
                kept_inner += 1;
            }
            compared += 1;
        }
    }
    // Not vacuous: many frames were kept for what their tunnels carry.
    assert!(kept_inner > 100, "{kept_inner} inner matches");
    eprintln!("{compared} frame/filter pairs agree; {kept_inner} kept for their inner packet");
}
