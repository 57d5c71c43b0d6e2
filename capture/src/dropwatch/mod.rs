//! Why the kernel let go of a probe: an eBPF program on the `skb:kfree_skb` tracepoint
//! (tp_btf) that reports, through a ring buffer, every packet dropped whose IP packet ends with
//! the marker of one trace — the check runs in the kernel, so other traffic costs one header
//! read per freed packet and never reaches dye. Each report carries the kernel's drop reason
//! (named from the running kernel's BTF, [`btf`]), the namespace and device, and the freeing
//! function (named from `/proc/kallsyms`, [`kallsyms`]).
//!
//! The program and its link live only as long as dye's file descriptors: dropping the
//! [`DropWatch`] — or the process dying, SIGKILL included — detaches and unloads them.

pub mod btf;
pub mod event;
pub mod kallsyms;

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};

pub use btf::EnumNames;
pub use event::KernelDrop;
pub use kallsyms::{Kallsyms, Symbol};

/// The compiled program (capture/build.rs builds it from capture/bpf/kfree_skb.bpf.c).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kfree_skb.bpf.o"));

const PROGRAM: &str = "dye_kfree_skb";
const TRACEPOINT: &str = "kfree_skb";
const RING: &str = "DYE_DROPS";
const TRACE_ID: &str = "DYE_TRACE_ID";

/// The kernel's enum of drop reasons, and the prefix its values share.
pub const REASON_ENUM: &str = "skb_drop_reason";
pub const REASON_PREFIX: &str = "SKB_DROP_REASON_";

/// Why the watcher could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum DropWatchError {
    #[error("reading the kernel's BTF: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("loading or attaching the kfree_skb program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("the eBPF ring buffer: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the eBPF object lacks {0}")]
    Missing(&'static str),
    #[error("reading the clocks: {0}")]
    Clock(#[from] nix::Error),
}

/// The armed program of one trace.
pub struct DropWatch {
    ring: RingBuf<MapData>,
    /// Holds the program and its link (an fd each): both go when this does.
    _ebpf: Ebpf,
    /// Realtime minus monotonic, to move the program's timestamps to the capture clock.
    clock_offset_ns: i128,
}

impl std::fmt::Debug for DropWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropWatch").finish_non_exhaustive()
    }
}

impl DropWatch {
    /// Loads and attaches the program for the probes of `trace_id`.
    pub fn arm(trace_id: u32) -> Result<DropWatch, DropWatchError> {
        let btf = Btf::from_sys_fs()?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(TRACE_ID, &trace_id, true)
            .load(OBJECT)?;
        let program: &mut BtfTracePoint = ebpf
            .program_mut(PROGRAM)
            .ok_or(DropWatchError::Missing(PROGRAM))?
            .try_into()?;
        program.load(TRACEPOINT, &btf)?;
        program.attach()?;
        let ring = RingBuf::try_from(ebpf.take_map(RING).ok_or(DropWatchError::Missing(RING))?)?;
        Ok(DropWatch {
            ring,
            _ebpf: ebpf,
            clock_offset_ns: clock_offset()?,
        })
    }

    /// The drops reported so far, at most `max`, timestamps in the capture clock.
    pub fn drain(&mut self, max: usize) -> Vec<KernelDrop> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = self.ring.next() else {
                break;
            };
            match KernelDrop::decode(&item) {
                Some(mut d) => {
                    d.ts_ns = (i128::from(d.ts_ns) + self.clock_offset_ns).max(0) as u64;
                    out.push(d);
                }
                None => tracing::warn!(len = item.len(), "undecodable kernel-drop record"),
            }
        }
        out
    }

    /// Like [`DropWatch::drain`], waiting up to `wait` for the first report.
    pub fn drain_waiting(&mut self, max: usize, wait: Duration) -> Vec<KernelDrop> {
        let until = std::time::Instant::now() + wait;
        loop {
            let got = self.drain(max);
            if !got.is_empty() || std::time::Instant::now() >= until {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, in ns.
fn clock_offset() -> Result<i128, nix::Error> {
    use nix::time::{clock_gettime, ClockId};
    let ns = |t: nix::sys::time::TimeSpec| {
        i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
    };
    let mono = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
    let real = clock_gettime(ClockId::CLOCK_REALTIME)?;
    Ok(ns(real) - ns(mono))
}

/// Names for what the program reports: the reason from kernel BTF, the function from
/// kallsyms. Either may be missing (no BTF file, unprivileged kallsyms): numbers remain.
#[derive(Debug, Default)]
pub struct Names {
    reasons: EnumNames,
    symbols: Kallsyms,
    /// The only addresses `symbols` can name, when it was read for some.
    named: Option<Vec<u64>>,
}

impl Names {
    /// Reads both tables from the running kernel.
    pub fn load() -> Names {
        Names::load_with(Kallsyms::load())
    }

    /// The reasons alone (a walk over the kernel's BTF: cheap); functions are added with
    /// [`Names::with_functions_for`].
    pub fn reasons() -> Names {
        Names::load_with(Ok(Kallsyms::default()))
    }

    /// Adds the functions containing `locations`, and only those, from kallsyms (reading it
    /// is what costs: ~35 ms of the kernel's time). Other addresses stay unnamed.
    pub fn with_functions_for(mut self, locations: &[u64]) -> Names {
        self.symbols = Kallsyms::load_for(locations).unwrap_or_else(|e| {
            tracing::warn!("cannot read /proc/kallsyms: {e}");
            Kallsyms::default()
        });
        self.named = Some(locations.to_vec());
        self
    }

    fn load_with(symbols: std::io::Result<Kallsyms>) -> Names {
        let reasons = EnumNames::from_kernel(REASON_ENUM).unwrap_or_else(|e| {
            tracing::warn!("cannot read drop reason names from {}: {e}", btf::VMLINUX);
            EnumNames::default()
        });
        let symbols = symbols.unwrap_or_else(|e| {
            tracing::warn!("cannot read /proc/kallsyms: {e}");
            Kallsyms::default()
        });
        Names {
            reasons,
            symbols,
            named: None,
        }
    }

    /// `NETFILTER_DROP` for 12: the kernel's name less its `SKB_DROP_REASON_` prefix.
    pub fn reason(&self, code: u32) -> Option<&str> {
        let full = self.reasons.name(u64::from(code))?;
        Some(full.strip_prefix(REASON_PREFIX).unwrap_or(full))
    }

    /// The function containing a kernel address (None for one left out of
    /// [`Names::with_functions_for`]: its table holds only the others' functions).
    pub fn function(&self, addr: u64) -> Option<Symbol<'_>> {
        if self.named.as_ref().is_some_and(|n| !n.contains(&addr)) {
            return None;
        }
        self.symbols.resolve(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_for_some_addresses_leave_the_others_unnamed() {
        let text = "ffffffff81000100 T ip_forward\nffffffff81000200 T ping_rcv\n";
        let (forward, ping) = (0xffffffff81000123, 0xffffffff81000210);
        let names = Names {
            reasons: EnumNames::default(),
            symbols: Kallsyms::parse_for(text, &[forward]),
            named: Some(vec![forward]),
        };
        assert_eq!(names.function(forward).map(|s| s.name), Some("ip_forward"));
        // The table alone would name ping_rcv's address ip_forward+0x110: not asked for, not
        // named.
        assert_eq!(
            names.symbols.resolve(ping).map(|s| s.name),
            Some("ip_forward")
        );
        assert_eq!(names.function(ping), None);
    }
}
