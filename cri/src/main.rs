//! r8s-cri command line.
use std::process::ExitCode;

use clap::Parser;

/// Placeholder until this component's issue lands.
#[derive(Parser, Debug)]
#[command(name = "r8s-cri", version)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    eprintln!("r8s-cri: this component is not implemented yet");
    ExitCode::FAILURE
}
