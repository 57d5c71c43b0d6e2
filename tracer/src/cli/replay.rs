//! `dye replay`: a recorded trace or MTU search, reported again from its recording — on any
//! machine, without privileges, byte for byte what the recording run printed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use dye_core::mtu::{run_mtu, MtuPlan};
use dye_core::recording::{self, Recording, Replayer};
use dye_core::trace::{run_trace, TracePlan};

use super::trace::{create_output, TraceOutput};

#[derive(Debug, Args)]
#[command(after_help = "\
A recording (`dye trace --record FILE`, `dye mtu --record FILE`) holds the topology snapshot
taken when the scope was chosen, the probes sent and every capture event, with the time dye
saw each. Replaying runs them through the same reconstruction and analysis, so the report is
the one the recording run printed. Nothing is sent or captured; no privileges are needed.

Exit status: as the recorded command's (0 success, 1 negative answer, 130 interrupted), 2 for
a file that is not a dye recording.

Examples:
  dye replay trace.dye                      # the trace, as on the node
  dye replay trace.dye --json | jq .verdict
  dye replay trace.dye --pcap trace.pcapng  # the vendor pcap, from the recording")]
pub struct ReplayArgs {
    /// The recording to replay.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print the report as JSON (dye.trace/v1 or dye.mtu/v1).
    #[arg(long, conflicts_with = "mermaid")]
    json: bool,
    /// Print a trace's path as a Mermaid flowchart.
    #[arg(long)]
    mermaid: bool,
    /// Write a trace's probe packets at every hop, annotated, to this pcapng file.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
}

/// The largest recording dye reads: a trace keeps at most 64 MiB of frames (base64 in the file),
/// so anything much bigger is not a recording of this dye.
const MAX_RECORDING_BYTES: u64 = 512 << 20;

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    if size > MAX_RECORDING_BYTES {
        bail!(
            "{} is {size} bytes; dye recordings are at most {MAX_RECORDING_BYTES} bytes",
            args.file.display()
        );
    }
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let header = recording::header(&text)
        .with_context(|| format!("{} is not a dye recording", args.file.display()))?;
    match header.command.as_str() {
        "trace" => {
            let rec: Recording<TracePlan> = serde_json::from_str(&text)
                .with_context(|| format!("{}: damaged trace recording", args.file.display()))?;
            let pcap = match &args.pcap {
                Some(path) => Some((create_output("--pcap", path)?, path.clone())),
                None => None,
            };
            let mut snapshot = rec.snapshot;
            let mut net = Replayer::new(rec.journal);
            let run = run_trace(&rec.plan, &mut snapshot, &mut net, &mut |_| {})
                .with_context(|| format!("replaying {}", args.file.display()))?;
            TraceOutput {
                json: args.json,
                mermaid: args.mermaid,
                pcap,
                pcap_all: rec.plan.keep_all,
            }
            .emit(&run, &snapshot)
        }
        "mtu" => {
            if args.mermaid || args.pcap.is_some() {
                bail!("--mermaid and --pcap are for trace recordings; this is an MTU search");
            }
            let rec: Recording<MtuPlan> = serde_json::from_str(&text)
                .with_context(|| format!("{}: damaged mtu recording", args.file.display()))?;
            let mut snapshot = rec.snapshot;
            let mut net = Replayer::new(rec.journal);
            let run = run_mtu(&rec.plan, &mut snapshot, &mut net, &mut |_| {})
                .with_context(|| format!("replaying {}", args.file.display()))?;
            super::mtu::emit(&run, args.json)
        }
        other => bail!(
            "{}: a recording of `{other}`, which this dye cannot replay (it replays trace and mtu)",
            args.file.display()
        ),
    }
}
