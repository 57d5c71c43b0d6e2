//! Bridge-less pods, wired the way Calico (and Cilium in veth mode) wire them. The CNI `ptp`
//! plugin makes the veth pair and host-local hands out the address; then the pod is reshaped:
//!
//! - pod: `eth0` holds `<ip>/32`, `169.254.1.1 dev eth0 scope link`, `default via 169.254.1.1`;
//! - node: the host end is renamed `cali<11 hex>`, has no address, answers the pod's ARP for
//!   169.254.1.1 by proxy (`proxy_arp=1`, `proxy_delay=0`), and `<ip>/32 dev cali…` routes the
//!   pod.
//!
//! No bridge, so every pod-to-pod packet is routed by the node, like on a Calico node.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::cmd::Cmd;
use super::topology::{Node, Topology};
use super::LabError;

/// The CNI plugin that makes the veth pair (Debian's containernetworking-plugins has it).
pub const PLUGIN: &str = "ptp";

/// The link-local gateway every Calico pod routes through; no interface holds it.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The node's CNI network list for routed pods: `ptp` with host-local over the pod subnet.
pub fn network_list(topo: &Topology, node: &Node, ipam_dir: &std::path::Path) -> Value {
    let subnet = node.pod_subnet.get_ref();
    json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "plugins": [{
            "type": PLUGIN,
            "ipMasq": false,
            "mtu": topo.overlay.mtu,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet.to_string() }]],
                "dataDir": ipam_dir.display().to_string(),
            }
        }]
    })
}

/// Calico's name for a workload's host veth: `cali` + 11 hex digits of a hash of it.
pub fn host_veth_name(pod_namespace: &str, pod: &str) -> String {
    // FNV-1a 64 (Calico hashes with SHA-1; any stable hash gives the same shape).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{pod_namespace}.{pod}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer: similar pod names must not give similar names.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    format!("cali{:011x}", h >> 20)
}

/// Reshapes a pod `ptp` made into Calico's wiring. `host_veth` is ptp's host end; returns the
/// new name of it.
pub fn reshape(
    pod_ns: &str,
    node_ns: &str,
    host_veth: &str,
    ip: Ipv4Addr,
    cali: &str,
) -> Result<String, LabError> {
    // The pod: a /32 and a gateway that exists only as a route (onlink).
    Cmd::ip(pod_ns, "-4 addr flush dev eth0").run()?;
    Cmd::ip(pod_ns, &format!("addr add {ip}/32 dev eth0")).run()?;
    Cmd::ip(pod_ns, &format!("route add {GATEWAY} dev eth0 scope link")).run()?;
    Cmd::ip(
        pod_ns,
        &format!("route add default via {GATEWAY} dev eth0 onlink"),
    )
    .run()?;
    // The node: rename (needs the link down), no address, proxy ARP, a /32 route.
    Cmd::ip(node_ns, &format!("link set {host_veth} down")).run()?;
    Cmd::ip(node_ns, &format!("link set {host_veth} name {cali}")).run()?;
    Cmd::ip(node_ns, &format!("-4 addr flush dev {cali}")).run()?;
    for setting in [
        format!("net.ipv4.conf.{cali}.proxy_arp=1"),
        // Answer at once: the default 0.8 s random delay would slow every first packet.
        format!("net.ipv4.neigh.{cali}.proxy_delay=0"),
    ] {
        Cmd::in_ns(node_ns, ["sysctl", "-q", "-w", setting.as_str()]).run()?;
    }
    Cmd::ip(node_ns, &format!("link set {cali} up")).run()?;
    Cmd::ip(
        node_ns,
        &format!("route replace {ip}/32 dev {cali} scope link"),
    )
    .run()?;
    Ok(cali.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_look_like_calicos_and_fit_an_ifname() {
        let a = host_veth_name("default", "pod-a");
        assert_eq!(a.len(), 15, "{a}");
        assert!(a.starts_with("cali"));
        assert!(a[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, host_veth_name("default", "pod-a"));
        assert_ne!(a, host_veth_name("default", "pod-b"));
    }
}
