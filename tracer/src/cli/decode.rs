//! `dye decode FILE...`: read pcap/pcapng captures and print every packet's whole layer stack.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use dye_decode::capfile::CaptureReader;
use dye_decode::fmt::Line;
use dye_decode::{
    dissect, dissect_into, filter_expression_ports, Dissection, FoundMarker, LinkType, Options,
    Reassembler,
};
use serde::Serialize;

use super::{EXIT_NEGATIVE, EXIT_OK};

#[derive(Debug, Args)]
#[command(after_help = "\
Each packet is printed on one line, outermost layer first, layers separated by ' | ':

  12:00:00.000000000 vxlan vni 1 192.168.50.11:40000→192.168.50.12:8472 | 10.244.1.2→10.244.2.3 \\
      icmp echo request id 1 seq 1 ttl 64 id 20 DF len 84 [dye 1a2b3c4d#1]

  timestamp   UTC, nanoseconds.
  tunnels     vxlan/geneve (vni, UDP ports), gre/gretap (key, seq), ipip, sit, ip6ip6, ip4ip6,
              any depth; 802.1Q/QinQ tags as 'vlan 100 |' or 'vlan 200.300 |'.
  inner       addresses and ports, tcp [flags] seq ack win, udp len, icmp/icmp6 type with id/seq
              and MTU (frag-needed, packet-too-big); ICMP errors show the quoted packet in
              '(quote ...)', dissected as far as the quote goes.
  IP fields   ttl, IP id, DF, total length, options, IPv6 extension headers, 'frag off N MF'.
  marker      [dye TRACEID#SEQ] when the packet carries a dye probe marker (at the end of the
              payload, of the last fragment, or of an ICMP error's quote).
  malformed   '!' and the reason; malformed packets are counted, never fatal.

A summary (packets, malformed, markers) goes to stderr. Link types: Ethernet, Linux cooked
(SLL, SLL2, e.g. `tcpdump -i any`), raw IP, BSD null.

Exit status: 0 ok; 1 when --marker/--trace-id matched nothing; 2 when a file is missing,
unreadable or not a capture.

Examples:
  dye decode capture.pcapng
  dye decode --trace-id 1a2b3c4d node-1.pcap node-2.pcap
  dye decode --json --reassemble frags.pcap | jq .marker
  dye decode --vxlan-port 4790 overlay.pcap
  tcpdump -i any -w probes.pcap \"$(dye decode --print-filter --trace-id 1a2b3c4d)\"")]
pub struct DecodeArgs {
    /// Capture files (pcap or pcapng).
    #[arg(value_name = "FILE", required_unless_present = "print_filter")]
    files: Vec<PathBuf>,

    /// One JSON object per packet (newline-delimited) instead of text.
    #[arg(long)]
    json: bool,

    /// Show only packets that carry a dye marker (directly, in their last fragment, in an ICMP
    /// error's quote, or — with --reassemble — in the reassembled datagram).
    #[arg(long)]
    marker: bool,

    /// Show only packets carrying the marker of this trace (8 hex digits); implies --marker.
    #[arg(long, value_name = "HEX", value_parser = parse_trace_id)]
    trace_id: Option<u32>,

    /// UDP destination port to decode as VXLAN; repeat for several. Replaces the defaults
    /// (4789 and 8472).
    #[arg(long = "vxlan-port", value_name = "PORT")]
    vxlan_ports: Vec<u16>,

    /// UDP destination port to decode as Geneve; repeat for several. Replaces the default (6081).
    #[arg(long = "geneve-port", value_name = "PORT")]
    geneve_ports: Vec<u16>,

    /// UDP destination port whose payload is decoded as a bare IP packet when it starts like
    /// one (flannel's udp backend, shown as ip-in-udp); repeat for several. Replaces the
    /// default (8285).
    #[arg(long = "ip-in-udp-port", value_name = "PORT")]
    ip_in_udp_ports: Vec<u16>,

    /// Reassemble IP fragments (per file and interface, bounded memory) and print the whole
    /// datagram after the fragment that completes it.
    #[arg(long)]
    reassemble: bool,

    /// Stop after this many packets (over all files).
    #[arg(short = 'c', long, value_name = "N")]
    count: Option<u64>,

    /// Print the libpcap filter expression that matches dye probes (and the fragments and ICMP
    /// errors that may belong to them) at any encapsulation depth, and exit.
    #[arg(long)]
    print_filter: bool,
}

fn parse_trace_id(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0x");
    if t.is_empty() || t.len() > 8 {
        return Err(format!(
            "'{s}' is not a trace id: expected 1-8 hex digits, e.g. 1a2b3c4d"
        ));
    }
    u32::from_str_radix(t, 16)
        .map_err(|_| format!("'{s}' is not a trace id: expected 1-8 hex digits, e.g. 1a2b3c4d"))
}

#[derive(Debug, Default)]
struct Counts {
    packets: u64,
    malformed: u64,
    markers: u64,
    shown: u64,
    reassembled: u64,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    n: u64,
    ts_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<u32>,
    len: u32,
    caplen: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    reassembled_fragments: Option<usize>,
    #[serde(flatten)]
    d: &'a Dissection,
}

/// Writes `HH:MM:SS.nnnnnnnnn ` (UTC) without going through the formatting machinery.
fn write_ts(out: &mut impl Write, ts_ns: u64) -> io::Result<()> {
    let secs = ts_ns / 1_000_000_000;
    let ns = ts_ns % 1_000_000_000;
    let day = secs % 86_400;
    let (h, m, s) = (day / 3600, day / 60 % 60, day % 60);
    let mut b = *b"00:00:00.000000000 ";
    let two = |b: &mut [u8], at: usize, v: u64| {
        b[at] = b'0' + (v / 10) as u8;
        b[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut b, 0, h);
    two(&mut b, 3, m);
    two(&mut b, 6, s);
    let mut n = ns;
    for i in (9..18).rev() {
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.write_all(&b)
}

pub fn run(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let mut opts = Options::default();
    if !args.vxlan_ports.is_empty() {
        opts.vxlan_ports = args.vxlan_ports.clone();
    }
    if !args.geneve_ports.is_empty() {
        opts.geneve_ports = args.geneve_ports.clone();
    }
    if !args.ip_in_udp_ports.is_empty() {
        opts.ip_in_udp_ports = args.ip_in_udp_ports.clone();
    }
    if args.print_filter {
        println!(
            "{}",
            filter_expression_ports(args.trace_id, &opts.vxlan_ports, &opts.ip_in_udp_ports)
        );
        return Ok(ExitCode::from(EXIT_OK));
    }
    // Open everything first: a bad file is reported before any output.
    let mut readers = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let r = CaptureReader::new(f).with_context(|| format!("cannot read {}", path.display()))?;
        readers.push((path, r));
    }

    let only_markers = args.marker || args.trace_id.is_some();
    let wants = |m: Option<FoundMarker>| -> bool {
        match (m, args.trace_id) {
            (None, _) => false,
            (Some(m), Some(id)) => m.marker.trace_id == id,
            (Some(_), None) => true,
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut c = Counts::default();
    let mut d = Dissection::default();
    let multi = readers.len() > 1;
    let mut reasm: Reassembler<(usize, u32)> = Reassembler::default();
    let mut text = String::with_capacity(512);

    'files: for (fi, (path, reader)) in readers.iter_mut().enumerate() {
        let name = path.display().to_string();
        if multi && !args.json && !only_markers {
            writeln!(out, "# {name}")?;
        }
        let mut interfaces_seen = 0u32;
        loop {
            if args.count.is_some_and(|n| c.packets >= n) {
                break 'files;
            }
            let frame = match reader.next_frame() {
                None => break,
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    out.flush()?;
                    eprintln!(
                        "dye decode: {name}: {e}; stopping this file after {} packets",
                        c.packets
                    );
                    c.malformed += 1;
                    break;
                }
            };
            c.packets += 1;
            interfaces_seen = interfaces_seen.max(frame.interface);
            let Some(link) = LinkType::from_linktype(frame.linktype) else {
                c.malformed += 1;
                if !only_markers {
                    write_ts(&mut out, frame.ts_ns)?;
                    writeln!(out, "!unsupported link type {}", frame.linktype)?;
                }
                continue;
            };
            dissect_into(frame.data, link, &opts, &mut d);
            d.set_orig_len(frame.data.len(), frame.orig_len as usize);
            if d.is_malformed() {
                c.malformed += 1;
            }
            let m = d.find_marker();
            if m.is_some() {
                c.markers += 1;
            }
            let again = if args.reassemble {
                reasm
                    .push((fi, frame.interface), frame.ts_ns, frame.data, &d)
                    .map(|r| (dissect(&r.datagram, LinkType::RawIp, &opts), r))
            } else {
                None
            };
            let show = !only_markers || wants(m);
            if show {
                c.shown += 1;
                emit(
                    &mut out, &args, &name, multi, c.packets, &frame, &d, None, &mut text,
                )?;
            }
            if let Some((rd, r)) = again {
                c.reassembled += 1;
                let rm = rd.find_marker();
                if rm.is_some() {
                    c.markers += 1;
                }
                if !only_markers || wants(rm) {
                    c.shown += 1;
                    emit(
                        &mut out,
                        &args,
                        &name,
                        multi,
                        c.packets,
                        &frame,
                        &rd,
                        Some(r.fragment_sizes.len()),
                        &mut text,
                    )?;
                }
            }
        }
        let _ = interfaces_seen;
    }
    out.flush()?;
    let mut summary = format!(
        "dye decode: {} packets, {} malformed, {} with dye markers",
        c.packets, c.malformed, c.markers
    );
    if args.reassemble {
        summary.push_str(&format!(", {} reassembled", c.reassembled));
    }
    if only_markers {
        summary.push_str(&format!(", {} shown", c.shown));
    }
    eprintln!("{summary}");
    if only_markers && c.shown == 0 {
        return Ok(ExitCode::from(EXIT_NEGATIVE));
    }
    Ok(ExitCode::from(EXIT_OK))
}

#[allow(clippy::too_many_arguments)]
fn emit(
    out: &mut impl Write,
    args: &DecodeArgs,
    name: &str,
    multi: bool,
    n: u64,
    frame: &dye_decode::capfile::Frame<'_>,
    d: &Dissection,
    reassembled: Option<usize>,
    text: &mut String,
) -> io::Result<()> {
    if args.json {
        let line = JsonLine {
            file: multi.then_some(name),
            n,
            ts_ns: frame.ts_ns,
            interface: (frame.interface != 0).then_some(frame.interface),
            len: frame.orig_len,
            caplen: frame.data.len(),
            reassembled_fragments: reassembled,
            d,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
    } else {
        use std::fmt::Write as _;
        write_ts(out, frame.ts_ns)?;
        text.clear();
        if let Some(k) = reassembled {
            let _ = write!(text, "reassembled {k} fragments: ");
        }
        let _ = write!(text, "{}", Line(d));
        text.push('\n');
        out.write_all(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let mut v = Vec::new();
        write_ts(&mut v, 1_704_110_400_000_000_001).unwrap();
        assert_eq!(String::from_utf8(v).unwrap(), "12:00:00.000000001 ");
    }

    #[test]
    fn trace_ids() {
        assert_eq!(parse_trace_id("1a2b3c4d"), Ok(0x1a2b3c4d));
        assert_eq!(parse_trace_id("0xff"), Ok(0xff));
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id("123456789").is_err());
    }
}
