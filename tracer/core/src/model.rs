//! The domain's small typed values: which way a frame crossed an interface, which leg of the
//! trip a packet is on, what kind of link a capture point is, what a tunnel costs, which
//! transport the probes use. Reports turn them into the schema's words at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which way a frame crossed the interface it was captured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received on the interface (entering its namespace's stack or bridge).
    In,
    /// Transmitted through the interface.
    Out,
}

impl Direction {
    /// `in` | `out`, as the schemas spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which TCP segment a TCP probe is: a SYN opens a flow as a client would; an ACK or FIN out
/// of nowhere is what conntrack calls INVALID (the FIN always, the ACK when
/// `nf_conntrack_tcp_loose` is 0), so a trace can find the rule that drops such packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpSegment {
    #[default]
    Syn,
    Ack,
    Fin,
}

impl TcpSegment {
    /// The TCP flags byte.
    pub fn flags(self) -> u8 {
        use dye_decode::build::tcp_flags;
        match self {
            TcpSegment::Syn => tcp_flags::SYN,
            TcpSegment::Ack => tcp_flags::ACK,
            TcpSegment::Fin => tcp_flags::FIN | tcp_flags::ACK,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TcpSegment::Syn => "syn",
            TcpSegment::Ack => "ack",
            TcpSegment::Fin => "fin",
        }
    }
}

/// Transport of the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Icmp,
    Udp,
    Tcp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Icmp => "icmp",
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }

    /// L4 header length.
    pub fn header_len(self) -> u32 {
        match self {
            Proto::Icmp | Proto::Udp => 8,
            Proto::Tcp => 20,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encapsulating device kinds. One table of what each costs lives in [`TunnelKind::overhead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelKind {
    Vxlan,
    Geneve,
    Gre,
    Ipip,
}

/// Outer address family of a tunnel: what its underlay carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: std::net::IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// Bytes of an IP header without options or extension headers.
    pub fn ip_header(self) -> u32 {
        match self {
            Family::V4 => 20,
            Family::V6 => 40,
        }
    }
}

impl TunnelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Gre => "gre",
            TunnelKind::Ipip => "ipip",
        }
    }

    /// Bytes of outer headers the tunnel adds to an inner IP packet on an `underlay` of this
    /// family: VXLAN on IPv4 costs 50 (20 + UDP 8 + VXLAN 8 + inner Ethernet 14), on IPv6 70.
    pub fn overhead(self, underlay: Family) -> u32 {
        let ip = underlay.ip_header();
        match self {
            TunnelKind::Vxlan => ip + 8 + 8 + 14,
            // Geneve without options: UDP 8 + Geneve 8 + inner Ethernet 14.
            TunnelKind::Geneve => ip + 8 + 8 + 14,
            // GRE without key or sequence number.
            TunnelKind::Gre => ip + 4,
            TunnelKind::Ipip => ip,
        }
    }
}

impl fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a capture point's link behaves, for ordering and explanations. Serialized as the schema
/// word (`vxlan`, not a nested object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum LinkClass {
    Loopback,
    Physical,
    Veth,
    Bridge,
    Tunnel(TunnelKind),
    /// A TUN device: raw IP handed to a userspace program (flannel's udp backend, VPNs), which
    /// may encapsulate it; what it does is seen on the underlay, not on the device.
    Tun,
    Other,
}

impl LinkClass {
    /// The schema word: veth | bridge | vxlan | geneve | gre | ipip | tun | physical | loopback |
    /// other.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkClass::Loopback => "loopback",
            LinkClass::Physical => "physical",
            LinkClass::Veth => "veth",
            LinkClass::Bridge => "bridge",
            LinkClass::Tunnel(t) => t.as_str(),
            LinkClass::Tun => "tun",
            LinkClass::Other => "other",
        }
    }

    /// The stack walks lower layers first on receive: wire devices, then bridges, then tunnels.
    pub fn stack_rank(self) -> u8 {
        match self {
            LinkClass::Physical | LinkClass::Veth | LinkClass::Loopback => 0,
            LinkClass::Bridge => 1,
            LinkClass::Tunnel(_) | LinkClass::Tun | LinkClass::Other => 2,
        }
    }
}

impl From<LinkClass> for String {
    fn from(c: LinkClass) -> String {
        c.as_str().to_string()
    }
}

impl TryFrom<String> for LinkClass {
    type Error = String;

    fn try_from(word: String) -> Result<LinkClass, String> {
        Ok(match word.as_str() {
            "loopback" => LinkClass::Loopback,
            "physical" => LinkClass::Physical,
            "veth" => LinkClass::Veth,
            "bridge" => LinkClass::Bridge,
            "vxlan" => LinkClass::Tunnel(TunnelKind::Vxlan),
            "geneve" => LinkClass::Tunnel(TunnelKind::Geneve),
            "gre" => LinkClass::Tunnel(TunnelKind::Gre),
            "ipip" => LinkClass::Tunnel(TunnelKind::Ipip),
            "tun" => LinkClass::Tun,
            "other" => LinkClass::Other,
            w => return Err(format!("unknown link kind {w:?}")),
        })
    }
}

impl fmt::Display for LinkClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An interface in a namespace: `netns/ifname`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PointRef {
    pub netns: String,
    pub ifname: String,
}

impl PointRef {
    pub fn new(netns: impl Into<String>, ifname: impl Into<String>) -> PointRef {
        PointRef {
            netns: netns.into(),
            ifname: ifname.into(),
        }
    }
}

impl fmt::Display for PointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.netns, self.ifname)
    }
}

/// An address with an optional port, written the one way dye writes endpoints everywhere:
/// `10.0.0.1`, `10.0.0.1:80`, `fd00::1`, `[fd00::1]:80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: std::net::IpAddr,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (a, None) => write!(f, "{a}"),
            (std::net::IpAddr::V4(a), Some(p)) => write!(f, "{a}:{p}"),
            (std::net::IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
        }
    }
}

/// What an ICMP or ICMPv6 message means for a probe, from its type and code — never from a
/// display label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IcmpKind {
    EchoRequest,
    EchoReply,
    /// Fragmentation Needed (v4 type 3 code 4) or Packet Too Big (v6 type 2).
    TooBig,
    /// Only the destination itself sends these: the probe arrived.
    PortUnreachable,
    ProtocolUnreachable,
    /// Any other destination unreachable (net, host, prohibited…).
    Unreachable,
    TimeExceeded,
    ParameterProblem,
    Redirect,
    Other,
}

impl IcmpKind {
    /// Classifies a message by family, type and code.
    pub fn of(v6: bool, ty: u8, code: u8) -> IcmpKind {
        if v6 {
            match (ty, code) {
                (1, 4) => IcmpKind::PortUnreachable,
                (1, _) => IcmpKind::Unreachable,
                (2, _) => IcmpKind::TooBig,
                (3, _) => IcmpKind::TimeExceeded,
                (4, 1) => IcmpKind::ProtocolUnreachable, // unrecognised next header
                (4, _) => IcmpKind::ParameterProblem,
                (128, _) => IcmpKind::EchoRequest,
                (129, _) => IcmpKind::EchoReply,
                (137, _) => IcmpKind::Redirect,
                _ => IcmpKind::Other,
            }
        } else {
            match (ty, code) {
                (0, _) => IcmpKind::EchoReply,
                (8, _) => IcmpKind::EchoRequest,
                (3, 2) => IcmpKind::ProtocolUnreachable,
                (3, 3) => IcmpKind::PortUnreachable,
                (3, 4) => IcmpKind::TooBig,
                (3, _) => IcmpKind::Unreachable,
                (5, _) => IcmpKind::Redirect,
                (11, _) => IcmpKind::TimeExceeded,
                (12, _) => IcmpKind::ParameterProblem,
                _ => IcmpKind::Other,
            }
        }
    }

    /// Sent by the destination itself, so the probe arrived.
    pub fn proves_arrival(self) -> bool {
        matches!(
            self,
            IcmpKind::PortUnreachable | IcmpKind::ProtocolUnreachable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_overhead_table_by_kind_and_underlay_family() {
        assert_eq!(TunnelKind::Vxlan.overhead(Family::V4), 50);
        assert_eq!(TunnelKind::Vxlan.overhead(Family::V6), 70);
        assert_eq!(TunnelKind::Geneve.overhead(Family::V4), 50);
        assert_eq!(TunnelKind::Gre.overhead(Family::V4), 24);
        assert_eq!(TunnelKind::Ipip.overhead(Family::V4), 20);
        assert_eq!(TunnelKind::Ipip.overhead(Family::V6), 40);
    }

    #[test]
    fn icmp_kinds_come_from_type_and_code() {
        assert_eq!(IcmpKind::of(false, 3, 4), IcmpKind::TooBig);
        assert_eq!(IcmpKind::of(true, 2, 0), IcmpKind::TooBig);
        assert_eq!(IcmpKind::of(false, 3, 3), IcmpKind::PortUnreachable);
        assert_eq!(IcmpKind::of(true, 1, 4), IcmpKind::PortUnreachable);
        assert_eq!(IcmpKind::of(false, 3, 13), IcmpKind::Unreachable);
        assert_eq!(IcmpKind::of(false, 0, 0), IcmpKind::EchoReply);
        assert_eq!(IcmpKind::of(true, 129, 0), IcmpKind::EchoReply);
        assert!(!IcmpKind::of(false, 3, 1).proves_arrival());
    }

    #[test]
    fn endpoints_bracket_ipv6_only_with_a_port() {
        let e = |a: &str, p| Endpoint {
            addr: a.parse().unwrap(),
            port: p,
        };
        assert_eq!(e("10.0.0.1", Some(80)).to_string(), "10.0.0.1:80");
        assert_eq!(e("fd00::1", Some(80)).to_string(), "[fd00::1]:80");
        assert_eq!(e("fd00::1", None).to_string(), "fd00::1");
    }
}
