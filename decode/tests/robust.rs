//! Never panics, bounded memory, and the samples decode as documented.
//!
//! * property tests: random bytes and mutated sample frames through dissect (every link type),
//!   the one-line formatter, JSON, marker search and reassembly — no panic. The case count is
//!   fixed for CI; `DYE_FUZZ_CASES=N` runs more (the long-run harness).
//! * a flood of never-completed fragments keeps the reassembler within its bounds.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use dye_decode::build::{self, V4};
use dye_decode::capfile::CaptureReader;
use dye_decode::fmt::Line;
use dye_decode::{
    dissect, LenFrom, LinkType, Marker, MarkerSite, Options, Reassembler, ReassemblyLimits,
};
use proptest::prelude::*;

const LINKS: [LinkType; 5] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::RawIp,
    LinkType::Null,
];

fn sample_frames() -> Vec<(LinkType, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/captures");
    let mut v = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let Ok(mut r) = CaptureReader::new(std::fs::File::open(&p).unwrap()) else {
            continue;
        };
        while let Some(Ok(f)) = r.next_frame() {
            if let Some(l) = LinkType::from_linktype(f.linktype) {
                v.push((l, f.data.to_vec()));
            }
        }
    }
    v
}

/// Everything a consumer does with a frame; must not panic.
fn exercise(link: LinkType, bytes: &[u8], re: &mut Reassembler<u32>, opts: &Options) {
    let d = dissect(bytes, link, opts);
    let _ = Line(&d).to_string();
    let _ = serde_json::to_string(&d).expect("serialisable");
    let _ = d.find_marker();
    let _ = d.flows().count();
    let _ = d.payload(bytes);
    let _ = Marker::find_in_bytes(bytes);
    if let Some(r) = re.push(1, 0, bytes, &d) {
        let d2 = dissect(&r.datagram, LinkType::RawIp, opts);
        let _ = Line(&d2).to_string();
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("DYE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(link in 0usize..5, bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let mut re = Reassembler::new(ReassemblyLimits { max_bytes: 1 << 20, ..Default::default() });
        exercise(LINKS[link], &bytes, &mut re, &Options::default());
    }

    #[test]
    fn mutated_samples_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
        relink in proptest::option::of(0usize..5),
    ) {
        thread_local!(static FRAMES: Vec<(LinkType, Vec<u8>)> = sample_frames());
        FRAMES.with(|frames| {
            let (link, orig) = &frames[pick.index(frames.len())];
            let mut b = orig.clone();
            for (at, v) in &flips {
                let i = at.index(b.len());
                b[i] ^= v | 1;
            }
            if do_cut {
                b.truncate(cut.index(b.len() + 1));
            }
            let link = relink.map(|i| LINKS[i]).unwrap_or(*link);
            let mut re = Reassembler::new(ReassemblyLimits::default());
            exercise(link, &b, &mut re, &Options::default());
        });
    }
}

/// A GSO/GRO super-packet of `plen` TCP payload bytes: IPv4 (total length 0 over 64 KiB),
/// IPv6 jumbogram, IPv6 with payload length 0 (hop-by-hop stripped), under link header `link`.
fn aggregated_frame(kind: usize, plen: usize, link: LinkType) -> Vec<u8> {
    let (a4, b4) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let (a6, b6) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
    let payload = vec![0x5a; plen];
    let ip = match kind {
        0 => build::ipv4(
            &V4::new(a4, b4),
            6,
            &build::tcp(a4.into(), b4.into(), 1, 2, 3, 4, 0x10, &payload),
        ),
        1 => build::ipv6_jumbo(
            a6,
            b6,
            64,
            6,
            &build::tcp(a6.into(), b6.into(), 1, 2, 3, 4, 0x10, &payload),
        ),
        _ => build::ipv6(
            a6,
            b6,
            64,
            6,
            &[],
            &build::tcp(a6.into(), b6.into(), 1, 2, 3, 4, 0x10, &payload),
        ),
    };
    let et = if kind == 0 { 0x0800 } else { 0x86dd };
    match link {
        LinkType::Ethernet => build::ethernet([2; 6], [4; 6], &[], et, &ip),
        LinkType::LinuxSll => build::sll(0, [2; 6], et, &ip),
        LinkType::LinuxSll2 => build::sll2(0, 3, [2; 6], et, &ip),
        LinkType::RawIp => ip,
        LinkType::Null => {
            let af: u32 = if kind == 0 { 2 } else { 10 };
            let mut v = af.to_le_bytes().to_vec();
            v.extend_from_slice(&ip);
            v
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(400), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn aggregated_frames_decode_and_never_panic(
        kind in 0usize..3,
        plen in 0usize..140_000,
        link in 0usize..5,
        jumbo in proptest::option::of(any::<u32>()),
        flips in proptest::collection::vec((0usize..100, any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let link = LINKS[link];
        let mut b = aggregated_frame(kind, plen, link);
        let pristine = b.clone();
        let ip_at = b.len() - plen - 20 - if kind == 0 { 20 } else if kind == 1 { 48 } else { 40 };
        if let (1, Some(j)) = (kind, jumbo) {
            b[ip_at + 44..ip_at + 48].copy_from_slice(&j.to_be_bytes());
        }
        for (at, v) in &flips {
            let i = (ip_at + at) % b.len();
            b[i] ^= v | 1;
        }
        if do_cut {
            b.truncate(cut.index(b.len() + 1));
        }
        let opts = Options::default();
        let mut re = Reassembler::new(ReassemblyLimits::default());
        exercise(link, &b, &mut re, &opts);
        // Cut by a snaplen: the original length restores a length taken from the frame.
        let mut d = dissect(&b, link, &opts);
        d.set_orig_len(b.len(), pristine.len());
        let _ = Line(&d).to_string();
        let _ = serde_json::to_string(&d).expect("serialisable");
        if flips.is_empty() && jumbo.is_none() {
            if let (Some(ip), Some(whole)) = (&d.ip, dissect(&pristine, link, &opts).ip) {
                if ip.aggregated.is_some_and(|a| a.from == LenFrom::Frame) {
                    prop_assert_eq!(ip.packet_len(), whole.packet_len());
                }
            }
        }
        // Untouched, every form decodes whole: the TCP payload is all there.
        let d = dissect(&pristine, link, &opts);
        prop_assert!(!d.is_malformed(), "{:?}", d.error);
        prop_assert_eq!(d.payload_len as usize, plen);
        let ip = d.ip.as_ref().unwrap();
        let big = plen + 20 + if kind == 0 { 20 } else { 0 } > 65535;
        prop_assert_eq!(ip.aggregated.is_some(), big || kind == 1);
        let line = Line(&d).to_string();
        let len_shown = format!(" len {}", ip.packet_len());
        prop_assert!(line.contains(&len_shown), "{}", line);
    }
}

#[test]
fn every_sample_frame_truncated_at_every_length() {
    let opts = Options::default();
    let mut re = Reassembler::new(ReassemblyLimits::default());
    let mut n = 0u64;
    for (link, f) in sample_frames() {
        // Every length; in the middle of the 64 KiB aggregated frames, every 61st.
        let mut len = 0;
        while len <= f.len() {
            exercise(link, &f[..len], &mut re, &opts);
            n += 1;
            len += if len > 2048 && len + 2048 < f.len() {
                61
            } else {
                1
            };
        }
    }
    assert!(n > 10_000, "{n}");
}

/// A 2000-byte UDP probe, fragmented.
fn probe_fragments(id: u16) -> Vec<Vec<u8>> {
    let payload = Marker::new(0xfeed, u32::from(id))
        .payload_with_marker(2000)
        .unwrap();
    let h = V4::new(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)).id(id);
    let udp = build::udp(h.src.into(), h.dst.into(), 1, 2, &payload);
    build::fragment_ipv4(&build::ipv4(&h, 17, &udp), 600)
}

#[test]
fn reassembly_stays_bounded_under_a_fragment_flood() {
    let limits = ReassemblyLimits {
        max_datagrams: 64,
        max_bytes: 256 * 1024,
        max_age_ns: 5_000_000_000,
        max_fragments: 16,
    };
    let mut re: Reassembler<u32> = Reassembler::new(limits);
    let opts = Options::default();
    let mut peak = (0usize, 0usize);
    let mut rng = 0x1234_5678u64;
    for i in 0..20_000u64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // A first or middle fragment of a datagram that never completes, at a random offset
        // up to 64 KiB (the worst case for buffer size).
        let off = ((rng >> 8) % 8000) as u16 * 8;
        let mut h = V4::new(Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2)).id(rng as u16);
        h.mf = true;
        h.frag_offset = off;
        let pkt = build::ipv4(&h, 17, &[0u8; 512]);
        let d = dissect(&pkt, LinkType::RawIp, &opts);
        assert!(re
            .push((rng >> 40) as u32 % 4, i * 1_000, &pkt, &d)
            .is_none());
        peak.0 = peak.0.max(re.len());
        peak.1 = peak.1.max(re.bytes());
        assert!(re.len() <= limits.max_datagrams, "{} datagrams", re.len());
        assert!(re.bytes() <= limits.max_bytes, "{} bytes", re.bytes());
    }
    let s = re.stats();
    assert!(s.evicted > 1000, "{s:?}");
    eprintln!("flood: peak {} datagrams, {} bytes; {s:?}", peak.0, peak.1);

    // Still works afterwards: a real datagram completes.
    let mut done = None;
    for f in probe_fragments(7) {
        let d = dissect(&f, LinkType::RawIp, &opts);
        if let Some(r) = re.push(9, 300_000_000, &f, &d) {
            done = Some(r);
        }
    }
    let r = done.expect("reassembled after the flood");
    let d = dissect(&r.datagram, LinkType::RawIp, &opts);
    assert_eq!(
        d.find_marker().map(|m| m.marker),
        Some(Marker::new(0xfeed, 7))
    );
    assert_eq!(r.fragment_sizes.len(), 4);

    // Age: everything older than max_age goes.
    re.expire(u64::MAX / 2);
    assert!(re.is_empty());
    assert!(re.bytes() == 0, "{} bytes left", re.bytes());
}

#[test]
fn same_datagram_at_two_points_never_mixes() {
    let opts = Options::default();
    let mut re: Reassembler<&str> = Reassembler::default();
    let frags = probe_fragments(3);
    let mut done = Vec::new();
    // Point a gets all but the last; point b gets only the last: neither completes.
    for (i, f) in frags.iter().enumerate() {
        let point = if i + 1 == frags.len() { "b" } else { "a" };
        let d = dissect(f, LinkType::RawIp, &opts);
        done.extend(re.push(point, i as u64, f, &d));
    }
    assert!(done.is_empty());
    assert_eq!(re.len(), 2);
    // The last at point a completes a's.
    let last = frags.last().unwrap();
    let d = dissect(last, LinkType::RawIp, &opts);
    assert!(re.push("a", 9, last, &d).is_some());
}

#[test]
fn samples_decode_as_documented() {
    let opts = Options::default();
    let mut markers = 0;
    let mut malformed = 0;
    let mut sites = std::collections::BTreeSet::new();
    let mut re: Reassembler<u8> = Reassembler::default();
    let mut reassembled_markers = 0;
    for (link, f) in sample_frames() {
        let d = dissect(&f, link, &opts);
        if d.is_malformed() {
            malformed += 1;
        }
        if let Some(m) = d.find_marker() {
            assert_eq!(m.marker.trace_id, 0x1a2b3c4d);
            markers += 1;
            sites.insert(format!("{:?}", m.site));
        }
        if let Some(r) = re.push(0, 0, &f, &d) {
            if dissect(&r.datagram, LinkType::RawIp, &opts)
                .find_marker()
                .is_some()
            {
                reassembled_markers += 1;
            }
        }
    }
    // One deliberately malformed frame (plain.pcap #12).
    assert_eq!(malformed, 1);
    assert!(markers >= 45, "{markers}");
    for s in [
        MarkerSite::Payload,
        MarkerSite::LastFragment,
        MarkerSite::IcmpQuote,
    ] {
        assert!(
            sites.contains(&format!("{s:?}")),
            "{s:?} not seen: {sites:?}"
        );
    }
    assert_eq!(
        reassembled_markers, 5,
        "IPv4, IPv6, outer VXLAN, inner VXLAN, inner IP-in-UDP fragments"
    );
}
