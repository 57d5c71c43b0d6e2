//! Pod networking through the CNI reference plugins, invoked the way the kubelet's container
//! runtime (libcni) does: a network configuration list, each plugin executed in turn in the
//! node's namespace with CNI_COMMAND/CNI_NETNS/CNI_IFNAME/CNI_ARGS in the environment, the
//! per-plugin config on stdin carrying the list's name and version and the previous result.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::cmd::Cmd;
use super::topology::{Node, Topology};
use super::LabError;

/// Where Debian's containernetworking-plugins installs the plugins; `CNI_PATH` overrides.
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni";

/// The plugins the lab's network list uses.
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

/// What the runtime learns from ADD: the pod addresses and the node-side veth.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    pub host_veth: String,
    pub result: Value,
}

/// Identifies one pod sandbox to the plugins.
pub struct Sandbox<'a> {
    pub node_ns: &'a str,
    pub pod_ns: &'a str,
    pub pod_name: &'a str,
}

impl Sandbox<'_> {
    fn invoke(&self, command: &str, plugin_conf: &Value) -> Result<String, LabError> {
        let plugin = plugin_conf
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| LabError::Internal("plugin config without type".into()))?;
        let binary = cni_path().join(plugin);
        Cmd::in_ns(self.node_ns, [binary.display().to_string()])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", self.pod_ns)
            .env("CNI_NETNS", format!("/run/netns/{}", self.pod_ns))
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                    self.pod_name, self.pod_ns
                ),
            )
            .env("CNI_PATH", cni_path().display().to_string())
            .stdin(plugin_conf.to_string())
            .run()
    }

    /// CNI ADD over the whole list, then the loopback plugin for `lo` as container runtimes do.
    pub fn add(&self, list: &Value) -> Result<Attachment, LabError> {
        let mut prev: Option<Value> = None;
        for conf in plugins_of(list) {
            let conf = with_list_fields(list, conf, prev.as_ref());
            let out = self.invoke("ADD", &conf)?;
            prev = Some(serde_json::from_str(&out).map_err(|e| LabError::Parse {
                what: format!("CNI ADD result for {}", self.pod_name),
                detail: e.to_string(),
            })?);
        }
        let lo = json!({ "cniVersion": CNI_VERSION, "name": "cni-loopback", "type": "loopback" });
        Cmd::in_ns(
            self.node_ns,
            [cni_path().join("loopback").display().to_string()],
        )
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", self.pod_ns)
        .env("CNI_NETNS", format!("/run/netns/{}", self.pod_ns))
        .env("CNI_IFNAME", "lo")
        .env("CNI_PATH", cni_path().display().to_string())
        .stdin(lo.to_string())
        .run()?;
        let result = prev.ok_or_else(|| LabError::Internal("empty CNI plugin list".into()))?;
        parse_attachment(result).map_err(|detail| LabError::Parse {
            what: format!("CNI ADD result for {}", self.pod_name),
            detail,
        })
    }

    /// CNI DEL in reverse order with the cached result, as the runtime does on sandbox removal.
    pub fn del(&self, list: &Value, result: &Value) -> Result<(), LabError> {
        let plugins: Vec<&Value> = plugins_of(list).collect();
        for conf in plugins.into_iter().rev() {
            let conf = with_list_fields(list, conf, Some(result));
            self.invoke("DEL", &conf)?;
        }
        Ok(())
    }
}

fn plugins_of(list: &Value) -> impl DoubleEndedIterator<Item = &Value> {
    list.get("plugins")
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .unwrap_or_default()
}

/// libcni's per-plugin config: the plugin object plus the list's name and version, and the
/// previous plugin's result when chaining.
fn with_list_fields(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    if let Some(obj) = conf.as_object_mut() {
        obj.insert("name".into(), list["name"].clone());
        obj.insert("cniVersion".into(), list["cniVersion"].clone());
        if let Some(prev) = prev {
            obj.insert("prevResult".into(), prev.clone());
        }
    }
    conf
}

/// Pulls the pod address and the host-side veth out of a CNI 1.0 result: the veth is the
/// interface without a sandbox that is not the bridge.
fn parse_attachment(result: Value) -> Result<Attachment, String> {
    let addresses = || {
        result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .filter_map(|a| a.split('/').next())
    };
    let ip = addresses()
        .find_map(|a| a.parse::<Ipv4Addr>().ok())
        .ok_or("no IPv4 address in the result")?;
    let ip6 = addresses().find_map(|a| a.parse::<Ipv6Addr>().ok());
    let host_veth = result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i.get("sandbox").is_none() && i["name"].as_str() != Some("cni0"))
        .and_then(|i| i["name"].as_str())
        .ok_or("no host-side interface in the result")?
        .to_string();
    Ok(Attachment {
        ip,
        ip6,
        host_veth,
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_is_read_from_a_bridge_plugin_result() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1a2b3c4d", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"interface": 2, "address": "10.244.1.2/24", "gateway": "10.244.1.1"}]
        });
        let a = parse_attachment(result).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(a.ip6, None);
        assert_eq!(a.host_veth, "veth1a2b3c4d");
        assert!(parse_attachment(json!({"ips": []})).is_err());
    }

    #[test]
    fn dual_stack_results_give_both_addresses_whatever_their_order() {
        let result = json!({
            "interfaces": [{"name": "cni0"}, {"name": "veth9"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [
                {"interface": 2, "address": "fd00:244:1::2/64", "gateway": "fd00:244:1::1"},
                {"interface": 2, "address": "10.244.1.2/24", "gateway": "10.244.1.1"}
            ]
        });
        let a = parse_attachment(result).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(a.ip6, Some("fd00:244:1::2".parse().unwrap()));
    }

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

    #[test]
    fn per_plugin_config_carries_list_name_version_and_prev_result() {
        let list = json!({"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "bridge"}]});
        let prev = json!({"ips": []});
        let conf = with_list_fields(&list, &list["plugins"][0], Some(&prev));
        assert_eq!(conf["name"], "cbr0");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(conf["type"], "bridge");
    }
}
