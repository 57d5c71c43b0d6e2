//! Bounded IPv4/IPv6 reassembly, keyed per capture point.
//!
//! Written here rather than on `etherparse::defrag::IpDefragPool`: the pool has no bound on the
//! number of datagrams or bytes it holds (its docs say so), it can only take a whole
//! `SlicedPacket` (so it cannot reassemble an inner packet fragmented inside a VXLAN tunnel), and
//! its `IpDefragBuf` has no cap on fragments per datagram. This reassembler:
//!
//! * keys datagrams by `(point, version, src, dst, id, protocol)` — `point` is any key the caller
//!   supplies (a capture-point id), so the same datagram seen at two hops never mixes;
//! * holds at most [`ReassemblyLimits::max_datagrams`] datagrams and
//!   [`ReassemblyLimits::max_bytes`] bytes (buffers, fragment lists and per-entry overhead all
//!   counted), evicting the oldest datagram first;
//! * drops datagrams older than [`ReassemblyLimits::max_age_ns`] (timestamps are the caller's);
//! * caps fragments per datagram at [`ReassemblyLimits::max_fragments`].
//!
//! It reassembles the outermost fragmented IP layer of a dissection (the underlay for a VXLAN
//! packet fragmented on the wire, the inner packet when it was fragmented before encapsulation)
//! and returns that IP datagram whole, ready for [`crate::dissect`] with [`crate::LinkType::RawIp`].

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use serde::Serialize;

use crate::model::Dissection;

/// Memory and time bounds for [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Datagrams being reassembled at once (default 256).
    pub max_datagrams: usize,
    /// Bytes held in total, overhead included (default 4 MiB).
    pub max_bytes: usize,
    /// A datagram not completed within this many nanoseconds of its first fragment is dropped
    /// (default 30 s, the Linux `ipfrag_time`).
    pub max_age_ns: u64,
    /// Fragments accepted per datagram (default 64).
    pub max_fragments: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_datagrams: 256,
            max_bytes: 4 << 20,
            max_age_ns: 30_000_000_000,
            max_fragments: 64,
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReassemblyStats {
    /// Fragments accepted.
    pub fragments: u64,
    /// Datagrams completed.
    pub completed: u64,
    /// Datagrams evicted to stay within bounds.
    pub evicted: u64,
    /// Datagrams dropped for age.
    pub expired: u64,
    /// Fragments refused (truncated capture, bad length, conflicting end, too many fragments).
    pub rejected: u64,
}

/// A completed datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassembled {
    /// The whole IP datagram (header of the first fragment, fragment fields cleared, lengths and
    /// IPv4 checksum fixed).
    pub datagram: Vec<u8>,
    /// Which IP layer of the dissection was fragmented: index into [`Dissection::ips`]
    /// (0 = outermost).
    pub depth: usize,
    /// Total length (IP header + payload) of each fragment, in arrival order.
    pub fragment_sizes: Vec<u16>,
    /// Timestamp of the first fragment.
    pub first_ns: u64,
    /// Timestamp of the last fragment.
    pub last_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key<K> {
    point: K,
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

#[derive(Debug)]
struct Pending {
    first_ns: u64,
    last_ns: u64,
    depth: usize,
    /// IP header (IPv6: up to the fragment header, with its next-header fixed) once the first
    /// fragment is in.
    header: Vec<u8>,
    data: Vec<u8>,
    /// Received byte ranges, sorted and merged.
    ranges: Vec<(u32, u32)>,
    end: Option<u32>,
    sizes: Vec<u16>,
    frags: usize,
}

const ENTRY_OVERHEAD: usize = 160;

impl Pending {
    fn cost(&self) -> usize {
        ENTRY_OVERHEAD
            + self.header.capacity()
            + self.data.capacity()
            + self.ranges.capacity() * 8
            + self.sizes.capacity() * 2
    }

    fn complete(&self) -> bool {
        matches!((self.end, self.ranges.as_slice()), (Some(e), [(0, r)]) if *r == e)
            && !self.header.is_empty()
    }

    fn add_range(&mut self, s: u32, e: u32) {
        self.ranges.push((s, e));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.ranges.len());
        for &(a, b) in &self.ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.ranges = merged;
    }
}

/// Bounded reassembler; `K` identifies the capture point.
#[derive(Debug)]
pub struct Reassembler<K: Hash + Eq + Clone> {
    limits: ReassemblyLimits,
    table: HashMap<Key<K>, Pending>,
    bytes: usize,
    stats: ReassemblyStats,
}

impl<K: Hash + Eq + Clone> Default for Reassembler<K> {
    fn default() -> Self {
        Self::new(ReassemblyLimits::default())
    }
}

impl<K: Hash + Eq + Clone> Reassembler<K> {
    /// An empty reassembler with these bounds.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            table: HashMap::new(),
            bytes: 0,
            stats: ReassemblyStats::default(),
        }
    }

    /// Datagrams in progress.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when nothing is in progress.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes held, overhead included; never above [`ReassemblyLimits::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Drops datagrams whose first fragment is older than the age limit.
    pub fn expire(&mut self, now_ns: u64) {
        let max_age = self.limits.max_age_ns;
        let mut freed = 0usize;
        let mut n = 0u64;
        self.table.retain(|_, p| {
            let keep = now_ns.saturating_sub(p.first_ns) <= max_age;
            if !keep {
                freed += p.cost();
                n += 1;
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.stats.expired += n;
    }

    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .table
            .iter()
            .min_by_key(|(_, p)| p.first_ns)
            .map(|(k, _)| k.clone());
        match oldest.and_then(|k| self.table.remove(&k)) {
            Some(p) => {
                self.bytes = self.bytes.saturating_sub(p.cost());
                self.stats.evicted += 1;
                true
            }
            None => false,
        }
    }

    /// Feeds one dissected frame (`bytes` are the bytes that were dissected). Returns the whole
    /// datagram when this fragment completes one; `None` for non-fragments and incomplete ones.
    pub fn push(
        &mut self,
        point: K,
        now_ns: u64,
        bytes: &[u8],
        d: &Dissection,
    ) -> Option<Reassembled> {
        let (depth, ip) = d.ips().enumerate().find(|(_, ip)| ip.is_fragment())?;
        self.expire(now_ns);
        if ip.truncated {
            self.stats.rejected += 1;
            return None;
        }
        let ip_start = ip.offset as usize;
        let payload_end = ip.payload_offset() + ip.payload_len as usize;
        // Where the fragmentable part starts, and the header to keep for the rebuilt datagram.
        let (data_start, header, patch) = if ip.version == 4 {
            let hs = ip.payload_offset();
            (hs, bytes.get(ip_start..hs), None)
        } else {
            let mut at = ip_start + 40;
            let mut prev_next_at = ip_start + 6;
            let mut frag_at = None;
            for e in &ip.ext {
                if e.kind == 44 {
                    frag_at = Some(at);
                    break;
                }
                prev_next_at = at;
                at += usize::from(e.len);
            }
            let Some(fa) = frag_at else {
                self.stats.rejected += 1;
                return None;
            };
            // The kept header ends where the fragment header was: the next-header field before
            // it must name what the fragment header carried.
            let frag_next = bytes.get(fa).copied().unwrap_or(59);
            (
                fa + 8,
                bytes.get(ip_start..fa),
                Some((prev_next_at - ip_start, frag_next)),
            )
        };
        let Some(frag_data) = bytes.get(data_start..payload_end) else {
            self.stats.rejected += 1;
            return None;
        };
        let off = u32::from(ip.frag_offset);
        let end = off + frag_data.len() as u32;
        if end > 65535 || (ip.mf && frag_data.len() % 8 != 0) {
            self.stats.rejected += 1;
            return None;
        }
        let key = Key {
            point,
            src: ip.src,
            dst: ip.dst,
            id: ip.id,
            proto: if ip.version == 6 { 0 } else { ip.proto },
        };
        if !self.table.contains_key(&key) {
            while self.table.len() >= self.limits.max_datagrams.max(1) {
                if !self.evict_oldest() {
                    break;
                }
            }
            let p = Pending {
                first_ns: now_ns,
                last_ns: now_ns,
                depth,
                header: Vec::new(),
                data: Vec::new(),
                ranges: Vec::new(),
                end: None,
                sizes: Vec::new(),
                frags: 0,
            };
            self.bytes += p.cost();
            self.table.insert(key.clone(), p);
        }
        let before = self.table.get(&key).map(Pending::cost).unwrap_or(0);
        // Grow the buffer; account for it before copying, evicting others if needed.
        let need = end as usize;
        let cur_cap = self.table.get(&key).map(|p| p.data.capacity()).unwrap_or(0);
        let extra = need.saturating_sub(cur_cap) + 64 + header.map(|h| h.len()).unwrap_or(0);
        while self.bytes + extra > self.limits.max_bytes && self.table.len() > 1 {
            // Evict the oldest *other* datagram.
            let oldest = self
                .table
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, p)| p.first_ns)
                .map(|(k, _)| k.clone());
            match oldest.and_then(|k| self.table.remove(&k)) {
                Some(p) => {
                    self.bytes = self.bytes.saturating_sub(p.cost());
                    self.stats.evicted += 1;
                }
                None => break,
            }
        }
        if self.bytes + extra > self.limits.max_bytes {
            self.drop_key(&key);
            self.stats.rejected += 1;
            return None;
        }
        let max_fragments = self.limits.max_fragments;
        let p = self.table.get_mut(&key)?;
        if p.frags >= max_fragments || p.end.is_some_and(|e| end > e || (!ip.mf && end != e)) {
            self.drop_key(&key);
            self.stats.rejected += 1;
            return None;
        }
        p.frags += 1;
        p.last_ns = now_ns;
        p.depth = depth;
        if p.data.len() < need {
            p.data.reserve_exact(need - p.data.len());
            p.data.resize(need, 0);
        }
        if let Some(dst) = p.data.get_mut(off as usize..need) {
            dst.copy_from_slice(frag_data);
        }
        if !ip.mf {
            p.end = Some(end);
            p.data.truncate(need);
        }
        if off == 0 {
            if let Some(h) = header {
                p.header.clear();
                p.header.extend_from_slice(h);
                if let Some((at, next)) = patch {
                    if let Some(b) = p.header.get_mut(at) {
                        *b = next;
                    }
                }
            }
        }
        p.sizes
            .push(u16::try_from(payload_end - ip_start).unwrap_or(u16::MAX));
        p.add_range(off, end);
        let after = p.cost();
        self.bytes = (self.bytes + after).saturating_sub(before);
        self.stats.fragments += 1;

        if !p.complete() {
            return None;
        }
        let p = self.table.remove(&key)?;
        self.bytes = self.bytes.saturating_sub(p.cost());
        self.stats.completed += 1;
        Some(build(p, ip.version))
    }

    fn drop_key(&mut self, key: &Key<K>) {
        if let Some(p) = self.table.remove(key) {
            self.bytes = self.bytes.saturating_sub(p.cost());
        }
    }
}

fn build(p: Pending, version: u8) -> Reassembled {
    let mut h = p.header;
    let data_len = p.data.len();
    if version == 4 {
        let total = u16::try_from(h.len() + data_len).unwrap_or(u16::MAX);
        if let Some(x) = h.get_mut(2..4) {
            x.copy_from_slice(&total.to_be_bytes());
        }
        let df = h.get(6).map(|b| b & 0x40).unwrap_or(0);
        if let Some(x) = h.get_mut(6..8) {
            x.copy_from_slice(&[df, 0]);
        }
        if let Some(x) = h.get_mut(10..12) {
            x.copy_from_slice(&[0, 0]);
        }
        let mut sum: u32 = 0;
        for c in h.chunks(2) {
            sum += u32::from(u16::from_be_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let c = !(sum as u16);
        if let Some(x) = h.get_mut(10..12) {
            x.copy_from_slice(&c.to_be_bytes());
        }
    } else {
        let payload = u16::try_from(h.len().saturating_sub(40) + data_len).unwrap_or(u16::MAX);
        if let Some(x) = h.get_mut(4..6) {
            x.copy_from_slice(&payload.to_be_bytes());
        }
    }
    h.extend_from_slice(&p.data);
    Reassembled {
        datagram: h,
        depth: p.depth,
        fragment_sizes: p.sizes,
        first_ns: p.first_ns,
        last_ns: p.last_ns,
    }
}
