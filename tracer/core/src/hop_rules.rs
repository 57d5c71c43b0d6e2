//! Which netfilter rules decided something about the probe, and at which hop. From the kernel's
//! trace of every walk through a namespace's chains, the steps kept are the ones a person reads
//! to understand what happened: an accept or a drop by a rule (a DNAT in `KUBE-SEP-…` accepts),
//! a chain policy's drop, and the jumps that led there (`jump KUBE-SVC-…`, `jump KUBE-SEP-…`, a
//! jump into a policy chain). Walks that only fell through to an accepting policy decided
//! nothing. Each kept walk goes to the hop of the same packet where it crossed the hook: the
//! device it was leaving by if the probe was seen leaving there, else the one it came in on.

use crate::model::Direction;
use crate::path::Hop;
use crate::seam::{RuleEvent, RuleVerdict};

/// The deciding steps of every walk, in the order the kernel reported them. A walk is the
/// events of one packet (one kernel trace id) in one namespace up to a base chain's verdict.
pub fn deciding(events: &[RuleEvent]) -> Vec<Vec<RuleEvent>> {
    let mut walks: Vec<Vec<RuleEvent>> = Vec::new();
    // (namespace, kernel trace id) → the jumps taken so far in its current walk.
    let mut stacks: Vec<((&str, u32), Vec<&RuleEvent>)> = Vec::new();
    for ev in events {
        let key = (ev.netns.as_str(), ev.trace_id);
        let at = match stacks.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                stacks.push((key, Vec::new()));
                stacks.len() - 1
            }
        };
        let stack = &mut stacks[at].1;
        match ev.verdict_kind() {
            RuleVerdict::Jump(_) | RuleVerdict::Goto(_) => stack.push(ev),
            RuleVerdict::Return => {
                stack.pop();
            }
            RuleVerdict::Continue if ev.ends_chain() => {
                stack.pop();
            }
            RuleVerdict::Accept if ev.policy => stack.clear(),
            RuleVerdict::Accept | RuleVerdict::Drop => {
                let mut walk: Vec<RuleEvent> = stack.drain(..).cloned().collect();
                walk.push(ev.clone());
                walks.push(walk);
            }
            RuleVerdict::Continue | RuleVerdict::Other(_) => {}
        }
    }
    walks
}

/// Attaches each deciding walk to its hop among `hops` (one probe's path). A walk whose packet
/// is not one of the path's (another probe, or an older recording without the packet's id)
/// is left out.
pub fn attach(hops: &mut [Hop], walks: Vec<Vec<RuleEvent>>) {
    for walk in walks {
        let Some(last) = walk.last() else { continue };
        if let Some(i) = hop_of(hops, last) {
            hops[i].rules.extend(walk);
        }
    }
}

fn hop_of(hops: &[Hop], ev: &RuleEvent) -> Option<usize> {
    let ip_id = ev.ip_id?;
    let same = |h: &Hop| h.netns == ev.netns && h.packet.ip_id == ip_id;
    let on = |dev: &Option<String>, dir: Direction| {
        let dev = dev.as_deref()?;
        hops.iter()
            .position(|h| same(h) && h.ifname == dev && h.direction == dir)
    };
    on(&ev.oif, Direction::Out)
        .or_else(|| on(&ev.iif, Direction::In))
        .or_else(|| hops.iter().position(same))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(trace_id: u32, chain: &str, handle: Option<u64>, verdict: &str) -> RuleEvent {
        RuleEvent {
            netns: "node-1".into(),
            trace_id,
            family: "ip".into(),
            table: "nat".into(),
            chain: chain.into(),
            handle,
            policy: false,
            verdict: Some(verdict.into()),
            text: String::new(),
            iif: Some("cni0".into()),
            oif: None,
            ip_id: Some(7),
        }
    }

    fn policy(trace_id: u32, chain: &str, verdict: &str) -> RuleEvent {
        RuleEvent {
            policy: true,
            ..ev(trace_id, chain, None, verdict)
        }
    }

    fn chains(walk: &[RuleEvent]) -> Vec<&str> {
        walk.iter().map(|e| e.chain.as_str()).collect()
    }

    #[test]
    fn a_service_dnat_keeps_the_jumps_that_led_to_it() {
        let walks = deciding(&[
            ev(1, "PREROUTING", Some(13), "jump KUBE-SERVICES"),
            ev(1, "KUBE-SERVICES", Some(22), "jump KUBE-SVC-X"),
            ev(1, "KUBE-SVC-X", Some(27), "jump KUBE-SEP-Y"),
            ev(1, "KUBE-SEP-Y", Some(29), "accept"),
        ]);
        assert_eq!(walks.len(), 1);
        assert_eq!(
            chains(&walks[0]),
            ["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-X", "KUBE-SEP-Y"]
        );
    }

    #[test]
    fn a_walk_that_falls_through_to_an_accepting_policy_decided_nothing() {
        let walks = deciding(&[
            ev(2, "FORWARD", Some(3), "jump KUBE-FORWARD"),
            ev(2, "KUBE-FORWARD", None, "continue"),
            ev(2, "FORWARD", None, "continue"),
            policy(2, "FORWARD", "accept"),
            ev(2, "POSTROUTING", Some(17), "jump KUBE-POSTROUTING"),
            ev(2, "KUBE-POSTROUTING", Some(19), "return"),
            ev(2, "POSTROUTING", None, "continue"),
            policy(2, "POSTROUTING", "accept"),
        ]);
        assert!(walks.is_empty(), "{walks:?}");
    }

    #[test]
    fn a_returned_jump_is_not_kept_and_a_policy_drop_is() {
        let walks = deciding(&[
            ev(3, "FORWARD", Some(3), "jump KUBE-FORWARD"),
            ev(3, "KUBE-FORWARD", None, "continue"),
            ev(3, "FORWARD", Some(4), "jump netpol"),
            ev(3, "netpol", Some(9), "drop"),
            ev(4, "FORWARD", None, "continue"),
            policy(4, "FORWARD", "drop"),
        ]);
        assert_eq!(walks.len(), 2);
        assert_eq!(chains(&walks[0]), ["FORWARD", "netpol"]);
        assert!(walks[0][1].drops());
        assert!(walks[1][0].policy && walks[1][0].drops());
    }

    #[test]
    fn walks_of_two_packets_interleaved_are_kept_apart() {
        let walks = deciding(&[
            ev(5, "PREROUTING", Some(13), "jump A"),
            ev(6, "PREROUTING", Some(13), "jump B"),
            ev(5, "A", Some(1), "accept"),
            ev(6, "B", None, "continue"),
            policy(6, "PREROUTING", "accept"),
        ]);
        assert_eq!(walks.len(), 1);
        assert_eq!(chains(&walks[0]), ["PREROUTING", "A"]);
    }

    #[test]
    fn verdicts_are_typed_from_nfts_words() {
        let v = |s: &str| ev(1, "c", Some(1), s).verdict_kind();
        assert_eq!(v("jump KUBE-SEP-Y"), RuleVerdict::Jump("KUBE-SEP-Y".into()));
        assert_eq!(v("goto x"), RuleVerdict::Goto("x".into()));
        assert_eq!(v("drop"), RuleVerdict::Drop);
        assert_eq!(v("queue"), RuleVerdict::Other("queue".into()));
        assert_eq!(
            RuleEvent {
                verdict: None,
                ..ev(1, "c", None, "")
            }
            .verdict_kind(),
            RuleVerdict::Continue
        );
    }
}
