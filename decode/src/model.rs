//! What a dissected frame contains: an owned, serde-serialisable description of every layer.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use crate::marker::Marker;
use crate::wire::GeneveOption;

/// How the captured bytes begin (the pcap LINKTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113), the `any` device with libpcap < 1.10 or `-y LINUX_SLL`.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276).
    LinuxSll2,
    /// LINKTYPE_RAW (101), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229): starts with an IP header.
    RawIp,
    /// LINKTYPE_NULL (0): 4-byte host-order address family, then IP.
    Null,
}

impl LinkType {
    /// Maps a pcap LINKTYPE number; `None` when dye cannot dissect it.
    pub fn from_linktype(n: u32) -> Option<LinkType> {
        Some(match n {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            101 | 228 | 229 | 12 | 14 => LinkType::RawIp,
            0 => LinkType::Null,
            _ => return None,
        })
    }
}

/// The link layer of the captured frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Link header kind: "ethernet", "sll", "sll2", "raw" or "null".
    pub kind: &'static str,
    /// Source MAC (Ethernet; SLL: the address the kernel recorded, zero-padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<Mac>,
    /// Destination MAC (Ethernet only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_mac: Option<Mac>,
    /// 802.1Q / 802.1ad tags, outermost first (VLAN id only; up to 4 kept).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<u16>,
    /// EtherType of the payload (after the tags).
    pub ethertype: u16,
    /// SLL/SLL2 packet type (0 host, 1 broadcast, 2 multicast, 3 other host, 4 outgoing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_type: Option<u8>,
    /// SLL2 interface index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One IPv6 extension header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ipv6Ext {
    /// Its protocol number (0 hop-by-hop, 43 routing, 44 fragment, 60 destination options, 51 AH).
    pub kind: u8,
    /// Its length in bytes.
    pub len: u16,
}

/// Where the length of an [`Aggregated`] packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LenFrom {
    /// The captured frame (link header excluded): IPv4 total length 0 (Linux BIG TCP, TSO) or
    /// IPv6 payload length 0 with no Jumbo option (BIG TCP with the hop-by-hop header stripped).
    Frame,
    /// The IPv6 hop-by-hop Jumbo Payload option (RFC 2675).
    Jumbo,
}

/// A GSO/GRO super-packet (BIG TCP, > 64 KiB) whose IP length field does not say its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Aggregated {
    /// The length field as on the wire: IPv4 total length or IPv6 payload length (0).
    pub claimed: u16,
    /// The packet length dye used, IP header included.
    pub len: u32,
    /// Where `len` came from.
    pub from: LenFrom,
}

/// An IPv4 or IPv6 header, every field kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ip {
    /// 4 or 6.
    pub version: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (IPv6: after the extension headers).
    pub proto: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// TOS / traffic class (DSCP << 2 | ECN).
    pub tos: u8,
    /// IPv4 identification; IPv6 fragment-header identification (0 without one).
    pub id: u32,
    /// Don't Fragment (IPv4).
    pub df: bool,
    /// More Fragments.
    pub mf: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    /// Header length in bytes (IPv6: base header plus extension headers).
    pub header_len: u16,
    /// Length the header claims for the whole packet (IPv6: 40 + payload length); see
    /// [`Ip::packet_len`] for the length of an aggregated packet.
    pub total_len: u16,
    /// IPv4 header checksum (0 for IPv6).
    pub checksum: u16,
    /// IPv6 flow label (0 for IPv4).
    pub flow_label: u32,
    /// IPv4 options, raw.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<u8>,
    /// IPv6 extension headers, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ext: Vec<Ipv6Ext>,
    /// The captured packet is shorter than `total_len` (snaplen, or a truncated ICMP quote).
    pub truncated: bool,
    /// Set when the length field does not hold the length (GSO/GRO super-packets as captured
    /// on Linux nodes: IPv4 BIG TCP, IPv6 jumbograms); absent for every other packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregated: Option<Aggregated>,
    /// Where this header starts in the dissected bytes.
    #[serde(skip)]
    pub offset: u32,
    /// Payload bytes present in the capture (after the header, bounded by `total_len`).
    #[serde(skip)]
    pub payload_len: u32,
}

impl Default for Ip {
    fn default() -> Self {
        Ip {
            version: 4,
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            proto: 0,
            ttl: 0,
            tos: 0,
            id: 0,
            df: false,
            mf: false,
            frag_offset: 0,
            header_len: 0,
            total_len: 0,
            checksum: 0,
            flow_label: 0,
            options: Vec::new(),
            ext: Vec::new(),
            truncated: false,
            aggregated: None,
            offset: 0,
            payload_len: 0,
        }
    }
}

impl Ip {
    /// True if this packet is a fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.mf || self.frag_offset != 0
    }

    /// The packet's length, header included: `total_len`, or the length an aggregated packet
    /// was found to have.
    pub fn packet_len(&self) -> u32 {
        self.aggregated.map_or(u32::from(self.total_len), |a| a.len)
    }

    /// Where the payload starts in the dissected bytes.
    pub fn payload_offset(&self) -> usize {
        self.offset as usize + usize::from(self.header_len)
    }
}

/// The tunnel that an outer IP layer carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Tunnel {
    /// VXLAN over UDP.
    Vxlan {
        /// 24-bit VNI.
        vni: u32,
        /// Flags byte.
        flags: u8,
    },
    /// Geneve over UDP.
    Geneve {
        /// 24-bit VNI.
        vni: u32,
        /// Payload EtherType.
        protocol: u16,
        /// OAM bit.
        oam: bool,
        /// Critical-options bit.
        critical: bool,
        /// Options, in order.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        options: Vec<GeneveOption>,
    },
    /// GRE (protocol 0x6558 is gretap, Ethernet inside).
    Gre {
        /// Payload EtherType.
        protocol: u16,
        /// Key.
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<u32>,
        /// Sequence number.
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u32>,
        /// Checksum field.
        #[serde(skip_serializing_if = "Option::is_none")]
        checksum: Option<u16>,
    },
    /// A bare IP packet in UDP, no tunnel header: flannel's `udp` backend (port 8285), the
    /// userspace forwarder behind a TUN device.
    IpInUdp,
    /// IPv4 in IPv4 (protocol 4).
    Ipip,
    /// IPv6 in IPv4 (protocol 41: SIT / 6in4).
    Sit,
    /// IPv6 in IPv6 (next header 41).
    Ip6ip6,
    /// IPv4 in IPv6 (next header 4).
    Ip4ip6,
}

impl Tunnel {
    /// Short name: vxlan, geneve, gre, gretap, ip-in-udp, ipip, sit, ip6ip6, ip4ip6.
    pub fn name(&self) -> &'static str {
        match self {
            Tunnel::Vxlan { .. } => "vxlan",
            Tunnel::Geneve { .. } => "geneve",
            Tunnel::Gre {
                protocol: 0x6558, ..
            } => "gretap",
            Tunnel::Gre { .. } => "gre",
            Tunnel::IpInUdp => "ip-in-udp",
            Tunnel::Ipip => "ipip",
            Tunnel::Sit => "sit",
            Tunnel::Ip6ip6 => "ip6ip6",
            Tunnel::Ip4ip6 => "ip4ip6",
        }
    }

    /// The VNI or GRE key, if any.
    pub fn id(&self) -> Option<u32> {
        match self {
            Tunnel::Vxlan { vni, .. } | Tunnel::Geneve { vni, .. } => Some(*vni),
            Tunnel::Gre { key, .. } => *key,
            _ => None,
        }
    }
}

/// UDP ports of a UDP-based tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// One encapsulation layer, outermost first in [`Dissection::outer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outer {
    /// The outer IP header.
    pub ip: Ip,
    /// UDP ports for VXLAN, Geneve and IP-in-UDP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<Ports>,
    /// What the tunnel is, with its ids.
    pub tunnel: Tunnel,
    /// The inner Ethernet header (VXLAN, Geneve and gretap carry one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner_link: Option<Link>,
}

/// UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Udp {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Length field.
    pub len: u16,
    /// Checksum.
    pub checksum: u16,
}

/// TCP header (in a truncated ICMP quote only the fields that were quoted are non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tcp {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags: FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80.
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// Header length in bytes (data offset × 4).
    pub header_len: u8,
    /// Header bytes actually present (less than `header_len` in a truncated ICMP quote or a
    /// malformed packet; then only the fields inside them are meaningful).
    #[serde(skip)]
    pub captured: u8,
}

/// ICMP or ICMPv6 message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Icmp {
    /// True for ICMPv6.
    pub v6: bool,
    /// Type.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Code.
    pub code: u8,
    /// Identifier (echo request/reply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    /// Sequence number (echo request/reply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u16>,
    /// MTU carried by ICMP frag-needed (next-hop MTU) or ICMPv6 Packet Too Big.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The packet quoted by an error message, dissected as far as the quote goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote: Option<Box<Dissection>>,
}

impl Icmp {
    /// True for destination unreachable, time exceeded, parameter problem, redirect, source quench
    /// (v4) and unreachable, packet too big, time exceeded, parameter problem (v6).
    pub fn is_error(&self) -> bool {
        if self.v6 {
            (1..=4).contains(&self.kind)
        } else {
            matches!(self.kind, 3 | 4 | 5 | 11 | 12)
        }
    }

    /// A short name for type and code, e.g. "echo request", "unreachable need-frag".
    pub fn name(&self) -> &'static str {
        if self.v6 {
            match (self.kind, self.code) {
                (1, 0) => "unreachable no-route",
                (1, 1) => "unreachable prohibited",
                (1, 3) => "unreachable address",
                (1, 4) => "unreachable port",
                (1, _) => "unreachable",
                (2, _) => "packet-too-big",
                (3, 0) => "time-exceeded hop-limit",
                (3, _) => "time-exceeded reassembly",
                (4, _) => "parameter-problem",
                (128, _) => "echo request",
                (129, _) => "echo reply",
                (133, _) => "router-solicit",
                (134, _) => "router-advert",
                (135, _) => "neighbor-solicit",
                (136, _) => "neighbor-advert",
                (137, _) => "redirect",
                _ => "other",
            }
        } else {
            match (self.kind, self.code) {
                (0, _) => "echo reply",
                (8, _) => "echo request",
                (3, 0) => "unreachable net",
                (3, 1) => "unreachable host",
                (3, 2) => "unreachable protocol",
                (3, 3) => "unreachable port",
                (3, 4) => "unreachable need-frag",
                (3, 9 | 10 | 13) => "unreachable prohibited",
                (3, _) => "unreachable",
                (4, _) => "source-quench",
                (5, _) => "redirect",
                (11, 0) => "time-exceeded ttl",
                (11, _) => "time-exceeded reassembly",
                (12, _) => "parameter-problem",
                (13, _) => "timestamp request",
                (14, _) => "timestamp reply",
                _ => "other",
            }
        }
    }
}

/// ARP (Ethernet/IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender MAC.
    pub sender_mac: Mac,
    /// Sender IPv4 address.
    pub sender_ip: Ipv4Addr,
    /// Target MAC.
    pub target_mac: Mac,
    /// Target IPv4 address.
    pub target_ip: Ipv4Addr,
}

/// The transport layer of the innermost IP packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "proto", rename_all = "snake_case")]
pub enum L4 {
    /// UDP.
    Udp(Udp),
    /// TCP.
    Tcp(Tcp),
    /// ICMP or ICMPv6.
    Icmp(Icmp),
}

impl L4 {
    /// Source and destination ports (ICMP echo: the identifier as both; other ICMP: 0).
    pub fn ports(&self) -> (u16, u16) {
        match self {
            L4::Udp(u) => (u.sport, u.dport),
            L4::Tcp(t) => (t.sport, t.dport),
            L4::Icmp(i) => (i.id.unwrap_or(0), i.id.unwrap_or(0)),
        }
    }
}

/// Where in the packet the marker was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerSite {
    /// At the end of the L4 payload.
    Payload,
    /// At the end of the last fragment of a fragmented datagram.
    LastFragment,
    /// At the end of the packet quoted by an ICMP error.
    IcmpQuote,
}

/// A marker and where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FoundMarker {
    /// The decoded marker.
    #[serde(flatten)]
    pub marker: Marker,
    /// Where it was.
    pub site: MarkerSite,
}

/// Why dissection stopped before the end of the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecodeError {
    /// A header was cut short.
    #[error("{layer} truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Which layer.
        layer: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A header holds an impossible value.
    #[error("{layer}: {what}")]
    Malformed {
        /// Which layer.
        layer: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// More nested layers than [`crate::Options::max_layers`].
    #[error("more than {0} nested layers")]
    TooDeep(usize),
}

impl From<crate::wire::WireError> for DecodeError {
    fn from(e: crate::wire::WireError) -> Self {
        match e {
            crate::wire::WireError::Truncated { header, need, have } => DecodeError::Truncated {
                layer: header,
                need,
                have,
            },
            crate::wire::WireError::Malformed { header, what } => DecodeError::Malformed {
                layer: header,
                what,
            },
        }
    }
}

/// Everything dye could read from one frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dissection {
    /// The captured link layer.
    pub link: Link,
    /// Encapsulation layers, outermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outer: Vec<Outer>,
    /// The innermost IP header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ip>,
    /// The innermost transport header (absent for non-first fragments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l4: Option<L4>,
    /// ARP, when the innermost EtherType is ARP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arp: Option<Arp>,
    /// The dye probe marker, if one was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<FoundMarker>,
    /// Where dissection stopped early (malformed or truncated header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DecodeError>,
    /// Innermost L4 payload: offset into the dissected bytes.
    #[serde(skip)]
    pub payload_offset: u32,
    /// Innermost L4 payload length present in the capture.
    #[serde(skip)]
    pub payload_len: u32,
}

/// A 5-tuple of one IP layer (ports are 0 when the layer has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl Flow {
    /// The same flow seen from the other side.
    pub fn reversed(&self) -> Flow {
        Flow {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

impl Dissection {
    /// Resets to empty, keeping allocated capacity (for [`crate::dissect_into`]).
    pub fn clear(&mut self) {
        self.link.vlans.clear();
        self.link.kind = "";
        self.link.src_mac = None;
        self.link.dst_mac = None;
        self.link.ethertype = 0;
        self.link.packet_type = None;
        self.link.ifindex = None;
        self.outer.clear();
        self.ip = None;
        self.l4 = None;
        self.arp = None;
        self.marker = None;
        self.error = None;
        self.payload_offset = 0;
        self.payload_len = 0;
    }

    /// Tells the dissection that the capture kept `captured` of the frame's `orig_len` bytes
    /// (snaplen). A length taken from the frame (IPv4 total length 0, IPv6 payload length 0:
    /// [`LenFrom::Frame`]) grows by what is missing and its layer is marked truncated, as tshark
    /// reads it; a marker read at the cut end is dropped. Nothing changes otherwise.
    pub fn set_orig_len(&mut self, captured: usize, orig_len: usize) {
        let missing = orig_len.saturating_sub(captured);
        if missing == 0 {
            return;
        }
        let missing = u32::try_from(missing).unwrap_or(u32::MAX);
        let mut cut = false;
        let ips = self
            .outer
            .iter_mut()
            .map(|o| &mut o.ip)
            .chain(self.ip.as_mut());
        for ip in ips {
            if let Some(a) = ip.aggregated.as_mut().filter(|a| a.from == LenFrom::Frame) {
                a.len = a.len.saturating_add(missing);
                ip.truncated = true;
                cut = true;
            }
        }
        if cut && self.marker.is_some_and(|m| m.site == MarkerSite::Payload) {
            self.marker = None;
        }
    }

    /// True if dissection stopped on a malformed or truncated header.
    pub fn is_malformed(&self) -> bool {
        self.error.is_some()
    }

    /// The 5-tuple of the innermost IP layer.
    pub fn flow(&self) -> Option<Flow> {
        let ip = self.ip.as_ref()?;
        let (sport, dport) = self.l4.as_ref().map(L4::ports).unwrap_or((0, 0));
        Some(Flow {
            src: ip.src,
            dst: ip.dst,
            proto: ip.proto,
            sport,
            dport,
        })
    }

    /// One 5-tuple per IP layer, outermost first, innermost last.
    pub fn flows(&self) -> impl Iterator<Item = Flow> + '_ {
        self.outer
            .iter()
            .map(|o| {
                let (sport, dport) = o.udp.map(|p| (p.sport, p.dport)).unwrap_or((0, 0));
                Flow {
                    src: o.ip.src,
                    dst: o.ip.dst,
                    proto: o.ip.proto,
                    sport,
                    dport,
                }
            })
            .chain(self.flow())
    }

    /// The ICMP error quote, if this is an ICMP error.
    pub fn quote(&self) -> Option<&Dissection> {
        match &self.l4 {
            Some(L4::Icmp(i)) => i.quote.as_deref(),
            _ => None,
        }
    }

    /// The marker of this packet, or the one in the packet its ICMP error quotes.
    pub fn find_marker(&self) -> Option<FoundMarker> {
        self.marker.or_else(|| {
            self.quote()
                .and_then(|q| q.find_marker())
                .map(|m| FoundMarker {
                    marker: m.marker,
                    site: MarkerSite::IcmpQuote,
                })
        })
    }

    /// The innermost L4 payload within `bytes` (the same bytes that were dissected).
    pub fn payload<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        let s = self.payload_offset as usize;
        bytes
            .get(s..s.saturating_add(self.payload_len as usize))
            .unwrap_or(&[])
    }

    /// All IP layers, outermost first.
    pub fn ips(&self) -> impl Iterator<Item = &Ip> + '_ {
        self.outer.iter().map(|o| &o.ip).chain(self.ip.as_ref())
    }
}
