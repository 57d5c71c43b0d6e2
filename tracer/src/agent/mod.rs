//! `dye agent`: one node's abilities — resolve references, snapshot the topology, capture,
//! inject, conntrack, PMTU, clock — served over gRPC (dye.agent.v1, proto/dye/agent/v1) with
//! mutual TLS, to a coordinator (`dye trace --agents`) that merges several nodes into one trace.

pub mod certs;
pub mod limits;
mod memory;
pub mod node;
pub mod service;
pub mod skew;
pub mod tls;
pub mod watch;

mod listen;

pub use listen::{serve, Security};

/// The port agents listen on by convention (deploy/: the DaemonSet, its Service and probes).
pub const DEFAULT_PORT: u16 = 7443;

/// The generated dye.agent.v1 messages, client and server.
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("dye.agent.v1");
}
