//! The `jobhost` binary: parses the command line and hands it to `jobhost::cli::run`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A setting that does not parse exits here with code 2 and a message naming it.
    let cli = jobhost::config::Cli::parse();
    jobhost::cli::run(cli)
}
