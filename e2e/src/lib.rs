//! End-to-end suite for r8s: helpers that start real binaries with their own
//! data dirs, network names and cgroups (`cluster`: one node; `kind`: a
//! multi-node cluster, every node in namespaces of its own; `vm`: a qemu VM
//! node with pure cgroup v2), a local OCI registry with the test images
//! (`registry`), a private containerd to run the agent against another CRI
//! runtime (`containerd`), run real `kubectl` against them (`kubectl`), time
//! named scenarios (`suite`), and remove everything they created even when a
//! test fails (`cleanup`).

pub mod bench;
pub mod cleanup;
pub mod cluster;
pub mod containerd;
pub mod cri_query;
pub mod kind;
pub mod kubectl;
pub mod registry;
pub mod scenario;
pub mod suite;
pub mod vm;

use std::path::{Path, PathBuf};

/// Whether the tests run as root (CI does; pods need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A workspace binary next to the running executable: beside it (the
/// `r8s-e2e` binary in `target/debug`) or one level up (a test executable in
/// `target/debug/deps`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("executable has no directory"))?;
    let candidates = [Some(dir), dir.parent()];
    candidates
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} not built next to {} (cargo build --workspace --all-targets)",
                exe.display()
            )
        })
}

/// A free TCP port on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Polls `f` every 200 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
