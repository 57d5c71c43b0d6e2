//! What a trace through agents adds to an agent's capture: the probes traced through this
//! node's nftables rules (a tracing rule in every namespace of the node, matched on the
//! probe's marker, its table owned by the agent so the kernel removes it with the agent) and
//! the kernel's drops of them (kfree_skb). Only this node's namespaces are told: on a kernel
//! shared with other nodes (the lab), a drop in a namespace this node does not own is not its.

use std::net::IpAddr;
use std::sync::Arc;

use dye_core::Proto;
use tonic::Status;

use super::node::NodeScope;
use super::pb;
use crate::live::drops::Arming;
use crate::live::rules::{ProbeSignature, RuleTracer};

/// What to arm, checked before the capture starts.
#[derive(Debug, Clone, Copy)]
pub struct WatchPlan {
    trace_id: u32,
    signature: ProbeSignature,
}

impl WatchPlan {
    /// From a probe filter asking for it (None when it does not).
    pub fn from_filter(f: &pb::ProbeFilter, proto: Proto) -> Result<Option<WatchPlan>, Status> {
        if !f.trace_rules {
            return Ok(None);
        }
        let ip = |s: &str, what: &str| {
            s.parse::<IpAddr>()
                .map_err(|e| Status::invalid_argument(format!("filter.{what} {s:?}: {e}")))
        };
        let (src, dst) = (ip(&f.src, "src")?, ip(&f.dst, "dst")?);
        let proto = match (proto, dst) {
            (Proto::Icmp, IpAddr::V4(_)) => 1,
            (Proto::Icmp, IpAddr::V6(_)) => 58,
            (Proto::Tcp, _) => 6,
            (Proto::Udp, _) => 17,
        };
        Ok(Some(WatchPlan {
            trace_id: f.trace_id,
            signature: ProbeSignature {
                proto,
                src,
                dst,
                size: f.probe_size,
                trace_id: f.trace_id,
            },
        }))
    }
}

/// Armed for one capture.
#[derive(Debug)]
pub struct Watch {
    rules: RuleTracer,
    drops: Arming,
    scope: Arc<NodeScope>,
}

impl Watch {
    /// Arms both (blocking: netlink, and the eBPF program loads meanwhile); rules are traced
    /// in the namespaces the capture listens in (`namespaces`), not in every one of the node.
    pub fn arm(plan: &WatchPlan, scope: Arc<NodeScope>, namespaces: &[String]) -> Watch {
        let drops = Arming::start(plan.trace_id);
        let rules = RuleTracer::arm_where(
            &scope.scope.topology,
            &format!("dye_{:08x}", plan.trace_id),
            &plan.signature,
            |name| namespaces.iter().any(|n| n == name),
        );
        Watch {
            rules,
            drops,
            scope,
        }
    }

    /// Waits until the drop watch is attached: before the capture says it started, so no
    /// probe's drop is missed.
    pub fn ready(&mut self) {
        self.drops.ready();
    }

    /// The rule events and this node's drops, as JSON for Finished.
    pub fn collect(mut self) -> (Vec<u8>, Vec<u8>) {
        let topology = &self.scope.scope.topology;
        let rules = self.rules.events(topology);
        let drops: Vec<_> = self
            .drops
            .events(topology)
            .into_iter()
            .filter(|d| d.netns.is_some())
            .collect();
        (
            serde_json::to_vec(&rules).unwrap_or_default(),
            serde_json::to_vec(&drops).unwrap_or_default(),
        )
    }
}
