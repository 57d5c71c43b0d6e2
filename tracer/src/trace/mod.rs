//! `dye trace`: inject marked probes from a source namespace, capture them on every interface
//! they can cross, and reconstruct each hop — NAT, encapsulation, fragmentation, TTL, time —
//! and where they vanished.
//!
//! The pieces, in the order data flows: `probe` builds the packets, `scope` chooses where to
//! listen, `inject` sends, `observe` turns frames into sightings, `reconstruct` turns sightings
//! into hops and a verdict, `conntrack` confirms NAT, `report` is the schema-v1 result, and
//! `render` prints it (text, Mermaid) or writes the vendor pcapng.

pub mod conntrack;
pub mod inject;
pub mod observe;
pub mod probe;
pub mod reconstruct;
pub mod render;
pub mod report;
pub mod run;
pub mod scope;

pub use probe::{smallest_probe, Proto};
pub use report::{TraceReport, VerdictKind};
pub use run::{trace, TraceConfig, TraceError, TraceRun};
pub use scope::ScopeRequest;
