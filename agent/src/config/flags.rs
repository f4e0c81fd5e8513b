//! Command-line flags of r8s-agent: kubelet's flag names, parsed by clap and
//! turned into a validated [`crate::config::Config`] by `Config::from_flags`.

use std::path::PathBuf;

use clap::Parser;

/// Default hard eviction thresholds, as kubelet's on Linux.
pub const DEFAULT_EVICTION_HARD: &str = "imagefs.available<15%,imagefs.inodesFree<5%,memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%";

/// r8s-agent is the node agent: it registers the Node, keeps its Lease,
/// runs the pods bound to the node through CRI and reports their status.
#[derive(Parser, Debug, Clone)]
#[command(name = "r8s-agent", version, about, long_about = None)]
pub struct AgentFlags {
    /// Path to a kubeconfig file, specifying how to connect to the API server.
    /// Without it, the in-cluster config or ~/.kube/config is used.
    /// (kubelet --kubeconfig)
    #[arg(long, env = "R8S_KUBECONFIG", help_heading = "API server")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig of the in-process service proxy and pod network, which
    /// read all Nodes, Services and EndpointSlices: a node's own identity
    /// may read only its own Node. A joined agent obtains one by CSR
    /// (<root-dir>/kube-proxy.conf, user system:kube-proxy); otherwise the
    /// default is --kubeconfig. (kube-proxy --kubeconfig)
    #[arg(long, env = "R8S_KUBE_PROXY_KUBECONFIG", help_heading = "API server")]
    pub kube_proxy_kubeconfig: Option<PathBuf>,

    /// Server to connect to, to join the cluster (k3s --server): with
    /// --token, the agent obtains a client certificate and writes
    /// <root-dir>/kubelet.conf; later starts reuse it.
    #[arg(long, env = "R8S_URL", help_heading = "Join")]
    pub server: Option<String>,

    /// Bootstrap token "<id>.<secret>" used to join (k3s --token, kubeadm
    /// --token); see `r8s-server token create`.
    #[arg(long, env = "R8S_TOKEN", hide_env_values = true, help_heading = "Join")]
    pub token: Option<String>,

    /// Pin the cluster CA found by discovery: "sha256:<hex>" of its public
    /// key (kubeadm --discovery-token-ca-cert-hash, also accepted).
    #[arg(
        long,
        env = "R8S_CA_CERT_HASH",
        alias = "discovery-token-ca-cert-hash",
        help_heading = "Join"
    )]
    pub ca_cert_hash: Option<String>,

    /// If non-empty, will use this string as identification instead of the
    /// actual hostname. (kubelet --hostname-override)
    #[arg(long, env = "R8S_HOSTNAME_OVERRIDE", help_heading = "Node")]
    pub hostname_override: Option<String>,

    /// IP address of the node. If set, the agent will use this IP address for
    /// the node. (kubelet --node-ip)
    #[arg(long, env = "R8S_NODE_IP", help_heading = "Node")]
    pub node_ip: Option<String>,

    /// Labels to add when registering the node in the cluster. Labels must be
    /// key=value pairs separated by ','. Labels in the 'kubernetes.io'
    /// namespace must begin with an allowed prefix (kubelet.kubernetes.io,
    /// node.kubernetes.io) or be in the specifically allowed set.
    /// (kubelet --node-labels)
    #[arg(
        long,
        env = "R8S_NODE_LABELS",
        default_value = "",
        help_heading = "Node"
    )]
    pub node_labels: String,

    /// Register the node with the given list of taints
    /// ("<key>=<value>:<effect>"). (kubelet --register-with-taints)
    #[arg(
        long,
        env = "R8S_REGISTER_WITH_TAINTS",
        default_value = "",
        help_heading = "Node"
    )]
    pub register_with_taints: String,

    /// Number of Pods that can run on this node. (kubelet --max-pods)
    #[arg(
        long,
        env = "R8S_MAX_PODS",
        default_value_t = 110,
        help_heading = "Node"
    )]
    pub max_pods: u32,

    /// Path to the directory containing static pod files to run.
    /// (kubelet --pod-manifest-path)
    #[arg(long, env = "R8S_POD_MANIFEST_PATH", help_heading = "Pods")]
    pub pod_manifest_path: Option<PathBuf>,

    /// Comma-separated list of DNS server IP addresses. This value is used for
    /// containers DNS server in case of Pods with "dnsPolicy=ClusterFirst".
    /// (kubelet --cluster-dns)
    #[arg(
        long,
        env = "R8S_CLUSTER_DNS",
        default_value = "10.43.0.10",
        help_heading = "Pods"
    )]
    pub cluster_dns: String,

    /// Domain for this cluster. If set, the agent will configure all containers
    /// to search this domain in addition to the host's search domains.
    /// (kubelet --cluster-domain)
    #[arg(
        long,
        env = "R8S_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        help_heading = "Pods"
    )]
    pub cluster_domain: String,

    /// Directory path for managing agent files (volume mounts, pod state).
    /// (kubelet --root-dir)
    #[arg(
        long,
        env = "R8S_ROOT_DIR",
        default_value = "/var/lib/r8s/agent",
        help_heading = "Node"
    )]
    pub root_dir: PathBuf,

    /// A set of eviction thresholds (e.g. "memory.available<1Gi") that if met
    /// would trigger a pod eviction. (kubelet --eviction-hard)
    #[arg(long, env = "R8S_EVICTION_HARD", default_value = DEFAULT_EVICTION_HARD, help_heading = "Resources")]
    pub eviction_hard: String,

    /// A set of eviction thresholds (e.g. "memory.available<1.5Gi") that if
    /// met over a corresponding grace period would trigger a pod eviction.
    /// (kubelet --eviction-soft)
    #[arg(
        long,
        env = "R8S_EVICTION_SOFT",
        default_value = "",
        help_heading = "Resources"
    )]
    pub eviction_soft: String,

    /// A set of eviction grace periods (e.g. "memory.available=1m30s") that
    /// correspond to how long a soft eviction threshold must hold before
    /// triggering a pod eviction. (kubelet --eviction-soft-grace-period)
    #[arg(
        long,
        env = "R8S_EVICTION_SOFT_GRACE_PERIOD",
        default_value = "",
        help_heading = "Resources"
    )]
    pub eviction_soft_grace_period: String,

    /// Maximum allowed grace period (in seconds) to use when terminating
    /// pods in response to a soft eviction threshold being met. If negative,
    /// defer to pod specified value. (kubelet --eviction-max-pod-grace-period)
    #[arg(
        long,
        env = "R8S_EVICTION_MAX_POD_GRACE_PERIOD",
        default_value_t = 0,
        allow_negative_numbers = true,
        help_heading = "Resources"
    )]
    pub eviction_max_pod_grace_period: i64,

    /// Duration for which the agent has to wait before transitioning out of
    /// an eviction pressure condition. (kubelet --eviction-pressure-transition-period)
    #[arg(
        long,
        env = "R8S_EVICTION_PRESSURE_TRANSITION_PERIOD",
        default_value = "5m0s",
        help_heading = "Resources"
    )]
    pub eviction_pressure_transition_period: String,

    /// A set of minimum reclaims (e.g. "imagefs.available=2Gi") that
    /// describes the minimum amount of resource the agent will reclaim when
    /// performing a pod eviction if that resource is under pressure.
    /// (kubelet --eviction-minimum-reclaim)
    #[arg(
        long,
        env = "R8S_EVICTION_MINIMUM_RECLAIM",
        default_value = "",
        help_heading = "Resources"
    )]
    pub eviction_minimum_reclaim: String,

    /// How often eviction thresholds are checked (kubelet's fixed 10 s);
    /// shorter only for tests.
    #[arg(
        long,
        env = "R8S_EVICTION_MONITORING_PERIOD",
        default_value = "10s",
        hide = true,
        help_heading = "Resources"
    )]
    pub eviction_monitoring_period: String,

    /// The percent of disk usage after which image garbage collection is
    /// always run. Values must be within the range [0, 100], To disable
    /// image garbage collection, set to 100. (kubelet --image-gc-high-threshold)
    #[arg(
        long,
        env = "R8S_IMAGE_GC_HIGH_THRESHOLD",
        default_value_t = 85,
        allow_negative_numbers = true,
        help_heading = "Images"
    )]
    pub image_gc_high_threshold: i32,

    /// The percent of disk usage before which image garbage collection is
    /// never run. Lowest disk usage to garbage collect to. Values must be
    /// within the range [0, 100] and should not be larger than that of
    /// --image-gc-high-threshold. (kubelet --image-gc-low-threshold)
    #[arg(
        long,
        env = "R8S_IMAGE_GC_LOW_THRESHOLD",
        default_value_t = 80,
        allow_negative_numbers = true,
        help_heading = "Images"
    )]
    pub image_gc_low_threshold: i32,

    /// Minimum age for an unused image before it is garbage collected.
    /// Examples: '300ms', '10s' or '2h45m'. (kubelet --minimum-image-ttl-duration)
    #[arg(
        long,
        env = "R8S_MINIMUM_IMAGE_TTL_DURATION",
        default_value = "2m0s",
        help_heading = "Images"
    )]
    pub minimum_image_ttl_duration: String,

    /// Maximum age an image can be unused before it is garbage collected,
    /// whatever the disk usage; 0 disables it. Must be greater than
    /// --minimum-image-ttl-duration. (kubelet's imageMaximumGCAge)
    #[arg(
        long,
        env = "R8S_IMAGE_MAXIMUM_GC_AGE",
        default_value = "0s",
        help_heading = "Images"
    )]
    pub image_maximum_gc_age: String,

    /// How often unused images are garbage collected (kubelet's fixed
    /// ImageGCPeriod of 5m).
    #[arg(
        long,
        env = "R8S_IMAGE_GC_PERIOD",
        default_value = "5m0s",
        help_heading = "Images"
    )]
    pub image_gc_period: String,

    /// A set of ResourceName=ResourceQuantity pairs (e.g.
    /// "cpu=200m,memory=500Mi,ephemeral-storage=1Gi,pid=1000") that describe
    /// resources reserved for kubernetes system components.
    /// (kubelet --kube-reserved)
    #[arg(
        long,
        env = "R8S_KUBE_RESERVED",
        default_value = "",
        help_heading = "Resources"
    )]
    pub kube_reserved: String,

    /// A set of ResourceName=ResourceQuantity pairs (e.g.
    /// "cpu=200m,memory=500Mi,ephemeral-storage=1Gi,pid=1000") that describe
    /// resources reserved for non-kubernetes components.
    /// (kubelet --system-reserved)
    #[arg(
        long,
        env = "R8S_SYSTEM_RESERVED",
        default_value = "",
        help_heading = "Resources"
    )]
    pub system_reserved: String,

    /// Optional root cgroup to use for pods. (kubelet --cgroup-root)
    #[arg(
        long,
        env = "R8S_CGROUP_ROOT",
        default_value = "/",
        help_heading = "Resources"
    )]
    pub cgroup_root: String,

    /// The endpoint of a remote CRI runtime service (e.g.
    /// "unix:///run/containerd/containerd.sock"). Empty runs the r8s CRI
    /// runtime in-process. (kubelet --container-runtime-endpoint)
    #[arg(
        long,
        env = "R8S_CONTAINER_RUNTIME_ENDPOINT",
        help_heading = "Container runtime"
    )]
    pub container_runtime_endpoint: Option<String>,

    /// The CIDR of pod addresses on this node (in-process runtime only).
    /// When unset, the Node's spec.podCIDR is used, else 10.42.0.0/24.
    /// (kubelet --pod-cidr)
    #[arg(long, env = "R8S_POD_CIDR", help_heading = "Container runtime")]
    pub pod_cidr: Option<String>,

    /// Directory for volatile runtime state: the in-process CRI runtime's
    /// socket (<run-dir>/cri.sock) and state (<run-dir>/cri).
    #[arg(
        long,
        env = "R8S_RUN_DIR",
        default_value = "/run/r8s",
        help_heading = "Container runtime"
    )]
    pub run_dir: PathBuf,

    /// Registry (host:port) the in-process runtime pulls from over plain
    /// HTTP instead of HTTPS; repeatable or comma-separated. Loopback
    /// registries always are. (dockerd --insecure-registry)
    #[arg(
        long = "insecure-registry",
        env = "R8S_INSECURE_REGISTRY",
        value_delimiter = ',',
        help_heading = "Container runtime"
    )]
    pub insecure_registry: Vec<String>,

    /// Name of the node bridge pods are attached to (in-process runtime only).
    #[arg(
        long,
        env = "R8S_POD_BRIDGE",
        default_value = "r8s0",
        help_heading = "Container runtime"
    )]
    pub pod_bridge: String,

    /// Directory where container logs are kept, one directory per pod.
    /// (kubelet podLogsDir)
    #[arg(
        long,
        env = "R8S_POD_LOGS_DIR",
        default_value = "/var/log/pods",
        help_heading = "Pods"
    )]
    pub pod_logs_dir: PathBuf,

    /// Specifies how often the agent posts node status to the API server
    /// (e.g. "10s", "1m"). (kubelet --node-status-update-frequency)
    #[arg(
        long,
        env = "R8S_NODE_STATUS_UPDATE_FREQUENCY",
        default_value = "10s",
        help_heading = "Node"
    )]
    pub node_status_update_frequency: String,

    /// FAKE runtime for simulated nodes in tests: no containers run; every
    /// pod bound to this node gets an address and reports all its
    /// containers Running and ready. Never use on a real node.
    #[arg(long, env = "R8S_FAKE_RUNTIME", help_heading = "Container runtime")]
    pub fake_runtime: bool,

    /// Do not run the service proxy (Services in nftables) and cluster DNS
    /// in-process. (k3s --disable-kube-proxy)
    #[arg(long, env = "R8S_DISABLE_KUBE_PROXY", help_heading = "Service proxy")]
    pub disable_kube_proxy: bool,

    /// The CIDR range of the pods in the cluster. Traffic to Service cluster
    /// IPs from outside this range is masqueraded. (kube-proxy --cluster-cidr)
    #[arg(
        long,
        env = "R8S_CLUSTER_CIDR",
        default_value = "10.42.0.0/16",
        help_heading = "Service proxy"
    )]
    pub cluster_cidr: String,

    /// A list of CIDR ranges that contain valid node IPs for NodePort traffic
    /// (comma-separated). Empty means all local addresses.
    /// (kube-proxy --nodeport-addresses)
    #[arg(
        long,
        env = "R8S_NODEPORT_ADDRESSES",
        default_value = "",
        help_heading = "Service proxy"
    )]
    pub nodeport_addresses: String,

    /// The IP address and port for the proxy's metrics server to serve on;
    /// empty disables it, port 0 picks a free port.
    /// (kube-proxy --metrics-bind-address)
    #[arg(
        long,
        env = "R8S_KUBE_PROXY_METRICS_BIND_ADDRESS",
        default_value = "127.0.0.1:10249",
        help_heading = "Service proxy"
    )]
    pub kube_proxy_metrics_bind_address: String,

    /// The IP address and port for the proxy's health check server to serve
    /// on; empty disables it, port 0 picks a free port.
    /// (kube-proxy --healthz-bind-address)
    #[arg(
        long,
        env = "R8S_KUBE_PROXY_HEALTHZ_BIND_ADDRESS",
        default_value = "0.0.0.0:10256",
        help_heading = "Service proxy"
    )]
    pub kube_proxy_healthz_bind_address: String,

    /// The nftables table (family ip) the proxy owns; must start with "r8s".
    /// Test clusters sharing a host each use their own.
    #[arg(
        long,
        env = "R8S_NFT_TABLE",
        default_value = "r8s",
        hide = true,
        help_heading = "Service proxy"
    )]
    pub nft_table: String,

    /// How pods reach the pods of other nodes: "vxlan" (an overlay on UDP
    /// 8472; direct routes to nodes on the same subnet), "host-gw" (routes
    /// via the other nodes' IPs, which must share a subnet) or "none".
    /// (k3s --flannel-backend)
    #[arg(
        long,
        env = "R8S_FLANNEL_BACKEND",
        default_value = "vxlan",
        help_heading = "Pod network"
    )]
    pub flannel_backend: String,

    /// Interface for traffic between nodes; default: the interface that
    /// carries the node IP. (k3s --flannel-iface)
    #[arg(long, env = "R8S_FLANNEL_IFACE", help_heading = "Pod network")]
    pub flannel_iface: Option<String>,

    /// vxlan backend: route directly (no encapsulation) to nodes on a subnet
    /// of the flannel interface, as flannel's DirectRouting; false sends all
    /// traffic between nodes through the overlay.
    #[arg(
        long,
        env = "R8S_FLANNEL_DIRECT_ROUTING",
        default_value_t = true,
        action = clap::ArgAction::Set,
        help_heading = "Pod network"
    )]
    pub flannel_direct_routing: bool,

    /// The port for the kubelet API to serve on. (kubelet --port)
    #[arg(
        long,
        env = "R8S_PORT",
        default_value_t = 10250,
        help_heading = "Kubelet API"
    )]
    pub port: u16,

    /// The IP address for the kubelet API to serve on (set to 0.0.0.0 or ::
    /// for listening on all interfaces and IP address families).
    /// (kubelet --address)
    #[arg(
        long,
        env = "R8S_ADDRESS",
        default_value = "0.0.0.0",
        help_heading = "Kubelet API"
    )]
    pub address: std::net::IpAddr,

    /// File containing x509 Certificate used for serving HTTPS (with
    /// intermediate certs, if any, concatenated after server cert). If not
    /// given, a self-signed certificate and key are generated in
    /// <root-dir>/pki. (kubelet --tls-cert-file)
    #[arg(long, env = "R8S_TLS_CERT_FILE", help_heading = "Kubelet API")]
    pub tls_cert_file: Option<PathBuf>,

    /// File containing x509 private key matching --tls-cert-file.
    /// (kubelet --tls-private-key-file)
    #[arg(long, env = "R8S_TLS_PRIVATE_KEY_FILE", help_heading = "Kubelet API")]
    pub tls_private_key_file: Option<PathBuf>,

    /// If set, any request presenting a client certificate signed by one of
    /// the authorities in the client-ca-file is authenticated. Without it,
    /// the certificate authority of the kubeconfig's cluster is used.
    /// (kubelet --client-ca-file)
    #[arg(long, env = "R8S_CLIENT_CA_FILE", help_heading = "Kubelet API")]
    pub client_ca_file: Option<PathBuf>,
}
