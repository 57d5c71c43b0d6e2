//! `dye lab`: the emulated cluster.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct LabArgs {}

pub fn run(_args: LabArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("dye lab: not built yet")
}
