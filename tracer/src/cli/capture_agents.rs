//! `dye capture --agents`: the agents capture, this machine writes the one pcapng.

use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dye_capture::netns::glob_match;
use dye_capture::pcapng::InterfaceInfo;
use dye_capture::select::InterfaceSelector;
use dye_capture::{Direction, PcapngWriter, SectionInfo};

use crate::coordinator::capture::{self as agents, AgentCapturePlan, Flow, OpenPoint};

use super::capture::CaptureArgs;
use super::{EXIT_NEGATIVE, EXIT_OK};

/// An agent's capture bound by default (`dye agent`'s limits): the longest it accepts.
const AGENT_DEFAULT_DURATION: Duration = Duration::from_secs(120);
const SNAPLEN: u32 = 262_144;

pub fn run(spec: &str, args: &CaptureArgs) -> anyhow::Result<ExitCode> {
    let addrs = crate::coordinator::parse_agents(spec)?;
    let transport = crate::coordinator::transport(args.certs.as_deref())?;
    let interfaces = InterfaceSelector::parse(&args.interfaces)?;
    let ns_patterns = args.ns.clone();
    // --ns narrows the namespaces; -i picks interfaces (NETNS/NAME names its namespace).
    let select = move |_node: &str, netns: &str, ifname: &str| -> bool {
        let ns_ok = ns_patterns.is_empty() || ns_patterns.iter().any(|p| glob_match(p, netns));
        if interfaces.specs.is_empty() {
            return ns_ok;
        }
        interfaces
            .specs
            .iter()
            .any(|s| s.selects(netns, ifname) && (s.netns.is_some() || ns_ok))
    };
    let filter = args.filter.join(" ");
    let plan = AgentCapturePlan {
        filter: filter.trim().to_string(),
        outer: args.outer,
        duration: args.duration.unwrap_or(AGENT_DEFAULT_DURATION),
        max_bytes: args.max_size.unwrap_or(0),
    };

    let to_stdout = args.write.as_os_str() == "-";
    let out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.write)
                .with_context(|| format!("cannot write {}", args.write.display()))?,
        )
    };
    let mut section = SectionInfo::for_this_host();
    section.comment = section.comment.map(|c| {
        format!(
            "{c}; through dye agents {spec}{}",
            if plan.filter.is_empty() {
                String::new()
            } else {
                format!("; filter: {}", plan.filter)
            }
        )
    });
    let mut writer = PcapngWriter::new(BufWriter::with_capacity(256 * 1024, out), &section)?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut sig_ids = Vec::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Ok(id) = signal_hook::flag::register(sig, stop.clone()) {
            sig_ids.push(id);
        }
    }
    let show = std::io::stderr().is_terminal();
    let status = |msg: &str| {
        if show {
            eprintln!("dye: {msg}…");
        }
    };
    let started = Instant::now();
    let start_ns = now_ns();
    let mut sink = Sink {
        writer: &mut writer,
        filter: plan.filter.clone(),
        max_size: args.max_size,
        count: args.count,
        size_stop: false,
    };
    let result = agents::capture(&addrs, &transport, &plan, &select, stop, &status, &mut sink);
    let size_stop = sink.size_stop;
    for id in sig_ids {
        signal_hook::low_level::unregister(id);
    }
    let done = match result {
        Ok(d) => d,
        Err(e) => {
            if !to_stdout {
                let _ = std::fs::remove_file(&args.write);
            }
            return Err(e.into());
        }
    };
    let end_ns = now_ns();
    for (i, s) in done.stats.iter().enumerate() {
        writer.write_stats(
            i as u32,
            start_ns,
            end_ns,
            s.captured + s.kernel_dropped,
            s.kernel_dropped,
            0,
            s.captured,
        )?;
    }
    let (bytes, packets) = (writer.bytes_written(), writer.packets_written());
    let mut inner = writer.into_inner();
    inner.flush().context("flushing the capture file")?;
    drop(inner);

    let mut s = format!(
        "dye: {packets} packets in {:.1}s -> {} ({bytes} bytes){}\n",
        started.elapsed().as_secs_f64(),
        if to_stdout {
            "stdout".to_string()
        } else {
            args.write.display().to_string()
        },
        if size_stop {
            ", stopped at --max-size"
        } else {
            ""
        }
    );
    let w = done
        .points
        .iter()
        .map(|p| p.name().len())
        .max()
        .unwrap_or(5)
        .max(5);
    s.push_str(&format!(
        "  {:<w$}  {:>8}  {:>14}\n",
        "POINT", "CAPTURED", "KERNEL-DROPPED"
    ));
    for (p, st) in done.points.iter().zip(&done.stats) {
        s.push_str(&format!(
            "  {:<w$}  {:>8}  {:>14}{}\n",
            p.name(),
            st.captured,
            st.kernel_dropped,
            st.lost
                .as_ref()
                .map(|r| format!("  lost: {r}"))
                .unwrap_or_default()
        ));
    }
    for b in &done.blind {
        s.push_str(&format!(
            "  BLIND: {} (agent {}): {}\n",
            if b.node.is_empty() { "?" } else { &b.node },
            b.agent,
            b.reason
        ));
    }
    eprint!("{s}");
    Ok(ExitCode::from(if done.blind.is_empty() {
        EXIT_OK
    } else {
        EXIT_NEGATIVE
    }))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The pcapng file the agents' frames go into.
struct Sink<'a, W: Write> {
    writer: &'a mut PcapngWriter<W>,
    filter: String,
    max_size: Option<u64>,
    count: Option<u64>,
    size_stop: bool,
}

impl<W: Write> agents::FrameSink for Sink<'_, W> {
    fn opened(&mut self, points: &[OpenPoint]) -> Result<(), String> {
        for p in points {
            self.writer
                .add_interface(&InterfaceInfo {
                    name: p.name(),
                    description: format!(
                        "{}, MTU {}, namespace {}, node {}",
                        p.kind, p.mtu, p.netns, p.node
                    ),
                    linktype: p.linktype,
                    snaplen: SNAPLEN,
                })
                .map_err(|e| e.to_string())?;
        }
        eprintln!(
            "dye: capturing on {} point(s) through agents{}; Ctrl-C to stop",
            points.len(),
            if self.filter.is_empty() {
                String::new()
            } else {
                format!(", filter {:?}", self.filter)
            }
        );
        Ok(())
    }

    fn frame(&mut self, f: agents::AgentFrame) -> Result<Flow, String> {
        // EPB = 32 bytes + padded data + flags option (12) + end of options (4).
        let need = 48 + f.data.len().div_ceil(4) as u64 * 4;
        if self
            .max_size
            .is_some_and(|max| self.writer.bytes_written() + need > max)
        {
            self.size_stop = true;
            return Ok(Flow::Stop);
        }
        let dir = if f.inbound {
            Direction::In
        } else {
            Direction::Out
        };
        self.writer
            .write_packet(f.point as u32, f.ts_ns, f.orig_len, &f.data, Some(dir), &[])
            .map_err(|e| e.to_string())?;
        Ok(match self.count {
            Some(n) if self.writer.packets_written() >= n => Flow::Stop,
            _ => Flow::Continue,
        })
    }
}
