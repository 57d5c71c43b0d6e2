//! The path walk's view of this host ([`walk::System`]): namespaces read lazily over
//! rtnetlink — links and `ip route get` where the walk goes, neighbour caches and forwarding
//! databases when it has to pick a bridge port or a VTEP, nat rules for DNAT targets. Nothing
//! is read of a namespace the walk does not reach: idle pods cost one nsid lookup at most.

use std::collections::BTreeMap;
use std::net::IpAddr;

use dye_capture::netlink::{Link, LinkKind, Neighbour, Route, Rtnl};
use dye_capture::{Netns, NetnsId};

use super::walk::System;

/// One namespace as read so far.
#[derive(Debug)]
struct Seen {
    rt: Option<Rtnl>,
    links: Vec<Link>,
    neighbours: Option<Vec<Neighbour>>,
    /// nsid (as this namespace numbers others) → namespace, filled as peers are resolved.
    nsids: BTreeMap<i32, Option<NetnsId>>,
}

/// The namespaces on the host, read on demand.
#[derive(Debug)]
pub struct HostView {
    all: Vec<Netns>,
    /// `all` holds every namespace on the host (after [`HostView::widen`]).
    complete: bool,
    seen: BTreeMap<NetnsId, Seen>,
}

impl HostView {
    /// Starts from `known` (the source and the named namespaces: where a path usually runs); a
    /// veth whose peer is none of them widens the view to every namespace on the host.
    pub fn new(known: Vec<Netns>) -> HostView {
        HostView {
            all: known,
            complete: false,
            seen: BTreeMap::new(),
        }
    }

    /// Adds every namespace on the host (processes' included: a scan of /proc), once. False
    /// when there was nothing left to add.
    fn widen(&mut self) -> bool {
        if self.complete {
            return false;
        }
        self.complete = true;
        for ns in Netns::enumerate().unwrap_or_default() {
            if !self.all.iter().any(|n| n.id() == ns.id()) {
                self.all.push(ns);
            }
        }
        true
    }

    /// Every namespace on the host (widening the view first).
    pub fn all(&mut self) -> &[Netns] {
        self.widen();
        &self.all
    }

    pub fn netns(&self, id: NetnsId) -> Option<&Netns> {
        self.all.iter().find(|n| n.id() == id)
    }

    fn seen(&mut self, id: NetnsId) -> Option<&mut Seen> {
        if !self.seen.contains_key(&id) {
            let ns = self.netns(id)?.clone();
            let mut rt = Rtnl::open_in(&ns)
                .map_err(|e| tracing::debug!("path walk: {e}"))
                .ok();
            let links = rt
                .as_mut()
                .and_then(|r| r.links().map_err(|e| tracing::debug!("{e}")).ok())
                .unwrap_or_default();
            self.seen.insert(
                id,
                Seen {
                    rt,
                    links,
                    neighbours: None,
                    nsids: BTreeMap::new(),
                },
            );
        }
        self.seen.get_mut(&id)
    }
}

impl System for HostView {
    type Ns = NetnsId;

    fn links(&mut self, ns: &NetnsId) -> Vec<Link> {
        self.seen(*ns).map(|s| s.links.clone()).unwrap_or_default()
    }

    fn route(&mut self, ns: &NetnsId, dst: IpAddr) -> Option<Route> {
        let s = self.seen(*ns)?;
        let rt = s.rt.as_mut()?;
        rt.route_get(dst, &s.links)
            .map_err(|e| tracing::debug!("path walk: {e}"))
            .ok()
    }

    fn veth_peer(&mut self, ns: &NetnsId, link: &Link) -> Option<(NetnsId, u32)> {
        let LinkKind::Veth {
            peer_ifindex: Some(peer),
            peer_netnsid,
        } = link.kind
        else {
            return None;
        };
        let Some(nsid) = peer_netnsid else {
            return Some((*ns, peer));
        };
        if let Some(known) = self.seen.get(ns).and_then(|s| s.nsids.get(&nsid)) {
            return known.map(|id| (id, peer));
        }
        // Ask this namespace for the nsid it gives each candidate until one matches; the
        // answers are kept, so a bridge of N ports costs N lookups at most, once.
        loop {
            let candidates: Vec<Netns> = self.all.clone();
            let s = self.seen(*ns)?;
            let rt = s.rt.as_mut()?;
            for c in candidates {
                if s.nsids.values().any(|v| *v == Some(c.id())) {
                    continue;
                }
                if let Ok(Some(id)) = rt.nsid_of(&c) {
                    s.nsids.insert(id, Some(c.id()));
                    if id == nsid {
                        return Some((c.id(), peer));
                    }
                }
            }
            if !self.widen() {
                break;
            }
        }
        if let Some(s) = self.seen.get_mut(ns) {
            s.nsids.insert(nsid, None);
        }
        None
    }

    fn neighbours(&mut self, ns: &NetnsId) -> Vec<Neighbour> {
        let Some(s) = self.seen(*ns) else {
            return Vec::new();
        };
        if s.neighbours.is_none() {
            s.neighbours = Some(
                s.rt.as_mut()
                    .and_then(|r| r.neighbours().map_err(|e| tracing::debug!("{e}")).ok())
                    .unwrap_or_default(),
            );
        }
        s.neighbours.clone().unwrap_or_default()
    }

    fn dnat_targets(&mut self, ns: &NetnsId) -> Vec<IpAddr> {
        let Some(netns) = self.netns(*ns) else {
            return Vec::new();
        };
        dye_capture::nat::dnat_targets(netns)
            .map_err(|e| tracing::debug!("path walk: {e}"))
            .unwrap_or_default()
    }
}
