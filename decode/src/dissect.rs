//! The walker: link layer → IP → tunnels (any depth) → IP → L4 → marker.
//!
//! All offsets are absolute positions in the dissected bytes, so the caller can find payloads
//! (and the reassembler can copy fragment data) without re-parsing. Nothing here panics: every
//! read is bounds-checked through `get`/etherparse's checked slices, and a header that does not
//! fit ends dissection with [`DecodeError`] while keeping everything parsed before it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice, TcpHeaderSlice};

use crate::marker::Marker;
use crate::model::*;
use crate::wire::{rd16, rd32, rd8, GenevePacket, GrePacket, Sll2Packet, VxlanPacket};

/// What to treat as a tunnel and how deep to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// UDP destination ports dissected as VXLAN (default 4789 and 8472, Linux/flannel).
    pub vxlan_ports: Vec<u16>,
    /// UDP destination ports dissected as Geneve (default 6081).
    pub geneve_ports: Vec<u16>,
    /// UDP destination ports whose payload, when it starts like an IPv4 or IPv6 header, is a
    /// bare IP packet: flannel's `udp` backend (default 8285), no tunnel header.
    pub ip_in_udp_ports: Vec<u16>,
    /// Maximum number of encapsulation layers before giving up (default 8).
    pub max_layers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vxlan_ports: vec![4789, 8472],
            geneve_ports: vec![6081],
            ip_in_udp_ports: vec![8285],
            max_layers: 8,
        }
    }
}

/// How deep ICMP errors quoting ICMP errors are followed.
const MAX_QUOTE_DEPTH: u8 = 2;

const ET_IPV4: u16 = 0x0800;
const ET_IPV6: u16 = 0x86dd;
const ET_ARP: u16 = 0x0806;
const ET_TEB: u16 = 0x6558;

/// Dissects one frame. Never panics; on a malformed header the result keeps what came before
/// and says why in [`Dissection::error`].
pub fn dissect(bytes: &[u8], link: LinkType, opts: &Options) -> Dissection {
    let mut d = Dissection::default();
    dissect_into(bytes, link, opts, &mut d);
    d
}

/// Like [`dissect`] but reuses `out` (and its allocations): the fast path for bulk decoding.
pub fn dissect_into(bytes: &[u8], link: LinkType, opts: &Options, out: &mut Dissection) {
    out.clear();
    let mut w = Walker {
        bytes,
        opts,
        d: out,
        quote: 0,
    };
    if let Err(e) = w.run(link) {
        w.d.error = Some(e);
    }
}

/// Dissects the packet quoted inside an ICMP error (starts with an IP header, usually cut short).
pub fn dissect_quote(bytes: &[u8], opts: &Options) -> Dissection {
    let mut d = Dissection::default();
    let mut w = Walker {
        bytes,
        opts,
        d: &mut d,
        quote: 1,
    };
    w.d.link.kind = "quote";
    if let Err(e) = w.walk(0, bytes.len()) {
        w.d.error = Some(e);
    }
    d
}

struct Walker<'a, 'o, 'd> {
    bytes: &'a [u8],
    opts: &'o Options,
    d: &'d mut Dissection,
    /// ICMP quote nesting depth (0: the captured packet itself).
    quote: u8,
}

fn trunc(layer: &'static str, need: usize, have: usize) -> DecodeError {
    DecodeError::Truncated { layer, need, have }
}

/// The Jumbo Payload length (RFC 2675, option 0xc2) among hop-by-hop `options`.
fn jumbo_option(options: &[u8]) -> Option<u32> {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        if kind == 0 {
            at += 1; // Pad1
            continue;
        }
        let len = usize::from(*options.get(at + 1)?);
        if kind == 0xc2 && len == 4 {
            return options.get(at + 2..at + 6).map(|b| rd32(b, 0));
        }
        at += 2 + len;
    }
    None
}

fn mac(b: &[u8], at: usize) -> Mac {
    match b.get(at..at + 6) {
        Some(s) => {
            let mut m = [0u8; 6];
            m.copy_from_slice(s);
            Mac(m)
        }
        None => Mac::default(),
    }
}

/// What follows a layer.
enum Step {
    /// An EtherType-identified payload at `off`, bounded by `end`.
    Ether {
        ethertype: u16,
        off: usize,
        end: usize,
    },
    /// An Ethernet header at `off` (VXLAN, Geneve 0x6558, gretap).
    Frame { off: usize, end: usize },
    /// Nothing more to dissect.
    Done,
}

impl<'a> Walker<'a, '_, '_> {
    fn slice(&self, off: usize, end: usize) -> &'a [u8] {
        self.bytes.get(off..end).unwrap_or(&[])
    }

    fn run(&mut self, link: LinkType) -> Result<(), DecodeError> {
        let b = self.bytes;
        let end = b.len();
        let (ethertype, off) = match link {
            LinkType::Ethernet => {
                self.d.link.kind = "ethernet";
                let (et, off, link) = self.ethernet(0, end)?;
                self.d.link = link;
                (et, off)
            }
            LinkType::LinuxSll => {
                self.d.link.kind = "sll";
                if b.len() < 16 {
                    return Err(trunc("sll", 16, b.len()));
                }
                let halen = usize::from(rd16(b, 4)).min(6);
                if halen == 6 {
                    self.d.link.src_mac = Some(mac(b, 6));
                }
                self.d.link.packet_type = Some(rd16(b, 0) as u8);
                let et = rd16(b, 14);
                self.d.link.ethertype = et;
                (et, 16)
            }
            LinkType::LinuxSll2 => {
                self.d.link.kind = "sll2";
                let p = Sll2Packet::new_checked(b)?;
                if p.address().len() == 6 {
                    self.d.link.src_mac = Some(mac(b, 12));
                }
                self.d.link.packet_type = Some(p.packet_type());
                self.d.link.ifindex = Some(p.ifindex());
                let et = p.protocol();
                self.d.link.ethertype = et;
                (et, Sll2Packet::<&[u8]>::HEADER_LEN)
            }
            LinkType::RawIp => {
                self.d.link.kind = "raw";
                let et = match b.first().map(|v| v >> 4) {
                    Some(4) => ET_IPV4,
                    Some(6) => ET_IPV6,
                    Some(_) => {
                        return Err(DecodeError::Malformed {
                            layer: "raw",
                            what: "IP version is neither 4 nor 6",
                        })
                    }
                    None => return Err(trunc("raw", 1, 0)),
                };
                self.d.link.ethertype = et;
                (et, 0)
            }
            LinkType::Null => {
                self.d.link.kind = "null";
                let af = match b.get(0..4) {
                    Some(&[a, c, d, e]) => {
                        // Host byte order of the capturing machine: accept either.
                        let le = u32::from_le_bytes([a, c, d, e]);
                        let be = u32::from_be_bytes([a, c, d, e]);
                        le.min(be)
                    }
                    _ => return Err(trunc("null", 4, b.len())),
                };
                let et = match af {
                    2 => ET_IPV4,
                    10 | 24 | 28 | 30 => ET_IPV6,
                    _ => 0,
                };
                self.d.link.ethertype = et;
                (et, 4)
            }
        };
        self.walk_ether(ethertype, off, end)
    }

    /// Parses an Ethernet header and its VLAN tags at `off`.
    fn ethernet(&self, off: usize, end: usize) -> Result<(u16, usize, Link), DecodeError> {
        let s = self.slice(off, end);
        let eth =
            Ethernet2HeaderSlice::from_slice(s).map_err(|_| trunc("ethernet", 14, s.len()))?;
        let mut link = Link {
            kind: "ethernet",
            src_mac: Some(Mac(eth.source())),
            dst_mac: Some(Mac(eth.destination())),
            ..Link::default()
        };
        let mut et = eth.ether_type().0;
        let mut at = 14;
        while matches!(et, 0x8100 | 0x88a8 | 0x9100) {
            if s.len() < at + 4 {
                link.ethertype = et;
                return Err(trunc("vlan", at + 4, s.len()));
            }
            if link.vlans.len() >= 4 {
                return Err(DecodeError::Malformed {
                    layer: "vlan",
                    what: "more than 4 VLAN tags",
                });
            }
            link.vlans.push(rd16(s, at) & 0x0fff);
            et = rd16(s, at + 2);
            at += 4;
        }
        link.ethertype = et;
        Ok((et, off + at, link))
    }

    fn walk_ether(
        &mut self,
        mut et: u16,
        mut off: usize,
        mut end: usize,
    ) -> Result<(), DecodeError> {
        loop {
            let step = match et {
                ET_IPV4 | ET_IPV6 => self.ip(off, end)?,
                ET_ARP => {
                    self.arp(off, end)?;
                    Step::Done
                }
                _ => Step::Done,
            };
            match step {
                Step::Done => return Ok(()),
                Step::Ether {
                    ethertype,
                    off: o,
                    end: e,
                } => {
                    et = ethertype;
                    off = o;
                    end = e;
                }
                Step::Frame { off: o, end: e } => {
                    let (ethertype, o2, link) = self.ethernet(o, e)?;
                    if let Some(last) = self.d.outer.last_mut() {
                        last.inner_link = Some(link);
                    }
                    et = ethertype;
                    off = o2;
                    end = e;
                }
            }
        }
    }

    /// Entry for quotes: an IP header at `off`.
    fn walk(&mut self, off: usize, end: usize) -> Result<(), DecodeError> {
        let et = match self.bytes.get(off).map(|v| v >> 4) {
            Some(4) => ET_IPV4,
            Some(6) => ET_IPV6,
            Some(_) => {
                return Err(DecodeError::Malformed {
                    layer: "ip",
                    what: "IP version is neither 4 nor 6",
                })
            }
            None => return Err(trunc("ip", 1, 0)),
        };
        self.walk_ether(et, off, end)
    }

    fn arp(&mut self, off: usize, end: usize) -> Result<(), DecodeError> {
        let s = self.slice(off, end);
        if s.len() < 28 {
            return Err(trunc("arp", 28, s.len()));
        }
        if rd16(s, 0) != 1 || rd16(s, 2) != ET_IPV4 || rd8(s, 4) != 6 || rd8(s, 5) != 4 {
            return Ok(()); // not Ethernet/IPv4 ARP: nothing more to say
        }
        let ip4 = |at: usize| Ipv4Addr::from(rd32(s, at));
        self.d.arp = Some(Arp {
            op: rd16(s, 6),
            sender_mac: mac(s, 8),
            sender_ip: ip4(14),
            target_mac: mac(s, 18),
            target_ip: ip4(24),
        });
        Ok(())
    }

    /// Parses the IP header at `off` (bounded by `end`) and whatever it carries.
    fn ip(&mut self, off: usize, end: usize) -> Result<Step, DecodeError> {
        let s = self.slice(off, end);
        let mut ip = match s.first().map(|v| v >> 4) {
            Some(4) => self.ipv4(s)?,
            Some(6) => self.ipv6(s)?,
            Some(_) => {
                return Err(DecodeError::Malformed {
                    layer: "ip",
                    what: "IP version is neither 4 nor 6",
                })
            }
            None => return Err(trunc("ip", 20, 0)),
        };
        ip.offset = u32::try_from(off).unwrap_or(u32::MAX);
        let hl = usize::from(ip.header_len);
        let claimed = ip.packet_len() as usize;
        let p_start = off + hl;
        let p_end = if off.saturating_add(claimed) > end {
            ip.truncated = true;
            end
        } else {
            off + claimed
        };
        let p_end = p_end.max(p_start.min(end));
        ip.payload_len = u32::try_from(p_end.saturating_sub(p_start)).unwrap_or(0);

        if ip.frag_offset != 0 {
            // A non-first fragment: no L4 header. The last one ends where the datagram ends,
            // so it carries the marker.
            if !ip.mf && !ip.truncated {
                self.marker_at(p_start, p_end, MarkerSite::LastFragment);
            }
            self.d.ip = Some(ip);
            return Ok(Step::Done);
        }

        let proto = ip.proto;
        let v6 = ip.version == 6;
        match proto {
            4 | 41 => {
                let tunnel = match (v6, proto) {
                    (false, 4) => Tunnel::Ipip,
                    (false, _) => Tunnel::Sit,
                    (true, 4) => Tunnel::Ip4ip6,
                    (true, _) => Tunnel::Ip6ip6,
                };
                self.push_outer(ip, None, tunnel)?;
                let et = if proto == 4 { ET_IPV4 } else { ET_IPV6 };
                Ok(Step::Ether {
                    ethertype: et,
                    off: p_start,
                    end: p_end,
                })
            }
            47 => {
                let g = match GrePacket::new_checked(self.slice(p_start, p_end)) {
                    Ok(g) => g,
                    Err(e) => {
                        self.d.ip = Some(ip);
                        return Err(e.into());
                    }
                };
                let protocol = g.protocol();
                let inner = p_start + g.header_len();
                let tunnel = Tunnel::Gre {
                    protocol,
                    key: g.key(),
                    seq: g.sequence(),
                    checksum: g.checksum(),
                };
                self.push_outer(ip, None, tunnel)?;
                Ok(self.inner_step(protocol, inner, p_end))
            }
            17 => self.udp(ip, p_start, p_end),
            6 => {
                let r = self.tcp(&ip, p_start, p_end);
                self.d.ip = Some(ip);
                r?;
                Ok(Step::Done)
            }
            1 if !v6 => {
                let r = self.icmp(&ip, p_start, p_end);
                self.d.ip = Some(ip);
                r?;
                Ok(Step::Done)
            }
            58 if v6 => {
                let r = self.icmp(&ip, p_start, p_end);
                self.d.ip = Some(ip);
                r?;
                Ok(Step::Done)
            }
            _ => {
                self.d.ip = Some(ip);
                Ok(Step::Done)
            }
        }
    }

    fn inner_step(&self, protocol: u16, off: usize, end: usize) -> Step {
        match protocol {
            ET_TEB => Step::Frame { off, end },
            ET_IPV4 | ET_IPV6 | ET_ARP => Step::Ether {
                ethertype: protocol,
                off,
                end,
            },
            _ => Step::Done,
        }
    }

    fn push_outer(
        &mut self,
        ip: Ip,
        udp: Option<Ports>,
        tunnel: Tunnel,
    ) -> Result<(), DecodeError> {
        if self.d.outer.len() >= self.opts.max_layers {
            self.d.ip = Some(ip);
            return Err(DecodeError::TooDeep(self.opts.max_layers));
        }
        self.d.outer.push(Outer {
            ip,
            udp,
            tunnel,
            inner_link: None,
        });
        Ok(())
    }

    fn ipv4(&self, s: &[u8]) -> Result<Ip, DecodeError> {
        let h = Ipv4HeaderSlice::from_slice(s).map_err(|e| match e {
            etherparse::err::ipv4::HeaderSliceError::Len(l) => trunc("ipv4", l.required_len, l.len),
            etherparse::err::ipv4::HeaderSliceError::Content(_) => DecodeError::Malformed {
                layer: "ipv4",
                what: "header length below 20 bytes",
            },
        })?;
        let hl = u16::from(h.ihl()) * 4;
        let total = h.total_len();
        let fragment = h.more_fragments() || h.fragments_offset().value() != 0;
        // Linux BIG TCP (and TSO as captured on some hosts) writes total length 0 into a
        // super-packet over 64 KiB: its length is the frame's. Not in an ICMP quote, whose
        // "frame" is the quote.
        let aggregated = (total == 0 && !fragment && self.quote == 0 && s.len() > usize::from(hl))
            .then(|| Aggregated {
                claimed: 0,
                len: u32::try_from(s.len()).unwrap_or(u32::MAX),
                from: LenFrom::Frame,
            });
        if total < hl && aggregated.is_none() {
            return Err(DecodeError::Malformed {
                layer: "ipv4",
                what: "total length shorter than the header",
            });
        }
        Ok(Ip {
            version: 4,
            src: IpAddr::V4(h.source_addr()),
            dst: IpAddr::V4(h.destination_addr()),
            proto: h.protocol().0,
            ttl: h.ttl(),
            tos: rd8(s, 1),
            id: u32::from(h.identification()),
            df: h.dont_fragment(),
            mf: h.more_fragments(),
            frag_offset: h.fragments_offset().value().saturating_mul(8),
            header_len: hl,
            total_len: total,
            checksum: h.header_checksum(),
            flow_label: 0,
            options: h.options().to_vec(),
            aggregated,
            ..Ip::default()
        })
    }

    fn ipv6(&self, s: &[u8]) -> Result<Ip, DecodeError> {
        let h = Ipv6HeaderSlice::from_slice(s).map_err(|_| trunc("ipv6", 40, s.len()))?;
        let mut ip = Ip {
            version: 6,
            src: IpAddr::V6(Ipv6Addr::from(h.source())),
            dst: IpAddr::V6(Ipv6Addr::from(h.destination())),
            proto: h.next_header().0,
            ttl: h.hop_limit(),
            tos: h.traffic_class(),
            flow_label: h.flow_label().value(),
            header_len: 40,
            total_len: 40u16.saturating_add(h.payload_length()),
            ..Ip::default()
        };
        let plen = h.payload_length();
        let mut jumbo = None;
        // Extension headers.
        let mut at = 40usize;
        let mut next = ip.proto;
        loop {
            let len = match next {
                0 | 43 | 60 | 135 | 139 | 140 => {
                    let Some(&[_, l]) = s.get(at..at + 2) else {
                        return Err(trunc("ipv6-ext", at + 2, s.len()));
                    };
                    (usize::from(l) + 1) * 8
                }
                51 => {
                    let Some(&[_, l]) = s.get(at..at + 2) else {
                        return Err(trunc("ipv6-ah", at + 2, s.len()));
                    };
                    (usize::from(l) + 2) * 4
                }
                44 => 8,
                _ => break,
            };
            if s.len() < at + len {
                return Err(trunc("ipv6-ext", at + len, s.len()));
            }
            if ip.ext.len() >= 16 {
                return Err(DecodeError::Malformed {
                    layer: "ipv6-ext",
                    what: "more than 16 extension headers",
                });
            }
            ip.ext.push(Ipv6Ext {
                kind: next,
                len: u16::try_from(len).unwrap_or(u16::MAX),
            });
            if next == 0 && at == 40 {
                jumbo = jumbo_option(s.get(at + 2..at + len).unwrap_or(&[]));
            }
            let is_frag = next == 44;
            if is_frag {
                let fo = rd16(s, at + 2);
                ip.frag_offset = fo & 0xfff8;
                ip.mf = fo & 1 != 0;
                ip.id = rd32(s, at + 4);
            }
            next = rd8(s, at);
            at += len;
            if is_frag && ip.frag_offset != 0 {
                break; // what follows is the middle of the datagram, not headers
            }
        }
        ip.proto = next;
        ip.header_len = u16::try_from(at).unwrap_or(u16::MAX);
        if plen == 0 {
            // RFC 2675 jumbogram: the length is in the hop-by-hop Jumbo Payload option. Linux
            // BIG TCP (6.x) strips that header before packet sockets see the packet, leaving
            // payload length 0 on a frame that holds the whole packet. A payload length of 0
            // with nothing after the header (No Next Header, Ethernet padding) is just that.
            ip.aggregated = if let Some(j) = jumbo {
                Some(Aggregated {
                    claimed: 0,
                    len: j.saturating_add(40),
                    from: LenFrom::Jumbo,
                })
            } else if self.quote == 0 && s.len() > 40 && (next != 59 || !ip.ext.is_empty()) {
                Some(Aggregated {
                    claimed: 0,
                    len: u32::try_from(s.len()).unwrap_or(u32::MAX),
                    from: LenFrom::Frame,
                })
            } else {
                None
            };
        }
        Ok(ip)
    }

    fn udp(&mut self, ip: Ip, off: usize, end: usize) -> Result<Step, DecodeError> {
        let s = self.slice(off, end);
        if s.len() < 8 {
            let quoted = self.quote > 0 && s.len() >= 4;
            if quoted {
                self.d.l4 = Some(L4::Udp(Udp {
                    sport: rd16(s, 0),
                    dport: rd16(s, 2),
                    len: 0,
                    checksum: 0,
                }));
            }
            self.d.ip = Some(ip);
            return if quoted {
                Ok(Step::Done)
            } else {
                Err(trunc("udp", 8, s.len()))
            };
        }
        let u = Udp {
            sport: rd16(s, 0),
            dport: rd16(s, 2),
            len: rd16(s, 4),
            checksum: rd16(s, 6),
        };
        let ports = Ports {
            sport: u.sport,
            dport: u.dport,
        };
        let body = off + 8;
        if self.opts.vxlan_ports.contains(&u.dport) {
            match VxlanPacket::new_checked(self.slice(body, end)) {
                Ok(v) => {
                    let tunnel = Tunnel::Vxlan {
                        vni: v.vni(),
                        flags: v.flags(),
                    };
                    self.push_outer(ip, Some(ports), tunnel)?;
                    return Ok(Step::Frame {
                        off: body + VxlanPacket::<&[u8]>::HEADER_LEN,
                        end,
                    });
                }
                Err(e) if self.quote == 0 || !ip.truncated => {
                    self.d.l4 = Some(L4::Udp(u));
                    self.d.ip = Some(ip);
                    return Err(e.into());
                }
                Err(_) => {}
            }
        } else if self.opts.geneve_ports.contains(&u.dport) {
            match GenevePacket::new_checked(self.slice(body, end)) {
                Ok(g) => {
                    let tunnel = Tunnel::Geneve {
                        vni: g.vni(),
                        protocol: g.protocol(),
                        oam: g.oam(),
                        critical: g.critical(),
                        options: g.option_iter().collect(),
                    };
                    let protocol = g.protocol();
                    let inner = body + g.header_len();
                    self.push_outer(ip, Some(ports), tunnel)?;
                    return Ok(self.inner_step(protocol, inner, end));
                }
                Err(e) if self.quote == 0 || !ip.truncated => {
                    self.d.l4 = Some(L4::Udp(u));
                    self.d.ip = Some(ip);
                    return Err(e.into());
                }
                Err(_) => {}
            }
        }
        if self.opts.ip_in_udp_ports.contains(&u.dport) {
            // No header to check: the payload is taken as IP when its version nibble says so
            // and it can hold the header that version has.
            let payload = self.slice(body, end);
            let inner = match payload.first().map(|v| v >> 4) {
                Some(4) if payload.len() >= 20 => Some(ET_IPV4),
                Some(6) if payload.len() >= 40 => Some(ET_IPV6),
                _ => None,
            };
            if let Some(ethertype) = inner {
                self.push_outer(ip, Some(ports), Tunnel::IpInUdp)?;
                return Ok(Step::Ether {
                    ethertype,
                    off: body,
                    end,
                });
            }
        }
        self.d.l4 = Some(L4::Udp(u));
        self.set_payload(&ip, body, end);
        self.d.ip = Some(ip);
        Ok(Step::Done)
    }

    fn tcp(&mut self, ip: &Ip, off: usize, end: usize) -> Result<(), DecodeError> {
        let s = self.slice(off, end);
        match TcpHeaderSlice::from_slice(s) {
            Ok(h) => {
                let hl = usize::from(h.data_offset()) * 4;
                self.d.l4 = Some(L4::Tcp(Tcp {
                    sport: h.source_port(),
                    dport: h.destination_port(),
                    seq: h.sequence_number(),
                    ack: h.acknowledgment_number(),
                    flags: rd8(s, 13),
                    window: h.window_size(),
                    header_len: u8::try_from(hl).unwrap_or(0),
                    captured: u8::try_from(hl).unwrap_or(0),
                }));
                self.set_payload(ip, off + hl, end);
                Ok(())
            }
            Err(e) if s.len() >= 4 => {
                // ICMP quotes often hold only the first 8 bytes of TCP; a cut-short segment
                // still shows its ports.
                self.d.l4 = Some(L4::Tcp(Tcp {
                    sport: rd16(s, 0),
                    dport: rd16(s, 2),
                    seq: rd32(s, 4),
                    ack: rd32(s, 8),
                    flags: rd8(s, 13),
                    window: rd16(s, 14),
                    header_len: rd8(s, 12) >> 4 << 2,
                    captured: u8::try_from(s.len().min(60)).unwrap_or(60),
                }));
                match e {
                    _ if self.quote > 0 => Ok(()),
                    etherparse::err::tcp::HeaderSliceError::Len(l) => {
                        Err(trunc("tcp", l.required_len, l.len))
                    }
                    etherparse::err::tcp::HeaderSliceError::Content(_) => {
                        Err(DecodeError::Malformed {
                            layer: "tcp",
                            what: "data offset below 5",
                        })
                    }
                }
            }
            Err(etherparse::err::tcp::HeaderSliceError::Len(l)) => {
                Err(trunc("tcp", l.required_len, l.len))
            }
            Err(etherparse::err::tcp::HeaderSliceError::Content(_)) => {
                Err(DecodeError::Malformed {
                    layer: "tcp",
                    what: "data offset below 5",
                })
            }
        }
    }

    fn icmp(&mut self, ip: &Ip, off: usize, end: usize) -> Result<(), DecodeError> {
        let s = self.slice(off, end);
        let v6 = ip.version == 6;
        let layer = if v6 { "icmpv6" } else { "icmp" };
        let need = if self.quote > 0 { 4 } else { 8 };
        if s.len() < need {
            return Err(trunc(layer, need, s.len()));
        }
        let kind = rd8(s, 0);
        let code = rd8(s, 1);
        let mut icmp = Icmp {
            v6,
            kind,
            code,
            id: None,
            seq: None,
            mtu: None,
            quote: None,
        };
        let echo = if v6 {
            kind == 128 || kind == 129
        } else {
            kind == 0 || kind == 8
        };
        if s.len() >= 8 {
            if echo {
                icmp.id = Some(rd16(s, 4));
                icmp.seq = Some(rd16(s, 6));
            }
            if !v6 && kind == 3 && code == 4 {
                icmp.mtu = Some(u32::from(rd16(s, 6)));
            }
            if v6 && kind == 2 {
                icmp.mtu = Some(rd32(s, 4));
            }
        }
        if echo {
            self.set_payload(ip, off + 8, end);
        } else if icmp.is_error() && s.len() > 8 && self.quote < MAX_QUOTE_DEPTH {
            let mut q = Dissection::default();
            q.link.kind = "quote";
            let mut w = Walker {
                bytes: self.bytes,
                opts: self.opts,
                d: &mut q,
                quote: self.quote + 1,
            };
            if let Err(e) = w.walk(off + 8, end) {
                q.error = Some(e);
            }
            if let Some(m) = q.find_marker() {
                self.d.marker = Some(FoundMarker {
                    marker: m.marker,
                    site: MarkerSite::IcmpQuote,
                });
            }
            icmp.quote = Some(Box::new(q));
        }
        self.d.l4 = Some(L4::Icmp(icmp));
        Ok(())
    }

    /// Records the innermost L4 payload and looks for the marker at its end.
    fn set_payload(&mut self, ip: &Ip, start: usize, end: usize) {
        let start = start.min(end);
        self.d.payload_offset = u32::try_from(start).unwrap_or(0);
        self.d.payload_len = u32::try_from(end - start).unwrap_or(0);
        if !ip.truncated
            && !ip.is_fragment()
            && self
                .d
                .outer
                .iter()
                .all(|o| !o.ip.truncated && !o.ip.is_fragment())
        {
            self.marker_at(start, end, MarkerSite::Payload);
        }
    }

    fn marker_at(&mut self, start: usize, end: usize, site: MarkerSite) {
        if let Some(m) = Marker::find_in_bytes(self.slice(start, end)) {
            self.d.marker = Some(FoundMarker { marker: m, site });
        }
    }
}
