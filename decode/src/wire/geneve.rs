//! Geneve (RFC 8926): 8-byte base header plus `opt_len * 4` bytes of options.
//!
//! ```text
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! |                    Variable-Length Options                    |
//! ```
//! Each option: class (16), type (8), 3 reserved bits + length in 4-byte words (5), data.

use super::{need, put, rd16, rd32, rd8, WireError};

/// A checked view of a Geneve header (base + options) and its payload.
#[derive(Debug, Clone, Copy)]
pub struct GenevePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GenevePacket<T> {
    /// Base header length.
    pub const BASE_LEN: usize = 8;

    /// Wraps `buffer` after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = GenevePacket { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Fails if the buffer cannot hold the base header and the options it announces, or if the
    /// version is not 0.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        need("geneve", b, Self::BASE_LEN)?;
        if rd8(b, 0) >> 6 != 0 {
            return Err(WireError::Malformed {
                header: "geneve",
                what: "version is not 0",
            });
        }
        need("geneve", b, self.header_len())
    }

    /// Protocol version (2 bits).
    pub fn version(&self) -> u8 {
        rd8(self.buffer.as_ref(), 0) >> 6
    }

    /// Length of the options in bytes.
    pub fn options_len(&self) -> usize {
        usize::from(rd8(self.buffer.as_ref(), 0) & 0x3f) * 4
    }

    /// Base header plus options.
    pub fn header_len(&self) -> usize {
        Self::BASE_LEN + self.options_len()
    }

    /// The OAM (control packet) bit.
    pub fn oam(&self) -> bool {
        rd8(self.buffer.as_ref(), 1) & 0x80 != 0
    }

    /// The "critical options present" bit.
    pub fn critical(&self) -> bool {
        rd8(self.buffer.as_ref(), 1) & 0x40 != 0
    }

    /// EtherType of the payload (0x6558 for Ethernet).
    pub fn protocol(&self) -> u16 {
        rd16(self.buffer.as_ref(), 2)
    }

    /// The 24-bit virtual network identifier.
    pub fn vni(&self) -> u32 {
        rd32(self.buffer.as_ref(), 4) >> 8
    }

    /// The raw option bytes.
    pub fn options(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(Self::BASE_LEN..self.header_len())
            .unwrap_or(&[])
    }

    /// Iterates over the options; stops at the first one that does not fit.
    pub fn option_iter(&self) -> GeneveOptionIter<'_> {
        GeneveOptionIter {
            rest: self.options(),
        }
    }

    /// The encapsulated frame or packet.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

/// One Geneve option (TLV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GeneveOption {
    /// Option class.
    pub class: u16,
    /// Option type (the high bit marks it critical).
    #[serde(rename = "type")]
    pub kind: u8,
    /// Length of the option data in bytes.
    pub len: u8,
}

/// Iterator over Geneve options.
#[derive(Debug, Clone)]
pub struct GeneveOptionIter<'a> {
    rest: &'a [u8],
}

impl Iterator for GeneveOptionIter<'_> {
    type Item = GeneveOption;
    fn next(&mut self) -> Option<GeneveOption> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = (rd8(self.rest, 3) & 0x1f) * 4;
        let opt = GeneveOption {
            class: rd16(self.rest, 0),
            kind: rd8(self.rest, 2),
            len,
        };
        self.rest = self.rest.get(4 + usize::from(len)..)?;
        Some(opt)
    }
}

/// The parsed form of a Geneve header (options are kept as raw bytes for emit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneveRepr<'a> {
    /// OAM bit.
    pub oam: bool,
    /// Critical-options bit.
    pub critical: bool,
    /// Payload EtherType.
    pub protocol: u16,
    /// 24-bit VNI.
    pub vni: u32,
    /// Raw options; length must be a multiple of 4 and at most 252.
    pub options: &'a [u8],
}

impl GeneveRepr<'_> {
    /// Header length on the wire.
    pub fn header_len(&self) -> usize {
        8 + self.options.len()
    }

    /// Writes the header (with options) at the start of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        if self.options.len() % 4 != 0 || self.options.len() > 252 {
            return Err(WireError::Malformed {
                header: "geneve",
                what: "options length must be a multiple of 4, at most 252",
            });
        }
        let olen = u8::try_from(self.options.len() / 4).unwrap_or(0);
        let flags = (u8::from(self.oam) << 7) | (u8::from(self.critical) << 6);
        let p = self.protocol.to_be_bytes();
        let v = ((self.vni & 0x00ff_ffff) << 8).to_be_bytes();
        put(
            "geneve",
            out,
            &[olen, flags, p[0], p[1], v[0], v[1], v[2], 0],
        )?;
        match out.get_mut(8..) {
            Some(rest) => put("geneve", rest, self.options),
            None => Err(WireError::Truncated {
                header: "geneve",
                need: self.header_len(),
                have: 8,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_options() {
        let opts = [0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef];
        let r = GeneveRepr {
            oam: false,
            critical: true,
            protocol: 0x6558,
            vni: 77,
            options: &opts,
        };
        let mut b = [0u8; 20];
        r.emit(&mut b).unwrap();
        let p = GenevePacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.vni(), 77);
        assert!(p.critical());
        assert_eq!(p.protocol(), 0x6558);
        assert_eq!(p.header_len(), 16);
        let o: Vec<_> = p.option_iter().collect();
        assert_eq!(
            o,
            vec![GeneveOption {
                class: 0x0102,
                kind: 0x80,
                len: 4
            }]
        );
        assert_eq!(p.payload().len(), 4);
        assert!(GenevePacket::new_checked(&b[..15]).is_err());
    }
}
