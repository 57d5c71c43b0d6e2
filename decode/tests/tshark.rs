//! Every packet of every sample capture: dye's decoded fields must equal tshark's.
//!
//! tshark runs once per file with `-T fields -E occurrence=a`, so each field lists all its
//! occurrences in protocol-tree order (outer layers, inner packet, ICMP quote). dye's dissection
//! is walked in the same order and printed in tshark's notation. Reassembly is off on both sides
//! (`-o ip.defragment:FALSE`): fragments are compared as they are on the wire.
//!
//! Needs tshark (Debian package `tshark`); set DYE_SKIP_TSHARK=1 to skip on a machine without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use dye_decode::capfile::CaptureReader;
use dye_decode::{dissect, Dissection, Ip, LenFrom, LinkType, Options, Tunnel, L4};

const FIELDS: &[&str] = &[
    "ieee8021ad.id",
    "vlan.id",
    "ip.src",
    "ip.dst",
    "ip.ttl",
    "ip.id",
    "ip.flags.df",
    "ip.flags.mf",
    "ip.frag_offset",
    "ip.hdr_len",
    "ip.len",
    "ip.dsfield",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.hlim",
    "ipv6.plen",
    "ipv6.opt.jumbo",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "ipv6.fraghdr.ident",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq",
    "tcp.len",
    "vxlan.vni",
    "geneve.vni",
    "gre.key",
    "gre.sequence_number",
    "icmp.type",
    "icmp.code",
    "icmp.mtu",
    "icmpv6.type",
    "icmpv6.code",
    "icmpv6.mtu",
];

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/captures")
}

fn sample_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(samples_dir())
        .expect("samples/captures exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pcap" | "pcapng")
            )
        })
        .collect();
    v.sort();
    v
}

#[derive(Default)]
struct Acc(BTreeMap<&'static str, Vec<String>>);

impl Acc {
    fn push(&mut self, k: &'static str, v: impl ToString) {
        self.0.entry(k).or_default().push(v.to_string());
    }
    fn get(&self, k: &str) -> String {
        self.0.get(k).map(|v| v.join(",")).unwrap_or_default()
    }
}

fn ip(acc: &mut Acc, ip: &Ip) {
    if ip.version == 4 {
        acc.push("ip.src", ip.src);
        acc.push("ip.dst", ip.dst);
        acc.push("ip.ttl", ip.ttl);
        acc.push("ip.id", format!("{:#06x}", ip.id));
        acc.push("ip.flags.df", u8::from(ip.df));
        acc.push("ip.flags.mf", u8::from(ip.mf));
        acc.push("ip.frag_offset", ip.frag_offset / 8);
        acc.push("ip.hdr_len", ip.header_len);
        // tshark too takes an IPv4 total length of 0 as "TSO/BIG TCP" and uses the frame's.
        acc.push("ip.len", ip.packet_len());
        acc.push("ip.dsfield", format!("{:#04x}", ip.tos));
    } else {
        acc.push("ipv6.src", ip.src);
        acc.push("ipv6.dst", ip.dst);
        acc.push("ipv6.hlim", ip.ttl);
        acc.push("ipv6.plen", ip.total_len.saturating_sub(40));
        if let Some(a) = ip.aggregated.filter(|a| a.from == LenFrom::Jumbo) {
            acc.push("ipv6.opt.jumbo", a.len - 40);
        }
        if ip.ext.iter().any(|e| e.kind == 44) {
            acc.push("ipv6.fraghdr.offset", ip.frag_offset / 8);
            acc.push("ipv6.fraghdr.more", u8::from(ip.mf));
            acc.push("ipv6.fraghdr.ident", format!("{:#010x}", ip.id));
        }
    }
}

fn walk(acc: &mut Acc, d: &Dissection) {
    // The sample builder (like most QinQ) tags the outer of two with the 802.1ad TPID.
    for (i, v) in d.link.vlans.iter().enumerate() {
        if i == 0 && d.link.vlans.len() > 1 {
            acc.push("ieee8021ad.id", v);
        } else {
            acc.push("vlan.id", v);
        }
    }
    for o in &d.outer {
        ip(acc, &o.ip);
        if let Some(p) = o.udp {
            acc.push("udp.srcport", p.sport);
            acc.push("udp.dstport", p.dport);
        }
        match &o.tunnel {
            Tunnel::Vxlan { vni, .. } => acc.push("vxlan.vni", vni),
            Tunnel::Geneve { vni, .. } => acc.push("geneve.vni", format!("{vni:#08x}")),
            Tunnel::Gre { key, seq, .. } => {
                if let Some(k) = key {
                    acc.push("gre.key", format!("{k:#010x}"));
                }
                if let Some(s) = seq {
                    acc.push("gre.sequence_number", s);
                }
            }
            _ => {}
        }
        if let Some(l) = &o.inner_link {
            for v in &l.vlans {
                acc.push("vlan.id", v);
            }
        }
    }
    if let Some(i) = &d.ip {
        ip(acc, i);
    }
    match &d.l4 {
        Some(L4::Udp(u)) => {
            acc.push("udp.srcport", u.sport);
            acc.push("udp.dstport", u.dport);
        }
        Some(L4::Tcp(t)) => {
            acc.push("tcp.srcport", t.sport);
            acc.push("tcp.dstport", t.dport);
            // tshark shows the rest only for a complete header (or, in a quote, what's there).
            let quote = d.link.kind == "quote";
            if t.captured >= 14 || (quote && t.captured >= 8) {
                if t.captured >= 14 {
                    acc.push("tcp.flags", format!("{:#06x}", t.flags));
                }
                acc.push("tcp.seq", t.seq);
            }
            if !quote && t.captured >= 20 {
                acc.push("tcp.len", d.payload_len);
            }
        }
        Some(L4::Icmp(i)) => {
            let (t, c, m) = if i.v6 {
                ("icmpv6.type", "icmpv6.code", "icmpv6.mtu")
            } else {
                ("icmp.type", "icmp.code", "icmp.mtu")
            };
            acc.push(t, i.kind);
            acc.push(c, i.code);
            if let Some(mtu) = i.mtu {
                acc.push(m, mtu);
            }
            if let Some(q) = &i.quote {
                walk(acc, q);
            }
        }
        None => {}
    }
}

#[test]
fn every_sample_packet_matches_tshark() {
    if std::env::var_os("DYE_SKIP_TSHARK").is_some() {
        eprintln!("DYE_SKIP_TSHARK set: skipping the tshark comparison");
        return;
    }
    let files = sample_files();
    assert!(
        files.len() >= 12,
        "expected the sample captures, found {files:?}"
    );
    let opts = Options::default();
    let mut mismatches = Vec::new();
    let mut packets = 0;
    for file in &files {
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(file).args([
            "-n",
            "-o",
            "ip.defragment:FALSE",
            "-o",
            "ipv6.defragment:FALSE",
            "-o",
            "tcp.relative_sequence_numbers:FALSE",
            "-d",
            "udp.port==8472,vxlan",
            // flannel's udp backend: a bare IP packet in UDP 8285.
            "-d",
            "udp.port==8285,ip",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
            "-E",
            "separator=/t",
        ]);
        for f in FIELDS {
            cmd.args(["-e", f]);
        }
        let out = cmd
            .output()
            .expect("tshark runs (apt-get install tshark, or DYE_SKIP_TSHARK=1)");
        assert!(
            out.status.success(),
            "tshark failed on {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();

        let mut r = CaptureReader::new(std::fs::File::open(file).expect("open")).expect("capture");
        let mut n = 0;
        while let Some(fr) = r.next_frame() {
            let fr = fr.expect("frame");
            let link = LinkType::from_linktype(fr.linktype).expect("known link type");
            let d = dissect(fr.data, link, &opts);
            let mut acc = Acc::default();
            walk(&mut acc, &d);
            let theirs: Vec<&str> = lines.get(n).copied().unwrap_or("").split('\t').collect();
            for (i, f) in FIELDS.iter().enumerate() {
                let t = theirs.get(i).copied().unwrap_or("");
                let ours = acc.get(f);
                if ours != t {
                    mismatches.push(format!(
                        "{} #{}: {f}: dye {ours:?} tshark {t:?}",
                        file.file_name().and_then(|s| s.to_str()).unwrap_or("?"),
                        n + 1
                    ));
                }
            }
            n += 1;
        }
        assert_eq!(
            n,
            lines.len(),
            "packet count differs for {}",
            file.display()
        );
        packets += n;
    }
    eprintln!(
        "compared {} fields on {packets} packets in {} files",
        FIELDS.len(),
        files.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
