//! A single-node cluster: r8s-server with its embedded agent, every path,
//! port, bridge, pod CIDR, service CIDR, nftables table and cgroup of its
//! own, and `kubectl` against it. Dropping it stops the server and removes
//! all it created on the host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::cleanup::NodeResources;
use crate::kubectl::Kubectl;

/// Disk-based eviction off, as kind configures its kubelets: test nodes
/// share the host's disk, whose free space is not theirs to judge.
pub const TEST_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%";

/// Image GC off, as kind configures its kubelets (`imageGCHighThresholdPercent: 100`), for
/// the same reason: the host's disk usage is not the test node's.
pub const TEST_IMAGE_GC_HIGH_THRESHOLD: &str = "100";

/// One r8s-server (with agent) and its files.
pub struct Cluster {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub node_name: String,
    pub pod_cidr: String,
    /// `--service-cluster-ip-range`, a /24 of 10.96.0.0/12 of its own.
    pub service_cidr: String,
    pub resources: NodeResources,
    kubelet_port: u16,
    /// More environment for r8s-server (flags of it or its agent).
    pub extra_env: Vec<(String, String)>,
}

impl Cluster {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Where the agent keeps pod directories.
    pub fn agent_root(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// The pod bridge's address: every pod's gateway, where cluster DNS
    /// listens and the only address NodePorts answer on (so that parallel
    /// clusters, each with NodePorts of its own, never share one).
    pub fn gateway(&self) -> String {
        let prefix = self.pod_cidr.trim_end_matches(".0/24");
        format!("{prefix}.1")
    }

    /// The cluster DNS ClusterIP (the 10th address of the service CIDR).
    pub fn cluster_dns(&self) -> String {
        let prefix = self.service_cidr.trim_end_matches(".0/24");
        format!("{prefix}.10")
    }

    /// A fresh cluster with unique names; started and ready (API and Node).
    pub fn start() -> anyhow::Result<Self> {
        let mut cluster = Self::new()?;
        cluster.spawn()?;
        Ok(cluster)
    }

    /// A cluster with unique names, not started yet (`spawn` starts it).
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("r8s-e2e").tempdir()?;
        let n: u32 = rand::random();
        let resources = NodeResources {
            dir: dir.path().to_path_buf(),
            bridge: format!("r8se{:08x}", n)[..12].to_owned(),
            cgroup_root: format!("/r8s-e2e-{n:08x}"),
            nft_table: format!("r8se{n:08x}"),
        };
        Ok(Self {
            child: None,
            node_name: format!("e2e-{n:08x}"),
            pod_cidr: format!("10.245.{}.0/24", 10 + n % 200),
            service_cidr: format!("10.{}.{}.0/24", 96 + (n >> 8) % 16, (n >> 12) % 256),
            resources,
            dir,
            kubelet_port: crate::free_port()?,
            extra_env: Vec::new(),
        })
    }

    /// (Re)starts r8s-server and waits for the API and a Ready node.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let _ = std::fs::remove_file(self.kubeconfig());
        let child = Command::new(crate::binary("r8s-server")?)
            .arg("--data-dir")
            .arg(d.join("server"))
            .args(["--secure-port", "0", "--bind-address", "127.0.0.1"])
            .arg("--write-kubeconfig")
            .arg(self.kubeconfig())
            .env("R8S_HOSTNAME_OVERRIDE", &self.node_name)
            .env("R8S_ROOT_DIR", self.agent_root())
            .env("R8S_RUN_DIR", d.join("run"))
            .env("R8S_POD_LOGS_DIR", d.join("logs"))
            .env("R8S_CGROUP_ROOT", &self.resources.cgroup_root)
            .env("R8S_POD_CIDR", &self.pod_cidr)
            .env("R8S_POD_BRIDGE", &self.resources.bridge)
            .env("R8S_PORT", self.kubelet_port.to_string())
            .env("R8S_CLUSTER_CIDR", &self.pod_cidr)
            .env("R8S_SERVICE_CLUSTER_IP_RANGE", &self.service_cidr)
            .env("R8S_NFT_TABLE", &self.resources.nft_table)
            .env("R8S_NODEPORT_ADDRESSES", format!("{}/32", self.gateway()))
            .env("R8S_KUBE_PROXY_METRICS_BIND_ADDRESS", "127.0.0.1:0")
            .env("R8S_KUBE_PROXY_HEALTHZ_BIND_ADDRESS", "127.0.0.1:0")
            .env("R8S_LOG_LEVEL", "info")
            .env("R8S_EVICTION_HARD", TEST_EVICTION_HARD)
            .env("R8S_IMAGE_GC_HIGH_THRESHOLD", TEST_IMAGE_GC_HIGH_THRESHOLD)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("failed to start r8s-server")?;
        self.child = Some(child);
        crate::wait_for("the kubeconfig", Duration::from_secs(30), || {
            self.kubeconfig().exists().then_some(())
        })?;
        crate::wait_for("the node to be Ready", Duration::from_secs(90), || {
            let node = self.get_json(&["get", "node", &self.node_name]).ok()?;
            let ready = node["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        })?;
        Ok(())
    }

    /// Stops r8s-server with SIGTERM (containers keep running).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let stopped = crate::wait_for("r8s-server to stop", Duration::from_secs(30), || {
            child.try_wait().ok().flatten()
        });
        if stopped.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let status = stopped?;
        anyhow::ensure!(status.success(), "r8s-server exited with {status}");
        Ok(())
    }

    /// Real kubectl with this cluster's kubeconfig.
    pub fn kubectl_cmd(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig())
    }

    /// Runs kubectl with this cluster's kubeconfig.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        self.kubectl_cmd().run(args, stdin)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        self.kubectl_cmd().ok(args, stdin)
    }

    /// `kubectl <args> -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        self.kubectl_cmd().get_json(args)
    }

    /// Applies a manifest given as JSON.
    pub fn apply(&self, manifest: &serde_json::Value) -> anyhow::Result<()> {
        self.kubectl_cmd().apply(manifest)
    }

    /// The last lines of the server log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A test-owned host directory for hostPath volumes.
    pub fn host_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.path().join("host").join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Restarts r8s-server (and its agent) with `env` added to its environment.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.extra_env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self.stop()?;
        self.spawn()
    }

    /// The socket of the node's in-process r8s-cri.
    pub fn cri_socket(&self) -> PathBuf {
        self.path().join("run").join("cri.sock")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.resources.remove_all();
    }
}
