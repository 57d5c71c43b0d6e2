//! What a trace through agents adds to dye.trace/v1: each node's clock offset against the
//! source node's (how it was found, and how certain), and the nodes nobody observed.

use serde::{Deserialize, Serialize};

use dye_core::clock::{Method, NodeOffset};
use dye_core::path::VerdictKind;
use dye_core::snapshot::Snapshot;

use super::TraceReport;

use crate::coordinator::network::Blind;

/// `agents` in dye.trace/v1 (absent for a single-host trace). Added in v1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentsReport {
    /// The node whose clock every hop time uses (the probe's source node).
    pub reference: String,
    pub clocks: Vec<ClockOffset>,
    /// Nodes that were not observed, so no hop or drop is placed there.
    pub blind: Vec<BlindNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClockOffset {
    pub node: String,
    /// How far the node's clock is ahead of the reference's, in µs.
    pub offset_us: f64,
    /// ± this many µs.
    pub bound_us: f64,
    /// `probe` (the probe's own crossings), `exchange` (RPC clock exchange), `reference`.
    pub method: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlindNode {
    /// The node's name, or empty when its agent never answered.
    pub node: String,
    pub agent: String,
    pub reason: String,
}

pub fn project(reference: &str, clocks: &[NodeOffset], blind: &[Blind]) -> AgentsReport {
    AgentsReport {
        reference: reference.to_string(),
        clocks: clocks
            .iter()
            .map(|c| ClockOffset {
                node: c.node.clone(),
                offset_us: c.offset_ns as f64 / 1000.0,
                bound_us: c.bound_ns as f64 / 1000.0,
                method: match c.method {
                    Method::Probe => "probe",
                    Method::Exchange => "exchange",
                    Method::Reference => "reference",
                }
                .to_string(),
            })
            .collect(),
        blind: blind
            .iter()
            .map(|b| BlindNode {
                node: b.node.clone(),
                agent: b.agent.clone(),
                reason: b.reason.clone(),
            })
            .collect(),
    }
}

/// The lines the text report ends with.
pub fn text(r: &AgentsReport) -> String {
    let mut out = format!("\nclocks (against {}):\n", r.reference);
    for c in &r.clocks {
        let how = match c.method.as_str() {
            "probe" => "from the probe's crossings",
            "exchange" => "from an RPC clock exchange (the probe did not cross both ways)",
            _ => "reference",
        };
        if c.method == "reference" {
            out.push_str(&format!("  {}  0 µs  (reference)\n", c.node));
        } else {
            out.push_str(&format!(
                "  {}  {:+.1} µs ± {:.1} µs  {how}\n",
                c.node, c.offset_us, c.bound_us
            ));
        }
    }
    if !r.blind.is_empty() {
        out.push_str("\npartial trace: not observed\n");
        for b in &r.blind {
            let who = if b.node.is_empty() {
                format!("agent {}", b.agent)
            } else {
                format!("node {} (agent {})", b.node, b.agent)
            };
            out.push_str(&format!("  {who}: {}\n", b.reason));
        }
    }
    out
}

/// A drop is claimed only where someone looked: when the probe was last seen heading for a
/// namespace no running agent captured in, the verdict becomes `unobserved`, naming where it
/// went and which nodes are blind. Returns whether it did.
pub fn no_blame_where_unobserved(
    report: &mut TraceReport,
    snapshot: &Snapshot,
    observed_netns: &[String],
    blind: &[BlindNode],
) -> bool {
    let v = &mut report.verdict;
    if v.kind != VerdictKind::Dropped {
        return false;
    }
    let last = v
        .last_seen
        .and_then(|i| report.hops.get(i))
        .map(|h| format!("{}/{} ({})", h.netns, h.ifname, h.direction))
        .unwrap_or_else(|| "the source".to_string());
    let (mut detail, list_blind) = match v.expected_next.clone() {
        Some(next) => {
            let place = next
                .rsplit_once(" (")
                .map(|(p, _)| p)
                .unwrap_or(next.as_str());
            let Some((netns, _)) = place.rsplit_once('/') else {
                return false;
            };
            if observed_netns.iter().any(|n| n == netns) {
                return false;
            }
            (
                format!(
                    "the probe was last seen at {last}, heading for {next}, which no agent observes"
                ),
                snapshot.namespace(netns).is_none(),
            )
        }
        // It left the observed nodes by a link whose far end no agent shows (a machine's
        // uplink): with a node unobserved, that is no place to call it dropped.
        None if !blind.is_empty() => (
            format!("the probe was last seen at {last}, leaving the nodes the agents observe"),
            true,
        ),
        None => return false,
    };
    if list_blind && !blind.is_empty() {
        let nodes: Vec<String> = blind
            .iter()
            .map(|b| {
                if b.node.is_empty() {
                    format!("agent {} ({})", b.agent, b.reason)
                } else {
                    format!("node {} ({})", b.node, b.reason)
                }
            })
            .collect();
        detail.push_str(&format!("; not observed: {}", nodes.join(", ")));
    }
    detail.push_str(": dye cannot tell whether or where it was dropped beyond that point");
    v.kind = VerdictKind::Unobserved;
    v.detail = detail;
    v.dropped_by = None;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use dye_core::recording::{Recording, Replayer};
    use dye_core::trace::{run_trace, TracePlan};

    /// A report and snapshot replayed from a recorded fixture (single host, lab id `fx`).
    fn replay(name: &str) -> (TraceReport, Snapshot) {
        let path = format!(
            "{}/../samples/recordings/{name}.dye",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        let rec: Recording<TracePlan> = serde_json::from_str(&text).expect("parses");
        let mut snapshot = rec.snapshot;
        let mut net = Replayer::new(rec.journal);
        let run = run_trace(&rec.plan, &mut snapshot, &mut net, &mut |_| {}).expect("replays");
        (crate::report::project(&run.trace, &snapshot), snapshot)
    }

    fn netns_of(snapshot: &Snapshot, node: &str) -> Vec<String> {
        snapshot
            .namespaces
            .iter()
            .filter(|n| n.node == node)
            .map(|n| n.name.clone())
            .collect()
    }

    #[test]
    fn a_drop_on_a_node_nobody_observed_is_not_claimed() {
        // Recorded on one host: dropped inside node-2, next expected at node-2's pod veth.
        let (mut r, snap) = replay("trace-drop-pod");
        assert_eq!(r.verdict.kind, VerdictKind::Dropped);
        let blind = vec![BlindNode {
            node: "dye-fx-node-2".into(),
            agent: "192.168.50.12:7443".into(),
            reason: "Connection refused".into(),
        }];
        // Observed by both nodes' agents: the drop stands.
        let mut both = netns_of(&snap, "dye-fx-node-1");
        both.extend(netns_of(&snap, "dye-fx-node-2"));
        assert!(!no_blame_where_unobserved(&mut r, &snap, &both, &blind));
        assert_eq!(r.verdict.kind, VerdictKind::Dropped);
        // Only node-1 observed: no drop is claimed on node-2.
        let node1 = netns_of(&snap, "dye-fx-node-1");
        assert!(no_blame_where_unobserved(&mut r, &snap, &node1, &blind));
        assert_eq!(r.verdict.kind, VerdictKind::Unobserved);
        assert!(
            r.verdict.detail.contains("which no agent observes"),
            "{}",
            r.verdict.detail
        );
        assert!(r.verdict.dropped_by.is_none());
    }

    #[test]
    fn other_verdicts_are_left_alone_and_the_text_names_blind_nodes() {
        let (mut r, snap) = replay("trace-delivered");
        let before = r.verdict.kind;
        assert!(!no_blame_where_unobserved(&mut r, &snap, &[], &[]));
        assert_eq!(r.verdict.kind, before);
        let report = project(
            "n1",
            &[NodeOffset {
                node: "n2".into(),
                reference: "n1".into(),
                offset_ns: -50_000_123,
                bound_ns: 7_500,
                method: Method::Probe,
                exchange: None,
            }],
            &[Blind {
                node: String::new(),
                agent: "10.0.0.3:7443".into(),
                reason: "no TCP connection within 3s".into(),
            }],
        );
        let t = text(&report);
        assert!(
            t.contains("n2  -50000.1 µs ± 7.5 µs  from the probe's crossings"),
            "{t}"
        );
        assert!(
            t.contains("agent 10.0.0.3:7443: no TCP connection within 3s"),
            "{t}"
        );
    }
}
