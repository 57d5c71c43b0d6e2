//! Reading pcap and pcapng captures from any [`Read`] (the caller opens the file; this module
//! only parses bytes, with pcap-file's slice parsers over one reusable buffer).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use dye_decode::capfile::CaptureReader;
//! let mut r = CaptureReader::new(std::fs::File::open("x.pcap")?)?;
//! while let Some(frame) = r.next_frame() {
//!     let frame = frame?;
//!     println!("{} {} bytes", frame.ts_ns, frame.data.len());
//! }
//! # Ok(()) }
//! ```

use std::io::{self, Read};

use pcap_file::pcap::{PcapParseError, PcapParser};
use pcap_file::pcapng::blocks::Block;
use pcap_file::pcapng::{PcapNgParseError, PcapNgParser};

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Reading failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The file is empty.
    #[error("empty file (not a pcap or pcapng capture)")]
    Empty,
    /// The magic number is neither pcap nor pcapng.
    #[error("not a pcap or pcapng capture (starts with {0:#010x})")]
    NotCapture(u32),
    /// The pcap/pcapng structure is broken.
    #[error("corrupt {format} at byte {offset}: {msg}")]
    Corrupt {
        /// "pcap" or "pcapng".
        format: &'static str,
        /// Byte offset in the file where parsing failed.
        offset: u64,
        /// What pcap-file said.
        msg: String,
    },
    /// The file ends in the middle of a record.
    #[error("file ends in the middle of a record (truncated capture)")]
    Truncated,
}

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// pcap LINKTYPE of the frame (see [`crate::LinkType::from_linktype`]).
    pub linktype: u32,
    /// pcapng interface id (0 for pcap).
    pub interface: u32,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Length on the wire.
    pub orig_len: u32,
}

/// (consumed, data start, data len, ts, linktype, iface, orig_len), `Ok(None)` for a
/// non-packet block; `Err(None)` needs more bytes, `Err(Some(msg))` is corrupt.
type Parsed = Result<Option<(usize, usize, usize, u64, u32, u32, u32)>, Option<String>>;

enum Kind {
    Pcap(PcapParser, u32),
    Ng(PcapNgParser),
    Done,
}

/// Streams frames out of a pcap or pcapng capture.
pub struct CaptureReader<R: Read> {
    r: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    consumed: u64,
    kind: Kind,
}

impl<R: Read> std::fmt::Debug for CaptureReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("format", &self.format())
            .field("consumed", &self.consumed)
            .finish()
    }
}

const INITIAL: usize = 1 << 20;
const MAX_BUF: usize = 256 << 20;

impl<R: Read> CaptureReader<R> {
    /// Reads the file header and detects pcap or pcapng.
    pub fn new(r: R) -> Result<Self, CaptureError> {
        let mut me = CaptureReader {
            r,
            buf: vec![0u8; INITIAL],
            pos: 0,
            len: 0,
            eof: false,
            consumed: 0,
            kind: Kind::Done,
        };
        while me.len < 32 && !me.eof {
            me.fill()?;
        }
        let magic = match me.buf.get(0..4) {
            Some(&[a, b, c, d]) if me.len >= 4 => u32::from_be_bytes([a, b, c, d]),
            _ if me.len == 0 => return Err(CaptureError::Empty),
            _ => return Err(CaptureError::Truncated),
        };
        loop {
            let avail = me.buf.get(me.pos..me.len).unwrap_or(&[]);
            match magic {
                0x0a0d_0d0a => match PcapNgParser::new(avail) {
                    Ok((rem, p)) => {
                        let used = avail.len() - rem.len();
                        me.advance(used);
                        me.kind = Kind::Ng(p);
                        return Ok(me);
                    }
                    Err(PcapNgParseError::IncompleteBuffer(..)) if !me.eof => {
                        me.fill()?;
                    }
                    Err(PcapNgParseError::IncompleteBuffer(..)) => {
                        return Err(CaptureError::Truncated)
                    }
                    Err(e) => {
                        return Err(CaptureError::Corrupt {
                            format: "pcapng",
                            offset: 0,
                            msg: e.to_string(),
                        })
                    }
                },
                0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                    match PcapParser::new(avail) {
                        Ok((rem, p)) => {
                            let used = avail.len() - rem.len();
                            let lt = u32::from(p.header().datalink);
                            me.advance(used);
                            me.kind = Kind::Pcap(p, lt);
                            return Ok(me);
                        }
                        Err(PcapParseError::IncompleteBuffer(..)) => {
                            return Err(CaptureError::Truncated)
                        }
                        Err(e) => {
                            return Err(CaptureError::Corrupt {
                                format: "pcap",
                                offset: 0,
                                msg: e.to_string(),
                            })
                        }
                    }
                }
                m => return Err(CaptureError::NotCapture(m)),
            }
        }
    }

    /// "pcap" or "pcapng".
    pub fn format(&self) -> &'static str {
        match self.kind {
            Kind::Pcap(..) => "pcap",
            Kind::Ng(_) => "pcapng",
            Kind::Done => "done",
        }
    }

    fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
        self.consumed += n as u64;
    }

    /// Reads more bytes into the buffer (compacting or growing it first).
    fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            if self.buf.len() >= MAX_BUF {
                return Err(io::Error::other("record larger than 256 MiB"));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let dst = self.buf.get_mut(self.len..).unwrap_or(&mut []);
        let n = loop {
            match self.r.read(dst) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.len += n;
        Ok(())
    }

    /// The next frame; `None` at the end of the file. After an error, reading stops.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, CaptureError>> {
        loop {
            let base = self.buf.as_ptr() as usize;
            let avail = self.buf.get(self.pos..self.len).unwrap_or(&[]);
            let avail_len = avail.len();
            let got: Parsed = match &mut self.kind {
                Kind::Done => return None,
                Kind::Pcap(p, lt) => match p.next_packet(avail) {
                    Ok((rem, pkt)) => {
                        let d = pkt.data();
                        Ok(Some((
                            avail_len - rem.len(),
                            (d.as_ptr() as usize).wrapping_sub(base),
                            d.len(),
                            u64::try_from(pkt.timestamp().as_nanos()).unwrap_or(u64::MAX),
                            *lt,
                            0,
                            pkt.orig_len(),
                        )))
                    }
                    Err(PcapParseError::IncompleteBuffer(..)) => Err(None),
                    Err(e) => Err(Some(e.to_string())),
                },
                Kind::Ng(p) => match p.next_block(avail) {
                    Ok((rem, block)) => {
                        let used = avail_len - rem.len();
                        let (iface, ts, data, orig) = match &block {
                            Block::EnhancedPacket(b) => {
                                (b.interface_id, b.timestamp, &b.data, b.original_len)
                            }
                            Block::Packet(b) => (
                                u32::from(b.interface_id),
                                b.timestamp,
                                &b.data,
                                b.original_len,
                            ),
                            Block::SimplePacket(b) => {
                                (0, std::time::Duration::ZERO, &b.data, b.original_len)
                            }
                            _ => {
                                self.pos = (self.pos + used).min(self.len);
                                self.consumed += used as u64;
                                continue;
                            }
                        };
                        let lt = p
                            .interfaces()
                            .get(iface as usize)
                            .map(|i| u32::from(i.linktype))
                            .unwrap_or(1);
                        Ok(Some((
                            used,
                            (data.as_ptr() as usize).wrapping_sub(base),
                            data.len(),
                            u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX),
                            lt,
                            iface,
                            orig,
                        )))
                    }
                    Err(PcapNgParseError::IncompleteBuffer(..)) => Err(None),
                    Err(e) => Err(Some(e.to_string())),
                },
            };
            match got {
                Ok(Some((used, start, dlen, ts_ns, linktype, interface, orig_len))) => {
                    self.advance(used);
                    let data = self
                        .buf
                        .get(start..start.saturating_add(dlen))
                        .unwrap_or(&[]);
                    return Some(Ok(Frame {
                        ts_ns,
                        linktype,
                        interface,
                        data,
                        orig_len,
                    }));
                }
                Ok(None) => {}
                Err(None) => {
                    if self.eof {
                        self.kind = Kind::Done;
                        return if avail_len == 0 {
                            None
                        } else {
                            Some(Err(CaptureError::Truncated))
                        };
                    }
                    if let Err(e) = self.fill() {
                        self.kind = Kind::Done;
                        return Some(Err(e.into()));
                    }
                }
                Err(Some(msg)) => {
                    let format = self.format();
                    self.kind = Kind::Done;
                    return Some(Err(CaptureError::Corrupt {
                        format,
                        offset: self.consumed,
                        msg,
                    }));
                }
            }
        }
    }
}
