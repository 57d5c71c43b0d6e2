//! Why the kernel let go of a probe: dye's kfree_skb eBPF program, armed for the trace's
//! marker before the first probe leaves, and its reports named for the core — the reason from
//! the kernel's BTF, the function from kallsyms, the namespace and device from the topology.
//! The program goes with dye's file descriptors (success, error, SIGKILL alike).
//!
//! Loading the program runs on its own thread from the start of setup, overlapping discovery
//! and capture setup instead of adding to the trace (aya parses the kernel's BTF for its CO-RE
//! relocations: ~90 ms wall and ~50 ms CPU in a release build, ~0.4 s in a debug one). Names
//! are read only when something was dropped, and of kallsyms only the functions of drops that
//! can explain a verdict.

use std::thread::JoinHandle;

use dye_capture::dropwatch::{self, DropWatch, Names};
use dye_capture::topology::Topology;
use dye_core::kernel_drop::KernelCause;
use dye_core::seam::KernelDrop;

/// Reports drained at most: one per dropped probe, and a trace sends few.
const MAX_DROPS: usize = 4096;

/// The kernel-drop watcher of one trace, maybe still being armed (or none at all: dye still
/// traces without it).
#[derive(Debug, Default)]
pub struct Arming {
    pending: Option<JoinHandle<Option<DropWatch>>>,
    watch: Option<DropWatch>,
}

impl Arming {
    /// Starts arming for the probes of `trace_id`. Dropped before [`Arming::ready`] (setup
    /// failed), the thread finishes alone and the watcher — program, link — goes with it.
    pub fn start(trace_id: u32) -> Arming {
        let pending = std::thread::Builder::new()
            .name("dye-dropwatch".into())
            .spawn(move || arm(trace_id))
            .map_err(|e| tracing::warn!("cannot start arming the kernel drop watch: {e}"))
            .ok();
        Arming {
            pending,
            watch: None,
        }
    }

    /// Waits for the arming thread if it has not finished: called before the first probe
    /// leaves, so no probe's drop is missed.
    pub fn ready(&mut self) {
        if let Some(handle) = self.pending.take() {
            let started = std::time::Instant::now();
            self.watch = handle.join().unwrap_or_else(|_| {
                tracing::warn!("arming the kernel drop watch failed");
                None
            });
            tracing::debug!(
                waited_ms = started.elapsed().as_secs_f64() * 1e3,
                "kernel drop watch ready"
            );
        }
    }

    /// The probes dropped since arming, named.
    pub fn events(&mut self, topology: &Topology) -> Vec<KernelDrop> {
        self.ready();
        let Some(watch) = &mut self.watch else {
            return Vec::new();
        };
        let raw = watch.drain(MAX_DROPS);
        if raw.is_empty() {
            return Vec::new();
        }
        // Functions only for drops that can explain a verdict: an answered ICMP trace's echo
        // reply always ends as NO_SOCKET in the source, and reading kallsyms for it alone
        // would cost every such trace ~60 ms.
        let names = Names::reasons();
        let locations: Vec<u64> = raw
            .iter()
            .filter(|d| KernelCause::of(names.reason(d.reason), None) != KernelCause::NoSocket)
            .map(|d| d.location)
            .collect();
        let names = if locations.is_empty() {
            names
        } else {
            names.with_functions_for(&locations)
        };
        raw.into_iter()
            .map(|d| name(&d, &names, topology))
            .collect()
    }
}

/// Loads and attaches the program for the probes of `trace_id`. A kernel or a permission
/// that refuses it is a warning: the verdict just cannot give the kernel's reason.
fn arm(trace_id: u32) -> Option<DropWatch> {
    let started = std::time::Instant::now();
    let watch = DropWatch::arm(trace_id)
        .map_err(|e| tracing::warn!("cannot watch the kernel's drops (kfree_skb): {e}"))
        .ok();
    tracing::debug!(
        armed = watch.is_some(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "kernel drop watch"
    );
    watch
}

fn name(d: &dropwatch::KernelDrop, names: &Names, topology: &Topology) -> KernelDrop {
    let ns = topology
        .namespaces
        .iter()
        .find(|n| n.id.ino == u64::from(d.netns_inode));
    let ifname = ns.and_then(|n| {
        n.links
            .iter()
            .find(|l| l.ifindex == d.ifindex)
            .map(|l| l.name.clone())
    });
    KernelDrop {
        seq: d.seq,
        ts_ns: d.ts_ns,
        netns: ns.map(|n| n.name.clone()),
        netns_inode: u64::from(d.netns_inode),
        ifname,
        ifindex: d.ifindex,
        reason_code: d.reason,
        reason: names.reason(d.reason).map(str::to_string),
        function: names
            .function(d.location)
            .map(|s| format!("{}+{:#x}", s.name, s.offset)),
    }
}
