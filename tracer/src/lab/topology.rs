//! The lab topology file: the emulated cluster described as data (TOML), parsed and checked
//! before anything is built so that a mistake is reported with its line, not half-way through.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::LabError;

/// The whole lab, as described by a topology file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub underlay: Underlay,
    pub overlay: Overlay,
    pub nodes: Vec<Node>,
    pub responder: Responder,
    #[serde(default)]
    pub services: Vec<Service>,
    pub firewall: Option<Firewall>,
    pub office: Option<Office>,
    /// A routed underlay: nodes on their own subnets joined by a router namespace instead of
    /// one switch (see `shape`).
    pub router: Option<super::shape::Router>,
    /// How pods are wired to their node: the flannel bridge (default) or Calico-style routes.
    #[serde(default)]
    pub pods: super::shape::Pods,
    /// kube-proxy's mode for the services: iptables (default) or nftables.
    #[serde(default)]
    pub kube_proxy: super::shape::KubeProxy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Underlay {
    pub subnet: Ipv4Net,
    /// The underlay's IPv6 prefix: setting it makes the lab dual-stack.
    pub subnet6: Option<Spanned<Ipv6Net>>,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

fn default_mtu() -> u32 {
    1500
}

/// IPv6 needs every link to carry 1280 bytes (RFC 8200 §5); the kernel removes IPv6 from a
/// device whose MTU is set below it.
pub const IPV6_MIN_MTU: u32 = 1280;

/// What VXLAN adds on an IPv6 underlay: outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN6_OVERHEAD: u32 = 70;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    pub device: String,
    pub vni: u32,
    pub port: u16,
    pub mtu: u32,
    pub cluster_cidr: Ipv4Net,
    /// The IPv6 cluster range (dual-stack labs).
    pub cluster_cidr6: Option<Spanned<Ipv6Net>>,
    /// flannel's IPv6 VXLAN device (dual-stack): `flannel-v6.<vni>` unless named here.
    pub device6: Option<String>,
    /// How pods on different nodes reach each other: `vxlan` (default) or `udp`.
    #[serde(default)]
    pub backend: Backend,
}

/// flannel's backends the lab can build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A VXLAN device per node (`device`, `vni`, `port`), static FDB and neighbours.
    #[default]
    Vxlan,
    /// flannel's historical `udp` backend: a TUN device per node (`device`, raw IP) and a
    /// userspace forwarder carrying inner packets in UDP `port` (see `udp_backend`).
    Udp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: Spanned<String>,
    pub address: Spanned<Ipv4Addr>,
    pub pod_subnet: Spanned<Ipv4Net>,
    /// The node's IPv6 underlay address (dual-stack labs).
    pub address6: Option<Spanned<Ipv6Addr>>,
    /// The node's IPv6 pod range (dual-stack labs).
    pub pod_subnet6: Option<Spanned<Ipv6Net>>,
    pub pods: Vec<Spanned<String>>,
    /// The Kubernetes namespace of this node's pods (CRI metadata): `default` unless set.
    pub pod_namespace: Option<Spanned<String>>,
    /// Extra pods that only sit on the node's bridge (real CRI sandboxes, no responder, no
    /// published name): what a busy node looks like to dye. `dye lab up --idle-pods N` sets it
    /// for every node.
    #[serde(default)]
    pub idle_pods: u32,
    /// The node's own underlay segment when a [router] joins the nodes; the router's port on
    /// it holds the segment's first address and is the node's default gateway.
    pub underlay_subnet: Option<Spanned<Ipv4Net>>,
}

/// The most idle pods a node may have: what host-local can hand out of a /24 besides the
/// named pods, the gateway and the broadcast address.
pub const MAX_IDLE_PODS: u32 = 240;

impl Node {
    /// The Kubernetes namespace the node's pods are created in.
    pub fn pod_namespace(&self) -> &str {
        self.pod_namespace
            .as_ref()
            .map(|n| n.get_ref().as_str())
            .unwrap_or("default")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Responder {
    pub tcp_port: u16,
    pub udp_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: Spanned<String>,
    pub cluster_ip: Spanned<Ipv4Addr>,
    pub endpoints: Vec<Spanned<String>>,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    pub proto: Proto,
    pub port: u16,
    pub target_port: u16,
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    pub name: String,
    pub underlay_address: Ipv4Addr,
    pub office_address: Ipv4Addr,
    pub office_subnet: Ipv4Net,
    pub snat_to: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub vip_port: u16,
    pub publish_to: Spanned<String>,
    pub publish_port: u16,
    /// IPv6 on the underlay side (dual-stack labs): the nodes' IPv6 default gateway.
    pub underlay_address6: Option<Spanned<Ipv6Addr>>,
    /// IPv6 on the office side, and the office's IPv6 prefix (routed, no NAT66).
    pub office_address6: Option<Spanned<Ipv6Addr>>,
    pub office_subnet6: Option<Spanned<Ipv6Net>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Office {
    pub name: String,
    pub address: Spanned<Ipv4Addr>,
    pub address6: Option<Spanned<Ipv6Addr>>,
}

pub use ipnet::{Ipv4Net, Ipv6Net};

/// What the lab asks of an IP prefix beyond `ipnet`: the CNI gateway convention and overlap.
pub trait PrefixExt {
    type Addr;
    /// The first host address (network + 1): the gateway by CNI convention.
    fn first_host(&self) -> Self::Addr;
    /// True when the two prefixes share any address.
    fn overlaps(&self, other: &Self) -> bool;
}

impl PrefixExt for Ipv4Net {
    type Addr = Ipv4Addr;

    fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()).wrapping_add(1))
    }

    fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl PrefixExt for Ipv6Net {
    type Addr = Ipv6Addr;

    fn first_host(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network()).wrapping_add(1))
    }

    fn overlaps(&self, other: &Ipv6Net) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl Topology {
    /// Reads and checks a topology file; errors name the file and the line.
    pub fn load(path: &Path) -> Result<Topology, LabError> {
        let text = std::fs::read_to_string(path).map_err(|e| LabError::Topology {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Topology::parse(&text).map_err(|message| LabError::Topology {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and checks topology text; the error message carries the line number.
    pub fn parse(text: &str) -> Result<Topology, String> {
        let topo: Topology = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_string(),
            }
        })?;
        topo.check(text)?;
        Ok(topo)
    }

    /// The text of the built-in default topology (samples/lab/cluster.toml, compiled in).
    pub const BUILTIN_TEXT: &'static str = include_str!("../../../samples/lab/cluster.toml");

    /// The built-in default topology. A unit test parses it, so this holds for any build that
    /// passed its tests; still, report rather than panic.
    pub fn builtin() -> Result<Topology, LabError> {
        Topology::parse(Self::BUILTIN_TEXT).map_err(|message| LabError::Topology {
            path: "builtin".into(),
            message,
        })
    }

    /// Semantic checks that serde cannot express: names, references, address plans.
    fn check(&self, text: &str) -> Result<(), String> {
        super::udp_backend::check(self)?;
        let at = |span: std::ops::Range<usize>, msg: String| -> String {
            format!("line {}: {msg}", line_of(text, span.start))
        };
        if self.nodes.is_empty() {
            return Err("at least one [[nodes]] entry is needed".into());
        }
        let mut names = BTreeSet::new();
        let mut pods = BTreeSet::new();
        for node in &self.nodes {
            check_name(node.name.get_ref()).map_err(|m| at(node.name.span(), m))?;
            if !names.insert(node.name.get_ref().clone()) {
                return Err(at(
                    node.name.span(),
                    format!("name {:?} is used twice", node.name.get_ref()),
                ));
            }
            if !self.underlay.subnet.contains(node.address.get_ref()) {
                return Err(at(
                    node.address.span(),
                    format!(
                        "node address {} is outside the underlay subnet {}",
                        node.address.get_ref(),
                        self.underlay.subnet
                    ),
                ));
            }
            let subnet = node.pod_subnet.get_ref();
            if !self.overlay.cluster_cidr.contains(&subnet.addr()) || subnet.prefix_len() > 30 {
                return Err(at(
                    node.pod_subnet.span(),
                    format!(
                        "pod subnet {subnet} must be a /30 or larger inside cluster_cidr {}",
                        self.overlay.cluster_cidr
                    ),
                ));
            }
            if let Some(ns) = &node.pod_namespace {
                check_dns_label(ns.get_ref()).map_err(|m| at(ns.span(), m))?;
            }
            if node.idle_pods > MAX_IDLE_PODS {
                return Err(at(
                    node.name.span(),
                    format!(
                        "idle_pods {} is above {MAX_IDLE_PODS} (one /24 of pod addresses)",
                        node.idle_pods
                    ),
                ));
            }
            for pod in &node.pods {
                check_name(pod.get_ref()).map_err(|m| at(pod.span(), m))?;
                if !names.insert(pod.get_ref().clone()) {
                    return Err(at(
                        pod.span(),
                        format!("name {:?} is used twice", pod.get_ref()),
                    ));
                }
                pods.insert(pod.get_ref().clone());
            }
        }
        for svc in &self.services {
            check_name(svc.name.get_ref()).map_err(|m| at(svc.name.span(), m))?;
            for ep in &svc.endpoints {
                if !pods.contains(ep.get_ref()) {
                    return Err(at(
                        ep.span(),
                        format!("endpoint {:?} is not a pod of any node", ep.get_ref()),
                    ));
                }
            }
            if svc.endpoints.is_empty() {
                return Err(at(svc.name.span(), "a service needs endpoints".into()));
            }
        }
        if let Some(fw) = &self.firewall {
            check_name(&fw.name)?;
            if !names.insert(fw.name.clone()) {
                return Err(format!("firewall name {:?} is used twice", fw.name));
            }
            if !self
                .nodes
                .iter()
                .any(|n| n.name.get_ref() == fw.publish_to.get_ref())
            {
                return Err(at(
                    fw.publish_to.span(),
                    format!("publish_to {:?} is not a node", fw.publish_to.get_ref()),
                ));
            }
            if !self.underlay.subnet.contains(&fw.underlay_address) {
                return Err(format!(
                    "firewall underlay_address {} is outside the underlay subnet {}",
                    fw.underlay_address, self.underlay.subnet
                ));
            }
        }
        match (&self.office, &self.firewall) {
            (Some(office), Some(fw)) => {
                check_name(&office.name)?;
                if !names.insert(office.name.clone()) {
                    return Err(format!("office name {:?} is used twice", office.name));
                }
                if !fw.office_subnet.contains(office.address.get_ref()) {
                    return Err(at(
                        office.address.span(),
                        format!(
                            "office address {} is outside the firewall's office_subnet {}",
                            office.address.get_ref(),
                            fw.office_subnet
                        ),
                    ));
                }
            }
            (Some(_), None) => return Err("[office] needs a [firewall] in front of it".into()),
            _ => {}
        }
        super::shape::check(self, text, &mut names)?;
        self.check_v6(text)
    }

    /// True when the topology gives the lab IPv6 (`[underlay] subnet6`).
    pub fn dual_stack(&self) -> bool {
        self.underlay.subnet6.is_some()
    }

    /// flannel's IPv6 VXLAN device name.
    pub fn device6(&self) -> String {
        self.overlay
            .device6
            .clone()
            .unwrap_or_else(|| format!("flannel-v6.{}", self.overlay.vni))
    }

    /// The MTU of the IPv6 VXLAN device: what the kernel derives from an IPv6 underlay link.
    pub fn overlay_mtu6(&self) -> u32 {
        self.underlay.mtu.saturating_sub(VXLAN6_OVERHEAD)
    }

    /// The IPv6 keys: all optional, but consistent — a dual-stack lab needs a v6 address and
    /// pod range on every node, and no v6 key may appear in an IPv4-only topology.
    fn check_v6(&self, text: &str) -> Result<(), String> {
        let at = |span: std::ops::Range<usize>, msg: String| -> String {
            format!("line {}: {msg}", line_of(text, span.start))
        };
        let fw = self.firewall.as_ref();
        let office = self.office.as_ref();
        let Some(subnet6) = &self.underlay.subnet6 else {
            // IPv4-only: any IPv6 key is a mistake worth naming.
            let stray = self
                .overlay
                .cluster_cidr6
                .as_ref()
                .map(|s| ("cluster_cidr6", s.span()))
                .or_else(|| {
                    self.nodes.iter().find_map(|n| {
                        n.address6
                            .as_ref()
                            .map(|a| ("address6", a.span()))
                            .or_else(|| n.pod_subnet6.as_ref().map(|a| ("pod_subnet6", a.span())))
                    })
                })
                .or_else(|| {
                    fw.and_then(|f| {
                        f.underlay_address6
                            .as_ref()
                            .map(|a| ("underlay_address6", a.span()))
                            .or_else(|| {
                                f.office_address6
                                    .as_ref()
                                    .map(|a| ("office_address6", a.span()))
                            })
                            .or_else(|| {
                                f.office_subnet6
                                    .as_ref()
                                    .map(|a| ("office_subnet6", a.span()))
                            })
                    })
                })
                .or_else(|| {
                    office.and_then(|o| o.address6.as_ref().map(|a| ("address6", a.span())))
                });
            return match stray {
                Some((key, span)) => Err(at(
                    span,
                    format!(
                        "{key} needs [underlay] subnet6 (IPv6 is on only when the underlay has it)"
                    ),
                )),
                None => Ok(()),
            };
        };
        let subnet6 = *subnet6.get_ref();
        if self.underlay.mtu < IPV6_MIN_MTU + VXLAN6_OVERHEAD || self.overlay.mtu < IPV6_MIN_MTU {
            return Err(format!(
                "a dual-stack lab needs underlay mtu >= {} and overlay mtu >= {IPV6_MIN_MTU} \
                 (IPv6 links carry at least {IPV6_MIN_MTU} bytes; VXLAN over IPv6 adds {VXLAN6_OVERHEAD}); \
                 got {} and {}",
                IPV6_MIN_MTU + VXLAN6_OVERHEAD,
                self.underlay.mtu,
                self.overlay.mtu
            ));
        }
        let Some(cidr6) = &self.overlay.cluster_cidr6 else {
            return Err(at(
                subnet6_span(self),
                "a dual-stack lab ([underlay] subnet6) needs [overlay] cluster_cidr6".into(),
            ));
        };
        let cidr6 = *cidr6.get_ref();
        let mut seen: Vec<Ipv6Net> = Vec::new();
        for node in &self.nodes {
            let name = node.name.get_ref();
            let (Some(addr), Some(pods)) = (&node.address6, &node.pod_subnet6) else {
                return Err(at(
                    node.name.span(),
                    format!("node {name:?} needs address6 and pod_subnet6 in a dual-stack lab"),
                ));
            };
            if !subnet6.contains(addr.get_ref()) {
                return Err(at(
                    addr.span(),
                    format!(
                        "node address6 {} is outside the underlay subnet6 {subnet6}",
                        addr.get_ref()
                    ),
                ));
            }
            let p = *pods.get_ref();
            if !cidr6.contains(&p.addr())
                || p.prefix_len() < cidr6.prefix_len()
                || p.prefix_len() > 120
            {
                return Err(at(
                    pods.span(),
                    format!(
                        "pod subnet6 {p} must be a /120 or larger inside cluster_cidr6 {cidr6}"
                    ),
                ));
            }
            if let Some(other) = seen.iter().find(|o| o.overlaps(&p)) {
                return Err(at(pods.span(), format!("pod subnet6 {p} overlaps {other}")));
            }
            seen.push(p);
        }
        if let Some(fw) = fw {
            if let Some(a) = &fw.underlay_address6 {
                if !subnet6.contains(a.get_ref()) {
                    return Err(at(
                        a.span(),
                        format!(
                            "firewall underlay_address6 {} is outside the underlay subnet6 {subnet6}",
                            a.get_ref()
                        ),
                    ));
                }
            }
            match (&fw.office_address6, &fw.office_subnet6) {
                (Some(a), Some(n)) => {
                    if !n.get_ref().contains(a.get_ref()) {
                        return Err(at(
                            a.span(),
                            format!(
                                "office_address6 {} is outside office_subnet6 {}",
                                a.get_ref(),
                                n.get_ref()
                            ),
                        ));
                    }
                    if n.get_ref().overlaps(&cidr6) || n.get_ref().overlaps(&subnet6) {
                        return Err(at(
                            n.span(),
                            format!(
                                "office_subnet6 {} overlaps the cluster or underlay: IPv6 is routed \
                                 without NAT66, so it must not",
                                n.get_ref()
                            ),
                        ));
                    }
                    if fw.underlay_address6.is_none() {
                        return Err(at(
                            a.span(),
                            "office_address6 needs the firewall's underlay_address6 too".into(),
                        ));
                    }
                }
                (Some(a), None) => {
                    return Err(at(a.span(), "office_address6 needs office_subnet6".into()))
                }
                (None, Some(n)) => {
                    return Err(at(n.span(), "office_subnet6 needs office_address6".into()))
                }
                (None, None) => {}
            }
        }
        if let Some(a) = office.and_then(|o| o.address6.as_ref()) {
            match fw.and_then(|f| f.office_subnet6.as_ref()) {
                Some(n) if n.get_ref().contains(a.get_ref()) => {}
                Some(n) => {
                    return Err(at(
                        a.span(),
                        format!(
                            "office address6 {} is outside the firewall's office_subnet6 {}",
                            a.get_ref(),
                            n.get_ref()
                        ),
                    ))
                }
                None => {
                    return Err(at(
                        a.span(),
                        "office address6 needs the firewall's office_subnet6".into(),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The node that hosts `pod`.
    pub fn node_of(&self, pod: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.pods.iter().any(|p| p.get_ref() == pod))
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name.get_ref() == name)
    }

    pub fn pod_names(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .flat_map(|n| n.pods.iter().map(|p| p.get_ref().as_str()))
    }
}

fn subnet6_span(t: &Topology) -> std::ops::Range<usize> {
    t.underlay
        .subnet6
        .as_ref()
        .map(|s| s.span())
        .unwrap_or(0..0)
}

/// Lab names end up in namespace names and interface names: keep them short and plain.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 12
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} must be 1-12 characters of a-z, 0-9 and '-', not starting with '-'"
        ))
    }
}

/// A Kubernetes namespace name (RFC 1123 label).
fn check_dns_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "pod_namespace {name:?} must be 1-63 characters of a-z, 0-9 and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILTIN: &str = include_str!("../../../samples/lab/cluster.toml");

    #[test]
    fn builtin_topology_parses() {
        let t = Topology::parse(BUILTIN).expect("builtin parses");
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.pod_names().count(), 4);
        assert_eq!(
            t.node_of("pod-c").map(|n| n.name.get_ref().as_str()),
            Some("node-2")
        );
        assert_eq!(t.overlay.mtu, 1450);
    }

    #[test]
    fn unknown_endpoint_is_reported_with_its_line() {
        let text = BUILTIN.replace(
            r#"endpoints = ["pod-a", "pod-c"]"#,
            r#"endpoints = ["pod-a", "pod-z"]"#,
        );
        let err = Topology::parse(&text).unwrap_err();
        let line = BUILTIN
            .lines()
            .position(|l| l.starts_with("endpoints"))
            .map(|i| i + 1)
            .unwrap();
        assert_eq!(
            err,
            format!("line {line}: endpoint \"pod-z\" is not a pod of any node")
        );
    }

    #[test]
    fn syntax_and_unknown_field_errors_carry_lines() {
        let err =
            Topology::parse("[underlay]\nsubnet = \"192.168.50.0/24\"\nmtuu = 1\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
        assert!(err.contains("mtuu"), "{err}");
        let err = Topology::parse("[underlay]\nsubnet = \"192.168.50.0/33\"\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn duplicate_names_and_bad_addresses_are_rejected() {
        let dup = BUILTIN.replace(
            r#"pods = ["pod-c", "pod-d"]"#,
            r#"pods = ["pod-c", "pod-a"]"#,
        );
        assert!(Topology::parse(&dup).unwrap_err().contains("used twice"));
        let outside = BUILTIN.replace(r#"address = "192.168.50.12""#, r#"address = "10.0.0.12""#);
        assert!(Topology::parse(&outside)
            .unwrap_err()
            .contains("outside the underlay"));
    }

    #[test]
    fn pods_are_in_default_unless_the_node_names_a_namespace() {
        let t = Topology::parse(BUILTIN).unwrap();
        assert_eq!(t.nodes[0].pod_namespace(), "default");
        let text = BUILTIN.replace(
            r#"pods = ["pod-c", "pod-d"]"#,
            "pods = [\"pod-c\", \"pod-d\"]\npod_namespace = \"shop\"",
        );
        let t = Topology::parse(&text).unwrap();
        assert_eq!(t.nodes[1].pod_namespace(), "shop");
        let bad = text.replace(r#""shop""#, r#""Shop_1""#);
        let err = Topology::parse(&bad).unwrap_err();
        assert!(
            err.starts_with(&format!("line {}:", line_of_key(&bad, "pod_namespace"))),
            "{err}"
        );
    }

    fn line_of_key(text: &str, starts: &str) -> usize {
        text.lines()
            .position(|l| l.starts_with(starts))
            .map(|i| i + 1)
            .unwrap()
    }

    #[test]
    fn builtin_topology_is_dual_stack() {
        let t = Topology::parse(BUILTIN).unwrap();
        assert!(t.dual_stack());
        assert_eq!(t.device6(), "flannel-v6.1");
        assert_eq!(t.overlay_mtu6(), 1430);
        let n2 = t.node("node-2").unwrap();
        assert_eq!(
            n2.pod_subnet6.as_ref().unwrap().get_ref().to_string(),
            "fd00:244:2::/64"
        );
    }

    #[test]
    fn an_ipv4_only_topology_still_parses() {
        let v4: String = BUILTIN
            .lines()
            .filter(|l| {
                ![
                    "subnet6",
                    "cluster_cidr6",
                    "address6",
                    "pod_subnet6",
                    "underlay_address6",
                    "office_address6",
                    "office_subnet6",
                ]
                .iter()
                .any(|k| l.starts_with(&format!("{k} ")))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let t = Topology::parse(&v4).expect("IPv4-only parses");
        assert!(!t.dual_stack());
        assert!(t.nodes.iter().all(|n| n.pod_subnet6.is_none()));
        // A stray v6 key in an IPv4-only file is named with its line.
        let stray = v4.replace(
            "pod_subnet = \"10.244.2.0/24\"\n",
            "pod_subnet = \"10.244.2.0/24\"\npod_subnet6 = \"fd00:244:2::/64\"\n",
        );
        let err = Topology::parse(&stray).unwrap_err();
        let line = line_of_key(&stray, "pod_subnet6");
        assert_eq!(
            err,
            format!("line {line}: pod_subnet6 needs [underlay] subnet6 (IPv6 is on only when the underlay has it)")
        );
    }

    #[test]
    fn ipv6_mistakes_are_reported_with_their_line() {
        let outside = BUILTIN.replace(r#"address6 = "fd00:50::12""#, r#"address6 = "fd00:51::12""#);
        let err = Topology::parse(&outside).unwrap_err();
        let line = line_of_key(&outside, r#"address6 = "fd00:51::12""#);
        assert!(
            err.starts_with(&format!(
                "line {line}: node address6 fd00:51::12 is outside"
            )),
            "{err}"
        );

        let overlap = BUILTIN.replace(
            r#"pod_subnet6 = "fd00:244:2::/64""#,
            r#"pod_subnet6 = "fd00:244:1::/80""#,
        );
        let err = Topology::parse(&overlap).unwrap_err();
        assert!(err.contains("overlaps fd00:244:1::/64"), "{err}");

        let missing = BUILTIN.replace("address6 = \"fd00:50::12\"\n", "");
        let err = Topology::parse(&missing).unwrap_err();
        let line = line_of_key(&missing, r#"name = "node-2""#);
        assert_eq!(
            err,
            format!(
                "line {line}: node \"node-2\" needs address6 and pod_subnet6 in a dual-stack lab"
            )
        );

        let bad = BUILTIN.replace(
            r#"subnet6 = "fd00:50::/64""#,
            r#"subnet6 = "fd00:50::/129""#,
        );
        let err = Topology::parse(&bad).unwrap_err();
        assert!(
            err.starts_with(&format!("line {}:", line_of_key(&bad, "subnet6"))),
            "{err}"
        );

        let office = BUILTIN.replace(r#"address6 = "fd00:10::50""#, r#"address6 = "fd00:11::50""#);
        assert!(Topology::parse(&office)
            .unwrap_err()
            .contains("outside the firewall's office_subnet6"));

        let small = BUILTIN.replace("mtu = 1500", "mtu = 1340");
        assert!(Topology::parse(&small)
            .unwrap_err()
            .contains("underlay mtu >= 1350"));
    }

    #[test]
    fn gateways_and_overlaps_of_prefixes() {
        let n: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        assert_eq!(n.first_host(), Ipv4Addr::new(10, 244, 1, 1));
        let odd: Ipv4Net = "10.244.1.77/24".parse().unwrap();
        assert_eq!(
            odd.first_host(),
            Ipv4Addr::new(10, 244, 1, 1),
            "host bits ignored"
        );
        let n6: Ipv6Net = "fd00:244:1::/64".parse().unwrap();
        assert_eq!(
            n6.first_host(),
            "fd00:244:1::1".parse::<Ipv6Addr>().unwrap()
        );
        let cidr: Ipv6Net = "fd00:244::/32".parse().unwrap();
        assert!(cidr.overlaps(&n6) && n6.overlaps(&cidr));
        assert!(!n6.overlaps(&"fd00:10::/64".parse().unwrap()));
        let v4: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert!(v4.overlaps(&n) && !v4.overlaps(&"192.168.0.0/16".parse().unwrap()));
        assert!("fd00::/129".parse::<Ipv6Net>().is_err());
        assert!("10.0.0.0/8".parse::<Ipv6Net>().is_err());
    }
}
