//! The one probe loop of dye, in the spirit of trippy's strategy + network: a [`Strategy`]
//! says which probe goes next and how long to watch it; the loop sends it through the
//! [`Network`] seam, turns every capture event into sightings, lets the strategy cut a watch
//! short, and stops on the user's word or when the capture ends. `dye trace` drives it with a
//! fixed schedule, `dye mtu` with an adaptive search.

use std::net::IpAddr;
use std::time::Duration;

use crate::observe::{Observer, Sighting};
use crate::probe::Probe;
use crate::seam::{Event, Frame, Network, Wait};
use crate::trace::TraceError;

/// Bounds on what the loop keeps for the pcap, whatever the traffic.
const MAX_FRAMES: usize = 100_000;
const MAX_FRAME_BYTES: usize = 64 << 20;

/// A probe that left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentProbe {
    pub seq: u32,
    /// IP packet size.
    pub size: u32,
    /// Session time it left at.
    pub at: Duration,
    /// Capture clock (ns since the epoch) it left at.
    pub ts_ns: u64,
}

/// What the capture brought, bounded.
#[derive(Debug, Default)]
pub struct Captured {
    /// Every frame in capture order; `None` where it was not kept (not the probe's, or over
    /// the memory bound).
    pub frames: Vec<Option<Frame>>,
    frame_bytes: usize,
    pub sightings: Vec<Sighting>,
    /// Capture points that stopped working, and why.
    pub lost: Vec<(usize, String)>,
}

impl Captured {
    /// Takes one event; returns the index of the sighting it made, if any.
    fn take(&mut self, ev: Event, observer: &mut Observer, keep_all: bool) -> Option<usize> {
        match ev {
            Event::Frame(f) => {
                let index = self.frames.len();
                let s = observer.observe(index, f.point, f.direction, f.ts_ns, &f.data);
                let keep = keep_all || s.is_some() || observer.holds_fragment_of(index);
                if keep
                    && self.frames.len() < MAX_FRAMES
                    && self.frame_bytes + f.data.len() <= MAX_FRAME_BYTES
                {
                    self.frame_bytes += f.data.len();
                    self.frames.push(Some(f));
                } else {
                    self.frames.push(None);
                }
                s.map(|s| {
                    self.sightings.push(s);
                    self.sightings.len() - 1
                })
            }
            Event::PointLost { point, reason } => {
                tracing::warn!(point, reason, "capture point lost");
                self.lost.push((point, reason));
                None
            }
        }
    }
}

/// What a strategy wants after a sighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Keep watching until the deadline.
    On,
    /// Watch no later than this session time.
    Until(Duration),
    /// Stop watching this probe now.
    Done,
}

/// Chooses the probes and how long each is watched.
pub trait Strategy {
    /// The next probe to send now, or None to stop probing. `now` is session time.
    fn next_probe(
        &mut self,
        sent: &[SentProbe],
        now: Duration,
    ) -> Result<Option<Probe>, TraceError>;
    /// Until when (session time) to watch `probe`, just sent.
    fn deadline(&self, probe: &SentProbe) -> Duration;
    /// A sighting arrived while watching `probe`.
    fn seen(
        &mut self,
        probe: &SentProbe,
        sighting: &Sighting,
        captured: &Captured,
        now: Duration,
    ) -> Watch;
    /// The watch of `probe` is over (its deadline passed, the strategy said done, or the user
    /// stopped the run: `interrupted`). The strategy may ask the network questions here.
    fn watched(
        &mut self,
        probe: &SentProbe,
        captured: &Captured,
        interrupted: bool,
        net: &mut dyn Network,
    ) -> Result<(), TraceError>;
}

/// How the loop ended, and what it gathered.
#[derive(Debug)]
pub struct Probed {
    pub sent: Vec<SentProbe>,
    pub captured: Captured,
    /// The user stopped it.
    pub interrupted: bool,
    /// The capture ended on its own (its time or packet bound).
    pub capture_ended: bool,
}

/// Runs `strategy` through `net`. Probes come from `src` (the observer learns each probe's IP
/// id before it can be seen, to match ICMP errors whose quote stops short of the marker).
pub fn run(
    strategy: &mut dyn Strategy,
    observer: &mut Observer,
    src: IpAddr,
    net: &mut dyn Network,
    keep_all: bool,
) -> Result<Probed, TraceError> {
    let mut out = Probed {
        sent: Vec::new(),
        captured: Captured::default(),
        interrupted: false,
        capture_ended: false,
    };
    while let Some(probe) = strategy.next_probe(&out.sent, net.now())? {
        observer.sent(src, probe.ip_id, probe.seq);
        let ts_ns = net.send(&probe)?;
        let sent = SentProbe {
            seq: probe.seq,
            size: probe.packet.len() as u32,
            at: net.now(),
            ts_ns,
        };
        out.sent.push(sent);
        let mut deadline = strategy.deadline(&sent);
        while net.now() < deadline {
            match net.next(deadline)? {
                Wait::Event(ev) => {
                    let Some(i) = out.captured.take(ev, observer, keep_all) else {
                        continue;
                    };
                    let s = &out.captured.sightings[i];
                    match strategy.seen(&sent, s, &out.captured, net.now()) {
                        Watch::On => {}
                        Watch::Until(t) => deadline = deadline.min(t),
                        Watch::Done => break,
                    }
                }
                Wait::Idle => break,
                Wait::Stopped => {
                    out.interrupted = true;
                    break;
                }
                Wait::Ended => {
                    out.capture_ended = true;
                    break;
                }
            }
        }
        strategy.watched(&sent, &out.captured, out.interrupted, net)?;
        if out.interrupted || out.capture_ended {
            break;
        }
    }
    Ok(out)
}
