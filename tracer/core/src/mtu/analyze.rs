//! From the probes of a search to the report: the path MTU, whether the limit is healthy,
//! signalled or a black hole, the link that limits it and why (encapsulation overhead
//! included), what to configure, and what passes but costs (outer fragmentation, fragmented
//! replies, bogus ICMP).

use std::net::IpAddr;
use std::time::Duration;

use super::links::{self, LinkLimit};
use super::outcome::ProbeOutcome;
use super::report::{
    CacheReport, Limit, MaxPayload, MtuReport, ProbeRecord, Recommendation, SearchReport, Sender,
    Status, SCHEMA,
};
use super::run::MtuPlan;
use super::search::{Bound, Outcome, Search};
use crate::model::Direction;
use crate::oracle::SnapshotOracle;
use crate::path::{FragmentLayer, Hop, Leg};
use crate::reconstruct::PathOracle;
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
    /// `netns/ifname (dir)` of its last forward sighting.
    pub last_seen: Option<String>,
    /// Vanished: the link it should have crossed next.
    pub vanished_at: Option<LinkLimit>,
    /// Too big: the namespaces owning the ICMP sender, and the link its route uses.
    pub sender_netns: Vec<String>,
    /// The ICMP error's source address is not the sender's own (NAT rewrote it).
    pub sender_rewritten: bool,
    pub signalled_link: Option<LinkLimit>,
}

impl Tried {
    pub fn new(
        seq: u32,
        size: u32,
        outcome: ProbeOutcome,
        rtt: Option<Duration>,
        hops: Vec<Hop>,
        snapshot: &Snapshot,
        oracle: &SnapshotOracle<'_>,
    ) -> Tried {
        let last = hops.iter().rev().find(|h| h.leg == Leg::Forward);
        let last_seen = last.map(|h| format!("{}/{} ({})", h.netns, h.ifname, h.direction));
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
            ProbeOutcome::Passed { .. } => Outcome::Passed,
            ProbeOutcome::TooBig { mtu, .. } => Outcome::Signalled { mtu: *mtu },
            // Refused for another reason: a failure at this size, without a hint.
            ProbeOutcome::Refused { .. } => Outcome::Signalled { mtu: None },
            ProbeOutcome::Vanished => Outcome::Silent {
                fits: self.vanished_at.as_ref().map(|l| l.fits),
            },
        }
    }

    fn record(&self) -> ProbeRecord {
        let detail = match &self.outcome {
            ProbeOutcome::Passed { how } => how.clone(),
            ProbeOutcome::TooBig { sender, mtu } => format!(
                "too big: {sender} advertised next-hop MTU {}",
                mtu.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
            ),
            ProbeOutcome::Refused { sender, what } => format!("ICMP {what} from {sender}"),
            ProbeOutcome::Vanished => match (&self.last_seen, &self.vanished_at) {
                (Some(l), Some(n)) => format!(
                    "vanished after {l}; never crossed {} (MTU {})",
                    n.name(),
                    n.mtu
                ),
                (Some(l), None) => format!("vanished after {l}"),
                (None, _) => "never seen leaving the source".into(),
            },
        };
        ProbeRecord {
            seq: self.seq,
            size: self.size,
            outcome: self.outcome.label().to_string(),
            detail,
            rtt_ms: self.rtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1000.0),
            last_seen: self.last_seen.clone(),
        }
    }
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
    pub cache: CacheReport,
    /// The search converged (not interrupted, not out of probes or time).
    pub complete: bool,
    pub elapsed: Duration,
}

pub fn analyze(i: Inputs<'_>) -> MtuReport {
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
        .filter(|t| matches!(t.outcome, ProbeOutcome::Passed { .. }))
        .max_by_key(|t| t.size);
    let topology = i.snapshot;

    let mut warnings = Vec::new();
    let limit = match (status, bounding) {
        (Status::BlackHole, Some(t)) => t.vanished_at.as_ref().map(|l| black_hole_limit(t, l)),
        (Status::Signalled, Some(t)) => signalled_limit(t),
        (Status::Healthy, _) => largest_pass.and_then(|t| {
            let crossed = t.crossed();
            let l = links::narrowest(topology, &crossed)?;
            Some(healthy_limit(
                topology,
                &l,
                &crossed,
                i.source_mtu,
                &i.cfg.from,
            ))
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
            let sizes = f
                .sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" + ");
            let mtu = link_mtu(topology, &h.netns, &h.ifname)
                .map(|m| m.to_string())
                .unwrap_or_else(|| "?".into());
            let what = h
                .outer
                .first()
                .map(|o| o.tunnel.as_str())
                .unwrap_or("outer");
            warnings.push(match (h.leg, f.layer) {
                (Leg::Forward, FragmentLayer::Outer) => format!(
                    "probes of {} bytes pass, but {}/{} (MTU {mtu}) fragments their {what} packets ({sizes} bytes): every full-size packet costs {} on the underlay and a reassembly at the far end, and is lost whole if one fragment is",
                    t.size, h.netns, h.ifname, f.sizes.len()
                ),
                (Leg::Return, FragmentLayer::Outer) => format!(
                    "the replies' {what} packets are fragmented too, leaving {}/{} (MTU {mtu}, {sizes} bytes)",
                    h.netns, h.ifname
                ),
                (Leg::Return, _) => format!(
                    "replies of {} bytes were fragmented leaving {}/{} (MTU {mtu}, {sizes} bytes): the return path carries less than the forward path",
                    t.size, h.netns, h.ifname
                ),
                (Leg::Forward, _) => format!(
                    "probes of {} bytes were fragmented leaving {}/{} (MTU {mtu}, {sizes} bytes) despite DF",
                    t.size, h.netns, h.ifname
                ),
            });
        }
    }
    for t in i.tried {
        if let ProbeOutcome::TooBig { sender, mtu } = &t.outcome {
            if mtu.is_none_or(|m| m == 0 || m >= t.size) {
                warnings.push(format!(
                    "{sender} refused a {}-byte probe with a bogus next-hop MTU {}: dye ignored the value and searched",
                    t.size,
                    mtu.map(|m| m.to_string()).unwrap_or_else(|| "(none)".into())
                ));
            }
        }
    }
    if status == Status::Signalled {
        if let Some(t) = i.tried.iter().find(|t| t.outcome == ProbeOutcome::Vanished) {
            warnings.push(format!(
                "a {}-byte probe vanished without ICMP ({}) before others were refused with ICMP",
                t.size,
                t.last_seen.as_deref().unwrap_or("never seen")
            ));
        }
    }
    if status == Status::Healthy && path_mtu.is_some() && path_mtu == i.source_mtu {
        warnings.push(format!(
            "{} cannot send more than its own interface's MTU {}: whether the rest of the path carries more is not measured",
            i.cfg.from,
            i.source_mtu.unwrap_or(0)
        ));
    }

    let outer_fragmenting = limit
        .as_ref()
        .and_then(|l| l.encapsulation.as_ref())
        .and_then(|e| {
            // Healthy but fragmenting: the underlay under the tunnel is what is too small.
            let t = largest_pass?;
            t.hops.iter().find(|h| {
                h.leg == Leg::Forward
                    && h.fragments
                        .as_ref()
                        .map(|f| f.layer == FragmentLayer::Outer)
                        .unwrap_or(false)
            })?;
            links::tunnel_underlay(topology, e)
        });
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
    let to = crate::model::Endpoint {
        addr: i.cfg.to,
        port: i.cfg.port,
    }
    .to_string();
    MtuReport {
        schema: SCHEMA.to_string(),
        from: i.cfg.from.clone(),
        src: i.src.to_string(),
        to,
        proto: i.cfg.proto.as_str().to_string(),
        path_mtu,
        status,
        limit,
        max_payload,
        recommendation,
        warnings,
        pmtu_cache: i.cache,
        search: SearchReport {
            min: i.min,
            max: i.max,
            source_mtu: i.source_mtu,
            probes_sent: i.tried.len() as u32,
            probe_wait_ms: i.wait.as_millis() as u64,
            elapsed_ms: i.elapsed.as_millis() as u64,
            capture_points: i.snapshot.points.len(),
        },
        probes: i.tried.iter().map(Tried::record).collect(),
    }
}

fn link_mtu(topology: &Snapshot, ns: &str, ifname: &str) -> Option<u32> {
    topology.link(ns, ifname).map(|l| l.mtu)
}

/// The limit at link `l`, explained; the caller adds how it showed itself.
fn limit_at(l: &LinkLimit, explanation: String) -> Limit {
    Limit {
        link: l.name(),
        netns: l.netns.clone(),
        ifname: l.ifname.clone(),
        mtu: l.mtu,
        encapsulation: l.encapsulation.clone(),
        signalled_by: None,
        vanished_after: None,
        also_at_this_mtu: Vec::new(),
        explanation,
    }
}

fn black_hole_limit(t: &Tried, l: &LinkLimit) -> Limit {
    let after = t.last_seen.clone().unwrap_or_else(|| "the source".into());
    let explanation = match &l.encapsulation {
        Some(e) => format!(
            "{} MTU {} needs {} on the underlay ({} + {} bytes of {} overhead); {} has {}. Probes above {} were last seen at {after} and never left through {}, and nobody sent ICMP: a black hole",
            e.tunnel, e.tunnel_mtu, e.needs_underlay_mtu, e.tunnel_mtu, e.overhead, e.kind,
            l.name(), l.mtu, l.fits, l.name()
        ),
        None => format!(
            "probes above {} were last seen at {after} and never crossed {} (MTU {}); nobody sent ICMP: a black hole",
            l.fits,
            l.name(),
            l.mtu
        ),
    };
    Limit {
        vanished_after: t.last_seen.clone(),
        ..limit_at(l, explanation)
    }
}

fn signalled_limit(t: &Tried) -> Option<Limit> {
    let (sender, advertised, what) = match &t.outcome {
        ProbeOutcome::TooBig { sender, mtu } => (
            *sender,
            *mtu,
            if sender.is_ipv4() {
                "fragmentation needed"
            } else {
                "packet too big"
            },
        ),
        ProbeOutcome::Refused { sender, what } => (*sender, None, what.as_str()),
        _ => return None,
    };
    let who = if t.sender_netns.is_empty() {
        sender.to_string()
    } else if t.sender_rewritten {
        format!(
            "{} (its ICMP error reaches the source from {sender}: NAT rewrote it on the way back)",
            t.sender_netns.join(", ")
        )
    } else {
        format!("{sender} ({})", t.sender_netns.join(", "))
    };
    let signalled_by = Some(Sender {
        address: sender.to_string(),
        netns: t.sender_netns.clone(),
        nat_rewritten: t.sender_rewritten,
        advertised_mtu: advertised,
    });
    Some(match &t.signalled_link {
        Some(l) => {
            let tunnel_note = match &l.encapsulation {
                Some(e) if e.tunnel == l.name() => format!(
                    ", a {} device that leaves {} bytes for its outer headers",
                    e.kind, e.overhead
                ),
                Some(e) => format!(
                    ", the underlay of {} ({} + {} bytes of {} overhead)",
                    e.tunnel, e.tunnel_mtu, e.overhead, e.kind
                ),
                None => String::new(),
            };
            let explanation = format!(
                "{who} refused a {}-byte probe with ICMP {what}{}: it forwards through {} (MTU {}){tunnel_note}",
                t.size,
                advertised.map(|m| format!(" (next-hop MTU {m})")).unwrap_or_default(),
                l.name(),
                l.mtu,
            );
            Limit {
                signalled_by,
                ..limit_at(l, explanation)
            }
        }
        None => Limit {
            link: format!("beyond {}", t.last_seen.as_deref().unwrap_or("the source")),
            netns: String::new(),
            ifname: String::new(),
            mtu: advertised.unwrap_or(0),
            encapsulation: None,
            signalled_by,
            vanished_after: None,
            also_at_this_mtu: Vec::new(),
            explanation: format!(
                "{who} refused a {}-byte probe with ICMP {what}{}; the sender is outside dye's view",
                t.size,
                advertised.map(|m| format!(" (next-hop MTU {m})")).unwrap_or_default()
            ),
        },
    })
}

fn healthy_limit(
    topology: &Snapshot,
    l: &LinkLimit,
    crossed: &[(String, String)],
    source_mtu: Option<u32>,
    from: &str,
) -> Limit {
    let explanation = match &l.encapsulation {
        Some(e) => {
            match links::tunnel_underlay(topology, e) {
                Some(u) if u.mtu >= e.needs_underlay_mtu => format!(
                    "{} ({}) MTU {} needs {} on the underlay ({} bytes of {} overhead); {} has {}: the overlay MTU is what limits the path, and it fits",
                    e.tunnel, e.kind, e.tunnel_mtu, e.needs_underlay_mtu, e.overhead, e.kind, u.name(), u.mtu
                ),
                Some(u) => format!(
                    "{} ({}) MTU {} needs {} on the underlay ({} bytes of {} overhead), but {} has {}: full-size packets are fragmented on the underlay",
                    e.tunnel, e.kind, e.tunnel_mtu, e.needs_underlay_mtu, e.overhead, e.kind, u.name(), u.mtu
                ),
                None => format!("{} ({}) MTU {} is the narrowest link on the path", e.tunnel, e.kind, e.tunnel_mtu),
            }
        }
        None if Some(l.mtu) == source_mtu => format!(
            "{} MTU {} is the narrowest link on the path: {from}'s own interface",
            l.name(),
            l.mtu
        ),
        None => format!(
            "{} MTU {} is the narrowest link on the path",
            l.name(),
            l.mtu
        ),
    };
    Limit {
        also_at_this_mtu: links::same_mtu(topology, crossed, l),
        ..limit_at(l, explanation)
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
            applies_to: "overlay".into(),
            reason: format!(
                "set {} and the pods' interfaces to {} so nothing is fragmented on {} (MTU {}), or raise the underlay MTU to {}",
                e.tunnel, u.fits, u.name(), u.mtu, e.needs_underlay_mtu
            ),
        });
    }
    let limit = limit?;
    Some(match (status, &limit.encapsulation) {
        (Status::BlackHole, Some(e)) => Recommendation {
            mtu: pmtu.min(limit.mtu.saturating_sub(e.overhead)),
            applies_to: "overlay".into(),
            reason: format!(
                "set {} and the pods' interfaces to {} (what {} carries after {} bytes of {} overhead), or raise {}'s MTU to {}",
                e.tunnel,
                limit.mtu.saturating_sub(e.overhead),
                limit.link,
                e.overhead,
                e.kind,
                limit.link,
                e.needs_underlay_mtu
            ),
        },
        (Status::BlackHole, None) => Recommendation {
            mtu: pmtu,
            applies_to: "pod".into(),
            reason: format!(
                "nothing tells senders that {} carries only {}: set the pods' MTU to {pmtu}, or let the router there send ICMP",
                limit.link, limit.mtu
            ),
        },
        (Status::Signalled, _) => Recommendation {
            mtu: pmtu,
            applies_to: "pod".into(),
            reason: format!(
                "path MTU discovery works here as long as the ICMP errors get through; if they may be filtered, set the pods' MTU to {pmtu} or clamp TCP MSS to {}",
                pmtu.saturating_sub(ip_header + 20)
            ),
        },
        (_, Some(e)) => Recommendation {
            mtu: e.tunnel_mtu,
            applies_to: "overlay".into(),
            reason: format!("{} MTU {} is right for its underlay: keep it", e.tunnel, e.tunnel_mtu),
        },
        (_, None) => Recommendation {
            mtu: pmtu,
            applies_to: "pod".into(),
            reason: format!("{} MTU {} is the path's limit: keep the pods' MTU at {pmtu}", limit.link, limit.mtu),
        },
    })
}
