//! NAT confirmation: the conntrack entry of the namespace that rewrote the probe, looked up by
//! the probe's tuple before the rewrite. Read with the `conntrack` tool (conntrack-tools) run
//! from a thread inside that namespace; the child inherits the thread's namespace.

use std::net::IpAddr;
use std::process::Command;

use dye_capture::Netns;
use dye_core::report::Conntrack;
use dye_core::seam::ConntrackQuery;

/// The entry whose original direction is `before` (the packet as it entered the namespace).
pub fn lookup(netns: &Netns, before: &ConntrackQuery) -> Option<Conntrack> {
    let before = *before;
    let proto = match before.proto {
        1 => "icmp".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        58 => "icmpv6".to_string(),
        n => n.to_string(),
    };
    let mut args: Vec<String> = vec!["-L".into(), "-p".into(), proto];
    args.extend([
        "--orig-src".into(),
        before.src.to_string(),
        "--orig-dst".into(),
        before.dst.to_string(),
    ]);
    if let (Some(s), Some(d)) = (before.sport, before.dport) {
        args.extend([
            "--orig-port-src".into(),
            s.to_string(),
            "--orig-port-dst".into(),
            d.to_string(),
        ]);
    }
    let out = netns
        .run(move || Command::new("conntrack").args(&args).output())
        .ok()?
        .map_err(|e| tracing::debug!("conntrack not available: {e}"))
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| parse_line(l, &before))
}

/// Parses one `conntrack -L` line, e.g.
/// `tcp 6 119 SYN_RECV src=A dst=B sport=1 dport=2 src=C dst=D sport=3 dport=4 [ASSURED] mark=0 use=1`.
pub fn parse_line(line: &str, before: &ConntrackQuery) -> Option<Conntrack> {
    let mut words = line.split_whitespace();
    let proto = words.next()?.to_string();
    let mut tuples: Vec<Vec<(&str, &str)>> = vec![Vec::new()];
    let mut status = Vec::new();
    for w in words {
        if let Some((k, v)) = w.split_once('=') {
            if k == "src"
                && tuples.last().map(|t| !t.is_empty()).unwrap_or(false)
                && tuples.len() < 2
            {
                tuples.push(Vec::new());
            }
            if matches!(
                k,
                "src" | "dst" | "sport" | "dport" | "type" | "code" | "id"
            ) {
                if let Some(t) = tuples.last_mut() {
                    t.push((k, v));
                }
            }
        } else if w.starts_with('[') || w.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            status.push(w.trim_matches(|c| c == '[' || c == ']').to_string());
        }
    }
    let [orig, reply] = <[Vec<(&str, &str)>; 2]>::try_from(tuples).ok()?;
    let get = |t: &[(&str, &str)], k: &str| {
        t.iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_string())
    };
    // It must be the probe's entry.
    if get(&orig, "src")? != before.src.to_string() || get(&orig, "dst")? != before.dst.to_string()
    {
        return None;
    }
    let fmt = |t: &[(&str, &str)]| -> String {
        let ep = |a: Option<String>, p: Option<String>| match (a, p) {
            (Some(a), Some(p)) => format!("{}:{p}", bracket(&a)),
            (Some(a), None) => a,
            _ => "?".into(),
        };
        format!(
            "{proto} {} → {}",
            ep(get(t, "src"), get(t, "sport")),
            ep(get(t, "dst"), get(t, "dport"))
        )
    };
    Some(Conntrack {
        orig: fmt(&orig),
        reply: fmt(&reply),
        status: status.join(" "),
    })
}

fn bracket(a: &str) -> String {
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{a}]"),
        _ => a.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn before() -> ConntrackQuery {
        ConntrackQuery {
            proto: 6,
            src: "10.244.1.3".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            sport: Some(40001),
            dport: Some(80),
        }
    }

    #[test]
    fn parses_a_dnat_entry() {
        let line = "tcp      6 118 SYN_RECV src=10.244.1.3 dst=10.96.0.10 sport=40001 dport=80 src=10.244.2.2 dst=10.244.1.3 sport=8080 dport=40001 [ASSURED] mark=0 use=1";
        let ct = parse_line(line, &before()).unwrap();
        assert_eq!(ct.orig, "tcp 10.244.1.3:40001 → 10.96.0.10:80");
        assert_eq!(ct.reply, "tcp 10.244.2.2:8080 → 10.244.1.3:40001");
        assert_eq!(ct.status, "SYN_RECV ASSURED");
    }

    #[test]
    fn ignores_other_flows_and_garbage() {
        let other = "tcp 6 118 ESTABLISHED src=10.0.0.1 dst=10.96.0.10 sport=1 dport=80 src=10.244.2.2 dst=10.0.0.1 sport=8080 dport=1 mark=0";
        assert!(parse_line(other, &before()).is_none());
        assert!(parse_line("", &before()).is_none());
        assert!(parse_line(
            "conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.",
            &before()
        )
        .is_none());
        assert!(parse_line("tcp 6 src=10.244.1.3", &before()).is_none());
    }
}
