//! One packet socket per namespace: `AF_PACKET`/`SOCK_RAW`, `ETH_P_ALL`, bound to no
//! interface, so it sees every frame on every interface of its namespace — the interface from
//! `sockaddr_ll.sll_ifindex`, the direction from `sll_pkttype` (`PACKET_OUTGOING` is out,
//! everything else in), read from a `TPACKET_V2` ring. One socket and one ring whatever the
//! number of interfaces: a node with hundreds of pod veths costs what a node with four does.
//!
//! The kernel filter dispatches on the device's link type (`SKF_AD_HATYPE`): Ethernet-framed
//! devices (veth, bridge, VXLAN) run the filter compiled for Ethernet, raw-IP devices (TUN,
//! ipip) the same filter compiled for raw IP, anything else (loopback included) is refused in
//! the kernel. The filter is attached before the socket is bound to a protocol, so not one
//! unfiltered frame is queued.
//!
//! Duplicates: a frame crossing a veth pair out of one namespace and into another is seen by
//! two sockets, once out and once in — two sightings, as with per-interface handles. Within a
//! namespace the kernel hands each socket a frame once per device it passes (a bridged frame
//! shows on the ingress port and the egress port), again as per-interface handles do.
//! Not handled: VLAN tags the NIC stripped (no `PACKET_AUXDATA`); the lab has none.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::capture::Direction;
use crate::filter::{self, Insn, Semantics, TunnelMatcher};

const ETH_P_ALL: u16 = 0x0003;
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_RAWIP: u32 = 519;
const ARPHRD_TUNNEL: u32 = 768;
const ARPHRD_TUNNEL6: u32 = 769;
const ARPHRD_IPGRE: u32 = 778;
const ARPHRD_NONE: u32 = 65534;
/// `SKF_AD_OFF + SKF_AD_HATYPE`: the ancillary load of the device's ARPHRD type.
const AD_HATYPE: u32 = (-0x1000i32 + 28) as u32;
/// libpcap's DLT_RAW on Linux (what `pcap_compile` takes for a raw-IP device).
const DLT_RAW: i32 = 12;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const PACKET_OUTGOING: u8 = 4;
const PACKET_LOOPBACK: u8 = 5;

/// The pcapng link type of frames from a device of this ARPHRD type, when the socket keeps
/// them (Ethernet-framed or raw IP).
pub fn linktype_of(hatype: u32) -> Option<u32> {
    match hatype {
        ARPHRD_ETHER => Some(LINKTYPE_ETHERNET),
        ARPHRD_NONE | ARPHRD_RAWIP | ARPHRD_TUNNEL | ARPHRD_TUNNEL6 | ARPHRD_IPGRE => {
            Some(LINKTYPE_RAW)
        }
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NsSocketError {
    #[error("packet socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad capture filter {filter:?}: {message}")]
    Filter { filter: String, message: String },
}

/// A frame read from a namespace socket.
#[derive(Debug, Clone)]
pub struct Received {
    pub ifindex: u32,
    pub direction: Direction,
    pub ts_ns: u64,
    pub orig_len: u32,
    pub len: usize,
}

/// Bytes of one ring slot: a frame beyond this is cut (its original length is kept). Probes
/// are at most a jumbo frame plus tunnel headers.
const SLOT: usize = 16 << 10;
/// Ring blocks hold four slots each.
const BLOCK: usize = 4 * SLOT;

/// One namespace's packet socket, its `TPACKET_V2` receive ring, and what its interfaces map
/// to. The ring (not `recvmsg`) because the kernel stamps a ring frame as it delivers it,
/// where a queued skb forwarded within a namespace carries no time and `SO_TIMESTAMPNS`
/// would stamp it only when read.
#[derive(Debug)]
pub struct NsSocket {
    fd: OwnedFd,
    ring: Ring,
    /// ifindex → capture point index.
    pub points: HashMap<u32, usize>,
    /// Totals of `PACKET_STATISTICS` (which resets on every read).
    pub received: u64,
    pub dropped: u64,
}

/// A namespace socket's kernel program, and whether the match inside tunnels is left to
/// userspace (the through-tunnels program could not be built for a link type).
#[derive(Clone, Debug)]
pub struct NsProgram {
    pub insns: Vec<Insn>,
    pub inner_in_userspace: bool,
}

/// The classic BPF program a namespace socket runs: dispatch on the device's link type to the
/// filter compiled for Ethernet or for raw IP; other devices' frames are refused. With
/// [`Semantics::ThroughTunnels`] each branch is the through-tunnels program ([`crate::filter`]);
/// the direction comes from `sockaddr_ll`, so no direction qualifier is joined.
pub fn program(
    filter: Option<&str>,
    snaplen: u32,
    semantics: &Semantics,
) -> Result<NsProgram, String> {
    let accept = vec![insn(0x06, 0, 0, snaplen)]; // ret #snaplen
    let mut inner_in_userspace = false;
    let mut compile = |dlt: i32| -> Result<Vec<Insn>, String> {
        let Some(f) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
            return Ok(accept.clone());
        };
        let dead = pcap::Capture::dead(pcap::Linktype(dlt)).map_err(|e| e.to_string())?;
        let plain = |expr: &str| -> Result<Vec<Insn>, String> {
            let prog = dead.compile(expr, true).map_err(|e| e.to_string())?;
            filter::insns(&prog).map_err(|e| e.to_string())
        };
        let Semantics::ThroughTunnels(ports) = semantics else {
            return plain(f);
        };
        let outer = dead.compile(f, true).map_err(|e| e.to_string())?;
        let through = TunnelMatcher::new(f, dlt, ports.clone())
            .map_err(|e| e.to_string())
            .and_then(|m| m.kernel_program(None, &outer).map_err(|e| e.to_string()));
        match through {
            Ok(insns) => Ok(insns),
            Err(e) => {
                tracing::debug!("namespace sockets: tunnel packets filtered in userspace: {e}");
                inner_in_userspace = true;
                plain(&semantics.kernel_expression(f))
            }
        }
    };
    let eth = compile(1)?;
    let raw = compile(DLT_RAW)?;
    // 0: ld hatype; then for each raw-IP type a jeq to the raw program; ret 0 for the rest.
    let raw_types = [
        ARPHRD_NONE,
        ARPHRD_RAWIP,
        ARPHRD_TUNNEL,
        ARPHRD_TUNNEL6,
        ARPHRD_IPGRE,
    ];
    let head_len = 1 + 2 + 2 * raw_types.len() + 1;
    let eth_at = head_len;
    let raw_at = eth_at + eth.len();
    let mut p = vec![insn(0x20, 0, 0, AD_HATYPE)]; // ld [hatype]
    let ja = |from: usize, to: usize| insn(0x05, 0, 0, (to - from - 1) as u32);
    p.push(insn(0x15, 0, 1, ARPHRD_ETHER)); // jeq #ETHER, next, skip the ja
    p.push(ja(p.len(), eth_at));
    for t in raw_types {
        p.push(insn(0x15, 0, 1, t));
        p.push(ja(p.len(), raw_at));
    }
    p.push(insn(0x06, 0, 0, 0)); // ret #0
    p.extend(eth);
    p.extend(raw);
    Ok(NsProgram {
        insns: p,
        inner_in_userspace,
    })
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

fn check(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl NsSocket {
    /// Opens the socket in the calling thread's namespace (call it inside [`crate::Netns::run`]),
    /// attaches `prog`, maps a ring of about `ring_bytes`, then binds it to every protocol on
    /// every interface.
    #[allow(unsafe_code)]
    pub fn open(prog: &[Insn], ring_bytes: i32) -> Result<NsSocket, NsSocketError> {
        // SAFETY: plain socket(2); protocol 0 so nothing is queued before the filter is on.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` was just returned by socket(2) and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        filter::attach(fd.as_fd(), prog)?;
        let ring = Ring::map(fd.as_fd(), ring_bytes)?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value before the fields set.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = 0; // every interface of the namespace
                             // SAFETY: valid fd; `sll` is a live sockaddr_ll of the size given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(NsSocket {
            fd,
            ring,
            points: HashMap::new(),
            received: 0,
            dropped: 0,
        })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The ARPHRD type of interface `ifname` (SIOCGIFHWADDR), asked through this socket.
    #[allow(unsafe_code)]
    pub fn hatype(&self, ifname: &str) -> std::io::Result<u32> {
        // SAFETY: ifreq is plain data; all-zero is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        let name = ifname.as_bytes();
        if name.len() >= req.ifr_name.len() {
            return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        for (d, s) in req.ifr_name.iter_mut().zip(name) {
            *d = *s as libc::c_char;
        }
        // SAFETY: valid fd; `req` is a live ifreq with a NUL-terminated name; the kernel writes
        // only into it.
        check(unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) })?;
        // SAFETY: SIOCGIFHWADDR filled ifru_hwaddr.
        Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family } as u32)
    }

    /// Copies the next frame of the ring into `buf`; None when the ring holds nothing.
    /// Frames looped back to the host (`PACKET_LOOPBACK`: its own multicast) are skipped.
    pub fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<Received>> {
        while let Some(slot) = self.ring.next() {
            let got = slot.read(buf);
            slot.release();
            if let Some(got) = got {
                return Ok(Some(got));
            }
        }
        Ok(None)
    }

    /// Adds what `PACKET_STATISTICS` counted since the last read to the totals.
    #[allow(unsafe_code)]
    pub fn read_stats(&mut self) {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: valid fd; `st` is a live tpacket_stats and `len` its size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                &mut st as *mut libc::tpacket_stats as *mut libc::c_void,
                &mut len,
            )
        };
        if r == 0 {
            self.received += st.tp_packets as u64;
            self.dropped += st.tp_drops as u64;
        }
    }
}

/// A `PACKET_RX_RING` of `TPACKET_V2` slots mapped into this process; unmapped on drop.
#[derive(Debug)]
struct Ring {
    base: *mut u8,
    len: usize,
    slots: usize,
    next: usize,
}

// SAFETY: the mapping belongs to this Ring alone; it is only touched through `&mut self`.
#[allow(unsafe_code)]
unsafe impl Send for Ring {}

impl Ring {
    /// Asks for a ring of about `bytes` (at least one block) and maps it.
    #[allow(unsafe_code)]
    fn map(fd: BorrowedFd<'_>, bytes: i32) -> std::io::Result<Ring> {
        let version = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        // SAFETY: valid fd; the option value is a live c_int of the size given.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_VERSION,
                &version as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        let blocks = (bytes.max(0) as usize / BLOCK).max(1);
        let req = libc::tpacket_req {
            tp_block_size: BLOCK as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: SLOT as u32,
            tp_frame_nr: (blocks * BLOCK / SLOT) as u32,
        };
        // SAFETY: valid fd; `req` is a live tpacket_req of the size given.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                &req as *const libc::tpacket_req as *const libc::c_void,
                std::mem::size_of::<libc::tpacket_req>() as libc::socklen_t,
            )
        })?;
        let len = blocks * BLOCK;
        // SAFETY: maps the ring the kernel just allocated for this socket, shared, at an
        // address of the kernel's choosing; checked against MAP_FAILED below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Ring {
            base: base as *mut u8,
            len,
            slots: len / SLOT,
            next: 0,
        })
    }

    /// The next slot if the kernel handed it to user space.
    #[allow(unsafe_code)]
    fn next(&mut self) -> Option<Slot<'_>> {
        // SAFETY: `next < slots`, so the slot lies inside the mapping; slots are SLOT-aligned
        // (SLOT is a multiple of 16), so the header is aligned for its u32 fields.
        let hdr = unsafe { self.base.add(self.next * SLOT) } as *mut libc::tpacket2_hdr;
        // SAFETY: `hdr` points into the live mapping; tp_status is the word the kernel and we
        // hand the slot over with, read atomically with acquire ordering.
        let status = unsafe {
            (*(std::ptr::addr_of_mut!((*hdr).tp_status) as *const std::sync::atomic::AtomicU32))
                .load(std::sync::atomic::Ordering::Acquire)
        };
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        self.next = (self.next + 1) % self.slots;
        Some(Slot {
            hdr,
            _ring: std::marker::PhantomData,
        })
    }
}

impl Drop for Ring {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` created; nothing points into it any more
        // (slots borrow the ring mutably).
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

/// A ring slot owned by user space until [`Slot::release`].
struct Slot<'r> {
    hdr: *mut libc::tpacket2_hdr,
    _ring: std::marker::PhantomData<&'r mut Ring>,
}

impl Slot<'_> {
    /// The frame (copied into `buf`) and where it was seen; None for a looped-back frame.
    #[allow(unsafe_code)]
    fn read(&self, buf: &mut [u8]) -> Option<Received> {
        // SAFETY: the kernel set TP_STATUS_USER, so it has finished writing this slot and will
        // not touch it until released; the header is aligned and inside the mapping.
        let h = unsafe { std::ptr::read(self.hdr) };
        let sll_at = (std::mem::size_of::<libc::tpacket2_hdr>() + 15) & !15;
        // SAFETY: the sockaddr_ll follows the aligned header inside the slot (the kernel's
        // layout for TPACKET_V2); read unaligned to make no assumption about it.
        let sll: libc::sockaddr_ll = unsafe {
            std::ptr::read_unaligned((self.hdr as *const u8).add(sll_at) as *const libc::sockaddr_ll)
        };
        if sll.sll_pkttype == PACKET_LOOPBACK {
            return None;
        }
        let mac = h.tp_mac as usize;
        let snap = (h.tp_snaplen as usize)
            .min(SLOT.saturating_sub(mac))
            .min(buf.len());
        // SAFETY: `mac + snap <= SLOT`, so the copy reads inside this slot of the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping((self.hdr as *const u8).add(mac), buf.as_mut_ptr(), snap);
        }
        Some(Received {
            ifindex: sll.sll_ifindex as u32,
            direction: if sll.sll_pkttype == PACKET_OUTGOING {
                Direction::Out
            } else {
                Direction::In
            },
            ts_ns: h.tp_sec as u64 * 1_000_000_000 + h.tp_nsec as u64,
            orig_len: h.tp_len,
            len: snap,
        })
    }

    /// Hands the slot back to the kernel.
    #[allow(unsafe_code)]
    fn release(self) {
        // SAFETY: as in `Ring::next`: the status word inside the live mapping, written with
        // release ordering after we are done reading the slot.
        unsafe {
            (*(std::ptr::addr_of_mut!((*self.hdr).tp_status)
                as *const std::sync::atomic::AtomicU32))
                .store(libc::TP_STATUS_KERNEL, std::sync::atomic::Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_dispatches_on_the_link_type() {
        let p = program(Some("icmp"), 65535, &Semantics::Outer).unwrap();
        assert!(!p.inner_in_userspace);
        let p = p.insns;
        assert_eq!((p[0].code, p[0].k), (0x20, AD_HATYPE));
        assert_eq!((p[1].code, p[1].k), (0x15, ARPHRD_ETHER));
        // The ja after the Ethernet test lands on the first instruction after `ret #0`.
        let ret0 = p.iter().position(|i| i.code == 0x06 && i.k == 0).unwrap();
        assert_eq!(2 + 1 + p[2].k as usize, ret0 + 1);
        // Every raw-IP ja lands on the same place: the raw program, after the Ethernet one.
        let targets: Vec<usize> = (3..ret0)
            .step_by(2)
            .map(|j| j + 1 + 1 + p[j + 1].k as usize)
            .collect();
        assert!(targets.windows(2).all(|w| w[0] == w[1]), "{targets:?}");
        assert!(targets[0] > ret0 + 1);
        assert!(program(Some("not a filter ("), 10, &Semantics::Outer).is_err());
        let accept_all = program(None, 9, &Semantics::Outer).unwrap();
        assert_eq!(accept_all.insns.last().map(|i| i.k), Some(9));
    }

    #[test]
    fn through_tunnels_the_kernel_looks_inside_on_both_link_types() {
        let ports = crate::filter::TunnelPorts::well_known();
        let outer = program(Some("icmp"), 65535, &Semantics::Outer).unwrap();
        let through = program(Some("icmp"), 65535, &Semantics::ThroughTunnels(ports)).unwrap();
        // Built in the kernel (no userspace fallback), and longer: the inner-frame branches.
        assert!(!through.inner_in_userspace);
        assert!(through.insns.len() > outer.insns.len() + 10);
        assert_eq!(through.insns[0], outer.insns[0]);
    }

    #[test]
    fn link_types_follow_the_device() {
        assert_eq!(linktype_of(ARPHRD_ETHER), Some(LINKTYPE_ETHERNET));
        assert_eq!(linktype_of(ARPHRD_NONE), Some(LINKTYPE_RAW));
        assert_eq!(linktype_of(772), None); // loopback
    }
}
