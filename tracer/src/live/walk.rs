//! Where the probe will go, asked of the kernels before it is sent: starting in the source
//! namespace, `ip route get` in each namespace along the way, and the topology says where the
//! chosen device leads — a veth to its peer, a bridge to the port the next hop's MAC is behind
//! (from the bridge's forwarding database, or by looking for the owner of the address when the
//! caches are cold), a tunnel to the remote VTEP (its `remote`, or the FDB entry of the next
//! hop's MAC) and, once the outer packet got there, the matching tunnel device. The replies'
//! way back is walked the same way from every destination reached, and a namespace with DNAT
//! rules adds their targets (a Service's endpoints, a firewall's published address) as more
//! destinations. What is walked is the trace's scope: idle pods on the same bridge are not.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;

use dye_capture::netlink::{Link, LinkKind, Neighbour, Route};
use dye_core::snapshot::RouteKind;

/// At most this many route lookups per walk: a routing loop or a huge NAT table ends here.
const MAX_STEPS: usize = 256;
/// At most this many DNAT targets of one namespace are walked to (kube-proxy's nat table on a
/// real node names every endpoint of every Service).
const MAX_NAT_TARGETS: usize = 64;

/// What the walk asks of the system, per namespace (`N` identifies one).
pub trait System {
    type Ns: Clone + Ord + std::fmt::Debug;
    /// Every link of `ns` (empty when it cannot be read).
    fn links(&mut self, ns: &Self::Ns) -> Vec<Link>;
    /// `ip route get dst` in `ns`.
    fn route(&mut self, ns: &Self::Ns, dst: IpAddr) -> Option<Route>;
    /// The namespace and ifindex at the other end of veth `link` of `ns`.
    fn veth_peer(&mut self, ns: &Self::Ns, link: &Link) -> Option<(Self::Ns, u32)>;
    /// The neighbour caches and forwarding databases of `ns`.
    fn neighbours(&mut self, ns: &Self::Ns) -> Vec<Neighbour>;
    /// Addresses `ns` DNATs to (from its nat rules).
    fn dnat_targets(&mut self, ns: &Self::Ns) -> Vec<IpAddr>;
}

/// The walk's result: namespaces in the order first reached, and the interfaces the packets
/// are expected to cross (`(namespace, ifname)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked<N> {
    pub namespaces: Vec<N>,
    pub points: Vec<(N, String)>,
}

impl<N: Clone + Ord> Walked<N> {
    fn namespace(&mut self, ns: &N) {
        if !self.namespaces.contains(ns) {
            self.namespaces.push(ns.clone());
        }
    }

    fn point(&mut self, ns: &N, ifname: &str) {
        self.namespace(ns);
        if !self.points.iter().any(|(n, i)| n == ns && i == ifname) {
            self.points.push((ns.clone(), ifname.to_string()));
        }
    }
}

/// The tunnel a packet travels in while the walk follows its outer header.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Decap {
    vni: Option<u32>,
    port: Option<u16>,
    /// Where the inner packet is going.
    inner: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Step<N> {
    ns: N,
    dst: IpAddr,
    /// Set while the walk follows a tunnel's outer packet towards its VTEP.
    then: Option<Decap>,
}

/// Walks from `source` towards `dst`, and back towards `src` from wherever it arrived.
pub fn walk<S: System>(sys: &mut S, source: &S::Ns, dst: IpAddr, src: IpAddr) -> Walked<S::Ns> {
    let mut w = Walker {
        sys,
        out: Walked {
            namespaces: vec![source.clone()],
            points: Vec::new(),
        },
        queue: VecDeque::new(),
        nat_queue: VecDeque::new(),
        seen: BTreeSet::new(),
        nat_read: BTreeSet::new(),
        src,
    };
    w.push(source.clone(), dst, None);
    let mut steps = 0;
    // The probe's own way first; DNAT targets when it is walked (they are only where NAT
    // may send it).
    while let Some(step) = w.queue.pop_front().or_else(|| w.nat_queue.pop_front()) {
        steps += 1;
        if steps > MAX_STEPS {
            tracing::debug!("path walk stopped after {MAX_STEPS} route lookups");
            break;
        }
        w.route(step);
    }
    w.out
}

struct Walker<'s, S: System> {
    sys: &'s mut S,
    out: Walked<S::Ns>,
    queue: VecDeque<Step<S::Ns>>,
    /// Steps towards DNAT targets, walked after the probe's own way.
    nat_queue: VecDeque<Step<S::Ns>>,
    seen: BTreeSet<Step<S::Ns>>,
    /// Namespaces whose DNAT targets were added already.
    nat_read: BTreeSet<S::Ns>,
    src: IpAddr,
}

impl<S: System> Walker<'_, S> {
    fn push(&mut self, ns: S::Ns, dst: IpAddr, then: Option<Decap>) {
        let step = Step { ns, dst, then };
        if self.seen.insert(step.clone()) {
            self.queue.push_back(step);
        }
    }

    fn owns(&mut self, ns: &S::Ns, addr: IpAddr) -> bool {
        self.sys
            .links(ns)
            .iter()
            .any(|l| l.addresses.iter().any(|a| a.addr == addr))
    }

    /// The packet is in `ns` on its way to `dst`.
    fn route(&mut self, step: Step<S::Ns>) {
        let Step { ns, dst, then } = step;
        self.out.namespace(&ns);
        if self.nat_read.insert(ns.clone()) {
            let targets: Vec<IpAddr> = self
                .sys
                .dnat_targets(&ns)
                .into_iter()
                .filter(|t| t.is_ipv4() == dst.is_ipv4())
                .collect();
            if targets.len() > MAX_NAT_TARGETS {
                tracing::debug!(
                    "path walk: {} DNAT targets in {ns:?}, walking to the first {MAX_NAT_TARGETS}",
                    targets.len()
                );
            }
            for target in targets.into_iter().take(MAX_NAT_TARGETS) {
                let step = Step {
                    ns: ns.clone(),
                    dst: target,
                    then: None,
                };
                if self.seen.insert(step.clone()) {
                    self.nat_queue.push_back(step);
                }
            }
        }
        if self.owns(&ns, dst) {
            return self.arrived(ns, dst, then);
        }
        let Some(route) = self.sys.route(&ns, dst) else {
            return;
        };
        match RouteKind::parse(&route.kind) {
            RouteKind::Local => return self.arrived(ns, dst, then),
            RouteKind::Unicast => {}
            _ => return, // blackhole, unreachable, prohibit: the walk ends where the probe will
        }
        let links = self.sys.links(&ns);
        let Some(dev) = route
            .dev
            .as_deref()
            .and_then(|d| links.iter().find(|l| l.name == d))
        else {
            return;
        };
        self.out.point(&ns, &dev.name);
        let next = route.gateway.unwrap_or(dst);
        let mac = self.mac_of(&ns, dev.ifindex, next);
        self.leave(&ns, dev, next, mac, dst, then);
    }

    /// `dst` is an address of `ns`: a tunnel's outer packet is decapsulated here and the inner
    /// one goes on; a probe or reply has arrived, and the way back is walked from here.
    fn arrived(&mut self, ns: S::Ns, dst: IpAddr, then: Option<Decap>) {
        match then {
            Some(decap) => {
                let links = self.sys.links(&ns);
                if let Some(t) = links.iter().find(|l| {
                    l.kind
                        .tunnel()
                        .is_some_and(|t| t.vni == decap.vni && t.port == decap.port)
                }) {
                    self.out.point(&ns, &t.name);
                }
                self.push(ns, decap.inner, None);
            }
            None if dst != self.src => {
                let src = self.src;
                self.push(ns, src, None);
            }
            None => {}
        }
    }

    /// The MAC `ns`'s neighbour cache has for `addr` on `ifindex`.
    fn mac_of(&mut self, ns: &S::Ns, ifindex: u32, addr: IpAddr) -> Option<[u8; 6]> {
        self.sys
            .neighbours(ns)
            .iter()
            .find(|n| !n.fdb && n.ifindex == ifindex && n.addr == Some(addr))
            .and_then(|n| n.mac)
    }

    /// The packet leaves `ns` through `dev` towards the next hop `next` (MAC `mac` if known).
    fn leave(
        &mut self,
        ns: &S::Ns,
        dev: &Link,
        next: IpAddr,
        mac: Option<[u8; 6]>,
        dst: IpAddr,
        then: Option<Decap>,
    ) {
        match &dev.kind {
            LinkKind::Veth { .. } => {
                let Some((peer_ns, peer_index)) = self.sys.veth_peer(ns, dev) else {
                    return;
                };
                let peer_links = self.sys.links(&peer_ns);
                let Some(peer) = peer_links.iter().find(|l| l.ifindex == peer_index) else {
                    return;
                };
                self.out.point(&peer_ns, &peer.name);
                let bridge = peer.master_ifindex.and_then(|m| {
                    peer_links
                        .iter()
                        .find(|l| l.ifindex == m && l.kind == LinkKind::Bridge)
                });
                match bridge {
                    Some(br) => self.bridge(&peer_ns, br, &peer_links, next, mac, dst, then),
                    // A routing namespace (a node, a router): it routes the packet on, whether
                    // it owns the next hop address or answers for it (proxy ARP).
                    None => self.push(peer_ns, dst, then),
                }
            }
            LinkKind::Bridge => {
                let links = self.sys.links(ns);
                self.bridge(ns, dev, &links, next, mac, dst, then)
            }
            // A NIC: the packet leaves the host, nothing more to walk here.
            LinkKind::Physical | LinkKind::Loopback => {}
            kind => {
                let Some(t) = kind.tunnel() else {
                    // A TUN device with a forwarder behind it, a macvlan, anything else: where
                    // the packet goes from here the walk cannot see.
                    return self.stalled(ns, dst, then);
                };
                let vtep = t.remote.filter(|r| !r.is_multicast()).or_else(|| {
                    let mac = mac?;
                    self.sys
                        .neighbours(ns)
                        .iter()
                        .find(|n| n.fdb && n.ifindex == dev.ifindex && n.mac == Some(mac))
                        .and_then(|n| n.addr)
                });
                match vtep {
                    Some(vtep) => {
                        let decap = Decap {
                            vni: t.vni,
                            port: t.port,
                            inner: dst,
                        };
                        self.push(ns.clone(), vtep, Some(decap));
                    }
                    None => self.stalled(ns, dst, then),
                }
            }
        }
    }

    /// The walk cannot follow the packet out of `ns` (a device it cannot see through, a VTEP
    /// no cache names): the infrastructure around `ns` joins the scope — namespaces reached
    /// through veths with an address (a node's uplink, a router's port) and through the ports
    /// of bridges that own no address (an underlay switch); never a pod behind a gateway
    /// bridge or on an unaddressed point-to-point veth (Calico's and Cilium's host side) —
    /// and the walk goes on towards `dst` from each of them.
    fn stalled(&mut self, ns: &S::Ns, dst: IpAddr, then: Option<Decap>) {
        let mut queue = VecDeque::from([ns.clone()]);
        let mut seen = BTreeSet::from([ns.clone()]);
        while let Some(at) = queue.pop_front() {
            if seen.len() > MAX_STEPS {
                break;
            }
            let links = self.sys.links(&at);
            for l in &links {
                if !matches!(l.kind, LinkKind::Veth { .. }) {
                    continue;
                }
                let bridge = l
                    .master_ifindex
                    .and_then(|m| links.iter().find(|b| b.ifindex == m));
                let uplink = match bridge {
                    Some(b) => b.kind == LinkKind::Bridge && !routable(b),
                    None => routable(l),
                };
                if !uplink {
                    continue;
                }
                let Some((peer, _)) = self.sys.veth_peer(&at, l) else {
                    continue;
                };
                if seen.insert(peer.clone()) {
                    self.out.namespace(&peer);
                    self.push(peer.clone(), dst, then.clone());
                    queue.push_back(peer);
                }
            }
        }
    }

    /// The packet reached bridge `br` in `ns` (from a port, or routed out onto it).
    #[allow(clippy::too_many_arguments)]
    fn bridge(
        &mut self,
        ns: &S::Ns,
        br: &Link,
        links: &[Link],
        next: IpAddr,
        mac: Option<[u8; 6]>,
        dst: IpAddr,
        then: Option<Decap>,
    ) {
        self.out.point(ns, &br.name);
        if self.owns(ns, next) {
            // The bridge device is the next hop (a pod's gateway): routed in this namespace.
            return self.push(ns.clone(), dst, then);
        }
        let ports: Vec<&Link> = links
            .iter()
            .filter(|l| l.master_ifindex == Some(br.ifindex))
            .collect();
        // The sender did not know the next hop's MAC: perhaps this namespace does.
        let mac = mac.or_else(|| self.mac_of(ns, br.ifindex, next));
        // The forwarding database says which port the next hop's MAC is behind…
        let by_fdb = mac.and_then(|mac| {
            let fdb = self.sys.neighbours(ns);
            ports.iter().copied().find(|p| {
                fdb.iter()
                    .any(|n| n.fdb && n.ifindex == p.ifindex && n.mac == Some(mac))
            })
        });
        // …and when it does not know yet, the port whose far side owns the address.
        let port = by_fdb.or_else(|| {
            ports.iter().copied().find(|p| {
                matches!(p.kind, LinkKind::Veth { .. })
                    && self
                        .sys
                        .veth_peer(ns, p)
                        .is_some_and(|(peer_ns, _)| self.owns(&peer_ns, next))
            })
        });
        let Some(port) = port else {
            return;
        };
        self.out.point(ns, &port.name);
        self.leave(ns, port, next, mac, dst, then);
    }
}

/// Whether `link` holds an address a route can name: IPv6 link-local addresses (every
/// interface with IPv6 has one, an underlay switch's bridge and a Calico host veth too) do not
/// make a device an uplink.
fn routable(link: &Link) -> bool {
    link.addresses.iter().any(|a| match a.addr {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dye_capture::netlink::{Address, Tunnel};
    use std::collections::BTreeMap;

    /// Namespaces by name, with links, routes by destination, neighbours and DNAT targets.
    #[derive(Default)]
    struct Fake {
        links: BTreeMap<&'static str, Vec<Link>>,
        routes: BTreeMap<(&'static str, IpAddr), Route>,
        peers: BTreeMap<(&'static str, u32), (&'static str, u32)>,
        neigh: BTreeMap<&'static str, Vec<Neighbour>>,
        dnat: BTreeMap<&'static str, Vec<IpAddr>>,
        lookups: usize,
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn link(ifindex: u32, name: &str, kind: LinkKind, master: Option<u32>, addr: &[&str]) -> Link {
        Link {
            ifindex,
            name: name.into(),
            kind,
            mtu: 1500,
            mac: None,
            up: true,
            oper_state: "up".into(),
            master_ifindex: master,
            master: None,
            addresses: addr
                .iter()
                .map(|a| Address {
                    addr: ip(a),
                    prefix_len: 24,
                })
                .collect(),
            link_layer_type: 1,
        }
    }

    #[test]
    fn link_local_addresses_do_not_make_an_uplink() {
        // An underlay switch's bridge and its ports carry only fe80:: addresses.
        assert!(!routable(&link(
            1,
            "br0",
            LinkKind::Bridge,
            None,
            &["fe80::1"]
        )));
        assert!(routable(&link(
            2,
            "eth0",
            veth(),
            None,
            &["fe80::2", "192.168.50.11"]
        )));
        assert!(routable(&link(3, "eth0", veth(), None, &["fd00:50::11"])));
        assert!(!routable(&link(4, "cali0", veth(), None, &[])));
    }

    fn veth() -> LinkKind {
        LinkKind::Veth {
            peer_ifindex: None,
            peer_netnsid: None,
        }
    }

    fn route(dev: &str, via: Option<&str>) -> Route {
        Route {
            dst: "x".into(),
            gateway: via.map(ip),
            oif: None,
            dev: Some(dev.into()),
            prefsrc: None,
            table: 254,
            scope: "universe".into(),
            kind: "unicast".into(),
            metric: None,
            mtu: None,
            expires_s: None,
        }
    }

    impl System for Fake {
        type Ns = &'static str;
        fn links(&mut self, ns: &&'static str) -> Vec<Link> {
            self.links.get(ns).cloned().unwrap_or_default()
        }
        fn route(&mut self, ns: &&'static str, dst: IpAddr) -> Option<Route> {
            self.lookups += 1;
            self.routes.get(&(*ns, dst)).cloned()
        }
        fn veth_peer(&mut self, ns: &&'static str, l: &Link) -> Option<(&'static str, u32)> {
            self.peers.get(&(*ns, l.ifindex)).copied()
        }
        fn neighbours(&mut self, ns: &&'static str) -> Vec<Neighbour> {
            self.neigh.get(ns).cloned().unwrap_or_default()
        }
        fn dnat_targets(&mut self, ns: &&'static str) -> Vec<IpAddr> {
            self.dnat.get(ns).cloned().unwrap_or_default()
        }
    }

    const A: &str = "10.244.1.2";
    const C: &str = "10.244.2.2";
    const MAC_N2: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const MAC_VTEP2: [u8; 6] = [2, 0, 0, 0, 0, 0x12];

    /// pod-a (+ `idle` idle pods) on node-1's cni0; flannel VXLAN to node-2 through a switch;
    /// pod-c on node-2's cni0.
    fn cluster(idle: u32) -> Fake {
        let mut f = Fake::default();
        let vx = |local| {
            LinkKind::Vxlan(Tunnel {
                vni: Some(1),
                port: Some(8472),
                local: Some(ip(local)),
                ..Tunnel::default()
            })
        };
        f.links
            .insert("pod-a", vec![link(2, "eth0", veth(), None, &[A])]);
        f.links
            .insert("pod-c", vec![link(2, "eth0", veth(), None, &[C])]);
        let mut n1 = vec![
            link(2, "eth0", veth(), None, &["192.168.50.11"]),
            link(3, "flannel.1", vx("192.168.50.11"), None, &["10.244.1.0"]),
            link(4, "cni0", LinkKind::Bridge, None, &["10.244.1.1"]),
            link(5, "veth-a", veth(), Some(4), &[]),
        ];
        for k in 0..idle {
            n1.push(link(100 + k, &format!("veth-i{k}"), veth(), Some(4), &[]));
        }
        f.links.insert("node-1", n1);
        f.links.insert(
            "node-2",
            vec![
                link(2, "eth0", veth(), None, &["192.168.50.12"]),
                link(3, "flannel.1", vx("192.168.50.12"), None, &["10.244.2.0"]),
                link(4, "cni0", LinkKind::Bridge, None, &["10.244.2.1"]),
                link(5, "veth-c", veth(), Some(4), &[]),
            ],
        );
        f.links.insert(
            "underlay",
            vec![
                link(1, "br0", LinkKind::Bridge, None, &[]),
                link(2, "n1", veth(), Some(1), &[]),
                link(3, "n2", veth(), Some(1), &[]),
            ],
        );
        for (a, b) in [
            (("pod-a", 2), ("node-1", 5)),
            (("pod-c", 2), ("node-2", 5)),
            (("node-1", 2), ("underlay", 2)),
            (("node-2", 2), ("underlay", 3)),
        ] {
            f.peers.insert(a, b);
            f.peers.insert(b, a);
        }
        f.routes
            .insert(("pod-a", ip(C)), route("eth0", Some("10.244.1.1")));
        f.routes
            .insert(("node-1", ip(C)), route("flannel.1", Some("10.244.2.0")));
        f.routes
            .insert(("node-1", ip("192.168.50.12")), route("eth0", None));
        f.routes.insert(("node-2", ip(C)), route("cni0", None));
        f.routes
            .insert(("pod-c", ip(A)), route("eth0", Some("10.244.2.1")));
        f.routes
            .insert(("node-2", ip(A)), route("flannel.1", Some("10.244.1.0")));
        f.routes
            .insert(("node-2", ip("192.168.50.11")), route("eth0", None));
        f.routes.insert(("node-1", ip(A)), route("cni0", None));
        let n = |ifindex, addr: Option<&str>, mac, fdb| Neighbour {
            ifindex,
            fdb,
            addr: addr.map(ip),
            mac: Some(mac),
        };
        f.neigh.insert(
            "node-1",
            vec![
                n(3, Some("10.244.2.0"), MAC_VTEP2, false),
                n(3, Some("192.168.50.12"), MAC_VTEP2, true),
                n(2, Some("192.168.50.12"), MAC_N2, false),
            ],
        );
        f.neigh.insert("underlay", vec![n(3, None, MAC_N2, true)]);
        f
    }

    fn names(w: &Walked<&'static str>) -> Vec<String> {
        w.points.iter().map(|(n, i)| format!("{n}/{i}")).collect()
    }

    #[test]
    fn a_cross_node_walk_follows_bridge_vxlan_underlay_and_back() {
        let mut f = cluster(0);
        let w = walk(&mut f, &"pod-a", ip(C), ip(A));
        assert_eq!(
            w.namespaces,
            ["pod-a", "node-1", "underlay", "node-2", "pod-c"]
        );
        let p = names(&w);
        for want in [
            "pod-a/eth0",
            "node-1/veth-a",
            "node-1/cni0",
            "node-1/flannel.1",
            "node-1/eth0",
            "underlay/n1",
            "underlay/br0",
            "underlay/n2",
            "node-2/eth0",
            "node-2/flannel.1",
            "node-2/cni0",
            "node-2/veth-c",
            "pod-c/eth0",
        ] {
            assert!(p.contains(&want.to_string()), "{want} not in {p:?}");
        }
    }

    #[test]
    fn idle_pods_on_the_bridge_change_nothing() {
        let without = walk(&mut cluster(0), &"pod-a", ip(C), ip(A));
        let mut busy = cluster(50);
        let with = walk(&mut busy, &"pod-a", ip(C), ip(A));
        assert_eq!(without, with);
    }

    #[test]
    fn dnat_targets_are_walked_to() {
        let mut f = cluster(0);
        let vip = ip("10.96.0.10");
        f.routes
            .insert(("pod-a", vip), route("eth0", Some("10.244.1.1")));
        // node-1 has no route for the ClusterIP: only the DNAT target leads anywhere.
        f.dnat.insert("node-1", vec![ip(C)]);
        let w = walk(&mut f, &"pod-a", vip, ip(A));
        assert!(w.namespaces.contains(&"pod-c"), "{:?}", w.namespaces);
        assert!(w.namespaces.contains(&"node-2"));
    }

    #[test]
    fn a_huge_nat_table_does_not_starve_the_probes_own_way() {
        let mut f = cluster(0);
        // Thousands of endpoints, none of them here: the walk to pod-c still completes.
        let many: Vec<IpAddr> = (0..5000u32)
            .map(|i| IpAddr::from([10, 50, (i / 250) as u8, (i % 250) as u8]))
            .collect();
        f.dnat.insert("node-1", many);
        let w = walk(&mut f, &"pod-a", ip(C), ip(A));
        assert!(w.namespaces.contains(&"pod-c"), "{:?}", w.namespaces);
        assert!(f.lookups <= MAX_STEPS, "{} lookups", f.lookups);
    }

    #[test]
    fn a_routing_loop_is_bounded() {
        let mut f = Fake::default();
        f.links
            .insert("x", vec![link(2, "e", veth(), None, &["10.0.0.1"])]);
        f.links
            .insert("y", vec![link(2, "e", veth(), None, &["10.0.0.2"])]);
        f.peers.insert(("x", 2), ("y", 2));
        f.peers.insert(("y", 2), ("x", 2));
        f.routes.insert(("x", ip("10.9.9.9")), route("e", None));
        f.routes.insert(("y", ip("10.9.9.9")), route("e", None));
        let w = walk(&mut f, &"x", ip("10.9.9.9"), ip("10.0.0.1"));
        assert_eq!(w.namespaces, ["x", "y"]);
        assert!(f.lookups <= 2, "{} lookups", f.lookups);
    }

    #[test]
    fn a_device_the_walk_cannot_see_through_brings_in_the_infrastructure_around_it() {
        let mut f = cluster(20);
        // flannel's udp backend: a TUN device, a forwarder in user space behind it.
        if let Some(links) = f.links.get_mut("node-1") {
            links.push(link(
                9,
                "flannel0",
                LinkKind::Other { name: "tun".into() },
                None,
                &[],
            ));
        }
        f.routes.insert(("node-1", ip(C)), route("flannel0", None));
        f.neigh.clear();
        f.links.insert(
            "idle-0",
            vec![link(2, "eth0", veth(), None, &["10.244.1.9"])],
        );
        f.peers.insert(("idle-0", 2), ("node-1", 100));
        f.peers.insert(("node-1", 100), ("idle-0", 2));
        // …and a bridge-less pod (Calico's point-to-point host veth, no address on it).
        if let Some(links) = f.links.get_mut("node-1") {
            links.push(link(10, "cali1", veth(), None, &[]));
        }
        f.links.insert(
            "cali-pod",
            vec![link(2, "eth0", veth(), None, &["10.244.1.77"])],
        );
        f.peers.insert(("cali-pod", 2), ("node-1", 10));
        f.peers.insert(("node-1", 10), ("cali-pod", 2));
        let w = walk(&mut f, &"pod-a", ip(C), ip(A));
        // node-1's uplink leads to the underlay switch, whose ports lead to node-2, which
        // routes on to pod-c; node-1's pods (behind cni0, its gateway, or on cali1) stay out.
        assert_eq!(
            w.namespaces,
            ["pod-a", "node-1", "underlay", "node-2", "pod-c"]
        );
    }

    #[test]
    fn cold_caches_fall_back_to_the_owner_of_the_address() {
        let mut f = cluster(3);
        f.neigh.clear();
        // Without neighbours the VXLAN's remote VTEP is unknown: the walk stops at flannel.1,
        // but a same-bridge destination is still found through the ports' owners.
        f.routes
            .insert(("pod-a", ip("10.244.1.3")), route("eth0", None));
        f.links.insert(
            "pod-b",
            vec![link(2, "eth0", veth(), None, &["10.244.1.3"])],
        );
        f.peers.insert(("pod-b", 2), ("node-1", 101));
        f.peers.insert(("node-1", 101), ("pod-b", 2));
        let w = walk(&mut f, &"pod-a", ip("10.244.1.3"), ip(A));
        assert_eq!(w.namespaces, ["pod-a", "node-1", "pod-b"]);
        assert!(names(&w).contains(&"node-1/veth-i1".to_string()));
    }
}
