//! Packet builders: the inverse of [`crate::dissect`], for probes, sample captures and tests.
//!
//! Each function returns the bytes of one layer with its payload appended; checksums (IPv4
//! header, UDP, TCP, ICMP, ICMPv6) are computed. Compose them inside out:
//! `ethernet(.., ipv4(.., udp(.., payload)))`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{GeneveRepr, GreRepr, VxlanRepr};

/// RFC 1071 sum, not yet complemented.
fn sum(mut acc: u32, b: &[u8]) -> u32 {
    let mut it = b.chunks_exact(2);
    for c in &mut it {
        if let [x, y] = c {
            acc += u32::from(u16::from_be_bytes([*x, *y]));
        }
    }
    if let [x] = it.remainder() {
        acc += u32::from(u16::from_be_bytes([*x, 0]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `b`.
pub fn checksum(b: &[u8]) -> u16 {
    fold(sum(0, b))
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum(acc, &s.octets());
            acc = sum(acc, &d.octets());
            acc += u32::from(proto) + len as u32;
        }
        (s, d) => {
            let s6 = match s {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            let d6 = match d {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            acc = sum(acc, &s6.octets());
            acc = sum(acc, &d6.octets());
            acc += len as u32 + u32::from(proto);
        }
    }
    acc
}

/// IPv4 header fields for [`ipv4`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4 {
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// TTL.
    pub ttl: u8,
    /// Identification.
    pub id: u16,
    /// Don't Fragment.
    pub df: bool,
    /// More Fragments.
    pub mf: bool,
    /// Fragment offset in bytes (multiple of 8).
    pub frag_offset: u16,
    /// TOS byte.
    pub tos: u8,
    /// Options (padded to a multiple of 4 with zeros).
    pub options: Vec<u8>,
}

impl V4 {
    /// A header with TTL 64, id 1, no flags.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> V4 {
        V4 {
            src,
            dst,
            ttl: 64,
            id: 1,
            df: false,
            mf: false,
            frag_offset: 0,
            tos: 0,
            options: Vec::new(),
        }
    }
    /// Sets the TTL.
    pub fn ttl(mut self, ttl: u8) -> V4 {
        self.ttl = ttl;
        self
    }
    /// Sets the identification.
    pub fn id(mut self, id: u16) -> V4 {
        self.id = id;
        self
    }
    /// Sets DF.
    pub fn df(mut self, df: bool) -> V4 {
        self.df = df;
        self
    }
}

/// An IPv4 packet: header (with checksum) + payload. Over 65535 bytes the total length is 0,
/// as Linux writes it into a BIG TCP super-packet.
pub fn ipv4(h: &V4, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut opts = h.options.clone();
    while opts.len() % 4 != 0 {
        opts.push(0);
    }
    opts.truncate(40);
    let hl = 20 + opts.len();
    let total = u16::try_from(hl + payload.len()).unwrap_or(0);
    let mut v = Vec::with_capacity(hl + payload.len());
    v.push(0x40 | (hl / 4) as u8);
    v.push(h.tos);
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&h.id.to_be_bytes());
    let ff = (u16::from(h.df) << 14) | (u16::from(h.mf) << 13) | ((h.frag_offset / 8) & 0x1fff);
    v.extend_from_slice(&ff.to_be_bytes());
    v.push(h.ttl);
    v.push(proto);
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&h.src.octets());
    v.extend_from_slice(&h.dst.octets());
    v.extend_from_slice(&opts);
    let c = checksum(&v);
    v[10..12].copy_from_slice(&c.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An IPv6 packet: base header + `ext` (already-encoded extension headers; the caller sets
/// their next-header bytes) + payload. `next` is the base header's next header. Over 65535
/// bytes of payload the payload length is 0, as Linux BIG TCP hands the packet to packet
/// sockets (hop-by-hop header stripped); [`ipv6_jumbo`] builds the RFC 2675 form.
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop: u8,
    next: u8,
    ext: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let plen = u16::try_from(ext.len() + payload.len()).unwrap_or(0);
    let mut v = Vec::with_capacity(40 + ext.len() + payload.len());
    v.extend_from_slice(&[0x60, 0, 0, 0]);
    v.extend_from_slice(&plen.to_be_bytes());
    v.push(next);
    v.push(hop);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(ext);
    v.extend_from_slice(payload);
    v
}

/// An RFC 2675 jumbogram: base header with payload length 0, a hop-by-hop header holding only
/// the Jumbo Payload option (its length: the hop-by-hop header plus `payload`), then `payload`
/// (whose protocol is `next`).
pub fn ipv6_jumbo(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    let jumbo = u32::try_from(8 + payload.len()).unwrap_or(u32::MAX);
    let mut hbh = vec![next, 0, 0xc2, 4];
    hbh.extend_from_slice(&jumbo.to_be_bytes());
    let mut v = ipv6(src, dst, hop, 0, &hbh, &[]);
    v[4..6].copy_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

/// A UDP datagram with checksum (length 0 over 65535 bytes, as in an RFC 2675 jumbogram).
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&u16::try_from(len).unwrap_or(0).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    let mut c = fold(sum(pseudo(src, dst, 17, len), &v));
    if c == 0 {
        c = 0xffff;
    }
    v[6..8].copy_from_slice(&c.to_be_bytes());
    v
}

/// TCP flag bits for [`tcp`].
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// A TCP segment (20-byte header, window 64240) with checksum.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + payload.len());
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ack.to_be_bytes());
    v.push(5 << 4);
    v.push(flags);
    v.extend_from_slice(&64240u16.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(payload);
    let c = fold(sum(pseudo(src, dst, 6, v.len()), &v));
    v[16..18].copy_from_slice(&c.to_be_bytes());
    v
}

/// An ICMPv4 message: type, code, the 4 "rest of header" bytes, data.
pub fn icmp4(kind: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = vec![kind, code, 0, 0];
    v.extend_from_slice(&rest);
    v.extend_from_slice(data);
    let c = checksum(&v);
    v[2..4].copy_from_slice(&c.to_be_bytes());
    v
}

/// An ICMPv6 message with checksum.
pub fn icmp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    data: &[u8],
) -> Vec<u8> {
    let mut v = vec![kind, code, 0, 0];
    v.extend_from_slice(&rest);
    v.extend_from_slice(data);
    let c = fold(sum(pseudo(src.into(), dst.into(), 58, v.len()), &v));
    v[2..4].copy_from_slice(&c.to_be_bytes());
    v
}

/// Echo identifier and sequence as ICMP "rest of header".
pub fn echo_rest(id: u16, seq: u16) -> [u8; 4] {
    let i = id.to_be_bytes();
    let s = seq.to_be_bytes();
    [i[0], i[1], s[0], s[1]]
}

/// An Ethernet frame with optional VLAN tags (outermost first; the first of two or more uses
/// the 802.1ad TPID 0x88a8).
pub fn ethernet(
    dst: [u8; 6],
    src: [u8; 6],
    vlans: &[u16],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    for (i, vid) in vlans.iter().enumerate() {
        let tpid: u16 = if i == 0 && vlans.len() > 1 {
            0x88a8
        } else {
            0x8100
        };
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A VXLAN header (I flag set) + inner frame: the payload of a UDP datagram.
pub fn vxlan(vni: u32, inner_frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    let _ = VxlanRepr { flags: 0x08, vni }.emit(&mut v);
    v.extend_from_slice(inner_frame);
    v
}

/// A Geneve header with `options` + payload.
pub fn geneve(vni: u32, protocol: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let r = GeneveRepr {
        oam: false,
        critical: options.get(2).is_some_and(|t| t & 0x80 != 0),
        protocol,
        vni,
        options,
    };
    let mut v = vec![0u8; r.header_len()];
    let _ = r.emit(&mut v);
    v.extend_from_slice(payload);
    v
}

/// A GRE header + payload.
pub fn gre(r: &GreRepr, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; r.header_len()];
    let _ = r.emit(&mut v);
    v.extend_from_slice(payload);
    v
}

/// A Linux cooked (SLL, 16 bytes) header + payload.
pub fn sll(packet_type: u16, src_mac: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + payload.len());
    v.extend_from_slice(&packet_type.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
    v.extend_from_slice(&6u16.to_be_bytes());
    v.extend_from_slice(&src_mac);
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A Linux cooked v2 (SLL2, 20 bytes) header + payload.
pub fn sll2(
    packet_type: u8,
    ifindex: u32,
    src_mac: [u8; 6],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + payload.len());
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&ifindex.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v.push(packet_type);
    v.push(6);
    v.extend_from_slice(&src_mac);
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

/// Splits an IPv4 packet (no options) into fragments whose IP payload is at most
/// `max_payload` bytes (rounded down to a multiple of 8).
pub fn fragment_ipv4(packet: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    let hl = usize::from(packet.first().map(|b| b & 0x0f).unwrap_or(5)) * 4;
    let (true, Some(hdr), Some(data)) = (hl >= 20, packet.get(..hl), packet.get(hl..)) else {
        return vec![packet.to_vec()];
    };
    let step = (max_payload / 8).max(1) * 8;
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let end = (off + step).min(data.len());
        let mut h = hdr.to_vec();
        let total = (hl + end - off) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        let df = h[6] & 0x40;
        let mf = u16::from(end < data.len()) << 13;
        let ff = (u16::from(df) << 8) | mf | ((off / 8) as u16);
        h[6..8].copy_from_slice(&ff.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(&data[off..end]);
        out.push(h);
        off = end;
    }
    out
}

/// Splits the payload of an IPv6 packet (no extension headers; its next header is `next`) into
/// fragments with a fragment header, each carrying at most `max_payload` bytes.
pub fn fragment_ipv6(packet: &[u8], id: u32, max_payload: usize) -> Vec<Vec<u8>> {
    let (Some(hdr), Some(data)) = (packet.get(..40), packet.get(40..)) else {
        return vec![packet.to_vec()];
    };
    let next = hdr[6];
    let step = (max_payload / 8).max(1) * 8;
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let end = (off + step).min(data.len());
        let mut h = hdr.to_vec();
        let plen = (8 + end - off) as u16;
        h[4..6].copy_from_slice(&plen.to_be_bytes());
        h[6] = 44;
        let fo = (off as u16) | u16::from(end < data.len());
        h.push(next);
        h.push(0);
        h.extend_from_slice(&fo.to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&data[off..end]);
        out.push(h);
        off = end;
    }
    out
}
