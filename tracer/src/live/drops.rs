//! Why the kernel let go of a probe: dye's kfree_skb eBPF program, armed for the trace's
//! marker before the first probe leaves, and its reports named for the core — the reason from
//! the kernel's BTF, the function from kallsyms, the namespace and device from the topology.
//! The program goes with dye's file descriptors (success, error, SIGKILL alike).

use dye_capture::dropwatch::{self, DropWatch, Names};
use dye_capture::topology::Topology;
use dye_core::seam::KernelDrop;

/// Reports drained at most: one per dropped probe, and a trace sends few.
const MAX_DROPS: usize = 4096;

/// The armed watcher of one trace (or none: dye still traces without it).
#[derive(Debug, Default)]
pub struct DropTracer {
    watch: Option<DropWatch>,
}

/// A watcher being armed on its own thread: loading the program means parsing the kernel's
/// BTF for its CO-RE relocations (~70–110 ms in a release build, ~0.4 s in a debug one), which
/// overlaps discovery and capture setup instead of adding to them.
#[derive(Debug, Default)]
pub struct Arming {
    pending: Option<std::thread::JoinHandle<DropTracer>>,
    tracer: DropTracer,
}

impl Arming {
    /// Starts arming for the probes of `trace_id`. Dropped before [`Arming::ready`] (setup
    /// failed), the thread finishes alone and its watcher — program, link — goes with it.
    pub fn start(trace_id: u32) -> Arming {
        let pending = std::thread::Builder::new()
            .name("dye-dropwatch".into())
            .spawn(move || DropTracer::arm(trace_id))
            .map_err(|e| tracing::warn!("cannot start arming the kernel drop watch: {e}"))
            .ok();
        Arming {
            pending,
            tracer: DropTracer::default(),
        }
    }

    /// The watcher, once the arming thread has finished: called before the first probe
    /// leaves, so no probe's drop is missed.
    pub fn ready(&mut self) -> &mut DropTracer {
        if let Some(handle) = self.pending.take() {
            let started = std::time::Instant::now();
            self.tracer = handle.join().unwrap_or_else(|_| {
                tracing::warn!("arming the kernel drop watch failed");
                DropTracer::default()
            });
            tracing::debug!(
                waited_ms = started.elapsed().as_secs_f64() * 1e3,
                "kernel drop watch ready"
            );
        }
        &mut self.tracer
    }
}

impl DropTracer {
    /// Loads and attaches the program for the probes of `trace_id`. A kernel or a permission
    /// that refuses it is a warning: the verdict just cannot give the kernel's reason.
    pub fn arm(trace_id: u32) -> DropTracer {
        let started = std::time::Instant::now();
        let watch = DropWatch::arm(trace_id)
            .map_err(|e| tracing::warn!("cannot watch the kernel's drops (kfree_skb): {e}"))
            .ok();
        tracing::debug!(
            armed = watch.is_some(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "kernel drop watch"
        );
        DropTracer { watch }
    }

    /// The probes dropped since arming, named.
    pub fn events(&mut self, topology: &Topology) -> Vec<KernelDrop> {
        let Some(watch) = &mut self.watch else {
            return Vec::new();
        };
        let raw = watch.drain(MAX_DROPS);
        if raw.is_empty() {
            return Vec::new();
        }
        let names = Names::load();
        raw.into_iter()
            .map(|d| name(&d, &names, topology))
            .collect()
    }
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
