//! kube-proxy's nftables mode, rendered as `nft -f` input: one `table ip kube-proxy` per node
//! with the shape pkg/proxy/nftables writes — base chains `nat-prerouting` / `nat-output`
//! jumping to `services`, whose verdict map `service-ips` (ip . proto . port) goes to a
//! `service-<hash>-<ns>/<name>/<proto>/<port>` chain that picks an endpoint with
//! `numgen random mod N vmap`, and `endpoint-<hash>-…__<ip>/<port>` chains that `dnat`;
//! NodePorts through `service-nodeports` and `external-…` chains; `mark-for-masquerade` and
//! `masquerading` as in the real mode.

use super::rules::{chain_hash, Endpoint};
use super::topology::{Service, ServicePort, Topology};

/// The table's name, as kube-proxy names it.
pub const TABLE: &str = "kube-proxy";

/// `ns/name/proto/port`: the base kube-proxy derives chain names from.
fn base(svc: &Service, port: &ServicePort) -> String {
    format!(
        "default/{}/{}/{}-{}",
        svc.name.get_ref(),
        port.proto,
        port.proto,
        port.port
    )
}

/// `service-<8 base32>-<base>`, `endpoint-…`, `external-…`: nft identifiers may hold `/`, `.`
/// and `-`, so the names stay readable like kube-proxy's.
fn named(prefix: &str, base: &str) -> String {
    format!("{prefix}-{}-{base}", chain_hash(base, 8))
}

/// The whole table for one node (it replaces any earlier one: `delete` after `add`).
pub fn ruleset(topo: &Topology, services: &[(&Service, Vec<Endpoint>)]) -> String {
    let t = format!("ip {TABLE}");
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "add table {t} {{ comment \"rules for kube-proxy\" ; }}"
    ));
    line(format!("delete table {t}"));
    line(format!(
        "add table {t} {{ comment \"rules for kube-proxy\" ; }}"
    ));
    for (name, hook, prio) in [
        ("nat-prerouting", "prerouting", "dstnat"),
        ("nat-output", "output", "-100"),
        ("nat-postrouting", "postrouting", "srcnat"),
    ] {
        line(format!(
            "add chain {t} {name} {{ type nat hook {hook} priority {prio} ; }}"
        ));
    }
    for name in [
        "mark-for-masquerade",
        "masquerading",
        "services",
        "nodeports",
    ] {
        line(format!("add chain {t} {name}"));
    }
    line(format!("add rule {t} nat-prerouting jump services"));
    line(format!("add rule {t} nat-output jump services"));
    line(format!("add rule {t} nat-postrouting jump masquerading"));
    line(format!(
        "add rule {t} mark-for-masquerade mark set mark or 0x4000"
    ));
    line(format!(
        "add rule {t} masquerading mark and 0x4000 == 0 return"
    ));
    line(format!(
        "add rule {t} masquerading mark set mark xor 0x4000"
    ));
    line(format!("add rule {t} masquerading masquerade fully-random"));
    line(format!(
        "add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; \
         comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
    ));
    line(format!(
        "add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; \
         comment \"NodePort traffic\" ; }}"
    ));
    line(format!(
        "add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips"
    ));
    line(format!(
        "add rule {t} services fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports"
    ));
    line(format!(
        "add rule {t} nodeports meta l4proto . th dport vmap @service-nodeports"
    ));
    let cluster_cidr = topo.overlay.cluster_cidr;
    for (svc, endpoints) in services {
        for port in &svc.ports {
            let b = base(svc, port);
            let svc_chain = named("service", &b);
            let (proto, cip) = (port.proto, svc.cluster_ip.get_ref());
            line(format!("add chain {t} {svc_chain}"));
            line(format!(
                "add rule {t} {svc_chain} ip daddr {cip} {proto} dport {} ip saddr != {cluster_cidr} \
                 jump mark-for-masquerade",
                port.port
            ));
            let mut arms = Vec::new();
            for (i, ep) in endpoints.iter().enumerate() {
                let ep_chain = named("endpoint", &format!("{b}__{}/{}", ep.ip, port.target_port));
                line(format!("add chain {t} {ep_chain}"));
                line(format!(
                    "add rule {t} {ep_chain} ip saddr {} jump mark-for-masquerade",
                    ep.ip
                ));
                line(format!(
                    "add rule {t} {ep_chain} meta l4proto {proto} dnat to {}:{}",
                    ep.ip, port.target_port
                ));
                arms.push(format!("{i} : goto {ep_chain}"));
            }
            if !arms.is_empty() {
                line(format!(
                    "add rule {t} {svc_chain} numgen random mod {} vmap {{ {} }}",
                    arms.len(),
                    arms.join(" , ")
                ));
            }
            line(format!(
                "add element {t} service-ips {{ {cip} . {proto} . {} : goto {svc_chain} }}",
                port.port
            ));
            if let Some(node_port) = port.node_port {
                let ext = named("external", &b);
                line(format!("add chain {t} {ext}"));
                line(format!("add rule {t} {ext} jump mark-for-masquerade"));
                line(format!("add rule {t} {ext} goto {svc_chain}"));
                line(format!(
                    "add element {t} service-nodeports {{ {proto} . {node_port} : goto {ext} }}"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn services_go_through_the_verdict_map_to_service_and_endpoint_chains() {
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
        let text = ruleset(&topo, &[(svc, eps)]);
        let tcp = named("service", "default/web/tcp/tcp-80");
        assert!(tcp.starts_with("service-") && tcp.ends_with("-default/web/tcp/tcp-80"));
        assert!(text.contains(&format!(
            "add element ip kube-proxy service-ips {{ 10.96.0.10 . tcp . 80 : goto {tcp} }}"
        )));
        let ep = named("endpoint", "default/web/tcp/tcp-80__10.244.2.2/8080");
        assert!(text.contains(&format!(
            "add rule ip kube-proxy {ep} meta l4proto tcp dnat to 10.244.2.2:8080"
        )));
        assert!(text.contains("numgen random mod 2 vmap { 0 : goto endpoint-"));
        assert!(text.contains("service-nodeports { tcp . 30080 : goto external-"));
        // Each chain is added before a rule or map element points at it.
        let mut added = std::collections::BTreeSet::new();
        for l in text.lines() {
            let words: Vec<&str> = l.split_whitespace().collect();
            if l.starts_with("add chain") {
                added.insert(words[4].to_string());
            }
            if l.starts_with("add rule") {
                assert!(added.contains(words[4]), "rule before its chain: {l}");
            }
        }
    }
}
