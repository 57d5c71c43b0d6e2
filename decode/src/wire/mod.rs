//! Zero-copy views of the small headers etherparse does not have, in the smoltcp `wire` style.
//!
//! Every view is created with `new_checked`, which runs `check_len`; after that no accessor can
//! panic. Accessors read through [`rd16`]/[`rd32`], which return 0 instead of panicking on a short
//! buffer, so even a logic slip cannot turn into a panic on hostile input. Each header also has a
//! `Repr` with `parse` and `emit` (used by the sample builders and by tests).

pub mod geneve;
pub mod gre;
pub mod sll2;
pub mod vxlan;

pub use geneve::{GeneveOption, GenevePacket, GeneveRepr};
pub use gre::{GrePacket, GreRepr};
pub use sll2::Sll2Packet;
pub use vxlan::{VxlanPacket, VxlanRepr};

/// A header did not fit in the bytes that were there, or a field made it impossible to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header claims.
    #[error("{header} truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Which header.
        header: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A field holds a value this version of the header does not allow.
    #[error("{header}: {what}")]
    Malformed {
        /// Which header.
        header: &'static str,
        /// What is wrong.
        what: &'static str,
    },
}

#[inline]
pub(crate) fn rd8(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

#[inline]
pub(crate) fn rd16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at.wrapping_add(2)) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn rd32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at.wrapping_add(4)) {
        Some(&[a, c, d, e]) => u32::from_be_bytes([a, c, d, e]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn need(header: &'static str, b: &[u8], len: usize) -> Result<(), WireError> {
    if b.len() < len {
        Err(WireError::Truncated {
            header,
            need: len,
            have: b.len(),
        })
    } else {
        Ok(())
    }
}

/// Writes `bytes` at the start of `out`, or fails if `out` is too short.
pub(crate) fn put(header: &'static str, out: &mut [u8], bytes: &[u8]) -> Result<(), WireError> {
    let have = out.len();
    match out.get_mut(..bytes.len()) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            Ok(())
        }
        None => Err(WireError::Truncated {
            header,
            need: bytes.len(),
            have,
        }),
    }
}
