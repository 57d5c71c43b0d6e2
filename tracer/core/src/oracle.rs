//! Answers reconstruction's topology questions — who owns an address, where a vanished probe
//! should have appeared next and why it did not — from the snapshot alone.

use std::net::IpAddr;

use crate::model::Direction;
use crate::reconstruct::{Expectation, PathOracle, PointMeta};
use crate::report::PacketView;
use crate::snapshot::{LinkKind, RouteKind, Snapshot};

/// Answers the verdict's questions from the snapshot (its links, edges and route lookups).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotOracle<'a> {
    pub snapshot: &'a Snapshot,
}

impl SnapshotOracle<'_> {
    fn link_mtu(&self, netns: &str, ifname: &str) -> Option<u32> {
        self.snapshot.link(netns, ifname).map(|l| l.mtu)
    }

    /// After a packet enters `ns`: where does the kernel route it?
    fn routed_next(&self, netns: &str, in_if: &str, packet: &PacketView) -> Expectation {
        let Some(info) = self.snapshot.namespace(netns) else {
            return Expectation {
                next: None,
                explanation: String::new(),
            };
        };
        let dst = packet.dst;
        let route = match self.snapshot.route(netns, dst) {
            Some(Ok(r)) => r.clone(),
            None => {
                return Expectation {
                    next: None,
                    explanation: format!("dye did not look up {netns}'s route to {dst}"),
                }
            }
            Some(Err(e)) => {
                return Expectation {
                    next: None,
                    explanation: format!("{netns} has no route to {dst} ({e})"),
                }
            }
        };
        if route.kind != RouteKind::Unicast && route.kind != RouteKind::Local {
            return Expectation {
                next: None,
                explanation: format!(
                    "{netns} routes {dst} as {} (`{route}`): the kernel discards it",
                    route.kind.as_str()
                ),
            };
        }
        if route.kind == RouteKind::Local {
            return Expectation {
                next: None,
                explanation: format!("{dst} is local to {netns} but nothing took the probe: check INPUT rules and the listening socket"),
            };
        }
        let Some(dev) = route.dev.clone() else {
            return Expectation {
                next: None,
                explanation: format!("{netns}: route `{route}` has no device"),
            };
        };
        // A bridge: the next hop is the port leading to the namespace that owns the address.
        let mut next = format!("{netns}/{dev}");
        if info
            .link(&dev)
            .map(|l| l.kind == LinkKind::Bridge)
            .unwrap_or(false)
        {
            let owners = self.owners(dst);
            let port = self.snapshot.bridge_ports(netns, &dev).find_map(|port| {
                self.snapshot
                    .veth_peer(&port.netns, &port.ifname)
                    .filter(|peer| owners.contains(&peer.netns))
                    .map(|_| port.to_string())
            });
            if let Some(p) = port {
                next = p;
            }
        }
        Expectation {
            next: Some(format!("{next} (out)")),
            explanation: format!(
                "{netns} has a route (`{route}`) but the probe never left through {dev}: it was dropped inside {netns} between {in_if} and {dev} — look at its firewall (iptables/nft FORWARD and INPUT, policies, NetworkPolicy chains), rp_filter and conntrack"
            ),
        }
    }
}

impl PathOracle for SnapshotOracle<'_> {
    fn expected_next(
        &self,
        last: &PointMeta,
        direction: Direction,
        packet: &PacketView,
        outer_len: Option<u32>,
    ) -> Expectation {
        let ns = &last.netns;
        if direction == Direction::In {
            return self.routed_next(ns, &last.ifname, packet);
        }
        let link = self.snapshot.link(ns, &last.ifname);
        if let Some(tunnel) = link.and_then(|l| l.kind.tunnel()) {
            let under = tunnel
                .underlay
                .clone()
                .unwrap_or_else(|| "its underlay device".into());
            let under_mtu = self.link_mtu(ns, &under);
            let encapsulated = outer_len.unwrap_or(packet.len + tunnel.overhead());
            let df = tunnel.df.map(|d| d.as_str()).unwrap_or("unset");
            let mut explanation = format!("the encapsulated packet never left through {under}");
            if let Some(m) = under_mtu {
                if encapsulated > m {
                    explanation = format!(
                        "{} + {} bytes of {} overhead = {encapsulated} bytes, over {under}'s MTU {m}, and the outer header has DF {df}: {} drops it (a black hole for the sender unless it gets ICMP). Lower the overlay MTU to {} or raise the underlay MTU to {}",
                        packet.len,
                        encapsulated - packet.len,
                        last.class,
                        if df == "set" { "the kernel" } else { "something" },
                        m.saturating_sub(encapsulated - packet.len),
                        encapsulated
                    );
                }
            }
            return Expectation {
                next: Some(format!("{ns}/{under} (out)")),
                explanation,
            };
        }
        if let Some(peer) = self.snapshot.veth_peer(ns, &last.ifname) {
            return Expectation {
                next: Some(format!("{peer} (in)")),
                explanation: format!("a veth pair delivers what enters one end to the other: {peer} is down, or its namespace discarded the frame (MTU {} on its side?)", self.link_mtu(&peer.netns, &peer.ifname).map(|m| m.to_string()).unwrap_or_else(|| "?".into())),
            };
        }
        // A port of a bridge: the frame should show up on the other ports / the bridge device.
        if let Some(bridge) = self.snapshot.bridge_of(ns, &last.ifname) {
            return Expectation {
                next: Some(format!("{bridge} (in)")),
                explanation: format!("the frame left through a port of bridge {}", bridge.ifname),
            };
        }
        Expectation {
            next: None,
            explanation: format!(
                "it left {ns} through {} and dye cannot see beyond it",
                last.ifname
            ),
        }
    }

    fn owners(&self, addr: IpAddr) -> Vec<String> {
        self.snapshot.owners(addr)
    }
}
