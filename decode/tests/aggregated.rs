//! GSO/GRO super-packets as packet sockets on Linux nodes see them (issue 11):
//!
//! * IPv4 BIG TCP: total length 0 on a packet over 64 KiB; its length is the frame's.
//! * IPv6 BIG TCP: payload length 0 with a hop-by-hop Jumbo Payload option (RFC 2675), or —
//!   what Linux 6.x hands to packet sockets — with the hop-by-hop header stripped.
//! * plain GSO/GRO under 64 KiB: an honest length bigger than any MTU.
//!
//! Built with `dye_decode::build`, decoded, and (unless DYE_SKIP_TSHARK is set) written to a
//! classic pcap and compared with what tshark makes of the same frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

use dye_decode::build::{self, tcp_flags::*, V4};
use dye_decode::fmt::Line;
use dye_decode::{
    dissect, Aggregated, Dissection, LenFrom, LinkType, Marker, MarkerSite, Options, L4,
};

const A4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const B4: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 3);
const SEG: usize = 70_000;

fn a6() -> Ipv6Addr {
    "fd00:244:1::2".parse().unwrap()
}
fn b6() -> Ipv6Addr {
    "fd00:244:2::3".parse().unwrap()
}
fn eth(et: u16, ip: &[u8]) -> Vec<u8> {
    build::ethernet([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], &[], et, ip)
}
fn tcp(src: IpAddr, dst: IpAddr, sport: u16, payload: &[u8]) -> Vec<u8> {
    build::tcp(src, dst, sport, 80, 1_000, 1, ACK, payload)
}

/// IPv4 BIG TCP: a 70 000-byte TCP segment, total length 0.
fn v4_big() -> Vec<u8> {
    let h = V4::new(A4, B4).id(9).df(true);
    let seg = tcp(A4.into(), B4.into(), 40001, &vec![0x61; SEG]);
    eth(0x0800, &build::ipv4(&h, 6, &seg))
}
/// IPv6 BIG TCP with the RFC 2675 hop-by-hop Jumbo Payload option.
fn v6_jumbo() -> Vec<u8> {
    let seg = tcp(a6().into(), b6().into(), 40002, &vec![0x62; SEG]);
    eth(0x86dd, &build::ipv6_jumbo(a6(), b6(), 64, 6, &seg))
}
/// IPv6 BIG TCP as Linux 6.x captures it: payload length 0, no hop-by-hop header.
fn v6_stripped() -> Vec<u8> {
    let seg = tcp(a6().into(), b6().into(), 40003, &vec![0x63; SEG]);
    eth(0x86dd, &build::ipv6(a6(), b6(), 64, 6, &[], &seg))
}
/// Plain IPv4 GSO: 30 000 bytes, an honest total length.
fn v4_gso() -> Vec<u8> {
    let h = V4::new(A4, B4).id(10).df(true);
    let seg = tcp(A4.into(), B4.into(), 40004, &vec![0x64; 30_000]);
    eth(0x0800, &build::ipv4(&h, 6, &seg))
}
/// Plain IPv6 GSO: 30 000 bytes.
fn v6_gso() -> Vec<u8> {
    let seg = tcp(a6().into(), b6().into(), 40005, &vec![0x65; 30_000]);
    eth(0x86dd, &build::ipv6(a6(), b6(), 64, 6, &[], &seg))
}

fn tcp_of(d: &Dissection) -> (u16, u16) {
    match &d.l4 {
        Some(L4::Tcp(t)) => (t.sport, t.dport),
        other => panic!("not TCP: {other:?}"),
    }
}

fn decode(f: &[u8]) -> Dissection {
    dissect(f, LinkType::Ethernet, &Options::default())
}

#[test]
fn ipv4_total_length_0_uses_the_frame_length() {
    let f = v4_big();
    let d = decode(&f);
    assert!(!d.is_malformed(), "{:?}", d.error);
    let ip = d.ip.as_ref().unwrap();
    assert_eq!(ip.total_len, 0, "the header's field, as on the wire");
    assert_eq!(
        ip.aggregated,
        Some(Aggregated {
            claimed: 0,
            len: (20 + 20 + SEG) as u32,
            from: LenFrom::Frame,
        })
    );
    assert_eq!(ip.packet_len(), 70_040);
    assert!(!ip.truncated);
    assert_eq!(tcp_of(&d), (40001, 80));
    assert_eq!(d.payload_len as usize, SEG);
    assert_eq!(d.payload(&f).len(), SEG);
    let line = Line(&d).to_string();
    assert!(
        line.ends_with(
            "ttl 64 id 9 DF len 70040 (aggregated: IP length 0 on the wire, frame length used)"
        ),
        "{line}"
    );
    let json = serde_json::to_string(&d).unwrap();
    assert!(
        json.contains(r#""total_len":0,"#)
            && json.contains(r#""aggregated":{"claimed":0,"len":70040,"from":"frame"}"#),
        "{json}"
    );
}

#[test]
fn ipv6_jumbo_payload_option_gives_the_length() {
    let f = v6_jumbo();
    let d = decode(&f);
    assert!(!d.is_malformed(), "{:?}", d.error);
    let ip = d.ip.as_ref().unwrap();
    assert_eq!(ip.proto, 6);
    assert_eq!(ip.header_len, 48, "base header + hop-by-hop");
    assert_eq!(ip.total_len, 40, "payload length 0 on the wire");
    // RFC 2675: the jumbo length counts the hop-by-hop header, not the base header.
    assert_eq!(
        ip.aggregated,
        Some(Aggregated {
            claimed: 0,
            len: (40 + 8 + 20 + SEG) as u32,
            from: LenFrom::Jumbo,
        })
    );
    assert_eq!(tcp_of(&d), (40002, 80));
    assert_eq!(d.payload_len as usize, SEG);
    let line = Line(&d).to_string();
    assert!(
        line.ends_with(
            "len 70068 (aggregated: IPv6 payload length 0 on the wire, jumbo length used) ext 0"
        ),
        "{line}"
    );
}

#[test]
fn ipv6_payload_length_0_without_hop_by_hop_uses_the_frame_length() {
    let f = v6_stripped();
    let d = decode(&f);
    assert!(!d.is_malformed(), "{:?}", d.error);
    let ip = d.ip.as_ref().unwrap();
    assert_eq!(
        ip.aggregated,
        Some(Aggregated {
            claimed: 0,
            len: (40 + 20 + SEG) as u32,
            from: LenFrom::Frame,
        })
    );
    assert_eq!(tcp_of(&d), (40003, 80));
    assert_eq!(d.payload_len as usize, SEG);
    assert!(Line(&d)
        .to_string()
        .ends_with("len 70060 (aggregated: IPv6 payload length 0 on the wire, frame length used)"));
}

#[test]
fn plain_gso_is_neither_malformed_nor_aggregated() {
    for (f, len, sport) in [(v4_gso(), 30_040, 40004), (v6_gso(), 30_060, 40005)] {
        let d = decode(&f);
        assert!(!d.is_malformed(), "{:?}", d.error);
        let ip = d.ip.as_ref().unwrap();
        assert_eq!(ip.aggregated, None);
        assert_eq!(ip.packet_len(), len);
        assert_eq!(u32::from(ip.total_len), len);
        assert_eq!(tcp_of(&d), (sport, 80));
        assert_eq!(d.payload_len, 30_000);
        let line = Line(&d).to_string();
        assert!(line.contains(&format!(" len {len}")), "{line}");
        assert!(!line.contains("aggregated"), "{line}");
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("aggregated"), "{json}");
    }
}

#[test]
fn other_link_types_exclude_their_header() {
    let f = v4_big();
    let ip = &f[14..];
    let cases = [
        (LinkType::RawIp, ip.to_vec()),
        (LinkType::LinuxSll, build::sll(4, [2; 6], 0x0800, ip)),
        (LinkType::LinuxSll2, build::sll2(4, 7, [2; 6], 0x0800, ip)),
        (
            LinkType::Ethernet,
            build::ethernet([2; 6], [4; 6], &[42], 0x0800, ip),
        ),
    ];
    for (link, frame) in cases {
        let d = dissect(&frame, link, &Options::default());
        assert!(!d.is_malformed(), "{link:?}: {:?}", d.error);
        assert_eq!(d.ip.as_ref().unwrap().packet_len(), 70_040, "{link:?}");
        assert_eq!(d.payload_len as usize, SEG, "{link:?}");
    }
}

#[test]
fn marker_at_the_end_of_a_super_packet_is_found() {
    let payload = Marker::new(0x1a2b_3c4d, 5)
        .payload_with_marker(SEG)
        .unwrap();
    let h = V4::new(A4, B4);
    let seg = tcp(A4.into(), B4.into(), 40006, &payload);
    let d = decode(&eth(0x0800, &build::ipv4(&h, 6, &seg)));
    let m = d.find_marker().expect("marker");
    assert_eq!(
        (m.marker, m.site),
        (Marker::new(0x1a2b_3c4d, 5), MarkerSite::Payload)
    );
}

#[test]
fn inside_a_vxlan_tunnel_both_layers_take_their_length_from_the_frame() {
    let inner = v4_big();
    let n1 = Ipv4Addr::new(192, 168, 50, 11);
    let n2 = Ipv4Addr::new(192, 168, 50, 12);
    let udp = build::udp(n1.into(), n2.into(), 40000, 8472, &build::vxlan(1, &inner));
    let outer = eth(0x0800, &build::ipv4(&V4::new(n1, n2), 17, &udp));
    let d = decode(&outer);
    assert!(!d.is_malformed(), "{:?}", d.error);
    assert_eq!(d.outer.len(), 1);
    let o = &d.outer[0].ip;
    assert_eq!(
        o.aggregated.map(|a| a.len),
        Some((20 + 8 + 8 + inner.len()) as u32)
    );
    assert_eq!(d.ip.as_ref().unwrap().packet_len(), 70_040);
    assert_eq!(d.payload_len as usize, SEG);
    let line = Line(&d).to_string();
    assert!(
        line.starts_with(&format!(
            "vxlan vni 1 192.168.50.11:40000→192.168.50.12:8472 len {} (aggregated: IP length 0 on the wire, frame length used) | 10.244.1.2:40001→10.244.2.3:80 tcp",
            o.packet_len()
        )),
        "{line}"
    );
}

#[test]
fn what_is_not_an_aggregated_packet() {
    let opts = Options::default();
    // IPv4 total length 0 on a fragment: no super-packet is a fragment.
    let mut f = v4_big();
    f[14 + 6] |= 0x20; // MF
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let d = decode(&f);
    assert!(d.is_malformed());
    assert_eq!(d.ip, None);
    // IPv4 total length 0 with nothing after the header.
    let d = dissect(&v4_big()[14..34], LinkType::RawIp, &opts);
    assert!(d.is_malformed());
    // IPv6 payload length 0, No Next Header, Ethernet padding after it: an empty packet.
    let mut p = build::ipv6(a6(), b6(), 64, 59, &[], &[]);
    p.extend_from_slice(&[0; 6]);
    let d = dissect(&p, LinkType::RawIp, &opts);
    assert!(!d.is_malformed());
    let ip = d.ip.unwrap();
    assert_eq!((ip.aggregated, ip.packet_len()), (None, 40));
    // A jumbo option with a non-zero payload length is ignored (RFC 2675 calls it an error).
    let mut j = v6_jumbo();
    j[14 + 4..14 + 6].copy_from_slice(&100u16.to_be_bytes());
    let d = decode(&j);
    let ip = d.ip.as_ref().unwrap();
    assert_eq!((ip.aggregated, ip.packet_len()), (None, 140));
    // An ICMP error quoting an IPv4 header with total length 0: the quote's end is not the
    // packet's, so the quote stays malformed.
    let quoted = &v4_big()[14..14 + 28];
    let icmp = build::icmp4(3, 4, [0, 0, 5, 0xaa], quoted);
    let e = build::ipv4(&V4::new(B4, A4), 1, &icmp);
    let d = dissect(&e, LinkType::RawIp, &opts);
    let q = d.quote().expect("quote");
    assert!(q.is_malformed(), "{q:?}");
    assert!(q.ips().all(|ip| ip.aggregated.is_none()));
}

#[test]
fn cut_short_super_packets() {
    // Jumbo: the option says how long; a shorter capture is truncated.
    let f = v6_jumbo();
    let d = decode(&f[..9000]);
    let ip = d.ip.as_ref().unwrap();
    assert!(ip.truncated);
    assert_eq!(ip.packet_len(), 70_068);
    assert_eq!(d.payload_len as usize, 9000 - 14 - 48 - 20);
    assert!(Line(&d).to_string().ends_with("ext 0 truncated"));
    // Frame length: from the captured bytes alone a capture cut by the snaplen cannot be told
    // from a shorter packet; the frame's original length (pcap orig_len) sets it right.
    let mut d = decode(&v4_big()[..9000]);
    assert_eq!(d.ip.as_ref().unwrap().packet_len(), 9000 - 14);
    assert!(!d.is_malformed());
    d.set_orig_len(9000, v4_big().len());
    let ip = d.ip.as_ref().unwrap();
    assert_eq!((ip.packet_len(), ip.truncated), (70_040, true));
    assert_eq!(d.payload_len as usize, 9000 - 14 - 40);
    assert!(Line(&d)
        .to_string()
        .ends_with("len 70040 (aggregated: IP length 0 on the wire, frame length used) truncated"));
    // A whole frame, or one with an honest length, is left alone.
    let mut d = decode(&v4_big());
    let before = d.clone();
    d.set_orig_len(v4_big().len(), v4_big().len());
    assert_eq!(d, before);
    let mut d = decode(&v4_gso()[..9000]);
    let before = d.clone();
    d.set_orig_len(9000, 30_054);
    assert_eq!(d, before);
}

/// A classic little-endian pcap (LINKTYPE_ETHERNET, snaplen 262144) of `frames`, each kept
/// whole or cut to `caplen` bytes.
fn pcap(frames: &[(Vec<u8>, Option<usize>)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&262_144u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    for (i, (f, caplen)) in frames.iter().enumerate() {
        let kept = &f[..caplen.unwrap_or(f.len())];
        v.extend_from_slice(&(i as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&(kept.len() as u32).to_le_bytes());
        v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        v.extend_from_slice(kept);
    }
    v
}

#[test]
fn tshark_agrees_on_lengths_and_ports() {
    if std::env::var_os("DYE_SKIP_TSHARK").is_some() {
        eprintln!("DYE_SKIP_TSHARK set: skipping the tshark comparison");
        return;
    }
    // The last one: IPv4 BIG TCP cut to 9000 bytes by the snaplen.
    let frames = [
        (v4_big(), None),
        (v6_jumbo(), None),
        (v4_gso(), None),
        (v6_gso(), None),
        (v6_stripped(), None),
        (v4_big(), Some(9000)),
    ];
    let path = std::env::temp_dir().join(format!("dye-aggregated-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(&frames)).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(["-n", "-T", "fields", "-E", "separator=/t"])
        .args(["-e", "frame.len", "-e", "ip.len", "-e", "ipv6.plen"])
        .args([
            "-e",
            "ipv6.opt.jumbo",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
        ])
        .args(["-e", "tcp.len"])
        .output()
        .expect("tshark runs (apt-get install tshark, or DYE_SKIP_TSHARK=1)");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), frames.len(), "{text}");
    for (i, ((f, caplen), line)) in frames.iter().zip(&lines).enumerate() {
        let kept = &f[..caplen.unwrap_or(f.len())];
        let mut d = decode(kept);
        d.set_orig_len(kept.len(), f.len());
        let ip = d.ip.as_ref().unwrap();
        let (sport, dport) = tcp_of(&d);
        let jumbo = match ip.aggregated {
            Some(a) if a.from == LenFrom::Jumbo => (a.len - 40).to_string(),
            _ => String::new(),
        };
        let (ip_len, plen) = if ip.version == 4 {
            // tshark's TSO heuristic: total length 0 → the frame's.
            (ip.packet_len().to_string(), String::new())
        } else {
            (String::new(), (ip.total_len - 40).to_string())
        };
        let ours = [
            f.len().to_string(),
            ip_len,
            plen,
            jumbo,
            sport.to_string(),
            dport.to_string(),
            // tshark's tcp.len is what the IP length leaves, captured or not.
            (ip.packet_len() - u32::from(ip.header_len) - 20).to_string(),
        ]
        .join("\t");
        if caplen.is_none() {
            assert_eq!(
                d.payload_len,
                ip.packet_len() - u32::from(ip.header_len) - 20
            );
        }
        if i == 4 {
            // IPv6 payload length 0 without a hop-by-hop header: tshark 4.0 only notes "maybe
            // TSO" and calls the packet malformed (no TCP). It is what Linux 6.x hands packet
            // sockets for IPv6 BIG TCP (the Jumbo hop-by-hop header is stripped), so dye takes
            // the frame's length — asserted above. A tshark that decodes it must agree.
            if line.contains("\t40003\t") {
                assert_eq!(*line, ours, "tshark now decodes the stripped form");
            } else {
                assert_eq!(line.split('\t').nth(2), Some("0"), "{line}");
            }
            continue;
        }
        assert_eq!(*line, ours, "frame {}", i + 1);
    }
}
