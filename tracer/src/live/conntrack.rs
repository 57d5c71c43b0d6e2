//! NAT confirmation: the conntrack entry of the namespace that rewrote the probe, looked up by
//! the probe's tuple before the rewrite, over ctnetlink in that namespace (no `conntrack` tool).

use dye_capture::conntrack::{self, Entry, Tuple};
use dye_capture::Netns;
use dye_core::path::Conntrack;
use dye_core::seam::ConntrackQuery;

/// The entry whose original direction is `before` (the packet as it entered the namespace).
/// A failed lookup is logged and reads as "no entry": it only confirms what the capture showed.
pub fn lookup(netns: &Netns, before: &ConntrackQuery) -> Option<Conntrack> {
    let tuple = match (before.sport, before.dport) {
        (Some(s), Some(d)) => Tuple::ports(before.proto, before.src, s, before.dst, d),
        _ => Tuple::addrs(before.proto, before.src, before.dst),
    };
    match conntrack::lookup(netns, &tuple) {
        Ok(entry) => entry.map(|e| view(&e)),
        Err(e) => {
            tracing::warn!(netns = netns.name(), "conntrack lookup failed: {e}");
            None
        }
    }
}

/// The report's view of an entry: both tuples as `conntrack -L` writes them, and the protocol
/// state with the flags (`SYN_RECV ASSURED`).
fn view(e: &Entry) -> Conntrack {
    let mut status: Vec<String> = e.tcp_state.iter().map(|s| s.to_string()).collect();
    status.extend(e.status.labels().iter().map(|l| l.to_string()));
    Conntrack {
        orig: e.orig.to_string(),
        reply: e.reply.to_string(),
        status: status.join(" "),
    }
}
