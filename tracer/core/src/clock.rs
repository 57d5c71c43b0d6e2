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

/// Offsets of every node in `nodes` against `reference`: from the probe where it crossed both
/// ways, else from `exchanged` (each node's RPC exchange against the coordinator's clock,
/// the reference's included), else unknown (left out).
pub fn offsets(
    reference: &str,
    nodes: &[String],
    from_probe: &[(String, Exchange)],
    exchanged: &[(String, Exchange)],
) -> Vec<NodeOffset> {
    let rpc = |n: &str| exchanged.iter().find(|(m, _)| m == n).map(|(_, e)| *e);
    let mut out = vec![NodeOffset {
        node: reference.to_string(),
        reference: reference.to_string(),
        offset_ns: 0,
        bound_ns: 0,
        method: Method::Reference,
        exchange: None,
    }];
    for node in nodes.iter().filter(|n| *n != reference) {
        if let Some((_, e)) = from_probe.iter().find(|(m, _)| m == node) {
            out.push(NodeOffset {
                node: node.clone(),
                reference: reference.to_string(),
                offset_ns: e.offset_ns(),
                bound_ns: e.bound_ns(),
                method: Method::Probe,
                exchange: Some(*e),
            });
        } else if let (Some(r), Some(n)) = (rpc(reference), rpc(node)) {
            // Both against the coordinator's clock: the difference is the node's against the
            // reference, uncertain by both bounds.
            out.push(NodeOffset {
                node: node.clone(),
                reference: reference.to_string(),
                offset_ns: n.offset_ns() - r.offset_ns(),
                bound_ns: n.bound_ns() + r.bound_ns(),
                method: Method::Exchange,
                exchange: Some(n),
            });
        }
    }
    out
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
    fn the_tightest_exchange_wins_and_the_rpc_fallback_adds_both_bounds() {
        let loose = crossing(1_000, 700_000, 400_000, 10_000, 100_000);
        let tight = crossing(9_000_000, 700_000, 30_000, 10_000, 30_000);
        assert_eq!(best(&[loose, tight]), Some(tight));
        let coord_a = crossing(1_000_000, 2_000, 50_000, 1_000, 50_000);
        let coord_b = crossing(1_000_000, 52_000, 50_000, 1_000, 50_000);
        let o = offsets(
            "a",
            &["a".to_string(), "b".to_string()],
            &[],
            &[("a".into(), coord_a), ("b".into(), coord_b)],
        );
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].method, Method::Exchange);
        assert_eq!(o[1].offset_ns, 50_000);
        assert_eq!(o[1].bound_ns, 100_000);
        // The probe's estimate is preferred when there is one.
        let o = offsets(
            "a",
            &["b".to_string()],
            &[("b".into(), tight)],
            &[("a".into(), coord_a), ("b".into(), coord_b)],
        );
        assert_eq!(o[1].method, Method::Probe);
        assert_eq!(o[1].offset_ns, 700_000);
    }
}
