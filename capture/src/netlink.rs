//! A small synchronous rtnetlink client.
//!
//! Why synchronous and not `rtnetlink` (async, tokio): the socket must be *created* inside the
//! target namespace, which means on a dedicated thread that has called `setns`; an async
//! connection would also drag a runtime into that thread. A plain `netlink_sys::Socket` is created
//! on the namespace thread by [`Rtnl::open_in`], after which request/response dumps are a few
//! blocking syscalls from any thread. Message types come from `netlink-packet-route`.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoGeneve, InfoGre, InfoIpTunnel, InfoKind, InfoVeth, InfoVxlan, LinkAttribute,
    LinkFlags, LinkInfo, LinkLayerType, LinkMessage, State, VxlanDf,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::Serialize;

use crate::netns::{Netns, NetnsError};

/// Netlink failures, naming the namespace and the request.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("netlink {what} in {netns:?}: {source}")]
    Io {
        netns: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink {what} in {netns:?}: cannot decode reply: {detail}")]
    Decode {
        netns: String,
        what: &'static str,
        detail: String,
    },
    /// The kernel offers no way to do this (see the operation's documentation).
    #[error("{what} in {netns:?}: not supported by the kernel: {detail}")]
    Unsupported {
        netns: String,
        what: &'static str,
        detail: String,
    },
}

/// The kind of a link, with the fields the hop model needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LinkKind {
    Loopback,
    /// A device without a `kind` (a NIC, or anything the kernel does not label).
    Physical,
    /// One end of a veth pair; the peer is `peer_ifindex` in the namespace the link's
    /// `IFLA_LINK_NETNSID` names (None: same namespace).
    Veth {
        peer_ifindex: Option<u32>,
        peer_netnsid: Option<i32>,
    },
    Bridge,
    Vxlan(Tunnel),
    Geneve(Tunnel),
    Gre(Tunnel),
    Ipip(Tunnel),
    Other {
        name: String,
    },
}

impl LinkKind {
    /// Short name as used in the trace schema: veth, bridge, vxlan, geneve, gre, ipip,
    /// physical, loopback, other.
    pub fn short(&self) -> &str {
        match self {
            LinkKind::Loopback => "loopback",
            LinkKind::Physical => "physical",
            LinkKind::Veth { .. } => "veth",
            LinkKind::Bridge => "bridge",
            LinkKind::Vxlan(_) => "vxlan",
            LinkKind::Geneve(_) => "geneve",
            LinkKind::Gre(_) => "gre",
            LinkKind::Ipip(_) => "ipip",
            LinkKind::Other { .. } => "other",
        }
    }

    /// The name the kernel uses (`other` kinds keep theirs: macvlan, dummy, tun...).
    pub fn kernel_name(&self) -> &str {
        match self {
            LinkKind::Other { name } => name,
            k => k.short(),
        }
    }

    /// Tunnel parameters, for tunnel kinds.
    pub fn tunnel(&self) -> Option<&Tunnel> {
        match self {
            LinkKind::Vxlan(t) | LinkKind::Geneve(t) | LinkKind::Gre(t) | LinkKind::Ipip(t) => {
                Some(t)
            }
            _ => None,
        }
    }
}

/// Encapsulation parameters of a tunnel device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    /// VXLAN/Geneve VNI or GRE key.
    pub vni: Option<u32>,
    pub local: Option<IpAddr>,
    /// Remote or multicast group; None for flannel-style FDB-driven VXLAN.
    pub remote: Option<IpAddr>,
    /// UDP destination port (VXLAN/Geneve).
    pub port: Option<u16>,
    /// The underlay device (`dev` in `ip link add ... type vxlan ... dev eth0`).
    pub underlay_ifindex: Option<u32>,
    pub underlay_ifname: Option<String>,
    /// DF handling on the outer header: unset, set, inherit.
    pub df: Option<String>,
    pub ttl: Option<u8>,
    pub learning: Option<bool>,
}

/// One interface address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Address {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A link as seen from its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    #[serde(flatten)]
    pub kind: LinkKind,
    pub mtu: u32,
    pub mac: Option<String>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operational state as the kernel reports it (up, down, lowerlayerdown, unknown...).
    pub oper_state: String,
    /// Bridge (or bond) this link is a port of.
    pub master_ifindex: Option<u32>,
    pub master: Option<String>,
    pub addresses: Vec<Address>,
    /// ARPHRD_* link layer type.
    pub link_layer_type: u16,
}

/// A neighbour cache entry (`ip neigh`: address → MAC on a device) or a forwarding database
/// entry (`bridge fdb`: MAC → port; on a VXLAN device, MAC → remote VTEP in `addr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    /// From the bridge family's dump (an FDB entry) rather than ARP/NDP.
    pub fdb: bool,
    pub addr: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
}

/// A route from the main (or another non-local) table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// `default` or `ADDR/LEN`.
    pub dst: String,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub dev: Option<String>,
    pub prefsrc: Option<IpAddr>,
    pub table: u32,
    pub scope: String,
    pub kind: String,
    pub metric: Option<u32>,
    /// Path MTU of a cached route (a PMTU exception learned from ICMP), as `ip route get`
    /// shows `cache expires 598sec mtu 1350`.
    pub mtu: Option<u32>,
    /// Seconds until that cached entry expires (None: not a cached entry or no expiry).
    pub expires_s: Option<u32>,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind != "unicast" {
            write!(f, "{} ", self.kind)?;
        }
        f.write_str(&self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if self.scope != "universe" {
            write!(f, " scope {}", self.scope)?;
        }
        if let Some(src) = self.prefsrc {
            write!(f, " src {src}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if self.table != 254 {
            write!(f, " table {}", self.table)?;
        }
        if let Some(m) = self.mtu {
            write!(f, " mtu {m}")?;
        }
        if let Some(e) = self.expires_s {
            write!(f, " expires {e}s")?;
        }
        Ok(())
    }
}

/// A synchronous rtnetlink socket bound to one namespace.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
    netns: String,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 256 * 1024;

impl Rtnl {
    /// Opens a NETLINK_ROUTE socket inside `ns` (on a dedicated thread); the socket can then be
    /// used from any thread and keeps talking to that namespace.
    pub fn open_in(ns: &Netns) -> Result<Rtnl, NetlinkError> {
        let name = ns.name().to_string();
        let sock = ns
            .run(|| -> std::io::Result<Socket> {
                let mut s = Socket::new(NETLINK_ROUTE)?;
                s.bind_auto()?;
                s.connect(&SocketAddr::new(0, 0))?;
                Ok(s)
            })?
            .map_err(|source| NetlinkError::Io {
                netns: name.clone(),
                what: "socket",
                source,
            })?;
        Ok(Rtnl {
            sock,
            netns: name,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn request(
        &mut self,
        what: &'static str,
        msg: RouteNetlinkMessage,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.request_flags(what, msg, if dump { NLM_F_DUMP } else { 0 })
    }

    /// Sends `msg` with `NLM_F_REQUEST | flags` and collects the replies: every message up to
    /// `NLMSG_DONE` for a dump, else the first message, the acknowledgement (`NLM_F_ACK`) or the
    /// error.
    fn request_flags(
        &mut self,
        what: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let mut replies = Vec::new();
        self.request_each(what, msg, flags, |m| replies.push(m))?;
        Ok(replies)
    }

    /// Like [`request_flags`](Self::request_flags), handing each reply to `each` as it is
    /// decoded: a dump of hundreds of links is never held decoded all at once (a decoded link
    /// message, with its statistics and per-family attributes, is kilobytes).
    fn request_each(
        &mut self,
        what: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), NetlinkError> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        let io_err = |netns: &str, source| NetlinkError::Io {
            netns: netns.to_string(),
            what,
            source,
        };
        self.sock
            .send(&out, 0)
            .map_err(|e| io_err(&self.netns, e))?;
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF);
            let n = self
                .sock
                .recv(&mut self.buf, 0)
                .map_err(|e| io_err(&self.netns, e))?;
            let mut off = 0usize;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| NetlinkError::Decode {
                        netns: self.netns.clone(),
                        what,
                        detail: e.to_string(),
                    })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(()),
                        Some(code) => {
                            return Err(io_err(
                                &self.netns,
                                std::io::Error::from_raw_os_error(-code.get()),
                            ))
                        }
                    },
                    NetlinkPayload::InnerMessage(m) => {
                        each(m);
                        if !dump {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// All links with their addresses (`ip -d addr`).
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let mut links: Vec<Link> = Vec::new();
        self.request_each(
            "link dump",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            |m| {
                if let RouteNetlinkMessage::NewLink(l) = m {
                    links.push(parse_link(&l));
                }
            },
        )?;
        links.sort_by_key(|l| l.ifindex);
        let names: Vec<(u32, String)> = links.iter().map(|l| (l.ifindex, l.name.clone())).collect();
        let name_of = |i: u32| names.iter().find(|(x, _)| *x == i).map(|(_, n)| n.clone());
        for l in &mut links {
            l.master = l.master_ifindex.and_then(name_of);
            match &mut l.kind {
                LinkKind::Vxlan(t) | LinkKind::Geneve(t) | LinkKind::Gre(t) | LinkKind::Ipip(t) => {
                    t.underlay_ifname = t.underlay_ifindex.and_then(name_of);
                }
                _ => {}
            }
        }
        for a in self.addresses()? {
            if let Some(l) = links.iter_mut().find(|l| l.ifindex == a.0) {
                l.addresses.push(a.1);
            }
        }
        Ok(links)
    }

    /// (ifindex, address) pairs for IPv4 and IPv6.
    pub fn addresses(&mut self) -> Result<Vec<(u32, Address)>, NetlinkError> {
        let replies = self.request(
            "address dump",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            true,
        )?;
        let mut out = Vec::new();
        for m in replies {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                let mut addr = None;
                for attr in &a.attributes {
                    match attr {
                        AddressAttribute::Local(ip) => addr = Some(*ip),
                        AddressAttribute::Address(ip) if addr.is_none() => addr = Some(*ip),
                        _ => {}
                    }
                }
                if let Some(addr) = addr {
                    out.push((
                        a.header.index,
                        Address {
                            addr,
                            prefix_len: a.header.prefix_len,
                        },
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The neighbour caches (ARP, NDP) and the bridge/VXLAN forwarding databases (`ip neigh`,
    /// `bridge fdb`): what the kernel already knows of who is behind which port.
    pub fn neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        let mut out = Vec::new();
        for family in [
            AddressFamily::Inet,
            AddressFamily::Inet6,
            AddressFamily::Bridge,
        ] {
            let mut req = NeighbourMessage::default();
            req.header.family = family;
            let replies = self.request(
                "neighbour dump",
                RouteNetlinkMessage::GetNeighbour(req),
                true,
            )?;
            for m in replies {
                let RouteNetlinkMessage::NewNeighbour(n) = m else {
                    continue;
                };
                let mut entry = Neighbour {
                    ifindex: n.header.ifindex,
                    fdb: family == AddressFamily::Bridge,
                    addr: None,
                    mac: None,
                };
                for attr in &n.attributes {
                    match attr {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                            entry.addr = Some(IpAddr::V4(*a))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                            entry.addr = Some(IpAddr::V6(*a))
                        }
                        // The bridge family's entries (a VXLAN FDB's remote VTEP) come untyped.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                            entry.addr = match b.len() {
                                4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                                16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                                _ => None,
                            }
                        }
                        NeighbourAttribute::LinkLayerAddress(mac) if mac.len() == 6 => {
                            entry.mac = Some([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
                        }
                        _ => {}
                    }
                }
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Routes of every table except `local` (255), IPv4 then IPv6; `links` names devices.
    pub fn routes(&mut self, links: &[Link]) -> Result<Vec<Route>, NetlinkError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            let replies = self.request("route dump", RouteNetlinkMessage::GetRoute(req), true)?;
            for m in replies {
                if let RouteNetlinkMessage::NewRoute(r) = m {
                    let route = parse_route(&r, links);
                    if route.table == 255
                        || (family == AddressFamily::Inet6 && route.kind != "unicast")
                    {
                        continue;
                    }
                    out.push(route);
                }
            }
        }
        Ok(out)
    }

    /// The route the kernel would use for `dst` (`ip route get DST`). When the namespace holds
    /// a cached exception towards `dst` (a path MTU learned from ICMP "fragmentation needed" /
    /// "packet too big"), the reply carries it: [`Route::mtu`] is the cached path MTU and
    /// [`Route::expires_s`] the seconds it has left, as `ip route get` prints
    /// `cache expires 598sec mtu 1300`.
    pub fn route_get(&mut self, dst: IpAddr, links: &[Link]) -> Result<Route, NetlinkError> {
        let r = self.route_get_raw(dst)?;
        Ok(parse_route(&r, links))
    }

    fn route_get_raw(&mut self, dst: IpAddr) -> Result<RouteMessage, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = match dst {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        req.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        req.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        let replies = self.request("route get", RouteNetlinkMessage::GetRoute(req), false)?;
        replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::Decode {
                netns: self.netns.clone(),
                what: "route get",
                detail: "no route in reply".into(),
            })
    }

    /// The cached route exceptions of the namespace, IPv4 then IPv6 (`ip route list cache`,
    /// `ip -6 route list cache`): one [`Route`] per destination with a learned path MTU (or a
    /// redirect), `dst` as `ADDR/32` or `ADDR/128`, with [`Route::mtu`] and
    /// [`Route::expires_s`].
    pub fn cached_routes(&mut self, links: &[Link]) -> Result<Vec<Route>, NetlinkError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            out.extend(
                self.cached_raw(family)?
                    .iter()
                    .map(|r| parse_route(r, links)),
            );
        }
        Ok(out)
    }

    /// Exceptions of one family. The kernel lists them only for an `RTM_GETROUTE` dump with
    /// `RTM_F_CLONED` on a socket with `NETLINK_GET_STRICT_CHK` (Linux 5.3+, "Dump route
    /// exceptions if requested"); strict checking is on for the duration of this call only.
    fn cached_raw(&mut self, family: AddressFamily) -> Result<Vec<RouteMessage>, NetlinkError> {
        let strict = |on: bool, netns: &str, sock: &Socket| {
            sock.set_netlink_get_strict_chk(on)
                .map_err(|source| NetlinkError::Io {
                    netns: netns.to_string(),
                    what: "NETLINK_GET_STRICT_CHK",
                    source,
                })
        };
        strict(true, &self.netns, &self.sock)?;
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        req.header.flags = RouteFlags::Cloned;
        let replies = self.request("route cache dump", RouteNetlinkMessage::GetRoute(req), true);
        strict(false, &self.netns, &self.sock)?;
        Ok(replies?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if r.header.flags.contains(RouteFlags::Cloned) => {
                    Some(r)
                }
                _ => None,
            })
            .collect())
    }

    /// Removes the cached route exception towards `dst` — the path MTU the namespace learned
    /// for that one destination — and leaves every other cached exception alone. Returns
    /// whether there was one to remove (false: nothing cached towards `dst`, nothing sent).
    ///
    /// What the kernel offers (from the kernel and iproute2 sources, verified on Linux 6.18 by
    /// `capture/tests/pmtu.rs`):
    ///
    /// - **IPv6**: exceptions (`RTF_CACHE` routes in a route's exception table) can be deleted
    ///   one at a time: `RTM_DELROUTE` with `RTM_F_CLONED` in `rtm_flags` and the destination
    ///   as a /128 makes `ip6_route_del` remove only the cached route for that address
    ///   (`ip6_del_cached_rt` → `rt6_remove_exception_rt`). This is what
    ///   `ip -6 route flush cache to ADDR` does: it dumps the cached routes and sends each
    ///   matching one back as `RTM_DELROUTE`. The kernel acknowledges such a delete with
    ///   success even when there is no exception (since 5.3 `ip6_del_cached_rt` returns 0 when
    ///   it finds none), so whether there was one is read from the exception dump first
    ///   ([`Rtnl::cached_routes`]), whose table, device and gateway the delete then names.
    /// - **IPv4**: no per-destination removal exists. PMTU exceptions live in the nexthop's
    ///   exception hash (`fib_nh_exception`); `RTM_DELROUTE` only deletes FIB entries
    ///   (`fib_table_delete` ignores `RTM_F_CLONED`, so a /32 delete finds no route and answers
    ///   `ESRCH`), and an exception is freed only once it has expired
    ///   (`find_exception` → `ip_del_fnhe`), when its nexthop goes away, or by the
    ///   namespace-wide flush: `ip route flush cache` — with or without `to ADDR` — writes
    ///   `/proc/sys/net/ipv4/route/flush`, which bumps the namespace's route generation and so
    ///   invalidates *every* IPv4 exception. So when an IPv4 exception towards `dst` exists
    ///   this returns [`NetlinkError::Unsupported`] and touches nothing; a caller that accepts
    ///   losing the namespace's other learned IPv4 path MTUs can use
    ///   [`flush_route_cache_v4`].
    pub fn flush_cached_route(&mut self, dst: IpAddr) -> Result<bool, NetlinkError> {
        const WHAT: &str = "flush cached route";
        let (family, len) = match dst {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        let want = RouteAddress::from(dst);
        let cached: Vec<RouteMessage> = self
            .cached_raw(family)?
            .into_iter()
            .filter(|r| {
                r.header.destination_prefix_length == len
                    && r.attributes
                        .iter()
                        .any(|a| matches!(a, RouteAttribute::Destination(d) if *d == want))
            })
            .collect();
        if cached.is_empty() {
            return Ok(false);
        }
        if dst.is_ipv4() {
            return Err(NetlinkError::Unsupported {
                netns: self.netns.clone(),
                what: WHAT,
                detail: format!(
                    "the cached IPv4 path MTU towards {dst} cannot be removed on its own; \
                     only the namespace-wide `ip route flush cache` exists"
                ),
            });
        }
        for r in cached {
            let mut req = RouteMessage::default();
            req.header = r.header.clone();
            req.attributes = r
                .attributes
                .into_iter()
                .filter(|a| {
                    matches!(
                        a,
                        RouteAttribute::Destination(_)
                            | RouteAttribute::Table(_)
                            | RouteAttribute::Oif(_)
                            | RouteAttribute::Gateway(_)
                    )
                })
                .collect();
            match self.request_flags(WHAT, RouteNetlinkMessage::DelRoute(req), NLM_F_ACK) {
                Ok(_) => {}
                // Expired or removed by someone else in between.
                Err(NetlinkError::Io { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::ESRCH)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The nsid this socket's namespace assigns to `other` (RTM_GETNSID with NETNSA_FD), or
    /// None when it has assigned none. Needed to resolve `IFLA_LINK_NETNSID` of veth peers.
    pub fn nsid_of(&mut self, other: &Netns) -> Result<Option<i32>, NetlinkError> {
        let mut req = NsidMessage::default();
        req.header.family = AddressFamily::Unspec;
        req.attributes
            .push(NsidAttribute::Fd(other.fd().as_raw_fd() as u32));
        let replies = self.request("nsid get", RouteNetlinkMessage::GetNsId(req), false)?;
        for m in replies {
            if let RouteNetlinkMessage::NewNsId(n) = m {
                for a in n.attributes {
                    if let NsidAttribute::Id(id) = a {
                        return Ok((id >= 0).then_some(id));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// [`Rtnl::flush_cached_route`] in `ns`: removes the cached path MTU towards `dst` (IPv6) and
/// nothing else; IPv4 is [`NetlinkError::Unsupported`].
pub fn flush_cached_route(ns: &Netns, dst: IpAddr) -> Result<bool, NetlinkError> {
    Rtnl::open_in(ns)?.flush_cached_route(dst)
}

/// The namespace-wide IPv4 flush, `ip -4 route flush cache`: writes `-1` to
/// `/proc/sys/net/ipv4/route/flush` from a thread inside `ns` (the file acts on the namespace
/// of the thread that opens it). Every IPv4 path MTU exception of the namespace is invalidated,
/// not just one: the kernel has nothing finer for IPv4 (see [`Rtnl::flush_cached_route`]).
pub fn flush_route_cache_v4(ns: &Netns) -> Result<(), NetlinkError> {
    const FLUSH: &str = "/proc/sys/net/ipv4/route/flush";
    let name = ns.name().to_string();
    ns.run(|| std::fs::write(FLUSH, "-1"))?
        .map_err(|source| NetlinkError::Io {
            netns: name,
            what: "IPv4 route cache flush",
            source,
        })
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut mtu = 0;
    let mut mac = None;
    let mut master = None;
    let mut link = None;
    let mut link_netnsid = None;
    let mut kind: Option<InfoKind> = None;
    let mut data: Option<&InfoData> = None;
    let mut oper = "unknown".to_string();
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Mtu(v) => mtu = *v,
            LinkAttribute::Address(b) if b.len() == 6 => {
                mac = Some(
                    b.iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                )
            }
            LinkAttribute::Controller(i) => master = Some(*i),
            LinkAttribute::Link(i) => link = Some(*i),
            LinkAttribute::LinkNetNsId(i) => link_netnsid = Some(*i),
            LinkAttribute::OperState(s) => {
                oper = match s {
                    State::Up => "up".into(),
                    State::Down => "down".into(),
                    State::LowerLayerDown => "lowerlayerdown".into(),
                    State::Unknown => "unknown".into(),
                    other => format!("{other:?}").to_lowercase(),
                }
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => kind = Some(k.clone()),
                        LinkInfo::Data(d) => data = Some(d),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let lltype: u16 = m.header.link_layer_type.into();
    let kind = match kind {
        None if m.header.link_layer_type == LinkLayerType::Loopback
            || m.header.flags.contains(LinkFlags::Loopback) =>
        {
            LinkKind::Loopback
        }
        None => LinkKind::Physical,
        Some(InfoKind::Veth) => {
            // The dump carries the peer as IFLA_LINK (+ IFLA_LINK_NETNSID when the peer lives
            // in another namespace). INFO_DATA(Veth::Peer) only appears on creation requests.
            let mut peer_ifindex = link.filter(|&i| i != 0);
            if let Some(InfoData::Veth(InfoVeth::Peer(p))) = data {
                peer_ifindex = peer_ifindex.or(Some(p.header.index));
            }
            LinkKind::Veth {
                peer_ifindex,
                peer_netnsid: link_netnsid,
            }
        }
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(InfoKind::Vxlan) => {
            let mut t = Tunnel::default();
            if let Some(InfoData::Vxlan(v)) = data {
                for a in v {
                    match a {
                        InfoVxlan::Id(x) => t.vni = Some(*x),
                        InfoVxlan::Group(x) if !x.is_unspecified() => t.remote = Some((*x).into()),
                        InfoVxlan::Group6(x) if !x.is_unspecified() => t.remote = Some((*x).into()),
                        InfoVxlan::Local(x) => t.local = Some((*x).into()),
                        InfoVxlan::Local6(x) => t.local = Some((*x).into()),
                        InfoVxlan::Port(p) => t.port = Some(*p),
                        InfoVxlan::Link(l) if *l != 0 => t.underlay_ifindex = Some(*l),
                        InfoVxlan::Ttl(x) => t.ttl = Some(*x),
                        InfoVxlan::Learning(x) => t.learning = Some(*x),
                        InfoVxlan::Df(df) => {
                            t.df = Some(
                                match df {
                                    VxlanDf::Unset => "unset",
                                    VxlanDf::Set => "set",
                                    VxlanDf::Inherit => "inherit",
                                    _ => "other",
                                }
                                .to_string(),
                            )
                        }
                        _ => {}
                    }
                }
            }
            LinkKind::Vxlan(t)
        }
        Some(InfoKind::Geneve) => {
            let mut t = Tunnel::default();
            if let Some(InfoData::Geneve(v)) = data {
                for a in v {
                    match a {
                        InfoGeneve::Id(x) => t.vni = Some(*x),
                        InfoGeneve::Remote(x) => t.remote = Some((*x).into()),
                        InfoGeneve::Remote6(x) => t.remote = Some((*x).into()),
                        InfoGeneve::Local(x) => t.local = Some((*x).into()),
                        InfoGeneve::Port(p) => t.port = Some(*p),
                        InfoGeneve::Ttl(x) => t.ttl = Some(*x),
                        _ => {}
                    }
                }
            }
            LinkKind::Geneve(t)
        }
        Some(InfoKind::GreTap) | Some(InfoKind::GreTun) => {
            let mut t = Tunnel::default();
            if let Some(InfoData::GreTap(v) | InfoData::GreTun(v)) = data {
                for a in v {
                    match a {
                        InfoGre::Local(x) => t.local = Some((*x).into()),
                        InfoGre::Remote(x) => t.remote = Some((*x).into()),
                        InfoGre::OKey(k) => t.vni = Some(*k),
                        InfoGre::Link(l) if *l != 0 => t.underlay_ifindex = Some(*l),
                        InfoGre::Ttl(x) => t.ttl = Some(*x),
                        _ => {}
                    }
                }
            }
            LinkKind::Gre(t)
        }
        Some(InfoKind::IpIp) => {
            let mut t = Tunnel::default();
            if let Some(InfoData::IpTunnel(v)) = data {
                for a in v {
                    match a {
                        InfoIpTunnel::Local(x) => t.local = Some(*x),
                        InfoIpTunnel::Remote(x) => t.remote = Some(*x),
                        InfoIpTunnel::Link(l) if *l != 0 => t.underlay_ifindex = Some(*l),
                        InfoIpTunnel::Ttl(x) => t.ttl = Some(*x),
                        _ => {}
                    }
                }
            }
            LinkKind::Ipip(t)
        }
        Some(other) => LinkKind::Other {
            name: other.to_string(),
        },
    };
    Link {
        ifindex: m.header.index,
        name,
        kind,
        mtu,
        mac,
        up: m.header.flags.contains(LinkFlags::Up),
        oper_state: oper,
        master_ifindex: master,
        master: None,
        addresses: Vec::new(),
        link_layer_type: lltype,
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(x) => Some((*x).into()),
        RouteAddress::Inet6(x) => Some((*x).into()),
        _ => None,
    }
}

fn parse_route(r: &RouteMessage, links: &[Link]) -> Route {
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut prefsrc = None;
    let mut table = u32::from(r.header.table);
    let mut metric = None;
    let mut mtu = None;
    let mut expires_s = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_addr(d),
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::PrefSource(s) => prefsrc = route_addr(s),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::Metrics(ms) => {
                mtu = ms.iter().find_map(|m| match m {
                    RouteMetric::Mtu(v) => Some(*v),
                    _ => None,
                })
            }
            // The kernel reports expiry in USER_HZ ticks (clock_t, 100 per second).
            RouteAttribute::CacheInfo(ci) if ci.expires != 0 => {
                expires_s = Some((ci.expires as i32).max(0) as u32 / 100)
            }
            _ => {}
        }
    }
    let dst = match dst {
        Some(d) => format!("{d}/{}", r.header.destination_prefix_length),
        None if r.header.destination_prefix_length == 0 => "default".to_string(),
        None => format!("?/{}", r.header.destination_prefix_length),
    };
    let scope = match r.header.scope {
        RouteScope::Universe => "universe".to_string(),
        RouteScope::Site => "site".into(),
        RouteScope::Link => "link".into(),
        RouteScope::Host => "host".into(),
        RouteScope::NoWhere => "nowhere".into(),
        other => u8::from(other).to_string(),
    };
    let kind = match r.header.kind {
        RouteType::Unicast => "unicast".to_string(),
        RouteType::Local => "local".into(),
        RouteType::Broadcast => "broadcast".into(),
        RouteType::Multicast => "multicast".into(),
        RouteType::BlackHole => "blackhole".into(),
        RouteType::Unreachable => "unreachable".into(),
        RouteType::Prohibit => "prohibit".into(),
        other => u8::from(other).to_string(),
    };
    Route {
        dst,
        gateway,
        oif,
        dev: oif.and_then(|i| {
            links
                .iter()
                .find(|l| l.ifindex == i)
                .map(|l| l.name.clone())
        }),
        prefsrc,
        table,
        scope,
        kind,
        metric,
        mtu,
        expires_s,
    }
}
