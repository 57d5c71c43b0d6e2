//! From the probes of a search to the report: the path MTU, whether the limit is healthy,
//! signalled or a black hole, the link that limits it and why (encapsulation overhead
//! included), what to configure, and what passes but costs (outer fragmentation, fragmented
//! replies, bogus ICMP).

use std::net::IpAddr;
use std::time::Duration;

use super::links::{self, Encapsulation, LinkLimit};
use super::outcome::ProbeOutcome;
use super::result::{
    AppliesTo, Found, Limit, MaxPayload, MtuResult, ProbeResult, Recommendation, SearchStats,
    Sender, Status, Warning, Why,
};
use super::run::MtuPlan;
use super::search::{Bound, Outcome, Search};
use super::underlay::{self, Beyond};
use super::userspace;
use crate::model::Direction;
use crate::model::PointRef;
use crate::oracle::SnapshotOracle;
use crate::path::{FragmentLayer, Hop, Leg, Next};
use crate::reconstruct::PathOracle;
use crate::seam::PmtuRestore;
use crate::snapshot::Snapshot;

/// One probe of the search and what is known about where it went.
#[derive(Debug, Clone)]
pub struct Tried {
    pub seq: u32,
    pub size: u32,
    pub outcome: ProbeOutcome,
    pub rtt: Option<Duration>,
    /// Its hops as reconstructed (forward, then return).
    pub hops: Vec<Hop>,
    /// Its last forward sighting.
    pub last_seen: Option<Next>,
    /// Vanished: the link it should have crossed next.
    pub vanished_at: Option<LinkLimit>,
    /// Too big: the namespaces owning the ICMP sender, and the link its route uses.
    pub sender_netns: Vec<String>,
    /// The ICMP error's source address is not the sender's own (NAT rewrote it).
    pub sender_rewritten: bool,
    pub signalled_link: Option<LinkLimit>,
    /// Vanished inside a tunnel with nothing on the node to explain it: the outer packet's way
    /// across the underlay and the link on it that does.
    pub beyond: Option<Beyond>,
}

impl Tried {
    /// `outers`: the (outer source, outer destination) pairs of every encapsulated packet the
    /// search captured, which tell a tunnel's remote endpoint.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seq: u32,
        size: u32,
        outcome: ProbeOutcome,
        rtt: Option<Duration>,
        hops: Vec<Hop>,
        snapshot: &Snapshot,
        oracle: &SnapshotOracle<'_>,
        outers: &[(IpAddr, IpAddr)],
    ) -> Tried {
        let last = hops.iter().rev().find(|h| h.leg == Leg::Forward);
        let last_seen = last.map(|h| Next {
            at: h.at(),
            direction: h.direction,
        });
        let mut t = Tried {
            seq,
            size,
            outcome,
            rtt,
            hops: Vec::new(),
            last_seen,
            vanished_at: None,
            sender_netns: Vec::new(),
            sender_rewritten: false,
            signalled_link: None,
            beyond: None,
        };
        match &t.outcome {
            ProbeOutcome::Vanished => {
                t.vanished_at = last.and_then(|h| {
                    let meta = snapshot
                        .points
                        .iter()
                        .find(|m| m.netns == h.netns && m.ifname == h.ifname)?;
                    links::next_link(snapshot, meta, h.direction, h.packet.dst)
                });
                let unexplained = t.vanished_at.as_ref().is_none_or(|l| l.fits >= size);
                if let (true, Some(h)) = (unexplained, last) {
                    t.beyond = beyond_node(snapshot, h, t.vanished_at.as_ref(), outers);
                    if let Some(b) = t.beyond.as_ref().filter(|b| b.limit.fits < size) {
                        t.vanished_at = Some(b.limit.clone());
                    }
                }
            }
            ProbeOutcome::Passed(_) => {
                // Passed, but its outer packet was split where the link's own MTU does not
                // explain the split (the node had cached a smaller path MTU for the remote
                // endpoint): the limit is further along the underlay.
                let split = outer_split(&hops);
                let unexplained = split.is_some_and(|(h, first)| {
                    snapshot
                        .link(&h.netns, &h.ifname)
                        .is_some_and(|l| l.mtu >= first + 8)
                });
                if let (true, Some((h, _))) = (unexplained, split) {
                    t.beyond = beyond_node(snapshot, h, None, outers);
                }
            }
            ProbeOutcome::TooBig { sender, mtu } => {
                // The namespace the ICMP error came from: where it was first seen, leaving.
                // NAT may have rewritten its source address on the way back (an error about a
                // DNATed probe comes back "from" the address the source dialled).
                let origin = hops
                    .iter()
                    .find(|h| h.leg == Leg::Return && h.packet.is_icmp())
                    .filter(|h| h.direction == Direction::Out)
                    .map(|h| h.netns.clone());
                let owners = oracle.owners(*sender);
                t.sender_netns = match &origin {
                    Some(o) if !owners.contains(o) => {
                        t.sender_rewritten = true;
                        vec![o.clone()]
                    }
                    _ => owners,
                };
                t.signalled_link = t.sender_netns.iter().find_map(|ns| {
                    // The probe as the sender saw it: its route is the link the ICMP speaks
                    // of. When the route does not say (NAT, policy routing), the sender's link
                    // with the advertised MTU does.
                    let by_route = hops
                        .iter()
                        .rev()
                        .find(|h| h.leg == Leg::Forward && &h.netns == ns)
                        .and_then(|seen| links::route_limit(snapshot, ns, seen.packet.dst));
                    match (by_route, mtu) {
                        (Some(l), Some(m)) if l.mtu == *m => Some(l),
                        (by_route, Some(m)) => links::link_with_mtu(snapshot, ns, *m).or(by_route),
                        (by_route, None) => by_route,
                    }
                });
            }
            _ => {}
        }
        t.hops = hops;
        t
    }

    /// Each `netns/ifname` its forward leg crossed as a plain (not encapsulated) packet, once,
    /// in order. Underlay links count through the tunnel that uses them.
    fn crossed(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for h in self
            .hops
            .iter()
            .filter(|h| h.leg == Leg::Forward && h.outer.is_empty())
        {
            let key = (h.netns.clone(), h.ifname.clone());
            if !out.contains(&key) {
                out.push(key);
            }
        }
        out
    }

    /// What the search learns from this probe.
    pub fn search_outcome(&self) -> Outcome {
        match &self.outcome {
            ProbeOutcome::Passed(_) => Outcome::Passed,
            ProbeOutcome::TooBig { mtu, .. } => Outcome::Signalled { mtu: *mtu },
            // Refused for another reason: a failure at this size, without a hint.
            ProbeOutcome::Refused { .. } => Outcome::Signalled { mtu: None },
            ProbeOutcome::Vanished => Outcome::Silent {
                fits: self.vanished_at.as_ref().map(|l| l.fits),
            },
        }
    }

    fn result(&self) -> ProbeResult {
        ProbeResult {
            seq: self.seq,
            size: self.size,
            outcome: self.outcome.clone(),
            rtt: self.rtt,
            last_seen: self.last_seen.clone(),
            vanished_at: self.vanished_at.clone(),
        }
    }
}

/// A probe last seen at `last` vanished where nothing on its node explains it. If it was
/// inside a tunnel — leaving the node's tunnel device, or already an outer packet on the
/// underlay — walk the outer packet's way to the remote endpoint.
fn beyond_node(
    snapshot: &Snapshot,
    last: &Hop,
    next: Option<&LinkLimit>,
    outers: &[(IpAddr, IpAddr)],
) -> Option<Beyond> {
    if let Some(o) = last.outer.first() {
        // Seen as an outer packet: the node is the outer source's owner.
        let node = snapshot.owners(o.src).into_iter().next()?;
        let tunnel = snapshot
            .namespace(&node)?
            .links
            .iter()
            .filter(|l| l.kind.tunnel().is_some_and(|t| t.kind.as_str() == o.tunnel))
            .find_map(|l| links::underlay_of(snapshot, &node, l))?
            .encapsulation?;
        return underlay::walk(snapshot, &node, &node, o.dst, &tunnel);
    }
    // Leaving the tunnel device: its underlay is what `next` names.
    let tunnel: &Encapsulation = next?.encapsulation.as_ref()?;
    let node = last.netns.as_str();
    let remote = underlay::remote_of(snapshot, node, outers)?;
    underlay::walk(snapshot, node, node, remote, tunnel)
}

/// The hop where a probe's outer packet was first seen split, leaving, and its first
/// fragment's size.
fn outer_split(hops: &[Hop]) -> Option<(&Hop, u32)> {
    hops.iter().find_map(|h| {
        let f = h.fragments.as_ref()?;
        let first = *f.sizes.first()?;
        (h.leg == Leg::Forward && h.direction == Direction::Out && f.layer == FragmentLayer::Outer)
            .then_some((h, first))
    })
}

/// Everything the analysis reads.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub cfg: &'a MtuPlan,
    pub src: IpAddr,
    pub snapshot: &'a Snapshot,
    pub search: &'a Search,
    pub tried: &'a [Tried],
    pub source_mtu: Option<u32>,
    pub min: u32,
    pub max: u32,
    pub wait: Duration,
    pub pmtu: PmtuRestore,
    /// The search converged (not interrupted, not out of probes or time).
    pub complete: bool,
    pub elapsed: Duration,
}

pub fn analyze(i: Inputs<'_>) -> MtuResult {
    let path_mtu = i.search.passed();
    let failed = i.search.failed();
    // The probe that set the upper bound.
    let bounding: Option<&Tried> = match failed {
        Some((_, Bound::Icmp(m))) => i
            .tried
            .iter()
            .find(|t| matches!(t.outcome, ProbeOutcome::TooBig { mtu: Some(x), .. } if x == m)),
        Some((s, Bound::Probe(_))) => i.tried.iter().rev().find(|t| t.size == s),
        _ => None,
    };
    let status = if path_mtu.is_none() && i.complete {
        Status::Unreachable
    } else if !i.complete {
        Status::Incomplete
    } else {
        match bounding.map(|t| &t.outcome) {
            None => Status::Healthy,
            Some(ProbeOutcome::Vanished) => Status::BlackHole,
            Some(_) => Status::Signalled,
        }
    };
    let largest_pass = i
        .tried
        .iter()
        .filter(|t| matches!(t.outcome, ProbeOutcome::Passed(_)))
        .max_by_key(|t| t.size);
    let topology = i.snapshot;

    let mut warnings = Vec::new();
    let mut limit = match (status, bounding) {
        (Status::BlackHole, Some(t)) => t.vanished_at.as_ref().map(|l| Limit {
            link: Some(l.clone()),
            found: Found::BlackHole {
                vanished_after: t.last_seen.clone(),
                beyond_node: t.beyond.as_ref().filter(|b| &b.limit == l).map(|b| {
                    let probes: Vec<(bool, &[Hop])> = i
                        .tried
                        .iter()
                        .map(|t| (t.outcome == ProbeOutcome::Vanished, t.hops.as_slice()))
                        .collect();
                    Box::new(underlay::beyond_node(topology, b, &probes))
                }),
            },
        }),
        (Status::Signalled, Some(t)) => signalled_limit(t),
        (Status::Healthy, _) => largest_pass.and_then(|t| {
            let crossed = t.crossed();
            let l = links::narrowest(topology, &crossed)?;
            Some(healthy_limit(topology, &l, &crossed, i.source_mtu))
        }),
        _ => None,
    };

    // What passes but costs: where the largest passing probe (or its reply) was first split.
    if let Some(t) = largest_pass {
        let mut reported: Vec<(Leg, FragmentLayer)> = Vec::new();
        for h in &t.hops {
            let Some(f) = &h.fragments else { continue };
            let key = (h.leg, f.layer);
            if h.direction != Direction::Out || reported.contains(&key) {
                continue;
            }
            reported.push(key);
            let at = h.at();
            let mtu = link_mtu(topology, &h.netns, &h.ifname);
            let tunnel = h.outer.first().map(|o| o.tunnel.clone());
            let sizes = f.sizes.clone();
            warnings.push(match (h.leg, f.layer) {
                (Leg::Forward, FragmentLayer::Outer) => Warning::OuterFragmented {
                    size: t.size,
                    at,
                    mtu,
                    tunnel,
                    sizes,
                },
                (Leg::Return, FragmentLayer::Outer) => Warning::ReplyOuterFragmented {
                    at,
                    mtu,
                    tunnel,
                    sizes,
                },
                (Leg::Return, _) => Warning::ReplyFragmented {
                    size: t.size,
                    at,
                    mtu,
                    sizes,
                },
                (Leg::Forward, _) => Warning::FragmentedDespiteDf {
                    size: t.size,
                    at,
                    mtu,
                    sizes,
                },
            });
        }
    }
    for t in i.tried {
        if let ProbeOutcome::TooBig { sender, mtu } = &t.outcome {
            if mtu.is_none_or(|m| m == 0 || m >= t.size) {
                warnings.push(Warning::BogusIcmp {
                    sender: *sender,
                    size: t.size,
                    mtu: *mtu,
                });
            }
        }
    }
    if status == Status::Signalled {
        if let Some(t) = i.tried.iter().find(|t| t.outcome == ProbeOutcome::Vanished) {
            warnings.push(Warning::VanishedBeforeRefused {
                size: t.size,
                last_seen: t.last_seen.clone(),
            });
        }
    }
    if status == Status::Healthy && path_mtu.is_some() && path_mtu == i.source_mtu {
        warnings.push(Warning::SourceCeiling {
            mtu: i.source_mtu.unwrap_or(0),
        });
    }

    let outer_fragmenting = limit
        .as_ref()
        .and_then(|l| l.link.as_ref())
        .and_then(|l| l.encapsulation.as_ref())
        .and_then(|e| {
            // Healthy but fragmenting: the underlay link that split the tunnel's packets is
            // what is too small — the node's own uplink, or a router port further on.
            let t = largest_pass?;
            let (split, _) = outer_split(&t.hops)?;
            if let Some(b) = &t.beyond {
                return Some(b.limit.clone());
            }
            match topology.link(&split.netns, &split.ifname) {
                Some(l) => Some(LinkLimit {
                    netns: split.netns.clone(),
                    ifname: split.ifname.clone(),
                    mtu: l.mtu,
                    fits: l.mtu.saturating_sub(e.overhead),
                    encapsulation: Some(e.clone()),
                }),
                None => links::tunnel_underlay(topology, e),
            }
        })
        .or_else(|| {
            // A TUN device's userspace encapsulation (no kernel tunnel on the limit): what the
            // split uplink carries after the outer headers seen on it.
            let t = largest_pass?;
            let (split, _) = outer_split(&t.hops)?;
            userspace::observed_underlay(topology, &t.hops, split)
        });
    // The limit's words name the link that split the tunnel's packets, not just the node's
    // own uplink.
    if let (
        Some(Limit {
            found: Found::Healthy { underlay, .. },
            ..
        }),
        Some(split),
    ) = (limit.as_mut(), outer_fragmenting.as_ref())
    {
        *underlay = Some(split.clone());
    }
    let ip_header = if i.cfg.to.is_ipv4() { 20 } else { 40 };
    let recommendation = recommend(
        status,
        path_mtu,
        ip_header,
        limit.as_ref(),
        outer_fragmenting.as_ref(),
    );
    let max_payload = path_mtu.map(|m| MaxPayload {
        tcp_mss: m.saturating_sub(ip_header + 20),
        udp: m.saturating_sub(ip_header + 8),
        icmp_echo_data: m.saturating_sub(ip_header + 8),
    });
    MtuResult {
        plan: i.cfg.clone(),
        src: i.src,
        source: i.snapshot.source.clone(),
        path_mtu,
        status,
        limit,
        max_payload,
        recommendation,
        warnings,
        pmtu: i.pmtu,
        search: SearchStats {
            min: i.min,
            max: i.max,
            source_mtu: i.source_mtu,
            probes_sent: i.tried.len() as u32,
            wait: i.wait,
            elapsed: i.elapsed,
            // The path's points (another pod's veth the namespace socket also covers is not one).
            capture_points: i.snapshot.points.iter().filter(|p| p.on_path).count(),
        },
        probes: i.tried.iter().map(Tried::result).collect(),
    }
}

fn link_mtu(topology: &Snapshot, ns: &str, ifname: &str) -> Option<u32> {
    topology.link(ns, ifname).map(|l| l.mtu)
}

fn signalled_limit(t: &Tried) -> Option<Limit> {
    let sender = match &t.outcome {
        ProbeOutcome::TooBig { sender, .. } | ProbeOutcome::Refused { sender, .. } => *sender,
        _ => return None,
    };
    let advertised = match &t.outcome {
        ProbeOutcome::TooBig { mtu, .. } => *mtu,
        _ => None,
    };
    Some(Limit {
        link: t.signalled_link.clone(),
        found: Found::Signalled {
            sender: Sender {
                address: sender,
                netns: t.sender_netns.clone(),
                nat_rewritten: t.sender_rewritten,
                advertised_mtu: advertised,
            },
            refused: t.size,
            outcome: t.outcome.clone(),
            last_seen: t.last_seen.clone(),
        },
    })
}

fn healthy_limit(
    topology: &Snapshot,
    l: &LinkLimit,
    crossed: &[(String, String)],
    source_mtu: Option<u32>,
) -> Limit {
    Limit {
        link: Some(l.clone()),
        found: Found::Healthy {
            underlay: l
                .encapsulation
                .as_ref()
                .and_then(|e| links::tunnel_underlay(topology, e)),
            own_interface: l.encapsulation.is_none() && Some(l.mtu) == source_mtu,
            also_at_this_mtu: links::same_mtu(topology, crossed, l)
                .into_iter()
                .filter_map(|n| {
                    n.split_once('/')
                        .map(|(ns, i)| PointRef::new(ns.to_string(), i.to_string()))
                })
                .collect(),
        },
    }
}

fn recommend(
    status: Status,
    path_mtu: Option<u32>,
    ip_header: u32,
    limit: Option<&Limit>,
    fragmenting_underlay: Option<&LinkLimit>,
) -> Option<Recommendation> {
    let pmtu = path_mtu?;
    if let Some(u) = fragmenting_underlay {
        let e = u.encapsulation.as_ref()?;
        return Some(Recommendation {
            mtu: u.fits,
            applies_to: AppliesTo::Overlay,
            why: Why::UnderlayFragments {
                encapsulation: e.clone(),
                underlay: u.clone(),
            },
        });
    }
    let limit = limit?;
    if status == Status::Signalled {
        return Some(Recommendation {
            mtu: pmtu,
            applies_to: AppliesTo::Pod,
            why: Why::IcmpWorks {
                mss: pmtu.saturating_sub(ip_header + 20),
            },
        });
    }
    let link = limit.link.as_ref()?;
    Some(match (status, &link.encapsulation) {
        (Status::BlackHole, Some(e)) => Recommendation {
            mtu: pmtu.min(link.mtu.saturating_sub(e.overhead)),
            applies_to: AppliesTo::Overlay,
            why: Why::TunnelBlackHole {
                encapsulation: e.clone(),
                link: link.clone(),
            },
        },
        (Status::BlackHole, None) => Recommendation {
            mtu: pmtu,
            applies_to: AppliesTo::Pod,
            why: Why::SilentLink { link: link.clone() },
        },
        (_, Some(e)) => Recommendation {
            mtu: e.tunnel_mtu,
            applies_to: AppliesTo::Overlay,
            why: Why::KeepTunnel {
                encapsulation: e.clone(),
            },
        },
        (_, None) => Recommendation {
            mtu: pmtu,
            applies_to: AppliesTo::Pod,
            why: Why::KeepPods { link: link.clone() },
        },
    })
}
