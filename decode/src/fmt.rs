//! One-line, tcpdump-like rendering of a whole layer stack:
//!
//! ```text
//! vxlan vni 1 192.168.50.11:40000→192.168.50.12:8472 | 10.244.1.2→10.244.2.3 icmp echo request id 1 seq 1 ttl 64 id 7 len 84 [dye 1a2b3c4d#1]
//! ```
//!
//! Outer layers come first, separated by ` | `; the innermost packet shows its transport,
//! then TTL, IP id, DF, length and fragment fields; ICMP errors show the quoted packet in
//! parentheses; a found marker is shown in brackets; a malformed packet ends with `!` and why.
//! A GSO/GRO super-packet whose length field is 0 shows the length dye used and where from:
//! `len 70054 (aggregated: IP length 0 on the wire, frame length used)`.

use std::fmt::{self, Display, Formatter, Write};
use std::net::IpAddr;

use crate::model::*;

/// Displays a [`Dissection`] on one line (no timestamp, no newline).
#[derive(Debug, Clone, Copy)]
pub struct Line<'a>(pub &'a Dissection);

struct Ep(IpAddr, Option<u16>);

impl Display for Ep {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (IpAddr::V4(a), Some(p)) => write!(f, "{a}:{p}"),
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
            (a, None) => write!(f, "{a}"),
        }
    }
}

fn tcp_flags(f: &mut Formatter<'_>, fl: u8) -> fmt::Result {
    f.write_char('[')?;
    for (bit, c) in [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
    ] {
        if fl & bit != 0 {
            f.write_char(c)?;
        }
    }
    if fl & 0x10 != 0 {
        f.write_char('.')?;
    }
    if fl & 0xdf == 0 && fl & 0x10 == 0 {
        f.write_str("none")?;
    }
    f.write_char(']')
}

fn frag(f: &mut Formatter<'_>, ip: &Ip) -> fmt::Result {
    if ip.is_fragment() {
        write!(f, " frag id {} off {}", ip.id, ip.frag_offset)?;
        if ip.mf {
            f.write_str(" MF")?;
        }
    }
    Ok(())
}

/// ` (aggregated: IP length 0 on the wire, frame length used)` for a GSO/GRO super-packet.
fn aggregated(f: &mut Formatter<'_>, ip: &Ip) -> fmt::Result {
    if let Some(a) = &ip.aggregated {
        let field = if ip.version == 4 {
            "IP length"
        } else {
            "IPv6 payload length"
        };
        let from = match a.from {
            LenFrom::Frame => "frame",
            LenFrom::Jumbo => "jumbo",
        };
        write!(
            f,
            " (aggregated: {field} {} on the wire, {from} length used)",
            a.claimed
        )?;
    }
    Ok(())
}

fn outer(f: &mut Formatter<'_>, o: &Outer) -> fmt::Result {
    f.write_str(o.tunnel.name())?;
    match &o.tunnel {
        Tunnel::Vxlan { vni, .. } => write!(f, " vni {vni}")?,
        Tunnel::Geneve { vni, options, .. } => {
            write!(f, " vni {vni}")?;
            if !options.is_empty() {
                write!(f, " opts {}", options.len())?;
            }
        }
        Tunnel::Gre { key, seq, .. } => {
            if let Some(k) = key {
                write!(f, " key {k}")?;
            }
            if let Some(s) = seq {
                write!(f, " seq {s}")?;
            }
        }
        _ => {}
    }
    let (sp, dp) = match o.udp {
        Some(p) => (Some(p.sport), Some(p.dport)),
        None => (None, None),
    };
    write!(f, " {}→{}", Ep(o.ip.src, sp), Ep(o.ip.dst, dp))?;
    frag(f, &o.ip)?;
    if o.ip.aggregated.is_some() {
        write!(f, " len {}", o.ip.packet_len())?;
        aggregated(f, &o.ip)?;
    }
    if let Some(l) = &o.inner_link {
        for v in &l.vlans {
            write!(f, " vlan {v}")?;
        }
    }
    f.write_str(" | ")
}

fn inner(f: &mut Formatter<'_>, d: &Dissection, ip: &Ip) -> fmt::Result {
    let ports = match &d.l4 {
        Some(L4::Udp(u)) => Some((u.sport, u.dport)),
        Some(L4::Tcp(t)) => Some((t.sport, t.dport)),
        _ => None,
    };
    write!(
        f,
        "{}→{}",
        Ep(ip.src, ports.map(|p| p.0)),
        Ep(ip.dst, ports.map(|p| p.1))
    )?;
    match &d.l4 {
        Some(L4::Tcp(t)) if t.captured >= 16 => {
            f.write_str(" tcp ")?;
            tcp_flags(f, t.flags)?;
            write!(f, " seq {} ack {} win {}", t.seq, t.ack, t.window)?;
        }
        Some(L4::Tcp(t)) if t.captured >= 8 => {
            write!(f, " tcp seq {} ({} bytes quoted)", t.seq, t.captured)?
        }
        Some(L4::Tcp(t)) => write!(f, " tcp ({} bytes quoted)", t.captured)?,
        Some(L4::Udp(u)) => write!(f, " udp len {}", u.len)?,
        Some(L4::Icmp(i)) => {
            f.write_str(if i.v6 { " icmp6 " } else { " icmp " })?;
            f.write_str(i.name())?;
            if let (Some(id), Some(seq)) = (i.id, i.seq) {
                write!(f, " id {id} seq {seq}")?;
            }
            if let Some(m) = i.mtu {
                write!(f, " mtu {m}")?;
            }
            if let Some(q) = &i.quote {
                f.write_str(" (quote ")?;
                line(f, q, false)?;
                f.write_char(')')?;
            }
        }
        None => write!(f, " proto {}", ip.proto)?,
    }
    write!(f, " ttl {}", ip.ttl)?;
    if ip.version == 4 || ip.ext.iter().any(|e| e.kind == 44) {
        write!(f, " id {}", ip.id)?;
    }
    if ip.df {
        f.write_str(" DF")?;
    }
    write!(f, " len {}", ip.packet_len())?;
    aggregated(f, ip)?;
    if ip.version == 4 && !ip.options.is_empty() {
        write!(f, " opts {}", ip.options.len())?;
    }
    for e in &ip.ext {
        write!(f, " ext {}", e.kind)?;
    }
    if ip.frag_offset != 0 || ip.mf {
        write!(f, " frag off {}", ip.frag_offset)?;
        if ip.mf {
            f.write_str(" MF")?;
        }
    }
    if ip.truncated {
        f.write_str(" truncated")?;
    }
    Ok(())
}

impl Display for Line<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        line(f, self.0, true)
    }
}

/// Renders one dissection; a quote (`top == false`) leaves the marker to the enclosing line.
fn line(f: &mut Formatter<'_>, d: &Dissection, top: bool) -> fmt::Result {
    {
        match d.link.vlans.as_slice() {
            [] => {}
            [v] => write!(f, "vlan {v} | ")?,
            vs => {
                f.write_str("vlan ")?;
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        f.write_char('.')?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(" | ")?;
            }
        }
        for o in &d.outer {
            outer(f, o)?;
        }
        if let Some(ip) = &d.ip {
            inner(f, d, ip)?;
        } else if let Some(a) = &d.arp {
            match a.op {
                1 => write!(f, "arp who-has {} tell {}", a.target_ip, a.sender_ip)?,
                2 => write!(f, "arp reply {} is-at {}", a.sender_ip, a.sender_mac)?,
                op => write!(f, "arp op {op} {}→{}", a.sender_ip, a.target_ip)?,
            }
        } else {
            let et = d
                .outer
                .last()
                .and_then(|o| o.inner_link.as_ref())
                .map(|l| l.ethertype)
                .unwrap_or(d.link.ethertype);
            if d.error.is_none() || et != 0 {
                write!(f, "ethertype {et:#06x}")?;
            }
        }
        if let Some(m) = d.marker.as_ref().filter(|_| top) {
            write!(f, " [dye {:08x}#{}", m.marker.trace_id, m.marker.seq)?;
            match m.site {
                MarkerSite::Payload => {}
                MarkerSite::LastFragment => f.write_str(" last-frag")?,
                MarkerSite::IcmpQuote => f.write_str(" in quote")?,
            }
            f.write_char(']')?;
        }
        if let Some(e) = &d.error {
            write!(f, " !{e}")?;
        }
        Ok(())
    }
}
