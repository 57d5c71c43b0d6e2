//! The size search, as pure logic: which probe size to send next, given what every size sent so
//! far did. It converges on the largest size that passes, `lo`, and the smallest that fails,
//! `hi = lo + 1`.
//!
//! Order of preference for the next size:
//! 1. a second attempt at a size that vanished silently (one loss is not yet a limit);
//! 2. the smallest size first, to prove the path works at all;
//! 3. the largest size the source can send (a healthy path is done in two probes);
//! 4. a hint — the MTU an ICMP Fragmentation Needed / Packet Too Big named, or the size the
//!    topology says fits through the link where a probe vanished — and, after a topology hint
//!    passes, one byte more to prove it exact (an ICMP hint bounds the search by itself: the
//!    router said its next hop carries no more);
//! 5. bisection over the common MTUs (plateaus, RFC 1191) strictly between the bounds;
//! 6. bisection over bytes.

use std::collections::BTreeMap;

/// Common link MTUs, largest first: jumbo, Ethernet and its tunnels (PPPoE 1492, IPIP 1480,
/// GRE 1476, IPsec ~1460, VXLAN over 1500 1450, over 9000 8950, Geneve 1442), the usual
/// hand-picked overlay values, the IPv6 minimum, and the IPv4 historical floor.
pub const PLATEAUS: &[u32] = &[
    9000, 8950, 8900, 4352, 1500, 1492, 1480, 1476, 1460, 1450, 1442, 1440, 1420, 1400, 1380, 1350,
    1300, 1280, 1006, 576, 552, 508, 296, 68,
];

/// What one probe of a given size did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It reached the destination (answered, or seen delivered).
    Passed,
    /// A router said it is too big, advertising `mtu` for its next hop (None or a bogus value
    /// when the ICMP carried 0 or a value not below the probe size).
    Signalled { mtu: Option<u32> },
    /// It vanished. `fits` is the size the topology says would have passed the link where it
    /// vanished (the underlay MTU minus the encapsulation overhead), when dye can tell.
    Silent { fits: Option<u32> },
}

/// Where a bound came from, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// No probe failed: the upper bound is what the source can send.
    SourceLimit,
    /// A probe of this size failed.
    Probe(u32),
    /// An ICMP error advertised this MTU.
    Icmp(u32),
}

/// The search state.
#[derive(Debug, Clone)]
pub struct Search {
    min: u32,
    max: u32,
    attempts: u32,
    /// Largest size that passed (0: none yet).
    lo: u32,
    /// Smallest size known not to pass (max + 1: none yet).
    hi: u32,
    hi_from: Bound,
    /// Silent losses per size not yet confirmed as a failure.
    silent: BTreeMap<u32, u32>,
    /// Sizes suggested by hints, most recent last.
    hints: Vec<u32>,
    /// Topology hints that, once they pass, need `+1` tried to be exact.
    verify_above: Vec<u32>,
    /// Every size sent, in order.
    sent: Vec<u32>,
}

impl Search {
    /// A search between `min` and `max` bytes; a silent loss is retried until it has vanished
    /// `attempts` times.
    pub fn new(min: u32, max: u32, attempts: u32) -> Search {
        let max = max.max(min);
        Search {
            min,
            max,
            attempts: attempts.max(1),
            lo: 0,
            hi: max + 1,
            hi_from: Bound::SourceLimit,
            silent: BTreeMap::new(),
            hints: Vec::new(),
            verify_above: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Largest size known to pass, if any.
    pub fn passed(&self) -> Option<u32> {
        (self.lo > 0).then_some(self.lo)
    }

    /// Smallest size known not to pass, and why (None: nothing failed).
    pub fn failed(&self) -> Option<(u32, Bound)> {
        (self.hi <= self.max).then_some((self.hi, self.hi_from))
    }

    /// Sizes sent so far, in order.
    pub fn sent(&self) -> &[u32] {
        &self.sent
    }

    /// True when the answer is known: `hi = lo + 1`, or even the smallest size failed.
    pub fn done(&self) -> bool {
        self.next().is_none()
    }

    /// The size to send next, or None when the search is over.
    pub fn next(&self) -> Option<u32> {
        if self.hi <= self.min {
            return None; // even the smallest probe does not pass
        }
        if self.lo > 0 && self.hi == self.lo + 1 {
            return None;
        }
        let open = |s: u32| s > self.lo && s < self.hi;
        if let Some((&size, _)) = self.silent.iter().find(|(s, _)| open(**s)) {
            return Some(size);
        }
        if self.lo == 0 {
            return Some(self.min);
        }
        if self.hi == self.max + 1 && !self.sent.contains(&self.max) {
            return Some(self.max);
        }
        if let Some(&h) = self.hints.iter().rev().find(|h| open(**h)) {
            return Some(h);
        }
        if let Some(&v) = self.verify_above.iter().rev().find(|v| open(**v + 1)) {
            return Some(v + 1);
        }
        // Bisect over the common MTUs between the bounds first: the answer is usually one.
        let plateaus: Vec<u32> = PLATEAUS.iter().copied().filter(|p| open(*p)).collect();
        if !plateaus.is_empty() {
            return Some(plateaus[plateaus.len() / 2]);
        }
        Some(self.lo + (self.hi - self.lo) / 2)
    }

    /// Records what a probe of `size` did.
    pub fn record(&mut self, size: u32, outcome: Outcome) {
        self.sent.push(size);
        match outcome {
            Outcome::Passed => {
                self.silent.remove(&size);
                self.lo = self.lo.max(size);
                if self.hi <= self.lo {
                    // A later pass beats an earlier failure (a lossy path, a route change).
                    self.hi = self.max + 1;
                    self.hi_from = Bound::SourceLimit;
                }
            }
            Outcome::Signalled { mtu } => {
                self.fail_at(size, Bound::Probe(size));
                if let Some(m) = mtu.filter(|m| *m > 0 && *m < size) {
                    // The router's next hop carries `m` and no more.
                    self.fail_at(m + 1, Bound::Icmp(m));
                    self.hints.push(m);
                }
            }
            Outcome::Silent { fits } => {
                let losses = self.silent.entry(size).or_insert(0);
                *losses += 1;
                if *losses >= self.attempts {
                    self.silent.remove(&size);
                    self.fail_at(size, Bound::Probe(size));
                }
                if let Some(f) = fits.filter(|f| *f < size) {
                    if !self.hints.contains(&f) {
                        self.hints.push(f);
                        self.verify_above.push(f);
                    }
                }
            }
        }
    }

    fn fail_at(&mut self, size: u32, why: Bound) {
        if size < self.hi && size > self.lo {
            self.hi = size;
            self.hi_from = why;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a path model: `pmtu`, how a too-big probe fails, returns the sizes
    /// sent and the result.
    fn run(
        min: u32,
        max: u32,
        attempts: u32,
        path: impl Fn(u32) -> Outcome,
    ) -> (Vec<u32>, Option<u32>) {
        let mut s = Search::new(min, max, attempts);
        let mut guard = 0;
        while let Some(size) = s.next() {
            s.record(size, path(size));
            guard += 1;
            assert!(guard < 100, "search does not converge: {:?}", s.sent());
        }
        (s.sent().to_vec(), s.passed())
    }

    fn silent_path(pmtu: u32, fits: Option<u32>) -> impl Fn(u32) -> Outcome {
        move |size| {
            if size <= pmtu {
                Outcome::Passed
            } else {
                Outcome::Silent { fits }
            }
        }
    }

    #[test]
    fn a_healthy_path_takes_two_probes() {
        let (sent, pmtu) = run(68, 1450, 2, silent_path(1450, None));
        assert_eq!(sent, vec![68, 1450]);
        assert_eq!(pmtu, Some(1450));
    }

    #[test]
    fn an_icmp_hint_is_trusted_as_the_upper_bound() {
        let path = |size: u32| {
            if size <= 1280 {
                Outcome::Passed
            } else {
                Outcome::Signalled { mtu: Some(1280) }
            }
        };
        let (sent, pmtu) = run(68, 1500, 2, path);
        assert_eq!(sent, vec![68, 1500, 1280]);
        assert_eq!(pmtu, Some(1280));
    }

    #[test]
    fn a_topology_hint_is_verified_one_byte_above() {
        let (sent, pmtu) = run(68, 1450, 2, silent_path(1350, Some(1350)));
        assert_eq!(sent, vec![68, 1450, 1450, 1350, 1351, 1351]);
        assert_eq!(pmtu, Some(1350));
    }

    #[test]
    fn a_wrong_topology_hint_falls_back_to_the_search() {
        // The topology predicts 1350, the truth is 1333.
        let (sent, pmtu) = run(68, 1450, 1, silent_path(1333, Some(1350)));
        assert_eq!(pmtu, Some(1333));
        assert!(sent.len() <= 12, "{sent:?}");
    }

    #[test]
    fn bogus_icmp_mtus_are_ignored_and_the_search_still_converges() {
        for bogus in [Some(0), Some(1500), Some(9000), None] {
            let path = move |size: u32| {
                if size <= 1400 {
                    Outcome::Passed
                } else {
                    Outcome::Signalled { mtu: bogus }
                }
            };
            let (sent, pmtu) = run(68, 1500, 2, path);
            assert_eq!(pmtu, Some(1400), "bogus {bogus:?}: {sent:?}");
            // Plateaus find 1400 straight away; bisection proves 1401 fails.
            assert!(sent.len() <= 12, "bogus {bogus:?}: {sent:?}");
        }
    }

    #[test]
    fn every_pmtu_is_found_exactly_without_hints() {
        for pmtu in (68..=1500).step_by(7).chain([1499, 1500, 69, 1280, 1281]) {
            let (sent, found) = run(68, 1500, 1, silent_path(pmtu, None));
            assert_eq!(found, Some(pmtu), "{sent:?}");
            assert!(
                sent.len() <= 16,
                "pmtu {pmtu}: {} probes {sent:?}",
                sent.len()
            );
        }
    }

    #[test]
    fn a_single_loss_is_retried_before_it_counts() {
        let mut lost_once = std::collections::HashSet::new();
        let mut s = Search::new(68, 1450, 2);
        while let Some(size) = s.next() {
            // The first 1450 is lost by accident; the retry passes.
            let o = if size == 1450 && lost_once.insert(size) {
                Outcome::Silent { fits: None }
            } else {
                Outcome::Passed
            };
            s.record(size, o);
        }
        assert_eq!(s.sent(), &[68, 1450, 1450]);
        assert_eq!(s.passed(), Some(1450));
    }

    #[test]
    fn a_path_that_passes_nothing_stops_after_the_smallest_probe() {
        let mut s = Search::new(68, 1450, 2);
        while let Some(size) = s.next() {
            s.record(size, Outcome::Silent { fits: None });
        }
        assert_eq!(s.sent(), &[68, 68]);
        assert_eq!(s.passed(), None);
        assert_eq!(s.failed(), Some((68, Bound::Probe(68))));
    }

    #[test]
    fn the_bound_says_where_it_came_from() {
        let mut s = Search::new(68, 1500, 1);
        s.record(68, Outcome::Passed);
        s.record(1500, Outcome::Signalled { mtu: Some(1280) });
        assert_eq!(s.failed(), Some((1281, Bound::Icmp(1280))));
        s.record(1280, Outcome::Passed);
        assert!(s.done());
        let mut h = Search::new(68, 1450, 1);
        h.record(68, Outcome::Passed);
        h.record(1450, Outcome::Passed);
        assert_eq!(h.failed(), None);
        assert!(h.done());
    }
}
