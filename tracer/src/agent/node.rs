//! This node as an agent sees it: the namespace the agent runs in and every namespace that
//! belongs to it (dye's node attribution: a pod belongs to the namespace at its veth's far
//! end). Namespaces of other nodes are never in an agent's scope, even where they are visible
//! (the lab's nodes share one kernel). With the node's container runtime, its pods' namespaces
//! are named by their pods (`pod NS/NAME`, [`crate::live::pod_names`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use dye_capture::netlink::LinkKind;
use dye_capture::topology::Edge;
use dye_capture::{Netns, NetnsId};
use dye_core::snapshot::Snapshot;

use crate::live::host::HostView;
use crate::live::pod_names::{PodNamer, Policy, SharedNamer, AGENT_BUDGET};
use crate::live::pods::Endpoints;
use crate::live::walk;
use crate::live::{Scope, ScopeError, ScopeRequest};

/// The agent's own node.
#[derive(Debug, Clone)]
pub struct Node {
    /// The namespace the agent was started in.
    own: Netns,
    /// `--node-name`: the node's name for coordinators, as the cluster calls it.
    name: Option<String>,
    /// Names the node's pods' namespaces `pod NS/NAME` when its container runtime answers.
    pods: Option<SharedNamer>,
}

impl Node {
    /// The node of the calling thread's namespace (call it on the main thread at start).
    pub fn current() -> Result<Node, dye_capture::NetnsError> {
        let me = Netns::current()?;
        // Named as the host lists it (`host`, or its /run/netns name in the lab), not `self`.
        let own = Netns::enumerate()?
            .into_iter()
            .find(|n| n.id() == me.id())
            .unwrap_or(me);
        Ok(Node {
            own,
            name: None,
            pods: None,
        })
    }

    /// Names the node for coordinators (Kubernetes: `spec.nodeName`) instead of the hostname.
    pub fn named(mut self, name: Option<String>) -> Node {
        self.name = name;
        self
    }

    /// Names every namespace of a ready pod sandbox on this node after its pod (all but the
    /// node's own: hostNetwork pods share it), asking the runtime at `endpoints`
    /// ([`crate::live::pod_names`], [`Policy::EveryPod`]).
    pub fn naming_pods(mut self, endpoints: Endpoints) -> Node {
        self.pods = Some(Arc::new(Mutex::new(PodNamer::new(
            endpoints,
            Policy::EveryPod,
            self.own.id(),
            AGENT_BUDGET,
        ))));
        self
    }

    /// The name of the namespace the agent runs in.
    pub fn netns_name(&self) -> &str {
        self.own.name()
    }

    /// Discovers this node's namespaces and capture points.
    pub fn scope(&self) -> Result<NodeScope, ScopeError> {
        // An agent serves its whole node: every namespace there, not one probe's path.
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let mut scope = Scope::discover(
            &self.own,
            &ScopeRequest {
                all_namespaces: true,
                max_points: 0,
                pod_names: self.pods.clone(),
                ..ScopeRequest::default()
            },
            unspecified,
            unspecified,
        )?;
        let node = scope
            .topology
            .namespaces
            .iter()
            .find(|n| n.id == self.own.id())
            .map(|n| n.node.clone())
            .unwrap_or_else(|| scope.source.clone());
        scope.topology.namespaces.retain(|n| n.node == node);
        let kept: Vec<String> = scope
            .topology
            .namespaces
            .iter()
            .map(|n| n.name.clone())
            .collect();
        let keep: Vec<bool> = scope
            .metas
            .iter()
            .map(|m| kept.contains(&m.netns))
            .collect();
        // Connections that touch none of this node's namespaces (other nodes', other labs' on
        // a shared kernel) are not this node's to tell.
        scope.topology.edges.retain(|e| {
            let (a, b) = match e {
                Edge::VethPair { a, b } => (a, b),
                Edge::BridgePort { bridge, port } => (bridge, port),
                Edge::TunnelUnderlay { tunnel, underlay } => (tunnel, underlay),
            };
            kept.contains(&a.netns) || kept.contains(&b.netns)
        });
        let mut it = keep.iter();
        scope.points.retain(|_| *it.next().unwrap_or(&false));
        let mut it = keep.iter();
        scope.metas.retain(|_| *it.next().unwrap_or(&false));
        let name = match node.as_str() {
            _ if self.name.is_some() => self.name.clone().unwrap_or_default(),
            // Every machine's own namespace is `host`: the machine's name tells them apart.
            "host" | "self" => hostname().unwrap_or(node.clone()),
            // A lab node: its namespace's name (lab nodes share the host's name).
            _ => node.clone(),
        };
        Ok(NodeScope { node, name, scope })
    }
}

/// One discovery of this node.
#[derive(Debug)]
pub struct NodeScope {
    /// The node's own namespace's name in dye's topology (`host` on a machine).
    pub node: String,
    /// The node's name for coordinators: the hostname when the agent runs in the host's
    /// namespace, else the namespace's name.
    pub name: String,
    pub scope: Scope,
}

impl NodeScope {
    /// The name of the namespace `ns` is, if it belongs to this node.
    pub fn name_of(&self, ns: &Netns) -> Option<&str> {
        self.name_of_id(ns.id())
    }

    pub fn name_of_id(&self, id: NetnsId) -> Option<&str> {
        self.scope
            .topology
            .namespaces
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.as_str())
    }

    /// The namespace here with this name.
    pub fn netns(&self, name: &str) -> Option<&Netns> {
        self.scope.topology.namespace(name).map(|i| &i.netns)
    }

    /// The namespaces here that own `addr` on one of their links.
    pub fn owners(&self, addr: IpAddr) -> Vec<String> {
        self.scope
            .topology
            .namespaces
            .iter()
            .filter(|n| {
                n.links
                    .iter()
                    .any(|l| l.addresses.iter().any(|a| a.addr == addr))
            })
            .map(|n| n.name.clone())
            .collect()
    }

    /// The capture points here (`(netns, ifname)`) that a probe from `src` to `dst` can cross,
    /// starting in `start`: what the path walk reaches on this node, and the links of the
    /// node's own namespace that lead off it (uplinks, tunnel devices: where the probe comes
    /// in from other nodes). Idle pods' namespaces are not among them, so a trace through an
    /// agent costs what its path costs, not what the node holds.
    pub fn path_points(
        &self,
        start: &Netns,
        dst: IpAddr,
        src: IpAddr,
    ) -> BTreeSet<(String, String)> {
        let topology = &self.scope.topology;
        let known: Vec<Netns> = topology
            .namespaces
            .iter()
            .map(|n| n.netns.clone())
            .collect();
        let mut view = HostView::new(known);
        let walked = walk::walk(&mut view, &start.id(), dst, src);
        let mut keep: BTreeSet<(String, String)> = walked
            .points
            .into_iter()
            .filter_map(|(id, ifname)| Some((self.name_of_id(id)?.to_string(), ifname)))
            .collect();
        let Some(own) = topology.namespace(&self.node) else {
            return keep;
        };
        // A veth whose far end is another namespace of this node leads to a pod; a bridge
        // only joins them. Everything else of the node's own leads off it.
        let to_pod = |ifname: &str| {
            topology.edges.iter().any(|e| match e {
                Edge::VethPair { a, b } => {
                    (a.netns == own.name && a.ifname == ifname && b.netns != own.name)
                        || (b.netns == own.name && b.ifname == ifname && a.netns != own.name)
                }
                _ => false,
            })
        };
        // A link addressed only in the other family (an IPv6 overlay's VTEP for an IPv4
        // probe) carries none of it.
        let carries = |link: &dye_capture::netlink::Link| {
            link.addresses.is_empty()
                || link
                    .addresses
                    .iter()
                    .any(|a| a.addr.is_ipv4() == dst.is_ipv4())
        };
        for link in &own.links {
            let off_node = !matches!(link.kind, LinkKind::Loopback | LinkKind::Bridge)
                && !to_pod(&link.name)
                && carries(link);
            if off_node {
                keep.insert((own.name.clone(), link.name.clone()));
            }
        }
        keep
    }

    /// The node's snapshot, its source the node's own namespace.
    pub fn snapshot(&self) -> Snapshot {
        crate::live::snapshot::from_topology(
            &self.scope.topology,
            &self.node,
            self.scope.metas.clone(),
        )
    }
}

/// The kernel's hostname (UTS namespace).
fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}
