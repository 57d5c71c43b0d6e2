//! Linux cooked capture v2 (LINKTYPE_LINUX_SLL2, 276): 20 bytes.
//!
//! ```text
//! protocol (16) | reserved (16) | interface index (32) | ARPHRD type (16) |
//! packet type (8) | address length (8) | address (64)
//! ```

use super::{need, rd16, rd32, rd8, WireError};

/// A checked view of an SLL2 header and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Sll2Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Sll2Packet<T> {
    /// Header length.
    pub const HEADER_LEN: usize = 20;

    /// Wraps `buffer` after checking it holds the header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        need("sll2", buffer.as_ref(), Self::HEADER_LEN)?;
        Ok(Sll2Packet { buffer })
    }

    /// Payload protocol (an EtherType).
    pub fn protocol(&self) -> u16 {
        rd16(self.buffer.as_ref(), 0)
    }
    /// Interface index the packet was captured on.
    pub fn ifindex(&self) -> u32 {
        rd32(self.buffer.as_ref(), 4)
    }
    /// ARPHRD_ type of the interface.
    pub fn hatype(&self) -> u16 {
        rd16(self.buffer.as_ref(), 8)
    }
    /// Packet type (0 host, 1 broadcast, 2 multicast, 3 other host, 4 outgoing).
    pub fn packet_type(&self) -> u8 {
        rd8(self.buffer.as_ref(), 10)
    }
    /// Link-layer address (up to 8 bytes).
    pub fn address(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let n = usize::from(rd8(b, 11)).min(8);
        b.get(12..12 + n).unwrap_or(&[])
    }
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(Self::HEADER_LEN..).unwrap_or(&[])
    }
}
