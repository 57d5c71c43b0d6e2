//! What people and tools read: the terminal and Mermaid views of a trace, the vendor pcapng,
//! and the terminal view of an MTU search. JSON is the report itself.

pub mod mtu;
pub mod topology;
pub mod trace;

pub use trace::Style;
