//! Process-wide log set-up for every binary that runs containers in-process
//! (r8s-cri, r8s-agent, r8s-server with its embedded agent).

use std::os::fd::AsFd;

/// Installs the global tracing subscriber with `filter`, writing to a
/// close-on-exec duplicate of stderr rather than fd 2: libcontainer's forked
/// children point fd 2 at the container's stream before they exec, and their
/// logs would otherwise end up in the container's output (`kubectl logs`).
pub fn init(filter: tracing_subscriber::EnvFilter) {
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(std::fs::File::from(fd)))
            .init(),
        Err(_) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
}
