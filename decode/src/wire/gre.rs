//! GRE (RFC 2784 + RFC 2890 key and sequence number).
//!
//! ```text
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! |      Checksum (optional)      |       Reserved1 (Optional)    |
//! |                         Key (optional)                        |
//! |                 Sequence Number (Optional)                    |
//! ```
//! Protocol 0x6558 is transparent Ethernet bridging (gretap); 0x0800/0x86dd carry IP.

use super::{need, put, rd16, rd32, WireError};

/// A checked view of a GRE header (version 0) and its payload.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

const F_CSUM: u16 = 0x8000;
const F_KEY: u16 = 0x2000;
const F_SEQ: u16 = 0x1000;

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps `buffer` after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = GrePacket { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Fails if the buffer cannot hold the header its flags announce, or the version is not 0.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        need("gre", b, 4)?;
        if self.version() != 0 {
            return Err(WireError::Malformed {
                header: "gre",
                what: "version is not 0 (PPTP GRE is not supported)",
            });
        }
        need("gre", b, self.header_len())
    }

    fn flags(&self) -> u16 {
        rd16(self.buffer.as_ref(), 0)
    }

    /// Version (3 bits).
    pub fn version(&self) -> u8 {
        (self.flags() & 0x7) as u8
    }

    /// Header length implied by the C, K and S bits.
    pub fn header_len(&self) -> usize {
        let f = self.flags();
        4 + if f & F_CSUM != 0 { 4 } else { 0 }
            + if f & F_KEY != 0 { 4 } else { 0 }
            + if f & F_SEQ != 0 { 4 } else { 0 }
    }

    /// Payload EtherType.
    pub fn protocol(&self) -> u16 {
        rd16(self.buffer.as_ref(), 2)
    }

    /// The checksum, when the C bit is set.
    pub fn checksum(&self) -> Option<u16> {
        (self.flags() & F_CSUM != 0).then(|| rd16(self.buffer.as_ref(), 4))
    }

    /// The key, when the K bit is set.
    pub fn key(&self) -> Option<u32> {
        let f = self.flags();
        let at = 4 + if f & F_CSUM != 0 { 4 } else { 0 };
        (f & F_KEY != 0).then(|| rd32(self.buffer.as_ref(), at))
    }

    /// The sequence number, when the S bit is set.
    pub fn sequence(&self) -> Option<u32> {
        let f = self.flags();
        let at = 4 + if f & F_CSUM != 0 { 4 } else { 0 } + if f & F_KEY != 0 { 4 } else { 0 };
        (f & F_SEQ != 0).then(|| rd32(self.buffer.as_ref(), at))
    }

    /// The encapsulated frame or packet.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

/// The parsed form of a GRE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreRepr {
    /// Payload EtherType.
    pub protocol: u16,
    /// Checksum field (written as given; the emitter does not compute it).
    pub checksum: Option<u16>,
    /// Key.
    pub key: Option<u32>,
    /// Sequence number.
    pub sequence: Option<u32>,
}

impl GreRepr {
    /// Reads the header from a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &GrePacket<T>) -> Self {
        GreRepr {
            protocol: p.protocol(),
            checksum: p.checksum(),
            key: p.key(),
            sequence: p.sequence(),
        }
    }

    /// Header length on the wire.
    pub fn header_len(&self) -> usize {
        4 + 4
            * (usize::from(self.checksum.is_some())
                + usize::from(self.key.is_some())
                + usize::from(self.sequence.is_some()))
    }

    /// Writes the header at the start of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        let mut buf = [0u8; 16];
        let mut flags = 0u16;
        let mut at = 4;
        if let Some(c) = self.checksum {
            flags |= F_CSUM;
            buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
            at += 4;
        }
        if let Some(k) = self.key {
            flags |= F_KEY;
            buf[at..at + 4].copy_from_slice(&k.to_be_bytes());
            at += 4;
        }
        if let Some(s) = self.sequence {
            flags |= F_SEQ;
            buf[at..at + 4].copy_from_slice(&s.to_be_bytes());
            at += 4;
        }
        buf[0..2].copy_from_slice(&flags.to_be_bytes());
        buf[2..4].copy_from_slice(&self.protocol.to_be_bytes());
        put("gre", out, &buf[..at])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_key_seq_csum() {
        for r in [
            GreRepr {
                protocol: 0x0800,
                checksum: None,
                key: None,
                sequence: None,
            },
            GreRepr {
                protocol: 0x6558,
                checksum: Some(0xabcd),
                key: Some(42),
                sequence: Some(7),
            },
            GreRepr {
                protocol: 0x86dd,
                checksum: None,
                key: None,
                sequence: Some(9),
            },
        ] {
            let mut b = [0u8; 16];
            r.emit(&mut b).unwrap();
            let p = GrePacket::new_checked(&b[..r.header_len()]).unwrap();
            assert_eq!(GreRepr::parse(&p), r);
            assert_eq!(p.header_len(), r.header_len());
        }
    }
}
