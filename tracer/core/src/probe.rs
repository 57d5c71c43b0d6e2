//! Probe packets: whole IP packets (ICMP echo, UDP datagram or TCP SYN) whose L4 payload ends
//! with the dye marker, so they can be recognised at every hop however they are rewritten,
//! wrapped or split. Built here, sent by `inject`.

use std::net::IpAddr;

use dye_decode::build::{self, V4};
use dye_decode::Marker;

pub use crate::model::Proto;

/// The smallest probe: no link pads a 64-byte IP packet (padding would move the marker away
/// from the end of the frame).
pub const MIN_SIZE: u32 = 64;

/// The TTL (hop limit) probes leave with unless asked otherwise.
pub const DEFAULT_TTL: u8 = 64;

/// The smallest probe to `dst` with `proto`: 64 bytes, or more when the headers and the
/// marker need it (TCP over IPv6: 40 + 20 + 16 = 76).
pub fn smallest_probe(dst: IpAddr, proto: Proto) -> u32 {
    let ip = if dst.is_ipv4() { 20 } else { 40 };
    (ip + proto.header_len() + Marker::LEN as u32).max(MIN_SIZE)
}

/// Everything a probe of this trace shares.
#[derive(Debug, Clone)]
pub struct ProbeTemplate {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    /// Destination port (UDP/TCP).
    pub dport: u16,
    /// First source port (UDP/TCP); probe `seq` uses `sport_base + seq` so that every probe is
    /// its own flow (its own conntrack entry and NAT decision). ICMP: the echo identifier.
    pub sport_base: u16,
    /// IP packet size in bytes (header included).
    pub size: u32,
    pub df: bool,
    pub trace_id: u32,
    /// IPv4 TTL / IPv6 hop limit the probe leaves with.
    pub ttl: u8,
    /// The segment a TCP probe is (ignored for ICMP and UDP).
    pub tcp: crate::model::TcpSegment,
}

/// A probe ready to send.
#[derive(Debug, Clone)]
pub struct Probe {
    pub seq: u32,
    /// IPv4 id (or IPv6 flow label) it carries, to match ICMP errors with short quotes.
    pub ip_id: u32,
    pub packet: Vec<u8>,
}

/// Why a probe cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("--size {size} is too small: a {proto} probe needs at least {min} bytes")]
    TooSmall {
        size: u32,
        proto: &'static str,
        min: u32,
    },
    #[error("--size {0} is too large: an IP packet holds at most 65535 bytes")]
    TooLarge(u32),
    #[error("source {src} and destination {dst} are not the same IP version")]
    MixedFamilies { src: IpAddr, dst: IpAddr },
}

impl ProbeTemplate {
    fn ip_header_len(&self) -> u32 {
        if self.dst.is_ipv4() {
            20
        } else {
            40
        }
    }

    /// The smallest size this template accepts.
    pub fn min_size(&self) -> u32 {
        smallest_probe(self.dst, self.proto)
    }

    pub fn check(&self) -> Result<(), ProbeError> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(ProbeError::MixedFamilies {
                src: self.src,
                dst: self.dst,
            });
        }
        if self.size < self.min_size() {
            return Err(ProbeError::TooSmall {
                size: self.size,
                proto: self.proto.as_str(),
                min: self.min_size(),
            });
        }
        if self.size > 65535 {
            return Err(ProbeError::TooLarge(self.size));
        }
        Ok(())
    }

    /// Probe number `seq` with IP id `ip_id`.
    pub fn build(&self, seq: u32, ip_id: u16) -> Result<Probe, ProbeError> {
        self.check()?;
        let payload_len = (self.size - self.ip_header_len() - self.proto.header_len()) as usize;
        let mut payload = vec![0u8; payload_len];
        payload[..3.min(payload_len)].copy_from_slice(&b"dye"[..3.min(payload_len)]);
        Marker::new(self.trace_id, seq)
            .encode_into(&mut payload)
            .map_err(|_| ProbeError::TooSmall {
                size: self.size,
                proto: self.proto.as_str(),
                min: self.min_size(),
            })?;
        let sport = self.sport_base.wrapping_add(seq as u16);
        let (l4, proto_num) = match (self.proto, self.src, self.dst) {
            (Proto::Icmp, IpAddr::V4(_), _) => (
                build::icmp4(
                    8,
                    0,
                    build::echo_rest(self.sport_base, seq as u16),
                    &payload,
                ),
                1,
            ),
            (Proto::Icmp, IpAddr::V6(s), IpAddr::V6(d)) => (
                build::icmp6(
                    s,
                    d,
                    128,
                    0,
                    build::echo_rest(self.sport_base, seq as u16),
                    &payload,
                ),
                58,
            ),
            (Proto::Udp, s, d) => (build::udp(s, d, sport, self.dport, &payload), 17),
            (Proto::Tcp, s, d) => (
                build::tcp(
                    s,
                    d,
                    sport,
                    self.dport,
                    u32::from(ip_id) << 8 | seq,
                    0,
                    self.tcp.flags(),
                    &payload,
                ),
                6,
            ),
            (Proto::Icmp, s, d) => return Err(ProbeError::MixedFamilies { src: s, dst: d }),
        };
        let packet = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => build::ipv4(
                &V4::new(s, d).ttl(self.ttl).id(ip_id).df(self.df),
                proto_num,
                &l4,
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut p = build::ipv6(s, d, self.ttl, proto_num, &[], &l4);
                // IPv6 has no IP id: the flow label carries it instead (routers leave it alone,
                // checksums do not cover it), so a Packet Too Big whose quote stops short of
                // the marker still names its probe.
                set_flow_label(&mut p, u32::from(ip_id));
                p
            }
            (s, d) => return Err(ProbeError::MixedFamilies { src: s, dst: d }),
        };
        Ok(Probe {
            seq,
            ip_id: u32::from(ip_id),
            packet,
        })
    }
}

/// Writes the 20-bit flow label of an IPv6 header.
fn set_flow_label(packet: &mut [u8], label: u32) {
    if let Some(h) = packet.get_mut(..4) {
        let word = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let word = (word & 0xfff0_0000) | (label & 0x000f_ffff);
        h.copy_from_slice(&word.to_be_bytes());
    }
}

/// The id a probe's IP header carries for matching: the IPv4 id, or the IPv6 flow label.
pub fn probe_ip_id(ip: &dye_decode::Ip) -> u32 {
    if ip.version == 6 {
        ip.flow_label
    } else {
        ip.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dye_decode::{dissect, LinkType, Options, L4};

    fn template(proto: Proto, size: u32) -> ProbeTemplate {
        ProbeTemplate {
            src: "10.244.1.2".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            proto,
            dport: 80,
            sport_base: 40000,
            size,
            df: true,
            trace_id: 0x1a2b3c4d,
            ttl: DEFAULT_TTL,
            tcp: Default::default(),
        }
    }

    #[test]
    fn probes_dissect_back_to_what_was_asked() {
        for proto in [Proto::Icmp, Proto::Udp, Proto::Tcp] {
            let p = template(proto, 100).build(3, 777).unwrap();
            assert_eq!(p.packet.len(), 100, "{proto:?}");
            let d = dissect(&p.packet, LinkType::RawIp, &Options::default());
            assert!(d.error.is_none(), "{proto:?}: {:?}", d.error);
            let ip = d.ip.as_ref().unwrap();
            assert_eq!((ip.id, ip.df, ip.ttl, ip.total_len), (777, true, 64, 100));
            let m = d.find_marker().expect("marker");
            assert_eq!((m.marker.trace_id, m.marker.seq), (0x1a2b3c4d, 3));
            match (proto, d.l4.unwrap()) {
                (Proto::Icmp, L4::Icmp(i)) => assert_eq!((i.kind, i.seq), (8, Some(3))),
                (Proto::Udp, L4::Udp(u)) => assert_eq!((u.sport, u.dport), (40003, 80)),
                (Proto::Tcp, L4::Tcp(t)) => {
                    assert_eq!((t.sport, t.dport, t.flags), (40003, 80, 0x02))
                }
                (p, l4) => panic!("{p:?} dissected as {l4:?}"),
            }
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(
            template(Proto::Tcp, 60).check(),
            Err(ProbeError::TooSmall {
                size: 60,
                proto: "tcp",
                min: 64
            })
        );
        assert!(template(Proto::Icmp, 64).check().is_ok());
        assert_eq!(
            template(Proto::Udp, 70000).check(),
            Err(ProbeError::TooLarge(70000))
        );
        let mut v6 = template(Proto::Udp, 64);
        v6.dst = "fd00::1".parse().unwrap();
        assert!(matches!(v6.check(), Err(ProbeError::MixedFamilies { .. })));
    }

    #[test]
    fn ipv6_probes_carry_the_marker() {
        let mut t = template(Proto::Icmp, 100);
        t.src = "fd00:10:244:1::2".parse().unwrap();
        t.dst = "fd00:10:244:2::2".parse().unwrap();
        let p = t.build(1, 5).unwrap();
        let d = dissect(&p.packet, LinkType::RawIp, &Options::default());
        assert!(d.error.is_none(), "{:?}", d.error);
        assert_eq!(d.ip.as_ref().unwrap().version, 6);
        assert_eq!(d.ip.as_ref().unwrap().flow_label, 5);
        assert_eq!(probe_ip_id(d.ip.as_ref().unwrap()), p.ip_id);
        assert_eq!(d.find_marker().unwrap().marker.seq, 1);
    }
}
