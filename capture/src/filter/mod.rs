//! Capture filters that see through tunnels.
//!
//! A cluster-wide `dye capture icmp` is asked for the ICMP wherever it travels, including inside
//! VXLAN on the underlay (as Wireshark's `icmp` display filter matches inner packets), while
//! tcpdump's filter only reads the outer headers. With [`Semantics::ThroughTunnels`]:
//!
//! 1. in the kernel, one socket filter ([`kernel`]) runs libpcap's program for FILTER on the
//!    packet and, for UDP to a tunnel port, libpcap's program for FILTER compiled for the inner
//!    frame — Ethernet (VXLAN, Geneve 0x6558) or raw IP (flannel-udp, Geneve carrying IP) —
//!    relocated to read at the inner frame's offset ([`bpf`]). Tunnel traffic that does not
//!    match never reaches a ring. When that program cannot be built (too long, or FILTER uses
//!    scratch memory relocation needs), the kernel passes `(FILTER) or udp dst port (ports)`;
//! 2. in userspace a packet is kept when libpcap's own program for FILTER accepts it, or
//!    accepts the frame it carries (`pcap_offline_filter` on the inner bytes, [`MAX_DEPTH`]
//!    level) — the definition both halves follow, so the semantics are libpcap's exactly.
//!
//! [`Semantics::Outer`] (`--outer`) is tcpdump's: the filter as given, in the kernel only.

pub mod bpf;
mod inner;
mod kernel;
mod ports;

use std::os::fd::{AsRawFd, BorrowedFd};

use pcap::{BpfProgram, Capture, Linktype};

pub use bpf::{BpfError, Insn};
pub use inner::{inner_frame, InnerLink, OuterLink};
pub use ports::{Encap, TunnelPorts};

/// Tunnel levels looked into: one, as the kernel filter does (a tunnel in a tunnel is rare,
/// and the two halves must agree).
pub const MAX_DEPTH: usize = 1;

/// What a filter is matched against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Semantics {
    /// The outermost headers only (tcpdump).
    #[default]
    Outer,
    /// The packet, or the packet inside a tunnel on these ports.
    ThroughTunnels(TunnelPorts),
}

impl Semantics {
    /// The expression the kernel runs (before the direction is added): the user's filter, or
    /// the user's filter plus every tunnel packet.
    pub fn kernel_expression(&self, user: &str) -> String {
        match self {
            Semantics::ThroughTunnels(p) => match p.pcap_expression() {
                Some(tunnels) => format!("({user}) or {tunnels}"),
                None => user.to_string(),
            },
            Semantics::Outer => user.to_string(),
        }
    }
}

/// Why a packet was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// The packet itself matches.
    Outer,
    /// The packet `depth` tunnel levels down matches (1: directly inside the outer packet).
    Inner { depth: usize },
}

/// The user's filter compiled for userspace, on outer frames and on inner ones.
pub struct TunnelMatcher {
    outer_link: Option<OuterLink>,
    outer: BpfProgram,
    /// None when FILTER does not apply to that kind of frame (`ether host …` on raw IP).
    ethernet: Option<BpfProgram>,
    raw_ip: Option<BpfProgram>,
    ports: TunnelPorts,
}

impl std::fmt::Debug for TunnelMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelMatcher")
            .field("outer_link", &self.outer_link)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

/// Compiles `filter` as libpcap does for a capture of link type `dlt` (no live handle: the
/// program must run in userspace, so no kernel-only extensions).
fn compile(filter: &str, dlt: i32) -> Result<BpfProgram, pcap::Error> {
    Capture::dead(Linktype(dlt))?.compile(filter, true)
}

impl TunnelMatcher {
    /// Compiles `filter` for frames of link type `dlt` (the capture handle's) and for the two
    /// kinds of inner frame. A filter that libpcap cannot compile for an inner kind (one on
    /// Ethernet addresses, for raw IP) matches no inner frame of that kind.
    pub fn new(filter: &str, dlt: i32, ports: TunnelPorts) -> Result<TunnelMatcher, pcap::Error> {
        Ok(TunnelMatcher {
            outer_link: u32::try_from(dlt).ok().and_then(OuterLink::from_linktype),
            outer: compile(filter, dlt)?,
            ethernet: compile(filter, InnerLink::Ethernet.dlt()).ok(),
            raw_ip: compile(filter, InnerLink::RawIp.dlt()).ok(),
            ports,
        })
    }

    /// The socket filter doing this match in the kernel (see [`kernel`]), for frames of
    /// `link` with `direction` (libpcap's `inbound`/`outbound` on the live handle) first and
    /// `outer` (FILTER compiled on the live handle) for the packet itself.
    pub fn kernel_program(
        &self,
        direction: Option<&BpfProgram>,
        outer: &BpfProgram,
    ) -> Result<Vec<Insn>, BpfError> {
        let link = self.outer_link.ok_or(BpfError::Unsupported(
            "no tunnel unwrapping on this link type",
        ))?;
        let direction = direction.map(insns).transpose()?;
        let never = || vec![Insn::reject()];
        let outer = insns(outer)?;
        let ethernet = self
            .ethernet
            .as_ref()
            .map(insns)
            .transpose()?
            .unwrap_or_else(never);
        let raw_ip = self
            .raw_ip
            .as_ref()
            .map(insns)
            .transpose()?
            .unwrap_or_else(never);
        kernel::through_tunnels(
            link,
            &self.ports,
            kernel::Parts {
                direction: direction.as_deref(),
                outer: &outer,
                ethernet: &ethernet,
                raw_ip: &raw_ip,
            },
        )
    }

    /// Whether libpcap's userspace interpreter can run FILTER: not when it reads the kernel's
    /// ancillary data (`inbound`, `outbound`, `ifindex`…), which only a socket filter has.
    pub fn runs_in_userspace(&self) -> bool {
        let programs = [
            Some(&self.outer),
            self.ethernet.as_ref(),
            self.raw_ip.as_ref(),
        ];
        programs
            .into_iter()
            .flatten()
            .all(|p| insns(p).is_ok_and(|is| !is.iter().any(|i| i.is_ancillary_load())))
    }

    /// Whether `frame` (or what a tunnel in it carries) matches, and where.
    pub fn matches(&self, frame: &[u8]) -> Option<Match> {
        if self.outer.filter(frame) {
            return Some(Match::Outer);
        }
        let mut link = self.outer_link?;
        let mut bytes = frame;
        for depth in 1..=MAX_DEPTH {
            let (inner_link, inner) = inner_frame(bytes, link, &self.ports)?;
            let prog = match inner_link {
                InnerLink::Ethernet => self.ethernet.as_ref(),
                InnerLink::RawIp => self.raw_ip.as_ref(),
            };
            if prog.is_some_and(|p| p.filter(inner)) {
                return Some(Match::Inner { depth });
            }
            link = inner_link.into();
            bytes = inner;
        }
        None
    }
}

/// Replaces the socket's classic BPF filter (`SO_ATTACH_FILTER`) with `insns`.
#[allow(unsafe_code)]
pub fn attach(fd: BorrowedFd<'_>, insns: &[Insn]) -> std::io::Result<()> {
    let insns: Vec<libc::sock_filter> = insns
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(insns.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fd` is a valid open socket for the call; `prog` points to `len` initialised
    // instructions that outlive the call, and the kernel copies the program before returning
    // (it never writes through the pointer).
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A libpcap program's instructions.
pub fn insns(p: &BpfProgram) -> Result<Vec<Insn>, BpfError> {
    p.get_instructions()
        .iter()
        .map(|i| Insn::parse(&i.to_string()).ok_or(BpfError::Unsupported("unreadable instruction")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dye_decode::build;
    use std::net::{IpAddr, Ipv4Addr};

    fn v4(a: [u8; 4]) -> Ipv4Addr {
        Ipv4Addr::from(a)
    }

    fn ping() -> Vec<u8> {
        let icmp = build::icmp4(8, 0, build::echo_rest(1, 1), &[0u8; 32]);
        build::ipv4(
            &build::V4::new(v4([10, 244, 1, 2]), v4([10, 244, 2, 2])),
            1,
            &icmp,
        )
    }

    fn in_udp(dport: u16, payload: &[u8]) -> Vec<u8> {
        let (s, d) = (v4([192, 168, 50, 11]), v4([192, 168, 50, 12]));
        let udp = build::udp(IpAddr::V4(s), IpAddr::V4(d), 40000, dport, payload);
        build::ethernet(
            [1; 6],
            [3; 6],
            &[],
            0x0800,
            &build::ipv4(&build::V4::new(s, d), 17, &udp),
        )
    }

    #[test]
    fn kernel_expression() {
        let through = Semantics::ThroughTunnels(TunnelPorts::well_known());
        assert_eq!(
            through.kernel_expression("icmp"),
            "(icmp) or udp dst port (4789 or 6081 or 8285 or 8472)"
        );
        assert_eq!(Semantics::Outer.kernel_expression("icmp"), "icmp");
    }

    #[test]
    fn libpcap_semantics_inside_tunnels() {
        let m =
            TunnelMatcher::new("icmp and host 10.244.2.2", 1, TunnelPorts::well_known()).unwrap();
        let eth_ping = build::ethernet([2; 6], [4; 6], &[], 0x0800, &ping());
        assert_eq!(m.matches(&eth_ping), Some(Match::Outer));
        let vx = in_udp(8472, &build::vxlan(1, &eth_ping));
        assert_eq!(m.matches(&vx), Some(Match::Inner { depth: 1 }));
        let fl = in_udp(8285, &ping());
        assert_eq!(m.matches(&fl), Some(Match::Inner { depth: 1 }));
        // VXLAN inside VXLAN: one level is looked into, as the kernel filter does.
        let vxvx = in_udp(4789, &build::vxlan(9, &vx));
        assert_eq!(m.matches(&vxvx), None);
        // The same bytes on a port that is not a tunnel port, and a ping to another host.
        assert_eq!(m.matches(&in_udp(9999, &build::vxlan(1, &eth_ping))), None);
        let other = build::ethernet(
            [2; 6],
            [4; 6],
            &[],
            0x0800,
            &build::ipv4(
                &build::V4::new(v4([10, 244, 1, 2]), v4([10, 244, 1, 3])),
                1,
                &build::icmp4(8, 0, build::echo_rest(1, 1), &[0u8; 8]),
            ),
        );
        assert_eq!(m.matches(&in_udp(8472, &build::vxlan(1, &other))), None);
        // A filter on the outer headers still matches the outer packet.
        let m = TunnelMatcher::new("udp port 8472", 1, TunnelPorts::well_known()).unwrap();
        assert_eq!(m.matches(&vx), Some(Match::Outer));
    }

    #[test]
    fn ancillary_filters_are_left_to_the_kernel() {
        let ports = TunnelPorts::well_known;
        assert!(TunnelMatcher::new("icmp", 1, ports())
            .unwrap()
            .runs_in_userspace());
        // `inbound` reads the packet type, which only a socket filter has: libpcap's
        // userspace interpreter would reject every packet.
        let m = TunnelMatcher::new("icmp and inbound", 1, ports()).unwrap();
        assert!(!m.runs_in_userspace());
    }

    #[test]
    fn raw_ip_points() {
        // flannel0 (DLT_RAW): the program is compiled for raw IP, offsets from the IP header.
        let m = TunnelMatcher::new("icmp[0] = 8", 12, TunnelPorts::well_known()).unwrap();
        assert_eq!(m.matches(&ping()), Some(Match::Outer));
        assert!(TunnelMatcher::new("icmp and", 12, TunnelPorts::default()).is_err());
    }
}
