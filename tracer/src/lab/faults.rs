//! Faults switched on a running lab, each the classic cause of a real incident. Every fault is
//! applied as commands and recorded with the commands that undo it, so `clear` restores the
//! lab exactly and `status` can say what is broken.

use serde::{Deserialize, Serialize};

use super::cmd::Cmd;
use super::names::{LabId, UNDERLAY};
use super::state::{load_state, LabState};
use super::topology::{Topology, IPV6_MIN_MTU};
use super::LabError;

/// A fault to switch on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// Shrink every underlay link (node uplinks, switch ports, firewall uplink) to `mtu`,
    /// leaving the overlay device's MTU as it was.
    UnderlayMtu { mtu: u32 },
    /// Set one interface's MTU (and its veth peer's) — e.g. `fw/eth1` towards the office.
    LinkMtu {
        member: String,
        ifname: String,
        mtu: u32,
    },
    /// Outer DF on the VXLAN device of `node` (all nodes when None): big overlay packets are
    /// dropped instead of fragmented on the underlay.
    VxlanDf { node: Option<String> },
    /// A DROP rule at the top of the FORWARD chain of the pod's node for traffic to the pod,
    /// the way a host firewall or a NetworkPolicy conflict would drop it.
    DropPod { pod: String },
    /// Remove `node`'s overlay route to `to`'s pod subnet.
    NoRoute { node: String, to: String },
    /// A NetworkPolicy implementation's nftables drop: an `inet netpol` table of its own on
    /// the pod's node whose forward chain jumps into the pod's ingress chain, which drops
    /// what comes from other nodes' pods.
    NetpolDrop { pod: String },
    /// `node`'s FORWARD chain (iptables, table ip filter) with policy DROP.
    ForwardPolicyDrop { node: String },
    /// Strict reverse-path filtering on `node` with an asymmetric route: the route back to
    /// `from`'s pods leaves by the underlay, so their packets arriving on the overlay fail the
    /// check.
    RpFilter { node: String, from: String },
    /// `node` routes `to`'s pod subnet via an underlay address nobody owns: ARP is never
    /// answered and the queued packets are dropped.
    DeadNeighbour { node: String, to: String },
    /// A conntrack guard on `node`: `ct state invalid drop` in an `inet` table of its own,
    /// ahead of kube-proxy's chains (segments out of any connection, e.g. `--tcp-segment fin`).
    CtInvalidDrop { node: String },
    /// Stop `node`'s agent (its container, or its process on a flat lab): the node goes blind.
    AgentStop { node: String },
    /// Restart `node`'s agent with `DYE_AGENT_CLOCK_OFFSET=offset`: every timestamp it reports
    /// is shifted, as if the node's clock were off by that much.
    AgentClock { node: String, offset: String },
    /// `node` loses its underlay: the far end of its uplink (the underlay switch's port named
    /// after the node, or the router's) is set down. The node's own eth0 is left alone, so its
    /// addresses and routes survive (NO-CARRIER, routes `linkdown`) and link up restores it.
    UnderlayCut { node: String },
}

/// An applied fault and the commands that undo it, in the order they must run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    pub fault: Fault,
    pub description: String,
    pub undo: Vec<Vec<String>>,
}

#[derive(Debug)]
struct Change {
    apply: Vec<Vec<String>>,
    undo: Vec<Vec<String>>,
    description: String,
}

/// Applies `fault` to lab `id` and records it.
pub fn apply_fault(id: &LabId, fault: Fault) -> Result<FaultRecord, LabError> {
    let state = load_state(id)?;
    let topo = Topology::load(&id.state_dir().join("topology.toml"))?;
    let bad = |detail: String| LabError::BadFault {
        lab: id.to_string(),
        detail,
    };
    let change = plan(id, &topo, &state, &fault).map_err(bad)?;
    let mut done: Vec<usize> = Vec::new();
    for (i, argv) in change.apply.iter().enumerate() {
        if let Err(e) = Cmd::new(argv.clone()).run() {
            // Roll back what was applied so a failed fault leaves the lab as it was.
            for undo in change.undo.iter().take(done.len()) {
                let _ = Cmd::new(undo.clone()).run();
            }
            return Err(e);
        }
        done.push(i);
    }
    let record = FaultRecord {
        fault,
        description: change.description,
        undo: change.undo,
    };
    // A command may have changed the state itself (`dye lab agent` records the new agent).
    let mut state = load_state(id)?;
    state.faults.push(record.clone());
    state.save(&id.state_dir())?;
    Ok(record)
}

/// Undoes every recorded fault, newest first. Returns what was cleared.
pub fn clear_faults(id: &LabId) -> Result<Vec<FaultRecord>, LabError> {
    let mut cleared = Vec::new();
    while let Some(record) = load_state(id)?.faults.pop() {
        for argv in &record.undo {
            Cmd::new(argv.clone()).run()?;
        }
        // Reloaded: an undo may have changed the state itself (`dye lab agent`).
        let mut state = load_state(id)?;
        state.faults.pop();
        state.save(&id.state_dir())?;
        cleared.push(record);
    }
    Ok(cleared)
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn ip(ns: &str, rest: &str) -> Vec<String> {
    let mut v = argv(&["ip", "-n", ns]);
    v.extend(rest.split_whitespace().map(String::from));
    v
}

fn plan(id: &LabId, topo: &Topology, state: &LabState, fault: &Fault) -> Result<Change, String> {
    super::udp_backend::check_fault(topo, fault)?;
    match fault {
        Fault::UnderlayMtu { mtu } => {
            check_mtu(*mtu)?;
            check_mtu6(topo, *mtu, "the underlay links")?;
            let old = topo.underlay.mtu;
            // The switch and its ports, or on a routed underlay the router's ports.
            let (hub, mut links): (String, Vec<(String, String)>) = match &topo.router {
                Some(r) => (id.ns(&r.name), Vec::new()),
                None => (id.ns(UNDERLAY), vec![(id.ns(UNDERLAY), "br0".into())]),
            };
            for node in &topo.nodes {
                links.push((id.ns(node.name.get_ref()), "eth0".into()));
                links.push((hub.clone(), node.name.get_ref().clone()));
            }
            if let Some(fw) = &topo.firewall {
                links.push((id.ns(&fw.name), "eth0".into()));
                links.push((id.ns(UNDERLAY), fw.name.clone()));
            }
            Ok(Change {
                apply: links
                    .iter()
                    .map(|(ns, dev)| ip(ns, &format!("link set {dev} mtu {mtu}")))
                    .collect(),
                undo: links
                    .iter()
                    .map(|(ns, dev)| ip(ns, &format!("link set {dev} mtu {old}")))
                    .collect(),
                description: format!(
                    "underlay MTU {mtu} (was {old}); {} stays {}",
                    topo.overlay.device, topo.overlay.mtu
                ),
            })
        }
        Fault::LinkMtu {
            member,
            ifname,
            mtu,
        } => {
            check_mtu(*mtu)?;
            check_mtu6(topo, *mtu, &format!("{member}/{ifname}"))?;
            let ns = id.ns(member);
            let current = current_mtu(&ns, ifname)?;
            let mut links = vec![(ns.clone(), ifname.clone(), current)];
            if let Some((pns, pif)) = veth_peer(id, topo, state, member, ifname) {
                let pcur = current_mtu(&pns, &pif)?;
                links.push((pns, pif, pcur));
            }
            Ok(Change {
                apply: links
                    .iter()
                    .map(|(ns, dev, _)| ip(ns, &format!("link set {dev} mtu {mtu}")))
                    .collect(),
                undo: links
                    .iter()
                    .map(|(ns, dev, old)| ip(ns, &format!("link set {dev} mtu {old}")))
                    .collect(),
                description: format!("{member}/{ifname} MTU {mtu} (was {current}), and its peer"),
            })
        }
        Fault::VxlanDf { node } => {
            let nodes: Vec<&str> = match node {
                Some(n) => {
                    topo.node(n).ok_or_else(|| format!("no node {n:?}"))?;
                    vec![n.as_str()]
                }
                None => topo
                    .nodes
                    .iter()
                    .map(|n| n.name.get_ref().as_str())
                    .collect(),
            };
            let dev = &topo.overlay.device;
            Ok(Change {
                apply: nodes
                    .iter()
                    .map(|n| ip(&id.ns(n), &format!("link set {dev} type vxlan df set")))
                    .collect(),
                undo: nodes
                    .iter()
                    .map(|n| ip(&id.ns(n), &format!("link set {dev} type vxlan df unset")))
                    .collect(),
                description: format!("outer DF set on {dev} of {}", nodes.join(", ")),
            })
        }
        Fault::DropPod { pod } => {
            let p = state.pod(pod).ok_or_else(|| format!("no pod {pod:?}"))?;
            let ns = id.ns(&p.node);
            let rule = |tool: &str, op: &str, dst: String| {
                let mut v = argv(&["ip", "netns", "exec", &ns, tool, op, "FORWARD"]);
                if op == "-I" {
                    v.push("1".into());
                }
                v.extend(argv(&[
                    "-d",
                    &dst,
                    "-m",
                    "comment",
                    "--comment",
                    "dye-lab-fault",
                    "-j",
                    "DROP",
                ]));
                v
            };
            let v4 = format!("{}/32", p.ip);
            let mut apply = vec![rule("iptables", "-I", v4.clone())];
            let mut undo = vec![rule("iptables", "-D", v4)];
            let mut addrs = p.ip.to_string();
            if let Some(ip6) = p.ip6 {
                let v6 = format!("{ip6}/128");
                apply.push(rule("ip6tables", "-I", v6.clone()));
                undo.push(rule("ip6tables", "-D", v6));
                addrs.push_str(&format!(", {ip6}"));
            }
            Ok(Change {
                apply,
                undo,
                description: format!("DROP in {}'s FORWARD chain for {pod} ({addrs})", p.node),
            })
        }
        Fault::NoRoute { node, to } => {
            topo.node(node).ok_or_else(|| format!("no node {node:?}"))?;
            let peer = topo.node(to).ok_or_else(|| format!("no node {to:?}"))?;
            if node == to {
                return Err("a node has no overlay route to itself".into());
            }
            let subnet = peer.pod_subnet.get_ref();
            let via = subnet.network();
            let dev = &topo.overlay.device;
            let ns = id.ns(node);
            let mut apply = vec![ip(&ns, &format!("route del {subnet}"))];
            let mut undo = vec![ip(
                &ns,
                &format!("route add {subnet} via {via} dev {dev} onlink"),
            )];
            let mut subnets = subnet.to_string();
            if let Some(s6) = &peer.pod_subnet6 {
                let s6 = s6.get_ref();
                let dev6 = topo.device6();
                apply.push(ip(&ns, &format!("-6 route del {s6}")));
                undo.push(ip(
                    &ns,
                    &format!("-6 route add {s6} via {} dev {dev6} onlink", s6.network()),
                ));
                subnets.push_str(&format!(", {s6}"));
            }
            Ok(Change {
                apply,
                undo,
                description: format!("{node} has no route to {to}'s pods ({subnets})"),
            })
        }
        Fault::UnderlayCut { node } => plan_cut(id, topo, state, node),
        Fault::NetpolDrop { .. }
        | Fault::ForwardPolicyDrop { .. }
        | Fault::RpFilter { .. }
        | Fault::DeadNeighbour { .. }
        | Fault::CtInvalidDrop { .. } => plan_drop(id, topo, state, fault),
        Fault::AgentStop { .. } | Fault::AgentClock { .. } => plan_agent(id, state, fault),
    }
}

/// Agent faults run `dye lab agent` (this binary), which replaces the node's agent; the undo
/// starts it again as `up` did.
fn plan_agent(id: &LabId, state: &LabState, fault: &Fault) -> Result<Change, String> {
    let (Fault::AgentStop { node } | Fault::AgentClock { node, .. }) = fault else {
        return Err("not an agent fault".into());
    };
    if !state.agents.iter().any(|a| &a.node == node) {
        return Err(format!(
            "node {node:?} runs no agent (start the lab with --agents or --isolated)"
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("locate the dye binary: {e}"))?;
    let exe = exe.display().to_string();
    let agent = |extra: &[&str]| {
        let mut v = argv(&[&exe, "lab", "agent", "--id", id.as_str(), node]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    match fault {
        Fault::AgentClock { offset, .. } => {
            crate::agent::skew::Skew::parse(offset)?;
            Ok(Change {
                apply: vec![agent(&["--clock-offset", offset])],
                undo: vec![agent(&[])],
                description: format!(
                    "{node}'s agent restarted with {}={offset}",
                    crate::agent::skew::ENV
                ),
            })
        }
        _ => Ok(Change {
            apply: vec![agent(&["--stop"])],
            undo: vec![agent(&[])],
            description: format!("{node}'s agent stopped"),
        }),
    }
}

/// Sets the far end of `node`'s uplink down: the hub's (switch's or router's) port named after
/// the node. Downing the node's own eth0 instead would make the kernel delete the node's routes
/// through it, which link up does not bring back.
fn plan_cut(id: &LabId, topo: &Topology, state: &LabState, node: &str) -> Result<Change, String> {
    if topo.node(node).is_none() {
        let nodes: Vec<&str> = topo
            .nodes
            .iter()
            .map(|n| n.name.get_ref().as_str())
            .collect();
        return Err(format!(
            "no node {node:?} (the lab's nodes: {})",
            nodes.join(", ")
        ));
    }
    let already = state
        .faults
        .iter()
        .any(|f| matches!(&f.fault, Fault::UnderlayCut { node: n } if n == node));
    if already {
        return Err(format!(
            "{node} is already cut off the underlay; `dye lab fault {id} clear` reconnects it"
        ));
    }
    let (hub, what) = match &topo.router {
        Some(r) => (r.name.as_str(), "the router's port"),
        None => (UNDERLAY, "its switch port"),
    };
    let ns = id.ns(hub);
    Ok(Change {
        apply: vec![ip(&ns, &format!("link set {node} down"))],
        undo: vec![ip(&ns, &format!("link set {node} up"))],
        description: format!(
            "{node} cut off the underlay: {hub}/{node} ({what}) is down; {node}'s eth0 keeps its \
             addresses and routes (NO-CARRIER)"
        ),
    })
}

/// `ip netns exec NS nft WORDS…` (nft joins its arguments into one command).
fn nft(ns: &str, command: &str) -> Vec<String> {
    argv(&["ip", "netns", "exec", ns, "nft", command])
}

fn sysctl(ns: &str, key: &str, value: &str) -> Vec<String> {
    argv(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ])
}

fn current_sysctl(ns: &str, key: &str) -> Result<String, String> {
    Cmd::new(["ip", "netns", "exec", ns, "sysctl", "-n", key])
        .run()
        .map(|v| v.trim().to_string())
        .map_err(|e| format!("reading {key} in {ns}: {e}"))
}

/// Two distinct nodes of the lab.
fn two_nodes<'t>(
    topo: &'t Topology,
    node: &str,
    other: &str,
) -> Result<(&'t super::topology::Node, &'t super::topology::Node), String> {
    let a = topo.node(node).ok_or_else(|| format!("no node {node:?}"))?;
    let b = topo
        .node(other)
        .ok_or_else(|| format!("no node {other:?}"))?;
    if node == other {
        return Err(format!("{node} and {other} are the same node"));
    }
    Ok((a, b))
}

/// The faults behind the kernel's drop reasons (netfilter, rp_filter, neighbours).
fn plan_drop(
    id: &LabId,
    topo: &Topology,
    state: &LabState,
    fault: &Fault,
) -> Result<Change, String> {
    match fault {
        Fault::NetpolDrop { pod } => {
            let p = state.pod(pod).ok_or_else(|| format!("no pod {pod:?}"))?;
            let ns = id.ns(&p.node);
            let chain = format!("ingress-{pod}");
            let cidr = topo.overlay.cluster_cidr;
            let own = topo
                .node(&p.node)
                .map(|n| n.pod_subnet.get_ref().to_string())
                .ok_or_else(|| format!("no node {:?}", p.node))?;
            Ok(Change {
                apply: vec![
                    nft(&ns, "add table inet netpol"),
                    nft(
                        &ns,
                        "add chain inet netpol forward { type filter hook forward priority -10; policy accept; }",
                    ),
                    nft(&ns, &format!("add chain inet netpol {chain}")),
                    nft(
                        &ns,
                        &format!("add rule inet netpol forward ip daddr {} jump {chain}", p.ip),
                    ),
                    nft(
                        &ns,
                        &format!(
                            "add rule inet netpol {chain} ip saddr {cidr} ip saddr != {own} drop"
                        ),
                    ),
                ],
                undo: vec![nft(&ns, "delete table inet netpol")],
                description: format!(
                    "NetworkPolicy-style nft drop on {}: {pod} ({}) refuses other nodes' pods (table inet netpol, chain {chain})",
                    p.node, p.ip
                ),
            })
        }
        Fault::ForwardPolicyDrop { node } => {
            topo.node(node).ok_or_else(|| format!("no node {node:?}"))?;
            let ns = id.ns(node);
            let policy =
                |p: &str| argv(&["ip", "netns", "exec", &ns, "iptables", "-P", "FORWARD", p]);
            Ok(Change {
                apply: vec![policy("DROP")],
                undo: vec![policy("ACCEPT")],
                description: format!("{node}'s FORWARD chain policy is DROP"),
            })
        }
        Fault::RpFilter { node, from } => {
            let (n, f) = two_nodes(topo, node, from)?;
            let ns = id.ns(node);
            let subnet = f.pod_subnet.get_ref();
            let dev = &topo.overlay.device;
            let key = "net.ipv4.conf.all.rp_filter";
            let was = current_sysctl(&ns, key)?;
            Ok(Change {
                apply: vec![
                    ip(
                        &ns,
                        &format!("route replace {subnet} via {} dev eth0", f.address.get_ref()),
                    ),
                    sysctl(&ns, key, "1"),
                ],
                undo: vec![
                    sysctl(&ns, key, &was),
                    ip(
                        &ns,
                        &format!(
                            "route replace {subnet} via {} dev {dev} onlink",
                            subnet.network()
                        ),
                    ),
                ],
                description: format!(
                    "strict rp_filter on {} with {from}'s pods ({subnet}) routed back via eth0, not {dev}",
                    n.name.get_ref()
                ),
            })
        }
        Fault::DeadNeighbour { node, to } => {
            let (_, t) = two_nodes(topo, node, to)?;
            let ns = id.ns(node);
            let subnet = t.pod_subnet.get_ref();
            let dev = &topo.overlay.device;
            let taken: Vec<std::net::Ipv4Addr> = topo
                .nodes
                .iter()
                .map(|n| *n.address.get_ref())
                .chain(topo.firewall.iter().map(|f| f.underlay_address))
                .collect();
            let nobody = topo
                .underlay
                .subnet
                .hosts()
                .rev()
                .find(|a| !taken.contains(a))
                .ok_or("the underlay has no free address")?;
            Ok(Change {
                apply: vec![ip(
                    &ns,
                    &format!("route replace {subnet} via {nobody} dev eth0"),
                )],
                undo: vec![ip(
                    &ns,
                    &format!("route replace {subnet} via {} dev {dev} onlink", subnet.network()),
                )],
                description: format!(
                    "{node} routes {to}'s pods ({subnet}) via {nobody}, an underlay address nobody answers ARP for"
                ),
            })
        }
        Fault::CtInvalidDrop { node } => {
            topo.node(node).ok_or_else(|| format!("no node {node:?}"))?;
            let ns = id.ns(node);
            Ok(Change {
                apply: vec![
                    nft(&ns, "add table inet ctguard"),
                    nft(
                        &ns,
                        "add chain inet ctguard forward { type filter hook forward priority -5; policy accept; }",
                    ),
                    nft(&ns, "add rule inet ctguard forward ct state invalid drop"),
                ],
                undo: vec![nft(&ns, "delete table inet ctguard")],
                description: format!(
                    "{node} drops conntrack-INVALID packets it forwards (table inet ctguard)"
                ),
            })
        }
        _ => Err(format!("{fault:?} is not a drop fault")),
    }
}

fn check_mtu(mtu: u32) -> Result<(), String> {
    if (576..=9000).contains(&mtu) {
        Ok(())
    } else {
        Err(format!("MTU {mtu} is outside 576..=9000"))
    }
}

/// In a dual-stack lab an MTU below 1280 would not limit IPv6 but remove it: the kernel drops
/// every IPv6 address and route of a device set below IPv6's minimum link MTU.
fn check_mtu6(topo: &Topology, mtu: u32, what: &str) -> Result<(), String> {
    if topo.dual_stack() && mtu < IPV6_MIN_MTU {
        Err(format!(
            "MTU {mtu} is below {IPV6_MIN_MTU}, IPv6's minimum link MTU: in this dual-stack lab \
             the kernel would silently remove IPv6 from {what} instead of limiting it; use \
             {IPV6_MIN_MTU} or more (or an IPv4-only topology)"
        ))
    } else {
        Ok(())
    }
}

fn current_mtu(ns: &str, ifname: &str) -> Result<u32, String> {
    let out = Cmd::new(["ip", "-n", ns, "-j", "link", "show", "dev", ifname])
        .run()
        .map_err(|_| format!("no interface {ifname:?} in {ns}"))?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    v.get(0)
        .and_then(|l| l.get("mtu"))
        .and_then(|m| m.as_u64())
        .and_then(|m| u32::try_from(m).ok())
        .ok_or_else(|| format!("no MTU for {ifname} in {ns}"))
}

/// The other end of a lab veth, from the wiring the lab itself made.
fn veth_peer(
    id: &LabId,
    topo: &Topology,
    state: &LabState,
    member: &str,
    ifname: &str,
) -> Option<(String, String)> {
    let is_node = topo.node(member).is_some();
    let fw = topo.firewall.as_ref();
    let office = topo.office.as_ref();
    if let Some(r) = &topo.router {
        // Routed underlay: node eth0 ↔ the router's port named after the node.
        if is_node && ifname == "eth0" {
            return Some((id.ns(&r.name), member.to_string()));
        }
        if member == r.name && topo.node(ifname).is_some() {
            return Some((id.ns(ifname), "eth0".into()));
        }
    }
    if ifname == "eth0" && (is_node || fw.map(|f| f.name == member).unwrap_or(false)) {
        return Some((id.ns(UNDERLAY), member.to_string()));
    }
    if member == UNDERLAY {
        let owner = ifname;
        return Some((id.ns(owner), "eth0".into()));
    }
    if let (Some(fw), Some(office)) = (fw, office) {
        if member == fw.name && ifname == "eth1" {
            return Some((id.ns(&office.name), "eth0".into()));
        }
        if member == office.name && ifname == "eth0" {
            return Some((id.ns(&fw.name), "eth1".into()));
        }
    }
    if let Some(pod) = state.pod(member) {
        if ifname == "eth0" {
            return Some((id.ns(&pod.node), pod.host_veth.clone()));
        }
    }
    if is_node {
        if let Some(pod) = state
            .pods
            .iter()
            .find(|p| p.node == member && p.host_veth == ifname)
        {
            return Some((pod.netns.clone(), "eth0".into()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTED: &str = include_str!("../../../samples/lab/routed.toml");

    #[test]
    fn a_router_port_and_a_node_uplink_are_each_others_peer() {
        let id = LabId::parse("fx").unwrap();
        let topo = Topology::parse(ROUTED).unwrap();
        let state = LabState::new(&id, "routed.toml".into());
        assert_eq!(
            veth_peer(&id, &topo, &state, "router", "node-2"),
            Some(("dye-fx-node-2".to_string(), "eth0".to_string()))
        );
        assert_eq!(
            veth_peer(&id, &topo, &state, "node-1", "eth0"),
            Some(("dye-fx-router".to_string(), "node-1".to_string()))
        );
        assert_eq!(veth_peer(&id, &topo, &state, "router", "eth9"), None);
        // The flannel lab keeps its switch.
        let flannel = Topology::builtin().unwrap();
        assert_eq!(
            veth_peer(&id, &flannel, &state, "node-1", "eth0"),
            Some(("dye-fx-underlay".to_string(), "node-1".to_string()))
        );
    }

    #[test]
    fn underlay_mtu_on_a_routed_lab_shrinks_router_ports_and_uplinks() {
        let id = LabId::parse("fx").unwrap();
        let topo = Topology::parse(ROUTED).unwrap();
        let state = LabState::new(&id, "routed.toml".into());
        let change = plan(&id, &topo, &state, &Fault::UnderlayMtu { mtu: 1400 }).unwrap();
        let links: Vec<String> = change.apply.iter().map(|a| a.join(" ")).collect();
        assert_eq!(
            links,
            [
                "ip -n dye-fx-node-1 link set eth0 mtu 1400",
                "ip -n dye-fx-router link set node-1 mtu 1400",
                "ip -n dye-fx-node-2 link set eth0 mtu 1400",
                "ip -n dye-fx-router link set node-2 mtu 1400",
            ]
        );
    }

    fn cut(topo: &Topology, state: &LabState, node: &str) -> Result<Change, String> {
        let id = LabId::parse("fx").unwrap();
        plan(
            &id,
            topo,
            state,
            &Fault::UnderlayCut {
                node: node.to_string(),
            },
        )
    }

    #[test]
    fn an_underlay_cut_downs_the_hubs_port_never_the_nodes_eth0() {
        let id = LabId::parse("fx").unwrap();
        let state = LabState::new(&id, "cluster.toml".into());
        let flannel = Topology::builtin().unwrap();
        let c = cut(&flannel, &state, "node-2").unwrap();
        assert_eq!(c.apply, [ip("dye-fx-underlay", "link set node-2 down")]);
        assert_eq!(c.undo, [ip("dye-fx-underlay", "link set node-2 up")]);
        let routed = Topology::parse(ROUTED).unwrap();
        let c = cut(&routed, &state, "node-1").unwrap();
        assert_eq!(c.apply, [ip("dye-fx-router", "link set node-1 down")]);
        assert_eq!(c.undo, [ip("dye-fx-router", "link set node-1 up")]);
    }

    #[test]
    fn an_underlay_cut_refuses_an_unknown_node_and_a_second_identical_cut() {
        let id = LabId::parse("fx").unwrap();
        let topo = Topology::builtin().unwrap();
        let mut state = LabState::new(&id, "cluster.toml".into());
        let err = cut(&topo, &state, "node-9").unwrap_err();
        assert!(
            err.contains("no node \"node-9\"") && err.contains("node-1, node-2"),
            "{err}"
        );
        let first = cut(&topo, &state, "node-2").unwrap();
        state.faults.push(FaultRecord {
            fault: Fault::UnderlayCut {
                node: "node-2".into(),
            },
            description: first.description,
            undo: first.undo,
        });
        let err = cut(&topo, &state, "node-2").unwrap_err();
        assert!(err.contains("already cut off"), "{err}");
        // Another node may still be cut.
        assert!(cut(&topo, &state, "node-1").is_ok());
    }
}
