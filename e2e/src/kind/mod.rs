//! A "kind-like" multi-node cluster on one machine. The cluster network is a
//! network namespace of its own with a bridge (`network`); every node is a
//! network namespace on it plus an init in its own pid, mount, uts and ipc
//! namespaces, with private `/var/lib/r8s`, `/run/r8s`, `/etc/r8s` and
//! cgroup root (`node`, `init`). The control plane runs r8s-server; workers
//! run r8s-agent and join with its token and CA hash, as real hosts do. The
//! images come from a registry on the bridge address; kubectl reaches the
//! API through a loopback forwarder (`forward`). Everything is recorded in a
//! state file (`state`) and removed on drop or by `r8s-e2e down`.

pub mod forward;
pub mod init;
pub mod netns;
pub mod network;
pub mod node;
pub mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

pub use forward::Forwarder;
pub use network::ClusterNetwork;
pub use node::{Node, Role};
pub use state::{NodeState, State};

use crate::kubectl::Kubectl;
use crate::registry::Registry;

/// The r8s-server port on the control plane's cluster address.
pub const API_PORT: u16 = 6443;
/// `--cluster-cidr`: every node's podCIDR is a /24 of it (node IPAM).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const CONTROL_PLANE: &str = "control-plane";

/// Names of a cluster's host objects: `r8s-e2e-<id>`.
pub fn prefix(id: &str) -> String {
    format!("r8s-e2e-{id}")
}

/// `worker1`, `worker2`, ...
pub fn worker_name(i: usize) -> String {
    format!("worker{i}")
}

/// How to build a cluster.
#[derive(Debug, Clone)]
pub struct KindConfig {
    pub workers: usize,
    /// The cluster directory is `<base_dir>/<id>`.
    pub base_dir: PathBuf,
    /// Where the test image layouts are cached between runs.
    pub images: PathBuf,
    /// r8s-server `--node-monitor-grace-period` (short, so that a stopped
    /// worker turns NotReady quickly; above the 10 s lease renewal).
    pub node_monitor_grace_period: String,
    /// More r8s-server flags.
    pub server_args: Vec<String>,
    /// More r8s-agent flags (workers).
    pub agent_args: Vec<String>,
}

impl Default for KindConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            base_dir: PathBuf::from(state::BASE_DIR),
            images: PathBuf::from("/var/cache/r8s/images"),
            node_monitor_grace_period: "20s".into(),
            server_args: Vec::new(),
            agent_args: Vec::new(),
        }
    }
}

/// A running kind cluster; dropping it removes every trace of it.
pub struct KindCluster {
    pub id: String,
    /// `<base_dir>/<id>`: node directories, logs, kubeconfig, state.
    pub dir: PathBuf,
    pub config: KindConfig,
    network: ClusterNetwork,
    registry: Option<Registry>,
    nodes: Vec<Node>,
    forwarder: Option<Forwarder>,
    state: State,
    /// The next host number `allocate_address` hands out.
    next_host: u8,
}

fn random_id() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

impl KindCluster {
    /// Creates the network, registry and nodes, starts r8s-server, joins the
    /// workers, and waits for every node to be Ready.
    pub fn start(config: KindConfig) -> anyhow::Result<Self> {
        let id = random_id();
        let dir = config.base_dir.join(&id);
        std::fs::create_dir_all(&dir)?;
        let network = ClusterNetwork::new(&id, 1 + rand::random::<u8>() % 250);
        let mut names = vec![(CONTROL_PLANE.to_owned(), Role::ControlPlane)];
        names.extend((1..=config.workers).map(|i| (worker_name(i), Role::Worker)));
        let nodes: Vec<Node> = names
            .iter()
            .zip(2u8..)
            .map(|((name, role), host)| Node::new(&id, name, *role, network.address(host), &dir))
            .collect();
        let next_host = 2 + u8::try_from(nodes.len())?;
        let state = State {
            id: id.clone(),
            dir: dir.clone(),
            owner_pid: std::process::id(),
            network_netns: network.netns.clone(),
            nodes: nodes.iter().map(node_state).collect(),
            registry_pid: None,
            api: None,
            kubeconfig: None,
        };
        state.save()?;
        let mut cluster = Self {
            id,
            dir,
            config,
            network,
            registry: None,
            nodes,
            forwarder: None,
            state,
            next_host,
        };
        // On error the partly built cluster is dropped, which removes it.
        cluster.create()?;
        Ok(cluster)
    }

    fn create(&mut self) -> anyhow::Result<()> {
        self.network.create()?;
        let registry = Registry::start_in_netns(
            &self.config.images,
            &self.network.netns,
            self.network.gateway,
            &self.dir,
        )?;
        self.state.registry_pid = Some(registry.pid());
        self.registry = Some(registry);
        self.save_state()?;
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            netns::add(&node.netns)?;
            self.network.attach(&node.netns, &node.link, node.ip)?;
            self.boot(i)?;
        }
        self.start_server()?;
        let cp = self.control_plane();
        let forwarder = Forwarder::start(&cp.netns, SocketAddr::from((cp.ip, API_PORT)))?;
        self.state.api = Some(format!("https://{}", forwarder.local));
        self.forwarder = Some(forwarder);
        self.write_kubeconfig()?;
        for i in 0..self.nodes.len() {
            if self.nodes[i].role == Role::Worker {
                self.start_agent(i)?;
            }
        }
        self.wait_ready(Duration::from_secs(120))
    }

    fn save_state(&mut self) -> anyhow::Result<()> {
        self.state.nodes = self.nodes.iter().map(node_state).collect();
        self.state.save()
    }

    fn boot(&mut self, i: usize) -> anyhow::Result<()> {
        let r = self.nodes[i].boot();
        self.save_state()?;
        r
    }

    fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| anyhow::anyhow!("no node {name}"))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> anyhow::Result<&Node> {
        Ok(&self.nodes[self.index(name)?])
    }

    pub fn control_plane(&self) -> &Node {
        // The first node is always the control plane (see `start`).
        &self.nodes[0]
    }

    /// Names of the worker nodes.
    pub fn workers(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Worker)
            .map(|n| n.name.clone())
            .collect()
    }

    /// The cluster network: its namespace (`netns`), `bridge` and `gateway`.
    pub fn network(&self) -> &ClusterNetwork {
        &self.network
    }

    /// A free address on the cluster network for something that joins it
    /// (a VM's tap behind the bridge); never handed out twice.
    pub fn allocate_address(&mut self) -> anyhow::Result<Ipv4Addr> {
        anyhow::ensure!(self.next_host < 255, "the cluster network is full");
        let ip = self.network.address(self.next_host);
        self.next_host += 1;
        Ok(ip)
    }

    /// `https://<control plane>:6443`, as workers reach the API.
    pub fn server_url(&self) -> String {
        format!("https://{}:{API_PORT}", self.control_plane().ip)
    }

    /// The registry every node pulls from (`<gateway>:5000`, plain HTTP).
    pub fn registry_addr(&self) -> String {
        format!("{}:5000", self.network.gateway)
    }

    /// `<registry>/busybox:latest`.
    pub fn busybox(&self) -> String {
        format!("{}/busybox:latest", self.registry_addr())
    }

    /// The control plane's data dir on the host.
    fn server_data_dir(&self) -> PathBuf {
        self.control_plane().var_lib_r8s().join("server")
    }

    /// The first join token, read from the control plane's
    /// `/var/lib/r8s/server/token` as a user would copy it.
    pub fn join_token(&self) -> anyhow::Result<String> {
        let path = self.server_data_dir().join("token");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?
            .trim()
            .to_owned())
    }

    /// `sha256:<hex>` of the cluster CA's public key, as kubeadm documents
    /// it (`openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`).
    pub fn ca_cert_hash(&self) -> anyhow::Result<String> {
        ca_cert_hash(&self.server_data_dir().join("tls/ca.crt"))
    }

    /// The r8s-agent flags a worker at `node_ip` joins with.
    pub fn agent_join_args(&self, node_ip: Ipv4Addr) -> anyhow::Result<Vec<String>> {
        Ok(vec![
            "--server".into(),
            self.server_url(),
            "--token".into(),
            self.join_token()?,
            "--ca-cert-hash".into(),
            self.ca_cert_hash()?,
            "--node-ip".into(),
            node_ip.to_string(),
            "--insecure-registry".into(),
            self.registry_addr(),
            "--cluster-cidr".into(),
            CLUSTER_CIDR.into(),
        ])
    }

    /// The kubeconfig the suite writes for the host (API via the forwarder).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig.yaml")
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig())
    }

    /// `127.0.0.1:<port>` of the API forwarder.
    pub fn api_local(&self) -> Option<SocketAddr> {
        self.forwarder.as_ref().map(|f| f.local)
    }

    /// Starts (or restarts) r8s-server on the control plane and waits for
    /// its kubeconfig and join token.
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        let ip = self.control_plane().ip;
        let mut args: Vec<String> = vec![
            "--bind-address".into(),
            ip.to_string(),
            "--advertise-address".into(),
            ip.to_string(),
            "--cluster-cidr".into(),
            CLUSTER_CIDR.into(),
            "--node-monitor-grace-period".into(),
            self.config.node_monitor_grace_period.clone(),
            "--node-monitor-period".into(),
            "2s".into(),
        ];
        args.extend(self.config.server_args.iter().cloned());
        let cgroup_root = self.control_plane().cgroup_root.clone();
        let envs = vec![
            ("R8S_NODE_IP".to_owned(), ip.to_string()),
            ("R8S_CGROUP_ROOT".to_owned(), cgroup_root),
            ("R8S_INSECURE_REGISTRY".to_owned(), self.registry_addr()),
            ("R8S_LOG_LEVEL".to_owned(), "info".to_owned()),
            (
                "R8S_EVICTION_HARD".to_owned(),
                crate::cluster::TEST_EVICTION_HARD.to_owned(),
            ),
            (
                "R8S_IMAGE_GC_HIGH_THRESHOLD".to_owned(),
                crate::cluster::TEST_IMAGE_GC_HIGH_THRESHOLD.to_owned(),
            ),
        ];
        let kubeconfig = self.control_plane().etc_r8s().join("r8s.yaml");
        let _ = std::fs::remove_file(&kubeconfig);
        let server = crate::binary("r8s-server")?;
        let i = self.index(CONTROL_PLANE)?;
        self.nodes[i].start_process(&server, &args, &envs)?;
        let token = self.server_data_dir().join("token");
        let waited = crate::wait_for("r8s-server to start", Duration::from_secs(60), || {
            let node = &mut self.nodes[i];
            if !node.process_running() {
                return Some(Err(anyhow::anyhow!(
                    "r8s-server exited:\n{}",
                    node.log_tail(30)
                )));
            }
            (kubeconfig.exists() && token.exists()).then_some(Ok(()))
        });
        waited.and_then(|r| r)
    }

    /// Stops r8s-server with SIGTERM (pods keep running).
    pub fn stop_server(&mut self) -> anyhow::Result<()> {
        let i = self.index(CONTROL_PLANE)?;
        let status = self.nodes[i].stop_process(Signal::SIGTERM, Duration::from_secs(30))?;
        if let Some(status) = status {
            anyhow::ensure!(status.success(), "r8s-server exited with {status}");
        }
        Ok(())
    }

    fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let mut args = self.agent_join_args(node.ip)?;
        args.extend(["--cgroup-root".to_owned(), node.cgroup_root.clone()]);
        args.extend(self.config.agent_args.iter().cloned());
        let envs = vec![
            ("R8S_LOG_LEVEL".to_owned(), "info".to_owned()),
            (
                "R8S_EVICTION_HARD".to_owned(),
                crate::cluster::TEST_EVICTION_HARD.to_owned(),
            ),
            (
                "R8S_IMAGE_GC_HIGH_THRESHOLD".to_owned(),
                crate::cluster::TEST_IMAGE_GC_HIGH_THRESHOLD.to_owned(),
            ),
        ];
        let agent = crate::binary("r8s-agent")?;
        self.nodes[i].start_process(&agent, &args, &envs)
    }

    /// Kills a whole node (every process of its pid namespace, containers
    /// included), as if the host lost power. Its network stays.
    pub fn stop_node(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        self.nodes[i].kill();
        self.save_state()?;
        crate::kind::state::remove_cgroups(&self.nodes[i].cgroups());
        Ok(())
    }

    /// Boots a stopped node again and starts its process (a worker rejoins
    /// with the credentials it kept; /run is empty as after a reboot).
    pub fn start_node(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        self.boot(i)?;
        match self.nodes[i].role {
            Role::ControlPlane => self.start_server(),
            Role::Worker => self.start_agent(i),
        }
    }

    /// Waits until every running node's Node object is Ready.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let names: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.process_running().then(|| n.name.clone()))
            .collect();
        let kubectl = self.kubectl();
        let mut last = String::new();
        let r = crate::wait_for("every node to be Ready", timeout, || {
            let nodes = kubectl.get_json(&["get", "nodes"]).ok()?;
            let ready: Vec<&str> = nodes["items"]
                .as_array()?
                .iter()
                .filter(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .filter_map(|n| n["metadata"]["name"].as_str())
                .collect();
            last = format!("{ready:?}");
            names
                .iter()
                .all(|n| ready.contains(&n.as_str()))
                .then_some(())
        });
        r.map_err(|e| anyhow::anyhow!("{e}; Ready: {last}; logs:\n{}", self.logs_tail(20)))
    }

    /// The end of every node's log (for failure messages).
    pub fn logs_tail(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} ({}) ---\n{}\n",
                    n.name,
                    n.log_path().display(),
                    n.log_tail(lines)
                )
            })
            .collect()
    }

    /// The control plane's admin kubeconfig with the API at the forwarder
    /// (127.0.0.1 is in the serving certificate's SANs).
    fn write_kubeconfig(&mut self) -> anyhow::Result<()> {
        let api = self
            .state
            .api
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the API forwarder is not running"))?;
        let source = self.control_plane().etc_r8s().join("r8s.yaml");
        let text = std::fs::read_to_string(&source)
            .with_context(|| format!("failed to read {}", source.display()))?;
        let rewritten: String = text
            .lines()
            .map(|l| match l.split_once("server:") {
                Some((indent, _)) if indent.trim().is_empty() => format!("{indent}server: {api}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        write_private(&self.kubeconfig(), &rewritten)?;
        self.state.kubeconfig = Some(self.kubeconfig());
        self.save_state()
    }

    /// Hands the cluster to another process (the `r8s-e2e up` daemon).
    pub fn set_owner(&mut self, pid: u32) -> anyhow::Result<()> {
        self.state.owner_pid = pid;
        self.state.save()
    }

    pub fn state(&self) -> &State {
        &self.state
    }
}

/// Writes a file only root can read (it holds admin credentials).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn node_state(n: &Node) -> NodeState {
    NodeState {
        name: n.name.clone(),
        role: n.role,
        netns: n.netns.clone(),
        dir: n.dir.clone(),
        cgroup_root: n.cgroup_root.clone(),
        init_pid: n.init_pid(),
    }
}

/// `sha256:<hex>` of a CA certificate's SubjectPublicKeyInfo (the public
/// key in DER, from openssl).
pub fn ca_cert_hash(ca: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let pem = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(ca)
        .output()
        .context("openssl must be installed")?;
    anyhow::ensure!(
        pem.status.success(),
        "openssl x509 {}: {}",
        ca.display(),
        String::from_utf8_lossy(&pem.stderr)
    );
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "der"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(&pem.stdout)?;
    }
    let der = child.wait_with_output()?;
    anyhow::ensure!(
        der.status.success() && !der.stdout.is_empty(),
        "openssl pkey: {}",
        String::from_utf8_lossy(&der.stderr)
    );
    Ok(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&der.stdout))
    ))
}

impl Drop for KindCluster {
    fn drop(&mut self) {
        self.forwarder = None;
        for node in &mut self.nodes {
            node.kill();
        }
        self.registry = None;
        self.state.nodes = self.nodes.iter().map(node_state).collect();
        self.state.remove();
    }
}
