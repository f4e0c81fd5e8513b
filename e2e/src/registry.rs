//! A local OCI registry (Debian's docker-registry) holding the test images
//! built offline by `hack/images/build` (`<addr>/busybox:latest`): on a free
//! loopback port for single-node tests, or inside a network namespace on an
//! address of it (a kind cluster's network, where every node pulls from it).
//! Stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::kind::netns;

/// A running registry.
pub struct Registry {
    child: Child,
    pub addr: String,
    /// The network namespace it listens in; `None`: the host's.
    pub netns: Option<String>,
    _dir: tempfile::TempDir,
}

const REGISTRY: &str = "/usr/bin/docker-registry";

/// A command run where the registry is.
fn command(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(n) => netns::command(n, program),
        None => Command::new(program),
    }
}

impl Registry {
    /// Starts a registry on loopback and pushes the test images into it.
    /// `cache` keeps the built image layouts between runs.
    pub fn start(cache: &Path) -> anyhow::Result<Self> {
        let addr = format!("127.0.0.1:{}", crate::free_port()?);
        Self::start_at(cache, None, addr, tempfile::tempdir()?)
    }

    /// Starts a registry on `ip:5000` inside network namespace `netns`,
    /// its storage in a new directory below `parent`.
    pub fn start_in_netns(
        cache: &Path,
        netns: &str,
        ip: std::net::Ipv4Addr,
        parent: &Path,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("registry")
            .tempdir_in(parent)?;
        Self::start_at(cache, Some(netns), format!("{ip}:5000"), dir)
    }

    fn start_at(
        cache: &Path,
        netns: Option<&str>,
        addr: String,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )?;
        anyhow::ensure!(
            Path::new(REGISTRY).exists(),
            "docker-registry (Debian package docker-registry) must be installed"
        );
        let child = command(netns, REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start docker-registry")?;
        let reg = Self {
            child,
            addr,
            netns: netns.map(str::to_owned),
            _dir: dir,
        };
        let sock: std::net::SocketAddr = reg.addr.parse()?;
        crate::wait_for("the registry to listen", Duration::from_secs(10), || {
            let timeout = Duration::from_secs(1);
            match netns {
                Some(n) => netns::connect(n, sock, timeout).ok(),
                None => std::net::TcpStream::connect_timeout(&sock, timeout).ok(),
            }
        })?;
        let status = command(netns, crate::repo_root().join("hack/images/build"))
            .arg(cache)
            .arg(&reg.addr)
            .stdin(Stdio::null())
            .status()
            .context("failed to run hack/images/build")?;
        anyhow::ensure!(status.success(), "hack/images/build failed");
        Ok(reg)
    }

    /// `<addr>/busybox:latest`.
    pub fn busybox(&self) -> String {
        format!("{}/busybox:latest", self.addr)
    }

    /// The registry's pid (for state files).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
