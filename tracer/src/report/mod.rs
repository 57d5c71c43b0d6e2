//! Reports: the versioned JSON shapes scripts depend on, projected from the core's typed
//! results, with every sentence a person reads. Renderers print them.

pub mod agents;
pub mod mtu;
pub mod mtu_v1;
pub mod trace;
pub mod trace_v1;

pub use trace::project;
pub use trace_v1::TraceReport;
