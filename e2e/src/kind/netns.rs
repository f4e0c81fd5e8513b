//! Named network namespaces of a kind cluster (`ip netns`, under
//! `/run/netns`), and running code or commands inside them: a short-lived
//! thread that entered a namespace with `setns` makes sockets that keep that
//! namespace, so the host's own network is never changed.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sched::CloneFlags;

/// `/run/netns/<name>`.
pub fn path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Runs `ip <args>` and fails with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("ip (iproute2) must be installed")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Creates the namespace with its loopback up.
pub fn add(name: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])
}

/// Deletes the namespace (its links and nftables tables go with it once no
/// process is left in it). Best effort.
pub fn delete(name: &str) {
    if exists(name) {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The namespaces whose name starts with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on a thread that entered the namespace.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let file = std::fs::File::open(path(name))
        .with_context(|| format!("network namespace {name} does not exist"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("failed to enter network namespace {name}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in network namespace {name} panicked"))?
    })
}

/// A TCP connection made from inside the namespace.
pub fn connect(name: &str, addr: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    run_in(name, || TcpStream::connect_timeout(&addr, timeout))?
        .with_context(|| format!("failed to connect to {addr} in {name}"))
}

/// `program` run in the namespace (`nsenter --net`, which unlike `ip netns
/// exec` leaves `/sys` and so the cgroup mounts as they are).
pub fn command(name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", path(name).display()))
        .arg("--")
        .arg(program);
    cmd
}
