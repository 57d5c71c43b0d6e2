//! The routed underlay: a router namespace instead of the switch, one point-to-point segment per
//! node. The router's port towards a node is named after the node (`router/node-2`) and holds
//! the first address of the node's `underlay_subnet`; the node's eth0 is the other end of that
//! veth and routes everything off its segment through the port.

use super::cmd::Cmd;
use super::shape::Router;
use super::topology::{Node, Topology};
use super::LabError;

/// Forwarding on, and the kernel's answers as a real router gives them: ICMP errors (the
/// Fragmentation Needed a too-small port sends) are not rate-limited away inside the lab.
pub fn prepare(router_ns: &str) -> Result<(), LabError> {
    for setting in [
        "net.ipv4.ip_forward=1",
        // Each refused probe gets its ICMP error; the default token bucket (1 per second
        // per destination) would hide all but the first from a short search.
        "net.ipv4.icmp_ratelimit=0",
    ] {
        Cmd::in_ns(router_ns, ["sysctl", "-q", "-w", setting]).run()?;
    }
    Ok(())
}

/// Connects `node` (namespace `node_ns`, interface `eth0`) to its router port and routes the
/// node's default through it.
pub fn plug_node(
    topo: &Topology,
    router_ns: &str,
    node_ns: &str,
    node: &Node,
) -> Result<(), LabError> {
    let (Some(subnet), Some(gateway)) = (&node.underlay_subnet, Router::port_address(node)) else {
        return Err(LabError::Internal(format!(
            "node {} has no underlay_subnet",
            node.name.get_ref()
        )));
    };
    let mtu = topo.underlay.mtu;
    let prefix = subnet.get_ref().prefix_len();
    let port = node.name.get_ref();
    Cmd::ip(
        node_ns,
        &format!("link add eth0 mtu {mtu} type veth peer name {port} mtu {mtu} netns {router_ns}"),
    )
    .run()?;
    Cmd::ip(
        router_ns,
        &format!("addr add {gateway}/{prefix} dev {port}"),
    )
    .run()?;
    Cmd::ip(router_ns, &format!("link set {port} up")).run()?;
    Cmd::ip(
        node_ns,
        &format!("addr add {}/{prefix} dev eth0", node.address.get_ref()),
    )
    .run()?;
    Cmd::ip(node_ns, "link set eth0 up").run()?;
    Cmd::ip(
        node_ns,
        &format!("route add default via {gateway} dev eth0"),
    )
    .run()?;
    Ok(())
}
