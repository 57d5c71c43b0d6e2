//! dye's eyes: network namespaces, topology discovery over netlink, multi-namespace live capture
//! with kernel BPF filters, and a pcapng writer fit to hand to a vendor.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`netns`]: refer to a namespace by name, path, PID or `host`; keep its fd open; identify it
//!   by (dev, ino); run code *inside* it on a dedicated OS thread ([`Netns::run`]) so sockets can
//!   be opened there and used anywhere.
//! - [`netlink`]: a small synchronous rtnetlink client whose socket is created inside a
//!   namespace: links, addresses, routes, `ip route get`, nsid lookups, cached path-MTU
//!   exceptions and removing one of them.
//! - [`conntrack`]: conntrack entries of a namespace read over ctnetlink (`NETLINK_NETFILTER`)
//!   in process: lookup by original tuple, dumps, NAT status.
//! - [`nat`]: the addresses a namespace's nat rules DNAT to (nftables and iptables-nft), so a
//!   trace's scope can follow a probe that NAT sends elsewhere.
//! - [`nftrace`]: nftables tracing of the probes: an owner table (gone when dye's socket
//!   closes, even on SIGKILL) marks them with `meta nftrace set 1`; `NFT_MSG_TRACE` events
//!   name every table, chain, rule handle and verdict they meet.
//! - [`dropwatch`]: the kernel's own drop reason for a probe: an eBPF program on
//!   `skb:kfree_skb` (owned by dye's fds) that filters on the trace's marker in the kernel.
//! - [`topology`]: discovery of many namespaces joined into one graph (veth pairs across
//!   namespaces, bridge ports, tunnel → underlay device), with text / JSON / Mermaid renderers.
//! - [`capture`]: live capture on many (namespace, interface) points at once, each with two
//!   kernel-filtered libpcap handles (inbound / outbound) so every frame has a reliable
//!   direction; one merged, time-ordered stream of [`Observation`]s; kernel drop counters.
//! - [`filter`]: filters that see through tunnels — the kernel passes the user's filter or any
//!   tunnel packet, and libpcap's program for the filter decides on the inner frame.
//! - [`nssock`]: the other socket model — one packet socket per namespace, not bound to an
//!   interface (interface and direction from `sockaddr_ll`), dispatching its kernel filter on
//!   the device's link type; cost follows the namespaces, not their interfaces.
//! - [`inject`]: a header-included raw socket opened inside the source namespace, so probes
//!   leave exactly as built.
//! - [`pcapng`]: one interface block per capture point (`<netns>/<ifname>`), nanosecond
//!   resolution, direction flags, per-packet comments, interface statistics.
//! - [`random`]: OS randomness that returns an error rather than falling back to the clock.

pub mod capture;
pub mod conntrack;
pub mod dropwatch;
pub mod filter;
pub mod inject;
pub mod nat;
pub mod netlink;
pub mod netns;
pub mod nftrace;
pub mod nssock;
pub mod pcapng;
pub mod random;
pub mod select;
pub mod topology;

pub use capture::{
    CaptureConfig, CaptureError, CapturePoint, CaptureSession, Direction, Event, Observation,
    PointStats, SocketModel, StopHandle,
};
pub use inject::{InjectError, Injector};
pub use netns::{Netns, NetnsError, NetnsId, NetnsRef, PodRef};
pub use pcapng::{InterfaceInfo, PcapngWriter, SectionInfo};
pub use topology::{Topology, TopologyError};
