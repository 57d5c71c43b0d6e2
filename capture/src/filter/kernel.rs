//! The whole through-tunnels match as one socket filter, so the kernel keeps every packet the
//! filter rejects — tunnel packets included — out of the rings:
//!
//! ```text
//!   direction (inbound/outbound)            ── no ──► drop
//!   FILTER on the packet                    ── yes ─► keep
//!   outer IPv4 (not a later fragment) or IPv6, UDP, dport a tunnel port?  ── no ──► drop
//!     VXLAN:      inner Ethernet at  link + IP + 8 + 8
//!     Geneve v0:  inner at link + IP + 8 + 8 + options, Ethernet (0x6558) or raw IP
//!     IP-in-UDP:  inner raw IP at link + IP + 8, if its version is 4 or 6
//!   FILTER compiled for Ethernet / raw IP, relocated to the inner frame  ── keep or drop
//! ```
//!
//! The inner frame's offset is computed at run time (IPv4 header length, Geneve options) into
//! scratch memory, and libpcap's own programs for FILTER read relative to it (see [`super::bpf`]).
//! Outer headers the kernel filter sees: Ethernet without VLAN tags (the kernel holds a tag in
//! packet metadata, not in the frame) or raw IP; IPv6 with UDP as the first next header.

use super::bpf::{
    BpfError, Builder, Insn, OnRet, Target, ABS, ADD, ALU, AND, B, H, IMM, IND, JEQ, JGE, JSET, K,
    LD, LDX, LEN, LSH, MEM, MISC, MSH, M_BASE, ST, TAX, TXA, W, X,
};
use super::inner::OuterLink;
use super::ports::{Encap, TunnelPorts};

/// libpcap's programs for FILTER (and the direction), as the kernel program joins them.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// `inbound` / `outbound` on the live handle, or None.
    pub direction: Option<&'a [Insn]>,
    /// FILTER for the handle's own link type.
    pub outer: &'a [Insn],
    /// FILTER compiled for an Ethernet frame.
    pub ethernet: &'a [Insn],
    /// FILTER compiled for a raw IP packet.
    pub raw_ip: &'a [Insn],
}

fn label(t: &'static str) -> Target {
    Target::Label(t)
}

/// Builds the socket filter; an error means "filter tunnel packets in userspace instead".
pub fn through_tunnels(
    link: OuterLink,
    ports: &TunnelPorts,
    parts: Parts<'_>,
) -> Result<Vec<Insn>, BpfError> {
    let l: u32 = match link {
        OuterLink::Ethernet => 14,
        OuterLink::RawIp => 0,
        OuterLink::LinuxSll | OuterLink::LinuxSll2 => {
            return Err(BpfError::Unsupported(
                "cooked captures: no kernel tunnel filter",
            ))
        }
    };
    let mut b = Builder::new();
    // The kernel's checker follows straight-line code past a `ret` without resetting what it
    // knows of scratch memory, so M[BASE] is written once up front for the inner programs'
    // reads to pass it (every real path sets it again before they run).
    b.op(LD | IMM, 0);
    b.op(ST, M_BASE);
    if let Some(dir) = parts.direction {
        b.program(dir, OnRet::Goto(label("outer")), OnRet::Keep, false)?;
    }
    b.label("outer");
    b.program(
        parts.outer,
        OnRet::Keep,
        OnRet::Goto(label("tunnel")),
        false,
    )?;

    b.label("tunnel");
    let next = |b: &Builder| match b.here() {
        Target::Index(i) => Target::Index(i + 1),
        t => t,
    };
    match link {
        OuterLink::Ethernet => {
            b.op(LD | H | ABS, 12);
            let n = next(&b);
            b.jump(JEQ, 0x0800, label("v4"), n);
            b.jump(JEQ, 0x86dd, label("v6"), label("drop"));
        }
        _ => {
            b.op(LD | B | ABS, 0);
            b.op(ALU | AND | K, 0xf0);
            let n = next(&b);
            b.jump(JEQ, 0x40, label("v4"), n);
            b.jump(JEQ, 0x60, label("v6"), label("drop"));
        }
    }
    // IPv6: UDP right after the fixed header; X = 40 plays the IPv4 header length's part.
    b.label("v6");
    b.op(LD | B | ABS, l + 6);
    let n = next(&b);
    b.jump(JEQ, 17, n, label("drop"));
    b.op(LDX | IMM, 40);
    b.goto(label("udp"));
    // IPv4: UDP, first fragment or none; X = header length.
    b.label("v4");
    b.op(LD | B | ABS, l + 9);
    let n = next(&b);
    b.jump(JEQ, 17, n, label("drop"));
    b.op(LD | H | ABS, l + 6);
    let n = next(&b);
    b.jump(JSET, 0x1fff, label("drop"), n);
    b.op(LDX | B | MSH, l);
    // UDP at link + X: dispatch on the destination port.
    b.label("udp");
    b.op(LD | H | IND, l + 2);
    for p in ports.all() {
        let to = match ports.encap(p) {
            Some(Encap::Vxlan) => "vxlan",
            Some(Encap::Geneve) => "geneve",
            Some(Encap::IpInUdp) | None => "ip_in_udp",
        };
        let n = next(&b);
        b.jump(JEQ, u32::from(p), label(to), n);
    }
    b.goto(label("drop"));
    // VXLAN: 8-byte header, then Ethernet.
    b.label("vxlan");
    b.op(MISC | TXA, 0);
    b.op(ALU | ADD | K, l + 16);
    b.op(ST, M_BASE);
    b.goto(label("eth"));
    // IP-in-UDP: the payload is the packet, if it looks like IPv4 or IPv6.
    b.label("ip_in_udp");
    b.op(MISC | TXA, 0);
    b.op(ALU | ADD | K, l + 8);
    b.op(ST, M_BASE);
    b.op(MISC | TAX, 0);
    b.op(LD | B | IND, 0);
    b.op(ALU | AND | K, 0xf0);
    let n = next(&b);
    b.jump(JEQ, 0x40, label("to_raw"), n);
    b.jump(JEQ, 0x60, label("to_raw"), label("drop"));
    // Geneve version 0: options length in 4-byte words, then the protocol's payload.
    b.label("geneve");
    b.op(LD | B | IND, l + 8);
    let n = next(&b);
    b.jump(JSET, 0xc0, label("drop"), n);
    b.op(ALU | AND | K, 0x3f);
    b.op(ALU | LSH | K, 2);
    b.op(ALU | ADD | X, 0);
    b.op(ALU | ADD | K, l + 16);
    b.op(ST, M_BASE);
    b.op(LD | H | IND, l + 10);
    let n = next(&b);
    b.jump(JEQ, 0x6558, label("to_eth"), n);
    let n = next(&b);
    b.jump(JEQ, 0x0800, label("to_raw"), n);
    b.jump(JEQ, 0x86dd, label("to_raw"), label("drop"));
    // Stubs: conditional jumps reach 255 instructions, `ja` any distance.
    b.label("to_eth");
    b.goto(label("eth"));
    b.label("to_raw");
    b.goto(label("raw"));
    b.label("drop");
    b.ret(0);
    // The inner programs, each after a check that the packet holds the inner frame's first
    // header (an Ethernet header; an IP version byte), and started as a program is: A = X = 0.
    for (name, program, min) in [("eth", parts.ethernet, 14), ("raw", parts.raw_ip, 1)] {
        b.label(name);
        inner_fits(&mut b, min);
        b.op(LD | IMM, 0);
        b.op(LDX | IMM, 0);
        b.program(program, OnRet::Keep, OnRet::Keep, true)?;
    }
    b.assemble()
}

/// Drops the packet unless `len >= M[BASE] + min` (compared as such: `len - BASE` would wrap).
fn inner_fits(b: &mut Builder, min: u32) {
    b.op(LD | MEM, M_BASE);
    b.op(ALU | ADD | K, min);
    b.op(MISC | TAX, 0);
    b.op(LD | W | LEN, 0);
    let (fits, short) = match b.here() {
        Target::Index(i) => (Target::Index(i + 2), Target::Index(i + 1)),
        t => (t, t),
    };
    b.jump_x(JGE, fits, short);
    b.ret(0);
}
