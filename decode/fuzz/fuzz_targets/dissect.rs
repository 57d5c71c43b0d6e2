//! Any bytes, any link type: dissect, format, serialise, find the marker, reassemble. Must
//! never panic. The first input byte picks the link type.
#![no_main]

use dye_decode::fmt::Line;
use dye_decode::{dissect, LinkType, Marker, Options, Reassembler};
use libfuzzer_sys::fuzz_target;

const LINKS: [LinkType; 5] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::RawIp,
    LinkType::Null,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(sel) % LINKS.len()];
    let opts = Options::default();
    let d = dissect(bytes, link, &opts);
    let _ = Line(&d).to_string();
    let _ = serde_json::to_string(&d);
    let _ = d.find_marker();
    let _ = d.flows().count();
    let _ = Marker::find_in_bytes(bytes);
    let mut re: Reassembler<u8> = Reassembler::default();
    for i in 0..3u64 {
        if let Some(r) = re.push(0, i, bytes, &d) {
            let _ = Line(&dissect(&r.datagram, LinkType::RawIp, &opts)).to_string();
        }
    }
});
