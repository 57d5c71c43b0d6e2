//! `dye mtu`'s logic: `search` picks probe sizes, `outcome` reads what a probe did, `links`
//! asks the snapshot which link limits and what fits through it, `underlay` walks a tunnel's
//! outer packets past the node, `userspace` reads a TUN forwarder's encapsulation off the wire, `analyze` builds the `dye.mtu/v1` report, `run` drives the probes through the seam one at a time.

pub mod analyze;
pub mod links;
pub mod outcome;
pub mod result;
pub mod run;
pub mod search;
pub mod underlay;
pub mod userspace;

pub use result::{MtuResult, Status};
pub use run::{run_mtu, MtuPlan, MtuRun, Progress};
