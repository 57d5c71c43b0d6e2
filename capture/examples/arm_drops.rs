//! Holds dye's drop tracing armed for a while, with nothing else of dye running: the kfree_skb
//! eBPF program for a trace id, and (with namespaces given) an nftables tracing table in each,
//! matching a probe marker as `dye trace` does. scripts/bench-drops.sh measures throughput
//! with and without it. Needs root.
//!
//! `arm_drops SECONDS [NETNS…]`

use std::time::Duration;

use dye_capture::dropwatch::DropWatch;
use dye_capture::nftrace::{Armed, ProbeMatch};
use dye_capture::Netns;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args
        .next()
        .ok_or("usage: arm_drops SECONDS [NETNS…]")?
        .parse()?;
    let secs = secs.min(120);
    let trace_id = 0x6479_6521;
    let started = std::time::Instant::now();
    let _watch = DropWatch::arm(trace_id)?;
    let bpf_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut marker = dye_decode::Marker::MAGIC.to_be_bytes().to_vec();
    marker.extend_from_slice(&trace_id.to_be_bytes());
    let m = ProbeMatch::by_marker(17, "10.0.0.1".parse()?, 20, marker);
    let started = std::time::Instant::now();
    let tables = args
        .map(|ns| Armed::arm(&Netns::open_str(&ns)?, "dye_bench", &m).map_err(Into::into))
        .collect::<Result<Vec<Armed>, Box<dyn std::error::Error>>>()?;
    let nft_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "armed: kfree_skb program in {bpf_ms:.1} ms, {} nftables tables in {nft_ms:.1} ms",
        tables.len()
    );
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}
