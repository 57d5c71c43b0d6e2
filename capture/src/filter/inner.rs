//! Finding the frame a tunnel packet carries: link header → outer IP → UDP to a tunnel port →
//! VXLAN / Geneve / IP-in-UDP → the inner frame and its link type. Only what is needed to hand
//! the inner bytes to a libpcap program; decoding proper is `dye-decode`'s job. Never panics:
//! every read is bounds-checked and a header that does not fit means "not a tunnel packet".

use super::ports::{Encap, TunnelPorts};

/// Link types as libpcap reports them for a live handle (DLT values) or a file (LINKTYPE).
const DLT_EN10MB: u32 = 1;
const DLT_RAW: u32 = 12;
const DLT_RAW_OPENBSD: u32 = 14;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_LINUX_SLL2: u32 = 276;

const ET_IPV4: u16 = 0x0800;
const ET_IPV6: u16 = 0x86dd;
const ET_TEB: u16 = 0x6558;

/// How the frame inside a tunnel starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerLink {
    /// An Ethernet header (VXLAN, Geneve carrying 0x6558).
    Ethernet,
    /// An IP header (flannel's udp backend, Geneve carrying IP).
    RawIp,
}

impl InnerLink {
    /// The libpcap link type (DLT) to compile a filter for this kind of frame.
    pub fn dlt(self) -> i32 {
        match self {
            InnerLink::Ethernet => DLT_EN10MB as i32,
            InnerLink::RawIp => DLT_RAW as i32,
        }
    }
}

/// The outer frame's link layer, from the handle's link type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OuterLink {
    Ethernet,
    RawIp,
    LinuxSll,
    LinuxSll2,
}

impl OuterLink {
    /// The link layer of a DLT or LINKTYPE value; None for kinds dye does not unwrap.
    pub fn from_linktype(lt: u32) -> Option<OuterLink> {
        match lt {
            DLT_EN10MB => Some(OuterLink::Ethernet),
            DLT_RAW | DLT_RAW_OPENBSD | LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
                Some(OuterLink::RawIp)
            }
            LINKTYPE_LINUX_SLL => Some(OuterLink::LinuxSll),
            LINKTYPE_LINUX_SLL2 => Some(OuterLink::LinuxSll2),
            _ => None,
        }
    }
}

impl From<InnerLink> for OuterLink {
    fn from(l: InnerLink) -> OuterLink {
        match l {
            InnerLink::Ethernet => OuterLink::Ethernet,
            InnerLink::RawIp => OuterLink::RawIp,
        }
    }
}

fn rd16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// The EtherType and offset of the network header.
fn network_start(frame: &[u8], link: OuterLink) -> Option<(u16, usize)> {
    match link {
        OuterLink::Ethernet => {
            let mut et = rd16(frame, 12)?;
            let mut at = 14;
            // 802.1Q / 802.1ad / QinQ tags, at most four.
            for _ in 0..4 {
                if !matches!(et, 0x8100 | 0x88a8 | 0x9100) {
                    break;
                }
                et = rd16(frame, at + 2)?;
                at += 4;
            }
            Some((et, at))
        }
        OuterLink::RawIp => match frame.first()? >> 4 {
            4 => Some((ET_IPV4, 0)),
            6 => Some((ET_IPV6, 0)),
            _ => None,
        },
        OuterLink::LinuxSll => Some((rd16(frame, 14)?, 16)),
        OuterLink::LinuxSll2 => Some((rd16(frame, 0)?, 20)),
    }
}

/// Offset of the UDP header after the IP header at `at`, if the packet is UDP and carries its
/// first bytes (not a later fragment).
fn udp_start(frame: &[u8], et: u16, at: usize) -> Option<usize> {
    match et {
        ET_IPV4 => {
            let ihl = usize::from(frame.get(at)? & 0x0f) * 4;
            let frag_off = rd16(frame, at + 6)? & 0x1fff;
            (ihl >= 20 && frag_off == 0 && *frame.get(at + 9)? == 17).then_some(at + ihl)
        }
        ET_IPV6 => {
            let mut next = *frame.get(at + 6)?;
            let mut off = at + 40;
            // Hop-by-hop, routing and destination options, bounded.
            for _ in 0..8 {
                match next {
                    17 => return Some(off),
                    0 | 43 | 60 => {
                        next = *frame.get(off)?;
                        off += (usize::from(*frame.get(off + 1)?) + 1) * 8;
                    }
                    _ => return None,
                }
            }
            None
        }
        _ => None,
    }
}

/// The frame a tunnel packet carries, one level down: its link type and its bytes (a suffix
/// of `frame`). None when `frame` is not UDP to one of `ports` or its tunnel header does not
/// fit.
pub fn inner_frame<'a>(
    frame: &'a [u8],
    link: OuterLink,
    ports: &TunnelPorts,
) -> Option<(InnerLink, &'a [u8])> {
    let (et, ip) = network_start(frame, link)?;
    let udp = udp_start(frame, et, ip)?;
    let dport = rd16(frame, udp + 2)?;
    let body = frame.get(udp + 8..)?;
    match ports.encap(dport)? {
        Encap::Vxlan => {
            let inner = body.get(8..)?;
            (inner.len() >= 14).then_some((InnerLink::Ethernet, inner))
        }
        Encap::Geneve => {
            let first = *body.first()?;
            if first >> 6 != 0 {
                return None; // only Geneve version 0 exists
            }
            let opt_len = usize::from(first & 0x3f) * 4;
            let inner = body.get(8 + opt_len..)?;
            match rd16(body, 2)? {
                ET_TEB if inner.len() >= 14 => Some((InnerLink::Ethernet, inner)),
                ET_IPV4 | ET_IPV6 if !inner.is_empty() => Some((InnerLink::RawIp, inner)),
                _ => None,
            }
        }
        Encap::IpInUdp => match body.first()? >> 4 {
            4 | 6 => Some((InnerLink::RawIp, body)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dye_decode::build;
    use std::net::{IpAddr, Ipv4Addr};

    fn ping(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let icmp = build::icmp4(8, 0, build::echo_rest(1, 1), &[0u8; 32]);
        build::ipv4(
            &build::V4::new(Ipv4Addr::from(src), Ipv4Addr::from(dst)),
            1,
            &icmp,
        )
    }

    fn outer_udp(dport: u16, payload: &[u8]) -> Vec<u8> {
        let (s, d) = (
            Ipv4Addr::new(192, 168, 50, 11),
            Ipv4Addr::new(192, 168, 50, 12),
        );
        let udp = build::udp(IpAddr::V4(s), IpAddr::V4(d), 40000, dport, payload);
        build::ipv4(&build::V4::new(s, d), 17, &udp)
    }

    #[test]
    fn vxlan_geneve_and_ip_in_udp() {
        let ports = TunnelPorts::well_known();
        let inner_ip = ping([10, 244, 1, 2], [10, 244, 2, 2]);
        let inner_eth = build::ethernet([2; 6], [4; 6], &[], 0x0800, &inner_ip);
        let vx = build::ethernet(
            [1; 6],
            [3; 6],
            &[],
            0x0800,
            &outer_udp(8472, &build::vxlan(1, &inner_eth)),
        );
        let (l, f) = inner_frame(&vx, OuterLink::Ethernet, &ports).unwrap();
        assert_eq!((l, f), (InnerLink::Ethernet, &inner_eth[..]));

        let gn = outer_udp(6081, &build::geneve(7, 0x0800, &[], &inner_ip));
        let (l, f) = inner_frame(&gn, OuterLink::RawIp, &ports).unwrap();
        assert_eq!((l, f), (InnerLink::RawIp, &inner_ip[..]));

        let fl = build::ethernet([1; 6], [3; 6], &[], 0x0800, &outer_udp(8285, &inner_ip));
        let (l, f) = inner_frame(&fl, OuterLink::Ethernet, &ports).unwrap();
        assert_eq!((l, f), (InnerLink::RawIp, &inner_ip[..]));
    }

    #[test]
    fn not_tunnels() {
        let ports = TunnelPorts::well_known();
        let inner_ip = ping([10, 244, 1, 2], [10, 244, 2, 2]);
        // Plain ICMP, UDP to another port, a short VXLAN body, and garbage after port 8285.
        assert!(inner_frame(&inner_ip, OuterLink::RawIp, &ports).is_none());
        assert!(inner_frame(&outer_udp(53, &inner_ip), OuterLink::RawIp, &ports).is_none());
        assert!(inner_frame(&outer_udp(8472, &[8, 0, 0, 0]), OuterLink::RawIp, &ports).is_none());
        assert!(inner_frame(&outer_udp(8285, &[0x55; 20]), OuterLink::RawIp, &ports).is_none());
        // Every prefix of a tunnel packet: no panic, and nothing found once the inner is cut.
        let vx = outer_udp(
            8472,
            &build::vxlan(1, &build::ethernet([2; 6], [4; 6], &[], 0x0800, &inner_ip)),
        );
        for n in 0..vx.len() {
            let _ = inner_frame(&vx[..n], OuterLink::RawIp, &ports);
        }
        assert!(inner_frame(&vx[..20 + 8 + 8 + 13], OuterLink::RawIp, &ports).is_none());
    }
}
