//! The core on real recordings: every fixture in samples/recordings/ was recorded by
//! `scripts/record-fixtures.sh` from a real run on the built-in lab (lab id `fx`), and replays
//! here through the same reconstruction and analysis — without root, without the network.
//! Each test asserts what the logic must conclude from what the kernel really did.

use std::path::PathBuf;

use std::net::IpAddr;

use dye_core::model::{Direction, Endpoint, IcmpKind, LinkClass, PointRef, TunnelKind};
use dye_core::mtu::links::LinkLimit;
use dye_core::mtu::outcome::ProbeOutcome;
use dye_core::mtu::result::{AppliesTo, Found, MtuResult, Sender, Warning, Why};
use dye_core::mtu::{run_mtu, MtuPlan, MtuRun, Status};
use dye_core::path::{
    DropReason, FragmentLayer, Hop, HopEvent, Leg, Outcome, Rewrite, Subject, Transport,
    VerdictKind,
};
use dye_core::recording::{self, Call, Recording, Replayer};
use dye_core::seam::{Event, PmtuRemoval, Wait};
use dye_core::snapshot::{OuterDf, Snapshot};
use dye_core::trace::{run_trace, Trace, TracePlan, TraceRun};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../samples/recordings")
        .join(format!("{name}.dye"))
}

fn load<P: serde::de::DeserializeOwned>(name: &str) -> Recording<P> {
    let text = std::fs::read_to_string(path(name)).expect("fixture readable");
    recording::header(&text).expect("a dye recording");
    serde_json::from_str(&text).expect("fixture parses")
}

fn trace(name: &str) -> (TraceRun, Snapshot) {
    let rec: Recording<TracePlan> = load(name);
    assert_eq!(rec.command, "trace");
    let mut snapshot = rec.snapshot;
    let mut net = Replayer::new(rec.journal);
    let run = run_trace(&rec.plan, &mut snapshot, &mut net, &mut |_| {}).expect("replays");
    (run, snapshot)
}

fn report(name: &str) -> Trace {
    trace(name).0.trace
}

fn mtu(name: &str) -> MtuRun {
    let rec: Recording<MtuPlan> = load(name);
    assert_eq!(rec.command, "mtu");
    let mut snapshot = rec.snapshot;
    let mut net = Replayer::new(rec.journal);
    run_mtu(&rec.plan, &mut snapshot, &mut net, &mut |_| {}).expect("replays")
}

/// `netns/ifname:dir` of each hop of one leg, lab prefix dropped.
fn path_of(r: &Trace, leg: Leg) -> Vec<String> {
    r.hops
        .iter()
        .filter(|h| h.leg == leg)
        .map(|h| {
            format!(
                "{}/{}:{}",
                h.netns.trim_start_matches("dye-fx-"),
                h.ifname,
                h.direction
            )
        })
        .collect()
}

fn hop<'r>(r: &'r Trace, leg: Leg, netns: &str, ifname: &str, dir: Direction) -> &'r Hop {
    r.hops
        .iter()
        .find(|h| {
            h.leg == leg
                && h.netns == format!("dye-fx-{netns}")
                && h.ifname == ifname
                && h.direction == dir
        })
        .unwrap_or_else(|| panic!("no {leg:?} hop at {netns}/{ifname} {dir}"))
}

/// The NAT rewrites at a hop: (which side, from, to).
fn nat(h: &Hop) -> Vec<(Rewrite, String, String)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            HopEvent::Nat {
                rewrite, from, to, ..
            } => Some((*rewrite, from.to_string(), to.to_string())),
            _ => None,
        })
        .collect()
}

fn ttl(h: &Hop) -> Option<(u8, u8)> {
    h.events.iter().find_map(|e| match e {
        HopEvent::Ttl { from, to, .. } => Some((*from, *to)),
        _ => None,
    })
}

fn count(h: &Hop, pred: fn(&HopEvent) -> bool) -> usize {
    h.events.iter().filter(|e| pred(e)).count()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

fn at(netns: &str, ifname: &str) -> PointRef {
    PointRef::new(format!("dye-fx-{netns}"), ifname)
}

/// The expectation of a dropped verdict.
fn dropped(r: &Trace) -> (Subject, Leg, &dye_core::path::Expectation) {
    match &r.verdict.outcome {
        Outcome::Dropped {
            subject,
            leg,
            expectation: Some(e),
            ..
        } => (*subject, *leg, e),
        o => panic!("not dropped with an expectation: {o:?}"),
    }
}

// ---- verdicts ------------------------------------------------------------------------------

#[test]
fn a_cross_node_echo_is_answered_with_both_legs() {
    let r = report("trace-icmp-cross-node");
    assert_eq!(r.verdict.kind(), VerdictKind::Answered);
    match &r.verdict.outcome {
        Outcome::Answered {
            answer:
                Transport::Icmp {
                    kind: IcmpKind::EchoReply,
                    ..
                },
            seen_as,
            sent_by: None,
        } => assert_eq!(seen_as.addr, ip("10.244.2.2")),
        o => panic!("{o:?}"),
    }
    assert_eq!(r.hops.iter().filter(|h| h.leg == Leg::Forward).count(), 12);
    assert_eq!(r.hops.iter().filter(|h| h.leg == Leg::Return).count(), 12);
    assert_eq!(
        path_of(&r, Leg::Forward).first().map(String::as_str),
        Some("pod-a/eth0:out")
    );
    assert_eq!(
        path_of(&r, Leg::Forward).last().map(String::as_str),
        Some("pod-c/eth0:in")
    );
}

#[test]
fn the_forward_path_crosses_bridge_overlay_and_underlay_in_stack_order() {
    let r = report("trace-icmp-cross-node");
    let p = path_of(&r, Leg::Forward);
    let at = |s: &str| {
        p.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {p:?}"))
    };
    assert!(at("pod-a/eth0:out") < at("node-1/cni0:in"));
    assert!(at("node-1/cni0:in") < at("node-1/flannel.1:out"));
    assert!(at("node-1/flannel.1:out") < at("node-1/eth0:out"));
    assert!(at("node-1/eth0:out") < at("underlay/node-1:in"));
    assert!(at("underlay/node-2:out") < at("node-2/eth0:in"));
    // Same kernel timestamp on receive: the underlay device before the VXLAN device.
    assert_eq!(at("node-2/eth0:in") + 1, at("node-2/flannel.1:in"));
    assert!(at("node-2/cni0:out") < at("pod-c/eth0:in"));
}

#[test]
fn ttl_drops_once_per_routing_namespace_and_never_on_bridges() {
    let r = report("trace-icmp-cross-node");
    let drops: Vec<(String, (u8, u8))> = r
        .hops
        .iter()
        .filter(|h| h.leg == Leg::Forward)
        .filter_map(|h| ttl(h).map(|t| (h.netns.clone(), t)))
        .collect();
    assert_eq!(
        drops,
        vec![
            ("dye-fx-node-1".to_string(), (64, 63)),
            ("dye-fx-node-2".to_string(), (63, 62)),
        ]
    );
    let last = hop(&r, Leg::Forward, "pod-c", "eth0", Direction::In);
    assert_eq!(last.packet.ttl, 62);
}

#[test]
fn vxlan_encapsulation_and_decapsulation_are_named_with_vni_and_vteps() {
    let r = report("trace-icmp-cross-node");
    let enc = hop(&r, Leg::Forward, "node-1", "eth0", Direction::Out);
    let o = match &enc.events[..] {
        [HopEvent::Encap { netns, outer }] => {
            assert_eq!(netns, "dye-fx-node-1");
            outer
        }
        e => panic!("{e:?}"),
    };
    assert_eq!((o.src, o.dst), (ip("192.168.50.11"), ip("192.168.50.12")));
    assert_eq!(o.tunnel, "vxlan");
    assert_eq!(o.vni, Some(1));
    assert_eq!(o.dport, Some(8472));
    assert_eq!(o.len, 64 + 50, "VXLAN adds 50 bytes on an IPv4 underlay");
    let dec = hop(&r, Leg::Forward, "node-2", "flannel.1", Direction::In);
    assert_eq!(count(dec, |e| matches!(e, HopEvent::Decap { .. })), 1);
    assert!(dec.outer.is_empty());
}

#[test]
fn hop_kinds_come_from_the_snapshot() {
    let r = report("trace-icmp-cross-node");
    let kind = |ns, ifn, d| hop(&r, Leg::Forward, ns, ifn, d).kind;
    assert_eq!(kind("node-1", "cni0", Direction::In), LinkClass::Bridge);
    assert_eq!(
        kind("node-1", "flannel.1", Direction::Out),
        LinkClass::Tunnel(TunnelKind::Vxlan)
    );
    assert_eq!(kind("pod-a", "eth0", Direction::Out), LinkClass::Veth);
    assert_eq!(
        hop(&r, Leg::Forward, "pod-a", "eth0", Direction::Out).node,
        "dye-fx-node-1",
        "a pod belongs to the node at its veth's far end"
    );
}

#[test]
fn hop_times_grow_along_each_leg_and_the_round_trip_is_the_last_return_hop() {
    let r = report("trace-icmp-cross-node");
    for leg in [Leg::Forward, Leg::Return] {
        let t: Vec<u64> = r
            .hops
            .iter()
            .filter(|h| h.leg == leg)
            .map(|h| h.t_ns)
            .collect();
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "{leg:?}: {t:?}");
    }
    let rtt = r.probes[0].rtt_ns.expect("answered: a round trip");
    assert_eq!(Some(rtt), r.hops.last().map(|h| h.t_ns));
    assert!(rtt > 0 && rtt < 1_000_000_000);
}

#[test]
fn a_same_node_echo_is_bridged_without_routing() {
    let r = report("trace-icmp-same-node");
    assert_eq!(r.verdict.kind(), VerdictKind::Answered);
    assert!(
        r.hops.iter().all(|h| h.events.is_empty()),
        "no TTL, NAT or tunnel event"
    );
    assert!(r.hops.iter().all(|h| h.packet.ttl == 64));
    assert!(r.hops.iter().all(|h| h.outer.is_empty()));
    assert!(r.hops.iter().all(|h| h.node == "dye-fx-node-1"));
}

#[test]
fn a_forward_drop_names_the_last_sighting_and_the_expected_next_hop() {
    let r = report("trace-drop-pod");
    assert_eq!(r.verdict.kind(), VerdictKind::Dropped);
    let last = r.verdict.last_seen.expect("last seen");
    let h = &r.hops[last];
    assert_eq!(h.at(), at("node-2", "flannel.1"));
    assert_eq!(h.direction, Direction::In);
    let (subject, leg, e) = dropped(&r);
    assert_eq!((subject, leg), (Subject::Probe, Leg::Forward));
    let next = e.next.as_ref().expect("expected next");
    assert_eq!(next.direction, Direction::Out);
    assert!(next.at.ifname.starts_with("veth"), "{next:?}");
    match &e.reason {
        DropReason::DroppedInside {
            netns,
            in_if,
            dev,
            route,
        } => {
            assert_eq!(
                (netns.as_str(), in_if.as_str(), dev.as_str()),
                ("dye-fx-node-2", "flannel.1", "cni0")
            );
            assert_eq!(route.dst, "10.244.2.2/32");
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        count(h, |e| matches!(
            e,
            HopEvent::Drop {
                expected_next: Some(_)
            }
        )),
        1
    );
    // The kernel traced the rule that did it, in the namespace the probe vanished in.
    let by = r.verdict.dropped_by.as_ref().expect("a traced rule");
    assert_eq!(
        (by.netns.as_str(), by.table.as_str(), by.chain.as_str()),
        ("dye-fx-node-2", "filter", "FORWARD")
    );
    assert!(by.handle.is_some() && !by.policy && by.drops());
}

#[test]
fn the_expected_next_port_is_the_one_leading_to_the_destination_pod() {
    let (run, snap) = trace("trace-drop-pod");
    let next = run.trace.verdict.expected_next().expect("expected next");
    let peer = snap
        .veth_peer(&next.at.netns, &next.at.ifname)
        .expect("a veth");
    assert_eq!(peer.netns, "dye-fx-pod-c");
}

#[test]
fn a_lost_route_sends_the_probe_to_the_default_gateway_where_it_dies() {
    let r = report("trace-no-route");
    assert_eq!(r.verdict.kind(), VerdictKind::Dropped);
    let p = path_of(&r, Leg::Forward);
    assert!(!p.iter().any(|x| x.contains("flannel.1")), "{p:?}");
    assert_eq!(p.last().map(String::as_str), Some("fw/eth0:in"));
    let next = r.verdict.expected_next().expect("expected next");
    assert_eq!(
        (&next.at, next.direction),
        (&at("fw", "eth1"), Direction::Out)
    );
}

#[test]
fn a_udp_probe_to_a_closed_port_ends_in_the_destinations_port_unreachable() {
    let r = report("trace-udp-closed-port");
    assert_eq!(r.verdict.kind(), VerdictKind::IcmpError);
    match &r.verdict.outcome {
        Outcome::IcmpError {
            sender,
            kind: IcmpKind::PortUnreachable,
            mtu: None,
            ..
        } => assert_eq!(*sender, ip("10.244.2.2")),
        o => panic!("{o:?}"),
    }
    let icmp: Vec<&Hop> = r
        .hops
        .iter()
        .filter(|h| h.events.iter().any(|e| matches!(e, HopEvent::Icmp { .. })))
        .collect();
    assert_eq!(
        icmp.len(),
        1,
        "the error is announced once, where first seen"
    );
    assert_eq!(icmp[0].netns, "dye-fx-pod-c");
    assert_eq!(icmp[0].leg, Leg::Return);
}

#[test]
fn a_probe_that_enters_the_destination_unanswered_is_delivered() {
    let r = report("trace-delivered");
    assert_eq!(
        r.verdict.outcome,
        Outcome::Delivered {
            to: Endpoint {
                addr: ip("10.244.2.2"),
                port: Some(9999)
            },
            netns: "dye-fx-pod-c".into()
        }
    );
    assert!(r.hops.iter().all(|h| h.leg == Leg::Forward));
    assert!(r.verdict.kind().is_success());
}

#[test]
fn a_probe_seen_nowhere_times_out() {
    let r = report("trace-timeout");
    assert_eq!(r.verdict.outcome, Outcome::Timeout { sent: true });
    assert!(r.hops.is_empty());
    assert_eq!(r.verdict.last_seen, None);
    assert_eq!(r.capture.len(), 1, "-i limited the capture to one point");
    assert!(!r.verdict.kind().is_success());
}

// ---- NAT -----------------------------------------------------------------------------------

#[test]
fn cluster_ip_dnat_is_found_where_it_happens_and_confirmed_by_conntrack() {
    let r = report("trace-tcp-clusterip");
    let rewrote: Vec<&Hop> = r
        .hops
        .iter()
        .filter(|h| h.leg == Leg::Forward && !nat(h).is_empty())
        .collect();
    assert_eq!(rewrote.len(), 1);
    let h = rewrote[0];
    assert_eq!(h.netns, "dye-fx-node-1");
    let (side, from, to) = nat(h).remove(0);
    assert_eq!(side, Rewrite::Destination);
    assert_eq!(from, "10.96.0.10:80");
    assert!(
        to == "10.244.1.2:8080" || to == "10.244.2.2:8080",
        "a Service endpoint: {to}"
    );
    let ct = h.conntrack.as_ref().expect("confirmed by conntrack");
    assert!(ct.orig.ends_with("→ 10.96.0.10:80"), "{}", ct.orig);
    assert!(
        ct.reply.starts_with(&format!("tcp {to}")),
        "{} vs {to}",
        ct.reply
    );
}

#[test]
fn the_reply_from_a_cluster_ip_endpoint_is_un_dnatted_on_its_way_back() {
    let r = report("trace-tcp-clusterip");
    match &r.verdict.outcome {
        Outcome::Answered {
            answer: Transport::Tcp { flags },
            seen_as,
            sent_by: Some(sent_by),
        } => {
            assert_eq!(flags & 0x12, 0x12, "a SYN-ACK");
            assert_eq!(seen_as.to_string(), "10.96.0.10:80");
            assert_eq!(sent_by.port, Some(8080));
        }
        o => panic!("{o:?}"),
    }
    let undo: Vec<_> = r
        .hops
        .iter()
        .filter(|h| h.leg == Leg::Return)
        .flat_map(nat)
        .collect();
    assert_eq!(undo.len(), 1);
    assert_eq!(undo[0].0, Rewrite::Source);
    assert_eq!(undo[0].2, "10.96.0.10:80");
    let home = r.hops.last().expect("hops");
    assert_eq!(home.packet.source().to_string(), "10.96.0.10:80");
}

#[test]
fn a_udp_cluster_ip_maps_port_53_to_the_endpoints_5353() {
    let r = report("trace-udp-clusterip");
    assert_eq!(r.verdict.kind(), VerdictKind::Answered);
    let dnat: Vec<_> = r
        .hops
        .iter()
        .filter(|h| h.leg == Leg::Forward)
        .flat_map(nat)
        .collect();
    assert_eq!(dnat.len(), 1);
    assert_eq!(dnat[0].1, "10.96.0.10:53");
    assert!(dnat[0].2.ends_with(":5353"));
}

#[test]
fn office_to_vip_is_snatted_and_dnatted_at_the_firewall_then_again_at_the_node_port() {
    let r = report("trace-office-vip");
    assert_eq!(r.verdict.kind(), VerdictKind::Answered);
    let fw = hop(&r, Leg::Forward, "fw", "eth0", Direction::Out);
    let rw = nat(fw);
    assert_eq!(rw.len(), 2);
    assert_eq!(rw[0].0, Rewrite::Source);
    assert!(rw[0].1.starts_with("10.244.2.50:") && rw[0].2.starts_with("100.64.0.1:"));
    assert_eq!(
        rw[1],
        (
            Rewrite::Destination,
            "203.0.113.80:80".into(),
            "192.168.50.11:30080".into()
        )
    );
    assert!(fw.conntrack.is_some(), "the firewall's entry confirms it");
    // The node port balances to either endpoint: the rewrite is in node-1 either way.
    let node = r
        .hops
        .iter()
        .find(|h| h.leg == Leg::Forward && h.netns == "dye-fx-node-1" && !nat(h).is_empty())
        .expect("node-1 rewrites the node port");
    let rw = nat(node);
    assert_eq!(rw.len(), 2, "masquerade and DNAT at the node port");
    assert_eq!(rw[1].1, "192.168.50.11:30080");
    assert!(rw[1].2.ends_with(":8080"));
}

#[test]
fn the_office_reply_is_un_natted_back_to_the_vip_it_dialled() {
    let r = report("trace-office-vip");
    let home = r.hops.last().expect("hops");
    assert_eq!(home.netns, "dye-fx-office");
    assert_eq!(home.packet.source().to_string(), "203.0.113.80:80");
    assert_eq!(home.packet.dst, ip("10.244.2.50"));
    let undone: usize = r
        .hops
        .iter()
        .filter(|h| h.leg == Leg::Return)
        .map(|h| nat(h).len())
        .sum();
    assert!(undone >= 2, "both rewrites are undone on the way back");
}

#[test]
fn probes_of_one_trace_are_each_their_own_flow_with_their_own_verdict() {
    let r = report("trace-tcp-clusterip-count");
    assert_eq!(r.probes.len(), 6);
    assert_eq!(r.plan.count, 6);
    assert!(r.probes.iter().all(|p| p.verdict == VerdictKind::Answered));
    let seqs: Vec<u32> = r.probes.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert!(r.probes.iter().all(|p| p.rtt_ns.is_some()));
    assert!(r
        .probes
        .iter()
        .all(|p| p.path.first().is_some_and(|n| n.at == at("pod-b", "eth0"))));
    assert_eq!(r.verdict.partial, None, "all six agree");
}

// ---- fragmentation and MTU on a trace ------------------------------------------------------

#[test]
fn outer_fragmentation_on_the_underlay_is_named_and_reassembled_at_the_far_vtep() {
    let r = report("trace-outer-fragments");
    assert_eq!(r.verdict.kind(), VerdictKind::Answered);
    let out = hop(&r, Leg::Forward, "node-1", "eth0", Direction::Out);
    let f = out.fragments.as_ref().expect("fragmented");
    assert_eq!(f.layer, FragmentLayer::Outer);
    assert_eq!(f.sizes.len(), 2);
    assert_eq!(
        f.sizes.iter().max(),
        Some(&1396),
        "the underlay's MTU 1400, 8-byte aligned"
    );
    assert!(out.events.iter().any(|e| matches!(e,
        HopEvent::Fragment { ifname, mtu: 1400, .. } if ifname == "eth0")));
    let back = hop(&r, Leg::Forward, "node-2", "flannel.1", Direction::In);
    assert!(back
        .events
        .iter()
        .any(|e| matches!(e, HopEvent::Reassemble { count: 2, .. })));
    assert!(back.fragments.is_none());
}

#[test]
fn inner_fragmentation_happens_before_encapsulation() {
    let r = report("trace-inner-fragments");
    assert_eq!(r.verdict.kind(), VerdictKind::Answered);
    let tun = hop(&r, Leg::Forward, "node-1", "flannel.1", Direction::Out);
    assert_eq!(count(tun, |e| matches!(e, HopEvent::Fragment { .. })), 1);
    assert_eq!(
        tun.fragments.as_ref().map(|f| f.sizes.clone()),
        Some(vec![1444, 56])
    );
    let under = hop(&r, Leg::Forward, "node-1", "eth0", Direction::Out);
    assert_eq!(
        under.fragments.as_ref().map(|f| f.layer),
        Some(FragmentLayer::Inner)
    );
    assert_eq!(under.outer.len(), 1);
}

#[test]
fn a_df_probe_above_the_overlay_mtu_gets_fragmentation_needed_from_its_node() {
    let r = report("trace-df-too-big");
    match &r.verdict.outcome {
        Outcome::IcmpError {
            sender,
            kind: IcmpKind::TooBig,
            mtu: Some(1450),
            first_seen_at,
            ..
        } => {
            assert_eq!(*sender, ip("10.244.1.1"));
            assert_eq!(*first_seen_at, at("node-1", "cni0"));
        }
        o => panic!("{o:?}"),
    }
    assert!(r
        .hops
        .iter()
        .filter(|h| h.leg == Leg::Forward)
        .all(|h| h.packet.df));
}

#[test]
fn a_vxlan_black_hole_is_located_at_the_tunnel_with_the_overhead_arithmetic() {
    let r = report("trace-black-hole");
    assert_eq!(
        path_of(&r, Leg::Forward).last().map(String::as_str),
        Some("node-1/flannel.1:out")
    );
    let (_, _, e) = dropped(&r);
    assert_eq!(
        e.next.as_ref().map(|n| (&n.at, n.direction)),
        Some((&at("node-1", "eth0"), Direction::Out))
    );
    assert_eq!(
        e.reason,
        DropReason::EncapTooBig {
            tunnel: LinkClass::Tunnel(TunnelKind::Vxlan),
            inner: 1400,
            total: 1450,
            under: "eth0".into(),
            under_mtu: 1400,
            df: Some(OuterDf::Set),
        }
    );
}

// ---- IPv6 ----------------------------------------------------------------------------------

#[test]
fn ipv6_crosses_the_v6_overlay_with_an_ipv6_underlay_and_70_bytes_of_overhead() {
    let r = report("trace-v6-cross-node");
    assert_eq!(r.verdict.kind(), VerdictKind::Answered);
    let tun = hop(&r, Leg::Forward, "node-1", "flannel-v6.1", Direction::Out);
    assert_eq!(tun.kind, LinkClass::Tunnel(TunnelKind::Vxlan));
    let under = hop(&r, Leg::Forward, "node-1", "eth0", Direction::Out);
    let o = &under.outer[0];
    assert!(o.src.is_ipv6() && o.dst.is_ipv6());
    assert_eq!(
        o.len - under.packet.len,
        70,
        "VXLAN on an IPv6 underlay costs 70 bytes"
    );
    assert!(under.packet.src.is_ipv6());
}

#[test]
fn ipv6_tcp_is_answered_with_a_syn_ack() {
    let r = report("trace-v6-tcp");
    match &r.verdict.outcome {
        Outcome::Answered {
            answer: Transport::Tcp { flags },
            seen_as,
            ..
        } => {
            assert_eq!(flags & 0x12, 0x12);
            assert_eq!(seen_as.to_string(), "[fd00:244:2::2]:8080");
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(r.plan.target(), "[fd00:244:2::2]:8080");
}

#[test]
fn an_ipv6_packet_too_big_from_the_firewall_is_the_verdict() {
    let r = report("trace-v6-packet-too-big");
    match &r.verdict.outcome {
        Outcome::IcmpError {
            sender,
            kind: IcmpKind::TooBig,
            mtu: Some(1280),
            v6: true,
            ..
        } => assert_eq!(*sender, ip("fd00:50::254")),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        path_of(&r, Leg::Forward).last().map(String::as_str),
        Some("fw/eth0:in")
    );
    // The error taught the source's kernel the path MTU; the trace put it back.
    let c = r.pmtu.expect("the cache changed");
    assert_eq!(c.removed, Some(Ok(PmtuRemoval::OneDestination)));
    assert_eq!(c.after.and_then(|r| r.mtu), Some(1280));
    assert_eq!(c.now.and_then(|r| r.mtu), None);
}

#[test]
fn a_trace_that_changes_no_cache_reports_none() {
    assert!(report("trace-icmp-cross-node").pmtu.is_none());
    assert!(report("trace-v6-cross-node").pmtu.is_none());
}

// ---- MTU searches --------------------------------------------------------------------------

fn signalled_by(m: &MtuResult) -> &Sender {
    match &m.limit.as_ref().expect("a limit").found {
        Found::Signalled { sender, .. } => sender,
        f => panic!("not signalled: {f:?}"),
    }
}

fn limit_link(m: &MtuResult) -> &LinkLimit {
    m.limit
        .as_ref()
        .and_then(|l| l.link.as_ref())
        .expect("a limiting link")
}

#[test]
fn a_healthy_overlay_is_limited_by_flannel_in_two_probes() {
    let m = mtu("mtu-healthy").result;
    assert_eq!(m.status, Status::Healthy);
    assert_eq!(m.path_mtu, Some(1450));
    let l = limit_link(&m);
    assert_eq!(
        (l.netns.as_str(), l.ifname.as_str()),
        ("dye-fx-node-1", "flannel.1")
    );
    let e = l.encapsulation.as_ref().expect("a tunnel");
    assert_eq!((e.overhead, e.needs_underlay_mtu), (50, 1500));
    match &m.limit.as_ref().expect("limit").found {
        Found::Healthy {
            underlay: Some(u), ..
        } => assert_eq!((u.ifname.as_str(), u.mtu), ("eth0", 1500)),
        f => panic!("{f:?}"),
    }
    assert_eq!(
        m.probes.iter().map(|p| p.size).collect::<Vec<_>>(),
        vec![68, 1450]
    );
    let rec = m.recommendation.expect("a recommendation");
    assert_eq!((rec.mtu, rec.applies_to), (1450, AppliesTo::Overlay));
    assert!(matches!(rec.why, Why::KeepTunnel { .. }));
}

#[test]
fn the_largest_payloads_follow_from_the_path_mtu() {
    let m = mtu("mtu-healthy").result;
    let p = m.max_payload.expect("payloads");
    assert_eq!(p.tcp_mss, 1450 - 40);
    assert_eq!(p.udp, 1450 - 28);
    assert_eq!(p.icmp_echo_data, 1450 - 28);
}

#[test]
fn a_vxlan_df_black_hole_is_found_at_the_underlay_egress() {
    let m = mtu("mtu-black-hole").result;
    assert_eq!(m.status, Status::BlackHole);
    assert_eq!(m.path_mtu, Some(1350));
    let l = limit_link(&m);
    assert_eq!(
        (l.netns.as_str(), l.ifname.as_str(), l.mtu, l.fits),
        ("dye-fx-node-1", "eth0", 1400, 1350)
    );
    match &m.limit.as_ref().expect("limit").found {
        Found::BlackHole {
            vanished_after: Some(after),
            beyond_node,
        } => {
            assert_eq!(
                (&after.at, after.direction),
                (&at("node-1", "flannel.1"), Direction::Out)
            );
            assert!(beyond_node.is_none(), "the node's own uplink explains it");
        }
        f => panic!("{f:?}"),
    }
    let rec = m.recommendation.expect("a recommendation");
    assert_eq!((rec.mtu, rec.applies_to), (1350, AppliesTo::Overlay));
    assert!(matches!(rec.why, Why::TunnelBlackHole { .. }));
    assert!(
        m.probes
            .iter()
            .all(|p| !matches!(p.outcome, ProbeOutcome::TooBig { .. })),
        "nobody sent ICMP"
    );
    assert!(m.probes.len() <= 8);
}

#[test]
fn without_outer_df_the_overlay_passes_but_underlay_fragmentation_is_warned() {
    let m = mtu("mtu-outer-fragmenting").result;
    assert_eq!(m.status, Status::Healthy);
    assert_eq!(m.path_mtu, Some(1450));
    assert!(
        m.warnings.iter().any(|w| matches!(w,
            Warning::OuterFragmented { at: a, mtu: Some(1400), .. } if *a == at("node-1", "eth0"))),
        "{:?}",
        m.warnings
    );
    let rec = m.recommendation.expect("a recommendation");
    assert_eq!(rec.mtu, 1350);
    assert!(matches!(rec.why, Why::UnderlayFragments { .. }));
}

#[test]
fn a_pod_mtu_above_the_overlay_is_signalled_by_its_node() {
    let m = mtu("mtu-signalled-by-node").result;
    assert_eq!(m.status, Status::Signalled);
    assert_eq!(m.path_mtu, Some(1450));
    assert_eq!(limit_link(&m).ifname, "flannel.1");
    let by = signalled_by(&m);
    assert_eq!(by.address, ip("10.244.1.1"));
    assert_eq!(by.netns, vec!["dye-fx-node-1".to_string()]);
    assert_eq!(by.advertised_mtu, Some(1450));
    assert!(!by.nat_rewritten);
}

#[test]
fn an_ipv6_packet_too_big_names_the_firewall_link() {
    let m = mtu("mtu-v6-packet-too-big").result;
    assert_eq!(m.status, Status::Signalled);
    assert_eq!(m.path_mtu, Some(1280));
    assert_eq!(m.search.min, 1280, "IPv6 links carry at least 1280");
    let l = limit_link(&m);
    assert_eq!((l.netns.as_str(), l.ifname.as_str()), ("dye-fx-fw", "eth1"));
    assert_eq!(m.max_payload.map(|p| p.tcp_mss), Some(1220));
}

#[test]
fn the_pmtu_cache_a_packet_too_big_poisoned_is_restored() {
    let m = mtu("mtu-v6-packet-too-big").result;
    let c = m.pmtu;
    assert_eq!(c.removed, Some(Ok(PmtuRemoval::OneDestination)));
    assert_eq!(c.after.and_then(|r| r.mtu), Some(1280));
    assert_eq!(c.before.and_then(|r| r.mtu), None);
    assert_eq!(c.now.and_then(|r| r.mtu), None);
}

#[test]
fn an_icmp_error_natted_on_its_way_back_is_attributed_to_the_firewall() {
    let m = mtu("mtu-through-nat").result;
    assert_eq!(m.status, Status::Signalled);
    assert_eq!(m.path_mtu, Some(1280));
    let l = limit_link(&m);
    assert_eq!((l.netns.as_str(), l.ifname.as_str()), ("dye-fx-fw", "eth0"));
    let by = signalled_by(&m);
    assert_eq!(by.address, ip("203.0.113.80"));
    assert!(by.nat_rewritten);
    assert_eq!(by.netns, vec!["dye-fx-fw".to_string()]);
}

#[test]
fn a_path_that_passes_nothing_is_unreachable() {
    let m = mtu("mtu-unreachable").result;
    assert_eq!(m.status, Status::Unreachable);
    assert_eq!(m.path_mtu, None);
    assert_eq!(m.limit, None);
    assert_eq!(m.recommendation, None);
    assert_eq!(
        m.probes.iter().map(|p| p.size).collect::<Vec<_>>(),
        vec![68, 68]
    );
    assert!(m.probes.iter().all(|p| p.outcome == ProbeOutcome::Vanished));
}

// ---- record and replay ---------------------------------------------------------------------

#[test]
fn replaying_twice_gives_the_same_json() {
    let a = serde_json::to_string(&report("trace-office-vip")).expect("json");
    let b = serde_json::to_string(&report("trace-office-vip")).expect("json");
    assert_eq!(a, b);
    let a = serde_json::to_string(&mtu("mtu-black-hole").result).expect("json");
    let b = serde_json::to_string(&mtu("mtu-black-hole").result).expect("json");
    assert_eq!(a, b);
}

#[test]
fn a_journal_that_does_not_match_the_plan_is_refused_not_misreported() {
    let mut rec: Recording<TracePlan> = load("trace-icmp-cross-node");
    // Another probe count than the journal recorded: the replay must notice.
    rec.plan.count = 2;
    let mut snapshot = rec.snapshot;
    let mut net = Replayer::new(rec.journal);
    let err = run_trace(&rec.plan, &mut snapshot, &mut net, &mut |_| {})
        .expect_err("a mismatch is an error");
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn recorded_route_answers_to_questions_not_asked_are_refused() {
    let mut rec: Recording<TracePlan> = load("trace-drop-pod");
    for e in &mut rec.journal {
        if let Call::Routes(lookups) = &mut e.call {
            let mut extra = lookups[0].clone();
            extra.netns = "dye-fx-office".into();
            lookups.push(extra);
        }
    }
    let mut snapshot = rec.snapshot;
    let mut net = Replayer::new(rec.journal);
    let err = run_trace(&rec.plan, &mut snapshot, &mut net, &mut |_| {})
        .expect_err("a forged answer is refused");
    assert!(err.to_string().contains("was not asked"), "{err}");
}

#[test]
fn route_lookups_follow_the_path_not_the_node() {
    // pod-a → pod-c across nodes: routes were asked only where the probe went.
    let (run, snap) = trace("trace-icmp-cross-node");
    let asked: std::collections::BTreeSet<&str> =
        snap.lookups.iter().map(|l| l.netns.as_str()).collect();
    let seen: std::collections::BTreeSet<&str> =
        run.trace.hops.iter().map(|h| h.netns.as_str()).collect();
    assert!(asked.is_subset(&seen), "{asked:?} vs {seen:?}");
    for idle in ["dye-fx-pod-b", "dye-fx-pod-d", "dye-fx-office", "dye-fx-fw"] {
        assert!(!asked.contains(idle), "{idle} was not on the path");
    }
}

#[test]
fn a_truncated_journal_is_an_error() {
    let mut rec: Recording<MtuPlan> = load("mtu-healthy");
    rec.journal.truncate(3);
    let mut snapshot = rec.snapshot;
    let mut net = Replayer::new(rec.journal);
    let err = run_mtu(&rec.plan, &mut snapshot, &mut net, &mut |_| {}).expect_err("truncated");
    assert!(err.to_string().contains("its end"), "{err}");
}

#[test]
fn a_frame_dropped_from_the_journal_changes_the_verdict() {
    // Take out every frame captured in the destination pod: the probe now dies at node-2.
    let mut rec: Recording<TracePlan> = load("trace-delivered");
    let pod_c: Vec<usize> = rec
        .snapshot
        .points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.netns == "dye-fx-pod-c")
        .map(|(i, _)| i)
        .collect();
    rec.journal.retain(|e| {
        !matches!(&e.call, Call::Wait(Wait::Event(Event::Frame(f))) if pod_c.contains(&f.point))
    });
    // Nor does the replay ask pod-c's routes any more: its answers go too.
    for e in &mut rec.journal {
        if let Call::Routes(lookups) = &mut e.call {
            lookups.retain(|l| l.netns != "dye-fx-pod-c");
        }
    }
    let mut snapshot = rec.snapshot;
    let mut net = Replayer::new(rec.journal);
    let r = run_trace(&rec.plan, &mut snapshot, &mut net, &mut |_| {})
        .expect("replays")
        .trace;
    assert_eq!(r.verdict.kind(), VerdictKind::Dropped);
    let next = r.verdict.expected_next().expect("expected next");
    assert_eq!(
        (&next.at, next.direction),
        (&at("pod-c", "eth0"), Direction::In)
    );
}

#[test]
fn an_answered_trace_asks_no_route_and_a_drop_asks_one() {
    let calls = |name: &str| {
        let rec: Recording<TracePlan> = load(name);
        rec.journal
            .iter()
            .filter_map(|e| match &e.call {
                Call::Routes(l) => Some(l.len()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(calls("trace-office-vip"), Vec::<usize>::new());
    assert_eq!(calls("trace-drop-pod"), vec![1]);
    let (run, snap) = trace("trace-drop-pod");
    let last = &run.trace.hops[run.trace.verdict.last_seen.expect("last seen")];
    // The one route asked: the namespace the probe vanished in, towards where it was going.
    let looked: Vec<(&str, IpAddr)> = snap
        .lookups
        .iter()
        .map(|l| (l.netns.as_str(), l.dst))
        .collect();
    assert_eq!(
        looked,
        vec![
            ("dye-fx-pod-a", ip("10.244.2.2")),
            (last.netns.as_str(), last.packet.dst)
        ]
    );
    assert_eq!(snap.source, "dye-fx-pod-a");
    assert!(
        snap.points.iter().all(|p| p.linktype == 1),
        "veths and bridges capture Ethernet"
    );
}

#[test]
fn the_pcap_frames_of_a_trace_are_the_probes_at_every_hop() {
    let (run, _) = trace("trace-outer-fragments");
    let kept = run.frames.iter().flatten().count();
    // Every sighting's frames were kept, fragments included.
    for s in &run.sightings {
        for f in &s.frames {
            assert!(run.frames.get(*f).is_some_and(|x| x.is_some()), "frame {f}");
        }
    }
    let fragmented = run.sightings.iter().filter(|s| s.frames.len() == 2).count();
    assert!(
        fragmented >= 4,
        "the outer fragments were seen at several hops"
    );
    assert!(kept >= run.sightings.len());
}

// The routed shape (samples/lab/routed.toml): a router between the nodes' subnets, Calico-style
// pods, vxlan.calico on 4789 with VNI 4096.

#[test]
fn a_routed_underlay_trace_crosses_the_router_inside_vxlan_4096() {
    let r = report("trace-routed-cross-node");
    assert_eq!(r.verdict.kind(), VerdictKind::Answered);
    let p = path_of(&r, Leg::Forward);
    let at = |s: &str| {
        p.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {p:?}"))
    };
    assert!(at("node-1/eth0:out") < at("router/node-1:in"));
    assert!(at("router/node-1:in") < at("router/node-2:out"));
    assert!(at("router/node-2:out") < at("node-2/eth0:in"));
    assert!(!p.iter().any(|h| h.contains("cni0")), "no bridge: {p:?}");
    let encap = r
        .hops
        .iter()
        .flat_map(|h| h.outer.iter())
        .find(|o| o.tunnel == "vxlan")
        .expect("an outer VXLAN header");
    assert_eq!((encap.vni, encap.dport), (Some(4096), Some(4789)));
    // The router routes the outer packet: its TTL drops there, the pod's packet inside keeps
    // the TTL node-1 gave it.
    let out = hop(&r, Leg::Forward, "router", "node-2", Direction::Out);
    let outer_ttl: Vec<(u8, u8)> = out
        .events
        .iter()
        .filter_map(|e| match e {
            HopEvent::OuterTtl { netns, from, to } if netns == "dye-fx-router" => {
                Some((*from, *to))
            }
            _ => None,
        })
        .collect();
    assert_eq!(outer_ttl, [(64, 63)]);
    assert_eq!(ttl(out), None, "the inner TTL is untouched by the router");
}

#[test]
fn a_vxlan_black_hole_behind_a_router_names_the_router_port() {
    let m = mtu("mtu-routed-black-hole").result;
    assert_eq!(m.status, Status::BlackHole);
    assert_eq!(m.path_mtu, Some(1350));
    let l = limit_link(&m);
    assert_eq!(
        (l.netns.as_str(), l.ifname.as_str(), l.mtu, l.fits),
        ("dye-fx-router", "node-2", 1400, 1350)
    );
    let Found::BlackHole {
        beyond_node: Some(b),
        ..
    } = &m.limit.as_ref().expect("limit").found
    else {
        panic!("{:?}", m.limit)
    };
    assert_eq!(b.underlay.node, "dye-fx-node-1");
    assert_eq!(b.underlay.remote, ip("192.168.52.12"));
    assert_eq!(
        b.underlay.node_pmtu,
        Some(1400),
        "the node cached the router's MTU"
    );
    let hops: Vec<(String, u32)> = b
        .underlay
        .path
        .iter()
        .map(|h| (h.at.to_string(), h.mtu))
        .collect();
    assert_eq!(
        hops,
        [
            ("dye-fx-node-1/eth0".to_string(), 1500),
            ("dye-fx-router/node-2".to_string(), 1400)
        ]
    );
    let refusal = b
        .evidence
        .refusal
        .as_ref()
        .expect("the router's ICMP to the node");
    assert_eq!(
        (refusal.sender, refusal.to, refusal.mtu),
        (ip("192.168.51.1"), ip("192.168.51.11"), Some(1400))
    );
    assert_eq!(refusal.sender_netns, ["dye-fx-router"]);
    // The pod was never told, and the search did not wait for it.
    assert!(m
        .probes
        .iter()
        .all(|p| !matches!(p.outcome, ProbeOutcome::TooBig { .. })));
    assert!(m.search.probes_sent <= 8, "{} probes", m.search.probes_sent);
    assert!(
        m.search.elapsed.as_secs_f64() < 3.0,
        "{:?}",
        m.search.elapsed
    );
    let rec = m.recommendation.expect("a recommendation");
    assert_eq!((rec.mtu, rec.applies_to), (1350, AppliesTo::Overlay));
}

#[test]
fn a_cold_first_answer_is_measured_again_and_does_not_pace_the_search() {
    let m = mtu("mtu-routed-cold-first-answer").result;
    assert_eq!(m.path_mtu, Some(1350));
    assert_eq!(limit_link(&m).name(), "dye-fx-router/node-2");
    let first = m.probes[0].rtt.expect("the first probe was answered");
    if first.as_millis() > 50 {
        // A second smallest probe measured the warm path, and the waits follow it.
        assert_eq!(m.probes[1].size, m.probes[0].size);
        assert!(m.probes[1].rtt.expect("answered").as_millis() < 50);
        assert!(m.search.wait.as_millis() < 300, "{:?}", m.search.wait);
    }
    assert!(
        m.search.elapsed.as_secs_f64() < 3.0,
        "{:?}",
        m.search.elapsed
    );
}

#[test]
fn outer_fragmentation_at_a_router_port_recommends_what_that_port_carries() {
    let m = mtu("mtu-routed-outer-fragmenting").result;
    assert_eq!((m.status, m.path_mtu), (Status::Healthy, Some(1450)));
    let rec = m.recommendation.expect("a recommendation");
    assert_eq!((rec.mtu, rec.applies_to), (1350, AppliesTo::Overlay));
    match &rec.why {
        Why::UnderlayFragments { underlay, .. } => assert_eq!(
            (underlay.name().as_str(), underlay.mtu, underlay.fits),
            ("dye-fx-router/node-2", 1400, 1350)
        ),
        w => panic!("{w:?}"),
    }
    match &m.limit.as_ref().expect("limit").found {
        Found::Healthy {
            underlay: Some(u), ..
        } => assert_eq!(u.name(), "dye-fx-router/node-2"),
        f => panic!("{f:?}"),
    }
}

#[test]
fn a_tun_devices_userspace_encapsulation_is_read_off_the_wire_for_the_overlay_mtu() {
    // flannel's udp backend: flannel0 (TUN, 1472) is no kernel tunnel, so its 28 bytes of
    // outer IPv4 + UDP come from the IP-in-UDP packets split on node-1's eth0 (MTU 1400).
    let m = mtu("mtu-udp-outer-fragmenting").result;
    assert_eq!((m.status, m.path_mtu), (Status::Healthy, Some(1472)));
    let rec = m.recommendation.expect("a recommendation");
    assert_eq!((rec.mtu, rec.applies_to), (1372, AppliesTo::Overlay));
    match &rec.why {
        Why::UnderlayFragments {
            encapsulation: e,
            underlay,
        } => {
            assert_eq!(
                (underlay.name().as_str(), underlay.mtu, underlay.fits),
                ("dye-fx-node-1/eth0", 1400, 1372)
            );
            assert_eq!(
                (e.kind.as_str(), e.tunnel.as_str(), e.tunnel_mtu, e.overhead),
                ("ip-in-udp", "dye-fx-node-1/flannel0", 1472, 28)
            );
            assert_eq!(e.needs_underlay_mtu, 1500);
        }
        w => panic!("{w:?}"),
    }
    assert!(
        m.warnings.iter().any(
            |w| matches!(w, Warning::OuterFragmented { at: p, mtu: Some(1400), .. }
                if *p == at("node-1", "eth0"))
        ),
        "{:?}",
        m.warnings
    );
}

/// The rules of one hop as (chain, verdict).
fn rules_of(h: &Hop) -> Vec<(String, String)> {
    h.rules
        .iter()
        .map(|r| (r.chain.clone(), r.verdict.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn a_cluster_ip_probe_carries_kube_proxys_jumps_and_dnat_rule_at_node_1() {
    let r = report("trace-tcp-clusterip");
    let with_rules: Vec<&Hop> = r.hops.iter().filter(|h| !h.rules.is_empty()).collect();
    assert_eq!(with_rules.len(), 1, "only node-1 decided something");
    let h = with_rules[0];
    assert_eq!((h.netns.as_str(), h.leg), ("dye-fx-node-1", Leg::Forward));
    let rules = rules_of(h);
    let chains: Vec<&str> = rules.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(chains[..2], ["PREROUTING", "KUBE-SERVICES"], "{rules:?}");
    assert!(chains[2].starts_with("KUBE-SVC-"), "{rules:?}");
    let sep = chains[3];
    assert!(sep.starts_with("KUBE-SEP-"), "{rules:?}");
    assert_eq!(rules[2].1, format!("jump {sep}"));
    assert_eq!(rules[3].1, "accept");
    let dnat = &h.rules[3];
    assert!(
        dnat.handle.is_some() && dnat.text.contains("DNAT"),
        "{dnat:?}"
    );
    // The endpoint the rule's chain leads to is the one the probe was DNATed to.
    let to = r
        .hops
        .iter()
        .flat_map(nat)
        .find(|(w, _, _)| *w == Rewrite::Destination)
        .expect("a DNAT")
        .2;
    assert!(
        h.rules[2].text.contains(&format!("-> {to}")),
        "{} vs {to}",
        h.rules[2].text
    );
}

#[test]
fn the_dropping_rule_sits_on_the_hop_where_the_probe_vanished() {
    let r = report("trace-drop-pod");
    let last = r.verdict.last_seen.expect("last seen");
    let by = r.verdict.dropped_by.as_ref().expect("dropped_by");
    let h = &r.hops[last];
    assert_eq!(h.rules.last(), Some(by), "{:?}", h.rules);
    assert!(r
        .hops
        .iter()
        .enumerate()
        .all(|(i, h)| i == last || h.rules.iter().all(|r| !r.drops())));
}

#[test]
fn an_echo_reply_is_accepted_by_kube_proxys_conntrack_rule_and_the_request_by_no_rule() {
    let r = report("trace-icmp-cross-node");
    // The request meets only accepting policies: nothing decided on the way out.
    assert!(r
        .hops
        .iter()
        .filter(|h| h.leg == Leg::Forward)
        .all(|h| h.rules.is_empty()));
    // The reply (it echoes the marker, so it is traced too) is forwarded by each node because
    // kube-proxy's KUBE-FORWARD accepts established flows.
    let back: Vec<&Hop> = r.hops.iter().filter(|h| !h.rules.is_empty()).collect();
    assert_eq!(back.len(), 2, "one hop in each node");
    for h in back {
        assert_eq!(h.leg, Leg::Return);
        assert_eq!(
            rules_of(h),
            [
                ("FORWARD".to_string(), "jump KUBE-FORWARD".to_string()),
                ("KUBE-FORWARD".to_string(), "accept".to_string())
            ]
        );
        assert!(h.rules[1].text.contains("conntrack"), "{:?}", h.rules[1]);
    }
}
