//! The ring buffer's record, decoded from bytes (no casts): the layout of `struct drop_event`
//! in capture/bpf/kfree_skb.bpf.c.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Size of `struct drop_event` (68 bytes of fields, padded to 8).
pub const RECORD_LEN: usize = 72;

/// One probe the kernel let go of, as the eBPF program saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelDrop {
    /// CLOCK_MONOTONIC ns (the program's clock); [`super::DropWatch`] moves it to the capture
    /// clock (ns since the Unix epoch).
    pub ts_ns: u64,
    /// The kernel text address that freed the packet.
    pub location: u64,
    /// `enum skb_drop_reason`'s value.
    pub reason: u32,
    /// Inode of the network namespace (its `/proc/<pid>/ns/net` identity).
    pub netns_inode: u32,
    /// The packet's device then; 0 when it had none.
    pub ifindex: u32,
    /// The probe's sequence number, from its marker.
    pub seq: u32,
    /// The outer header's protocol (a probe inside VXLAN shows as UDP) and addresses.
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
}

impl KernelDrop {
    /// Decodes one record; `None` if it is short or its IP version is neither 4 nor 6.
    pub fn decode(b: &[u8]) -> Option<KernelDrop> {
        let u64_at = |at: usize| Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?));
        let addr16 = |at: usize| -> Option<[u8; 16]> { b.get(at..at + 16)?.try_into().ok() };
        let (src, dst) = (addr16(36)?, addr16(52)?);
        let (src, dst) = match b.get(32)? {
            4 => (ipv4(&src), ipv4(&dst)),
            6 => (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
            ),
            _ => return None,
        };
        Some(KernelDrop {
            ts_ns: u64_at(0)?,
            location: u64_at(8)?,
            reason: u32_at(16)?,
            netns_inode: u32_at(20)?,
            ifindex: u32_at(24)?,
            seq: u32_at(28)?,
            proto: *b.get(33)?,
            src,
            dst,
        })
    }
}

fn ipv4(b: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_c_layout() {
        let mut b = vec![0u8; RECORD_LEN];
        b[0..8].copy_from_slice(&7u64.to_ne_bytes());
        b[8..16].copy_from_slice(&0xffff_ffff_8100_0000u64.to_ne_bytes());
        b[16..20].copy_from_slice(&16u32.to_ne_bytes());
        b[20..24].copy_from_slice(&4026531840u32.to_ne_bytes());
        b[24..28].copy_from_slice(&3u32.to_ne_bytes());
        b[28..32].copy_from_slice(&2u32.to_ne_bytes());
        b[32] = 4;
        b[33] = 17;
        b[36..40].copy_from_slice(&[10, 244, 1, 2]);
        b[52..56].copy_from_slice(&[10, 244, 2, 2]);
        let d = KernelDrop::decode(&b).unwrap();
        assert_eq!(d.reason, 16);
        assert_eq!(d.netns_inode, 4026531840);
        assert_eq!(d.seq, 2);
        assert_eq!(d.src, "10.244.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(d.dst, "10.244.2.2".parse::<IpAddr>().unwrap());
        for n in 0..RECORD_LEN {
            assert!(KernelDrop::decode(&b[..n]).is_none() || n >= 68);
        }
        b[32] = 5;
        assert!(KernelDrop::decode(&b).is_none());
    }
}
