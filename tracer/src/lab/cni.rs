//! Pod networking through the CNI reference plugins: the network configuration list each
//! node's containerd reads from its CNI `conf_dir` and runs (via libcni) for every pod sandbox
//! it creates, with the plugins from Debian's containernetworking-plugins.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::topology::PrefixExt;
use super::topology::{Node, Topology};

/// Where Debian's containernetworking-plugins installs the plugins; `CNI_PATH` overrides.
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni";

/// The plugins the lab's network list uses (containerd adds `loopback` for `lo`).
pub const PLUGINS: &[&str] = &["bridge", "host-local", "loopback"];

const CNI_VERSION: &str = "1.0.0";

pub fn cni_path() -> PathBuf {
    std::env::var_os("CNI_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CNI_PATH))
}

/// The node's network configuration list, as flannel's CNI plugin would delegate it: a `cni0`
/// bridge that is the pods' gateway, host-local IPAM over the node's pod subnet, the overlay MTU.
/// IPAM state goes under the lab's state directory instead of /var/lib/cni, so teardown
/// removes it with the lab.
///
/// Dual-stack: host-local gets one range set per family (`ranges: [[v4], [v6]]`) and hands out
/// one address of each, and the bridge plugin puts both gateways on cni0 and installs both
/// default routes in the pod — as with flannel's dual-stack delegate config.
pub fn network_list(topo: &Topology, node: &Node, ipam_dir: &Path) -> Value {
    let subnet = node.pod_subnet.get_ref();
    let mut ranges =
        vec![json!([{ "subnet": subnet.to_string(), "gateway": subnet.first_host().to_string() }])];
    if let Some(s6) = &node.pod_subnet6 {
        let s6 = s6.get_ref();
        ranges.push(json!([{ "subnet": s6.to_string(), "gateway": s6.first_host().to_string() }]));
    }
    json!({
        "cniVersion": CNI_VERSION,
        "name": "cbr0",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "mtu": topo.overlay.mtu,
            "ipam": {
                "type": "host-local",
                "ranges": ranges,
                "dataDir": ipam_dir.display().to_string(),
            }
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_stack_nodes_get_a_v6_range_and_v4_only_nodes_do_not() {
        let topo = Topology::builtin().unwrap();
        let node = &topo.nodes[0];
        let list = network_list(&topo, node, Path::new("/tmp/x"));
        let ranges = list["plugins"][0]["ipam"]["ranges"].as_array().unwrap();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[1][0]["subnet"], "fd00:244:1::/64");
        assert_eq!(ranges[1][0]["gateway"], "fd00:244:1::1");
        let mut v4 = node.clone();
        v4.pod_subnet6 = None;
        let list = network_list(&topo, &v4, Path::new("/tmp/x"));
        assert_eq!(
            list["plugins"][0]["ipam"]["ranges"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
