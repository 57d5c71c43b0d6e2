//! The addresses a namespace's netfilter rules DNAT to, read over nfnetlink (`NFT_MSG_GETRULE`
//! dump): nftables' own `dnat to ADDR` (an `immediate` loading the address, a `nat` expression
//! using it) and iptables-nft's `-j DNAT --to-destination ADDR` (an x_tables `DNAT` target). A
//! trace's scope follows the probe to these targets — a Service's endpoints, a firewall's
//! published address — which no route lookup towards the original destination would find.
//! Addresses that come out of maps (kube-proxy's nftables mode) are not seen.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::netns::{Netns, NetnsError};

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("reading the nat rules of {netns}: {source}")]
    Io {
        netns: String,
        source: std::io::Error,
    },
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFT_NAT_DNAT: u32 = 1;
const NFTA_TARGET_NAME: u16 = 1;
const NFTA_TARGET_REV: u16 = 2;
const NFTA_TARGET_INFO: u16 = 3;
/// `NF_NAT_RANGE_MAP_IPS`: the target rewrites the address (not only the port).
const NF_NAT_RANGE_MAP_IPS: u32 = 1;
/// Bound on the dump's reading: a namespace with this many messages of rules is not read on.
const MAX_MESSAGES: usize = 200_000;

/// The DNAT target addresses of every rule in `netns` (deduplicated, in rule order).
pub fn dnat_targets(netns: &Netns) -> Result<Vec<IpAddr>, NatError> {
    let io = |source| NatError::Io {
        netns: netns.name().to_string(),
        source,
    };
    let sock = netns
        .run(|| -> std::io::Result<Socket> {
            let mut s = Socket::new(NETLINK_NETFILTER)?;
            s.bind_auto()?;
            s.connect(&SocketAddr::new(0, 0))?;
            Ok(s)
        })?
        .map_err(io)?;
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + NFGENMSG_LEN);
    req.extend_from_slice(&((NLMSG_HDRLEN + NFGENMSG_LEN) as u32).to_ne_bytes());
    req.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE).to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[0, 0, 0, 0]); // NFPROTO_UNSPEC, version 0, res_id 0
    sock.send(&req, 0).map_err(io)?;
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut seen = 0usize;
    loop {
        buf.clear();
        let n = sock.recv(&mut buf, 0).map_err(io)?;
        for (ty, msg) in messages(&buf[..n.min(buf.len())]) {
            seen += 1;
            match ty {
                NLMSG_DONE => return Ok(dedup(out)),
                NLMSG_ERROR => {
                    let code = msg
                        .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map(i32::from_ne_bytes)
                        .unwrap_or(0);
                    if code == 0 {
                        return Ok(dedup(out));
                    }
                    return Err(io(std::io::Error::from_raw_os_error(-code)));
                }
                t if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE => {
                    out.extend(rule_targets(msg));
                }
                _ => {}
            }
        }
        if n == 0 || seen > MAX_MESSAGES {
            return Ok(dedup(out));
        }
    }
}

fn dedup(v: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for a in v {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// (type, whole message) of each netlink message in `b`.
fn messages(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDRLEN || len > b.len() {
            b = &[];
            return None;
        }
        let msg = &b[..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, msg))
    })
}

/// (type, payload) of each attribute in `b`; stops at a malformed one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            b = &[];
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload))
    })
}

fn attr(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

fn be32(v: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes)
}

fn ne32(v: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(v).ok().map(u32::from_ne_bytes)
}

fn address(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family {
        NFPROTO_IPV4 => <[u8; 4]>::try_from(b.get(..4)?)
            .ok()
            .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        NFPROTO_IPV6 => <[u8; 16]>::try_from(b.get(..16)?)
            .ok()
            .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    }
    .filter(|a| !a.is_unspecified())
}

/// The DNAT targets of one `NFT_MSG_NEWRULE` message (header included). Total: malformed
/// bytes give fewer targets, never a panic.
pub fn rule_targets(msg: &[u8]) -> Vec<IpAddr> {
    let Some(rule_family) = msg.get(NLMSG_HDRLEN).copied() else {
        return Vec::new();
    };
    let body = msg.get(NLMSG_HDRLEN + NFGENMSG_LEN..).unwrap_or(&[]);
    let Some(exprs) = attr(body, NFTA_RULE_EXPRESSIONS) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // What the rule's `immediate` expressions loaded, by register.
    let mut regs: Vec<(u32, &[u8])> = Vec::new();
    for (ty, elem) in attrs(exprs) {
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let name = attr(elem, NFTA_EXPR_NAME).unwrap_or(&[]);
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
        let data = attr(elem, NFTA_EXPR_DATA).unwrap_or(&[]);
        match name {
            b"immediate" => {
                let dreg = attr(data, NFTA_IMMEDIATE_DREG).and_then(be32);
                let value = attr(data, NFTA_IMMEDIATE_DATA).and_then(|d| attr(d, NFTA_DATA_VALUE));
                if let (Some(r), Some(v)) = (dreg, value) {
                    regs.retain(|(x, _)| *x != r);
                    regs.push((r, v));
                }
            }
            b"nat" => {
                if attr(data, NFTA_NAT_TYPE).and_then(be32) != Some(NFT_NAT_DNAT) {
                    continue;
                }
                let family = attr(data, NFTA_NAT_FAMILY)
                    .and_then(be32)
                    .and_then(|f| u8::try_from(f).ok())
                    .unwrap_or(rule_family);
                let reg = attr(data, NFTA_NAT_REG_ADDR_MIN).and_then(be32);
                if let Some((_, v)) = regs.iter().find(|(r, _)| Some(*r) == reg) {
                    out.extend(address(family, v));
                }
            }
            b"target" => {
                let tname = attr(data, NFTA_TARGET_NAME).unwrap_or(&[]);
                let tname = &tname[..tname.iter().position(|&c| c == 0).unwrap_or(tname.len())];
                if tname != b"DNAT" {
                    continue;
                }
                let rev = attr(data, NFTA_TARGET_REV).and_then(be32).unwrap_or(0);
                let info = attr(data, NFTA_TARGET_INFO).unwrap_or(&[]);
                out.extend(xt_dnat(rule_family, rev, info));
            }
            _ => {}
        }
    }
    out
}

/// The address of an x_tables DNAT target's info: revision 0 is
/// `nf_nat_ipv4_multi_range_compat` (rangesize, then flags, min_ip…), revisions 1 and 2 are
/// `nf_nat_range`/`nf_nat_range2` (flags, then a 16-byte min_addr).
fn xt_dnat(family: u8, rev: u32, info: &[u8]) -> Option<IpAddr> {
    let (flags_at, addr_at) = if rev == 0 { (4, 8) } else { (0, 4) };
    let flags = ne32(info.get(flags_at..flags_at + 4)?)?;
    if flags & NF_NAT_RANGE_MAP_IPS == 0 {
        return None;
    }
    let family = if rev == 0 { NFPROTO_IPV4 } else { family };
    address(family, info.get(addr_at..)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn expr(name: &str, data: Vec<u8>) -> Vec<u8> {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        let mut e = nla(NFTA_EXPR_NAME, &n);
        e.extend(nla(NFTA_EXPR_DATA, &data));
        nla(NFTA_LIST_ELEM, &e)
    }

    fn rule(family: u8, exprs: Vec<Vec<u8>>) -> Vec<u8> {
        let body = nla(NFTA_RULE_EXPRESSIONS, &exprs.concat());
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend(body);
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn native_dnat_takes_the_address_its_register_was_loaded_with() {
        let imm = [
            nla(NFTA_IMMEDIATE_DREG, &1u32.to_be_bytes()),
            nla(NFTA_IMMEDIATE_DATA, &nla(NFTA_DATA_VALUE, &[10, 244, 2, 2])),
        ]
        .concat();
        let nat = [
            nla(NFTA_NAT_TYPE, &NFT_NAT_DNAT.to_be_bytes()),
            nla(NFTA_NAT_FAMILY, &(NFPROTO_IPV4 as u32).to_be_bytes()),
            nla(NFTA_NAT_REG_ADDR_MIN, &1u32.to_be_bytes()),
        ]
        .concat();
        let m = rule(NFPROTO_IPV4, vec![expr("immediate", imm), expr("nat", nat)]);
        assert_eq!(
            rule_targets(&m),
            vec!["10.244.2.2".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn iptables_nft_dnat_targets_of_each_revision() {
        let target = |rev: u32, info: Vec<u8>| {
            let mut d = nla(NFTA_TARGET_NAME, b"DNAT\0");
            d.extend(nla(NFTA_TARGET_REV, &rev.to_be_bytes()));
            d.extend(nla(NFTA_TARGET_INFO, &info));
            expr("target", d)
        };
        // rev 0: rangesize 1, flags MAP_IPS|PROTO_SPECIFIED, min_ip, max_ip, ports.
        let mut r0 = 1u32.to_ne_bytes().to_vec();
        r0.extend(3u32.to_ne_bytes());
        r0.extend([192, 168, 50, 11, 192, 168, 50, 11, 0x75, 0x60, 0x75, 0x60]);
        // rev 2 (IPv6): flags, min_addr, max_addr, ports, base port.
        let mut r2 = 1u32.to_ne_bytes().to_vec();
        r2.extend("fd00:244:2::2".parse::<Ipv6Addr>().unwrap().octets());
        r2.extend([0u8; 16 + 6]);
        // rev 1 with only a port mapped: no address.
        let mut r1 = 2u32.to_ne_bytes().to_vec();
        r1.extend([0u8; 36]);
        assert_eq!(
            rule_targets(&rule(NFPROTO_IPV4, vec![target(0, r0)])),
            vec!["192.168.50.11".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            rule_targets(&rule(NFPROTO_IPV6, vec![target(2, r2)])),
            vec!["fd00:244:2::2".parse::<IpAddr>().unwrap()]
        );
        assert!(rule_targets(&rule(NFPROTO_IPV4, vec![target(1, r1)])).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = rule_targets(&bytes);
            let _ = messages(&bytes).count();
        }
    }
}
