//! iptables rule sets, rendered as `iptables-restore` input: kube-proxy's iptables mode on
//! every node (KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* with `statistic` balancing, NodePorts via
//! KUBE-EXT-*, KUBE-MARK-MASQ / KUBE-POSTROUTING masquerade), and the edge firewall's NAT.

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::topology::{Firewall, Ipv6Net, Service, ServicePort, Topology};

/// A service endpoint resolved to its pod address.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
}

/// kube-proxy's rules for one node, for `iptables-restore --noflush`.
pub fn kube_proxy(topo: &Topology, services: &[(&Service, Vec<Endpoint>)]) -> String {
    let mut chains = vec![
        "KUBE-SERVICES".to_string(),
        "KUBE-NODEPORTS".into(),
        "KUBE-POSTROUTING".into(),
        "KUBE-MARK-MASQ".into(),
    ];
    let mut rules = vec![
        r#"-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.to_string(),
        r#"-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.into(),
        r#"-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING"#.into(),
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".into(),
        r#"-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully"#.into(),
    ];
    let cluster_cidr = topo.overlay.cluster_cidr;
    for (svc, endpoints) in services {
        for port in &svc.ports {
            let name = port_name(svc, port);
            let svc_chain = chain("KUBE-SVC-", &name);
            let proto = port.proto;
            let cip = svc.cluster_ip.get_ref();
            chains.push(svc_chain.clone());
            rules.push(format!(
                r#"-A KUBE-SERVICES -d {cip}/32 -p {proto} -m comment --comment "{name} cluster IP" -m {proto} --dport {} -j {svc_chain}"#,
                port.port
            ));
            rules.push(format!(
                r#"-A {svc_chain} ! -s {cluster_cidr} -d {cip}/32 -p {proto} -m comment --comment "{name} cluster IP" -m {proto} --dport {} -j KUBE-MARK-MASQ"#,
                port.port
            ));
            let n = endpoints.len();
            for (i, ep) in endpoints.iter().enumerate() {
                let dest = format!("{}:{}", ep.ip, port.target_port);
                let sep = chain("KUBE-SEP-", &format!("{name}/{dest}"));
                chains.push(sep.clone());
                // The i-th of n rules takes 1/(n-i) of what reaches it: uniform overall.
                let remaining = n - i;
                if remaining > 1 {
                    rules.push(format!(
                        r#"-A {svc_chain} -m comment --comment "{name} -> {dest}" -m statistic --mode random --probability {:.11} -j {sep}"#,
                        1.0 / remaining as f64
                    ));
                } else {
                    rules.push(format!(
                        r#"-A {svc_chain} -m comment --comment "{name} -> {dest}" -j {sep}"#
                    ));
                }
                rules.push(format!(
                    r#"-A {sep} -s {}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ"#,
                    ep.ip
                ));
                rules.push(format!(
                    r#"-A {sep} -p {proto} -m comment --comment "{name}" -m {proto} -j DNAT --to-destination {dest}"#
                ));
            }
            if let Some(node_port) = port.node_port {
                let ext = chain("KUBE-EXT-", &name);
                chains.push(ext.clone());
                rules.push(format!(
                    r#"-A KUBE-NODEPORTS -p {proto} -m comment --comment "{name}" -m {proto} --dport {node_port} -j {ext}"#
                ));
                rules.push(format!(
                    r#"-A {ext} -m comment --comment "masquerade traffic for {name} external destinations" -j KUBE-MARK-MASQ"#
                ));
                rules.push(format!("-A {ext} -j {svc_chain}"));
            }
        }
    }
    rules.push(
        r#"-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"#
            .into(),
    );

    let mut out = String::from("*nat\n");
    for c in &chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for r in &rules {
        let _ = writeln!(out, "{r}");
    }
    out.push_str("COMMIT\n*filter\n:KUBE-FORWARD - [0:0]\n");
    out.push_str(
        r#"-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"#,
    );
    out
}

/// The edge firewall: office hidden behind `snat_to`, the VIP published to a node's NodePort,
/// and a default-deny FORWARD policy that lets only that traffic (and its replies) through.
/// `eth0` faces the underlay, `eth1` the office.
pub fn firewall(fw: &Firewall, publish_ip: Ipv4Addr) -> String {
    format!(
        r#"*nat
-A PREROUTING -i eth1 -d {vip}/32 -p tcp -m tcp --dport {vport} -m comment --comment "publish VIP" -j DNAT --to-destination {publish_ip}:{pport}
-A POSTROUTING -s {office} -o eth0 -m comment --comment "hide the office range" -j SNAT --to-source {snat}
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i eth1 -o eth0 -m conntrack --ctstate DNAT -m comment --comment "published services" -j ACCEPT
COMMIT
"#,
        vip = fw.vip,
        vport = fw.vip_port,
        pport = fw.publish_port,
        office = fw.office_subnet,
        snat = fw.snat_to,
    )
}

/// The edge firewall's IPv6 side, for `ip6tables-restore --noflush`: the same default-deny
/// FORWARD policy as IPv4, but routed (no NAT66): the cluster may open flows to the office,
/// replies come back, the office may not open flows into the cluster. ICMPv6 errors always
/// pass (RFC 4890 §4.3.1): conntrack marks those about tracked flows RELATED, and the explicit
/// rules keep Packet Too Big and friends flowing for anything else — dropping them is how
/// IPv6 path-MTU black holes are made. (The firewall's own Packet Too Big leaves through
/// OUTPUT, which this policy does not touch.)
pub fn firewall6(cluster_cidr6: Ipv6Net, office_subnet6: Option<Ipv6Net>) -> String {
    let mut out = String::from(
        r#"*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type destination-unreachable -j ACCEPT
-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type packet-too-big -j ACCEPT
-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type time-exceeded -j ACCEPT
-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type parameter-problem -j ACCEPT
"#,
    );
    if let Some(office) = office_subnet6 {
        let _ = writeln!(
            out,
            r#"-A FORWARD -i eth0 -o eth1 -s {cluster_cidr6} -d {office} -m comment --comment "cluster to office" -j ACCEPT"#
        );
    }
    out.push_str("COMMIT\n");
    out
}

/// kube-proxy's port name: `namespace/service:proto-port`.
fn port_name(svc: &Service, port: &ServicePort) -> String {
    format!(
        "default/{}:{}-{}",
        svc.name.get_ref(),
        port.proto,
        port.port
    )
}

/// A chain name like kube-proxy's: prefix + 16 base32 characters of a hash of the name.
fn chain(prefix: &str, name: &str) -> String {
    format!("{prefix}{}", chain_hash(name, 16))
}

/// `len` (at most 16) base32 characters of a hash of `name`, as kube-proxy shortens names.
pub(super) fn chain_hash(name: &str, len: usize) -> String {
    // FNV-1a 64: stable across runs and platforms, which is all that is needed here.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut s = String::new();
    for i in 0..len.min(16) {
        // 16 × 5 bits reach past 64; fold the high rounds back with a rotation.
        let bits = (h.rotate_right((i as u32 * 5) % 64) & 31) as usize;
        s.push(char::from(ALPHABET[bits]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall6_is_default_deny_lets_icmpv6_errors_through_and_opens_only_outward() {
        let text = firewall6(
            "fd00:244::/48".parse().unwrap(),
            Some("fd00:10::/64".parse().unwrap()),
        );
        assert!(text.contains(":FORWARD DROP"));
        assert!(text.contains("--icmpv6-type packet-too-big -j ACCEPT"));
        assert!(text.contains("-i eth0 -o eth1 -s fd00:244::/48 -d fd00:10::/64"));
        assert!(!text.contains("-i eth1 -o eth0 -s"), "{text}");
        assert!(text.ends_with("COMMIT\n"));
    }

    #[test]
    fn chain_names_are_stable_distinct_and_short_enough_for_iptables() {
        let a = chain("KUBE-SVC-", "default/web:tcp-80");
        assert_eq!(a, chain("KUBE-SVC-", "default/web:tcp-80"));
        assert_ne!(a, chain("KUBE-SVC-", "default/web:udp-53"));
        assert!(a.len() <= 28, "{a}");
    }

    #[test]
    fn kube_proxy_rules_balance_uniformly_and_dnat_to_every_endpoint() {
        let topo = Topology::builtin().unwrap();
        let svc = &topo.services[0];
        let eps = vec![
            Endpoint {
                ip: Ipv4Addr::new(10, 244, 1, 2),
            },
            Endpoint {
                ip: Ipv4Addr::new(10, 244, 2, 2),
            },
        ];
        let text = kube_proxy(&topo, &[(svc, eps)]);
        assert!(text.contains("--probability 0.50000000000"));
        assert!(text.contains("DNAT --to-destination 10.244.1.2:8080"));
        assert!(text.contains("DNAT --to-destination 10.244.2.2:8080"));
        assert!(text.contains("DNAT --to-destination 10.244.2.2:5353"));
        assert!(text.contains("--dport 30080"));
        // Every chain jumped to is declared.
        for target in text.split(" -j ").skip(1) {
            let name = target.split_whitespace().next().unwrap_or_default();
            if name.starts_with("KUBE-") {
                assert!(text.contains(&format!(":{name} ")), "{name} not declared");
            }
        }
    }
}
