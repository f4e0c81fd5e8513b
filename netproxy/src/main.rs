//! r8s-proxy command line.
use std::process::ExitCode;

use clap::Parser;

/// Placeholder until this component's issue lands.
#[derive(Parser, Debug)]
#[command(name = "r8s-proxy", version)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    eprintln!("r8s-proxy: this component is not implemented yet");
    ExitCode::FAILURE
}
