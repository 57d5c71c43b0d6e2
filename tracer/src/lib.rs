//! dye: packet-level path tracer for container networks.
//!
//! The library holds everything behind the `dye` binary so it can be tested without a terminal:
//! the command line (`cli`), and the emulated cluster (`lab`).

pub mod cli;
pub mod lab;
pub mod mtu;
pub mod trace;
