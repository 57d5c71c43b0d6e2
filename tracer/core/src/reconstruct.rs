//! Reconstruction: the sightings of every probe, ordered in time, become a path of hops per
//! leg; consecutive hops are compared to name what changed between them (NAT, encapsulation,
//! fragmentation, TTL, ICMP errors); each probe gets a verdict, and the trace an overall one.
//! Pure logic: topology questions (where should the probe have appeared next?) are asked of a
//! [`PathOracle`] — in dye, one answering from the snapshot.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::Direction;
use crate::observe::{Sighting, SightingKind};
use crate::report::{
    EventType, Hop, HopEvent, Leg, PacketView, ProbeSummary, Verdict, VerdictKind,
};
use crate::snapshot::Point;

/// What reconstruction needs to know about a capture point.
pub type PointMeta = Point;

/// Where a vanished probe should have shown up next, and why that matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// `netns/ifname`
    pub next: Option<String>,
    /// A sentence a person can act on.
    pub explanation: String,
}

/// Topology knowledge for verdicts.
pub trait PathOracle {
    /// The probe was last seen at `last` (as `packet`); where should it have appeared next?
    fn expected_next(
        &self,
        last: &PointMeta,
        direction: Direction,
        packet: &PacketView,
        outer_len: Option<u32>,
    ) -> Expectation;
    /// Namespaces that own `addr`.
    fn owners(&self, addr: IpAddr) -> Vec<String>;
}

/// The result: the representative probe's hops, every probe's summary, the overall verdict.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    pub hops: Vec<Hop>,
    pub probes: Vec<ProbeSummary>,
    pub verdict: Verdict,
}

/// Builds the trace from all sightings. `sent` gives each probe's injection time.
pub fn reconstruct(
    points: &[PointMeta],
    source_netns: &str,
    sent: &[(u32, u64)],
    sightings: &[Sighting],
    oracle: &dyn PathOracle,
) -> Reconstruction {
    let mut by_seq: BTreeMap<u32, Vec<&Sighting>> = BTreeMap::new();
    for (seq, _) in sent {
        by_seq.entry(*seq).or_default();
    }
    for s in sightings {
        if let Some(v) = by_seq.get_mut(&s.seq) {
            v.push(s);
        }
    }
    let mut per_probe = Vec::new();
    for (seq, mut seen) in by_seq {
        seen.sort_by(|a, b| {
            a.ts_ns
                .cmp(&b.ts_ns)
                .then_with(|| stack_order(points, a, b))
        });
        let t0 = sent
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, t)| *t)
            .unwrap_or(0);
        per_probe.push(probe_path(points, source_netns, seq, t0, &seen, oracle));
    }

    let probes: Vec<ProbeSummary> = per_probe.iter().map(|p| p.summary.clone()).collect();
    // The representative probe is the first of the worst outcome: a partial failure must not
    // hide behind the probes that got through.
    let worst = per_probe
        .iter()
        .enumerate()
        .max_by_key(|(i, p)| (severity(p.verdict.kind), std::cmp::Reverse(*i)))
        .map(|(i, _)| i);
    let Some(rep) = worst.and_then(|i| per_probe.into_iter().nth(i)) else {
        return Reconstruction {
            hops: Vec::new(),
            probes,
            verdict: Verdict {
                kind: VerdictKind::Timeout,
                detail: "no probe was sent".into(),
                last_seen: None,
                expected_next: None,
            },
        };
    };
    let mut verdict = rep.verdict;
    let total = probes.len();
    let same = probes.iter().filter(|p| p.verdict == verdict.kind).count();
    if total > 1 && same < total {
        let ok = probes.iter().filter(|p| p.verdict.is_success()).count();
        verdict.detail = format!(
            "{ok} of {total} probes got through; probe {} {}: {}",
            rep.summary.seq,
            verdict.kind.as_str(),
            verdict.detail
        );
    }
    Reconstruction {
        hops: rep.hops,
        probes,
        verdict,
    }
}

/// Orders two sightings with the same timestamp. The kernel stamps a packet once on receive,
/// so a frame entering a bridge port and then the bridge device (or the underlay device and
/// then the VXLAN device) carries one timestamp: order by how the stack walks the devices.
fn stack_order(points: &[PointMeta], a: &Sighting, b: &Sighting) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (Some(pa), Some(pb)) = (points.get(a.point), points.get(b.point)) else {
        return Ordering::Equal;
    };
    // Lower layers first: a frame enters through the device nearest the wire.
    let rank = |p: &Point| p.class.stack_rank();
    if pa.netns != pb.netns {
        // Leaving one namespace comes before entering the next.
        return match (a.direction, b.direction) {
            (Direction::Out, Direction::In) => Ordering::Less,
            (Direction::In, Direction::Out) => Ordering::Greater,
            _ => Ordering::Equal,
        };
    }
    match (a.direction, b.direction) {
        (Direction::In, Direction::In) => rank(pa).cmp(&rank(pb)),
        (Direction::Out, Direction::Out) => rank(pb).cmp(&rank(pa)),
        (Direction::In, Direction::Out) => Ordering::Less,
        (Direction::Out, Direction::In) => Ordering::Greater,
    }
}

fn severity(kind: VerdictKind) -> u8 {
    match kind {
        VerdictKind::Answered => 0,
        VerdictKind::Delivered => 1,
        VerdictKind::IcmpError => 2,
        VerdictKind::Timeout => 3,
        VerdictKind::Dropped => 4,
    }
}

struct ProbePath {
    hops: Vec<Hop>,
    verdict: Verdict,
    summary: ProbeSummary,
}

fn probe_path(
    points: &[PointMeta],
    source_netns: &str,
    seq: u32,
    t0: u64,
    seen: &[&Sighting],
    oracle: &dyn PathOracle,
) -> ProbePath {
    let mut hops: Vec<Hop> = Vec::new();
    for leg in [Leg::Forward, Leg::Return] {
        let mut prev: Option<&Sighting> = None;
        let mut visited: Vec<(usize, Direction)> = Vec::new();
        for s in seen.iter().copied().filter(|s| s.leg == leg) {
            // One hop per (point, direction) and leg: a retransmission or duplicate adds nothing.
            if visited.contains(&(s.point, s.direction)) {
                continue;
            }
            visited.push((s.point, s.direction));
            let Some(meta) = points.get(s.point) else {
                continue;
            };
            let events = events_between(prev, s, meta, leg);
            hops.push(Hop {
                index: hops.len(),
                netns: meta.netns.clone(),
                ifname: meta.ifname.clone(),
                kind: meta.class,
                node: meta.node.clone(),
                direction: s.direction,
                t_ns: s.ts_ns.saturating_sub(t0),
                leg,
                seq,
                packet: s.packet.clone(),
                outer: s.outer.clone(),
                fragments: s.fragments.clone(),
                events,
                conntrack: None,
            });
            prev = Some(s);
        }
    }
    let verdict = verdict_for(points, source_netns, seen, &mut hops, oracle);
    let rtt_ns = (verdict.kind == VerdictKind::Answered)
        .then(|| {
            hops.iter()
                .rev()
                .find(|h| h.leg == Leg::Return && h.netns == source_netns)
                .map(|h| h.t_ns)
        })
        .flatten();
    let summary = ProbeSummary {
        seq,
        verdict: verdict.kind,
        path: hops
            .iter()
            .map(|h| format!("{}/{}:{}", h.netns, h.ifname, h.direction))
            .collect(),
        rtt_ns,
    };
    ProbePath {
        hops,
        verdict,
        summary,
    }
}

fn endpoint(p: &PacketView, src: bool) -> String {
    if src {
        p.source().to_string()
    } else {
        p.destination().to_string()
    }
}

/// What changed between the previous hop of the same leg and this one.
fn events_between(
    prev: Option<&Sighting>,
    cur: &Sighting,
    meta: &PointMeta,
    leg: Leg,
) -> Vec<HopEvent> {
    let mut events = Vec::new();
    if let SightingKind::IcmpError {
        sender, name, mtu, ..
    } = &cur.kind
    {
        if prev.map(|p| p.kind != cur.kind).unwrap_or(true) {
            let mtu = mtu
                .map(|m| format!(" (next-hop MTU {m})"))
                .unwrap_or_default();
            events.push(HopEvent {
                kind: EventType::Icmp,
                from: Some(sender.to_string()),
                to: Some(cur.packet.dst.to_string()),
                detail: format!("ICMP {name}{mtu} from {sender} about the probe"),
            });
        }
    }
    let Some(prev) = prev else { return events };
    let (a, b) = (&prev.packet, &cur.packet);
    let ns = &meta.netns;
    if prev.kind != cur.kind {
        // A different packet (the probe turned into an error): no rewrite to compare.
        return events;
    }
    if a.source() != b.source() {
        events.push(HopEvent {
            kind: EventType::Snat,
            from: Some(endpoint(a, true)),
            to: Some(endpoint(b, true)),
            detail: match leg {
                Leg::Forward => format!(
                    "SNAT in {ns}: source {} → {}",
                    endpoint(a, true),
                    endpoint(b, true)
                ),
                Leg::Return => format!(
                    "un-DNAT in {ns}: reply source {} → {}",
                    endpoint(a, true),
                    endpoint(b, true)
                ),
            },
        });
    }
    if a.destination() != b.destination() {
        events.push(HopEvent {
            kind: EventType::Dnat,
            from: Some(endpoint(a, false)),
            to: Some(endpoint(b, false)),
            detail: match leg {
                Leg::Forward => format!(
                    "DNAT in {ns}: destination {} → {}",
                    endpoint(a, false),
                    endpoint(b, false)
                ),
                Leg::Return => format!(
                    "un-SNAT in {ns}: reply destination {} → {}",
                    endpoint(a, false),
                    endpoint(b, false)
                ),
            },
        });
    }
    if cur.outer.len() > prev.outer.len() {
        if let Some(o) = cur.outer.first() {
            let vni = o.vni.map(|v| format!(" vni {v}")).unwrap_or_default();
            let port = o
                .dport
                .map(|p| format!(" udp dport {p}"))
                .unwrap_or_default();
            events.push(HopEvent {
                kind: EventType::Encap,
                from: None,
                to: Some(format!("{} → {}", o.src, o.dst)),
                detail: format!(
                    "{} encapsulation in {ns}{vni}{port}: outer {} → {}, {} bytes",
                    o.kind.to_uppercase(),
                    o.src,
                    o.dst,
                    o.len
                ),
            });
        }
    } else if cur.outer.len() < prev.outer.len() {
        if let Some(o) = prev.outer.first() {
            let vni = o.vni.map(|v| format!(" vni {v}")).unwrap_or_default();
            events.push(HopEvent {
                kind: EventType::Decap,
                from: Some(format!("{} → {}", o.src, o.dst)),
                to: None,
                detail: format!("{} decapsulation in {ns}{vni}", o.kind.to_uppercase()),
            });
        }
    }
    if b.ttl < a.ttl {
        events.push(HopEvent {
            kind: EventType::Ttl,
            from: Some(a.ttl.to_string()),
            to: Some(b.ttl.to_string()),
            detail: format!("routed by {ns}: TTL {} → {}", a.ttl, b.ttl),
        });
    }
    match (&prev.fragments, &cur.fragments) {
        (None, Some(f)) => events.push(HopEvent {
            kind: EventType::Fragment,
            from: None,
            to: Some(format!("{} fragments", f.count)),
            detail: format!(
                "{} packet split into {} fragments ({} bytes) leaving through {} (MTU {})",
                f.layer,
                f.count,
                f.sizes
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(" + "),
                meta.ifname,
                meta.mtu
            ),
        }),
        (Some(f), None) => events.push(HopEvent {
            kind: EventType::Reassemble,
            from: Some(format!("{} fragments", f.count)),
            to: None,
            detail: format!("reassembled from {} fragments in {ns}", f.count),
        }),
        _ => {}
    }
    events
}

fn verdict_for(
    points: &[PointMeta],
    source_netns: &str,
    seen: &[&Sighting],
    hops: &mut [Hop],
    oracle: &dyn PathOracle,
) -> Verdict {
    let last_forward = hops.iter().rposition(|h| h.leg == Leg::Forward);
    if let Some(err) = seen
        .iter()
        .find(|s| matches!(s.kind, SightingKind::IcmpError { .. }))
    {
        if let SightingKind::IcmpError {
            sender, name, mtu, ..
        } = &err.kind
        {
            let mtu = mtu
                .map(|m| format!(", next-hop MTU {m}"))
                .unwrap_or_default();
            let at = points.get(err.point).map(|p| p.name()).unwrap_or_default();
            return Verdict {
                kind: VerdictKind::IcmpError,
                detail: format!("{sender} sent ICMP {name}{mtu} (first seen at {at})"),
                last_seen: last_forward,
                expected_next: None,
            };
        }
    }
    let replies: Vec<&&Sighting> = seen
        .iter()
        .filter(|s| s.kind == SightingKind::Reply)
        .collect();
    if !replies.is_empty() {
        let home = replies.iter().rev().find(|s| {
            points
                .get(s.point)
                .map(|p| p.netns == source_netns)
                .unwrap_or(false)
        });
        if let Some(home) = home {
            let sender = replies
                .first()
                .map(|f| endpoint(&f.packet, true))
                .unwrap_or_default();
            let seen_as = endpoint(&home.packet, true);
            let via = if sender != seen_as {
                format!(" (sent by {sender})")
            } else {
                String::new()
            };
            return Verdict {
                kind: VerdictKind::Answered,
                detail: format!("{} from {seen_as}{via}", home.packet.what),
                last_seen: last_forward,
                expected_next: None,
            };
        }
        let last = hops.len().checked_sub(1);
        return dropped(points, seen, hops, last, Leg::Return, oracle, "the reply");
    }
    let Some(last) = last_forward else {
        return Verdict {
            kind: VerdictKind::Timeout,
            detail: "the probe was not seen at any capture point, not even leaving the source"
                .into(),
            last_seen: None,
            expected_next: None,
        };
    };
    let h = &hops[last];
    let arrived = h.direction == Direction::In && oracle.owners(h.packet.dst).contains(&h.netns);
    if arrived {
        return Verdict {
            kind: VerdictKind::Delivered,
            detail: format!(
                "reached {} in {} (no reply seen)",
                endpoint(&h.packet, false),
                h.netns
            ),
            last_seen: Some(last),
            expected_next: None,
        };
    }
    dropped(
        points,
        seen,
        hops,
        Some(last),
        Leg::Forward,
        oracle,
        "the probe",
    )
}

#[allow(clippy::too_many_arguments)]
fn dropped(
    points: &[PointMeta],
    seen: &[&Sighting],
    hops: &mut [Hop],
    last: Option<usize>,
    leg: Leg,
    oracle: &dyn PathOracle,
    what: &str,
) -> Verdict {
    let Some(last) = last else {
        return Verdict {
            kind: VerdictKind::Dropped,
            detail: format!("{what} vanished"),
            last_seen: None,
            expected_next: None,
        };
    };
    let h = &hops[last];
    let meta = points
        .iter()
        .find(|p| p.netns == h.netns && p.ifname == h.ifname);
    let dir = h.direction;
    let outer_len = h.outer.first().map(|o| o.len);
    let exp = meta
        .map(|m| oracle.expected_next(m, dir, &h.packet, outer_len))
        .unwrap_or(Expectation {
            next: None,
            explanation: String::new(),
        });
    let _ = seen;
    let leg_word = if leg == Leg::Return {
        " on its way back"
    } else {
        ""
    };
    let mut detail = format!(
        "{what} was last seen{leg_word} at {}/{} ({})",
        h.netns, h.ifname, h.direction
    );
    if let Some(next) = &exp.next {
        detail.push_str(&format!(" and never appeared at {next}"));
    }
    if !exp.explanation.is_empty() {
        detail.push_str(": ");
        detail.push_str(&exp.explanation);
    }
    hops[last].events.push(HopEvent {
        kind: EventType::Drop,
        from: None,
        to: exp.next.clone(),
        detail: format!(
            "last seen here{}",
            exp.next
                .as_ref()
                .map(|n| format!("; expected next at {n}"))
                .unwrap_or_default()
        ),
    });
    Verdict {
        kind: VerdictKind::Dropped,
        detail,
        last_seen: Some(last),
        expected_next: exp.next,
    }
}
