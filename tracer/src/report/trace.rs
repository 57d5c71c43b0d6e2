//! The `dye.trace/v1` report, projected from the core's typed trace: the schema's words, and
//! every sentence a person reads — what changed at a hop, why a probe vanished, what to do.

use dye_core::kernel_drop::KernelCause;
use dye_core::path::{
    self, DropReason, Expectation, Fragments as CoreFragments, Hop as CoreHop, HopEvent as Event,
    Leg, Next, Outcome, Outer, Packet, Rewrite, Subject,
};
use dye_core::seam::{KernelDrop, RuleEvent};
use dye_core::snapshot::{LegacyTables, OuterDf, Snapshot};
use dye_core::trace::Trace;

use super::trace_v1::{
    DroppedBy, EventType, Fragments, Hop, HopEvent, HopRule, KernelDropView, OuterView, PacketView,
    PointReport, ProbeSpec, ProbeSummary, ScopeReport, TraceReport, Verdict, SCHEMA,
};

/// The report of a trace, with the snapshot its capture points come from.
pub fn project(trace: &Trace, snapshot: &Snapshot) -> TraceReport {
    let plan = &trace.plan;
    TraceReport {
        schema: SCHEMA.to_string(),
        probe: ProbeSpec {
            from: plan.from.clone(),
            src: trace.src.to_string(),
            to: plan.target(),
            to_name: plan.to_name.clone(),
            proto: plan.proto.as_str().to_string(),
            size: plan.size,
            df: plan.df,
            trace_id: format!("{:08x}", plan.ids.trace_id),
            count: plan.count,
        },
        verdict: verdict(&trace.verdict, snapshot),
        hops: trace.hops.iter().map(hop).collect(),
        probes: trace
            .probes
            .iter()
            .map(|p| ProbeSummary {
                seq: p.seq,
                verdict: p.verdict,
                path: p
                    .path
                    .iter()
                    .map(|n| format!("{}:{}", n.at, n.direction))
                    .collect(),
                rtt_ns: p.rtt_ns,
            })
            .collect(),
        capture: trace
            .capture
            .iter()
            .filter_map(|c| {
                let p = snapshot.point(c.point)?;
                let listed = p.on_path || c.captured > 0 || c.sightings > 0 || c.lost.is_some();
                listed.then_some(())?;
                Some(PointReport {
                    name: p.name(),
                    kind: p.class,
                    mtu: p.mtu,
                    sightings: c.sightings,
                    captured: c.captured,
                    kernel_dropped: c.kernel_dropped,
                    lost: c.lost.clone(),
                })
            })
            .collect(),
        elapsed_ms: trace.elapsed.as_millis() as u64,
        pmtu_cache: trace
            .pmtu
            .as_ref()
            .map(|r| super::mtu::cache_report(plan.to, &snapshot.source, r)),
        scope: snapshot.scope.as_ref().map(|s| ScopeReport {
            by: s.by,
            namespaces: snapshot.namespaces.iter().map(|n| n.name.clone()).collect(),
            sockets: s.sockets,
            capture_sockets: s.capture_sockets,
            interfaces: snapshot.points.len(),
            path_interfaces: snapshot.points.iter().filter(|p| p.on_path).count(),
        }),
        agents: None,
    }
}

/// `netns/ifname (dir)`, as the report names a place the probe should have appeared.
fn place(n: &Next) -> String {
    format!("{} ({})", n.at, n.direction)
}

fn packet(p: &Packet) -> PacketView {
    PacketView {
        src: p.src,
        dst: p.dst,
        proto: path::proto_name(p.proto),
        sport: p.sport,
        dport: p.dport,
        ttl: p.ttl,
        len: p.len,
        ip_id: p.ip_id,
        df: p.df,
        what: p.transport.to_string(),
    }
}

fn outer(o: &Outer) -> OuterView {
    OuterView {
        kind: o.tunnel.clone(),
        vni: o.vni,
        src: o.src,
        dst: o.dst,
        sport: o.sport,
        dport: o.dport,
        ttl: o.ttl,
        df: o.df,
        len: o.len,
    }
}

fn fragments(f: &CoreFragments) -> Fragments {
    Fragments {
        count: f.sizes.len(),
        sizes: f.sizes.clone(),
        layer: f.layer.as_str().to_string(),
    }
}

fn hop(h: &CoreHop) -> Hop {
    Hop {
        index: h.index,
        netns: h.netns.clone(),
        ifname: h.ifname.clone(),
        kind: h.kind,
        node: h.node.clone(),
        direction: h.direction,
        t_ns: h.t_ns,
        leg: h.leg,
        seq: h.seq,
        packet: packet(&h.packet),
        outer: h.outer.iter().map(outer).collect(),
        fragments: h.fragments.as_ref().map(fragments),
        events: h.events.iter().map(|e| event(e, h.leg)).collect(),
        conntrack: h.conntrack.clone(),
        rules: h.rules.iter().map(hop_rule).collect(),
    }
}

fn hop_rule(r: &RuleEvent) -> HopRule {
    let verdict = r.verdict.as_deref().unwrap_or("continue");
    let detail = match r.handle {
        Some(h) if !r.policy => format!(
            "nft {} {} {} #{h}: `{}` → {verdict}",
            r.family, r.table, r.chain, r.text
        ),
        _ => format!("nft {} {} {}: policy {verdict}", r.family, r.table, r.chain),
    };
    HopRule {
        family: r.family.clone(),
        table: r.table.clone(),
        chain: r.chain.clone(),
        handle: r.handle,
        rule: r.text.clone(),
        verdict: r.verdict.clone(),
        detail,
    }
}

fn sizes(f: &CoreFragments) -> String {
    f.sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// One event in the schema's words, with its sentence.
fn event(e: &Event, leg: Leg) -> HopEvent {
    let ev = |kind, from: Option<String>, to: Option<String>, detail: String| HopEvent {
        kind,
        from,
        to,
        detail,
    };
    match e {
        Event::Nat {
            rewrite,
            netns,
            from,
            to,
        } => {
            let (kind, detail) = match (rewrite, leg) {
                (Rewrite::Source, Leg::Forward) => (
                    EventType::Snat,
                    format!("SNAT in {netns}: source {from} → {to}"),
                ),
                (Rewrite::Source, Leg::Return) => (
                    EventType::Snat,
                    format!("un-DNAT in {netns}: reply source {from} → {to}"),
                ),
                (Rewrite::Destination, Leg::Forward) => (
                    EventType::Dnat,
                    format!("DNAT in {netns}: destination {from} → {to}"),
                ),
                (Rewrite::Destination, Leg::Return) => (
                    EventType::Dnat,
                    format!("un-SNAT in {netns}: reply destination {from} → {to}"),
                ),
            };
            ev(kind, Some(from.to_string()), Some(to.to_string()), detail)
        }
        Event::Encap { netns, outer: o } => {
            let vni = o.vni.map(|v| format!(" vni {v}")).unwrap_or_default();
            let port = o
                .dport
                .map(|p| format!(" udp dport {p}"))
                .unwrap_or_default();
            ev(
                EventType::Encap,
                None,
                Some(format!("{} → {}", o.src, o.dst)),
                format!(
                    "{} encapsulation in {netns}{vni}{port}: outer {} → {}, {} bytes",
                    o.tunnel.to_uppercase(),
                    o.src,
                    o.dst,
                    o.len
                ),
            )
        }
        Event::Decap { netns, outer: o } => {
            let vni = o.vni.map(|v| format!(" vni {v}")).unwrap_or_default();
            ev(
                EventType::Decap,
                Some(format!("{} → {}", o.src, o.dst)),
                None,
                format!("{} decapsulation in {netns}{vni}", o.tunnel.to_uppercase()),
            )
        }
        Event::Ttl { netns, from, to } => ev(
            EventType::Ttl,
            Some(from.to_string()),
            Some(to.to_string()),
            format!("routed by {netns}: TTL {from} → {to}"),
        ),
        // A routing step on the underlay: a `ttl` event whose TTLs are the outer header's.
        Event::OuterTtl { netns, from, to } => ev(
            EventType::Ttl,
            Some(from.to_string()),
            Some(to.to_string()),
            format!("routed by {netns} on the underlay: outer TTL {from} → {to}"),
        ),
        Event::Fragment {
            fragments: f,
            ifname,
            mtu,
        } => ev(
            EventType::Fragment,
            None,
            Some(format!("{} fragments", f.sizes.len())),
            format!(
                "{} packet split into {} fragments ({} bytes) leaving through {ifname} (MTU {mtu})",
                f.layer.as_str(),
                f.sizes.len(),
                sizes(f)
            ),
        ),
        Event::Reassemble { netns, count } => ev(
            EventType::Reassemble,
            Some(format!("{count} fragments")),
            None,
            format!("reassembled from {count} fragments in {netns}"),
        ),
        Event::Icmp {
            sender,
            to,
            ty,
            code,
            v6,
            mtu,
            ..
        } => {
            let mtu = mtu
                .map(|m| format!(" (next-hop MTU {m})"))
                .unwrap_or_default();
            ev(
                EventType::Icmp,
                Some(sender.to_string()),
                Some(to.to_string()),
                format!(
                    "ICMP {}{mtu} from {sender} about the probe",
                    path::icmp_name(*v6, *ty, *code)
                ),
            )
        }
        Event::Drop { expected_next } => ev(
            EventType::Drop,
            None,
            expected_next.as_ref().map(place),
            format!(
                "last seen here{}",
                expected_next
                    .as_ref()
                    .map(|n| format!("; expected next at {}", place(n)))
                    .unwrap_or_default()
            ),
        ),
    }
}

fn verdict(v: &path::Verdict, snapshot: &Snapshot) -> Verdict {
    let mut detail = outcome_detail(&v.outcome, v.dropped_by.as_ref(), v.kernel_drop.as_ref());
    if let Some(legacy) = untraced_legacy(v, snapshot) {
        detail.push_str(&format!(
            "; {} has iptables-legacy tables ({}), whose rules nftables tracing cannot see: check `iptables-legacy-save` there",
            legacy.netns,
            legacy.tables.join(", ")
        ));
    }
    if let Some(p) = &v.partial {
        detail = format!(
            "{} of {} probes got through; probe {} {}: {detail}",
            p.ok,
            p.total,
            p.seq,
            v.kind().as_str()
        );
    }
    Verdict {
        kind: v.kind(),
        detail,
        last_seen: v.last_seen,
        expected_next: v.expected_next().map(place),
        dropped_by: v.dropped_by.as_ref().map(|r| DroppedBy {
            netns: r.netns.clone(),
            family: r.family.clone(),
            table: r.table.clone(),
            chain: r.chain.clone(),
            handle: r.handle,
            rule: r.text.clone(),
        }),
        kernel_drop: v.kernel_drop.as_ref().map(|k| KernelDropView {
            seq: k.seq,
            netns: k.netns.clone(),
            netns_inode: k.netns_inode,
            ifname: k.ifname.clone(),
            reason: k.reason.clone(),
            reason_code: k.reason_code,
            cause: k.cause(),
            function: k.function.clone(),
        }),
    }
}

/// A probe dropped inside a namespace with iptables-legacy tables, with no traced rule: those
/// tables are the suspects dye cannot see into.
fn untraced_legacy<'s>(v: &path::Verdict, snapshot: &'s Snapshot) -> Option<&'s LegacyTables> {
    if v.dropped_by.is_some() {
        return None;
    }
    // The kernel named another cause than netfilter: the legacy tables are not the suspects.
    if v.kernel_drop
        .as_ref()
        .is_some_and(|k| k.cause() != KernelCause::Netfilter)
    {
        return None;
    }
    let netns = v.dropped_inside()?;
    snapshot.legacy_iptables.iter().find(|l| l.netns == netns)
}

/// The rule that dropped the probe, in words: `dropped in node-2 by nft rule `…` (table ip
/// filter, chain FORWARD, handle 7)`, or the chain's policy.
fn rule_words(r: &RuleEvent) -> String {
    match r.handle {
        Some(h) if !r.policy => format!(
            "dropped in {} by nft rule `{}` (table {} {}, chain {}, handle {h})",
            r.netns, r.text, r.family, r.table, r.chain
        ),
        _ => format!(
            "dropped in {} by the policy drop of chain {} (table {} {})",
            r.netns, r.chain, r.family, r.table
        ),
    }
}

/// The kernel's drop in words a person acts on: `dropped by reverse-path filtering
/// (IP_RPFILTER) on node-2 flannel.1`.
fn kernel_words(k: &KernelDrop) -> String {
    let ns = k
        .netns
        .clone()
        .unwrap_or_else(|| format!("net:[{}]", k.netns_inode));
    let on = k
        .ifname
        .as_ref()
        .map(|i| format!(" on {ns} {i}"))
        .unwrap_or_else(|| format!(" in {ns}"));
    let reason = k
        .reason
        .clone()
        .unwrap_or_else(|| format!("drop reason {}", k.reason_code));
    match k.cause() {
        KernelCause::Netfilter => format!(
            "dropped by netfilter ({reason}){on}, by a rule nftables tracing did not see"
        ),
        KernelCause::ReversePath => format!(
            "dropped by reverse-path filtering ({reason}){on}: the route back to the source does not leave by this interface (check rp_filter and the routes there)"
        ),
        KernelCause::NoRoute => format!("no route ({reason}){on}"),
        KernelCause::Neighbour => format!(
            "neighbour resolution failed ({reason}){on}: nothing answered ARP/ND for the next hop"
        ),
        KernelCause::TtlExceeded => format!("TTL exceeded ({reason}){on}"),
        KernelCause::TooBig => format!("too big for the next link ({reason}){on}"),
        KernelCause::NoSocket => format!("no socket took it ({reason}){on}"),
        KernelCause::Other => format!(
            "the kernel dropped it{on}: {reason}{}",
            k.function
                .as_ref()
                .map(|f| format!(" in {f}"))
                .unwrap_or_default()
        ),
    }
}

fn outcome_detail(
    o: &Outcome,
    dropped_by: Option<&RuleEvent>,
    kernel: Option<&KernelDrop>,
) -> String {
    let with_kernel = |detail: String| match kernel {
        Some(k) => format!("{detail}; {}", kernel_words(k)),
        None => detail,
    };
    match o {
        Outcome::Delivered { to, netns } => format!("reached {to} in {netns} (no reply seen)"),
        Outcome::Answered {
            answer,
            seen_as,
            sent_by,
        } => {
            let via = sent_by
                .map(|s| format!(" (sent by {s})"))
                .unwrap_or_default();
            format!("{answer} from {seen_as}{via}")
        }
        Outcome::IcmpError {
            sender,
            ty,
            code,
            v6,
            mtu,
            first_seen_at,
            ..
        } => {
            let mtu = mtu
                .map(|m| format!(", next-hop MTU {m}"))
                .unwrap_or_default();
            with_kernel(format!(
                "{sender} sent ICMP {}{mtu} (first seen at {first_seen_at})",
                path::icmp_name(*v6, *ty, *code)
            ))
        }
        Outcome::Timeout { sent: false } => "no probe was sent".into(),
        Outcome::Timeout { sent: true } => with_kernel(
            "the probe was not seen at any capture point, not even leaving the source".into(),
        ),
        Outcome::Dropped {
            subject,
            leg,
            last,
            expectation,
        } => {
            let what = match subject {
                Subject::Probe => "the probe",
                Subject::Reply => "the reply",
            };
            let Some(last) = last else {
                return with_kernel(format!("{what} vanished"));
            };
            let leg_word = if *leg == Leg::Return {
                " on its way back"
            } else {
                ""
            };
            let mut detail = format!("{what} was last seen{leg_word} at {}", place(last));
            if let Some(e) = expectation {
                if let Some(next) = &e.next {
                    detail.push_str(&format!(" and never appeared at {}", place(next)));
                }
                // The kernel's trace names the rule, or its drop reason the cause: either
                // replaces the list of places to look. A size verdict from the snapshot carries
                // the numbers (packet, link MTU, what fits), and a reason the kernel does not
                // name (NOT_SPECIFIED) adds to what dye worked out itself: the kernel's words
                // join dye's explanation rather than replace it.
                let why = match (dropped_by, kernel) {
                    (Some(r), _) => rule_words(r),
                    (None, Some(k))
                        if matches!(k.cause(), KernelCause::TooBig | KernelCause::Other)
                            && !e.reason.is_vague() =>
                    {
                        format!("{}; {}", explanation(e), kernel_words(k))
                    }
                    (None, Some(k)) => kernel_words(k),
                    (None, None) => explanation(e),
                };
                if !why.is_empty() {
                    detail.push_str(": ");
                    detail.push_str(&why);
                }
            } else if let Some(k) = kernel {
                detail.push_str(": ");
                detail.push_str(&kernel_words(k));
            }
            detail
        }
    }
}

/// Why a probe did not appear where it should have, and what to look at.
fn explanation(e: &Expectation) -> String {
    match &e.reason {
        DropReason::Unknown => String::new(),
        DropReason::NoRouteLookup { netns, dst } => {
            format!("dye did not look up {netns}'s route to {dst}")
        }
        DropReason::NoRoute { netns, dst, error } => {
            format!("{netns} has no route to {dst} ({error})")
        }
        DropReason::RouteDiscards { netns, dst, route } => format!(
            "{netns} routes {dst} as {} (`{route}`): the kernel discards it",
            route.kind.as_str()
        ),
        DropReason::LocalUnclaimed { netns, dst } => format!(
            "{dst} is local to {netns} but nothing took the probe: check INPUT rules and the listening socket"
        ),
        DropReason::RouteWithoutDevice { netns, route } => {
            format!("{netns}: route `{route}` has no device")
        }
        DropReason::DroppedInside {
            netns,
            in_if,
            dev,
            route,
        } => format!(
            "{netns} has a route (`{route}`) but the probe never left through {dev}: it was dropped inside {netns} between {in_if} and {dev} — look at its firewall (iptables/nft FORWARD and INPUT, policies, NetworkPolicy chains), rp_filter and conntrack"
        ),
        DropReason::EncapTooBig {
            tunnel,
            inner,
            total,
            under,
            under_mtu,
            df,
        } => {
            let df = df.unwrap_or(OuterDf::Unset);
            let overhead = total - inner;
            format!(
                "{inner} + {overhead} bytes of {tunnel} overhead = {total} bytes, over {under}'s MTU {under_mtu}, and the outer header has DF {}: {} drops it (a black hole for the sender unless it gets ICMP). Lower the overlay MTU to {} or raise the underlay MTU to {total}",
                df.as_str(),
                if df == OuterDf::Set { "the kernel" } else { "something" },
                under_mtu.saturating_sub(overhead),
            )
        }
        DropReason::EncapNeverLeft { under } => {
            format!("the encapsulated packet never left through {under}")
        }
        DropReason::VethPeer { peer, peer_mtu } => format!(
            "a veth pair delivers what enters one end to the other: {peer} is down, or its namespace discarded the frame (MTU {} on its side?)",
            peer_mtu
                .map(|m| m.to_string())
                .unwrap_or_else(|| "?".into())
        ),
        DropReason::BridgePort { bridge } => format!(
            "the frame left through a port of bridge {}",
            bridge.ifname
        ),
        DropReason::BeyondSight { netns, ifname } => {
            format!("it left {netns} through {ifname} and dye cannot see beyond it")
        }
    }
}

#[cfg(test)]
mod tests {
    //! The report's words, from real recordings (samples/recordings, lab id `fx`): the JSON
    //! shape scripts depend on and the sentences the README shows.

    use dye_core::recording::{Recording, Replayer};
    use dye_core::trace::{run_trace, TracePlan};

    use super::*;

    fn replay(name: &str) -> TraceReport {
        let path = format!(
            "{}/../samples/recordings/{name}.dye",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        let rec: Recording<TracePlan> = serde_json::from_str(&text).expect("parses");
        let mut snapshot = rec.snapshot;
        let mut net = Replayer::new(rec.journal);
        let run = run_trace(&rec.plan, &mut snapshot, &mut net, &mut |_| {}).expect("replays");
        project(&run.trace, &snapshot)
    }

    #[test]
    fn the_json_keeps_the_v1_shape_and_words() {
        let r = replay("trace-icmp-cross-node");
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["schema"], "dye.trace/v1");
        assert_eq!(v["probe"]["proto"], "icmp");
        assert_eq!(v["probe"]["to"], "10.244.2.2");
        assert_eq!(v["hops"][0]["direction"], "out");
        assert_eq!(v["hops"][0]["kind"], "veth");
        assert_eq!(v["hops"][0]["leg"], "forward");
        assert_eq!(v["hops"][0]["packet"]["src"], "10.244.1.2");
        assert_eq!(v["hops"][0]["packet"]["proto"], "icmp");
        assert_eq!(v["hops"][0]["packet"]["what"], "echo request");
        assert_eq!(v["hops"][0]["fragments"], serde_json::Value::Null);
        assert_eq!(v["verdict"]["kind"], "answered");
        assert_eq!(v["verdict"]["detail"], "echo reply from 10.244.2.2");
        assert_eq!(v["verdict"]["expected_next"], serde_json::Value::Null);
        assert_eq!(v["probes"][0]["path"][0], "dye-fx-pod-a/eth0:out");
        assert_eq!(v["pmtu_cache"], serde_json::Value::Null);
        assert!(v["trace_id"].is_null() && v["probe"]["trace_id"].as_str().unwrap().len() == 8);
    }

    #[test]
    fn encapsulation_ttl_and_decapsulation_read_as_before() {
        let r = replay("trace-icmp-cross-node");
        let details: Vec<&str> = r
            .hops
            .iter()
            .flat_map(|h| h.events.iter().map(|e| e.detail.as_str()))
            .collect();
        assert_eq!(details[0], "routed by dye-fx-node-1: TTL 64 → 63");
        assert_eq!(
            details[1],
            "VXLAN encapsulation in dye-fx-node-1 vni 1 udp dport 8472: outer 192.168.50.11 → 192.168.50.12, 114 bytes"
        );
        assert_eq!(details[2], "VXLAN decapsulation in dye-fx-node-2 vni 1");
        let encap = r
            .hops
            .iter()
            .flat_map(|h| &h.events)
            .find(|e| e.kind == EventType::Encap);
        assert_eq!(
            encap.and_then(|e| e.to.as_deref()),
            Some("192.168.50.11 → 192.168.50.12")
        );
    }

    #[test]
    fn nat_is_named_forward_and_undone_on_the_way_back() {
        let r = replay("trace-office-vip");
        let fw = &r.hops[2];
        assert!(fw.events[0]
            .detail
            .starts_with("SNAT in dye-fx-fw: source 10.244.2.50:"));
        assert_eq!(
            fw.events[1].detail,
            "DNAT in dye-fx-fw: destination 203.0.113.80:80 → 192.168.50.11:30080"
        );
        let back: Vec<&str> = r
            .hops
            .iter()
            .filter(|h| h.leg == Leg::Return)
            .flat_map(|h| h.events.iter().map(|e| e.detail.as_str()))
            .filter(|d| d.starts_with("un-"))
            .collect();
        assert!(
            back.iter().any(|d| d.starts_with(
                "un-DNAT in dye-fx-fw: reply source 192.168.50.11:30080 → 203.0.113.80:80"
            )),
            "{back:?}"
        );
        assert!(
            back.iter()
                .any(|d| d.starts_with("un-SNAT in dye-fx-fw: reply destination 100.64.0.1:")),
            "{back:?}"
        );
    }

    #[test]
    fn a_drop_names_the_rule_the_kernel_traced() {
        let r = replay("trace-drop-pod");
        let next = r.verdict.expected_next.as_deref().expect("expected next");
        assert!(
            next.starts_with("dye-fx-node-2/veth") && next.ends_with(" (out)"),
            "{next}"
        );
        let by = r.verdict.dropped_by.as_ref().expect("a traced rule");
        assert_eq!(
            (
                by.netns.as_str(),
                by.family.as_str(),
                by.table.as_str(),
                by.chain.as_str()
            ),
            ("dye-fx-node-2", "ip", "filter", "FORWARD")
        );
        let handle = by.handle.expect("a rule, not a policy");
        assert!(
            by.rule.starts_with("ip daddr 10.244.2.2 ") && by.rule.ends_with(" drop"),
            "{}",
            by.rule
        );
        assert_eq!(
            r.verdict.detail,
            format!("the probe was last seen at dye-fx-node-2/flannel.1 (in) and never appeared at {next}: dropped in dye-fx-node-2 by nft rule `{}` (table ip filter, chain FORWARD, handle {handle})", by.rule)
        );
        let drop = r
            .hops
            .iter()
            .flat_map(|h| &h.events)
            .find(|e| e.kind == EventType::Drop)
            .expect("a drop event");
        assert_eq!(
            drop.detail,
            format!("last seen here; expected next at {next}")
        );
    }

    #[test]
    fn a_policy_drop_names_the_chain() {
        let r = replay("trace-no-route");
        assert_eq!(
            r.verdict.detail,
            "the probe was last seen at dye-fx-fw/eth0 (in) and never appeared at dye-fx-fw/eth1 (out): dropped in dye-fx-fw by the policy drop of chain FORWARD (table ip filter)"
        );
        let by = r.verdict.dropped_by.expect("traced");
        assert_eq!((by.handle, by.rule.as_str()), (None, "policy drop"));
    }

    #[test]
    fn without_a_traced_rule_the_drop_says_where_to_look() {
        // The black hole is dropped by the kernel's MTU check, not by a rule: no rule, the
        // explanation of the overhead stays.
        let r = replay("trace-black-hole");
        assert!(r.verdict.dropped_by.is_none());
        assert!(
            r.verdict.detail.contains("bytes of vxlan overhead"),
            "{}",
            r.verdict.detail
        );
        let v = serde_json::to_value(&r.verdict).expect("json");
        assert!(v["dropped_by"].is_null());
    }

    #[test]
    fn a_black_hole_explains_the_overhead_and_what_to_configure() {
        let r = replay("trace-black-hole");
        assert_eq!(
            r.verdict.detail,
            "the probe was last seen at dye-fx-node-1/flannel.1 (out) and never appeared at dye-fx-node-1/eth0 (out): 1400 + 50 bytes of vxlan overhead = 1450 bytes, over eth0's MTU 1400, and the outer header has DF set: the kernel drops it (a black hole for the sender unless it gets ICMP). Lower the overlay MTU to 1350 or raise the underlay MTU to 1450; too big for the next link (NOT_SPECIFIED) on dye-fx-node-1 eth0"
        );
    }

    #[test]
    fn icmp_errors_delivery_and_timeouts_read_as_before() {
        assert_eq!(
            replay("trace-v6-packet-too-big").verdict.detail,
            "fd00:50::254 sent ICMP packet-too-big, next-hop MTU 1280 (first seen at dye-fx-fw/eth0); too big for the next link (PKT_TOO_BIG) on dye-fx-fw eth1"
        );
        assert_eq!(
            replay("trace-delivered").verdict.detail,
            "reached 10.244.2.2:9999 in dye-fx-pod-c (no reply seen)"
        );
        assert_eq!(
            replay("trace-timeout").verdict.detail,
            "the probe was not seen at any capture point, not even leaving the source"
        );
        let frag = replay("trace-outer-fragments");
        let split = frag
            .hops
            .iter()
            .flat_map(|h| &h.events)
            .find(|e| e.kind == EventType::Fragment)
            .expect("a fragment event");
        assert_eq!(
            split.detail,
            "outer packet split into 2 fragments (1396 + 74 bytes) leaving through eth0 (MTU 1400)"
        );
        assert_eq!(
            frag.hops[4].fragments.as_ref().map(|f| f.layer.as_str()),
            Some("outer")
        );
    }

    #[test]
    fn a_restored_pmtu_cache_is_reported_in_words() {
        let r = replay("trace-v6-packet-too-big");
        let c = r.pmtu_cache.expect("reported");
        assert!(c.restored);
        assert!(c.detail.starts_with("dye's probes changed the source's cached path MTU towards fd00:10::50 from none to 1280; removed the cached route towards fd00:10::50 in dye-fx-pod-a"), "{}", c.detail);
    }
}
