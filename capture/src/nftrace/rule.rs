//! Rule text for a trace event: a trace names a rule only by (family, table, chain, handle), so
//! [`super::Armed::rule`] asks the kernel for that rule (`NFT_MSG_GETRULE`) and [`parse_rule`]
//! summarises its expressions in nft-like words: `meta l4proto udp udp dport 4242 drop`,
//! `ip saddr 10.0.0.1`, `meta nftrace set 1`, `counter`, `@th,8,32 0x6479652d`. Expressions
//! it does not know are shown by name (`ct`, `lookup`, `nat`...). Total on any input.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::{
    attrs, be32, be64, string, Verdict, NFGENMSG_LEN, NFNL_SUBSYS_NFTABLES, NFPROTO_IPV4,
    NFPROTO_IPV6, NFTA_CMP_DATA, NFTA_CMP_OP, NFTA_CMP_SREG, NFTA_DATA_VALUE, NFTA_EXPR_DATA,
    NFTA_EXPR_NAME, NFTA_IMMEDIATE_DATA, NFTA_IMMEDIATE_DREG, NFTA_LIST_ELEM, NFTA_META_DREG,
    NFTA_META_KEY, NFTA_META_SREG, NFTA_PAYLOAD_BASE, NFTA_PAYLOAD_DREG, NFTA_PAYLOAD_LEN,
    NFTA_PAYLOAD_OFFSET, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_HANDLE, NFTA_RULE_TABLE,
    NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, NFT_MSG_NEWRULE, NFT_PAYLOAD_NETWORK_HEADER,
    NFT_PAYLOAD_TRANSPORT_HEADER, NLMSG_HDRLEN,
};

// linux/netfilter/nf_tables.h, beyond what the parent module needs.
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_PAYLOAD_SREG: u16 = 5;
/// linux/netfilter/nf_tables.h: enum nft_ct_attributes, nft_ct_keys, and the meta key of
/// `meta nfproto`.
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_META_NFPROTO: u32 = 15;
/// `ct state` bits (NF_CT_STATE_BIT of each ctinfo; untracked is bit 6).
const CT_STATES: [(u32, &str); 5] = [
    (1, "invalid"),
    (2, "established"),
    (4, "related"),
    (8, "new"),
    (64, "untracked"),
];
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_LOOKUP_SET: u16 = 1;
const NFT_PAYLOAD_LL_HEADER: u32 = 0;

/// `enum nft_meta_keys`, in order (0 = NFT_META_LEN ... 27 = NFT_META_OIFKIND).
const META_KEYS: [&str; 28] = [
    "length",
    "protocol",
    "priority",
    "mark",
    "iif",
    "oif",
    "iifname",
    "oifname",
    "iiftype",
    "oiftype",
    "skuid",
    "skgid",
    "nftrace",
    "rtclassid",
    "secmark",
    "nfproto",
    "l4proto",
    "ibrname",
    "obrname",
    "pkttype",
    "cpu",
    "iifgroup",
    "oifgroup",
    "cgroup",
    "random",
    "secpath",
    "iifkind",
    "oifkind",
];

/// One rule as the kernel returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    /// Expression names in order (`meta`, `cmp`, `payload`, `immediate`...).
    pub expressions: Vec<String>,
    /// The nft-like summary.
    pub text: String,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (handle {})", self.text, self.handle)
    }
}

/// What a register holds, as words.
#[derive(Clone, Debug)]
enum Loaded {
    Meta(u32),
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    Value(Vec<u8>),
    /// `ct <key>`.
    Ct(u32),
    /// `ct state` masked with these bits: `!= 0` reads as `ct state invalid,new`.
    CtStates(u32),
    Other(String),
}

/// `invalid,new` for a `ct state` bit mask (host order, as the kernel keeps it).
fn ct_state_names(mask: u32) -> String {
    let names: Vec<&str> = CT_STATES
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        format!("{mask:#x}")
    } else {
        names.join(",")
    }
}

fn ne_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.try_into().ok()?))
}

fn meta_name(key: u32) -> String {
    META_KEYS
        .get(key as usize)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("key{key}"))
}

fn hex(v: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in v {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        p => p.to_string(),
    }
}

struct Summary {
    family: u8,
    /// An inet table's `meta nfproto` match fixes the network protocol for what follows
    /// (nft hides that implicit match: `ip saddr` in an inet table compiles to it).
    net: Option<u8>,
    /// The transport protocol a previous `meta l4proto` / `ip protocol` match fixed.
    l4: Option<String>,
    regs: Vec<(u32, Loaded)>,
    words: Vec<String>,
}

impl Summary {
    fn set(&mut self, reg: u32, l: Loaded) {
        self.regs.retain(|(r, _)| *r != reg);
        self.regs.push((reg, l));
    }

    fn get(&self, reg: u32) -> Option<&Loaded> {
        self.regs.iter().find(|(r, _)| *r == reg).map(|(_, l)| l)
    }

    /// `left op value` for a comparison against what `reg` holds.
    fn cmp(&mut self, reg: u32, op: u32, data: &[u8]) {
        let op = match op {
            0 => "",
            1 => "!= ",
            2 => "< ",
            3 => "<= ",
            4 => "> ",
            5 => ">= ",
            _ => "?? ",
        };
        let (left, right) = match self.get(reg).cloned() {
            Some(Loaded::Meta(NFT_META_NFPROTO)) if op.is_empty() && data.len() == 1 => {
                self.net = Some(data[0]);
                return;
            }
            Some(Loaded::CtStates(mask)) if op == "!= " && data.iter().all(|b| *b == 0) => {
                self.words
                    .push(format!("ct state {}", ct_state_names(mask)));
                return;
            }
            Some(Loaded::Ct(NFT_CT_STATE)) if op.is_empty() => {
                let v = ne_u32(data).unwrap_or(0);
                self.words.push(format!("ct state {}", ct_state_names(v)));
                return;
            }
            Some(Loaded::Meta(key)) => {
                let right = match (key, data) {
                    (16, [p]) => {
                        self.l4 = Some(proto_name(*p));
                        proto_name(*p)
                    }
                    (6 | 7 | 26 | 27, _) => format!(
                        "\"{}\"",
                        String::from_utf8_lossy(data).trim_end_matches('\0')
                    ),
                    (_, [a, b, c, d]) => u32::from_ne_bytes([*a, *b, *c, *d]).to_string(),
                    _ => hex(data),
                };
                (format!("meta {}", meta_name(key)), right)
            }
            Some(Loaded::Payload { base, offset, len }) => {
                self.payload_cmp(base, offset, len, data)
            }
            Some(Loaded::Other(s)) => (s, hex(data)),
            Some(Loaded::Ct(k)) => (format!("ct key{k}"), hex(data)),
            Some(Loaded::CtStates(m)) => (format!("ct state & {m:#x}"), hex(data)),
            Some(Loaded::Value(_)) | None => (format!("reg {reg}"), hex(data)),
        };
        self.words.push(format!("{left} {op}{right}"));
    }

    fn payload_cmp(&mut self, base: u32, offset: u32, len: u32, data: &[u8]) -> (String, String) {
        let net = self.net.unwrap_or(self.family);
        let v4 = net == NFPROTO_IPV4;
        let v6 = net == NFPROTO_IPV6;
        match (base, offset, len, data) {
            // A prefix on a byte boundary: nft loads only its bytes.
            (NFT_PAYLOAD_NETWORK_HEADER, 12 | 16, 1..=3, _) if v4 && data.len() == len as usize => {
                let mut a = [0u8; 4];
                a[..data.len()].copy_from_slice(data);
                (
                    format!("ip {}", if offset == 12 { "saddr" } else { "daddr" }),
                    format!("{}/{}", Ipv4Addr::from(a), len * 8),
                )
            }
            (NFT_PAYLOAD_NETWORK_HEADER, 8 | 24, 1..=15, _) if v6 && data.len() == len as usize => {
                let mut a = [0u8; 16];
                a[..data.len()].copy_from_slice(data);
                (
                    format!("ip6 {}", if offset == 8 { "saddr" } else { "daddr" }),
                    format!("{}/{}", Ipv6Addr::from(a), len * 8),
                )
            }
            (NFT_PAYLOAD_NETWORK_HEADER, 12 | 16, 4, [a, b, c, d]) if v4 => (
                format!("ip {}", if offset == 12 { "saddr" } else { "daddr" }),
                Ipv4Addr::new(*a, *b, *c, *d).to_string(),
            ),
            (NFT_PAYLOAD_NETWORK_HEADER, 8 | 24, 16, _) if v6 => {
                let a = <[u8; 16]>::try_from(data).map(Ipv6Addr::from);
                (
                    format!("ip6 {}", if offset == 8 { "saddr" } else { "daddr" }),
                    a.map(|a| a.to_string()).unwrap_or_else(|_| hex(data)),
                )
            }
            (NFT_PAYLOAD_NETWORK_HEADER, 9, 1, [p]) if v4 => {
                self.l4 = Some(proto_name(*p));
                ("ip protocol".into(), proto_name(*p))
            }
            (NFT_PAYLOAD_NETWORK_HEADER, 6, 1, [p]) if v6 => {
                self.l4 = Some(proto_name(*p));
                ("ip6 nexthdr".into(), proto_name(*p))
            }
            (NFT_PAYLOAD_TRANSPORT_HEADER, 0 | 2, 2, [a, b]) => {
                let l4 = self.l4.clone().unwrap_or_else(|| "th".into());
                (
                    format!("{l4} {}", if offset == 0 { "sport" } else { "dport" }),
                    u16::from_be_bytes([*a, *b]).to_string(),
                )
            }
            _ => (payload_name(base, offset, len), hex(data)),
        }
    }
}

fn payload_name(base: u32, offset: u32, len: u32) -> String {
    let base = match base {
        NFT_PAYLOAD_LL_HEADER => "ll".to_string(),
        NFT_PAYLOAD_NETWORK_HEADER => "nh".to_string(),
        NFT_PAYLOAD_TRANSPORT_HEADER => "th".to_string(),
        b => format!("base{b}"),
    };
    // nft writes raw payload offsets and lengths in bits.
    // nft writes raw payload offsets and lengths in bits (u64: no overflow on any input).
    format!("@{base},{},{}", u64::from(offset) * 8, u64::from(len) * 8)
}

fn data_value(v: &[u8]) -> Result<Vec<u8>, String> {
    for a in attrs(v) {
        let (ty, p) = a?;
        if ty == NFTA_DATA_VALUE {
            return Ok(p.to_vec());
        }
    }
    Err("data without a value".into())
}

fn verdict_of(v: &[u8]) -> Result<Verdict, String> {
    let mut code = None;
    let mut chain = None;
    for a in attrs(v) {
        let (ty, p) = a?;
        match ty {
            NFTA_VERDICT_CODE => code = Some(be32(p, "verdict code")? as i32),
            NFTA_VERDICT_CHAIN => chain = Some(string(p, "verdict chain")?),
            _ => {}
        }
    }
    Ok(Verdict::from_code(
        code.ok_or("verdict without a code")?,
        chain,
    ))
}

/// Field `ty` of an expression's data as a be32.
fn field(data: &[(u16, &[u8])], ty: u16) -> Result<Option<u32>, String> {
    data.iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, p)| be32(p, "expression field"))
        .transpose()
}

/// `NFTA_MATCH_NAME` / `NFTA_TARGET_NAME` and `…_INFO` (linux/netfilter/nf_tables_compat.h: the
/// match and target attribute enums share these numbers).
const NFTA_XT_NAME: u16 = 1;
const NFTA_XT_INFO: u16 = 3;

fn raw<'a>(data: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    data.iter().find(|(t, _)| *t == ty).map(|(_, p)| *p)
}

fn expression(s: &mut Summary, name: &str, data: &[(u16, &[u8])]) -> Result<(), String> {
    match name {
        "meta" => {
            let key = field(data, NFTA_META_KEY)?.unwrap_or(u32::MAX);
            if let Some(d) = field(data, NFTA_META_DREG)? {
                s.set(d, Loaded::Meta(key));
            } else if let Some(r) = field(data, NFTA_META_SREG)? {
                let v = match s.get(r) {
                    Some(Loaded::Value(v)) if v.len() <= 4 => {
                        let mut b = [0u8; 4];
                        b[..v.len()].copy_from_slice(v);
                        u32::from_ne_bytes(b).to_string()
                    }
                    Some(Loaded::Value(v)) => hex(v),
                    _ => format!("reg {r}"),
                };
                s.words.push(format!("meta {} set {v}", meta_name(key)));
            }
        }
        "ct" => {
            let key = field(data, NFTA_CT_KEY)?.unwrap_or(u32::MAX);
            match field(data, NFTA_CT_DREG)? {
                Some(d) => s.set(d, Loaded::Ct(key)),
                None => s.words.push(format!("ct key{key} set")),
            }
        }
        "payload" => {
            let base = field(data, NFTA_PAYLOAD_BASE)?.unwrap_or(u32::MAX);
            let offset = field(data, NFTA_PAYLOAD_OFFSET)?.unwrap_or(0);
            let len = field(data, NFTA_PAYLOAD_LEN)?.unwrap_or(0);
            if let Some(d) = field(data, NFTA_PAYLOAD_DREG)? {
                s.set(d, Loaded::Payload { base, offset, len });
            } else if field(data, NFTA_PAYLOAD_SREG)?.is_some() {
                s.words
                    .push(format!("{} set", payload_name(base, offset, len)));
            }
        }
        "cmp" => {
            let reg = field(data, NFTA_CMP_SREG)?.unwrap_or(0);
            let op = field(data, NFTA_CMP_OP)?.unwrap_or(0);
            let v = data_value(raw(data, NFTA_CMP_DATA).unwrap_or(&[]))?;
            s.cmp(reg, op, &v);
        }
        "immediate" => {
            let reg = field(data, NFTA_IMMEDIATE_DREG)?.unwrap_or(0);
            let d = raw(data, NFTA_IMMEDIATE_DATA).unwrap_or(&[]);
            for a in attrs(d) {
                let (ty, p) = a?;
                match ty {
                    NFTA_DATA_VERDICT => s.words.push(verdict_of(p)?.to_string()),
                    NFTA_DATA_VALUE => s.set(reg, Loaded::Value(p.to_vec())),
                    _ => {}
                }
            }
        }
        "bitwise" => {
            let src = field(data, NFTA_BITWISE_SREG)?.unwrap_or(0);
            let dst = field(data, NFTA_BITWISE_DREG)?.unwrap_or(src);
            if let Some(Loaded::Ct(NFT_CT_STATE)) = s.get(src) {
                let mask = raw(data, NFTA_BITWISE_MASK)
                    .map(data_value)
                    .transpose()?
                    .and_then(|m| ne_u32(&m));
                if let Some(m) = mask {
                    s.set(dst, Loaded::CtStates(m));
                    return Ok(());
                }
            }
            let mask = raw(data, NFTA_BITWISE_MASK)
                .map(data_value)
                .transpose()?
                .map(|m| hex(&m))
                .unwrap_or_else(|| "?".into());
            let left = match s.get(src).cloned() {
                Some(Loaded::Meta(k)) => format!("meta {}", meta_name(k)),
                Some(Loaded::Payload { base, offset, len }) => payload_name(base, offset, len),
                Some(Loaded::Other(o)) => o,
                _ => format!("reg {src}"),
            };
            s.set(dst, Loaded::Other(format!("{left} & {mask}")));
        }
        "lookup" => {
            let set = raw(data, NFTA_LOOKUP_SET)
                .map(|p| string(p, "set"))
                .transpose()?
                .unwrap_or_default();
            s.words.push(format!("lookup @{set}"));
        }
        "counter" => s.words.push("counter".into()),
        // iptables-nft's xtables matches and targets: name them (and a comment's text), as
        // `iptables-nft-save` would.
        "match" | "target" => {
            let xt = raw(data, NFTA_XT_NAME)
                .map(|p| string(p, "xt name"))
                .transpose()?
                .unwrap_or_default();
            let info = raw(data, NFTA_XT_INFO).unwrap_or_default();
            match (name, xt.as_str()) {
                ("match", "comment") => {
                    let text = info.split(|b| *b == 0).next().unwrap_or_default();
                    s.words
                        .push(format!("comment \"{}\"", String::from_utf8_lossy(text)));
                }
                ("match", m) => s.words.push(format!("xt match \"{m}\"")),
                (_, t) => s.words.push(format!("xt target \"{t}\"")),
            }
        }
        other => s.words.push(other.to_string()),
    }
    Ok(())
}

/// Decodes one `NFT_MSG_NEWRULE` message (header included), the answer to `NFT_MSG_GETRULE`.
/// Total on any input.
pub fn parse_rule(bytes: &[u8]) -> Result<Rule, String> {
    let hdr = NLMSG_HDRLEN + NFGENMSG_LEN;
    if bytes.len() < hdr {
        return Err(format!("{} bytes: too short for a rule", bytes.len()));
    }
    let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let ty = u16::from_ne_bytes([bytes[4], bytes[5]]);
    if ty != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE {
        return Err(format!("message type {ty:#06x}, not a rule"));
    }
    if len < hdr || len > bytes.len() {
        return Err(format!(
            "header length {len} with {} bytes at hand",
            bytes.len()
        ));
    }
    let family = bytes[NLMSG_HDRLEN];
    let (mut table, mut chain, mut handle) = (None, None, None);
    let mut s = Summary {
        family,
        net: None,
        l4: None,
        regs: Vec::new(),
        words: Vec::new(),
    };
    let mut names = Vec::new();
    for a in attrs(&bytes[hdr..len]) {
        let (ty, p) = a?;
        match ty {
            NFTA_RULE_TABLE => table = Some(string(p, "table")?),
            NFTA_RULE_CHAIN => chain = Some(string(p, "chain")?),
            NFTA_RULE_HANDLE => handle = Some(be64(p, "handle")?),
            NFTA_RULE_EXPRESSIONS => {
                for e in attrs(p) {
                    let (ty, p) = e?;
                    if ty != NFTA_LIST_ELEM {
                        continue;
                    }
                    let mut name = None;
                    let mut data = Vec::new();
                    for f in attrs(p) {
                        let (ty, p) = f?;
                        match ty {
                            NFTA_EXPR_NAME => name = Some(string(p, "expression name")?),
                            NFTA_EXPR_DATA => {
                                for d in attrs(p) {
                                    data.push(d?);
                                }
                            }
                            _ => {}
                        }
                    }
                    let name = name.ok_or("expression without a name")?;
                    expression(&mut s, &name, &data)?;
                    names.push(name);
                }
            }
            _ => {}
        }
    }
    let handle = handle.ok_or("rule without a handle")?;
    Ok(Rule {
        family,
        table: table.ok_or("rule without a table")?,
        chain: chain.ok_or("rule without a chain")?,
        handle,
        expressions: names,
        text: if s.words.is_empty() {
            format!("rule handle {handle}")
        } else {
            s.words.join(" ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::{rule_exprs, MsgBuilder, ProbeMatch, NFTA_RULE_EXPRESSIONS};
    use super::*;
    use proptest::prelude::*;

    fn dye_rule(v6: bool) -> Vec<u8> {
        let m = if v6 {
            ProbeMatch::new(17, "fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
        } else {
            ProbeMatch::new(17, "10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        }
        .with_marker(8, b"dye-".to_vec());
        let fam = if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
        let mut r = MsgBuilder::new((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE, 0, 0, fam, 0);
        r.put_str(NFTA_RULE_TABLE, "dye_x")
            .put_str(NFTA_RULE_CHAIN, "out")
            .put(NFTA_RULE_HANDLE, &4u64.to_be_bytes());
        r.begin(NFTA_RULE_EXPRESSIONS);
        rule_exprs(&mut r, &m);
        r.end();
        r.finish()
    }

    #[test]
    fn summarises_dyes_own_rule() {
        let r = parse_rule(&dye_rule(false)).unwrap();
        assert_eq!(
            r.text,
            "meta l4proto udp ip saddr 10.0.0.1 ip daddr 10.0.0.2 @th,64,32 0x6479652d \
             meta nftrace set 1"
        );
        assert_eq!(
            (r.table.as_str(), r.chain.as_str(), r.handle),
            ("dye_x", "out", 4)
        );
        let r6 = parse_rule(&dye_rule(true)).unwrap();
        assert!(
            r6.text.contains("ip6 saddr fd00::1 ip6 daddr fd00::2"),
            "{}",
            r6.text
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_rule(&bytes);
        }

        #[test]
        fn mutated_rules_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
            v6 in any::<bool>(),
        ) {
            let mut bytes = dye_rule(v6);
            for (at, val) in flips {
                let i = at % bytes.len();
                bytes[i] = val;
            }
            let keep = cut % (bytes.len() + 1);
            let _ = parse_rule(&bytes[..keep]);
            let _ = parse_rule(&bytes);
        }
    }
}
