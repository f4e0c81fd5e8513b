//! Process-wide log set-up for every binary that runs containers in-process
//! (r8s-cri, r8s-agent, r8s-server with its embedded agent).
//!
//! libcontainer forks the container's init from this multi-threaded process
//! and that child runs our tracing subscriber until it execs. Two rules keep
//! it safe: the child's own log lines are filtered out (their callsites never
//! reach a writer, so the child takes no lock another thread may have held at
//! fork time), and the writer is a plain file descriptor with no user-space
//! lock at all.

use std::os::fd::AsFd;
use std::sync::Arc;

/// Code that runs in the forked container init before exec.
const CONTAINER_SIDE: &str = "libcontainer::process=error";

/// Installs the global tracing subscriber with `filter`, writing to a
/// close-on-exec duplicate of stderr rather than fd 2: the forked children
/// point fd 2 at the container's stream before they exec, and log lines
/// would otherwise end up in the container's output (`kubectl logs`).
pub fn init(filter: tracing_subscriber::EnvFilter) {
    let filter = match CONTAINER_SIDE.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            // `&File` writes straight to the descriptor: no lock to inherit.
            .with_writer(Arc::new(std::fs::File::from(fd)))
            .init(),
        Err(_) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
}
