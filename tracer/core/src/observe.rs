//! From captured frames to sightings of the trace's probes: dissect each frame, reassemble
//! fragments per capture point, find the marker (in the payload, a reassembled datagram or an
//! ICMP error's quote), and recognise the unmarked packets that belong to a probe — TCP SYN-ACK
//! or RST, a UDP reply, an ICMP error whose quote is too short to hold the marker — by their
//! headers. Each sighting says which leg it is on.

use std::collections::HashMap;
use std::net::IpAddr;

use dye_decode::{
    dissect, Dissection, Flow, Ip, LinkType, Options, Reassembler, ReassemblyLimits, L4,
};

use crate::model::{Direction, IcmpKind, TcpSegment};
use crate::path::{FragmentLayer, Fragments, Leg, Outer, Packet, Transport};
use crate::probe::probe_ip_id;

/// What a sighting is, for the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SightingKind {
    /// The probe itself (forward leg).
    Probe,
    /// The answer (echo reply, SYN-ACK, RST, UDP reply).
    Reply,
    /// An ICMP error about the probe, sent by `sender`.
    IcmpError {
        sender: IpAddr,
        /// What the error means, from its type and code.
        kind: IcmpKind,
        /// Type and code on the wire, and the family.
        ty: u8,
        code: u8,
        v6: bool,
        mtu: Option<u32>,
    },
}

/// One probe-related packet seen at one capture point.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub point: usize,
    pub direction: Direction,
    pub ts_ns: u64,
    pub seq: u32,
    pub leg: Leg,
    pub kind: SightingKind,
    /// Innermost 5-tuple.
    pub flow: Flow,
    pub packet: Packet,
    pub outer: Vec<Outer>,
    pub fragments: Option<Fragments>,
    /// Indices of the frames (in capture order) this sighting is made of: one, or every fragment.
    pub frames: Vec<usize>,
}

/// (capture point, direction, IP source, IP id) of a fragmented datagram.
type FragmentKey = (usize, Direction, IpAddr, u32);

/// Bounds on what the observer keeps while a trace runs.
const MAX_TRACKED_FLOWS: usize = 4096;
const MAX_PENDING_FRAGMENT_FRAMES: usize = 4096;

/// Turns frames into sightings for one trace.
pub struct Observer {
    trace_id: u32,
    opts: Options,
    /// The link type of each capture point's frames.
    linktypes: Vec<LinkType>,
    reassembler: Reassembler<(usize, Direction)>,
    /// Innermost flows of forward sightings → probe sequence.
    forward_flows: HashMap<Flow, u32>,
    /// IP id (IPv6: flow label) of the probe at each forward sighting → sequence (NAT keeps
    /// it), to match ICMP errors whose quote is cut before the marker.
    ip_ids: HashMap<(IpAddr, u32), u32>,
    /// Frames of fragments waiting for the rest of their datagram, by (point, dir, ip src, id).
    pending_frames: HashMap<FragmentKey, Vec<usize>>,
    /// The segment the TCP probes are (a marked SYN is a probe, a marked ACK an answer —
    /// unless the probes themselves are ACKs or FINs).
    tcp_probe: TcpSegment,
    /// Frames that could not be dissected cleanly (counted, never fatal).
    pub malformed: u64,
    /// The last frame observed was a fragment kept for reassembly.
    last_held: Option<usize>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("trace_id", &self.trace_id)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// An observer for trace `trace_id`, decoding VXLAN on `vxlan_ports`; `linktypes` gives
    /// each capture point's pcap link type (Ethernet when unknown).
    pub fn new(trace_id: u32, vxlan_ports: &[u16], linktypes: &[u32]) -> Observer {
        let opts = Options {
            vxlan_ports: vxlan_ports.to_vec(),
            ..Options::default()
        };
        Observer {
            trace_id,
            opts,
            linktypes: linktypes
                .iter()
                .map(|n| LinkType::from_linktype(*n).unwrap_or(LinkType::Ethernet))
                .collect(),
            reassembler: Reassembler::new(ReassemblyLimits::default()),
            forward_flows: HashMap::new(),
            ip_ids: HashMap::new(),
            pending_frames: HashMap::new(),
            tcp_probe: TcpSegment::Syn,
            malformed: 0,
            last_held: None,
        }
    }

    /// The TCP probes are `segment`s.
    pub fn tcp_probes(mut self, segment: TcpSegment) -> Observer {
        self.tcp_probe = segment;
        self
    }

    /// Registers a probe as sent (before any capture of it), so that even its first sighting's
    /// IP id is known.
    pub fn sent(&mut self, src: IpAddr, ip_id: u32, seq: u32) {
        self.ip_ids.insert((src, ip_id), seq);
    }

    /// Frame `index` (the last observed) is a fragment waiting for the rest of its datagram:
    /// keep it, the datagram's sighting will point at it.
    pub fn holds_fragment_of(&self, index: usize) -> bool {
        self.last_held == Some(index)
    }

    /// Looks at frame number `index`, captured at `point` in `direction` at `ts_ns`.
    pub fn observe(
        &mut self,
        index: usize,
        point: usize,
        direction: Direction,
        ts_ns: u64,
        frame: &[u8],
    ) -> Option<Sighting> {
        let linktype = self
            .linktypes
            .get(point)
            .copied()
            .unwrap_or(LinkType::Ethernet);
        let d = dissect(frame, linktype, &self.opts);
        if d.is_malformed() && d.ip.is_none() {
            self.malformed += 1;
            return None;
        }
        if let Some((depth, ip)) = d.ips().enumerate().find(|(_, ip)| ip.is_fragment()) {
            let key = (point, direction, ip.src, ip.id);
            return self.fragment(index, key, ts_ns, frame, &d, depth);
        }
        self.classify(&d, None, point, direction, ts_ns, vec![index])
    }

    /// A fragment: its frame is remembered under `key` (point, direction, ip src, ip id) until
    /// the reassembler completes the datagram, which then becomes one sighting.
    fn fragment(
        &mut self,
        index: usize,
        key: FragmentKey,
        ts_ns: u64,
        frame: &[u8],
        d: &Dissection,
        depth: usize,
    ) -> Option<Sighting> {
        let (point, direction, _, _) = key;
        if self.pending_frames.len() < MAX_PENDING_FRAGMENT_FRAMES
            || self.pending_frames.contains_key(&key)
        {
            self.pending_frames.entry(key).or_default().push(index);
            self.last_held = Some(index);
        }
        let whole = self.reassembler.push((point, direction), ts_ns, frame, d)?;
        let frames = self
            .pending_frames
            .remove(&key)
            .unwrap_or_else(|| vec![index]);
        let mut rd = dissect(&whole.datagram, LinkType::RawIp, &self.opts);
        // An inner datagram fragmented before encapsulation: keep the outer layers of the frame
        // that completed it.
        if depth > 0 {
            let mut outer: Vec<_> = d.outer.iter().take(depth).cloned().collect();
            outer.append(&mut rd.outer);
            rd.outer = outer;
        }
        let fragments = Fragments {
            sizes: whole.fragment_sizes.iter().map(|s| u32::from(*s)).collect(),
            layer: if depth == 0 && !rd.outer.is_empty() {
                FragmentLayer::Outer
            } else if depth > 0 {
                FragmentLayer::Inner
            } else {
                FragmentLayer::Ip
            },
        };
        self.classify(&rd, Some(fragments), point, direction, ts_ns, frames)
    }

    fn classify(
        &mut self,
        d: &Dissection,
        fragments: Option<Fragments>,
        point: usize,
        direction: Direction,
        ts_ns: u64,
        frames: Vec<usize>,
    ) -> Option<Sighting> {
        let ip = d.ip.as_ref()?;
        let flow = d.flow()?;
        let marker = d
            .find_marker()
            .filter(|m| m.marker.trace_id == self.trace_id);
        let (seq, kind) = match (&d.l4, marker) {
            // An ICMP error about a probe: by its marker, or by the quoted IP id when the quote
            // stops short of the marker.
            (Some(L4::Icmp(icmp)), m) if icmp.is_error() => {
                // An error about one of our *replies* — typically the source's own kernel
                // refusing an answer addressed to a port dye's raw socket does not own — says
                // nothing about the probe.
                if let Some(qf) = icmp.quote.as_ref().and_then(|q| q.flow()) {
                    if !self.forward_flows.contains_key(&qf)
                        && self.forward_flows.contains_key(&qf.reversed())
                    {
                        return None;
                    }
                }
                let seq = match m {
                    Some(m) => m.marker.seq,
                    None => {
                        let q = icmp.quote.as_ref()?.ip.as_ref()?;
                        let qid = probe_ip_id(q);
                        *self.ip_ids.get(&(q.src, qid)).or_else(|| {
                            self.ip_ids
                                .iter()
                                .find(|((_, id), _)| *id == qid)
                                .map(|(_, s)| s)
                        })?
                    }
                };
                (
                    seq,
                    SightingKind::IcmpError {
                        sender: ip.src,
                        kind: IcmpKind::of(icmp.v6, icmp.kind, icmp.code),
                        ty: icmp.kind,
                        code: icmp.code,
                        v6: icmp.v6,
                        mtu: icmp.mtu,
                    },
                )
            }
            (_, Some(m)) => (m.marker.seq, self.marked_kind(d, &flow)),
            // Unmarked: an answer to a probe flow (SYN-ACK, RST, a UDP reply).
            (Some(L4::Tcp(_) | L4::Udp(_)), None) => {
                let seq = *self.forward_flows.get(&flow.reversed())?;
                (seq, SightingKind::Reply)
            }
            _ => return None,
        };
        let leg = match kind {
            SightingKind::Probe => Leg::Forward,
            _ => Leg::Return,
        };
        if leg == Leg::Forward && self.forward_flows.len() < MAX_TRACKED_FLOWS {
            self.forward_flows.insert(flow, seq);
            self.ip_ids.insert((ip.src, probe_ip_id(ip)), seq);
        }
        Some(Sighting {
            point,
            direction,
            ts_ns,
            seq,
            leg,
            kind,
            flow,
            packet: packet_view(d, ip, &flow),
            outer: d.outer.iter().map(outer_view).collect(),
            fragments,
            frames,
        })
    }

    /// A marked TCP segment with the probes' flags (SYN, ignoring ECN and PSH bits; an ACK or
    /// FIN probe by its exact FIN/SYN/RST/ACK bits).
    fn is_tcp_probe(&self, flags: u8) -> bool {
        match self.tcp_probe {
            TcpSegment::Syn => flags & 0x12 == 0x02,
            other => flags & 0x17 == other.flags(),
        }
    }

    /// Probe or reply, for a packet that carries our marker.
    fn marked_kind(&self, d: &Dissection, flow: &Flow) -> SightingKind {
        match &d.l4 {
            Some(L4::Icmp(i)) if IcmpKind::of(i.v6, i.kind, i.code) == IcmpKind::EchoReply => {
                SightingKind::Reply
            }
            Some(L4::Icmp(_)) => SightingKind::Probe,
            Some(L4::Tcp(t)) if self.is_tcp_probe(t.flags) => SightingKind::Probe,
            Some(L4::Tcp(_)) => SightingKind::Reply,
            // UDP: a responder that echoes the payload carries the marker back. Same flow as a
            // forward sighting: forward; reversed: reply; a flow never seen (a NAT rewrite
            // between points): forward if one side is still the probe's, else by which side
            // matches a forward source.
            _ => {
                let reply = !self.forward_flows.is_empty()
                    && !self.forward_flows.contains_key(flow)
                    && (self.forward_flows.contains_key(&flow.reversed())
                        || self
                            .forward_flows
                            .keys()
                            .any(|f| f.dst == flow.src && f.dport == flow.sport));
                if reply {
                    SightingKind::Reply
                } else {
                    SightingKind::Probe
                }
            }
        }
    }
}

fn packet_view(d: &Dissection, ip: &Ip, flow: &Flow) -> Packet {
    let (sport, dport, transport) = match &d.l4 {
        Some(L4::Tcp(t)) => (
            Some(t.sport),
            Some(t.dport),
            Transport::Tcp { flags: t.flags },
        ),
        Some(L4::Udp(u)) => (Some(u.sport), Some(u.dport), Transport::Udp),
        Some(L4::Icmp(i)) => (
            None,
            None,
            Transport::Icmp {
                v6: i.v6,
                ty: i.kind,
                code: i.code,
                kind: IcmpKind::of(i.v6, i.kind, i.code),
                mtu: i.mtu,
            },
        ),
        None => (None, None, Transport::Other),
    };
    Packet {
        src: flow.src,
        dst: flow.dst,
        proto: ip.proto,
        sport,
        dport,
        ttl: ip.ttl,
        len: ip.packet_len(),
        ip_id: ip.id,
        df: ip.df,
        transport,
    }
}

fn outer_view(o: &dye_decode::Outer) -> Outer {
    Outer {
        tunnel: o.tunnel.name().to_string(),
        vni: o.tunnel.id(),
        src: o.ip.src,
        dst: o.ip.dst,
        sport: o.udp.map(|u| u.sport),
        dport: o.udp.map(|u| u.dport),
        ttl: o.ip.ttl,
        df: o.ip.df,
        len: o.ip.packet_len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{ProbeTemplate, Proto};
    use dye_decode::build;

    fn frame(ip: &[u8]) -> Vec<u8> {
        build::ethernet([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], &[], 0x86dd, ip)
    }

    #[test]
    fn ipv6_packet_too_big_with_a_short_quote_is_matched_to_the_probe_it_quotes() {
        let (src, dst) = ("fd00:244:1::2", "fd00:10::50");
        let t = ProbeTemplate {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: Proto::Icmp,
            dport: 0,
            sport_base: 40000,
            size: 1400,
            df: false,
            trace_id: 0x0bad_cafe,
            ttl: crate::probe::DEFAULT_TTL,
            tcp: Default::default(),
        };
        let p1 = t.build(1, 700).unwrap();
        let p2 = t.build(2, 701).unwrap();
        let mut obs = Observer::new(t.trace_id, &[8472], &[1]);
        obs.sent(t.src, p1.ip_id, 1);
        obs.sent(t.src, p2.ip_id, 2);
        // Both probes seen leaving, then the error about the first one: a Packet Too Big
        // quotes as much as fits in 1280 bytes, which cuts the marker off a 1400-byte probe.
        for (i, p) in [&p1, &p2].into_iter().enumerate() {
            let s = obs.observe(i, 0, Direction::Out, 10 + i as u64, &frame(&p.packet));
            assert_eq!(s.map(|s| s.seq), Some(p.seq));
        }
        let quote = &p1.packet[..1280 - 48];
        let src6: std::net::Ipv6Addr = src.parse().unwrap();
        let fw: std::net::Ipv6Addr = "fd00:50::254".parse().unwrap();
        let ptb = build::icmp6(fw, src6, 2, 0, 1280u32.to_be_bytes(), quote);
        let ip = build::ipv6(fw, src6, 64, 58, &[], &ptb);
        let s = obs
            .observe(2, 0, Direction::In, 20, &frame(&ip))
            .expect("the PTB is a sighting");
        assert_eq!(s.seq, 1, "attributed to the probe it quotes");
        assert_eq!(
            s.kind,
            SightingKind::IcmpError {
                sender: IpAddr::V6(fw),
                kind: IcmpKind::TooBig,
                ty: 2,
                code: 0,
                v6: true,
                mtu: Some(1280)
            }
        );
    }
}
