//! The dye probe marker: a 16-byte trailer at the very end of a probe's L4 payload.
//!
//! Byte layout (version 1, all integers big-endian):
//!
//! ```text
//! offset from the end  field
//! len-16 .. len-12     magic      0xD7E0C0DE
//! len-12 .. len-8      trace id   random per trace (u32)
//! len-8  .. len-4      sequence   probe number within the trace (u32)
//! len-4                version    1
//! len-3                flags      0 (reserved)
//! len-2  .. len        check      Internet checksum (RFC 1071) over the 14 bytes before it
//! ```
//!
//! Why at the end: the marker then sits at a fixed distance from the end of the *frame* whatever
//! was added in front of it (VLAN tags, VXLAN/Geneve/GRE/IPIP outer headers), so one classic BPF
//! expression `ether[len - 16:4] = 0xd7e0c0de` finds it at any encapsulation depth. It survives NAT
//! (only headers change), is carried back by echo replies, sits at the end of the *last* IP
//! fragment, and at the end of an ICMP error's quote when the quote holds the whole probe.
//! Probes should be at least 64 bytes so that no link pads them (padding would move the end).

use serde::Serialize;

use crate::model::{Dissection, FoundMarker};

/// A decoded marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Marker {
    /// Random per-trace identifier (JSON: 8 lowercase hex digits).
    #[serde(serialize_with = "hex32")]
    pub trace_id: u32,
    /// Probe sequence number.
    pub seq: u32,
}

fn hex32<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:08x}"))
}

/// The payload cannot hold a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "payload of {len} bytes cannot hold the {} byte dye marker",
    Marker::LEN
)]
pub struct MarkerError {
    /// The payload length offered.
    pub len: usize,
}

impl Marker {
    /// Length of the trailer in bytes.
    pub const LEN: usize = 16;
    /// The magic number that starts the trailer.
    pub const MAGIC: u32 = 0xD7E0_C0DE;
    /// The codec version this crate writes.
    pub const VERSION: u8 = 1;

    /// A marker for probe `seq` of trace `trace_id`.
    pub fn new(trace_id: u32, seq: u32) -> Marker {
        Marker { trace_id, seq }
    }

    /// The 16 trailer bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&Self::MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.trace_id.to_be_bytes());
        b[8..12].copy_from_slice(&self.seq.to_be_bytes());
        b[12] = Self::VERSION;
        b[13] = 0;
        let c = checksum(&b[0..14]);
        b[14..16].copy_from_slice(&c.to_be_bytes());
        b
    }

    /// Writes the marker into the last 16 bytes of `payload`.
    pub fn encode_into(&self, payload: &mut [u8]) -> Result<(), MarkerError> {
        let len = payload.len();
        match len
            .checked_sub(Self::LEN)
            .and_then(|at| payload.get_mut(at..))
        {
            Some(tail) => {
                tail.copy_from_slice(&self.to_bytes());
                Ok(())
            }
            None => Err(MarkerError { len }),
        }
    }

    /// A payload of `len` bytes: a recognisable filler ("dye-probe-" repeated) ending in the
    /// marker.
    pub fn payload_with_marker(&self, len: usize) -> Result<Vec<u8>, MarkerError> {
        if len < Self::LEN {
            return Err(MarkerError { len });
        }
        let fill = b"dye-probe-";
        let mut v: Vec<u8> = fill.iter().copied().cycle().take(len).collect();
        self.encode_into(&mut v)?;
        Ok(v)
    }

    /// Decodes a 16-byte trailer; `None` unless magic, version and checksum all match.
    pub fn decode(trailer: &[u8]) -> Option<Marker> {
        let b: &[u8; 16] = trailer.try_into().ok()?;
        if b[0..4] != Self::MAGIC.to_be_bytes() || b[12] != Self::VERSION {
            return None;
        }
        if checksum(&b[0..14]).to_be_bytes() != [b[14], b[15]] {
            return None;
        }
        Some(Marker {
            trace_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            seq: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        })
    }

    /// Looks for a marker in the last 16 bytes of `bytes` (a payload, a reassembled datagram,
    /// or a whole unpadded frame).
    #[inline]
    pub fn find_in_bytes(bytes: &[u8]) -> Option<Marker> {
        let at = bytes.len().checked_sub(Self::LEN)?;
        let tail = bytes.get(at..)?;
        // Cheap reject before the full decode.
        if tail.first() != Some(&0xD7) {
            return None;
        }
        Self::decode(tail)
    }

    /// The marker of a dissected packet: in its payload, its last fragment, or its ICMP quote.
    pub fn find(d: &Dissection) -> Option<FoundMarker> {
        d.find_marker()
    }
}

/// RFC 1071 checksum.
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = match c {
            [x, y] => u16::from_be_bytes([*x, *y]),
            [x] => u16::from_be_bytes([*x, 0]),
            _ => 0,
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A libpcap filter (tcpdump syntax) that matches dye probes at any encapsulation depth, with
/// the default VXLAN ports. See [`filter_expression_with`].
pub fn filter_expression(trace_id: Option<u32>) -> String {
    filter_expression_with(trace_id, &[4789, 8472])
}

/// A libpcap filter that matches:
/// 1. any frame whose last 16 bytes are a dye marker (of `trace_id`, if given) — plain,
///    VLAN-tagged, VXLAN/Geneve/GRE/IPIP-encapsulated, echo replies, last fragments, ICMP errors
///    quoting a whole probe — via indirect loads relative to the frame length;
/// 2. IPv4 fragments (`ip[6:2] & 0x3fff != 0`) and IPv6 fragments (fragment header first);
/// 3. ICMP errors (unreachable, time exceeded, parameter problem) and ICMPv6 errors (types 1–4),
///    whose quotes may be too short to hold the marker;
/// 4. the same fragments and ICMP errors one VXLAN level down, on `vxlan_ports`: inner IPv4
///    without options or inner IPv6 (fragment header first, or ICMPv6 error without extension
///    headers), over an IPv4 underlay or an IPv6 one without extension headers (libpcap's
///    `udp[]` reads IPv4 only, so the IPv6 underlay is read by `ip6[]` offsets).
///
/// Fragments and ICMP errors are rare in normal traffic; the tracer matches them to probes by
/// their headers. The `len >= 64` guard keeps short frames from aborting the filter program on
/// an out-of-bounds load.
pub fn filter_expression_with(trace_id: Option<u32>, vxlan_ports: &[u16]) -> String {
    filter_expression_ports(trace_id, vxlan_ports, &[8285])
}

/// [`filter_expression_with`], plus fragments and ICMP errors inside a bare IP packet carried
/// in UDP to `ip_in_udp_ports` (flannel's `udp` backend): the inner IP header at `udp[8]`.
pub fn filter_expression_ports(
    trace_id: Option<u32>,
    vxlan_ports: &[u16],
    ip_in_udp_ports: &[u16],
) -> String {
    let mut marker = format!("len >= 64 and ether[len - 16:4] = {:#010x}", Marker::MAGIC);
    if let Some(id) = trace_id {
        marker.push_str(&format!(" and ether[len - 12:4] = {id:#010x}"));
    }
    let mut f = format!(
        "({marker}) or (ip and ip[6:2] & 0x3fff != 0) or (ip6 and ip6[6] = 44) \
         or (icmp and (icmp[0] = 3 or icmp[0] = 11 or icmp[0] = 12)) \
         or (ip6 and ip6[6] = 58 and ip6[40] < 5)"
    );
    if !vxlan_ports.is_empty() {
        let ports = vxlan_ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        // udp[8..16] VXLAN, udp[16..30] inner Ethernet, udp[30..] inner IPv4.
        f.push_str(&format!(
            " or (udp dst port ({ports}) and udp[28:2] = 0x0800 and \
             (udp[36:2] & 0x3fff != 0 or (udp[39] = 1 and \
             (udp[50] = 3 or udp[50] = 11 or udp[50] = 12))))"
        ));
        // Inner IPv6 over an IPv4 underlay: next header at udp[36], ICMPv6 type at udp[70].
        f.push_str(&format!(
            " or (udp dst port ({ports}) and udp[28:2] = 0x86dd and \
             (udp[36] = 44 or (udp[36] = 58 and udp[70] < 5)))"
        ));
        // An IPv6 underlay: UDP at ip6[40], VXLAN at ip6[48], inner Ethernet at ip6[56], inner
        // IP at ip6[70].
        let ports6 = vxlan_ports
            .iter()
            .map(|p| format!("ip6[42:2] = {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        f.push_str(&format!(
            " or (ip6 and ip6[6] = 17 and ({ports6}) and \
             ((ip6[68:2] = 0x0800 and (ip6[76:2] & 0x3fff != 0 or (ip6[79] = 1 and \
             (ip6[90] = 3 or ip6[90] = 11 or ip6[90] = 12)))) or \
             (ip6[68:2] = 0x86dd and (ip6[76] = 44 or (ip6[76] = 58 and ip6[110] < 5)))))"
        ));
    }
    if !ip_in_udp_ports.is_empty() {
        let ports = ip_in_udp_ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        // udp[8..] inner IPv4 without options (ICMP type at udp[28]) or inner IPv6 (next
        // header at udp[14], ICMPv6 type at udp[48]).
        f.push_str(&format!(
            " or (udp dst port ({ports}) and ((udp[8] & 0xf0 = 0x40 and \
             (udp[14:2] & 0x3fff != 0 or (udp[17] = 1 and \
             (udp[28] = 3 or udp[28] = 11 or udp[28] = 12)))) or \
             (udp[8] & 0xf0 = 0x60 and (udp[14] = 44 or (udp[14] = 58 and udp[48] < 5)))))"
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let m = Marker::new(0x1a2b3c4d, 7);
        let p = m.payload_with_marker(64).unwrap();
        assert_eq!(p.len(), 64);
        assert_eq!(Marker::find_in_bytes(&p), Some(m));
        assert_eq!(Marker::decode(&m.to_bytes()), Some(m));
        assert!(m.payload_with_marker(15).is_err());
        let mut bad = m.to_bytes();
        bad[9] ^= 1;
        assert_eq!(Marker::decode(&bad), None, "checksum catches a flipped bit");
        assert_eq!(Marker::find_in_bytes(&p[..63]), None);
        assert_eq!(Marker::find_in_bytes(&[]), None);
    }

    #[test]
    fn json_has_hex_trace_id() {
        let j = serde_json::to_string(&Marker::new(0x1a2b3c4d, 1)).unwrap();
        assert_eq!(j, r#"{"trace_id":"1a2b3c4d","seq":1}"#);
    }

    #[test]
    fn filter_mentions_trace_id() {
        let f = filter_expression(Some(0xabcdef01));
        assert!(f.contains("ether[len - 12:4] = 0xabcdef01"));
        assert!(f.contains("0xd7e0c0de"));
    }
}
