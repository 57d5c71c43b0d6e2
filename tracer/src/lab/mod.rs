//! The emulated cluster.
