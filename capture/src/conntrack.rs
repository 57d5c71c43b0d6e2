//! Conntrack entries read in process over `NETLINK_NETFILTER` (ctnetlink), the way `conntrack -L`
//! and `conntrack -G` read them, without running or parsing the CLI.
//!
//! The socket is created on a thread inside the target namespace ([`Netns::run`], as
//! [`crate::netlink::Rtnl::open_in`] does) and keeps talking to that namespace's conntrack table
//! from any thread afterwards.
//!
//! Wire format: the `netlink-packet-netfilter` crate (0.4). It types what dye needs — the
//! nfgenmsg header, `IPCTNL_MSG_CT_GET` requests and dumps, nested `CTA_TUPLE_ORIG` /
//! `CTA_TUPLE_REPLY` (`CTA_TUPLE_IP`, `CTA_TUPLE_PROTO`), `CTA_STATUS`, `CTA_PROTOINFO_TCP`,
//! `CTA_TIMEOUT`, `CTA_MARK` — and decodes through netlink-packet-core's length-checked
//! `NlaBuffer`s. What it leaves untyped (the ICMP / ICMPv6 id, type and code inside
//! `CTA_TUPLE_PROTO`, `CTA_ZONE`, `CTA_ID`) arrives as raw attributes that this module decodes
//! itself with checked lengths, and is written as raw attributes in requests. Nothing here
//! panics on bytes from the kernel: a malformed message is a decode error (see the proptest at
//! the bottom, which feeds random and mutated messages to [`parse_message`]).
//!
//! Lookups: a tuple that is complete for its protocol (ports for TCP/UDP/SCTP/DCCP/UDP-Lite,
//! id/type/code for ICMP) is asked for with `IPCTNL_MSG_CT_GET`, exactly like
//! `conntrack -G`; the kernel answers `ENOENT` when there is no such entry. A partial tuple
//! (no ports) falls back to a dump of the family filtered in process.

use std::fmt;
use std::net::IpAddr;

use bitflags::bitflags;
use netlink_packet_core::{
    DecodeError, DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLA_TYPE_MASK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Protocol,
    Tuple as NlTuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use serde::{Serialize, Serializer};

use crate::netns::{Netns, NetnsError};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_DCCP: u8 = 33;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_UDPLITE: u8 = 136;

// Inside CTA_TUPLE_PROTO, beyond what the crate types (linux/netfilter/nfnetlink_conntrack.h).
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
// Top level.
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;

/// Everything that can go wrong reading conntrack, naming the namespace.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("conntrack {what} in {netns:?}: {source}{}", hint(source))]
    Io {
        netns: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("conntrack {what} in {netns:?}: cannot decode reply: {detail}")]
    Decode {
        netns: String,
        what: &'static str,
        detail: String,
    },
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPROTONOSUPPORT) | Some(libc::EOPNOTSUPP) => {
            " (is the nf_conntrack_netlink module loaded?)"
        }
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN in that namespace)",
        _ => "",
    }
}

/// Address family of a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 and IPv6 (`NFPROTO_UNSPEC`).
    Any,
    V4,
    V6,
}

impl Family {
    fn nfproto(self) -> NetfilterProtoFamily {
        match self {
            Family::Any => NetfilterProtoFamily::Unspec,
            Family::V4 => NetfilterProtoFamily::IPv4,
            Family::V6 => NetfilterProtoFamily::IPv6,
        }
    }

    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// One direction of a connection: what `conntrack -L` prints as `src= dst= sport= dport=`
/// (or `type= code= id=` for ICMP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Tuple {
    /// `IPPROTO_*` (see the constants in this module).
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// ICMP / ICMPv6 echo identifier.
    pub icmp_id: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

impl Tuple {
    /// A tuple of a port-based protocol.
    pub fn ports(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Tuple {
        Tuple {
            sport: Some(sport),
            dport: Some(dport),
            ..Tuple::addrs(proto, src, dst)
        }
    }

    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Tuple {
        Tuple::ports(IPPROTO_TCP, src, sport, dst, dport)
    }

    pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Tuple {
        Tuple::ports(IPPROTO_UDP, src, sport, dst, dport)
    }

    /// An ICMP (IPv4) or ICMPv6 echo request tuple, as conntrack keys pings.
    pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16) -> Tuple {
        let (proto, ty) = match src {
            IpAddr::V4(_) => (IPPROTO_ICMP, 8),
            IpAddr::V6(_) => (IPPROTO_ICMPV6, 128),
        };
        Tuple {
            icmp_id: Some(id),
            icmp_type: Some(ty),
            icmp_code: Some(0),
            ..Tuple::addrs(proto, src, dst)
        }
    }

    /// Only protocol and addresses: a partial tuple that [`lookup`] matches against a dump.
    pub fn addrs(proto: u8, src: IpAddr, dst: IpAddr) -> Tuple {
        Tuple {
            proto,
            src,
            dst,
            sport: None,
            dport: None,
            icmp_id: None,
            icmp_type: None,
            icmp_code: None,
        }
    }

    /// The name `conntrack -L` prints (`tcp`, `udp`, `icmp`, `icmpv6`, ...), or `unknown`.
    pub fn proto_name(&self) -> &'static str {
        proto_name(self.proto)
    }

    fn is_icmp(&self) -> bool {
        matches!(self.proto, IPPROTO_ICMP | IPPROTO_ICMPV6)
    }

    fn has_ports(&self) -> bool {
        matches!(
            self.proto,
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_DCCP | IPPROTO_UDPLITE
        )
    }

    /// Whether the kernel can look this tuple up directly (CT_GET needs every field of the
    /// protocol's tuple).
    fn is_complete(&self) -> bool {
        if self.is_icmp() {
            self.icmp_id.is_some() && self.icmp_type.is_some() && self.icmp_code.is_some()
        } else if self.has_ports() {
            self.sport.is_some() && self.dport.is_some()
        } else {
            true
        }
    }

    /// Whether `other` agrees with every field set in `self`.
    pub fn matches(&self, other: &Tuple) -> bool {
        fn opt<T: PartialEq>(want: Option<T>, have: Option<T>) -> bool {
            want.is_none() || want == have
        }
        self.proto == other.proto
            && self.src == other.src
            && self.dst == other.dst
            && opt(self.sport, other.sport)
            && opt(self.dport, other.dport)
            && opt(self.icmp_id, other.icmp_id)
            && opt(self.icmp_type, other.icmp_type)
            && opt(self.icmp_code, other.icmp_code)
    }

    fn to_netlink(self) -> Vec<NlTuple> {
        let mut proto = vec![ProtoTuple::Protocol(Protocol::from(self.proto))];
        if self.is_icmp() {
            let (id, ty, code) = if self.proto == IPPROTO_ICMP {
                (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE)
            } else {
                (
                    CTA_PROTO_ICMPV6_ID,
                    CTA_PROTO_ICMPV6_TYPE,
                    CTA_PROTO_ICMPV6_CODE,
                )
            };
            if let Some(v) = self.icmp_id {
                proto.push(ProtoTuple::Other(DefaultNla::new(
                    id,
                    v.to_be_bytes().to_vec(),
                )));
            }
            if let Some(v) = self.icmp_type {
                proto.push(ProtoTuple::Other(DefaultNla::new(ty, vec![v])));
            }
            if let Some(v) = self.icmp_code {
                proto.push(ProtoTuple::Other(DefaultNla::new(code, vec![v])));
            }
        } else {
            if let Some(p) = self.sport {
                proto.push(ProtoTuple::SourcePort(p));
            }
            if let Some(p) = self.dport {
                proto.push(ProtoTuple::DestinationPort(p));
            }
        }
        vec![
            NlTuple::Ip(vec![
                IPTuple::SourceAddress(self.src),
                IPTuple::DestinationAddress(self.dst),
            ]),
            NlTuple::Proto(proto),
        ]
    }

    fn from_netlink(parts: &[NlTuple]) -> Result<Tuple, String> {
        let (mut src, mut dst, mut proto) = (None, None, None);
        let mut t = Tuple::addrs(0, IpAddr::from([0, 0, 0, 0]), IpAddr::from([0, 0, 0, 0]));
        for part in parts {
            match part {
                NlTuple::Ip(ips) => {
                    for ip in ips {
                        match ip {
                            IPTuple::SourceAddress(a) => src = Some(*a),
                            IPTuple::DestinationAddress(a) => dst = Some(*a),
                            _ => {}
                        }
                    }
                }
                NlTuple::Proto(ps) => {
                    for p in ps {
                        match p {
                            ProtoTuple::Protocol(p) => proto = Some(u8::from(*p)),
                            ProtoTuple::SourcePort(v) => t.sport = Some(*v),
                            ProtoTuple::DestinationPort(v) => t.dport = Some(*v),
                            ProtoTuple::Other(nla) => {
                                let v = nla_value(nla);
                                match nla.kind() & NLA_TYPE_MASK {
                                    CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                                        t.icmp_id = Some(be_u16(&v, "ICMP id")?)
                                    }
                                    CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                                        t.icmp_type = Some(one_u8(&v, "ICMP type")?)
                                    }
                                    CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                                        t.icmp_code = Some(one_u8(&v, "ICMP code")?)
                                    }
                                    _ => {}
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        t.src = src.ok_or("tuple without CTA_IP_*_SRC")?;
        t.dst = dst.ok_or("tuple without CTA_IP_*_DST")?;
        t.proto = proto.ok_or("tuple without CTA_PROTO_NUM")?;
        Ok(t)
    }
}

fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

fn be_u16(v: &[u8], what: &str) -> Result<u16, String> {
    <[u8; 2]>::try_from(v)
        .map(u16::from_be_bytes)
        .map_err(|_| format!("{what}: {} bytes, expected 2", v.len()))
}

fn be_u32(v: &[u8], what: &str) -> Result<u32, String> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| format!("{what}: {} bytes, expected 4", v.len()))
}

fn one_u8(v: &[u8], what: &str) -> Result<u8, String> {
    match v {
        [b] => Ok(*b),
        _ => Err(format!("{what}: {} bytes, expected 1", v.len())),
    }
}

/// The protocol names `conntrack -L` prints.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_ICMP => "icmp",
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_DCCP => "dccp",
        IPPROTO_GRE => "gre",
        IPPROTO_ICMPV6 => "icmpv6",
        IPPROTO_SCTP => "sctp",
        IPPROTO_UDPLITE => "udplite",
        _ => "unknown",
    }
}

fn endpoint(f: &mut fmt::Formatter<'_>, addr: IpAddr, port: Option<u16>) -> fmt::Result {
    match (addr, port) {
        (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
        (a, Some(p)) => write!(f, "{a}:{p}"),
        (a, None) => write!(f, "{a}"),
    }
}

impl fmt::Display for Tuple {
    /// `tcp 10.244.1.3:40000 → 10.96.0.10:80`, `udp [fd00::1]:5353 → [fd00::2]:53`,
    /// `icmp 10.0.0.1 → 10.0.0.2 type 8 code 0 id 7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto_name() {
            "unknown" => write!(f, "proto {} ", self.proto)?,
            name => write!(f, "{name} ")?,
        }
        endpoint(f, self.src, self.sport)?;
        f.write_str(" → ")?;
        endpoint(f, self.dst, self.dport)?;
        if let Some(t) = self.icmp_type {
            write!(f, " type {t}")?;
        }
        if let Some(c) = self.icmp_code {
            write!(f, " code {c}")?;
        }
        if let Some(i) = self.icmp_id {
            write!(f, " id {i}")?;
        }
        Ok(())
    }
}

bitflags! {
    /// `IPS_*` status bits (linux/netfilter/nf_conntrack_common.h).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Status: u32 {
        const EXPECTED = 1;
        const SEEN_REPLY = 1 << 1;
        const ASSURED = 1 << 2;
        const CONFIRMED = 1 << 3;
        /// The source was rewritten (SNAT / masquerade changed the tuple).
        const SRC_NAT = 1 << 4;
        /// The destination was rewritten (DNAT changed the tuple).
        const DST_NAT = 1 << 5;
        const SEQ_ADJUST = 1 << 6;
        const SRC_NAT_DONE = 1 << 7;
        const DST_NAT_DONE = 1 << 8;
        const DYING = 1 << 9;
        const FIXED_TIMEOUT = 1 << 10;
        const TEMPLATE = 1 << 11;
        const UNTRACKED = 1 << 12;
        const HELPER = 1 << 13;
        const OFFLOAD = 1 << 14;
        const HW_OFFLOAD = 1 << 15;
        // Bits this list does not name survive a round trip.
        const _ = !0;
    }
}

impl Status {
    /// The bracketed words `conntrack -L` prints: `UNREPLIED` (no reply seen yet), `ASSURED`,
    /// `OFFLOAD`, `HW_OFFLOAD`.
    pub fn labels(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.contains(Status::SEEN_REPLY) {
            out.push("UNREPLIED");
        }
        if self.contains(Status::ASSURED) {
            out.push("ASSURED");
        }
        if self.contains(Status::HW_OFFLOAD) {
            out.push("HW_OFFLOAD");
        } else if self.contains(Status::OFFLOAD) {
            out.push("OFFLOAD");
        }
        out
    }
}

impl Serialize for Status {
    /// The names of the bits set, e.g. `["SEEN_REPLY", "ASSURED", "CONFIRMED", "DST_NAT"]`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter_names().map(|(n, _)| n))
    }
}

/// TCP connection tracking state (`enum tcp_conntrack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    None,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    SynSent2,
    Other(u8),
}

impl From<u8> for TcpState {
    fn from(v: u8) -> Self {
        match v {
            0 => TcpState::None,
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            9 => TcpState::SynSent2,
            v => TcpState::Other(v),
        }
    }
}

impl fmt::Display for TcpState {
    /// The names `conntrack -L` prints (`SYN_SENT`, `ESTABLISHED`, `TIME_WAIT`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
            TcpState::Other(v) => return write!(f, "STATE_{v}"),
        };
        f.write_str(s)
    }
}

impl Serialize for TcpState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One conntrack entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The connection as its first packet looked (before any NAT).
    pub orig: Tuple,
    /// The tuple replies are expected to carry; differs from the inverted `orig` exactly where
    /// NAT rewrote the connection.
    pub reply: Tuple,
    pub status: Status,
    pub tcp_state: Option<TcpState>,
    /// Seconds until the entry expires.
    pub timeout_s: Option<u32>,
    pub mark: Option<u32>,
    /// Conntrack zone (absent: the default zone 0).
    pub zone: Option<u16>,
    /// The kernel's id of the entry (`CTA_ID`).
    pub id: Option<u32>,
}

impl Entry {
    /// The kernel rewrote the destination (DNAT, a kube-proxy service, a port forward):
    /// `IPS_DST_NAT`, which the NAT core sets only when the mapping changed the tuple.
    pub fn is_dnat(&self) -> bool {
        self.status.contains(Status::DST_NAT)
    }

    /// The kernel rewrote the source (SNAT, masquerade): `IPS_SRC_NAT`.
    pub fn is_snat(&self) -> bool {
        self.status.contains(Status::SRC_NAT)
    }
}

impl fmt::Display for Entry {
    /// `udp 10.0.0.1:40000 → 10.0.0.2:53, reply udp 10.0.1.5:53 → 10.0.0.1:40000 [UNREPLIED]
    /// timeout 29s` — the original tuple as `conntrack -L` shows it, then the reply tuple.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, reply {}", self.orig, self.reply)?;
        if let Some(s) = self.tcp_state {
            write!(f, " {s}")?;
        }
        for l in self.status.labels() {
            write!(f, " [{l}]")?;
        }
        if let Some(t) = self.timeout_s {
            write!(f, " timeout {t}s")?;
        }
        if let Some(m) = self.mark.filter(|&m| m != 0) {
            write!(f, " mark {m}")?;
        }
        if let Some(z) = self.zone {
            write!(f, " zone {z}")?;
        }
        Ok(())
    }
}

fn entry_from_attributes(attrs: &[ConntrackAttribute]) -> Result<Entry, String> {
    let (mut orig, mut reply) = (None, None);
    let mut e = Entry {
        orig: Tuple::addrs(0, IpAddr::from([0, 0, 0, 0]), IpAddr::from([0, 0, 0, 0])),
        reply: Tuple::addrs(0, IpAddr::from([0, 0, 0, 0]), IpAddr::from([0, 0, 0, 0])),
        status: Status::empty(),
        tcp_state: None,
        timeout_s: None,
        mark: None,
        zone: None,
        id: None,
    };
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = Some(Tuple::from_netlink(t)?),
            ConntrackAttribute::CtaTupleReply(t) => reply = Some(Tuple::from_netlink(t)?),
            ConntrackAttribute::CtaStatus(s) => e.status = Status::from_bits_retain(s.bits()),
            ConntrackAttribute::CtaTimeout(t) => e.timeout_s = Some(*t),
            ConntrackAttribute::CtaMark(m) => e.mark = Some(*m),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for t in tcp {
                            if let ProtoInfoTCP::State(s) = t {
                                e.tcp_state = Some(TcpState::from(*s));
                            }
                        }
                    }
                }
            }
            ConntrackAttribute::Other(nla) => match nla.kind() & NLA_TYPE_MASK {
                CTA_ZONE => e.zone = Some(be_u16(&nla_value(nla), "CTA_ZONE")?),
                CTA_ID => e.id = Some(be_u32(&nla_value(nla), "CTA_ID")?),
                _ => {}
            },
            _ => {}
        }
    }
    e.orig = orig.ok_or("entry without CTA_TUPLE_ORIG")?;
    e.reply = reply.ok_or("entry without CTA_TUPLE_REPLY")?;
    Ok(e)
}

/// What one netlink message from a ctnetlink socket says.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A conntrack entry (`IPCTNL_MSG_CT_NEW`, the kernel's answer to GET and to dumps).
    Entry(Box<Entry>),
    /// The end of a dump.
    Done,
    /// An error (positive errno) or, with 0, an acknowledgement.
    Error(i32),
    /// Anything else (another subsystem, noop, overrun): ignored.
    Other,
}

/// Decodes one netlink message (header included) as a ctnetlink reply. Total on any input:
/// malformed bytes are an `Err`, never a panic. Returns the reply and the message's length as
/// its header declares it (so a caller can step to the next message of a datagram).
pub fn parse_message(bytes: &[u8]) -> Result<(Reply, usize), String> {
    let msg = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
        .map_err(|e: DecodeError| e.to_string())?;
    let len = msg.header.length as usize;
    let reply = match msg.payload {
        NetlinkPayload::Done(_) => Reply::Done,
        NetlinkPayload::Error(e) => Reply::Error(e.code.map(|c| -c.get()).unwrap_or(0)),
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
            ..
        }) => Reply::Entry(Box::new(entry_from_attributes(&attrs)?)),
        _ => Reply::Other,
    };
    Ok((reply, len))
}

/// A synchronous ctnetlink socket bound to one namespace. Open once, ask many times.
#[derive(Debug)]
pub struct Ctnetlink {
    sock: Socket,
    netns: String,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 256 * 1024;

impl Ctnetlink {
    /// Opens a `NETLINK_NETFILTER` socket inside `ns` (on a dedicated thread); it keeps reading
    /// that namespace's conntrack table from whichever thread uses it.
    pub fn open_in(ns: &Netns) -> Result<Ctnetlink, ConntrackError> {
        let name = ns.name().to_string();
        let sock = ns
            .run(|| -> std::io::Result<Socket> {
                let mut s = Socket::new(NETLINK_NETFILTER)?;
                s.bind_auto()?;
                s.connect(&SocketAddr::new(0, 0))?;
                Ok(s)
            })?
            .map_err(|source| ConntrackError::Io {
                netns: name.clone(),
                what: "socket",
                source,
            })?;
        let seq = crate::random::random_u32().unwrap_or(1);
        Ok(Ctnetlink {
            sock,
            netns: name,
            seq,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// The entry whose original tuple is `orig`, in conntrack zone `zone` (0: the default).
    /// A complete tuple is asked for with `IPCTNL_MSG_CT_GET`; a partial one (no ports, no
    /// ICMP id) is matched against a dump of its family and the first match is returned.
    pub fn get(&mut self, orig: &Tuple, zone: u16) -> Result<Option<Entry>, ConntrackError> {
        if !orig.is_complete() {
            let all = self.dump(Family::of(orig.src))?;
            return Ok(all
                .into_iter()
                .find(|e| orig.matches(&e.orig) && e.zone.unwrap_or(0) == zone));
        }
        let mut attrs = vec![ConntrackAttribute::CtaTupleOrig(orig.to_netlink())];
        if zone != 0 {
            attrs.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ZONE,
                zone.to_be_bytes().to_vec(),
            )));
        }
        let msg = NetfilterMessage::new(
            NetfilterHeader::new(Family::of(orig.src).nfproto(), 0, 0),
            ConntrackMessage::Get(attrs),
        );
        match self.request("get", msg, false) {
            Ok(mut v) => Ok(v.pop()),
            Err(ConntrackError::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Every entry of `family` (`conntrack -L`), in every zone.
    pub fn dump(&mut self, family: Family) -> Result<Vec<Entry>, ConntrackError> {
        let msg = NetfilterMessage::new(
            NetfilterHeader::new(family.nfproto(), 0, 0),
            ConntrackMessage::Get(Vec::new()),
        );
        self.request("dump", msg, true)
    }

    fn request(
        &mut self,
        what: &'static str,
        msg: NetfilterMessage,
        dump: bool,
    ) -> Result<Vec<Entry>, ConntrackError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        let io_err = |netns: &str, source| ConntrackError::Io {
            netns: netns.to_string(),
            what,
            source,
        };
        self.sock
            .send(&out, 0)
            .map_err(|e| io_err(&self.netns, e))?;
        let mut entries = Vec::new();
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            let n = self
                .sock
                .recv(&mut self.buf, 0)
                .map_err(|e| io_err(&self.netns, e))?;
            let mut off = 0usize;
            while off < n {
                let bytes = &self.buf[off..n];
                // The sequence number sits at bytes 8..12 of the header; skip foreign replies
                // before decoding them.
                let msg_seq = bytes
                    .get(8..12)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_ne_bytes);
                let (reply, len) =
                    parse_message(bytes).map_err(|detail| ConntrackError::Decode {
                        netns: self.netns.clone(),
                        what,
                        detail,
                    })?;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if msg_seq != Some(seq) {
                    continue;
                }
                match reply {
                    Reply::Done => return Ok(entries),
                    Reply::Error(0) => return Ok(entries),
                    Reply::Error(code) => {
                        return Err(io_err(&self.netns, std::io::Error::from_raw_os_error(code)))
                    }
                    Reply::Entry(e) => {
                        entries.push(*e);
                        if !dump {
                            return Ok(entries);
                        }
                    }
                    Reply::Other => {}
                }
            }
        }
    }
}

/// The entry of `netns` whose original tuple is `orig` (default zone), or None. One socket per
/// call; use [`Ctnetlink`] for many lookups.
pub fn lookup(netns: &Netns, orig: &Tuple) -> Result<Option<Entry>, ConntrackError> {
    Ctnetlink::open_in(netns)?.get(orig, 0)
}

/// [`lookup`] in conntrack zone `zone`.
pub fn lookup_in_zone(
    netns: &Netns,
    orig: &Tuple,
    zone: u16,
) -> Result<Option<Entry>, ConntrackError> {
    Ctnetlink::open_in(netns)?.get(orig, zone)
}

/// Every conntrack entry of `netns` in `family` (`conntrack -L`).
pub fn dump(netns: &Netns, family: Family) -> Result<Vec<Entry>, ConntrackError> {
    Ctnetlink::open_in(netns)?.dump(family)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_MULTIPART;
    use netlink_packet_netfilter::conntrack::ProtoInfoTCP;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A CT_NEW message as the kernel sends it in a dump (type, nesting, byte order).
    fn encode(e: &Entry, family: NetfilterProtoFamily) -> Vec<u8> {
        let mut attrs = vec![
            ConntrackAttribute::CtaTupleOrig(e.orig.to_netlink()),
            ConntrackAttribute::CtaTupleReply(e.reply.to_netlink()),
            ConntrackAttribute::CtaStatus(
                netlink_packet_netfilter::conntrack::Status::from_bits_retain(e.status.bits()),
            ),
        ];
        if let Some(t) = e.timeout_s {
            attrs.push(ConntrackAttribute::CtaTimeout(t));
        }
        if let Some(m) = e.mark {
            attrs.push(ConntrackAttribute::CtaMark(m));
        }
        if let Some(s) = e.tcp_state {
            let v = match s {
                TcpState::Established => 3,
                TcpState::SynSent => 1,
                _ => 0,
            };
            attrs.push(ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(
                vec![ProtoInfoTCP::State(v)],
            )]));
        }
        if let Some(z) = e.zone {
            attrs.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ZONE,
                z.to_be_bytes().to_vec(),
            )));
        }
        if let Some(id) = e.id {
            attrs.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ID,
                id.to_be_bytes().to_vec(),
            )));
        }
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_MULTIPART;
        header.sequence_number = 7;
        let mut nl = NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                ConntrackMessage::New(attrs),
            )),
        );
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        out
    }

    fn dnat_entry() -> Entry {
        Entry {
            orig: Tuple::tcp(ip("10.244.1.3"), 40000, ip("10.96.0.10"), 80),
            reply: Tuple::tcp(ip("10.244.2.2"), 8080, ip("10.244.1.3"), 40000),
            status: Status::SEEN_REPLY | Status::ASSURED | Status::CONFIRMED | Status::DST_NAT,
            tcp_state: Some(TcpState::Established),
            timeout_s: Some(431999),
            mark: Some(0),
            zone: Some(3),
            id: Some(0xdead_beef),
        }
    }

    #[test]
    fn round_trips_an_entry() {
        let e = dnat_entry();
        let bytes = encode(&e, NetfilterProtoFamily::IPv4);
        let (reply, len) = parse_message(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(reply, Reply::Entry(Box::new(e.clone())));
        assert!(e.is_dnat() && !e.is_snat());
    }

    #[test]
    fn round_trips_icmp_v4_and_v6() {
        for (src, dst, rtype) in [("10.0.0.1", "10.0.0.2", 0u8), ("fd00::1", "fd00::2", 129u8)] {
            let orig = Tuple::echo_request(ip(src), ip(dst), 4242);
            let mut reply = Tuple::echo_request(ip(dst), ip(src), 4242);
            reply.icmp_type = Some(rtype);
            let e = Entry {
                orig,
                reply,
                status: Status::CONFIRMED,
                tcp_state: None,
                timeout_s: Some(29),
                mark: None,
                zone: None,
                id: None,
            };
            let fam = if orig.src.is_ipv4() {
                NetfilterProtoFamily::IPv4
            } else {
                NetfilterProtoFamily::IPv6
            };
            let (reply, _) = parse_message(&encode(&e, fam)).unwrap();
            assert_eq!(reply, Reply::Entry(Box::new(e)));
        }
    }

    #[test]
    fn renders_like_conntrack() {
        let e = dnat_entry();
        assert_eq!(e.orig.to_string(), "tcp 10.244.1.3:40000 → 10.96.0.10:80");
        let t6 = Tuple::udp(ip("fd00::1"), 80, ip("fd00::2"), 53);
        assert_eq!(t6.to_string(), "udp [fd00::1]:80 → [fd00::2]:53");
        let icmp = Tuple::echo_request(ip("10.0.0.1"), ip("10.0.0.2"), 7);
        assert_eq!(
            icmp.to_string(),
            "icmp 10.0.0.1 → 10.0.0.2 type 8 code 0 id 7"
        );
        let mut unreplied = dnat_entry();
        unreplied.status = Status::CONFIRMED | Status::SRC_NAT;
        unreplied.tcp_state = Some(TcpState::SynSent);
        assert_eq!(
            unreplied.to_string(),
            "tcp 10.244.1.3:40000 → 10.96.0.10:80, reply tcp 10.244.2.2:8080 → 10.244.1.3:40000 SYN_SENT [UNREPLIED] timeout 431999s zone 3"
        );
        assert!(unreplied.is_snat() && !unreplied.is_dnat());
        assert_eq!(
            serde_json::to_value(dnat_entry().status).unwrap(),
            serde_json::json!(["SEEN_REPLY", "ASSURED", "CONFIRMED", "DST_NAT"])
        );
    }

    #[test]
    fn partial_tuples_match_by_the_fields_they_set() {
        let e = dnat_entry();
        let partial = Tuple::addrs(IPPROTO_TCP, e.orig.src, e.orig.dst);
        assert!(!partial.is_complete() && partial.matches(&e.orig));
        assert!(e.orig.is_complete() && e.orig.matches(&e.orig));
        assert!(!Tuple::addrs(IPPROTO_UDP, e.orig.src, e.orig.dst).matches(&e.orig));
        let mut other_port = e.orig;
        other_port.sport = Some(1);
        assert!(!other_port.matches(&e.orig));
    }

    #[test]
    fn missing_tuples_and_bad_lengths_are_errors() {
        let mut header = NetlinkHeader::default();
        header.sequence_number = 1;
        let mut nl = NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
                ConntrackMessage::New(vec![ConntrackAttribute::CtaTimeout(3)]),
            )),
        );
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        assert!(parse_message(&out).unwrap_err().contains("CTA_TUPLE_ORIG"));
        assert!(parse_message(&[]).is_err());
        assert!(parse_message(&[0xff; 3]).is_err());
        assert_eq!(be_u16(&[1], "x").unwrap_err(), "x: 1 bytes, expected 2");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_message(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
            v6 in any::<bool>(),
        ) {
            let e = if v6 {
                let mut e = dnat_entry();
                e.orig = Tuple::udp(ip("fd00::1"), 1, ip("fd00::2"), 2);
                e.reply = Tuple::udp(ip("fd00::3"), 2, ip("fd00::1"), 1);
                e
            } else {
                dnat_entry()
            };
            let mut bytes = encode(&e, NetfilterProtoFamily::IPv4);
            for (at, val) in flips {
                let i = at % bytes.len();
                bytes[i] = val;
            }
            let keep = cut % (bytes.len() + 1);
            let _ = parse_message(&bytes[..keep]);
            let _ = parse_message(&bytes);
        }
    }
}
