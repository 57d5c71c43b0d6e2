//! The `dye` binary: parses the command line and hands over to the subcommand.

use std::process::ExitCode;

use clap::Parser;
use dye_tracer::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.verbose);
    match cli::run(cli) {
        Ok(code) => code,
        // The reader went away (`dye lab status | head`): nothing more to say to it.
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dye: error: {}", cli::error_chain(&err));
            ExitCode::from(cli::exit_status_for(&err))
        }
    }
}
