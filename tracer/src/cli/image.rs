//! `dye image build OUT.tar` (maintainers): the OCI image deploy/daemonset.yaml runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(after_help = "\
The image holds /usr/local/bin/dye and the shared libraries it links (as `ldd` resolves them on
this machine), nothing else; its entrypoint is `dye agent`. No registry and no base image: load
it on each node with `ctr --namespace k8s.io images import OUT.tar`.

Example:
  dye image build dye-image.tar")]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Write the image, as an OCI image layout in one tar archive, to OUT.
    Build {
        /// The archive to write.
        #[arg(value_name = "OUT")]
        out: PathBuf,
        /// The dye binary to put in the image. Default: this one.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
}

pub fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ImageCommand::Build { out, binary } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe().context("finding this dye binary")?,
            };
            let archive = crate::image::build(&binary)
                .with_context(|| format!("building the image from {}", binary.display()))?;
            std::fs::write(&out, archive).with_context(|| format!("writing {}", out.display()))?;
            println!("{} {}", crate::image::reference(), out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
