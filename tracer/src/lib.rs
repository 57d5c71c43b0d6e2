//! dye: packet-level path tracer for container networks.
//!
//! The library holds everything behind the `dye` binary so it can be tested without a terminal:
//! the command line (`cli`), the reports projected from the core's typed results (`report`),
//! the renderers (`render`), the live side of the core's seam
//! (`live`: namespaces, capture, injection, netlink questions) and the emulated cluster (`lab`).
//! The logic — probes, observation, reconstruction, verdicts, MTU search — is in `dye-core`,
//! which never imports any of these.

pub mod agent;
pub mod cli;
pub mod coordinator;
pub mod cri;
pub mod image;
pub mod lab;
pub mod live;
pub mod render;
pub mod report;
