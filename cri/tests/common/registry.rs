//! A local docker-registry holding the busybox test image (built by
//! hack/images/build). Shared by the cri tests and the agent's kubelet API
//! test (`#[path]`-included there), so it uses only std, tempfile and the
//! env vars every integration test has.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A docker-registry instance holding `busybox:latest`.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        let reg = Self {
            child,
            addr,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&reg.addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
        let status = Command::new(repo_root().join("hack/images/build"))
            .arg(&cache)
            .arg(&reg.addr)
            .status()
            .unwrap();
        assert!(status.success(), "hack/images/build failed");
        reg
    }

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
