//! The optional keys that give a lab another shape than flannel's: a routed underlay (a router
//! namespace between per-node subnets), Calico/Cilium-style bridge-less pods, and kube-proxy's
//! nftables mode. Each defaults to the flannel lab, so `samples/lab/cluster.toml` builds as it
//! always did.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::topology::{check_name, line_of, Node, PrefixExt, Topology};

/// `[router]`: nodes on separate underlay subnets joined by a router namespace. The router has
/// one port per node, named after the node, holding the first address of the node's
/// `underlay_subnet`; each node's default route goes through its port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    pub name: String,
}

impl Router {
    /// The router's address on `node`'s segment: the node's default gateway.
    pub fn port_address(node: &Node) -> Option<Ipv4Addr> {
        node.underlay_subnet
            .as_ref()
            .map(|s| s.get_ref().first_host())
    }
}

/// `[pods]`: how pods are wired to their node.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pods {
    #[serde(default)]
    pub wiring: PodWiring,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodWiring {
    /// flannel: a `cni0` bridge that is the pods' gateway.
    #[default]
    Bridge,
    /// Calico/Cilium: no bridge; pod eth0 holds a /32 with `default via 169.254.1.1 onlink`,
    /// the host end (`cali…`) answers ARP by proxy and the node has a /32 route per pod.
    Routed,
}

/// `[kube_proxy]`: which of kube-proxy's modes programs the services.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeProxy {
    #[serde(default)]
    pub mode: ProxyMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* chains in iptables.
    #[default]
    Iptables,
    /// `table ip kube-proxy`: a verdict map of service IPs → service chains → endpoint chains.
    Nftables,
}

/// Checks the shape keys against the rest of the topology; `names` holds the names taken so
/// far (nodes, pods, firewall, office).
pub fn check(
    topo: &Topology,
    text: &str,
    names: &mut std::collections::BTreeSet<String>,
) -> Result<(), String> {
    let at = |span: std::ops::Range<usize>, msg: String| -> String {
        format!("line {}: {msg}", line_of(text, span.start))
    };
    let ipv4_only = |what: &str| -> Result<(), String> {
        if topo.dual_stack() {
            Err(format!(
                "{what} is built for IPv4 only: leave out the *6 keys ([underlay] subnet6 …)"
            ))
        } else {
            Ok(())
        }
    };
    let Some(router) = &topo.router else {
        if let Some(s) = topo.nodes.iter().find_map(|n| n.underlay_subnet.as_ref()) {
            return Err(at(
                s.span(),
                "underlay_subnet needs a [router] joining the nodes' subnets".into(),
            ));
        }
        if topo.pods.wiring == PodWiring::Routed {
            ipv4_only("[pods] wiring = \"routed\"")?;
        }
        if topo.kube_proxy.mode == ProxyMode::Nftables {
            ipv4_only("[kube_proxy] mode = \"nftables\"")?;
        }
        return Ok(());
    };
    check_name(&router.name)?;
    if !names.insert(router.name.clone()) {
        return Err(format!("router name {:?} is used twice", router.name));
    }
    ipv4_only("a routed underlay ([router])")?;
    if topo.firewall.is_some() {
        return Err(
            "a [firewall] plugs into the underlay switch: a lab with a [router] has none".into(),
        );
    }
    let mut seen: Vec<super::topology::Ipv4Net> = Vec::new();
    for node in &topo.nodes {
        let Some(subnet) = &node.underlay_subnet else {
            return Err(at(
                node.name.span(),
                format!(
                    "node {:?} needs underlay_subnet (its own segment behind the router)",
                    node.name.get_ref()
                ),
            ));
        };
        let net = *subnet.get_ref();
        if !topo.underlay.subnet.contains(&net) || net.prefix_len() > 30 {
            return Err(at(
                subnet.span(),
                format!(
                    "underlay_subnet {net} must be a /30 or larger inside the underlay subnet {}",
                    topo.underlay.subnet
                ),
            ));
        }
        if !net.contains(node.address.get_ref()) || *node.address.get_ref() == net.first_host() {
            return Err(at(
                node.address.span(),
                format!(
                    "node address {} must be inside its underlay_subnet {net}, not its first \
                     address (the router's port)",
                    node.address.get_ref()
                ),
            ));
        }
        if let Some(other) = seen.iter().find(|o| o.contains(&net) || net.contains(*o)) {
            return Err(at(
                subnet.span(),
                format!("underlay_subnet {net} overlaps {other}"),
            ));
        }
        seen.push(net);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTED: &str = include_str!("../../../samples/lab/routed.toml");
    const BUILTIN: &str = include_str!("../../../samples/lab/cluster.toml");

    #[test]
    fn the_routed_sample_parses_with_its_shape() {
        let t = Topology::parse(ROUTED).expect("routed.toml parses");
        assert_eq!(t.router.as_ref().map(|r| r.name.as_str()), Some("router"));
        assert_eq!(t.pods.wiring, PodWiring::Routed);
        assert_eq!(t.kube_proxy.mode, ProxyMode::Nftables);
        assert_eq!((t.overlay.port, t.overlay.vni), (4789, 4096));
        let n2 = t.node("node-2").unwrap();
        assert_eq!(
            Router::port_address(n2),
            Some(Ipv4Addr::new(192, 168, 52, 1))
        );
    }

    #[test]
    fn the_flannel_lab_keeps_its_shape() {
        let t = Topology::parse(BUILTIN).unwrap();
        assert!(t.router.is_none());
        assert_eq!(t.pods.wiring, PodWiring::Bridge);
        assert_eq!(t.kube_proxy.mode, ProxyMode::Iptables);
    }

    #[test]
    fn routed_mistakes_name_their_line() {
        let clash = ROUTED.replace(
            r#"underlay_subnet = "192.168.52.0/24""#,
            r#"underlay_subnet = "192.168.51.0/25""#,
        );
        let err = Topology::parse(&clash).unwrap_err();
        assert!(
            err.contains("node address 192.168.52.12 must be inside"),
            "{err}"
        );
        let no_router: String = ROUTED
            .lines()
            .filter(|l| !l.starts_with("[router]") && !l.starts_with("name = \"router\""))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = Topology::parse(&no_router).unwrap_err();
        let line = no_router
            .lines()
            .position(|l| l.starts_with("underlay_subnet"))
            .unwrap()
            + 1;
        assert_eq!(
            err,
            format!("line {line}: underlay_subnet needs a [router] joining the nodes' subnets")
        );
        let gw = ROUTED.replace(
            r#"address = "192.168.51.11""#,
            r#"address = "192.168.51.1""#,
        );
        assert!(Topology::parse(&gw).unwrap_err().contains("not its first"));
    }
}
