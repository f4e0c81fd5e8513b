//! A local OCI registry (Debian's docker-registry) on a free loopback port,
//! holding the test images built offline by `hack/images/build`
//! (`<addr>/busybox:latest`). Stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// A running registry.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and pushes the test images into it. `cache` keeps
    /// the built image layouts between runs.
    pub fn start(cache: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr = format!("127.0.0.1:{}", crate::free_port()?);
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("docker-registry (Debian package docker-registry) must be installed")?;
        let reg = Self {
            child,
            addr,
            _dir: dir,
        };
        crate::wait_for("the registry to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(&reg.addr).ok()
        })?;
        let status = Command::new(crate::repo_root().join("hack/images/build"))
            .arg(cache)
            .arg(&reg.addr)
            .status()
            .context("failed to run hack/images/build")?;
        anyhow::ensure!(status.success(), "hack/images/build failed");
        Ok(reg)
    }

    /// Starts a registry on `<ip>:5000` inside network namespace `netns`
    /// (for nodes on that namespace's network) and pushes the test images.
    pub fn start_in_netns(cache: &Path, netns: &str, ip: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr = format!("{ip}:5000");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "/usr/bin/docker-registry", "serve"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start docker-registry in the netns")?;
        let reg = Self {
            child,
            addr,
            _dir: dir,
        };
        let url = format!("http://{}/v2/", reg.addr);
        crate::wait_for("the registry to listen", Duration::from_secs(10), || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    netns,
                    "curl",
                    "-fsS",
                    "-o",
                    "/dev/null",
                    &url,
                ])
                .stderr(Stdio::null())
                .status()
                .ok()
                .filter(|s| s.success())
        })?;
        let status = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(crate::repo_root().join("hack/images/build"))
            .arg(cache)
            .arg(&reg.addr)
            .status()
            .context("failed to run hack/images/build")?;
        anyhow::ensure!(status.success(), "hack/images/build failed");
        Ok(reg)
    }

    /// `<addr>/busybox:latest`.
    pub fn busybox(&self) -> String {
        format!("{}/busybox:latest", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
