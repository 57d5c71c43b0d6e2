//! Writes dye's sample captures, or a large overlay-heavy capture for benchmarks.
//!
//! ```text
//! cargo run -p dye-decode --example samples -- --write samples/captures
//! cargo run --release -p dye-decode --example samples -- --bench 1000000 /tmp/bench.pcap
//! ```
//!
//! Everything is built with `dye_decode::build` (the kernel here has no Geneve, GRE, IPIP or
//! 802.1Q, so these are made rather than captured), deterministic, nanosecond timestamps.

use std::borrow::Cow;
use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use dye_decode::build::{self, tcp_flags::*, V4};
use dye_decode::wire::GreRepr;
use dye_decode::Marker;
use pcap_file::pcap::PcapTsResolution;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

const TRACE: u32 = 0x1a2b_3c4d;
const BASE_NS: u64 = 1_704_110_400_000_000_000; // 2024-01-01 12:00:00 UTC

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 3);
const SVC: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE1: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 11);
const NODE2: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 12);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const MAC_A: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x02];
const MAC_B: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x03];
const MAC_N1: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x11];
const MAC_N2: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x12];

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("literal")
}
fn a4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}
fn a6(a: Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}
fn probe(seq: u32, len: usize) -> Vec<u8> {
    Marker::new(TRACE, seq)
        .payload_with_marker(len)
        .expect("len >= 16")
}
fn eth4(src: [u8; 6], dst: [u8; 6], ip: &[u8]) -> Vec<u8> {
    build::ethernet(dst, src, &[], 0x0800, ip)
}
fn eth6(src: [u8; 6], dst: [u8; 6], ip: &[u8]) -> Vec<u8> {
    build::ethernet(dst, src, &[], 0x86dd, ip)
}

fn icmp_echo4(h: &V4, req: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let kind = if req { 8 } else { 0 };
    build::ipv4(
        h,
        1,
        &build::icmp4(kind, 0, build::echo_rest(id, seq), payload),
    )
}
fn udp4(h: &V4, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    build::ipv4(
        h,
        17,
        &build::udp(a4(h.src), a4(h.dst), sport, dport, payload),
    )
}
fn tcp4(h: &V4, sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    build::ipv4(
        h,
        6,
        &build::tcp(a4(h.src), a4(h.dst), sport, dport, seq, ack, flags, payload),
    )
}
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    build::ipv6(
        src,
        dst,
        64,
        17,
        &[],
        &build::udp(a6(src), a6(dst), sport, dport, payload),
    )
}
fn echo6(src: Ipv6Addr, dst: Ipv6Addr, req: bool, seq: u16, payload: &[u8]) -> Vec<u8> {
    let kind = if req { 128 } else { 129 };
    build::ipv6(
        src,
        dst,
        64,
        58,
        &[],
        &build::icmp6(src, dst, kind, 0, build::echo_rest(7, seq), payload),
    )
}

/// An underlay VXLAN frame node1 → node2 carrying `inner_frame`.
fn vxlan_frame(port: u16, vni: u32, sport: u16, id: u16, inner_frame: &[u8]) -> Vec<u8> {
    let outer = V4::new(NODE1, NODE2).id(id);
    eth4(
        MAC_N1,
        MAC_N2,
        &udp4(&outer, sport, port, &build::vxlan(vni, inner_frame)),
    )
}

struct Sample {
    name: &'static str,
    linktype: DataLink,
    frames: Vec<Vec<u8>>,
}

fn plain() -> Sample {
    let mut f = Vec::new();
    let req = V4::new(POD_A, POD_B).id(0x1234).df(true);
    f.push(eth4(
        MAC_A,
        MAC_B,
        &icmp_echo4(&req, true, 1, 1, &probe(1, 56)),
    ));
    let rep = V4::new(POD_B, POD_A).id(0x4321).ttl(63);
    f.push(eth4(
        MAC_B,
        MAC_A,
        &icmp_echo4(&rep, false, 1, 1, &probe(1, 56)),
    ));
    let syn = V4::new(POD_A, SVC).id(2).df(true);
    f.push(eth4(
        MAC_A,
        MAC_B,
        &tcp4(&syn, 40000, 80, 1000, 0, SYN, &probe(2, 48)),
    ));
    let synack = V4::new(SVC, POD_A).id(0).df(true);
    f.push(eth4(
        MAC_B,
        MAC_A,
        &tcp4(&synack, 80, 40000, 5000, 1001, SYN | ACK, &[]),
    ));
    let u = V4::new(POD_A, POD_B).id(3);
    f.push(eth4(MAC_A, MAC_B, &udp4(&u, 40001, 33434, &probe(3, 64))));
    // ARP request and reply.
    let arp = |op: u16, smac: [u8; 6], sip: Ipv4Addr, tmac: [u8; 6], tip: Ipv4Addr| {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&smac);
        a.extend_from_slice(&sip.octets());
        a.extend_from_slice(&tmac);
        a.extend_from_slice(&tip.octets());
        a.extend_from_slice(&[0u8; 18]);
        a
    };
    f.push(build::ethernet(
        [0xff; 6],
        MAC_A,
        &[],
        0x0806,
        &arp(1, MAC_A, POD_A, [0; 6], POD_B),
    ));
    f.push(build::ethernet(
        MAC_A,
        MAC_B,
        &[],
        0x0806,
        &arp(2, MAC_B, POD_B, MAC_A, POD_A),
    ));
    // IPv4 with a record-route option.
    let mut o = V4::new(POD_A, POD_B).id(4).ttl(32);
    o.options = vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    o.tos = 0xb8;
    f.push(eth4(MAC_A, MAC_B, &udp4(&o, 40002, 7, &probe(4, 64))));
    // IPv6 UDP probe.
    f.push(eth6(
        MAC_A,
        MAC_B,
        &udp6(v6("fd00::a"), v6("fd00::b"), 40003, 33434, &probe(5, 64)),
    ));
    // TCP with PSH|ACK, no marker.
    let d = V4::new(POD_B, POD_A).id(77);
    f.push(eth4(
        MAC_B,
        MAC_A,
        &tcp4(
            &d,
            80,
            40000,
            5001,
            1049,
            PSH | ACK,
            b"HTTP/1.1 200 OK\r\n\r\n",
        ),
    ));
    // Unknown EtherType (LLDP-like), padded to 60.
    f.push(build::ethernet(
        [0x01, 0x80, 0xc2, 0, 0, 0x0e],
        MAC_A,
        &[],
        0x88cc,
        &[0u8; 46],
    ));
    // Malformed: IP says TCP but only 10 bytes follow.
    let mut bad = tcp4(&V4::new(POD_A, POD_B).id(5), 1, 2, 0, 0, SYN, &[]);
    bad.truncate(30);
    bad[2..4].copy_from_slice(&30u16.to_be_bytes());
    bad[10..12].copy_from_slice(&[0, 0]);
    let c = build::checksum(&bad[..20]);
    bad[10..12].copy_from_slice(&c.to_be_bytes());
    f.push(eth4(MAC_A, MAC_B, &bad));
    Sample {
        name: "plain.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn vlan() -> Sample {
    let mut f = Vec::new();
    let u = udp4(&V4::new(POD_A, POD_B).id(10), 40010, 33434, &probe(10, 64));
    f.push(build::ethernet(MAC_B, MAC_A, &[100], 0x0800, &u));
    let e = icmp_echo4(&V4::new(POD_A, POD_B).id(11), true, 2, 11, &probe(11, 56));
    f.push(build::ethernet(MAC_B, MAC_A, &[200, 300], 0x0800, &e));
    let t = tcp4(&V4::new(POD_B, POD_A).id(12), 80, 40011, 1, 2, ACK, &[]);
    f.push(build::ethernet(MAC_A, MAC_B, &[4094], 0x0800, &t));
    Sample {
        name: "vlan-qinq.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn vxlan() -> Sample {
    let mut f = Vec::new();
    let inner = eth4(
        MAC_A,
        MAC_B,
        &icmp_echo4(
            &V4::new(POD_A, POD_B).id(20).df(true),
            true,
            1,
            1,
            &probe(1, 56),
        ),
    );
    f.push(vxlan_frame(8472, 1, 40000, 0x100, &inner));
    let inner = eth4(
        MAC_A,
        MAC_B,
        &tcp4(
            &V4::new(POD_A, POD_B).id(21),
            40021,
            443,
            7,
            0,
            SYN,
            &probe(2, 48),
        ),
    );
    f.push(vxlan_frame(4789, 4096, 50000, 0x101, &inner));
    let inner = eth6(
        MAC_A,
        MAC_B,
        &udp6(
            v6("fd00:244:1::2"),
            v6("fd00:244:2::3"),
            40022,
            33434,
            &probe(3, 64),
        ),
    );
    f.push(vxlan_frame(8472, 1, 40001, 0x102, &inner));
    // Underlay frag-needed quoting a big VXLAN packet, truncated to 548 bytes.
    let big_inner = eth4(
        MAC_A,
        MAC_B,
        &tcp4(
            &V4::new(POD_A, POD_B).id(23).df(true),
            40023,
            80,
            9,
            0,
            ACK,
            &probe(4, 1400),
        ),
    );
    let big = udp4(
        &V4::new(NODE1, NODE2).id(0x103).df(true),
        40002,
        8472,
        &build::vxlan(1, &big_inner),
    );
    let quote = &big[..548];
    let err = build::ipv4(
        &V4::new(ROUTER, NODE1).id(0x900).ttl(255),
        1,
        &build::icmp4(3, 4, [0, 0, 0x05, 0xaa], quote),
    );
    f.push(eth4(MAC_N2, MAC_N1, &err));
    // Inner time-exceeded quoting a whole UDP probe (the marker is in the quote).
    let p = udp4(
        &V4::new(POD_A, POD_B).id(24).ttl(1),
        40024,
        33434,
        &probe(5, 64),
    );
    let te = build::ipv4(
        &V4::new(Ipv4Addr::new(10, 244, 2, 1), POD_A).id(25),
        1,
        &build::icmp4(11, 0, [0; 4], &p),
    );
    f.push(vxlan_frame(8472, 1, 40003, 0x104, &eth4(MAC_B, MAC_A, &te)));
    // The same VXLAN ICMP probe seen on 4789 with a higher VNI and an inner VLAN tag.
    let inner = build::ethernet(
        MAC_B,
        MAC_A,
        &[42],
        0x0800,
        &icmp_echo4(&V4::new(POD_A, POD_B).id(26), true, 1, 6, &probe(6, 56)),
    );
    f.push(vxlan_frame(4789, 0xabcdef, 50001, 0x105, &inner));
    Sample {
        name: "vxlan.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn geneve() -> Sample {
    let mut f = Vec::new();
    let outer = V4::new(NODE1, NODE2).id(0x200);
    let inner = eth4(
        MAC_A,
        MAC_B,
        &udp4(&V4::new(POD_A, POD_B).id(30), 40030, 33434, &probe(1, 64)),
    );
    let opt1 = [0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef];
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &udp4(
            &outer,
            45000,
            6081,
            &build::geneve(5001, 0x6558, &opt1, &inner),
        ),
    ));
    let inner = eth4(
        MAC_A,
        MAC_B,
        &tcp4(
            &V4::new(POD_A, POD_B).id(31),
            40031,
            80,
            1,
            0,
            SYN,
            &probe(2, 48),
        ),
    );
    let opt2 = [
        0x01, 0x03, 0x01, 0x00, 0xff, 0xff, 0x02, 0x02, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &udp4(
            &outer.clone().id(0x201),
            45001,
            6081,
            &build::geneve(7, 0x6558, &opt2, &inner),
        ),
    ));
    let ip = icmp_echo4(&V4::new(POD_A, POD_B).id(32), true, 3, 3, &probe(3, 56));
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &udp4(
            &outer.clone().id(0x202),
            45002,
            6081,
            &build::geneve(9, 0x0800, &[], &ip),
        ),
    ));
    Sample {
        name: "geneve.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn gre() -> Sample {
    let mut f = Vec::new();
    let outer = |id| V4::new(NODE1, NODE2).id(id);
    let r = |protocol, checksum, key, sequence| GreRepr {
        protocol,
        checksum,
        key,
        sequence,
    };
    let ip = icmp_echo4(&V4::new(POD_A, POD_B).id(40), true, 4, 1, &probe(1, 56));
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &build::ipv4(
            &outer(0x300),
            47,
            &build::gre(&r(0x0800, None, None, None), &ip),
        ),
    ));
    let ip = udp4(&V4::new(POD_A, POD_B).id(41), 40041, 33434, &probe(2, 64));
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &build::ipv4(
            &outer(0x301),
            47,
            &build::gre(&r(0x0800, None, Some(1234), Some(7)), &ip),
        ),
    ));
    let ip = echo6(v6("fd00::1"), v6("fd00::2"), true, 3, &probe(3, 56));
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &build::ipv4(
            &outer(0x302),
            47,
            &build::gre(&r(0x86dd, Some(0), Some(5), None), &ip),
        ),
    ));
    let fr = eth4(
        MAC_A,
        MAC_B,
        &tcp4(
            &V4::new(POD_A, POD_B).id(43),
            40043,
            22,
            3,
            0,
            SYN,
            &probe(4, 48),
        ),
    );
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &build::ipv4(
            &outer(0x303),
            47,
            &build::gre(&r(0x6558, None, Some(99), None), &fr),
        ),
    ));
    Sample {
        name: "gre.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn ip_tunnels() -> Sample {
    let mut f = Vec::new();
    let ip = icmp_echo4(&V4::new(POD_A, POD_B).id(50), true, 5, 1, &probe(1, 56));
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &build::ipv4(&V4::new(NODE1, NODE2).id(0x400), 4, &ip),
    ));
    let ip = udp6(
        v6("2001:db8::a"),
        v6("2001:db8::b"),
        40051,
        33434,
        &probe(2, 64),
    );
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &build::ipv4(&V4::new(NODE1, NODE2).id(0x401), 41, &ip),
    ));
    let ip = echo6(v6("fd00::1"), v6("fd00::2"), true, 3, &probe(3, 56));
    f.push(eth6(
        MAC_N1,
        MAC_N2,
        &build::ipv6(v6("2001:db8:1::1"), v6("2001:db8:2::1"), 64, 41, &[], &ip),
    ));
    let ip = tcp4(
        &V4::new(POD_A, POD_B).id(53),
        40053,
        80,
        1,
        0,
        SYN,
        &probe(4, 48),
    );
    f.push(eth6(
        MAC_N1,
        MAC_N2,
        &build::ipv6(v6("2001:db8:1::1"), v6("2001:db8:2::1"), 64, 4, &[], &ip),
    ));
    // Nested: GRE(key 8) → IPv4 → UDP 4789 VXLAN vni 3 → Ethernet → ICMP probe.
    let inner = eth4(
        MAC_A,
        MAC_B,
        &icmp_echo4(&V4::new(POD_A, POD_B).id(54), true, 5, 5, &probe(5, 56)),
    );
    let mid = udp4(
        &V4::new(Ipv4Addr::new(172, 16, 0, 1), Ipv4Addr::new(172, 16, 0, 2)).id(0x500),
        40054,
        4789,
        &build::vxlan(3, &inner),
    );
    let g = build::gre(
        &GreRepr {
            protocol: 0x0800,
            checksum: None,
            key: Some(8),
            sequence: None,
        },
        &mid,
    );
    f.push(eth4(
        MAC_N1,
        MAC_N2,
        &build::ipv4(&V4::new(NODE1, NODE2).id(0x402), 47, &g),
    ));
    Sample {
        name: "ip-tunnels.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn sll() -> Sample {
    let mut f = Vec::new();
    let u = udp4(&V4::new(POD_A, POD_B).id(60), 40060, 33434, &probe(1, 64));
    f.push(build::sll(4, MAC_A, 0x0800, &u));
    let inner = eth4(
        MAC_A,
        MAC_B,
        &icmp_echo4(&V4::new(POD_A, POD_B).id(61), true, 6, 2, &probe(2, 56)),
    );
    let v = udp4(
        &V4::new(NODE1, NODE2).id(0x600),
        40061,
        8472,
        &build::vxlan(1, &inner),
    );
    f.push(build::sll(0, MAC_N1, 0x0800, &v));
    Sample {
        name: "sll.pcap",
        linktype: DataLink::LINUX_SLL,
        frames: f,
    }
}

fn sll2() -> Sample {
    let mut f = Vec::new();
    let u = udp4(&V4::new(POD_A, POD_B).id(70), 40070, 33434, &probe(1, 64));
    f.push(build::sll2(4, 3, MAC_A, 0x0800, &u));
    let inner = eth4(
        MAC_A,
        MAC_B,
        &icmp_echo4(&V4::new(POD_A, POD_B).id(71), true, 7, 2, &probe(2, 56)),
    );
    let v = udp4(
        &V4::new(NODE1, NODE2).id(0x700),
        40071,
        8472,
        &build::vxlan(1, &inner),
    );
    f.push(build::sll2(0, 2, MAC_N1, 0x0800, &v));
    f.push(build::sll2(
        0,
        5,
        MAC_B,
        0x86dd,
        &echo6(v6("fd00::2"), v6("fd00::1"), false, 3, &probe(3, 56)),
    ));
    Sample {
        name: "sll2.pcap",
        linktype: DataLink::LINUX_SLL2,
        frames: f,
    }
}

fn raw() -> Sample {
    Sample {
        name: "raw-ip.pcap",
        linktype: DataLink::RAW,
        frames: vec![
            icmp_echo4(&V4::new(POD_A, POD_B).id(80), true, 8, 1, &probe(1, 56)),
            udp6(v6("fd00::a"), v6("fd00::b"), 40081, 33434, &probe(2, 64)),
        ],
    }
}

fn ipv6_ext() -> Sample {
    let mut f = Vec::new();
    let (s, d) = (v6("fd00:244:1::2"), v6("fd00:244:2::3"));
    // Hop-by-hop (PadN) → destination options (PadN) → UDP.
    let hbh = [60, 0, 1, 4, 0, 0, 0, 0];
    let dst = [17, 0, 1, 4, 0, 0, 0, 0];
    let ext: Vec<u8> = hbh.iter().chain(dst.iter()).copied().collect();
    f.push(eth6(
        MAC_A,
        MAC_B,
        &build::ipv6(
            s,
            d,
            64,
            0,
            &ext,
            &build::udp(a6(s), a6(d), 40090, 33434, &probe(1, 64)),
        ),
    ));
    // Routing header type 0 with one address → ICMPv6 echo.
    let mut rh = vec![58, 2, 0, 1, 0, 0, 0, 0];
    rh.extend_from_slice(&v6("fd00:ffff::1").octets());
    f.push(eth6(
        MAC_A,
        MAC_B,
        &build::ipv6(
            s,
            d,
            64,
            43,
            &rh,
            &build::icmp6(s, d, 128, 0, build::echo_rest(9, 2), &probe(2, 56)),
        ),
    ));
    f.push(eth6(MAC_A, MAC_B, &echo6(s, d, true, 3, &probe(3, 56))));
    f.push(eth6(MAC_B, MAC_A, &echo6(d, s, false, 3, &probe(3, 56))));
    // Packet Too Big (MTU 1280) quoting a 1400-byte probe, truncated to fit 1280.
    let r = v6("fd00:ffff::1");
    let big = udp6(s, d, 40094, 33434, &probe(4, 1352));
    let q = &big[..1280 - 48];
    f.push(eth6(
        MAC_B,
        MAC_A,
        &build::ipv6(
            r,
            s,
            64,
            58,
            &[],
            &build::icmp6(r, s, 2, 0, 1280u32.to_be_bytes(), q),
        ),
    ));
    // Time exceeded quoting a whole small probe.
    let p = udp6(s, d, 40095, 33434, &probe(5, 64));
    f.push(eth6(
        MAC_B,
        MAC_A,
        &build::ipv6(r, s, 64, 58, &[], &build::icmp6(r, s, 3, 0, [0; 4], &p)),
    ));
    // Port unreachable quoting a UDP probe.
    let p = udp6(s, d, 40096, 33434, &probe(6, 64));
    f.push(eth6(
        MAC_B,
        MAC_A,
        &build::ipv6(d, s, 64, 58, &[], &build::icmp6(d, s, 1, 4, [0; 4], &p)),
    ));
    Sample {
        name: "ipv6-ext.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn icmp_errors() -> Sample {
    let mut f = Vec::new();
    let gw = Ipv4Addr::new(10, 244, 1, 1);
    // Frag-needed quoting IP header + only 8 bytes of TCP.
    let p = tcp4(
        &V4::new(POD_A, SVC).id(100).df(true),
        40100,
        80,
        0xdead_beef,
        0,
        ACK,
        &probe(1, 1460),
    );
    f.push(eth4(
        MAC_B,
        MAC_A,
        &build::ipv4(
            &V4::new(gw, POD_A).id(101),
            1,
            &build::icmp4(3, 4, [0, 0, 0x05, 0xaa], &p[..28]),
        ),
    ));
    // Time exceeded quoting a whole UDP probe.
    let p = udp4(
        &V4::new(POD_A, POD_B).id(102).ttl(1),
        40102,
        33434,
        &probe(2, 64),
    );
    f.push(eth4(
        MAC_B,
        MAC_A,
        &build::ipv4(
            &V4::new(gw, POD_A).id(103),
            1,
            &build::icmp4(11, 0, [0; 4], &p),
        ),
    ));
    // Port unreachable quoting IP + 8 bytes of UDP.
    let p = udp4(&V4::new(POD_A, POD_B).id(104), 40104, 33434, &probe(3, 64));
    f.push(eth4(
        MAC_B,
        MAC_A,
        &build::ipv4(
            &V4::new(POD_B, POD_A).id(105),
            1,
            &build::icmp4(3, 3, [0; 4], &p[..28]),
        ),
    ));
    // Host unreachable quoting a whole ICMP echo probe.
    let p = icmp_echo4(&V4::new(POD_A, POD_B).id(106), true, 10, 4, &probe(4, 56));
    f.push(eth4(
        MAC_B,
        MAC_A,
        &build::ipv4(
            &V4::new(gw, POD_A).id(107),
            1,
            &build::icmp4(3, 1, [0; 4], &p),
        ),
    ));
    // Administratively prohibited quoting a TCP SYN probe whole.
    let p = tcp4(
        &V4::new(POD_A, SVC).id(108),
        40108,
        443,
        1,
        0,
        SYN,
        &probe(5, 48),
    );
    f.push(eth4(
        MAC_B,
        MAC_A,
        &build::ipv4(
            &V4::new(gw, POD_A).id(109),
            1,
            &build::icmp4(3, 13, [0; 4], &p),
        ),
    ));
    Sample {
        name: "icmp-errors.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn fragments() -> Sample {
    let mut f = Vec::new();
    // IPv4 ICMP echo probe of 3000 bytes in three fragments.
    let p = icmp_echo4(
        &V4::new(POD_A, POD_B).id(0x0aaa),
        true,
        11,
        1,
        &probe(1, 2972),
    );
    for fr in build::fragment_ipv4(&p, 1480) {
        f.push(eth4(MAC_A, MAC_B, &fr));
    }
    // IPv6 UDP probe of 2000 bytes in two fragments.
    let p = udp6(v6("fd00::a"), v6("fd00::b"), 40110, 33434, &probe(2, 2000));
    for fr in build::fragment_ipv6(&p, 0xbeef, 1232) {
        f.push(eth6(MAC_A, MAC_B, &fr));
    }
    // A VXLAN packet fragmented on the underlay.
    let inner = eth4(
        MAC_A,
        MAC_B,
        &udp4(
            &V4::new(POD_A, POD_B).id(112),
            40112,
            33434,
            &probe(3, 1500),
        ),
    );
    let outer = udp4(
        &V4::new(NODE1, NODE2).id(0x0bbb),
        40113,
        8472,
        &build::vxlan(1, &inner),
    );
    for fr in build::fragment_ipv4(&outer, 1480) {
        f.push(eth4(MAC_N1, MAC_N2, &fr));
    }
    // An inner packet fragmented before encapsulation: each fragment in its own VXLAN packet.
    let p = udp4(
        &V4::new(POD_A, POD_B).id(0x0ccc),
        40114,
        33434,
        &probe(4, 2000),
    );
    for (i, fr) in build::fragment_ipv4(&p, 1400).iter().enumerate() {
        f.push(vxlan_frame(
            8472,
            1,
            40115,
            0x0d00 + i as u16,
            &eth4(MAC_A, MAC_B, fr),
        ));
    }
    Sample {
        name: "fragments.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn write_pcap(path: &Path, s: &Sample) -> std::io::Result<()> {
    let file = BufWriter::new(File::create(path)?);
    let header = PcapHeader {
        datalink: s.linktype,
        ts_resolution: PcapTsResolution::NanoSecond,
        endianness: Endianness::Little,
        snaplen: 262144,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).map_err(std::io::Error::other)?;
    for (i, fr) in s.frames.iter().enumerate() {
        let ts = Duration::from_nanos(BASE_NS + i as u64 * 1_000_123);
        let p = PcapPacket::new(ts, fr.len() as u32, &fr[..]).map_err(std::io::Error::other)?;
        w.write_packet(&p).map_err(std::io::Error::other)?;
    }
    w.flush().map_err(std::io::Error::other)
}

fn write_pcapng(path: &Path) -> std::io::Result<()> {
    let file = BufWriter::new(File::create(path)?);
    let mut w = PcapNgWriter::new(file).map_err(std::io::Error::other)?;
    let nano = |name: &'static str, link| InterfaceDescriptionBlock {
        linktype: link,
        snaplen: 262144,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Borrowed(name)),
            InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO),
        ],
    };
    w.write_pcapng_block(nano("node-1/eth0", DataLink::ETHERNET))
        .map_err(std::io::Error::other)?;
    w.write_pcapng_block(nano("node-1/any", DataLink::LINUX_SLL2))
        .map_err(std::io::Error::other)?;
    let frames: Vec<(u32, Vec<u8>)> = vec![
        (0, plain().frames[0].clone()),
        (0, vxlan().frames[0].clone()),
        (1, sll2().frames[0].clone()),
        (1, sll2().frames[1].clone()),
    ];
    for (i, (ifid, fr)) in frames.iter().enumerate() {
        let b = EnhancedPacketBlock {
            interface_id: *ifid,
            timestamp: Duration::from_nanos(BASE_NS + i as u64 * 1_000_001),
            original_len: fr.len() as u32,
            data: Cow::Borrowed(&fr[..]),
            options: vec![],
        };
        w.write_pcapng_block(b).map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// GSO/GRO super-packets as packet sockets on a Linux node's veths see them: IPv4 BIG TCP
/// (total length 0, the frame says how long), plain GSO under 64 KiB, an RFC 2675 IPv6
/// jumbogram and an IPv6 GSO packet. (An IPv6 BIG TCP packet with its hop-by-hop header
/// stripped, as Linux 6.x captures it, is left to `tests/aggregated.rs`: tshark 4.0 calls it
/// malformed, so it cannot be in the tshark comparison.)
fn aggregated() -> Sample {
    let mut f = Vec::new();
    // 46 segments of 1448 bytes: 66608 bytes of TCP payload, over 64 KiB with the headers.
    let big = probe(1, 46 * 1448);
    f.push(eth4(
        MAC_A,
        MAC_B,
        &tcp4(
            &V4::new(POD_A, POD_B).id(700).df(true),
            40700,
            80,
            1_000_000,
            1,
            ACK,
            &big,
        ),
    ));
    let gso = vec![0x61; 10 * 1448];
    f.push(eth4(
        MAC_A,
        MAC_B,
        &tcp4(
            &V4::new(POD_A, POD_B).id(701).df(true),
            40700,
            80,
            1_066_608,
            1,
            PSH | ACK,
            &gso,
        ),
    ));
    let (s, d) = (v6("fd00:244:1::2"), v6("fd00:244:2::3"));
    let big6 = vec![0x62; 46 * 1428];
    let tcp = build::tcp(a6(s), a6(d), 40701, 443, 2_000_000, 1, ACK, &big6);
    f.push(eth6(MAC_A, MAC_B, &build::ipv6_jumbo(s, d, 64, 6, &tcp)));
    let gso6 = vec![0x63; 10 * 1428];
    let tcp = build::tcp(a6(s), a6(d), 40701, 443, 2_065_688, 1, PSH | ACK, &gso6);
    f.push(eth6(MAC_A, MAC_B, &build::ipv6(s, d, 64, 6, &[], &tcp)));
    Sample {
        name: "aggregated.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

/// flannel's `udp` backend on a node's eth0: bare IP packets in UDP 8285 — a probe, an inner
/// fragment, an ICMP error towards a pod, a ping that is not a probe, and IPv6 inside.
fn ip_in_udp() -> Sample {
    let mut f = Vec::new();
    let carry = |id: u16, inner: &[u8]| {
        eth4(
            MAC_N1,
            MAC_N2,
            &udp4(&V4::new(NODE1, NODE2).id(id), 8285, 8285, inner),
        )
    };
    f.push(carry(
        0x300,
        &icmp_echo4(&V4::new(POD_A, POD_B).id(40), true, 4, 1, &probe(1, 56)),
    ));
    let big = icmp_echo4(&V4::new(POD_A, POD_B).id(41), true, 4, 2, &probe(2, 2000));
    for (i, fr) in build::fragment_ipv4(&big, 1400).iter().enumerate() {
        f.push(carry(0x301 + i as u16, fr));
    }
    let quoted = icmp_echo4(&V4::new(POD_B, POD_A).id(42), true, 4, 3, &[0u8; 56]);
    f.push(carry(
        0x310,
        &build::ipv4(
            &V4::new(Ipv4Addr::new(10, 244, 2, 1), POD_B).id(43),
            1,
            &build::icmp4(3, 4, [0, 0, 0x05, 0x78], &quoted[..28]),
        ),
    ));
    f.push(carry(
        0x311,
        &icmp_echo4(&V4::new(POD_A, POD_B).id(44), true, 9, 1, &[0x55u8; 56]),
    ));
    f.push(carry(
        0x312,
        &udp6(v6("fd00::a"), v6("fd00::b"), 40120, 33434, &probe(5, 64)),
    ));
    Sample {
        name: "ip-in-udp.pcap",
        linktype: DataLink::ETHERNET,
        frames: f,
    }
}

fn samples() -> Vec<Sample> {
    vec![
        plain(),
        vlan(),
        vxlan(),
        geneve(),
        gre(),
        ip_tunnels(),
        sll(),
        sll2(),
        raw(),
        ipv6_ext(),
        icmp_errors(),
        fragments(),
        aggregated(),
        ip_in_udp(),
    ]
}

/// A capture of `n` frames cycling through overlay-heavy traffic: VXLAN TCP data and ACKs,
/// VXLAN ICMP probes, Geneve, plain TCP, VLAN UDP.
fn bench(n: usize, path: &Path) -> std::io::Result<()> {
    let mut mix: Vec<Vec<u8>> = Vec::new();
    for i in 0..16u16 {
        let inner = eth4(
            MAC_A,
            MAC_B,
            &tcp4(
                &V4::new(POD_A, POD_B).id(i),
                40000 + i,
                80,
                1000 + u32::from(i) * 1448,
                1,
                PSH | ACK,
                &vec![0x61; 512],
            ),
        );
        mix.push(vxlan_frame(8472, 1, 40000 + i, i, &inner));
        let ack = eth4(
            MAC_B,
            MAC_A,
            &tcp4(
                &V4::new(POD_B, POD_A).id(i),
                80,
                40000 + i,
                1,
                5000,
                ACK,
                &[],
            ),
        );
        mix.push(vxlan_frame(8472, 1, 50000 + i, i, &ack));
    }
    mix.extend(vxlan().frames);
    mix.extend(geneve().frames);
    mix.extend(plain().frames.into_iter().take(5));
    mix.extend(vlan().frames);
    let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: PcapTsResolution::NanoSecond,
        endianness: Endianness::Little,
        snaplen: 262144,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).map_err(std::io::Error::other)?;
    for i in 0..n {
        let fr = &mix[i % mix.len()];
        let ts = Duration::from_nanos(BASE_NS + i as u64 * 1_013);
        let p = PcapPacket::new(ts, fr.len() as u32, &fr[..]).map_err(std::io::Error::other)?;
        w.write_packet(&p).map_err(std::io::Error::other)?;
    }
    w.flush().map_err(std::io::Error::other)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--write", dir] => {
            let dir = Path::new(dir);
            std::fs::create_dir_all(dir)?;
            for s in samples() {
                write_pcap(&dir.join(s.name), &s)?;
                println!(
                    "{} ({} packets)",
                    dir.join(s.name).display(),
                    s.frames.len()
                );
            }
            write_pcapng(&dir.join("mixed.pcapng"))?;
            println!("{}", dir.join("mixed.pcapng").display());
            Ok(())
        }
        ["--bench", n, out] => {
            let n: usize = n.parse().map_err(std::io::Error::other)?;
            bench(n, Path::new(out))
        }
        _ => {
            eprintln!("usage: samples --write DIR | --bench N FILE");
            std::process::exit(2)
        }
    }
}
