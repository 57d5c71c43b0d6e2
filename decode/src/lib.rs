//! Pure packet dissection for dye: no I/O, no privileges, never panics on input.
//!
//! * [`dissect`] / [`dissect_into`] turn one captured frame into a [`Dissection`]: link layer
//!   (Ethernet + 802.1Q/QinQ, Linux SLL/SLL2, raw IP, BSD null), every encapsulation layer as an
//!   [`Outer`] (VXLAN, Geneve with options, GRE with key/seq and gretap, IPIP, SIT/6in4,
//!   IPv6-in-IPv6, IPv4-in-IPv6 — any depth up to [`Options::max_layers`]), the innermost
//!   [`Ip`] with every field, the [`L4`] (UDP, TCP, ICMP/ICMPv6 with errors' quotes dissected as
//!   far as they go and the MTU they carry), ARP, and the dye [`Marker`] if present.
//! * [`Dissection::flows`] gives one [`Flow`] (5-tuple) per IP layer for cheap NAT diffing.
//! * [`Reassembler`] reassembles IPv4/IPv6 fragments, outer or inner, keyed per capture point,
//!   with hard memory/age bounds.
//! * [`marker`] is the versioned probe-marker codec and [`filter_expression`] the libpcap filter
//!   that matches probes at any encapsulation depth.
//! * [`wire`] holds the smoltcp-style views for the headers etherparse lacks.
//! * [`fmt::Line`] renders a dissection on one tcpdump-like line.

pub mod build;
#[cfg(feature = "capfile")]
pub mod capfile;
pub mod dissect;
pub mod fmt;
pub mod marker;
pub mod model;
pub mod reassembly;
pub mod wire;

pub use dissect::{dissect, dissect_into, dissect_quote, Options};
pub use marker::{
    filter_expression, filter_expression_ports, filter_expression_with, Marker, MarkerError,
};
pub use model::*;
pub use reassembly::{Reassembled, Reassembler, ReassemblyLimits, ReassemblyStats};
