//! Test harness: a local registry with the busybox test image, an `r8s-cri`
//! child process with its own dirs, bridge, pod CIDR and cgroup parent, a CRI
//! client over its socket, and cleanup of everything on drop (even on panic).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use cri::proto::image_service_client::ImageServiceClient;
use cri::proto::runtime_service_client::RuntimeServiceClient;
use cri::proto::{self};
use tonic::transport::Channel;

pub use e2e::registry::Registry;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips (returns early from) a test that needs root when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("skipping: this test needs root (CI runs it as root)");
            return;
        }
    };
}

/// One r8s-cri instance and everything it may leave behind.
pub struct Runtime {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub bridge: String,
    pub cidr: String,
    pub cgroup_parent: String,
    pub registry: Registry,
    /// More r8s-cri flags, given on every (re)start.
    extra_args: Vec<String>,
}

impl Runtime {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Starts a registry and an r8s-cri with unique network and cgroup names.
    pub async fn start() -> Self {
        Self::start_with_args(&[]).await
    }

    /// `start` with more r8s-cri flags.
    pub async fn start_with_args(extra_args: &[&str]) -> Self {
        let registry = Registry::start(&test_image_cache()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let n: u32 = rand::random();
        let bridge = format!("r8st{:08x}", n)[..12].to_string();
        let cidr = format!("10.244.{}.0/24", 100 + (n % 150));
        let cgroup_parent = format!("/r8s-test-{:08x}", n);
        let mut rt = Self {
            child: None,
            socket: dir.path().join("cri.sock"),
            dir,
            bridge,
            cidr,
            cgroup_parent,
            registry,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        rt.spawn().await;
        rt
    }

    /// (Re)starts the r8s-cri process and waits until it answers.
    pub async fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_r8s-cri"))
            .arg("--listen")
            .arg(&self.socket)
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--pod-cidr")
            .arg(&self.cidr)
            .arg("--bridge")
            .arg(&self.bridge)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(mut c) = self.try_runtime().await
                && c.version(proto::VersionRequest::default()).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("r8s-cri did not become ready");
    }

    /// Stops the r8s-cri process (SIGTERM), leaving containers running.
    pub fn kill_runtime(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let path = self.socket.clone();
        tonic::transport::Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
    }

    async fn try_runtime(&self) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.try_runtime().await.unwrap()
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await.unwrap())
    }

    /// Pulls the test busybox image and returns its reference.
    pub async fn pull_busybox(&self) -> String {
        let image = self.registry.busybox();
        self.images()
            .await
            .pull_image(proto::PullImageRequest {
                image: Some(proto::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        image
    }

    pub fn sandbox_config(&self, name: &str) -> proto::PodSandboxConfig {
        proto::PodSandboxConfig {
            metadata: Some(proto::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.logs().join(name).display().to_string(),
            dns_config: Some(proto::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            ..Default::default()
        }
    }

    pub async fn run_pod(&self, name: &str) -> (String, proto::PodSandboxConfig) {
        self.run_pod_with(self.sandbox_config(name)).await
    }

    /// RunPodSandbox with `config` (e.g. `sandbox_config` with port mappings).
    pub async fn run_pod_with(
        &self,
        config: proto::PodSandboxConfig,
    ) -> (String, proto::PodSandboxConfig) {
        let id = self
            .runtime()
            .await
            .run_pod_sandbox(proto::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        (id, config)
    }

    pub fn container_config(
        &self,
        name: &str,
        image: &str,
        cmd: &[&str],
    ) -> proto::ContainerConfig {
        proto::ContainerConfig {
            metadata: Some(proto::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(proto::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            ..Default::default()
        }
    }

    pub async fn create_and_start(
        &self,
        pod: &str,
        sandbox_config: &proto::PodSandboxConfig,
        config: proto::ContainerConfig,
    ) -> String {
        let mut rt = self.runtime().await;
        let id = rt
            .create_container(proto::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        rt.start_container(proto::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        id
    }

    /// Removes a sandbox and its containers; errors are ignored (cleanup).
    pub async fn remove_pod(&self, pod: &str) {
        let _ = self
            .runtime()
            .await
            .remove_pod_sandbox(proto::RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await;
    }

    pub async fn sandbox_status(&self, pod: &str) -> proto::PodSandboxStatus {
        self.runtime()
            .await
            .pod_sandbox_status(proto::PodSandboxStatusRequest {
                pod_sandbox_id: pod.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    pub async fn status(&self, id: &str) -> proto::ContainerStatus {
        self.runtime()
            .await
            .container_status(proto::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    /// Waits (bounded) until the container has exited; returns its status.
    pub async fn wait_exited(&self, id: &str) -> proto::ContainerStatus {
        for _ in 0..600 {
            let s = self.status(id).await;
            if s.state == proto::ContainerState::ContainerExited as i32 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("container {id} did not exit");
    }

    pub async fn exec(&self, id: &str, cmd: &[&str]) -> proto::ExecSyncResponse {
        self.runtime()
            .await
            .exec_sync(proto::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits (bounded) until the file at `path` contains `needle`.
    pub async fn wait_for_file_text(&self, path: &Path, needle: &str) -> String {
        for _ in 0..200 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} never contained {needle:?}: {:?}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
    }

    /// The runtime's hostPort table (named after its bridge).
    pub fn hostport_table(&self) -> String {
        cri::network::hostport::table_name(&self.bridge)
    }

    pub fn nft_table_exists(&self, table: &str) -> bool {
        Command::new("nft")
            .args(["list", "table", "ip", table])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The node side of the pod network: the bridge's address.
    pub fn gateway(&self) -> String {
        self.cidr.replace(".0/24", ".1")
    }

    pub fn link_exists(name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    pub fn cgroup_exists(&self, rel: &str) -> bool {
        Path::new("/sys/fs/cgroup/memory")
            .join(self.cgroup_parent.trim_start_matches('/'))
            .join(rel)
            .exists()
    }
}

fn cgroup_roots() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn kill_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kill_cgroup_tree(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.kill_runtime();
        let rel = self.cgroup_parent.trim_start_matches('/').to_string();
        for root in cgroup_roots() {
            kill_cgroup_tree(&root.join(&rel));
        }
        std::thread::sleep(Duration::from_millis(200));
        // Unmount everything under the test dir, deepest first.
        let base = self.dir.path().display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&base))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // Veths on our bridge, then the bridge.
        if let Ok(out) = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(name) = line.split(": ").nth(1) {
                    let name = name.split('@').next().unwrap_or(name);
                    let _ = Command::new("ip").args(["link", "del", name]).status();
                }
            }
        }
        if Self::link_exists(&self.bridge) {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
        if self.nft_table_exists(&self.hostport_table()) {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &self.hostport_table()])
                .status();
        }
        for root in cgroup_roots() {
            remove_cgroup_tree(&root.join(&rel));
        }
    }
}

/// Where `hack/images/build` keeps the test image layouts between runs.
pub fn test_image_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("images")
}
