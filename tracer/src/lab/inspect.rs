//! A read-only view of a running lab — members, their interfaces and addresses as the kernel
//! reports them, services, the firewall's NAT, and applied faults — for `dye lab status`
//! (terminal and JSON) and for tests.

use serde::Serialize;

use super::agents::AgentState;
use super::cmd::Cmd;
use super::names::{LabId, UNDERLAY};
use super::state::{load_state, LabState};
use super::topology::Topology;
use super::LabError;

#[derive(Debug, Serialize)]
pub struct LabView {
    pub id: String,
    pub complete: bool,
    pub topology: String,
    pub members: Vec<Member>,
    pub services: Vec<ServiceView>,
    pub firewall: Option<FirewallView>,
    pub faults: Vec<String>,
    /// Every node's `dye agent` (`dye lab up --agents`).
    pub agents: Vec<AgentState>,
    /// The certificate directory for coordinators (`--certs`), when the lab runs agents.
    pub certs: Option<String>,
    /// Every node is a host of its own (`dye lab up --isolated`): enter one with
    /// `dye lab exec NODE -- CMD`.
    pub isolated: bool,
    /// The admin host's underlay address (isolated labs on a switched underlay).
    pub admin: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Member {
    pub name: String,
    pub netns: String,
    /// switch | node | pod | firewall | office
    pub role: &'static str,
    /// The node a pod runs on.
    pub node: Option<String>,
    /// A node's container runtime: its containerd CRI socket.
    pub cri_socket: Option<String>,
    /// A pod's CRI identity.
    pub pod: Option<PodIdentity>,
    pub interfaces: Vec<Interface>,
}

/// Who a pod is to its node's container runtime (CRI).
#[derive(Debug, Serialize)]
pub struct PodIdentity {
    /// Kubernetes namespace and name, as in the sandbox's CRI metadata.
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The CRI pod sandbox id.
    pub sandbox_id: String,
    /// The sandbox process, whose network namespace the pod's netns name points at.
    pub sandbox_pid: u32,
    /// The CRI socket of the pod's node.
    pub cri_socket: String,
}

#[derive(Debug, Serialize)]
pub struct Interface {
    pub name: String,
    /// Kernel link kind: veth, bridge, vxlan, loopback…
    pub kind: String,
    pub mtu: u32,
    /// IPv4 addresses (prefix notation).
    pub addresses: Vec<String>,
    /// Global IPv6 addresses (dual-stack labs; link-local ones left out).
    pub addresses6: Vec<String>,
    pub master: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub cluster_ip: String,
    pub ports: Vec<String>,
    pub endpoints: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FirewallView {
    pub vip: String,
    pub publishes_to: String,
    pub office_subnet: String,
    pub snat_to: String,
}

/// Looks at lab `id` as it is now.
pub fn inspect(id: &LabId) -> Result<LabView, LabError> {
    let state = load_state(id)?;
    let topo = Topology::load(&id.state_dir().join("topology.toml"))?;
    let mut members = Vec::new();
    let mut add = |name: &str, role: &'static str, node: Option<String>| -> Result<(), LabError> {
        let netns = id.ns(name);
        if !state.namespaces.contains(&netns) {
            return Ok(());
        }
        let cri_socket = state
            .runtimes
            .iter()
            .find(|r| role == "node" && r.node == name)
            .map(|r| r.cri_socket.display().to_string());
        let pod = state
            .pods
            .iter()
            .find(|p| role == "pod" && p.name == name)
            .map(|p| PodIdentity {
                namespace: p.pod_namespace.clone(),
                name: p.name.clone(),
                uid: p.uid.clone(),
                sandbox_id: p.sandbox_id.clone(),
                sandbox_pid: p.sandbox_pid,
                cri_socket: p.cri_socket.display().to_string(),
            });
        members.push(Member {
            name: name.to_string(),
            interfaces: interfaces(&netns)?,
            netns,
            role,
            node,
            cri_socket,
            pod,
        });
        Ok(())
    };
    add(UNDERLAY, "switch", None)?;
    add(super::names::ADMIN, "admin", None)?;
    if let Some(r) = &topo.router {
        add(&r.name, "router", None)?;
    }
    for node in &topo.nodes {
        add(node.name.get_ref(), "node", None)?;
        for pod in &node.pods {
            add(pod.get_ref(), "pod", Some(node.name.get_ref().clone()))?;
        }
    }
    if let Some(fw) = &topo.firewall {
        add(&fw.name, "firewall", None)?;
    }
    if let Some(office) = &topo.office {
        add(&office.name, "office", None)?;
    }
    Ok(LabView {
        id: state.id.clone(),
        complete: state.complete,
        topology: state.topology_source.clone(),
        members,
        services: services(&topo, &state),
        firewall: topo.firewall.as_ref().map(|fw| FirewallView {
            vip: format!("{}:{}", fw.vip, fw.vip_port),
            publishes_to: format!(
                "{} {}:{}",
                fw.publish_to.get_ref(),
                topo.node(fw.publish_to.get_ref())
                    .map(|n| n.address.get_ref().to_string())
                    .unwrap_or_default(),
                fw.publish_port
            ),
            office_subnet: fw.office_subnet.to_string(),
            snat_to: fw.snat_to.to_string(),
        }),
        faults: state.faults.iter().map(|f| f.description.clone()).collect(),
        agents: state.agents.clone(),
        certs: state.certs.as_ref().map(|c| c.display().to_string()),
        isolated: state.isolated,
        admin: state.admin.as_ref().map(|a| a.address.to_string()),
    })
}

fn services(topo: &Topology, state: &LabState) -> Vec<ServiceView> {
    topo.services
        .iter()
        .map(|svc| ServiceView {
            name: svc.name.get_ref().clone(),
            cluster_ip: svc.cluster_ip.get_ref().to_string(),
            ports: svc
                .ports
                .iter()
                .map(|p| {
                    let np = p
                        .node_port
                        .map(|n| format!(" nodePort {n}"))
                        .unwrap_or_default();
                    format!("{}/{}→{}{np}", p.proto, p.port, p.target_port)
                })
                .collect(),
            endpoints: svc
                .endpoints
                .iter()
                .map(|e| match state.pod(e.get_ref()) {
                    Some(p) => format!("{} {}", p.name, p.ip),
                    None => e.get_ref().clone(),
                })
                .collect(),
        })
        .collect()
}

/// Interfaces of a namespace from `ip -j -d addr show`.
fn interfaces(netns: &str) -> Result<Vec<Interface>, LabError> {
    let out = Cmd::new(["ip", "-n", netns, "-j", "-d", "addr", "show"]).run()?;
    let links: Vec<serde_json::Value> =
        serde_json::from_str(&out).map_err(|e| LabError::Parse {
            what: format!("ip -j addr show in {netns}"),
            detail: e.to_string(),
        })?;
    Ok(links
        .iter()
        .filter_map(|l| {
            let name = l["ifname"].as_str()?.to_string();
            let kind = l["linkinfo"]["info_kind"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| {
                    if l["link_type"] == "loopback" {
                        "loopback"
                    } else {
                        "other"
                    }
                    .to_string()
                });
            let of_family = |family: &str| -> Vec<String> {
                l["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["family"] == family && a["scope"] != "link")
                    .filter_map(|a| {
                        Some(format!(
                            "{}/{}",
                            a["local"].as_str()?,
                            a["prefixlen"].as_u64()?
                        ))
                    })
                    .collect()
            };
            let addresses = of_family("inet");
            let addresses6 = of_family("inet6");
            Some(Interface {
                name,
                kind,
                mtu: l["mtu"]
                    .as_u64()
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(0),
                addresses,
                addresses6,
                master: l["master"].as_str().map(String::from),
            })
        })
        .collect())
}
