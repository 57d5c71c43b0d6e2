//! `dye certs DIR`: the cluster CA and the agent and client certificates for `dye agent` and
//! `dye trace --agents`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::agent::certs;

#[derive(Debug, Args)]
#[command(after_help = "\
Writes DIR/ca.pem (the cluster CA), DIR/agent.pem + agent-key.pem (for every `dye agent`: EKU
serverAuth, SAN URI dye://role/agent, DNS name dye-agent) and DIR/client.pem + client-key.pem
(for the coordinator, `dye trace --agents`: EKU clientAuth, SAN URI dye://role/client). Agents
accept only clients whose certificate this CA signed for the client role; clients accept only
agents signed for the agent role. The CA's key is not kept: to add certificates, make a new
directory and roll it out. Keys are mode 0600; existing files are never overwritten.

Example:
  dye certs /etc/dye/certs")]
pub struct CertsArgs {
    /// Directory to create (it may exist if it holds none of the five files).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    certs::create(&args.dir)
        .with_context(|| format!("creating certificates in {}", args.dir.display()))?;
    for f in certs::FILES {
        println!("{}", args.dir.join(f).display());
    }
    Ok(ExitCode::SUCCESS)
}
