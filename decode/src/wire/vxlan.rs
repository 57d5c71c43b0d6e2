//! VXLAN (RFC 7348): 8 bytes — flags (I bit 0x08), 24 reserved bits, VNI (24 bits), 8 reserved.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```

use super::{need, put, rd32, rd8, WireError};

/// A checked view of a VXLAN header followed by its payload (an Ethernet frame).
#[derive(Debug, Clone, Copy)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Header length.
    pub const HEADER_LEN: usize = 8;
    /// The "VNI is valid" flag.
    pub const FLAG_I: u8 = 0x08;

    /// Wraps `buffer` after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        need("vxlan", buffer.as_ref(), Self::HEADER_LEN)?;
        Ok(VxlanPacket { buffer })
    }

    /// Fails if the buffer cannot hold the header.
    pub fn check_len(&self) -> Result<(), WireError> {
        need("vxlan", self.buffer.as_ref(), Self::HEADER_LEN)
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        rd8(self.buffer.as_ref(), 0)
    }

    /// The 24-bit VXLAN network identifier.
    pub fn vni(&self) -> u32 {
        rd32(self.buffer.as_ref(), 4) >> 8
    }

    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(Self::HEADER_LEN..).unwrap_or(&[])
    }
}

/// The parsed form of a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    /// Flags byte (normally [`VxlanPacket::FLAG_I`]).
    pub flags: u8,
    /// 24-bit network identifier.
    pub vni: u32,
}

impl VxlanRepr {
    /// Reads the header from a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &VxlanPacket<T>) -> Self {
        VxlanRepr {
            flags: p.flags(),
            vni: p.vni(),
        }
    }

    /// Writes the 8-byte header at the start of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        let v = (self.vni & 0x00ff_ffff) << 8;
        let vb = v.to_be_bytes();
        put("vxlan", out, &[self.flags, 0, 0, 0, vb[0], vb[1], vb[2], 0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut b = [0u8; 8];
        VxlanRepr {
            flags: VxlanPacket::<&[u8]>::FLAG_I,
            vni: 0x123456,
        }
        .emit(&mut b)
        .unwrap();
        let p = VxlanPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.vni(), 0x123456);
        assert_eq!(p.flags(), 8);
        assert!(VxlanPacket::new_checked(&b[..7]).is_err());
    }
}
