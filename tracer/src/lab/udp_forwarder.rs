//! flannel's historical `udp` backend, the userspace half: the process that owns a node's
//! `flannel0` TUN device (IFF_TUN | IFF_NO_PI: raw IP, no packet-info header) and carries what
//! the kernel routes into it to the right node in UDP, and back.
//!
//! - TUN → UDP: an inner IPv4 packet read from the device goes to the underlay address of the
//!   node whose pod subnet holds its destination, UDP `port` → `port`, payload = the packet.
//! - UDP → TUN: a datagram from a known node's address is written to the device as is.
//!
//! Well-behaved lab process: it relays, never originates; each wake-up reads a bounded number
//! of packets per socket; it exits on SIGTERM/SIGINT and by itself once the lab's state
//! directory (`--watch`) is gone. The device is created non-persistent, so the kernel removes
//! `flannel0` (and its routes) the moment this process ends, however it ends.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ipnet::Ipv4Net;
use nix::poll::{poll, PollFd, PollFlags};

/// Packets read from one socket per wake-up before the other gets its turn.
const BATCH: usize = 64;
/// How often the stop conditions are checked while idle.
const TICK_MS: u16 = 250;

/// What one node's forwarder needs to know.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// The TUN device to create (`flannel0`).
    pub tun: String,
    /// The node's underlay address, bound for UDP.
    pub local: Ipv4Addr,
    /// UDP port on every node (flannel's default 8285).
    pub port: u16,
    /// Every other node: its pod subnet and its underlay address.
    pub peers: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Written once the device exists and the socket is bound.
    pub ready: Option<PathBuf>,
    /// Exit when this path disappears (the lab's state directory).
    pub watch: Option<PathBuf>,
}

/// Parses `SUBNET=ADDRESS` (a peer on the command line).
pub fn parse_peer(s: &str) -> Result<(Ipv4Net, Ipv4Addr), String> {
    let (net, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("peer {s:?}: expected SUBNET=ADDRESS"))?;
    let net: Ipv4Net = net
        .parse()
        .map_err(|e| format!("peer {s:?}: subnet: {e}"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|e| format!("peer {s:?}: address: {e}"))?;
    Ok((net, addr))
}

/// Creates a non-persistent TUN device named `name` (raw IP, no packet information).
#[allow(unsafe_code)]
fn open_tun(name: &str) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1-15 bytes"),
        ));
    }
    // SAFETY: ifreq is plain old data (a name array and a union of integers, sockaddrs and a
    // pointer that TUNSETIFF does not use); all-zero is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: `file` is an open /dev/net/tun descriptor and `req` a valid, NUL-terminated
    // ifreq that lives across the call; TUNSETIFF reads it and writes the chosen name back.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// The node (underlay address) whose pod subnet holds `dst`, if any.
fn peer_for(peers: &[(Ipv4Net, Ipv4Addr)], dst: Ipv4Addr) -> Option<Ipv4Addr> {
    peers
        .iter()
        .find(|(net, _)| net.contains(&dst))
        .map(|(_, addr)| *addr)
}

/// The IPv4 destination of a raw IP packet, if it is one.
fn ipv4_dst(packet: &[u8]) -> Option<Ipv4Addr> {
    match packet.get(..20) {
        Some(h) if h[0] >> 4 == 4 => Some(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Counters {
    to_udp: u64,
    to_tun: u64,
    no_peer: u64,
    unknown_sender: u64,
}

/// Runs the forwarder until a stop condition; see the module documentation.
pub fn run(cfg: &ForwarderConfig) -> std::io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let mut tun = open_tun(&cfg.tun)?;
    let udp = UdpSocket::bind(SocketAddrV4::new(cfg.local, cfg.port))?;
    udp.set_nonblocking(true)?;
    if let Some(path) = &cfg.ready {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
    }
    tracing::info!(
        "forwarding {} <-> udp {}:{} for {} peer(s)",
        cfg.tun,
        cfg.local,
        cfg.port,
        cfg.peers.len()
    );
    let mut buf = vec![0u8; 65_536];
    let mut n = Counters::default();
    while !stop.load(Ordering::Relaxed) && cfg.watch.as_ref().is_none_or(|w| w.exists()) {
        let (tun_ready, udp_ready) = {
            let mut fds = [
                PollFd::new(tun.as_fd(), PollFlags::POLLIN),
                PollFd::new(udp.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, TICK_MS) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            (ready(&fds[0]), ready(&fds[1]))
        };
        if tun_ready {
            // A TUN read returns one packet and blocks when there is none: read only what
            // poll announced, one packet, then poll again.
            let len = match tun.read(&mut buf) {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let packet = &buf[..len];
            match ipv4_dst(packet).and_then(|d| peer_for(&cfg.peers, d)) {
                Some(node) => {
                    let to = SocketAddr::new(IpAddr::V4(node), cfg.port);
                    if let Err(e) = udp.send_to(packet, to) {
                        tracing::debug!("send to {to}: {e}");
                    } else {
                        n.to_udp += 1;
                    }
                }
                None => n.no_peer += 1,
            }
        }
        if udp_ready {
            for _ in 0..BATCH {
                let (len, from) = match udp.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // A socket error (a queued ICMP error, say) ends this batch, not the
                        // forwarder.
                        tracing::debug!("receive: {e}");
                        break;
                    }
                };
                let known =
                    matches!(from.ip(), IpAddr::V4(a) if cfg.peers.iter().any(|(_, p)| *p == a));
                if !known {
                    n.unknown_sender += 1;
                    continue;
                }
                if let Err(e) = tun.write_all(&buf[..len]) {
                    tracing::debug!("write to {}: {e}", cfg.tun);
                } else {
                    n.to_tun += 1;
                }
            }
        }
    }
    tracing::info!("stopping: {n:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_and_destinations() {
        let peers = vec![
            parse_peer("10.244.2.0/24=192.168.50.12").unwrap(),
            parse_peer("10.244.3.0/24=192.168.50.13").unwrap(),
        ];
        assert_eq!(
            peer_for(&peers, Ipv4Addr::new(10, 244, 3, 7)),
            Some(Ipv4Addr::new(192, 168, 50, 13))
        );
        assert_eq!(peer_for(&peers, Ipv4Addr::new(10, 244, 1, 2)), None);
        assert!(parse_peer("10.244.2.0/24").is_err());
        assert!(parse_peer("10.244.2.0/24=node-2").is_err());
        let mut p = vec![0x45u8; 20];
        p[16..20].copy_from_slice(&[10, 244, 2, 2]);
        assert_eq!(ipv4_dst(&p), Some(Ipv4Addr::new(10, 244, 2, 2)));
        p[0] = 0x60;
        assert_eq!(ipv4_dst(&p), None);
        assert_eq!(ipv4_dst(&[0x45; 10]), None);
    }
}
