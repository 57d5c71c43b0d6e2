//! Outputs of a trace: a terminal view that reads like a story (one line per hop, what changed
//! underneath it), a Mermaid path diagram, and the vendor pcapng with every probe packet
//! annotated with its hop and what happened there. JSON is the report itself (serde).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use dye_capture::pcapng::{InterfaceInfo, PcapngWriter, SectionInfo};

use dye_core::model::Direction;
use dye_core::snapshot::Point;
use dye_core::trace::TraceRun;

use crate::report::trace_v1::{EventType, Hop, Leg, PacketView, TraceReport};

/// ANSI styling, only when writing to a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

fn packet_line(p: &PacketView) -> String {
    format!(
        "{} → {} {} {} ttl {} len {}{}",
        p.source(),
        p.destination(),
        p.proto,
        p.what,
        p.ttl,
        p.len,
        if p.df { " DF" } else { "" }
    )
}

fn micros(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// The terminal story.
pub fn text(r: &TraceReport, style: Style) -> String {
    let mut out = String::new();
    let v = &r.verdict;
    let verdict_color = if v.kind.is_success() { "1;32" } else { "1;31" };
    let _ = writeln!(
        out,
        "dye trace {}: {} probe{} of {} bytes{} from {} ({}) to {}",
        r.probe.trace_id,
        r.probe.count,
        if r.probe.count == 1 { "" } else { "s" },
        r.probe.size,
        if r.probe.df { " DF" } else { "" },
        r.probe.from,
        r.probe.src,
        match &r.probe.to_name {
            Some(name) => format!("{name} ({})", r.probe.to),
            None => r.probe.to.clone(),
        }
    );
    let _ = writeln!(out);
    let width = r
        .hops
        .iter()
        .map(|h| h.netns.len() + h.ifname.len() + 1)
        .max()
        .unwrap_or(10)
        .max(10);
    let _ = writeln!(
        out,
        "  {:>2} {:>9}  {:<width$}  {:<6} {:<3}  packet",
        "#", "t (µs)", "where", "kind", "dir"
    );
    let mut leg = Leg::Forward;
    let mut last_packet: Option<&PacketView> = None;
    let mut last_outer = 0usize;
    for h in &r.hops {
        if h.leg != leg {
            leg = h.leg;
            let _ = writeln!(out, "  {}", style.paint("2", "── return ──"));
            last_packet = None;
        }
        let place = format!("{}/{}", h.netns, h.ifname);
        // Show the packet when it first appears or changes; otherwise a ditto mark keeps the
        // eye on what changed.
        let mut pkt = if last_packet
            .map(|p| packet_line(p) != packet_line(&h.packet))
            .unwrap_or(true)
        {
            packet_line(&h.packet)
        } else {
            "〃".to_string()
        };
        if let Some(o) = h.outer.first() {
            if h.outer.len() != last_outer || pkt != "〃" {
                let vni = o.vni.map(|v| format!(" vni {v}")).unwrap_or_default();
                pkt = format!("[{}{vni} {} → {}] {pkt}", o.kind, o.src, o.dst);
            }
        }
        if let Some(f) = &h.fragments {
            pkt.push_str(&format!(
                " ({} fragments: {})",
                f.count,
                f.sizes
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join("+")
            ));
        }
        let _ = writeln!(
            out,
            "  {:>2} {:>9}  {:<width$}  {:<6} {:<3}  {pkt}",
            h.index,
            micros(h.t_ns),
            place,
            h.kind.as_str(),
            h.direction.as_str()
        );
        for e in &h.events {
            let code = match e.kind {
                EventType::Dnat | EventType::Snat => "1;33",
                EventType::Encap | EventType::Decap => "36",
                EventType::Fragment | EventType::Reassemble => "35",
                EventType::Ttl => "2",
                EventType::Icmp | EventType::Drop => "1;31",
            };
            let _ = writeln!(
                out,
                "  {:>2} {:>9}  {}",
                "",
                "",
                style.paint(code, &format!("↳ {}", e.detail))
            );
        }
        for r in &h.rules {
            let code = if r.verdict.as_deref() == Some("drop") {
                "1;31"
            } else {
                "34"
            };
            let _ = writeln!(
                out,
                "  {:>2} {:>9}  {}",
                "",
                "",
                style.paint(code, &format!("↳ {}", r.detail))
            );
        }
        if let Some(ct) = &h.conntrack {
            let _ = writeln!(
                out,
                "  {:>2} {:>9}  {}",
                "",
                "",
                style.paint(
                    "33",
                    &format!(
                        "  conntrack in {}: {} ⇄ reply {} [{}]",
                        h.netns, ct.orig, ct.reply, ct.status
                    )
                )
            );
        }
        last_packet = Some(&h.packet);
        last_outer = h.outer.len();
    }
    if r.hops.is_empty() {
        let _ = writeln!(out, "  (no hop seen)");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "verdict: {} — {}",
        style.paint(verdict_color, v.kind.as_str()),
        v.detail
    );
    if let Some(next) = &v.expected_next {
        let _ = writeln!(out, "expected next: {next}");
    }
    if r.probes.len() > 1 {
        for p in &r.probes {
            let rtt = p
                .rtt_ns
                .map(|n| format!(", rtt {} µs", micros(n)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  probe {}: {} over {} hops{rtt}",
                p.seq,
                p.verdict.as_str(),
                p.path.len()
            );
        }
    } else if let Some(rtt) = r.probes.first().and_then(|p| p.rtt_ns) {
        let _ = writeln!(out, "round trip: {} µs", micros(rtt));
    }
    if let Some(c) = &r.pmtu_cache {
        let _ = writeln!(out, "pmtu cache: {}", c.detail);
    }
    let dropped: u64 = r.capture.iter().map(|c| c.kernel_dropped).sum();
    let lost: Vec<&str> = r
        .capture
        .iter()
        .filter(|c| c.lost.is_some())
        .map(|c| c.name.as_str())
        .collect();
    let sockets = r
        .scope
        .as_ref()
        .map(|s| {
            format!(
                " in {} namespaces ({} {} socket{})",
                s.namespaces.len(),
                s.capture_sockets,
                match s.sockets {
                    dye_core::snapshot::SocketModel::PerNamespace => "namespace",
                    dye_core::snapshot::SocketModel::PerInterface => "interface",
                },
                if s.capture_sockets == 1 { "" } else { "s" }
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "capture: {} points{sockets}, {} kernel drops{}; {} ms",
        r.capture.len(),
        dropped,
        if lost.is_empty() {
            String::new()
        } else {
            format!(", lost: {}", lost.join(", "))
        },
        r.elapsed_ms
    );
    out
}

fn mermaid_label(s: &str) -> String {
    s.replace('"', "'")
}

/// A Mermaid flowchart of the representative probe's path, hops grouped by namespace.
pub fn mermaid(r: &TraceReport) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut group: Option<(String, usize)> = None;
    for (i, h) in r.hops.iter().enumerate() {
        let key = format!(
            "{}{}",
            h.netns,
            if h.leg == Leg::Return {
                " (return)"
            } else {
                ""
            }
        );
        if group.as_ref().map(|(k, _)| k != &key).unwrap_or(true) {
            if group.is_some() {
                out.push_str("  end\n");
            }
            let _ = writeln!(out, "  subgraph g{i}[\"{}\"]", mermaid_label(&key));
            group = Some((key, i));
        }
        let _ = writeln!(
            out,
            "    h{i}[\"{} {}<br/>{}\"]",
            h.ifname,
            h.direction,
            mermaid_label(&format!("{} → {}", h.packet.src, h.packet.dst))
        );
    }
    if group.is_some() {
        out.push_str("  end\n");
    }
    for i in 1..r.hops.len() {
        let h = &r.hops[i];
        let label: Vec<String> = h
            .events
            .iter()
            .filter(|e| e.kind != EventType::Drop)
            .map(|e| match (&e.from, &e.to) {
                (Some(a), Some(b)) => format!("{:?} {a}→{b}", e.kind).to_lowercase(),
                _ => format!("{:?}", e.kind).to_lowercase(),
            })
            .collect();
        if label.is_empty() {
            let _ = writeln!(out, "  h{} --> h{i}", i - 1);
        } else {
            let _ = writeln!(
                out,
                "  h{} -->|\"{}\"| h{i}",
                i - 1,
                mermaid_label(&label.join("; "))
            );
        }
    }
    if let (Some(last), Some(next)) = (r.verdict.last_seen, &r.verdict.expected_next) {
        let _ = writeln!(out, "  missing[\"never seen: {}\"]", mermaid_label(next));
        let _ = writeln!(out, "  h{last} -.->|dropped| missing");
        out.push_str("  style missing stroke:#d00,stroke-dasharray: 5 5\n");
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum PcapExportError {
    #[error(transparent)]
    Pcapng(#[from] dye_capture::pcapng::PcapngError),
    #[error("pcapng write: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the vendor pcapng: one interface per capture point (`<netns>/<ifname>`), the probe
/// packets at every hop (every captured packet with `all`), each probe packet commented with its
/// hop and what happened there.
pub fn pcapng<W: Write>(
    run: &TraceRun,
    report: &TraceReport,
    points: &[Point],
    out: W,
    all: bool,
) -> Result<u64, PcapExportError> {
    pcapng_named(run, report, points, out, all, &Point::name)
}

/// [`pcapng`] with the interfaces named by `name` (a trace through agents names them
/// `node/netns/ifname`: two nodes may both have a `host/eth0`).
pub fn pcapng_named<W: Write>(
    run: &TraceRun,
    report: &TraceReport,
    points: &[Point],
    out: W,
    all: bool,
    name: &dyn Fn(&Point) -> String,
) -> Result<u64, PcapExportError> {
    let mut section = SectionInfo::for_this_host();
    section.comment = Some(format!(
        "dye trace {} from {} to {} ({} {} bytes): {} — {}",
        report.probe.trace_id,
        report.probe.from,
        report.probe.to,
        report.probe.proto,
        report.probe.size,
        report.verdict.kind.as_str(),
        report.verdict.detail
    ));
    let mut w = PcapngWriter::new(out, &section)?;
    // Interfaces: the path's, and any other that carried a frame written here (another
    // pod's veth in a namespace on the path stays out unless the probe went there).
    let mut carried = vec![false; points.len()];
    for f in run.frames.iter().flatten() {
        if let Some(c) = carried.get_mut(f.point) {
            *c = true;
        }
    }
    let mut ids = Vec::with_capacity(points.len());
    for (p, carried) in points.iter().zip(carried) {
        if !p.on_path && !carried {
            ids.push(None);
            continue;
        }
        ids.push(Some(w.add_interface(&InterfaceInfo {
            name: name(p),
            description: format!(
                "{} mtu {}, netns {}, node {}",
                p.class, p.mtu, p.netns, p.node
            ),
            linktype: p.linktype,
            snaplen: 262_144,
        })?));
    }
    // Comments per frame: which probe, which leg, which hop of the reported path, what changed.
    let hop_of: HashMap<(u32, usize, Direction, Leg), &Hop> = report
        .hops
        .iter()
        .filter_map(|h| {
            let point = points
                .iter()
                .position(|p| p.netns == h.netns && p.ifname == h.ifname)?;
            Some(((h.seq, point, h.direction, h.leg), h))
        })
        .collect();
    let mut comments: HashMap<usize, String> = HashMap::new();
    for s in &run.sightings {
        let leg = s.leg;
        let leg_word = if leg == Leg::Forward {
            "forward"
        } else {
            "return"
        };
        let mut c = format!("dye {} probe {} {leg_word}", report.probe.trace_id, s.seq);
        if let Some(h) = hop_of.get(&(s.seq, s.point, s.direction, leg)) {
            let _ = write!(c, " hop {}", h.index);
            for e in &h.events {
                let _ = write!(c, "; {:?}: {}", e.kind, e.detail);
            }
        }
        if s.frames.len() > 1 {
            let _ = write!(c, " (fragment of {})", s.frames.len());
        }
        for f in &s.frames {
            comments.insert(*f, c.clone());
        }
    }
    let mut written = 0;
    for (i, f) in run.frames.iter().enumerate() {
        let Some(f) = f else { continue };
        let comment = comments.get(&i);
        if !all && comment.is_none() {
            continue;
        }
        let Some(Some(id)) = ids.get(f.point) else {
            continue;
        };
        let c: Vec<&str> = comment.map(|c| vec![c.as_str()]).unwrap_or_default();
        let dir = match f.direction {
            Direction::In => dye_capture::Direction::In,
            Direction::Out => dye_capture::Direction::Out,
        };
        w.write_packet(*id, f.ts_ns, f.orig_len, &f.data, Some(dir), &c)?;
        written += 1;
    }
    w.flush()?;
    Ok(written)
}
