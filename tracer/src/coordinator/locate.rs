//! Where the trace happens: which agent's node owns the source namespace (exactly one must),
//! which owns the destination address, and so which nodes to observe.

use super::network::Blind;
use super::{calls, CoordError, Probing, Reached};
use crate::agent::pb;

/// The source namespace as its agent names it, and the indexes (into `reached`) of the agents
/// to observe with, the source's first: the source's and the destination's node, or every node
/// when none owns the destination (a ClusterIP, an outside address).
pub(super) async fn locate(
    plan: &Probing,
    reached: &[Reached],
    blind: &[Blind],
) -> Result<(String, Vec<usize>), CoordError> {
    let what = if plan.from.starts_with("pod:") {
        pb::resolve_request::What::Pod(plan.from.clone())
    } else {
        pb::resolve_request::What::Netns(plan.from.clone())
    };
    let found = calls::resolve_all(reached, what).await;
    let owners: Vec<(usize, pb::ResolveReply)> = found
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.ok().filter(|r| r.found).map(|r| (i, r)))
        .collect();
    let (source, source_netns) = match owners.as_slice() {
        [(i, r)] => (*i, r.netns.clone()),
        [] => {
            return Err(CoordError::NotFound {
                what: format!("the source namespace {:?}", plan.from),
                unreachable: unreachable_hint(blind),
            })
        }
        many => {
            return Err(CoordError::Ambiguous {
                what: plan.from.clone(),
                nodes: many
                    .iter()
                    .map(|(i, _)| reached[*i].node.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };
    let dst_owner = calls::resolve_all(
        reached,
        pb::resolve_request::What::Address(plan.to.to_string()),
    )
    .await
    .into_iter()
    .enumerate()
    .find_map(|(i, r)| r.ok().filter(|r| r.found).map(|_| i));
    // The nodes on the path: the source's and the destination's; when no node owns the
    // destination (a ClusterIP, an outside address), every node may be on it.
    let mut chosen = vec![source];
    match dst_owner {
        Some(d) if d != source => chosen.push(d),
        Some(_) => {}
        None => chosen.extend((0..reached.len()).filter(|i| *i != source)),
    }
    Ok((source_netns, chosen))
}

/// `--to pod:NS/NAME[:PORT]` through the agents: the one node whose runtime knows the pod
/// gives its address (IPv6 with `ipv6`), as single-host dye asks its own runtime.
pub(super) async fn pod_address(
    reached: &[Reached],
    blind: &[Blind],
    pod: &str,
    ipv6: bool,
) -> Result<std::net::IpAddr, CoordError> {
    let found = calls::resolve_all(reached, pb::resolve_request::What::Pod(pod.to_string())).await;
    let owners: Vec<(usize, pb::ResolveReply)> = found
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.ok().filter(|r| r.found).map(|r| (i, r)))
        .collect();
    match owners.as_slice() {
        [(_, reply)] => reply
            .addresses
            .iter()
            .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
            .find(|a| a.is_ipv6() == ipv6)
            .ok_or_else(|| CoordError::NotFound {
                what: format!(
                    "an {} address for {pod} (it has {})",
                    if ipv6 { "IPv6" } else { "IPv4" },
                    reply.addresses.join(", ")
                ),
                unreachable: String::new(),
            }),
        [] => Err(CoordError::NotFound {
            what: pod.to_string(),
            unreachable: unreachable_hint(blind),
        }),
        many => Err(CoordError::Ambiguous {
            what: pod.to_string(),
            nodes: many
                .iter()
                .map(|(i, _)| reached[*i].node.clone())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// What to add to "no agent has …" when some agents could not be asked.
fn unreachable_hint(blind: &[Blind]) -> String {
    if blind.is_empty() {
        return String::new();
    }
    format!(
        " among the agents that answered; unreachable: {}",
        blind_list(blind)
    )
}

/// "agent ADDR: why; …" for agents that could not be asked.
pub(super) fn blind_list(blind: &[Blind]) -> String {
    blind
        .iter()
        .map(|b| format!("agent {}: {}", b.agent, b.reason))
        .collect::<Vec<_>>()
        .join("; ")
}
