//! The terminal view of an MTU report: the answer first (path MTU, status, limiting link and
//! why, what to configure), then the warnings, then every probe sent. JSON is the report itself.

use std::fmt::Write as _;

use crate::report::mtu_v1::{MtuReport, Status};

use super::trace::Style;

fn status_words(s: Status) -> &'static str {
    match s {
        Status::Healthy => "healthy: the largest probe the source can send passes",
        Status::Signalled => "signalled: a router answers bigger probes with ICMP",
        Status::BlackHole => "BLACK HOLE: bigger probes vanish without any ICMP",
        Status::Unreachable => "UNREACHABLE: even the smallest probe did not pass",
        Status::Incomplete => "incomplete: the search stopped before it converged",
    }
}

pub fn text(r: &MtuReport, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dye mtu: {} ({}) → {}, {} probes with DF, {}–{} bytes",
        r.from,
        r.src,
        match &r.to_name {
            Some(name) => format!("{name} ({})", r.to),
            None => r.to.clone(),
        },
        r.proto,
        r.search.min,
        r.search.max
    );
    let _ = writeln!(out);
    let color = match r.status {
        Status::Healthy => "1;32",
        Status::Signalled => "1;33",
        _ => "1;31",
    };
    let pmtu = match r.path_mtu {
        Some(m) => format!("{m} bytes"),
        None => "none".into(),
    };
    let _ = writeln!(
        out,
        "  path MTU   {}  {}",
        style.paint("1", &pmtu),
        style.paint(color, status_words(r.status))
    );
    if let Some(l) = &r.limit {
        let mut head = format!("{} MTU {}", l.link, l.mtu);
        if let Some(e) = &l.encapsulation {
            if e.tunnel != l.link {
                head.push_str(&format!(
                    ", under {} ({}, {} bytes overhead)",
                    e.tunnel, e.kind, e.overhead
                ));
            } else {
                head.push_str(&format!(" ({}, {} bytes overhead)", e.kind, e.overhead));
            }
        }
        if let Some(s) = &l.signalled_by {
            if s.nat_rewritten && !s.netns.is_empty() {
                head.push_str(&format!(", signalled by {}", s.netns.join(", ")));
            } else {
                head.push_str(&format!(", signalled by {}", s.address));
                if !s.netns.is_empty() {
                    head.push_str(&format!(" ({})", s.netns.join(", ")));
                }
            }
        }
        let _ = writeln!(out, "  limit      {}", style.paint("1", &head));
        let _ = writeln!(out, "             {}", l.explanation);
        if !l.also_at_this_mtu.is_empty() {
            let _ = writeln!(
                out,
                "             also at MTU {}: {}",
                l.mtu,
                l.also_at_this_mtu.join(", ")
            );
        }
    }
    if let Some(p) = &r.max_payload {
        let _ = writeln!(
            out,
            "  payload    TCP MSS {} · UDP {} · ICMP echo data {} (ping -M do -s {})",
            p.tcp_mss, p.udp, p.icmp_echo_data, p.icmp_echo_data
        );
    }
    if let Some(rec) = &r.recommendation {
        let _ = writeln!(
            out,
            "  recommend  {} MTU {}: {}",
            rec.applies_to, rec.mtu, rec.reason
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  {}    {w}", style.paint("1;33", "warning"));
    }
    let _ = writeln!(out, "  pmtu cache {}", r.pmtu_cache.detail);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {} probes in {:.2} s ({} capture points, {} ms wait per probe)",
        r.search.probes_sent,
        r.search.elapsed_ms as f64 / 1000.0,
        r.search.capture_points,
        r.search.probe_wait_ms
    );
    for p in &r.probes {
        let rtt = p
            .rtt_ms
            .map(|ms| format!("  {ms:.1} ms"))
            .unwrap_or_default();
        let outcome = match p.outcome.as_str() {
            "passed" => style.paint("32", "passed  "),
            "vanished" => style.paint("31", "vanished"),
            other => style.paint("33", &format!("{other:<8}")),
        };
        let _ = writeln!(
            out,
            "    #{:<3} {:>5}  {outcome}  {}{rtt}",
            p.seq, p.size, p.detail
        );
    }
    out
}
