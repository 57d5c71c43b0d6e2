//! Answers reconstruction's topology questions — who owns an address, where a vanished probe
//! should have appeared next and why it did not — from the snapshot alone.

use std::net::IpAddr;

use crate::model::{Direction, PointRef};
use crate::path::{discards, DropReason, Expectation, Next, Packet};
use crate::reconstruct::{PathOracle, PointMeta};
use crate::snapshot::{LinkKind, RouteKind, Snapshot};

/// Answers the verdict's questions from the snapshot (its links, edges and route lookups).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotOracle<'a> {
    pub snapshot: &'a Snapshot,
}

fn expect(next: Option<Next>, reason: DropReason) -> Expectation {
    Expectation { next, reason }
}

fn out_of(at: PointRef) -> Option<Next> {
    Some(Next {
        at,
        direction: Direction::Out,
    })
}

impl SnapshotOracle<'_> {
    fn link_mtu(&self, netns: &str, ifname: &str) -> Option<u32> {
        self.snapshot.link(netns, ifname).map(|l| l.mtu)
    }

    /// After a packet enters `netns` through `in_if`: where does the kernel route it?
    fn routed_next(&self, netns: &str, in_if: &str, packet: &Packet) -> Expectation {
        let Some(info) = self.snapshot.namespace(netns) else {
            return expect(None, DropReason::Unknown);
        };
        let dst = packet.dst;
        let route = match self.snapshot.route(netns, dst) {
            Some(Ok(r)) => r.clone(),
            None => {
                return expect(
                    None,
                    DropReason::NoRouteLookup {
                        netns: netns.to_string(),
                        dst,
                    },
                )
            }
            Some(Err(e)) => {
                return expect(
                    None,
                    DropReason::NoRoute {
                        netns: netns.to_string(),
                        dst,
                        error: e.clone(),
                    },
                )
            }
        };
        if discards(&route.kind) {
            return expect(
                None,
                DropReason::RouteDiscards {
                    netns: netns.to_string(),
                    dst,
                    route,
                },
            );
        }
        if route.kind == RouteKind::Local {
            return expect(
                None,
                DropReason::LocalUnclaimed {
                    netns: netns.to_string(),
                    dst,
                },
            );
        }
        let Some(dev) = route.dev.clone() else {
            return expect(
                None,
                DropReason::RouteWithoutDevice {
                    netns: netns.to_string(),
                    route,
                },
            );
        };
        // A bridge: the next hop is the port leading to the namespace that owns the address.
        let mut next = PointRef::new(netns, dev.clone());
        if info
            .link(&dev)
            .map(|l| l.kind == LinkKind::Bridge)
            .unwrap_or(false)
        {
            let owners = self.owners(dst);
            if let Some(port) = self.snapshot.bridge_ports(netns, &dev).find(|port| {
                self.snapshot
                    .veth_peer(&port.netns, &port.ifname)
                    .is_some_and(|peer| owners.contains(&peer.netns))
            }) {
                next = port.clone();
            }
        }
        expect(
            out_of(next),
            DropReason::DroppedInside {
                netns: netns.to_string(),
                in_if: in_if.to_string(),
                dev,
                route,
            },
        )
    }
}

impl PathOracle for SnapshotOracle<'_> {
    fn expected_next(
        &self,
        last: &PointMeta,
        direction: Direction,
        packet: &Packet,
        outer_len: Option<u32>,
    ) -> Expectation {
        let ns = &last.netns;
        if direction == Direction::In {
            return self.routed_next(ns, &last.ifname, packet);
        }
        let link = self.snapshot.link(ns, &last.ifname);
        if let Some(tunnel) = link.and_then(|l| l.kind.tunnel()) {
            let Some(under) = tunnel.underlay.clone() else {
                return expect(
                    None,
                    DropReason::EncapNeverLeft {
                        under: "its underlay device".into(),
                    },
                );
            };
            let next = out_of(PointRef::new(ns.clone(), under.clone()));
            let total = outer_len.unwrap_or(packet.len + tunnel.overhead());
            return match self.link_mtu(ns, &under) {
                Some(under_mtu) if total > under_mtu => expect(
                    next,
                    DropReason::EncapTooBig {
                        tunnel: last.class,
                        inner: packet.len,
                        total,
                        under,
                        under_mtu,
                        df: tunnel.df,
                    },
                ),
                _ => expect(next, DropReason::EncapNeverLeft { under }),
            };
        }
        if let Some(peer) = self.snapshot.veth_peer(ns, &last.ifname) {
            return expect(
                Some(Next {
                    at: peer.clone(),
                    direction: Direction::In,
                }),
                DropReason::VethPeer {
                    peer: peer.clone(),
                    peer_mtu: self.link_mtu(&peer.netns, &peer.ifname),
                },
            );
        }
        // A port of a bridge: the frame should show up on the bridge device.
        if let Some(bridge) = self.snapshot.bridge_of(ns, &last.ifname) {
            return expect(
                Some(Next {
                    at: bridge.clone(),
                    direction: Direction::In,
                }),
                DropReason::BridgePort {
                    bridge: bridge.clone(),
                },
            );
        }
        expect(
            None,
            DropReason::BeyondSight {
                netns: ns.clone(),
                ifname: last.ifname.clone(),
            },
        )
    }

    fn owners(&self, addr: IpAddr) -> Vec<String> {
        self.snapshot.owners(addr)
    }
}
