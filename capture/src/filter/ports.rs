//! Which UDP destination ports carry which encapsulation.

use crate::netlink::LinkKind;
use crate::topology::Topology;

/// What a tunnel port carries after the UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    /// VXLAN (RFC 7348): 8-byte header, then an Ethernet frame.
    Vxlan,
    /// Geneve (RFC 8926): header with options, then what its protocol field names.
    Geneve,
    /// A bare IP packet, no tunnel header: flannel's `udp` backend (port 8285).
    IpInUdp,
}

/// UDP destination ports per encapsulation. A port listed under two kinds is taken as the
/// first of VXLAN, Geneve, IP-in-UDP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelPorts {
    pub vxlan: Vec<u16>,
    pub geneve: Vec<u16>,
    pub ip_in_udp: Vec<u16>,
}

impl TunnelPorts {
    /// VXLAN's IANA port 4789 and Linux/flannel's 8472, Geneve's 6081, flannel-udp's 8285.
    pub fn well_known() -> TunnelPorts {
        TunnelPorts {
            vxlan: vec![4789, 8472],
            geneve: vec![6081],
            ip_in_udp: vec![8285],
        }
    }

    /// Adds VXLAN ports found on the host (a VXLAN device's `dstport`).
    pub fn with_vxlan(mut self, ports: impl IntoIterator<Item = u16>) -> TunnelPorts {
        for p in ports {
            if !self.vxlan.contains(&p) {
                self.vxlan.push(p);
            }
        }
        self
    }

    /// Adds the ports of the VXLAN and Geneve devices in `topo` (their `dstport`).
    pub fn with_devices(mut self, topo: &Topology) -> TunnelPorts {
        for link in topo.namespaces.iter().flat_map(|n| &n.links) {
            match &link.kind {
                LinkKind::Vxlan(t) => self = self.with_vxlan(t.port),
                LinkKind::Geneve(t) => {
                    if let Some(p) = t.port.filter(|p| !self.geneve.contains(p)) {
                        self.geneve.push(p);
                    }
                }
                _ => {}
            }
        }
        self
    }

    /// Every port, sorted, once.
    pub fn all(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .vxlan
            .iter()
            .chain(&self.geneve)
            .chain(&self.ip_in_udp)
            .copied()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn is_empty(&self) -> bool {
        self.vxlan.is_empty() && self.geneve.is_empty() && self.ip_in_udp.is_empty()
    }

    /// What `dport` carries, if it is a tunnel port.
    pub fn encap(&self, dport: u16) -> Option<Encap> {
        if self.vxlan.contains(&dport) {
            Some(Encap::Vxlan)
        } else if self.geneve.contains(&dport) {
            Some(Encap::Geneve)
        } else if self.ip_in_udp.contains(&dport) {
            Some(Encap::IpInUdp)
        } else {
            None
        }
    }

    /// `udp dst port (a or b …)`: the pcap expression that lets every tunnel packet through.
    pub fn pcap_expression(&self) -> Option<String> {
        let all = self.all();
        if all.is_empty() {
            return None;
        }
        let list = all
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        Some(format!("udp dst port ({list})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_expression() {
        let p = TunnelPorts::well_known().with_vxlan([8472, 4790]);
        assert_eq!(p.all(), vec![4789, 4790, 6081, 8285, 8472]);
        assert_eq!(p.encap(4790), Some(Encap::Vxlan));
        assert_eq!(p.encap(8285), Some(Encap::IpInUdp));
        assert_eq!(p.encap(53), None);
        assert_eq!(
            p.pcap_expression().unwrap(),
            "udp dst port (4789 or 4790 or 6081 or 8285 or 8472)"
        );
        assert_eq!(TunnelPorts::default().pcap_expression(), None);
    }
}
