//! Sending probes from inside the source namespace: a raw socket opened on a thread that entered
//! the namespace (the socket stays bound to it), header-included so dye controls every field
//! (DF, IP id, TTL) and the probe leaves exactly as built. Sends are paced and bounded.

use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::Netns;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot enter the source namespace: {0}")]
    Netns(#[from] crate::NetnsError),
    #[error("cannot open a raw socket in {netns} (needs CAP_NET_RAW): {source}")]
    Socket {
        netns: String,
        source: std::io::Error,
    },
    #[error("sending probe {seq} from {netns} failed: {source}")]
    Send {
        netns: String,
        seq: u32,
        source: std::io::Error,
    },
}

/// A raw socket in the source namespace.
#[derive(Debug)]
pub struct Injector {
    socket: Socket,
    netns: String,
}

impl Injector {
    /// Opens the socket inside `netns` for destinations of `dst`'s family.
    pub fn open(netns: &Netns, dst: IpAddr) -> Result<Injector, InjectError> {
        let domain = if dst.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        // IPPROTO_RAW implies header-included sends (IPv4 always; IPv6 since Linux 4.5).
        let socket = netns
            .run(move || Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))))?
            .map_err(|source| InjectError::Socket {
                netns: netns.name().to_string(),
                source,
            })?;
        // Send at the device MTU whatever path MTU the source has cached: a Fragmentation
        // Needed / Packet Too Big already seen (by dye or any other sender) would otherwise make
        // the kernel refuse every bigger probe with EMSGSIZE before it leaves, hiding the link
        // that limits the path. (IPv4 probes still carry the DF bit dye wrote in their header.)
        set_pmtudisc_probe(&socket, dst.is_ipv4()).map_err(|source| InjectError::Socket {
            netns: netns.name().to_string(),
            source,
        })?;
        Ok(Injector {
            socket,
            netns: netns.name().to_string(),
        })
    }

    /// Sends one whole IP packet (probe `seq`) to `dst`; returns the time it left (ns since
    /// the epoch, the clock capture timestamps use).
    pub fn send(&self, packet: &[u8], seq: u32, dst: IpAddr) -> Result<u64, InjectError> {
        let addr = SockAddr::from(SocketAddr::new(dst, 0));
        let t = now_ns();
        self.socket
            .send_to(packet, &addr)
            .map_err(|source| InjectError::Send {
                netns: self.netns.clone(),
                seq,
                source,
            })?;
        Ok(t)
    }
}

/// IP(V6)_MTU_DISCOVER = IP(V6)_PMTUDISC_PROBE: ignore the cached path MTU (what tracepath
/// does).
#[allow(unsafe_code)]
fn set_pmtudisc_probe(socket: &Socket, v4: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name, value): (libc::c_int, libc::c_int, libc::c_int) = if v4 {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )
    };
    // SAFETY: `socket` is a valid open socket for the call; the option value is a c_int that
    // outlives the call and its exact size is passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Wall clock in nanoseconds since the Unix epoch: the clock capture timestamps use.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
