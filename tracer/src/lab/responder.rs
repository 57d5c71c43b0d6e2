//! The small listener every lab pod runs: TCP and UDP on fixed ports, answering with the pod's
//! name so a client can tell which endpoint a Service picked. TCP connections get the name line
//! and then an echo of what they send; a datagram gets the name line followed by the datagram
//! itself (so a dye probe's marker comes back at the end of the reply, as with ping). Bounded:
//! a capped number of concurrent connections, read timeouts, one reply per datagram.
//! Dual-stack: each socket is bound to `[::]` with IPV6_V6ONLY off, so one socket answers IPv4
//! (as v4-mapped peers) and IPv6 alike; without IPv6 in the kernel it falls back to 0.0.0.0.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MAX_CONNECTIONS: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds both sockets, writes `ready` (so the lab knows it is listening) and serves forever.
pub fn serve(
    name: &str,
    tcp_port: u16,
    udp_port: u16,
    ready: Option<&Path>,
) -> std::io::Result<()> {
    let tcp: TcpListener = bind(socket2::Type::STREAM, tcp_port)?.into();
    let udp: UdpSocket = bind(socket2::Type::DGRAM, udp_port)?.into();
    if let Some(path) = ready {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
    }
    let reply = format!("{name}\n");
    let udp_reply = reply.clone();
    std::thread::spawn(move || serve_udp(udp, udp_reply.as_bytes()));
    let active = Arc::new(AtomicUsize::new(0));
    for stream in tcp.incoming() {
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            continue; // dropped: the client sees a reset, the responder stays bounded
        }
        active.fetch_add(1, Ordering::Relaxed);
        let active = Arc::clone(&active);
        let reply = reply.clone();
        std::thread::spawn(move || {
            let _ = echo(stream, reply.as_bytes());
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    Ok(())
}

/// A socket on `[::]:port` that also takes IPv4, or on `0.0.0.0:port` when IPv6 is missing.
fn bind(ty: socket2::Type, port: u16) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket};
    let dual = Socket::new(Domain::IPV6, ty, None).and_then(|s| {
        s.set_only_v6(false)?;
        Ok(s)
    });
    let (sock, addr) = match dual {
        Ok(s) => (s, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))),
        Err(_) => (
            Socket::new(Domain::IPV4, ty, None)?,
            SocketAddr::from(([0, 0, 0, 0], port)),
        ),
    };
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    if ty == socket2::Type::STREAM {
        sock.listen(128)?;
    }
    Ok(sock)
}

fn echo(mut stream: TcpStream, greeting: &[u8]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.write_all(greeting)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn serve_udp(sock: UdpSocket, name_line: &[u8]) {
    let mut buf = [0u8; 2048];
    let mut reply = Vec::with_capacity(name_line.len() + buf.len());
    loop {
        if let Ok((n, peer)) = sock.recv_from(&mut buf) {
            reply.clear();
            reply.extend_from_slice(name_line);
            reply.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&reply, peer);
        }
    }
}
