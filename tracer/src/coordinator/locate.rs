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
    let unreachable_hint = |blind: &[Blind]| {
        if blind.is_empty() {
            String::new()
        } else {
            format!(
                " among the agents that answered; unreachable: {}",
                blind
                    .iter()
                    .map(|b| format!("agent {}: {}", b.agent, b.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    };

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
