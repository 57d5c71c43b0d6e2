//! The lab topology file: the emulated cluster described as data (TOML), parsed and checked
//! before anything is built so that a mistake is reported with its line, not half-way through.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Underlay {
    pub subnet: Ipv4Net,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

fn default_mtu() -> u32 {
    1500
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    pub device: String,
    pub vni: u32,
    pub port: u16,
    pub mtu: u32,
    pub cluster_cidr: Ipv4Net,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: Spanned<String>,
    pub address: Spanned<Ipv4Addr>,
    pub pod_subnet: Spanned<Ipv4Net>,
    pub pods: Vec<Spanned<String>>,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Office {
    pub name: String,
    pub address: Spanned<Ipv4Addr>,
}

/// An IPv4 prefix such as `10.244.1.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == (u32::from(self.addr) & self.mask())
    }

    /// The network address itself (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The first usable host address (network + 1): the gateway by CNI convention.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.addr) & self.mask()).wrapping_add(1))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a prefix like 10.244.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length 0..=32"))?;
        Ok(Ipv4Net { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
            if !self.underlay.subnet.contains(*node.address.get_ref()) {
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
            if !self.overlay.cluster_cidr.contains(subnet.addr) || subnet.prefix > 30 {
                return Err(at(
                    node.pod_subnet.span(),
                    format!(
                        "pod subnet {subnet} must be a /30 or larger inside cluster_cidr {}",
                        self.overlay.cluster_cidr
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
            if !self.underlay.subnet.contains(fw.underlay_address) {
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
                if !fw.office_subnet.contains(*office.address.get_ref()) {
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

/// Lab names end up in namespace names and interface names: keep them short and plain.
fn check_name(name: &str) -> Result<(), String> {
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

fn line_of(text: &str, offset: usize) -> usize {
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
    fn prefix_arithmetic() {
        let n: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        assert!(n.contains("10.244.1.77".parse().unwrap()));
        assert!(!n.contains("10.244.2.1".parse().unwrap()));
        assert_eq!(n.first_host(), Ipv4Addr::new(10, 244, 1, 1));
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }
}
