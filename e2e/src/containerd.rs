//! A private containerd (Debian's 1.6, with runc) serving CRI, for running
//! the agent against another runtime than its own: root, state, socket,
//! CNI config (the bridge plugin on the node's bridge and pod CIDR) and
//! registry settings all under one test directory. Dropping it removes its
//! pod sandboxes through CRI, stops containerd and its shims, and removes
//! the network namespaces its CNI created.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// Where containerd's CRI plugin keeps pod network namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A running containerd.
pub struct Containerd {
    child: Option<Child>,
    dir: PathBuf,
    /// `cni-*` network namespaces that existed before we started.
    netns_before: BTreeSet<String>,
}

/// What the runtime's config names.
pub struct ContainerdOptions<'a> {
    /// Registry (host:port) served over plain HTTP; `<registry>/pause:latest`
    /// is the sandbox image.
    pub registry: &'a str,
    /// Linux bridge the CNI bridge plugin attaches pods to (created by it).
    pub bridge: &'a str,
    /// Pod addresses (host-local IPAM); the bridge gets the first one.
    pub pod_cidr: &'a str,
}

impl Containerd {
    /// Writes the config into `dir` and starts containerd; waits for its socket.
    pub fn start(dir: &Path, opts: &ContainerdOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("cni"))?;
        let hosts = dir.join("certs.d").join(opts.registry);
        std::fs::create_dir_all(&hosts)?;
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{r}\"\n[host.\"http://{r}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                r = opts.registry
            ),
        )?;
        std::fs::write(
            dir.join("cni").join("10-r8s-e2e.conflist"),
            cni_config(dir, opts),
        )?;
        std::fs::write(dir.join("config.toml"), config(dir, opts.registry))?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let netns_before = cni_netns();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("containerd (Debian package containerd) must be installed")?;
        let me = Self {
            child: Some(child),
            dir: dir.to_path_buf(),
            netns_before,
        };
        crate::wait_for("containerd's socket", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(me.socket()).ok()
        })?;
        Ok(me)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The agent's `--container-runtime-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Removes every pod sandbox through CRI (their containers, netns and
    /// IPs with them).
    fn remove_sandboxes(&self) -> anyhow::Result<usize> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let cri = cri::client::connect_path(&self.socket()).await?;
            Ok(tokio::time::timeout(Duration::from_secs(60), cri.remove_all_sandboxes()).await??)
        })
    }

    /// Kills the shims this containerd started (they outlive it by design).
    fn kill_shims(&self) {
        let address = self.socket().display().to_string();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = args
                .windows(2)
                .any(|w| w[0] == b"-address" && w[1] == address.as_bytes());
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(err) = self.remove_sandboxes() {
            eprintln!("containerd: removing the pod sandboxes failed: {err:#}");
        }
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let stopped = crate::wait_for("containerd to stop", Duration::from_secs(10), || {
                child.try_wait().ok().flatten()
            });
            if stopped.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.kill_shims();
        // Only the namespaces that appeared while we ran (a sandbox that
        // could not be removed through CRI).
        for name in cni_netns().difference(&self.netns_before) {
            let path = Path::new(NETNS_DIR).join(name);
            let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn cni_netns() -> BTreeSet<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("cni-"))
                .collect()
        })
        .unwrap_or_default()
}

fn config(dir: &Path, registry: &str) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry}/pause:latest"
  # root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj is refused.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#
    )
}

fn cni_config(dir: &Path, opts: &ContainerdOptions) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "r8s-e2e",
        "plugins": [{
            "type": "bridge",
            "bridge": opts.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": dir.join("cni-ipam").display().to_string(),
                "ranges": [[{ "subnet": opts.pod_cidr }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
            },
        }],
    })
    .to_string()
}
