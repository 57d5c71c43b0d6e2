//! Clock offsets between nodes, so that hops captured by different machines share one
//! timeline. Pure arithmetic over timestamps; the coordinator gathers them.
//!
//! Four timestamps, NTP's way: `t1` leaves A (A's clock), `t2` arrives at B (B's clock), `t3`
//! leaves B back (B's clock), `t4` arrives at A (A's clock). B's clock is ahead of A's by
//! θ = ((t2 − t1) + (t3 − t4)) / 2, known to within ±δ/2 where δ = (t4 − t1) − (t3 − t2) is the
//! round trip spent outside both clocks. The best source is the probe itself: the last sighting
//! of its forward leg on A, the first on B, the last of its return leg on B, the first back on
//! A — so δ is only the underlay between the two nodes, and with θ removed neither crossing can
//! come out negative (each becomes δ/2). When the probe did not come back, an RPC exchange with
//! the agent (coordinator send, agent receive, agent send, coordinator receive) stands in.

use serde::{Deserialize, Serialize};

use crate::observe::Sighting;
use crate::path::Leg;
use crate::snapshot::Point;

/// One four-timestamp measurement, in ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub t1: u64,
    pub t2: u64,
    pub t3: u64,
    pub t4: u64,
}

impl Exchange {
    /// θ: how far the far clock is ahead of the near one (ns, signed).
    pub fn offset_ns(&self) -> i64 {
        let fwd = self.t2 as i128 - self.t1 as i128;
        let back = self.t3 as i128 - self.t4 as i128;
        ((fwd + back) / 2) as i64
    }

    /// δ: the round trip spent outside both clocks (never negative).
    pub fn delay_ns(&self) -> u64 {
        let total = self.t4 as i128 - self.t1 as i128;
        let inside = self.t3 as i128 - self.t2 as i128;
        (total - inside).max(0) as u64
    }

    /// ±δ/2: the offset is certain to within this.
    pub fn bound_ns(&self) -> u64 {
        self.delay_ns().div_ceil(2)
    }
}

/// The exchange with the smallest delay: the tightest bound.
pub fn best(exchanges: &[Exchange]) -> Option<Exchange> {
    exchanges.iter().copied().min_by_key(Exchange::delay_ns)
}

/// How an offset was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// From the probe crossing between the nodes both ways.
    Probe,
    /// From an RPC clock exchange with the node's agent.
    Exchange,
    /// The reference clock itself.
    Reference,
}

/// A node's clock against the reference node's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOffset {
    pub node: String,
    /// The node whose clock the timeline uses (the probe's source node).
    pub reference: String,
    /// How far `node`'s clock is ahead of the reference's.
    pub offset_ns: i64,
    /// The offset is certain to ±this.
    pub bound_ns: u64,
    pub method: Method,
    /// The measurement it came from (for the probe: its four sightings' timestamps).
    pub exchange: Option<Exchange>,
}

/// For each node other than `reference` that the probe reached and came back from directly,
/// the four timestamps of its crossings: the last forward sighting on the reference node, the
/// first forward sighting on the node, the last return sighting there, the first return
/// sighting back on the reference node — the best (smallest delay) over all probes.
pub fn probe_exchanges(
    sightings: &[Sighting],
    points: &[Point],
    reference: &str,
) -> Vec<(String, Exchange)> {
    let node_of = |s: &Sighting| points.get(s.point).map(|p| p.node.as_str());
    let mut nodes: Vec<&str> = sightings
        .iter()
        .filter_map(node_of)
        .filter(|n| *n != reference)
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut seqs: Vec<u32> = sightings.iter().map(|s| s.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut out = Vec::new();
    for node in nodes {
        let mut found = Vec::new();
        for &seq in &seqs {
            let on = |n: &str, leg: Leg| -> Vec<u64> {
                sightings
                    .iter()
                    .filter(|s| s.seq == seq && s.leg == leg && node_of(s) == Some(n))
                    .map(|s| s.ts_ns)
                    .collect()
            };
            let (Some(t1), Some(t2), Some(t3), Some(t4)) = (
                on(reference, Leg::Forward).into_iter().max(),
                on(node, Leg::Forward).into_iter().min(),
                on(node, Leg::Return).into_iter().max(),
                on(reference, Leg::Return).into_iter().min(),
            ) else {
                continue;
            };
            found.push(Exchange { t1, t2, t3, t4 });
        }
        if let Some(e) = best(&found) {
            out.push((node.to_string(), e));
        }
    }
    out
}

/// Each node's clock against the reference node's, for timestamps that were already moved by
/// `used` (each node's first estimate, from the RPC exchange, applied while the frames
/// streamed in): from the probe where it crossed both ways (`from_probe`, taken from those
/// moved timestamps), else the RPC exchange (`exchanged`, each node's against the
/// coordinator's clock, the reference's included) narrowed by causality (`crossings`); nodes
/// with neither are left out. With each offset comes the shift still to apply to that node's
/// moved timestamps.
pub fn timeline(
    reference: &str,
    nodes: &[String],
    used: &[(String, i64)],
    from_probe: &[(String, Exchange)],
    exchanged: &[(String, Exchange)],
    crossings: &[Crossings],
) -> Vec<(NodeOffset, i64)> {
    let find =
        |list: &[(String, Exchange)], n: &str| list.iter().find(|(m, _)| m == n).map(|(_, e)| *e);
    let mut out = vec![(
        NodeOffset {
            node: reference.to_string(),
            reference: reference.to_string(),
            offset_ns: 0,
            bound_ns: 0,
            method: Method::Reference,
            exchange: None,
        },
        0,
    )];
    for node in nodes.iter().filter(|n| *n != reference) {
        let moved = used
            .iter()
            .find(|(m, _)| m == node)
            .map(|(_, o)| *o)
            .unwrap_or(0);
        if let Some(e) = find(from_probe, node) {
            // Back to the node's own clock for the record of what was measured.
            let own = |t: u64| t.saturating_add_signed(moved);
            out.push((
                NodeOffset {
                    node: node.clone(),
                    reference: reference.to_string(),
                    offset_ns: moved + e.offset_ns(),
                    bound_ns: e.bound_ns(),
                    method: Method::Probe,
                    exchange: Some(Exchange {
                        t2: own(e.t2),
                        t3: own(e.t3),
                        ..e
                    }),
                },
                e.offset_ns(),
            ));
        } else if let (Some(n), Some(r)) = (find(exchanged, node), find(exchanged, reference)) {
            // Both against the coordinator's clock: uncertain by both bounds, then narrowed by
            // what the probe's one-way crossings allow.
            let range = crossings
                .iter()
                .find(|c| c.node == *node)
                .map(Crossings::range)
                .unwrap_or((None, None));
            let (shift, bound) = refine(0, n.bound_ns() + r.bound_ns(), range);
            out.push((
                NodeOffset {
                    node: node.clone(),
                    reference: reference.to_string(),
                    offset_ns: moved + shift,
                    bound_ns: bound,
                    method: Method::Exchange,
                    exchange: Some(n),
                },
                shift,
            ));
        }
    }
    out
}

/// The probe's one-way crossings between the reference node and `node`, each as (left, arrived)
/// in the sending and the receiving node's clock: per probe, the last sighting of a leg on the
/// node it left and the first on the node it reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Crossings {
    pub node: String,
    /// Reference → node (forward leg).
    pub to_node: Vec<(u64, u64)>,
    /// Node → reference (return leg).
    pub from_node: Vec<(u64, u64)>,
}

impl Crossings {
    /// What causality allows of `node`'s offset: nothing arrives before it left, so
    /// θ ≤ arrived − left going to the node and θ ≥ left − arrived coming back.
    pub fn range(&self) -> (Option<i64>, Option<i64>) {
        let d = |(a, b): &(u64, u64)| *b as i64 - *a as i64;
        let upper = self.to_node.iter().map(d).min();
        let lower = self.from_node.iter().map(|c| -d(c)).max();
        (lower, upper)
    }
}

/// Every node's crossings with `reference`, from the sightings of each probe.
pub fn crossings(sightings: &[Sighting], points: &[Point], reference: &str) -> Vec<Crossings> {
    let node_of = |s: &Sighting| points.get(s.point).map(|p| p.node.as_str());
    let mut out: Vec<Crossings> = Vec::new();
    let mut seqs: Vec<u32> = sightings.iter().map(|s| s.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    for seq in seqs {
        let of = |n: &str, leg: Leg| -> Vec<u64> {
            sightings
                .iter()
                .filter(|s| s.seq == seq && s.leg == leg && node_of(s) == Some(n))
                .map(|s| s.ts_ns)
                .collect()
        };
        let mut nodes: Vec<&str> = sightings
            .iter()
            .filter(|s| s.seq == seq)
            .filter_map(node_of)
            .filter(|n| *n != reference)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        for node in nodes {
            let idx = match out.iter().position(|c| c.node == node) {
                Some(i) => i,
                None => {
                    out.push(Crossings {
                        node: node.to_string(),
                        ..Crossings::default()
                    });
                    out.len() - 1
                }
            };
            let c = &mut out[idx];
            let (rf, nf) = (of(reference, Leg::Forward), of(node, Leg::Forward));
            if let (Some(left), Some(arrived)) = (rf.iter().max(), nf.iter().min()) {
                c.to_node.push((*left, *arrived));
            }
            let (nr, rr) = (of(node, Leg::Return), of(reference, Leg::Return));
            if let (Some(left), Some(arrived)) = (nr.iter().max(), rr.iter().min()) {
                c.from_node.push((*left, *arrived));
            }
        }
    }
    out
}

/// An offset estimate `estimate ± bound` narrowed by what causality allows (`range`, as
/// [`Crossings::range`] gives it): the middle of what is left, and its half-width. When the
/// estimate contradicts causality (its bound was optimistic), the causal limit it crossed.
pub fn refine(estimate: i64, bound: u64, range: (Option<i64>, Option<i64>)) -> (i64, u64) {
    let b = bound as i64;
    let (mut lo, mut hi) = (estimate - b, estimate + b);
    let (lower, upper) = range;
    if let Some(l) = lower {
        lo = lo.max(l);
    }
    if let Some(u) = upper {
        hi = hi.min(u);
    }
    if lo <= hi {
        return ((lo + hi) / 2, ((hi - lo) as u64).div_ceil(2));
    }
    match (lower, upper) {
        (_, Some(u)) if u < estimate => (u, bound),
        (Some(l), _) => (l, bound),
        _ => (estimate, bound),
    }
}

/// A timestamp of `node`'s clock on the reference's timeline.
pub fn correct(offsets: &[NodeOffset], node: &str, ts_ns: u64) -> u64 {
    match offsets.iter().find(|o| o.node == node) {
        Some(o) => ts_ns.saturating_add_signed(-o.offset_ns),
        None => ts_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// B is `theta` ahead; the underlay takes `fwd` one way and `back` the other; B holds the
    /// probe `inside` before answering.
    fn crossing(t1: u64, theta: i64, fwd: u64, inside: u64, back: u64) -> Exchange {
        let t2 = (t1 + fwd).saturating_add_signed(theta);
        let t3 = t2 + inside;
        let t4 = t3.saturating_add_signed(-theta) + back;
        Exchange { t1, t2, t3, t4 }
    }

    #[test]
    fn a_symmetric_crossing_gives_the_exact_offset() {
        for theta in [50_000_000i64, -50_000_000, 37_000_000, 0] {
            let e = crossing(1_000_000_000_000, theta, 20_000, 300_000, 20_000);
            assert_eq!(e.offset_ns(), theta);
            assert_eq!(e.delay_ns(), 40_000);
            assert_eq!(e.bound_ns(), 20_000);
        }
    }

    #[test]
    fn an_asymmetric_crossing_errs_by_half_the_asymmetry_within_the_bound() {
        let e = crossing(1_000_000_000_000, -50_000_000, 30_000, 100_000, 10_000);
        let err = (e.offset_ns() - -50_000_000).unsigned_abs();
        assert_eq!(err, 10_000);
        assert!(err <= e.bound_ns());
    }

    #[test]
    fn corrected_crossings_are_never_negative() {
        let e = crossing(5_000_000_000, 50_000_000, 25_000, 80_000, 5_000);
        let o = vec![NodeOffset {
            node: "b".into(),
            reference: "a".into(),
            offset_ns: e.offset_ns(),
            bound_ns: e.bound_ns(),
            method: Method::Probe,
            exchange: Some(e),
        }];
        let t2 = correct(&o, "b", e.t2);
        let t3 = correct(&o, "b", e.t3);
        assert!(t2 >= e.t1, "arrival before departure");
        assert!(e.t4 >= t3, "return arrival before departure");
        // Each crossing is half the round trip outside both nodes.
        assert_eq!(t2 - e.t1, 15_000);
        assert_eq!(e.t4 - t3, 15_000);
        assert_eq!(correct(&o, "a", 7), 7);
    }

    #[test]
    fn causality_narrows_an_rpc_estimate_that_would_put_an_arrival_before_its_departure() {
        // The probe left A at 1_000_000 and reached B at 1_010_000 in B's clock: B cannot be
        // more than 10 µs ahead. An RPC estimate of +300 µs ± 800 µs is cut to [-500, +10] µs.
        let c = Crossings {
            node: "b".into(),
            to_node: vec![(1_000_000, 1_010_000)],
            from_node: Vec::new(),
        };
        assert_eq!(c.range(), (None, Some(10_000)));
        let (theta, bound) = refine(300_000, 800_000, c.range());
        assert_eq!(theta, -245_000);
        assert_eq!(bound, 255_000);
        assert!(1_010_000i64 - theta >= 1_000_000, "arrival after departure");
        // With the way back too: B left at 2_000_000 (B), A got it at 2_004_000: θ ≥ -4 µs.
        let both = Crossings {
            from_node: vec![(2_000_000, 2_004_000)],
            ..c.clone()
        };
        assert_eq!(both.range(), (Some(-4_000), Some(10_000)));
        assert_eq!(refine(300_000, 800_000, both.range()), (3_000, 7_000));
        // An estimate whose bound misses the causal range: the limit it crossed.
        assert_eq!(refine(900_000, 100_000, c.range()), (10_000, 100_000));
        // Nothing crossed: the estimate as it is.
        assert_eq!(refine(5, 7, (None, None)), (5, 7));
    }

    #[test]
    fn the_tightest_exchange_wins_and_the_rpc_fallback_adds_both_bounds() {
        let loose = crossing(1_000, 700_000, 400_000, 10_000, 100_000);
        let tight = crossing(9_000_000, 700_000, 30_000, 10_000, 30_000);
        assert_eq!(best(&[loose, tight]), Some(tight));
        let coord_a = crossing(1_000_000, 2_000, 50_000, 1_000, 50_000);
        let coord_b = crossing(1_000_000, 52_000, 50_000, 1_000, 50_000);
        let nodes = ["a".to_string(), "b".to_string()];
        let exchanged = [("a".to_string(), coord_a), ("b".to_string(), coord_b)];
        // b's frames were already moved by 50 µs; nothing crossed: the RPC estimate stands.
        let used = [("b".to_string(), 50_000)];
        let o = timeline("a", &nodes, &used, &[], &exchanged, &[]);
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].0.method, Method::Exchange);
        assert_eq!(o[1].0.offset_ns, 50_000);
        assert_eq!(o[1].0.bound_ns, 100_000);
        assert_eq!(o[1].1, 0);
        // The probe's estimate is preferred when there is one: 700 µs more than already moved.
        let o = timeline("a", &nodes, &used, &[("b".into(), tight)], &exchanged, &[]);
        assert_eq!(o[1].0.method, Method::Probe);
        assert_eq!(o[1].0.offset_ns, 750_000);
        assert_eq!(o[1].1, 700_000);
        assert_eq!(o[1].0.exchange.unwrap().t2, tight.t2 + 50_000);
        // A one-way crossing caps the RPC estimate: the moved arrival was 10 µs after leaving.
        let c = Crossings {
            node: "b".into(),
            to_node: vec![(1_000_000, 1_010_000)],
            from_node: Vec::new(),
        };
        let o = timeline("a", &nodes, &used, &[], &exchanged, &[c]);
        assert_eq!(o[1].1, -45_000);
        assert_eq!(o[1].0.offset_ns, 5_000);
        assert_eq!(o[1].0.bound_ns, 55_000);
    }
}
