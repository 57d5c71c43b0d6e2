//! dye's core: everything between "probes out, capture events in" and a typed trace or MTU
//! result — probe building, observation (frames → sightings), reconstruction (sightings →
//! hops, events, verdicts), the MTU search and its analysis — plus record and replay.
//!
//! It does no I/O. The system is reached only through the [`seam::Network`] trait and a
//! [`snapshot::Snapshot`] of the topology taken when the scope was chosen; a live
//! implementation lives in the `dye` binary, and [`recording::Replayer`] plays a recorded
//! journal back, so every verdict here can be tested without privileges.

pub mod clock;
pub mod hop_rules;
pub mod kernel_drop;
pub mod model;
pub mod mtu;
pub mod observe;
pub mod oracle;
pub mod path;
pub mod probe;
pub mod probe_loop;
pub mod reconstruct;
pub mod recording;
pub mod routes;
pub mod seam;
pub mod snapshot;
pub mod trace;

pub use model::{Direction, IcmpKind, LinkClass, Proto};
pub use seam::Network;
pub use snapshot::Snapshot;
