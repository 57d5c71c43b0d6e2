//! Reconstruction: the sightings of every probe, ordered in time, become a path of hops per
//! leg; consecutive hops are compared to name what changed between them (NAT, encapsulation,
//! fragmentation, TTL, ICMP errors); each probe gets a verdict, and the trace an overall one.
//! Pure logic: topology questions (where should the probe have appeared next?) are asked of a
//! [`PathOracle`] — in dye, one answering from the snapshot.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{Direction, PointRef};
use crate::observe::{Sighting, SightingKind};
use crate::path::{
    Expectation, Hop, HopEvent, Leg, Next, Outcome, Packet, Partial, ProbeSummary, Rewrite,
    Subject, Verdict, VerdictKind,
};
use crate::snapshot::Point;

/// What reconstruction needs to know about a capture point.
pub type PointMeta = Point;

/// Topology knowledge for verdicts.
pub trait PathOracle {
    /// The probe was last seen at `last` (as `packet`); where should it have appeared next?
    fn expected_next(
        &self,
        last: &PointMeta,
        direction: Direction,
        packet: &Packet,
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
        .max_by_key(|(i, p)| (severity(p.verdict.kind()), std::cmp::Reverse(*i)))
        .map(|(i, _)| i);
    let Some(rep) = worst.and_then(|i| per_probe.into_iter().nth(i)) else {
        return Reconstruction {
            hops: Vec::new(),
            probes,
            verdict: Verdict {
                outcome: Outcome::Timeout { sent: false },
                last_seen: None,
                partial: None,
                dropped_by: None,
                kernel_drop: None,
            },
        };
    };
    let mut verdict = rep.verdict;
    let total = probes.len();
    let same = probes
        .iter()
        .filter(|p| p.verdict == verdict.kind())
        .count();
    if total > 1 && same < total {
        verdict.partial = Some(Partial {
            ok: probes.iter().filter(|p| p.verdict.is_success()).count(),
            total,
            seq: rep.summary.seq,
        });
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
        VerdictKind::Unobserved => 4,
        VerdictKind::Dropped => 5,
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
            let events = events_between(prev, s, meta);
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
                rules: Vec::new(),
            });
            prev = Some(s);
        }
    }
    let verdict = verdict_for(points, source_netns, seen, &mut hops, oracle);
    let rtt_ns = (verdict.kind() == VerdictKind::Answered)
        .then(|| {
            hops.iter()
                .rev()
                .find(|h| h.leg == Leg::Return && h.netns == source_netns)
                .map(|h| h.t_ns)
        })
        .flatten();
    let summary = ProbeSummary {
        seq,
        verdict: verdict.kind(),
        path: hops
            .iter()
            .map(|h| Next {
                at: h.at(),
                direction: h.direction,
            })
            .collect(),
        rtt_ns,
    };
    ProbePath {
        hops,
        verdict,
        summary,
    }
}

/// What changed between the previous hop of the same leg and this one.
fn events_between(prev: Option<&Sighting>, cur: &Sighting, meta: &PointMeta) -> Vec<HopEvent> {
    let mut events = Vec::new();
    let ns = &meta.netns;
    if let SightingKind::IcmpError {
        sender,
        kind,
        ty,
        code,
        v6,
        mtu,
    } = &cur.kind
    {
        if prev.map(|p| p.kind != cur.kind).unwrap_or(true) {
            events.push(HopEvent::Icmp {
                sender: *sender,
                to: cur.packet.dst,
                kind: *kind,
                ty: *ty,
                code: *code,
                v6: *v6,
                mtu: *mtu,
            });
        }
    }
    let Some(prev) = prev else { return events };
    let (a, b) = (&prev.packet, &cur.packet);
    if prev.kind != cur.kind {
        // A different packet (the probe turned into an error): no rewrite to compare.
        return events;
    }
    if a.source() != b.source() {
        events.push(HopEvent::Nat {
            rewrite: Rewrite::Source,
            netns: ns.clone(),
            from: a.source(),
            to: b.source(),
        });
    }
    if a.destination() != b.destination() {
        events.push(HopEvent::Nat {
            rewrite: Rewrite::Destination,
            netns: ns.clone(),
            from: a.destination(),
            to: b.destination(),
        });
    }
    if cur.outer.len() > prev.outer.len() {
        if let Some(o) = cur.outer.first() {
            events.push(HopEvent::Encap {
                netns: ns.clone(),
                outer: o.clone(),
            });
        }
    } else if cur.outer.len() < prev.outer.len() {
        if let Some(o) = prev.outer.first() {
            events.push(HopEvent::Decap {
                netns: ns.clone(),
                outer: o.clone(),
            });
        }
    }
    if b.ttl < a.ttl {
        events.push(HopEvent::Ttl {
            netns: ns.clone(),
            from: a.ttl,
            to: b.ttl,
        });
    }
    if let (Some(po), Some(co)) = (prev.outer.first(), cur.outer.first()) {
        if prev.outer.len() == cur.outer.len() && co.ttl < po.ttl {
            events.push(HopEvent::OuterTtl {
                netns: ns.clone(),
                from: po.ttl,
                to: co.ttl,
            });
        }
    }
    match (&prev.fragments, &cur.fragments) {
        (None, Some(f)) => events.push(HopEvent::Fragment {
            fragments: f.clone(),
            ifname: meta.ifname.clone(),
            mtu: meta.mtu,
        }),
        (Some(f), None) => events.push(HopEvent::Reassemble {
            netns: ns.clone(),
            count: f.sizes.len(),
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
    let verdict = |outcome, last_seen| Verdict {
        outcome,
        last_seen,
        partial: None,
        dropped_by: None,
        kernel_drop: None,
    };
    if let Some(err) = seen
        .iter()
        .find(|s| matches!(s.kind, SightingKind::IcmpError { .. }))
    {
        if let SightingKind::IcmpError {
            sender,
            kind,
            ty,
            code,
            v6,
            mtu,
        } = &err.kind
        {
            let at = points
                .get(err.point)
                .map(|p| p.at())
                .unwrap_or_else(|| PointRef::new("?", "?"));
            return verdict(
                Outcome::IcmpError {
                    sender: *sender,
                    kind: *kind,
                    ty: *ty,
                    code: *code,
                    v6: *v6,
                    mtu: *mtu,
                    first_seen_at: at,
                },
                last_forward,
            );
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
            let seen_as = home.packet.source();
            let sent_by = replies
                .first()
                .map(|f| f.packet.source())
                .filter(|s| *s != seen_as);
            return verdict(
                Outcome::Answered {
                    answer: home.packet.transport,
                    seen_as,
                    sent_by,
                },
                last_forward,
            );
        }
        let last = hops.len().checked_sub(1);
        return dropped(points, hops, last, Leg::Return, oracle, Subject::Reply);
    }
    let Some(last) = last_forward else {
        return verdict(Outcome::Timeout { sent: true }, None);
    };
    let h = &hops[last];
    let arrived = h.direction == Direction::In && oracle.owners(h.packet.dst).contains(&h.netns);
    if arrived {
        return verdict(
            Outcome::Delivered {
                to: h.packet.destination(),
                netns: h.netns.clone(),
            },
            Some(last),
        );
    }
    dropped(
        points,
        hops,
        Some(last),
        Leg::Forward,
        oracle,
        Subject::Probe,
    )
}

fn dropped(
    points: &[PointMeta],
    hops: &mut [Hop],
    last: Option<usize>,
    leg: Leg,
    oracle: &dyn PathOracle,
    subject: Subject,
) -> Verdict {
    let Some(last) = last else {
        return Verdict {
            outcome: Outcome::Dropped {
                subject,
                leg,
                last: None,
                expectation: None,
            },
            last_seen: None,
            partial: None,
            dropped_by: None,
            kernel_drop: None,
        };
    };
    let h = &hops[last];
    let meta = points
        .iter()
        .find(|p| p.netns == h.netns && p.ifname == h.ifname);
    let outer_len = h.outer.first().map(|o| o.len);
    let exp = meta.map(|m| oracle.expected_next(m, h.direction, &h.packet, outer_len));
    let at = Next {
        at: h.at(),
        direction: h.direction,
    };
    hops[last].events.push(HopEvent::Drop {
        expected_next: exp.as_ref().and_then(|e| e.next.clone()),
    });
    Verdict {
        outcome: Outcome::Dropped {
            subject,
            leg,
            last: Some(at),
            expectation: exp.map(Box::new),
        },
        last_seen: Some(last),
        partial: None,
        dropped_by: None,
        kernel_drop: None,
    }
}
