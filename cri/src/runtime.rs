//! The runtime state behind the gRPC handlers: sandboxes and containers in memory,
//! persisted as JSON records under `--root`, reloaded (and running containers
//! re-adopted) on start. Each verb here is one CRI RPC minus the proto plumbing.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::config::Config;
use crate::container::logs::{self, LogFile};
use crate::container::{
    self, ContainerRecord, ContainerState, console, exec, exit, libct, rootfs, spec, stats,
};
use crate::image::ImageStore;
use crate::network::{Ipam, hostport, netlink};
use crate::proto;
use crate::sandbox::{self, SandboxRecord, SandboxState, files, namespaces};
use crate::store::{read_dir_json, write_json};

/// Errors of runtime operations; the service maps them to gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Precondition(String),
    #[error("failed to {step}")]
    Failed {
        step: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn fail<E: std::error::Error + Send + Sync + 'static>(
    step: &'static str,
) -> impl FnOnce(E) -> RuntimeError {
    move |e| RuntimeError::Failed {
        step,
        source: Box::new(e),
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// One container in memory: its record plus an exit notification.
pub struct ContainerEntry {
    record: StdMutex<ContainerRecord>,
    exited: watch::Sender<bool>,
    log: Option<Arc<LogFile>>,
    /// Our end of the container's stdin, when it was created with `stdin`.
    stdin: Mutex<Option<tokio::net::unix::pipe::Sender>>,
    /// The pty master of a tty container: its output, input and size.
    console: Option<Arc<exec::Pty>>,
}

impl ContainerEntry {
    fn snapshot(&self) -> ContainerRecord {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update<T>(&self, f: impl FnOnce(&mut ContainerRecord) -> T) -> T {
        let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r)
    }
}

/// What the hostPort table is applied with, and what it holds.
#[derive(Default)]
struct HostPortSync {
    /// libnftables, started with the first sync.
    nft: Option<r8s_nft::LibNftables>,
    /// ctnetlink, opened with the first change of a UDP hostPort.
    conntrack: Option<Arc<r8s_nft::conntrack::NetlinkConntrack>>,
    /// The hostPorts of the table last applied.
    applied: Vec<hostport::HostPort>,
}

/// The runtime.
pub struct Runtime {
    pub config: Arc<Config>,
    pub images: Arc<ImageStore>,
    sandboxes: Mutex<HashMap<String, SandboxRecord>>,
    containers: Mutex<HashMap<String, Arc<ContainerEntry>>>,
    ipam: Ipam,
    host_net: Mutex<Option<rtnetlink::Handle>>,
    /// The hostPort table's appliers and its last applied content.
    hostports: Mutex<HostPortSync>,
    cpu_rates: container::cpu_rate::CpuRates,
    /// Writable-layer usage, measured at most every 10 s per container.
    layer_usage: Arc<container::layer_usage::LayerUsage>,
    _shutdown: CancellationToken,
}

fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Runtime {
    fn sandbox_record_path(&self, id: &str) -> PathBuf {
        self.config
            .root
            .join("sandboxes")
            .join(format!("{id}.json"))
    }
    fn container_record_path(&self, id: &str) -> PathBuf {
        self.config
            .root
            .join("containers")
            .join(format!("{id}.json"))
    }
    fn bundle_dir(&self, id: &str) -> PathBuf {
        self.config.state.join("containers").join(id)
    }
    fn rw_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("containers").join(id)
    }

    /// Loads persisted state and re-adopts running containers.
    pub async fn load(config: Config, shutdown: CancellationToken) -> Result<Self> {
        let config = Arc::new(config);
        let images = Arc::new(ImageStore::load(config.clone()));
        let ipam = Ipam::open(config.pod_cidr, config.root.join("ipam.json"));
        let mut sandboxes = HashMap::new();
        for mut s in read_dir_json::<SandboxRecord>(&config.root.join("sandboxes")) {
            if s.state == SandboxState::Ready
                && s.netns.as_ref().is_some_and(|p| !rootfs::is_mounted(p))
            {
                warn!(sandbox = %s.id, "sandbox namespaces are gone; marking not ready");
                s.state = SandboxState::NotReady;
            }
            sandboxes.insert(s.id.clone(), s);
        }
        let rt = Self {
            config,
            images,
            sandboxes: Mutex::new(sandboxes),
            containers: Mutex::new(HashMap::new()),
            ipam,
            host_net: Mutex::new(None),
            hostports: Mutex::new(HostPortSync::default()),
            cpu_rates: Default::default(),
            layer_usage: Default::default(),
            _shutdown: shutdown,
        };
        let records: Vec<ContainerRecord> = read_dir_json(&rt.config.root.join("containers"));
        for mut r in records {
            let alive = matches!(r.state, ContainerState::Created | ContainerState::Running)
                && r.pid > 0
                && exit::alive(r.pid);
            if matches!(r.state, ContainerState::Created | ContainerState::Running) && !alive {
                r.state = ContainerState::Exited;
                r.exit_code = 255;
                r.reason = "Unknown".into();
                r.finished_at = container::now_nanos();
                let _ = write_json(&rt.container_record_path(&r.id), &r);
            }
            let mut log = r.log_path.clone().map(LogFile::new);
            let mut console = None;
            if alive && r.console_holder > 0 {
                match console::take(r.console_holder)
                    .map_err(std::io::Error::other)
                    .and_then(|master| follow_console(master, r.log_path.as_deref()))
                {
                    Ok((c, l)) => {
                        console = Some(c);
                        log = Some(l);
                    }
                    Err(err) => warn!(container = %r.id, ?err, "cannot take back the console"),
                }
            } else if alive && let Some(log) = &log {
                let bundle = rt.bundle_dir(&r.id);
                for (name, stream) in [("stdout", "stdout"), ("stderr", "stderr")] {
                    if let Err(err) = logs::spawn_copier(&bundle.join(name), stream, log.clone()) {
                        warn!(container = %r.id, ?err, "cannot re-attach log stream");
                    }
                }
            }
            let (tx, _) = watch::channel(!alive);
            let pid = r.pid;
            let id = r.id.clone();
            let entry = Arc::new(ContainerEntry {
                record: StdMutex::new(r),
                exited: tx,
                log,
                stdin: Mutex::new(None),
                console,
            });
            if alive {
                info!(container = %id, pid, "re-adopted running container");
                rt.spawn_exit_watcher(entry.clone(), pid);
            }
            rt.containers.lock().await.insert(id, entry);
        }
        // The kernel still has the table an earlier run made from these same
        // sandboxes: their UDP flows are current, not stale, so they stay.
        let restored = rt.ready_host_ports().await;
        rt.hostports.lock().await.applied = restored;
        if let Err(err) = rt.sync_hostports().await {
            warn!(?err, "cannot restore the hostPort table");
        }
        Ok(rt)
    }

    async fn host_netlink(&self) -> Result<rtnetlink::Handle> {
        let mut guard = self.host_net.lock().await;
        if let Some(h) = guard.as_ref() {
            return Ok(h.clone());
        }
        let h = netlink::host_handle().map_err(fail("open netlink"))?;
        *guard = Some(h.clone());
        Ok(h)
    }

    // ---- sandboxes ----

    /// RunPodSandbox.
    #[instrument(skip_all)]
    pub async fn run_pod_sandbox(
        &self,
        config: proto::PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| RuntimeError::Invalid("sandbox config metadata is required".into()))?;
        {
            let sandboxes = self.sandboxes.lock().await;
            if let Some(existing) = sandboxes.values().find(|s| {
                s.config().metadata.as_ref().is_some_and(|m| {
                    m.name == meta.name
                        && m.namespace == meta.namespace
                        && m.uid == meta.uid
                        && m.attempt == meta.attempt
                })
            }) {
                return Err(RuntimeError::AlreadyExists(format!(
                    "failed to reserve sandbox name \"{}_{}_{}_{}\": name is reserved for {:?}",
                    meta.name, meta.namespace, meta.uid, meta.attempt, existing.id
                )));
            }
        }
        check_sandbox_seccomp(&config)?;
        let id = new_id();
        let hostname = if config.hostname.is_empty() {
            meta.name.clone()
        } else {
            config.hostname.clone()
        };
        let nso = sandbox::namespace_options(&config);
        let host_network = nso.network == proto::NamespaceMode::Node as i32;
        let host_ipc = nso.ipc == proto::NamespaceMode::Node as i32;
        let (cgroup_parent, cgroup_owned) = match config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty())
        {
            Some(p) => (p, false),
            None => (
                format!(
                    "{}/pod-{}",
                    self.config.cgroup_parent.trim_end_matches('/'),
                    &id[..12]
                ),
                true,
            ),
        };
        let mut record = SandboxRecord {
            id: id.clone(),
            config: SandboxRecord::encode_config(&config),
            runtime_handler,
            state: SandboxState::Ready,
            created_at: container::now_nanos(),
            ip: None,
            host_veth: None,
            netns: None,
            ipc: None,
            uts: None,
            files_dir: self.config.root.join("sandboxes").join(&id),
            cgroup_parent,
            cgroup_owned,
        };
        match self
            .setup_sandbox(&mut record, &hostname, host_network, host_ipc, &config)
            .await
        {
            Ok(()) => {}
            Err(e) => {
                self.teardown_sandbox(&record).await;
                let _ = std::fs::remove_dir_all(&record.files_dir);
                let _ = std::fs::remove_dir_all(self.config.state.join("sandboxes").join(&id));
                return Err(e);
            }
        }
        let has_host_ports = record.ip.is_some() && !config.port_mappings.is_empty();
        self.sandboxes
            .lock()
            .await
            .insert(id.clone(), record.clone());
        let persisted =
            write_json(&self.sandbox_record_path(&id), &record).map_err(fail("persist sandbox"));
        let ready = match persisted {
            Ok(()) if has_host_ports => self.sync_hostports().await,
            other => other,
        };
        if let Err(e) = ready {
            self.sandboxes.lock().await.remove(&id);
            let _ = std::fs::remove_file(self.sandbox_record_path(&id));
            self.teardown_sandbox(&record).await;
            let _ = std::fs::remove_dir_all(&record.files_dir);
            let _ = std::fs::remove_dir_all(self.config.state.join("sandboxes").join(&id));
            if has_host_ports && let Err(err) = self.sync_hostports().await {
                warn!(?err, "cannot update the hostPort table");
            }
            return Err(e);
        }
        info!(sandbox = %id, name = %meta.name, namespace = %meta.namespace, ip = ?record.ip, "sandbox ready");
        Ok(id)
    }

    /// The hostPort mappings of every ready sandbox.
    async fn ready_host_ports(&self) -> Vec<hostport::HostPort> {
        let sandboxes = self.sandboxes.lock().await;
        sandboxes
            .values()
            .filter(|s| s.state == SandboxState::Ready)
            .filter_map(|s| {
                let ip = s.ip.as_deref()?.parse().ok()?;
                Some(hostport::of_sandbox(ip, &s.config().port_mappings))
            })
            .flatten()
            .collect()
    }

    /// Rewrites the hostPort table from the mappings of every ready sandbox (at start: also
    /// removes a table an earlier run left with no sandbox using it).
    async fn sync_hostports(&self) -> Result<()> {
        // Held while the ports are collected until the stale flows are gone, so that syncs
        // apply in the order they read and each one diffs against the table before it.
        let mut guard = self.hostports.lock().await;
        let sync = &mut *guard;
        let ports = self.ready_host_ports().await;
        let nft = match sync.nft.as_mut() {
            Some(n) => n,
            None => sync
                .nft
                .insert(r8s_nft::LibNftables::new().map_err(fail("start libnftables"))?),
        };
        if !ports.is_empty() {
            hostport::allow_localhost(&self.config.bridge);
        }
        let script = hostport::render(&hostport::table_name(&self.config.bridge), &ports);
        nft.run(&script).map_err(fail("program hostPorts"))?;
        let stale = hostport::stale_udp_flows(&sync.applied, &ports);
        sync.applied = ports;
        hostport::forget_flows(&mut sync.conntrack, stale).await;
        Ok(())
    }

    async fn setup_sandbox(
        &self,
        record: &mut SandboxRecord,
        hostname: &str,
        host_network: bool,
        host_ipc: bool,
        config: &proto::PodSandboxConfig,
    ) -> Result<()> {
        let ns_dir = self
            .config
            .state
            .join("sandboxes")
            .join(&record.id)
            .join("ns");
        let host = hostname.to_string();
        let ns = tokio::task::spawn_blocking(move || {
            namespaces::create(&ns_dir, &host, !host_network, !host_ipc, !host_network)
        })
        .await
        .map_err(fail("create namespaces"))?
        .map_err(fail("create namespaces"))?;
        record.netns = ns.net;
        record.ipc = ns.ipc;
        record.uts = ns.uts;
        if let Some(netns) = record.netns.clone() {
            let ip = self
                .ipam
                .allocate(&record.id)
                .map_err(fail("allocate pod address"))?;
            record.ip = Some(ip.to_string());
            let veth = netlink::host_veth_name(&record.id);
            let host = self.host_netlink().await?;
            let prefix = self.config.pod_cidr.prefix_len();
            let bridge =
                netlink::ensure_bridge(&host, &self.config.bridge, self.config.gateway(), prefix)
                    .await
                    .map_err(fail("set up bridge"))?;
            record.host_veth = Some(veth.clone());
            netlink::attach_pod(
                &host,
                bridge,
                &netns,
                &veth,
                ip,
                prefix,
                self.config.gateway(),
            )
            .await
            .map_err(fail("attach pod network"))?;
        }
        files::write_pod_files(
            &record.files_dir,
            hostname,
            record.ip.as_deref(),
            config.dns_config.as_ref(),
        )
        .map_err(fail("write pod files"))?;
        Ok(())
    }

    /// Releases network and namespaces of a sandbox; idempotent.
    async fn teardown_sandbox(&self, record: &SandboxRecord) {
        if let Some(veth) = &record.host_veth {
            match self.host_netlink().await {
                Ok(h) => {
                    if let Err(err) = netlink::detach_pod(&h, veth).await {
                        warn!(sandbox = %record.id, ?err, "failed to delete veth");
                    }
                }
                Err(err) => warn!(?err, "no netlink handle"),
            }
        }
        if let Err(err) = self.ipam.release(&record.id) {
            warn!(sandbox = %record.id, ?err, "failed to release address");
        }
        for p in [&record.netns, &record.ipc, &record.uts]
            .into_iter()
            .flatten()
        {
            namespaces::release(p);
        }
    }

    /// StopPodSandbox: kills the pod's containers and releases its network.
    #[instrument(skip_all, fields(sandbox = %id))]
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let Some(record) = self.find_sandbox(id).await else {
            return Ok(());
        };
        for c in self.containers_of(&record.id).await {
            self.stop_container(&c, 0).await?;
        }
        self.teardown_sandbox(&record).await;
        {
            let mut sandboxes = self.sandboxes.lock().await;
            if let Some(s) = sandboxes.get_mut(&record.id) {
                s.state = SandboxState::NotReady;
                write_json(&self.sandbox_record_path(&s.id), &*s)
                    .map_err(fail("persist sandbox"))?;
            }
        }
        if record.state == SandboxState::Ready && !record.config().port_mappings.is_empty() {
            self.sync_hostports().await?;
        }
        info!("sandbox stopped");
        Ok(())
    }

    /// RemovePodSandbox: stops it if needed, removes its containers and files.
    #[instrument(skip_all, fields(sandbox = %id))]
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let Some(record) = self.find_sandbox(id).await else {
            return Ok(());
        };
        self.stop_pod_sandbox(&record.id).await?;
        for c in self.containers_of(&record.id).await {
            self.remove_container(&c).await?;
        }
        let _ = std::fs::remove_dir_all(&record.files_dir);
        let _ = std::fs::remove_dir_all(self.config.state.join("sandboxes").join(&record.id));
        if record.cgroup_owned {
            stats::remove(&record.cgroup_parent);
        }
        let _ = std::fs::remove_file(self.sandbox_record_path(&record.id));
        self.sandboxes.lock().await.remove(&record.id);
        info!("sandbox removed");
        Ok(())
    }

    async fn find_sandbox(&self, id: &str) -> Option<SandboxRecord> {
        let sandboxes = self.sandboxes.lock().await;
        if let Some(s) = sandboxes.get(id) {
            return Some(s.clone());
        }
        if id.is_empty() {
            return None;
        }
        let mut m = sandboxes.values().filter(|s| s.id.starts_with(id));
        match (m.next(), m.next()) {
            (Some(one), None) => Some(one.clone()),
            _ => None,
        }
    }

    async fn containers_of(&self, sandbox_id: &str) -> Vec<String> {
        self.containers
            .lock()
            .await
            .values()
            .map(|e| e.snapshot())
            .filter(|r| r.sandbox_id == sandbox_id)
            .map(|r| r.id)
            .collect()
    }

    /// PodSandboxStatus.
    pub async fn pod_sandbox_status(&self, id: &str) -> Result<proto::PodSandboxStatus> {
        self.find_sandbox(id)
            .await
            .map(|s| s.to_status())
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "sandbox",
                id: id.to_string(),
            })
    }

    /// ListPodSandbox.
    pub async fn list_pod_sandbox(
        &self,
        filter: Option<proto::PodSandboxFilter>,
    ) -> Vec<proto::PodSandbox> {
        self.sandboxes
            .lock()
            .await
            .values()
            .filter(|s| {
                filter
                    .as_ref()
                    .is_none_or(|f| sandbox::matches_filter(s, f))
            })
            .map(SandboxRecord::to_proto)
            .collect()
    }

    // ---- containers ----

    async fn entry(&self, id: &str) -> Result<Arc<ContainerEntry>> {
        let containers = self.containers.lock().await;
        if let Some(e) = containers.get(id) {
            return Ok(e.clone());
        }
        let mut m = containers
            .iter()
            .filter(|(k, _)| !id.is_empty() && k.starts_with(id));
        match (m.next(), m.next()) {
            (Some((_, e)), None) => Ok(e.clone()),
            _ => Err(RuntimeError::NotFound {
                kind: "container",
                id: id.to_string(),
            }),
        }
    }

    fn spawn_exit_watcher(&self, entry: Arc<ContainerEntry>, pid: i32) {
        let record_path = self.container_record_path(&entry.snapshot().id);
        let rx = exit::watch(pid);
        tokio::spawn(async move {
            let code = rx.await.ok().flatten();
            let record = entry.update(|r| {
                let oom = stats::oom_kills(&r.cgroup_path) > 0;
                r.state = ContainerState::Exited;
                r.finished_at = container::now_nanos();
                match code {
                    Some(code) => {
                        r.exit_code = code;
                        r.reason = container::exit_reason(code, oom).into();
                    }
                    None => {
                        r.exit_code = if oom { 137 } else { 255 };
                        r.reason = if oom { "OOMKilled" } else { "Unknown" }.into();
                    }
                }
                r.clone()
            });
            info!(container = %record.id, exit_code = record.exit_code, reason = %record.reason, "container exited");
            if let Err(err) = write_json(&record_path, &record) {
                warn!(container = %record.id, ?err, "failed to persist exit");
            }
            entry.exited.send_replace(true);
        });
    }

    /// CreateContainer.
    #[instrument(skip_all, fields(sandbox = %sandbox_id))]
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: proto::ContainerConfig,
    ) -> Result<String> {
        let sandbox =
            self.find_sandbox(sandbox_id)
                .await
                .ok_or_else(|| RuntimeError::NotFound {
                    kind: "sandbox",
                    id: sandbox_id.to_string(),
                })?;
        if sandbox.state != SandboxState::Ready {
            return Err(RuntimeError::Precondition(format!(
                "sandbox {:?} is not ready",
                sandbox.id
            )));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| RuntimeError::Invalid("container config metadata is required".into()))?;
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = self
            .images
            .resolve(&image_ref)
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "image",
                id: image_ref.clone(),
            })?;
        {
            let containers = self.containers.lock().await;
            if containers.values().map(|e| e.snapshot()).any(|r| {
                r.sandbox_id == sandbox.id
                    && r.config()
                        .metadata
                        .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
            }) {
                return Err(RuntimeError::AlreadyExists(format!(
                    "failed to reserve container name {:?}: name is reserved",
                    meta.name
                )));
            }
        }
        let id = new_id();
        let bundle = self.bundle_dir(&id);
        let rw = self.rw_dir(&id);
        let merged = bundle.join("rootfs");
        let lower = self.images.lower_dirs(&image);
        {
            let (rw, merged) = (rw.clone(), merged.clone());
            tokio::task::spawn_blocking(move || rootfs::mount_overlay(&lower, &rw, &merged))
                .await
                .map_err(fail("mount rootfs"))?
                .map_err(fail("mount rootfs"))?;
        }
        let cleanup = |bundle: &Path, rw: &Path, merged: &Path| {
            rootfs::unmount(merged);
            let _ = std::fs::remove_dir_all(bundle);
            let _ = std::fs::remove_dir_all(rw);
        };
        let res = self
            .create_in_bundle(&id, &sandbox, &config, &image, &image_ref, &bundle, &merged)
            .await;
        match res {
            Ok(entry) => {
                self.containers.lock().await.insert(id.clone(), entry);
                info!(container = %id, name = %meta.name, "container created");
                Ok(id)
            }
            Err(e) => {
                let lc_root = self.config.libcontainer_root();
                let id2 = id.clone();
                let _ = tokio::task::spawn_blocking(move || libct::delete(&id2, &lc_root)).await;
                cleanup(&bundle, &rw, &merged);
                stats::remove(&format!("{}/{}", sandbox.cgroup_parent, id));
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_in_bundle(
        &self,
        id: &str,
        sandbox: &SandboxRecord,
        config: &proto::ContainerConfig,
        image: &crate::image::ImageRecord,
        image_ref: &str,
        bundle: &Path,
        merged: &Path,
    ) -> Result<Arc<ContainerEntry>> {
        let sandbox_config = sandbox.config();
        let cgroup_path = format!("{}/{}", sandbox.cgroup_parent, id);
        let spec = spec::build(&spec::SpecInput {
            config,
            sandbox,
            sandbox_config: &sandbox_config,
            image: &image.config,
            rootfs: merged,
            cgroups_path: &cgroup_path,
            unified_cgroups: matches!(
                libcgroups::common::get_cgroup_setup(),
                Ok(libcgroups::common::CgroupSetup::Unified)
            ),
        })
        .map_err(|e| RuntimeError::Invalid(crate::streaming::chain(&e)))?;
        spec.save(bundle.join("config.json"))
            .map_err(fail("write runtime spec"))?;
        let log_path = (!sandbox_config.log_directory.is_empty() && !config.log_path.is_empty())
            .then(|| Path::new(&sandbox_config.log_directory).join(&config.log_path));
        // The file exists from the start, also for a container that prints
        // nothing (as containerd's).
        if let Some(p) = &log_path {
            logs::create_file(p).map_err(fail("create log file"))?;
        }
        if config.tty {
            return self
                .create_with_console(id, sandbox, config, image, image_ref, bundle, log_path)
                .await;
        }
        let log = log_path.clone().map(LogFile::new);
        let (stdout, stderr) = match &log {
            Some(log) => {
                let mut fds = Vec::new();
                for (name, stream) in [("stdout", "stdout"), ("stderr", "stderr")] {
                    let fifo = bundle.join(name);
                    logs::make_fifo(&fifo).map_err(fail("create log fifo"))?;
                    let fd = logs::open_container_end(&fifo).map_err(fail("open log fifo"))?;
                    logs::spawn_copier(&fifo, stream, log.clone())
                        .map_err(fail("start log copier"))?;
                    fds.push(fd);
                }
                let stderr = fds.pop();
                let stdout = fds.pop();
                match (stdout, stderr) {
                    (Some(o), Some(e)) => (o, e),
                    _ => {
                        return Err(RuntimeError::Invalid("log streams missing".into()));
                    }
                }
            }
            None => {
                let null = |_| -> Result<std::os::fd::OwnedFd> {
                    Ok(std::fs::OpenOptions::new()
                        .write(true)
                        .open("/dev/null")
                        .map_err(fail("open /dev/null"))?
                        .into())
                };
                (null(())?, null(())?)
            }
        };
        let (stdin_ours, stdin_theirs) = if config.stdin {
            let (ours, theirs) =
                stdin_fifo(&bundle.join("stdin")).map_err(fail("create stdin fifo"))?;
            (Some(ours), Some(theirs))
        } else {
            (None, None)
        };
        let lc_root = self.config.libcontainer_root();
        let (id2, bundle2) = (id.to_string(), bundle.to_path_buf());
        let pid = within_deadline("create container", &cgroup_path, move |held| {
            let stdio = libct::InitStdio::Files {
                stdin: stdin_theirs,
                stdout,
                stderr,
            };
            libct::create(held, &id2, &lc_root, &bundle2, stdio)
                .map_err(libct_error("create container"))
        })
        .await?;
        let record = new_record(
            id,
            sandbox,
            config,
            image,
            image_ref,
            pid,
            log_path,
            cgroup_path,
        );
        self.register_created(record, log, stdin_ours, None)
    }

    /// The tty half of CreateContainer: the init gets a pty whose master we
    /// keep; its output is logged as stdout, attach writes and resizes it.
    #[allow(clippy::too_many_arguments)]
    async fn create_with_console(
        &self,
        id: &str,
        sandbox: &SandboxRecord,
        config: &proto::ContainerConfig,
        image: &crate::image::ImageRecord,
        image_ref: &str,
        bundle: &Path,
        log_path: Option<PathBuf>,
    ) -> Result<Arc<ContainerEntry>> {
        let scratch = self.config.state.join("exec");
        std::fs::create_dir_all(&scratch).map_err(fail("create console socket dir"))?;
        // Unix socket paths are short: a random name in the state dir.
        let socket = scratch.join(format!("{:016x}.sock", rand::random::<u64>()));
        let lc_root = self.config.libcontainer_root();
        let (id2, bundle2) = (id.to_string(), bundle.to_path_buf());
        let cgroup_path = format!("{}/{}", sandbox.cgroup_parent, id);
        let (pid, master) = within_deadline("create container", &cgroup_path, move |held| {
            exec::create_with_console(held, &id2, &lc_root, &bundle2, &socket).map_err(
                |e| match e {
                    exec::ExecError::Start(e) => libct_error("create container")(e),
                    other => fail("create container")(other),
                },
            )
        })
        .await?;
        let holder = match console::spawn_holder(&master) {
            Ok(pid) => pid,
            Err(err) => {
                warn!(container = %id, ?err, "console not held: the container will not survive a restart");
                0
            }
        };
        let (console, log) =
            follow_console(master, log_path.as_deref()).map_err(fail("take container console"))?;
        let mut record = new_record(
            id,
            sandbox,
            config,
            image,
            image_ref,
            pid,
            log_path,
            cgroup_path,
        );
        record.console_holder = holder;
        self.register_created(record, Some(log), None, Some(console))
    }

    /// Persists a just-created container's record and starts watching for
    /// its exit: the common tail of both ways to create one.
    fn register_created(
        &self,
        record: ContainerRecord,
        log: Option<Arc<LogFile>>,
        stdin: Option<tokio::net::unix::pipe::Sender>,
        console: Option<Arc<exec::Pty>>,
    ) -> Result<Arc<ContainerEntry>> {
        write_json(&self.container_record_path(&record.id), &record)
            .map_err(fail("persist container"))?;
        let pid = record.pid;
        let (tx, _) = watch::channel(false);
        let entry = Arc::new(ContainerEntry {
            record: StdMutex::new(record),
            exited: tx,
            log,
            stdin: Mutex::new(stdin),
            console,
        });
        self.spawn_exit_watcher(entry.clone(), pid);
        Ok(entry)
    }
}

/// Logs (and feeds attach from) a tty container's console.
fn follow_console(
    master: std::os::fd::OwnedFd,
    log_path: Option<&Path>,
) -> std::io::Result<(Arc<exec::Pty>, Arc<LogFile>)> {
    let console = Arc::new(exec::Pty::new(master)?);
    let log = match log_path {
        Some(p) => LogFile::new(p.to_path_buf()),
        None => LogFile::discard(),
    };
    logs::spawn_console_copier(console.clone(), log.clone());
    Ok((console, log))
}

/// The record of a just-created container.
#[allow(clippy::too_many_arguments)]
fn new_record(
    id: &str,
    sandbox: &SandboxRecord,
    config: &proto::ContainerConfig,
    image: &crate::image::ImageRecord,
    image_ref: &str,
    pid: i32,
    log_path: Option<PathBuf>,
    cgroup_path: String,
) -> ContainerRecord {
    let stop_signal = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.stop_signal().clone());
    ContainerRecord {
        id: id.to_string(),
        sandbox_id: sandbox.id.clone(),
        config: ContainerRecord::encode_config(config),
        image_ref: image_ref.to_string(),
        image_id: image.id.clone(),
        state: ContainerState::Created,
        created_at: container::now_nanos(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        pid,
        log_path,
        cgroup_path,
        stop_signal,
        console_holder: 0,
    }
}

impl Runtime {
    /// StartContainer.
    #[instrument(skip_all, fields(container = %id))]
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let entry = self.entry(id).await?;
        let r = entry.snapshot();
        if !r.state.can_start() {
            return Err(RuntimeError::Precondition(format!(
                "container {:?} is in {:?} state, not created",
                r.id, r.state
            )));
        }
        let lc_root = self.config.libcontainer_root();
        let cid = r.id.clone();
        // Taken before the start: a process that exits at once may be reaped
        // (and get its finishedAt) before the start call returns.
        let started_at = container::now_nanos();
        within_deadline("start container", &r.cgroup_path, move |held| {
            libct::start(held, &cid, &lc_root).map_err(libct_error("start container"))
        })
        .await?;
        let record = entry.update(|r| {
            r.started_at = started_at;
            if r.state == ContainerState::Created {
                r.state = ContainerState::Running;
            }
            r.clone()
        });
        write_json(&self.container_record_path(&record.id), &record)
            .map_err(fail("persist container"))?;
        info!("container started");
        Ok(())
    }

    /// StopContainer: the stop signal, then SIGKILL after `timeout` seconds.
    #[instrument(skip_all, fields(container = %id))]
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let entry = self.entry(id).await?;
        let r = entry.snapshot();
        if r.state == ContainerState::Exited || *entry.exited.borrow() {
            return Ok(());
        }
        let pid = Pid::from_raw(r.pid);
        let mut exited = entry.exited.subscribe();
        if timeout > 0 {
            let sig = r
                .stop_signal
                .as_deref()
                .and_then(parse_signal)
                .unwrap_or(Signal::SIGTERM);
            let _ = nix::sys::signal::kill(pid, sig);
            let wait = Duration::from_secs(u64::try_from(timeout).unwrap_or(0));
            if tokio::time::timeout(wait, exited.wait_for(|e| *e))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        if tokio::time::timeout(Duration::from_secs(30), exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            return Err(RuntimeError::Failed {
                step: "stop container",
                source: "container did not exit after SIGKILL".into(),
            });
        }
        info!("container stopped");
        Ok(())
    }

    /// RemoveContainer: kills it if needed and removes every trace.
    #[instrument(skip_all, fields(container = %id))]
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let Ok(entry) = self.entry(id).await else {
            return Ok(());
        };
        let r = entry.snapshot();
        if r.state == ContainerState::Created {
            // Never started: the init waits for start; kill it directly.
            let _ = nix::sys::signal::kill(Pid::from_raw(r.pid), Signal::SIGKILL);
        }
        self.stop_container(&r.id, 0).await?;
        let lc_root = self.config.libcontainer_root();
        let cid = r.id.clone();
        tokio::task::spawn_blocking(move || libct::delete(&cid, &lc_root))
            .await
            .map_err(fail("delete container"))?
            .map_err(fail("delete container"))?;
        console::kill_holder(r.console_holder);
        let bundle = self.bundle_dir(&r.id);
        let rw = self.rw_dir(&r.id);
        let cgroup = r.cgroup_path.clone();
        tokio::task::spawn_blocking(move || {
            rootfs::unmount(&bundle.join("rootfs"));
            let _ = std::fs::remove_dir_all(&bundle);
            let _ = std::fs::remove_dir_all(&rw);
            stats::remove(&cgroup);
        })
        .await
        .map_err(fail("remove container files"))?;
        let _ = std::fs::remove_file(self.container_record_path(&r.id));
        self.containers.lock().await.remove(&r.id);
        self.cpu_rates.forget(&r.id);
        self.layer_usage.forget(&r.id);
        info!("container removed");
        Ok(())
    }

    /// ContainerStatus.
    pub async fn container_status(&self, id: &str) -> Result<proto::ContainerStatus> {
        Ok(self.entry(id).await?.snapshot().to_status())
    }

    /// ListContainers.
    pub async fn list_containers(
        &self,
        filter: Option<proto::ContainerFilter>,
    ) -> Vec<proto::Container> {
        self.containers
            .lock()
            .await
            .values()
            .map(|e| e.snapshot())
            .filter(|r| {
                filter
                    .as_ref()
                    .is_none_or(|f| container::matches_filter(r, f))
            })
            .map(|r| r.to_proto())
            .collect()
    }

    /// The usage of each container's writable layer (its overlay upper dir).
    async fn writable_layers(&self, ids: Vec<String>) -> BTreeMap<String, proto::FilesystemUsage> {
        let dirs: Vec<(String, PathBuf)> = ids
            .into_iter()
            .map(|id| {
                let dir = self.rw_dir(&id);
                (id, dir)
            })
            .collect();
        let cache = self.layer_usage.clone();
        tokio::task::spawn_blocking(move || {
            dirs.into_iter()
                .map(|(id, dir)| {
                    let m = cache.measure(&id, &dir.join("upper"));
                    let layer = proto::FilesystemUsage {
                        timestamp: m.at_nanos,
                        fs_id: Some(proto::FilesystemIdentifier {
                            mountpoint: dir.display().to_string(),
                        }),
                        used_bytes: Some(proto::UInt64Value {
                            value: m.usage.bytes,
                        }),
                        inodes_used: Some(proto::UInt64Value {
                            value: m.usage.inodes,
                        }),
                    };
                    (id, layer)
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    fn stats_of(
        &self,
        r: &ContainerRecord,
        writable_layer: Option<proto::FilesystemUsage>,
    ) -> proto::ContainerStats {
        let u = stats::usage(&r.cgroup_path);
        let now = container::now_nanos();
        let c = r.config();
        proto::ContainerStats {
            attributes: Some(proto::ContainerAttributes {
                id: r.id.clone(),
                metadata: c.metadata,
                labels: c.labels,
                annotations: c.annotations,
            }),
            cpu: Some(proto::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: Some(proto::UInt64Value {
                    value: u.cpu_usage_nanos,
                }),
                usage_nano_cores: self
                    .cpu_rates
                    .rate(
                        &r.id,
                        u64::try_from(now).unwrap_or_default(),
                        u.cpu_usage_nanos,
                    )
                    .map(|value| proto::UInt64Value { value }),
                psi: None,
            }),
            memory: Some(proto::MemoryUsage {
                timestamp: now,
                working_set_bytes: Some(proto::UInt64Value {
                    value: u.working_set_bytes,
                }),
                usage_bytes: Some(proto::UInt64Value {
                    value: u.memory_usage_bytes,
                }),
                ..Default::default()
            }),
            writable_layer,
            swap: None,
            io: None,
        }
    }

    /// ContainerStats.
    pub async fn container_stats(&self, id: &str) -> Result<proto::ContainerStats> {
        let r = self.entry(id).await?.snapshot();
        let mut layers = self.writable_layers(vec![r.id.clone()]).await;
        Ok(self.stats_of(&r, layers.remove(&r.id)))
    }

    /// ListContainerStats.
    pub async fn list_container_stats(
        &self,
        filter: Option<proto::ContainerStatsFilter>,
    ) -> Vec<proto::ContainerStats> {
        let records: Vec<ContainerRecord> = self
            .containers
            .lock()
            .await
            .values()
            .map(|e| e.snapshot())
            .collect();
        let selected: Vec<&ContainerRecord> = records
            .iter()
            .filter(|r| r.state == ContainerState::Running)
            .filter(|r| {
                filter.as_ref().is_none_or(|f| {
                    (f.id.is_empty() || r.id.starts_with(&f.id))
                        && (f.pod_sandbox_id.is_empty()
                            || r.sandbox_id.starts_with(&f.pod_sandbox_id))
                        && f.label_selector
                            .iter()
                            .all(|(k, v)| r.config().labels.get(k) == Some(v))
                })
            })
            .collect();
        let mut layers = self
            .writable_layers(selected.iter().map(|r| r.id.clone()).collect())
            .await;
        selected
            .into_iter()
            .map(|r| self.stats_of(r, layers.remove(&r.id)))
            .collect()
    }

    /// ExecSync.
    #[instrument(skip_all, fields(container = %id))]
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<exec::ExecOutput> {
        let r = self.entry(id).await?.snapshot();
        if r.state != ContainerState::Running {
            return Err(RuntimeError::Precondition(format!(
                "container {:?} is not running",
                r.id
            )));
        }
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("command is required".into()));
        }
        exec::exec_sync(self.exec_target(r.id), cmd, timeout)
            .await
            .map_err(|e| match e {
                exec::ExecError::Timeout { .. } => RuntimeError::Failed {
                    step: "exec (timeout)",
                    source: Box::new(e),
                },
                other => fail("exec")(other),
            })
    }

    /// Checks that `id` is a running container (the Exec/Attach RPCs' precondition);
    /// returns its full id.
    pub async fn running_container(&self, id: &str) -> Result<String> {
        let r = self.entry(id).await?.snapshot();
        if r.state != ContainerState::Running {
            return Err(RuntimeError::Precondition(format!(
                "container {:?} is not running",
                r.id
            )));
        }
        Ok(r.id)
    }

    /// Starts a streaming exec (the streaming server's side of Exec).
    #[instrument(skip_all, fields(container = %id))]
    pub async fn start_exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        opts: exec::StreamOptions,
    ) -> Result<exec::ExecProcess> {
        let id = self.running_container(id).await?;
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("command is required".into()));
        }
        exec::exec_streaming(self.exec_target(id), cmd, opts)
            .await
            .map_err(fail("exec"))
    }

    fn exec_target(&self, id: String) -> exec::ExecTarget {
        exec::ExecTarget {
            root: self.config.libcontainer_root(),
            bundle: self.bundle_dir(&id),
            scratch: self.config.state.join("exec"),
            id,
        }
    }

    /// Checks that `id` is a ready sandbox (the PortForward RPC's precondition);
    /// returns its full id.
    pub async fn ready_sandbox(&self, id: &str) -> Result<String> {
        let s = self
            .find_sandbox(id)
            .await
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "sandbox",
                id: id.to_string(),
            })?;
        if s.state != SandboxState::Ready {
            return Err(RuntimeError::Precondition(format!(
                "sandbox {:?} is not ready",
                s.id
            )));
        }
        Ok(s.id)
    }

    /// Where port-forward connects for sandbox `id`.
    pub async fn port_forward_target(
        &self,
        id: &str,
    ) -> Result<crate::streaming::portforward::Target> {
        let id = self.ready_sandbox(id).await?;
        let netns = self.find_sandbox(&id).await.and_then(|s| s.netns.clone());
        Ok(crate::streaming::portforward::Target { pod: id, netns })
    }

    /// Attach: follows the container's output (from now on) and feeds its
    /// stdin when it was created with one, until the container exits.
    #[instrument(skip_all, fields(container = %id))]
    pub async fn attach_session(&self, id: &str, io: crate::streaming::remotecommand::SessionIo) {
        use crate::streaming::remotecommand::{ExitStatus, OutChannel, Outgoing};
        let channel = |stream: &str| {
            if stream == "stderr" {
                OutChannel::Stderr
            } else {
                OutChannel::Stdout
            }
        };
        let entry = match self.entry(id).await {
            Ok(e) => e,
            Err(err) => {
                let msg = format!("error attaching to container: {err}");
                let _ = io
                    .out
                    .send(Outgoing::Status(ExitStatus::Internal(msg)))
                    .await;
                return;
            }
        };
        let Some(log) = entry.log.clone() else {
            let msg = "error attaching to container: container has no output streams".to_string();
            let _ = io
                .out
                .send(Outgoing::Status(ExitStatus::Internal(msg)))
                .await;
            return;
        };
        let stdin_once = entry.snapshot().config().stdin_once;
        let mut taps = log.subscribe();
        let mut exited = entry.exited.subscribe();
        let mut stdin = io.stdin;
        // Only a terminal has a size; pipes ignore resizes.
        let mut resize = io.resize.filter(|_| entry.console.is_some());
        let mut done = *exited.borrow();
        while !done {
            let next_stdin = async {
                match stdin.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let next_resize = async {
                match resize.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                tap = taps.recv() => match tap {
                    Ok((stream, data)) => {
                        if io.out.send(Outgoing::Data(channel(stream), data)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(skipped = n, "attached client fell behind the container's output");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                size = next_resize => match (size, &entry.console) {
                    (Some(size), Some(console)) => {
                        if let Err(err) = console.resize(size.width, size.height) {
                            debug!(?err, "terminal resize failed");
                        }
                    }
                    _ => resize = None,
                },
                data = next_stdin => {
                    if data.is_none() {
                        stdin = None;
                    }
                    attach_input(&entry, data, stdin_once).await;
                },
                res = exited.changed() => {
                    done = res.is_err() || *exited.borrow();
                }
            }
        }
        // Output written just before the exit may still be in flight.
        while let Ok(Ok((stream, data))) =
            tokio::time::timeout(Duration::from_millis(200), taps.recv()).await
        {
            if io
                .out
                .send(Outgoing::Data(channel(stream), data))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = io.out.send(Outgoing::Status(ExitStatus::Success)).await;
    }

    /// ReopenContainerLog.
    pub async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let entry = self.entry(id).await?;
        if entry.snapshot().state != ContainerState::Running {
            return Err(RuntimeError::Precondition(format!(
                "container {id:?} is not running"
            )));
        }
        if let Some(log) = &entry.log {
            log.reopen().await.map_err(fail("reopen container log"))?;
        }
        Ok(())
    }
}

/// Feeds attached input to the container: its console, or its stdin pipe.
/// `None` is the client's end of input.
async fn attach_input(entry: &ContainerEntry, data: Option<bytes::Bytes>, stdin_once: bool) {
    match (data, &entry.console) {
        (Some(data), Some(console)) => {
            if let Err(err) = console.write_all(&data).await {
                debug!(?err, "terminal input failed");
            }
        }
        // The end of a terminal's input is the user's ^D, not a hang-up.
        (None, Some(_)) => {}
        (Some(data), None) => {
            let mut guard = entry.stdin.lock().await;
            if let Some(pipe) = guard.as_mut() {
                use tokio::io::AsyncWriteExt;
                if pipe.write_all(&data).await.is_err() {
                    *guard = None;
                }
            }
        }
        (None, None) => {
            if stdin_once {
                // StdinOnce: the first attach's EOF is the container's EOF.
                *entry.stdin.lock().await = None;
            }
        }
    }
}

/// A libcontainer error; waiting too long for another call is a timeout.
fn libct_error(step: &'static str) -> impl FnOnce(libct::LibctError) -> RuntimeError {
    move |e| match e {
        libct::LibctError::Busy(_) => RuntimeError::Failed {
            step: "wait for another container operation (timeout)",
            source: Box::new(e),
        },
        other => fail(step)(other),
    }
}

/// Runs a libcontainer create/start (`f`, blocking) for at most
/// `libct::deadline()`. A container init stuck in between holds libcontainer's
/// lock, so on timeout every process of its cgroup is killed: the blocked call
/// then fails and frees the lock for the rest of the runtime.
async fn within_deadline<T: Send + 'static>(
    step: &'static str,
    cgroup_path: &str,
    f: impl FnOnce(&libct::Guard) -> Result<T> + Send + 'static,
) -> Result<T> {
    let limit = libct::deadline();
    let (locked_tx, locked) = tokio::sync::oneshot::channel();
    let mut task = tokio::task::spawn_blocking(move || {
        let held = libct::lock().map_err(libct_error(step))?;
        let _ = locked_tx.send(());
        f(&held)
    });
    // The clock starts once we hold the lock: waiting behind a stuck call is
    // bounded by the lock itself, and a call that never ran must not be cut off.
    if locked.await.is_err() {
        return task.await.map_err(fail(step))?;
    }
    match tokio::time::timeout(limit, &mut task).await {
        Ok(joined) => joined.map_err(fail(step))?,
        Err(_) => {
            let killed = stats::kill_all(cgroup_path);
            warn!(
                step,
                ?limit,
                ?killed,
                "container init did not finish in time; killed it"
            );
            for pid in killed {
                // Reaps those that were reparented to us (we are a subreaper).
                drop(exit::watch(pid));
            }
            // The call returns once its init is gone; wait a little so the
            // caller's cleanup does not race it.
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
            Err(RuntimeError::Failed {
                step: if step == "start container" {
                    "start container (timeout)"
                } else {
                    "create container (timeout)"
                },
                source: format!(
                    "context deadline exceeded: {step} did not finish within {limit:?}"
                )
                .into(),
            })
        }
    }
}

/// Makes the stdin FIFO of a container: returns our (write) end and the
/// container's (read) end. Our end stays open, so the container sees EOF only
/// when we drop it.
fn stdin_fifo(
    path: &Path,
) -> std::io::Result<(tokio::net::unix::pipe::Sender, std::os::fd::OwnedFd)> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    logs::make_fifo(path).map_err(std::io::Error::other)?;
    // Non-blocking open of the read end succeeds without a writer; then the
    // write end opens at once because a reader exists.
    let theirs = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let ours = tokio::net::unix::pipe::OpenOptions::new().open_sender(path)?;
    fcntl(&theirs, FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok((ours, theirs))
}

/// A sandbox has no process of its own (no pause container), so its seccomp
/// profile confines nothing; it is still checked, as containerd fails
/// RunPodSandbox when the pause container's profile cannot be loaded.
fn check_sandbox_seccomp(config: &proto::PodSandboxConfig) -> Result<()> {
    let Some(sc) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    else {
        return Ok(());
    };
    let invalid = |e: container::seccomp::SeccompError| {
        RuntimeError::Invalid(format!(
            "failed to generate seccomp spec opts: {}",
            crate::streaming::chain(&e)
        ))
    };
    // The deprecated path is still what older kubelets send, as containerd reads it.
    #[allow(deprecated)]
    let legacy = &sc.seccomp_profile_path;
    let profile = container::seccomp::requested(sc.seccomp.as_ref(), legacy).map_err(invalid)?;
    if let container::seccomp::Profile::Localhost(path) = &profile
        && !sc.privileged
    {
        container::seccomp::load(path).map_err(invalid)?;
    }
    Ok(())
}

fn parse_signal(name: &str) -> Option<Signal> {
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("term"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("bogus"), None);
    }
}
