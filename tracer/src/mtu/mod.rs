//! `dye mtu`: path MTU discovery that names the link that limits the path and says why —
//! including links that are not routing hops (a VXLAN underlay, a veth) and paths that send no
//! ICMP at all.
//!
//! It reuses the trace machinery (marked probes, capture at every reachable interface,
//! sightings, reconstruction): `search` picks probe sizes, `run` sends them one at a time and
//! watches each, `outcome` reads what a probe did, `links` asks the topology which link limits
//! and what fits through it, `cache` guards the source's cached path MTU, `analyze` builds the
//! `dye.mtu/v1` report and `render` prints it.

pub mod analyze;
pub mod cache;
pub mod links;
pub mod outcome;
pub mod render;
pub mod report;
pub mod run;
pub mod search;

pub use report::{MtuReport, Status};
pub use run::{mtu, MtuConfig, MtuRun, Progress};
