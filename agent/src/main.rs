//! r8s-agent command line.
use std::process::ExitCode;

use clap::Parser;

/// Placeholder until this component's issue lands.
#[derive(Parser, Debug)]
#[command(name = "r8s-agent", version)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    eprintln!("r8s-agent: this component is not implemented yet");
    ExitCode::FAILURE
}
