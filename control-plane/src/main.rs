//! r8s-server command line.
use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("r8s-server: the API server is being built");
    ExitCode::FAILURE
}
