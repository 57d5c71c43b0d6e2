//! pcapng writing for vendors: one section naming dye and the host, one interface block per
//! capture point named `<netns>/<ifname>` with a description (kind, MTU, namespace, node) and
//! `if_tsresol = 9`, enhanced packet blocks with direction flags and optional comments, and
//! interface statistics blocks (received / kernel-dropped) at the end.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::blocks::opt_common::CommonOption;
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{PcapNgWriteError, PcapNgWriter};
use pcap_file::{DataLink, Endianness};

use crate::capture::Direction;

/// Errors from the pcapng writer.
#[derive(Debug, thiserror::Error)]
pub enum PcapngError {
    #[error("pcapng write: {0}")]
    Write(#[from] PcapNgWriteError),
    #[error("pcapng write: unknown interface id {0}")]
    UnknownInterface(u32),
}

/// What the section header says about who wrote the file and where.
#[derive(Clone, Debug)]
pub struct SectionInfo {
    /// `shb_userappl`, e.g. "dye 0.1.0".
    pub application: String,
    /// `shb_os`, e.g. "Linux 6.1.0".
    pub os: String,
    /// `shb_hardware`, e.g. the CPU architecture.
    pub hardware: String,
    /// Section comment, e.g. "captured by dye on host node-1".
    pub comment: Option<String>,
}

impl SectionInfo {
    /// Section info for this machine: dye's version, the kernel, the host name.
    pub fn for_this_host() -> SectionInfo {
        let uts = nix::sys::utsname::uname().ok();
        let (os, host, arch) = match &uts {
            Some(u) => (
                format!(
                    "{} {}",
                    u.sysname().to_string_lossy(),
                    u.release().to_string_lossy()
                ),
                u.nodename().to_string_lossy().into_owned(),
                u.machine().to_string_lossy().into_owned(),
            ),
            None => (
                "Linux".into(),
                "unknown".into(),
                std::env::consts::ARCH.into(),
            ),
        };
        SectionInfo {
            application: format!("dye {}", env!("CARGO_PKG_VERSION")),
            os,
            hardware: arch,
            comment: Some(format!("captured by dye on host {host}")),
        }
    }
}

/// One interface block.
#[derive(Clone, Debug)]
pub struct InterfaceInfo {
    /// `if_name`: `<netns>/<ifname>`.
    pub name: String,
    /// `if_description`: kind, MTU, namespace, node.
    pub description: String,
    /// DLT/LINKTYPE of the frames (1 = Ethernet).
    pub linktype: u32,
    pub snaplen: u32,
}

/// Writes a pcapng stream; counts the bytes it wrote.
pub struct PcapngWriter<W: Write> {
    inner: PcapNgWriter<Counting<W>>,
    interfaces: u32,
    packets: u64,
}

impl<W: Write> std::fmt::Debug for PcapngWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapngWriter")
            .field("interfaces", &self.interfaces)
            .field("packets", &self.packets)
            .field("bytes", &self.bytes_written())
            .finish()
    }
}

/// Counts the bytes that reach the underlying writer.
#[derive(Debug)]
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> PcapngWriter<W> {
    /// Starts a section (native endianness) describing the writer and host.
    pub fn new(writer: W, section: &SectionInfo) -> Result<Self, PcapngError> {
        let mut options = vec![
            SectionHeaderOption::UserApplication(Cow::Owned(section.application.clone())),
            SectionHeaderOption::OS(Cow::Owned(section.os.clone())),
            SectionHeaderOption::Hardware(Cow::Owned(section.hardware.clone())),
        ];
        if let Some(c) = &section.comment {
            options.push(SectionHeaderOption::Common(CommonOption::Comment(
                Cow::Owned(c.clone()),
            )));
        }
        let shb = SectionHeaderBlock {
            endianness: Endianness::native(),
            major_version: 1,
            minor_version: 0,
            section_length: -1,
            options,
        };
        let inner = PcapNgWriter::with_section_header(
            Counting {
                inner: writer,
                count: 0,
            },
            shb,
        )?;
        Ok(PcapngWriter {
            inner,
            interfaces: 0,
            packets: 0,
        })
    }

    /// Adds an interface block (nanosecond resolution) and returns its interface id.
    pub fn add_interface(&mut self, iface: &InterfaceInfo) -> Result<u32, PcapngError> {
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::from(iface.linktype),
            snaplen: iface.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(iface.name.clone())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(iface.description.clone())),
                InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO),
            ],
        };
        self.inner.write_pcapng_block(idb)?;
        let id = self.interfaces;
        self.interfaces += 1;
        Ok(id)
    }

    /// Writes one packet. `ts_ns` is nanoseconds since the Unix epoch; `direction` sets the
    /// EPB flags (inbound = 1, outbound = 2); each comment becomes an `opt_comment`.
    pub fn write_packet(
        &mut self,
        interface_id: u32,
        ts_ns: u64,
        original_len: u32,
        data: &[u8],
        direction: Option<Direction>,
        comments: &[&str],
    ) -> Result<u64, PcapngError> {
        if interface_id >= self.interfaces {
            return Err(PcapngError::UnknownInterface(interface_id));
        }
        let mut options = Vec::with_capacity(1 + comments.len());
        if let Some(d) = direction {
            options.push(EnhancedPacketOption::Flags(match d {
                Direction::In => 1,
                Direction::Out => 2,
            }));
        }
        for c in comments {
            options.push(EnhancedPacketOption::Common(CommonOption::Comment(
                Cow::Borrowed(c),
            )));
        }
        let epb = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(ts_ns),
            original_len: original_len.max(data.len() as u32),
            data: Cow::Borrowed(data),
            options,
        };
        let n = self.inner.write_pcapng_block(epb)? as u64;
        self.packets += 1;
        Ok(n)
    }

    /// Writes an interface statistics block: packets received by the capture and dropped by
    /// the kernel (`isb_ifrecv`, `isb_osdrop`, `isb_ifdrop`), start and end times.
    #[allow(clippy::too_many_arguments)]
    pub fn write_stats(
        &mut self,
        interface_id: u32,
        start_ns: u64,
        end_ns: u64,
        received: u64,
        os_drop: u64,
        if_drop: u64,
        delivered: u64,
    ) -> Result<(), PcapngError> {
        if interface_id >= self.interfaces {
            return Err(PcapngError::UnknownInterface(interface_id));
        }
        let isb = InterfaceStatisticsBlock {
            interface_id,
            timestamp: Duration::from_nanos(end_ns),
            options: vec![
                InterfaceStatisticsOption::IsbStartTime(Duration::from_nanos(start_ns)),
                InterfaceStatisticsOption::IsbEndTime(Duration::from_nanos(end_ns)),
                InterfaceStatisticsOption::IsbIfRecv(received),
                InterfaceStatisticsOption::IsbIfDrop(if_drop),
                InterfaceStatisticsOption::IsbOsDrop(os_drop),
                InterfaceStatisticsOption::IsbUsrDeliv(delivered),
            ],
        };
        self.inner.write_pcapng_block(isb)?;
        Ok(())
    }

    /// Bytes written so far (all blocks).
    pub fn bytes_written(&self) -> u64 {
        self.inner.get_ref().count
    }

    /// Packets written so far.
    pub fn packets_written(&self) -> u64 {
        self.packets
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.get_mut().flush()
    }

    /// Returns the underlying writer (flush it yourself if it buffers).
    pub fn into_inner(self) -> W {
        self.inner.into_inner().inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn roundtrip_names_resolution_flags_comments() {
        let mut w = PcapngWriter::new(Vec::new(), &SectionInfo::for_this_host()).unwrap();
        let a = w
            .add_interface(&InterfaceInfo {
                name: "node-1/eth0".into(),
                description: "veth, mtu 1500".into(),
                linktype: 1,
                snaplen: 262144,
            })
            .unwrap();
        let frame = [0u8; 60];
        w.write_packet(
            a,
            1_700_000_000_123_456_789,
            60,
            &frame,
            Some(Direction::Out),
            &["probe hop 0"],
        )
        .unwrap();
        w.write_stats(a, 1, 2, 10, 1, 0, 9).unwrap();
        let bytes = w.bytes_written();
        let buf = w.into_inner();
        assert_eq!(bytes, buf.len() as u64);
        let mut r = PcapNgReader::new(&buf[..]).unwrap();
        let mut saw_packet = false;
        while let Some(b) = r.next_block() {
            if let (Block::EnhancedPacket(p), _) = b.unwrap() {
                assert_eq!(p.timestamp.as_nanos(), 1_700_000_000_123_456_789);
                assert!(p.options.contains(&EnhancedPacketOption::Flags(2)));
                saw_packet = true;
            }
        }
        assert!(saw_packet);
    }
}
