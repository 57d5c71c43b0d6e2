//! What one probe of the search did, read from its sightings: answered at the source, refused
//! with an ICMP error (too big, or something else), or vanished — and then where.

use std::net::IpAddr;

use crate::model::{Direction, IcmpKind};
use crate::observe::{Sighting, SightingKind};
use serde::{Deserialize, Serialize};

use crate::path::{Leg, Transport};

/// How a probe proved it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// An answer came back from `from`.
    Answer { answer: Transport, from: IpAddr },
    /// An ICMP error only the destination itself sends (port or protocol unreachable).
    DestinationError { error: Transport, from: IpAddr },
    /// It was seen entering the destination's namespace (no answer).
    SeenEntering,
}

/// The fate of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    Passed(Arrival),
    /// ICMP Fragmentation Needed / Packet Too Big from `sender`.
    TooBig {
        sender: IpAddr,
        mtu: Option<u32>,
    },
    /// Another ICMP error (host unreachable, prohibited, time exceeded): not about size.
    Refused {
        sender: IpAddr,
        error: Transport,
    },
    /// Nothing came back.
    Vanished,
}

impl ProbeOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            ProbeOutcome::Passed(_) => "passed",
            ProbeOutcome::TooBig { .. } => "too_big",
            ProbeOutcome::Refused { .. } => "refused",
            ProbeOutcome::Vanished => "vanished",
        }
    }
}

/// The decisive sighting: something about this probe came back into the source namespace.
/// `at_source` tells whether a capture point is in the source namespace.
pub fn decisive(s: &Sighting, at_source: impl Fn(usize) -> bool) -> Option<ProbeOutcome> {
    if s.leg != Leg::Return || s.direction != Direction::In || !at_source(s.point) {
        return None;
    }
    let as_error = |ty, code, v6, kind, mtu| Transport::Icmp {
        v6,
        ty,
        code,
        kind,
        mtu,
    };
    Some(match &s.kind {
        SightingKind::Probe => return None,
        SightingKind::Reply => ProbeOutcome::Passed(Arrival::Answer {
            answer: s.packet.transport,
            from: s.packet.src,
        }),
        SightingKind::IcmpError {
            sender,
            kind: IcmpKind::TooBig,
            mtu,
            ..
        } => ProbeOutcome::TooBig {
            sender: *sender,
            mtu: *mtu,
        },
        SightingKind::IcmpError {
            sender,
            kind,
            ty,
            code,
            v6,
            mtu,
        } if kind.proves_arrival() => ProbeOutcome::Passed(Arrival::DestinationError {
            error: as_error(*ty, *code, *v6, *kind, *mtu),
            from: *sender,
        }),
        SightingKind::IcmpError {
            sender,
            kind,
            ty,
            code,
            v6,
            mtu,
        } => ProbeOutcome::Refused {
            sender: *sender,
            error: as_error(*ty, *code, *v6, *kind, *mtu),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dye_decode::Flow;

    use crate::path::{Packet, Transport};

    fn sighting(point: usize, direction: Direction, leg: Leg, kind: SightingKind) -> Sighting {
        let src: IpAddr = "10.244.2.2".parse().unwrap();
        let dst: IpAddr = "10.244.1.2".parse().unwrap();
        Sighting {
            point,
            direction,
            ts_ns: 1,
            seq: 1,
            leg,
            kind,
            flow: Flow {
                src,
                dst,
                proto: 1,
                sport: 0,
                dport: 0,
            },
            packet: Packet {
                src,
                dst,
                proto: 1,
                sport: None,
                dport: None,
                ttl: 62,
                len: 1450,
                ip_id: 7,
                df: true,
                transport: Transport::Icmp {
                    v6: false,
                    ty: 0,
                    code: 0,
                    kind: IcmpKind::EchoReply,
                    mtu: None,
                },
            },
            outer: Vec::new(),
            fragments: None,
            frames: vec![0],
        }
    }

    fn icmp(v6: bool, ty: u8, code: u8, mtu: Option<u32>) -> SightingKind {
        SightingKind::IcmpError {
            sender: "10.244.1.1".parse().unwrap(),
            kind: IcmpKind::of(v6, ty, code),
            ty,
            code,
            v6,
            mtu,
        }
    }

    #[test]
    fn only_what_comes_back_into_the_source_decides() {
        let at_source = |p: usize| p == 0;
        let reply = sighting(0, Direction::In, Leg::Return, SightingKind::Reply);
        assert!(matches!(
            decisive(&reply, at_source),
            Some(ProbeOutcome::Passed(_))
        ));
        // The same reply seen elsewhere on its way back decides nothing yet.
        let elsewhere = sighting(3, Direction::In, Leg::Return, SightingKind::Reply);
        assert_eq!(decisive(&elsewhere, at_source), None);
        let probe = sighting(0, Direction::Out, Leg::Forward, SightingKind::Probe);
        assert_eq!(decisive(&probe, at_source), None);
    }

    #[test]
    fn icmp_errors_are_told_apart() {
        let at_source = |_| true;
        let too_big = sighting(0, Direction::In, Leg::Return, icmp(false, 3, 4, Some(1280)));
        assert_eq!(
            decisive(&too_big, at_source),
            Some(ProbeOutcome::TooBig {
                sender: "10.244.1.1".parse().unwrap(),
                mtu: Some(1280)
            })
        );
        let ptb = sighting(0, Direction::In, Leg::Return, icmp(true, 2, 0, Some(0)));
        assert!(matches!(
            decisive(&ptb, at_source),
            Some(ProbeOutcome::TooBig { mtu: Some(0), .. })
        ));
        let port = sighting(0, Direction::In, Leg::Return, icmp(false, 3, 3, None));
        assert!(matches!(
            decisive(&port, at_source),
            Some(ProbeOutcome::Passed(_))
        ));
        let prohibited = sighting(0, Direction::In, Leg::Return, icmp(false, 3, 13, None));
        assert!(matches!(
            decisive(&prohibited, at_source),
            Some(ProbeOutcome::Refused { .. })
        ));
    }
}
