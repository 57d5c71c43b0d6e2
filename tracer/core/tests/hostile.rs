//! A recording comes from the world: a colleague, a vendor, a damaged disk. Whatever its journal
//! and snapshot say, replaying it must end in a report or an error — never a panic. These
//! property tests take the real fixtures and damage them: frames with random bytes, frames at
//! capture points that do not exist, entries dropped, duplicated or moved, answers to the wrong
//! question, nonsense times.

use std::path::PathBuf;

use dye_core::mtu::{run_mtu, MtuPlan};
use dye_core::recording::{Call, Entry, Recording, Replayer};
use dye_core::seam::{Event, Wait};
use dye_core::trace::{run_trace, TracePlan};
use proptest::prelude::*;

fn load<P: serde::de::DeserializeOwned>(name: &str) -> Recording<P> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../samples/recordings")
        .join(format!("{name}.dye"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("parses")
}

/// One way to damage a journal.
#[derive(Debug, Clone)]
enum Damage {
    /// Overwrite the bytes of frame k with these.
    Bytes(usize, Vec<u8>),
    /// Move frame k to capture point p (possibly out of range).
    Point(usize, usize),
    /// Cut frame k at n bytes.
    Truncate(usize, usize),
    Drop(usize),
    Duplicate(usize),
    Swap(usize, usize),
    /// Set entry k's time.
    Time(usize, u64),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), prop::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(k, b)| Damage::Bytes(k, b)),
        (any::<usize>(), 0usize..64).prop_map(|(k, p)| Damage::Point(k, p)),
        (any::<usize>(), 0usize..120).prop_map(|(k, n)| Damage::Truncate(k, n)),
        any::<usize>().prop_map(Damage::Drop),
        any::<usize>().prop_map(Damage::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Damage::Swap(a, b)),
        (any::<usize>(), any::<u64>()).prop_map(|(k, t)| Damage::Time(k, t)),
    ]
}

fn frame(e: &mut Entry) -> Option<&mut dye_core::seam::Frame> {
    match &mut e.call {
        Call::Wait(Wait::Event(Event::Frame(f))) => Some(f),
        _ => None,
    }
}

fn apply(journal: &mut Vec<Entry>, d: &Damage) {
    if journal.is_empty() {
        return;
    }
    let n = journal.len();
    match d {
        Damage::Bytes(k, b) => {
            if let Some(f) = frame(&mut journal[k % n]) {
                f.data = b.clone();
            }
        }
        Damage::Point(k, p) => {
            if let Some(f) = frame(&mut journal[k % n]) {
                f.point = *p;
            }
        }
        Damage::Truncate(k, len) => {
            if let Some(f) = frame(&mut journal[k % n]) {
                f.data.truncate(*len);
            }
        }
        Damage::Drop(k) => {
            journal.remove(k % n);
        }
        Damage::Duplicate(k) => {
            let e = journal[k % n].clone();
            journal.insert(k % n, e);
        }
        Damage::Swap(a, b) => journal.swap(a % n, b % n),
        Damage::Time(k, t) => journal[k % n].at_ns = *t,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("DYE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
    ))]

    #[test]
    fn a_damaged_trace_recording_never_panics(
        fixture in prop::sample::select(vec![
            "trace-icmp-cross-node", "trace-office-vip", "trace-outer-fragments",
            "trace-drop-pod", "trace-v6-packet-too-big", "trace-tcp-clusterip-count",
        ]),
        damages in prop::collection::vec(damage(), 1..6),
    ) {
        let mut rec: Recording<TracePlan> = load(fixture);
        for d in &damages {
            apply(&mut rec.journal, d);
        }
        let mut snapshot = rec.snapshot;
        let mut net = Replayer::new(rec.journal);
        // A report or an error; either is fine, a panic is not.
        let _ = run_trace(&rec.plan, &mut snapshot, &mut net, &mut |_| {});
    }

    #[test]
    fn a_damaged_mtu_recording_never_panics(
        fixture in prop::sample::select(vec![
            "mtu-black-hole", "mtu-through-nat", "mtu-outer-fragmenting", "mtu-v6-packet-too-big",
        ]),
        damages in prop::collection::vec(damage(), 1..6),
    ) {
        let mut rec: Recording<MtuPlan> = load(fixture);
        for d in &damages {
            apply(&mut rec.journal, d);
        }
        let mut snapshot = rec.snapshot;
        let mut net = Replayer::new(rec.journal);
        let _ = run_mtu(&rec.plan, &mut snapshot, &mut net, &mut |_| {});
    }

    #[test]
    fn a_snapshot_with_points_missing_never_panics(
        keep in prop::collection::vec(any::<bool>(), 30),
    ) {
        let mut rec: Recording<TracePlan> = load("trace-drop-pod");
        let mut i = 0;
        rec.snapshot.points.retain(|_| { i += 1; keep[(i - 1) % keep.len()] });
        let mut snapshot = rec.snapshot;
        let mut net = Replayer::new(rec.journal);
        let _ = run_trace(&rec.plan, &mut snapshot, &mut net, &mut |_| {});
    }
}
