//! The proxy as a whole inside network namespaces this test creates: cluster DNS behind the
//! kube-dns ClusterIP over UDP and TCP (`dig`), stale UDP conntrack entries deleted when their
//! endpoint goes, and the embedded `netproxy::run` against a real r8s-server. Needs root (CI
//! runs as root); everything is removed on drop, also when an assertion fails.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use netproxy::conntrack::NetlinkConntrack;
use netproxy::dns::DnsIndex;
use netproxy::dns_server::{DnsCache, serve_dns_on, serve_dns_tcp_on};
use netproxy::kube_dns::KubeDns;
use netproxy::metrics::Metrics;
use netproxy::nft::LibNftables;
use netproxy::proxier::Syncer;
use netproxy::rules::RulesConfig;
use netproxy::{DnsConfig, ProxyConfig, SyncPeriods};
use tokio_util::sync::CancellationToken;

const NODE: &str = "node-a";
const DNS_IP: &str = "10.42.0.1";
const DNS_PORT: u16 = 5353;

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: needs root to create network namespaces (CI runs as root)");
    false
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd).args(args).output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A node network namespace: loopback, and a veth pair (both ends inside) with 10.42.0.1/24 on one end that also routes
/// the service range. Deleted (with our table and its conntrack entries) on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let ns = Netns(format!("r8s-test-{:08x}", rand::random::<u32>()));
        run("ip", &["netns", "add", &ns.0]);
        let n = ["-n", ns.0.as_str()];
        run("ip", &[n[0], n[1], "link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                n[0], n[1], "link", "add", "d0", "type", "veth", "peer", "name", "d1",
            ],
        );
        run("ip", &[n[0], n[1], "link", "set", "d1", "up"]);
        run(
            "ip",
            &[n[0], n[1], "addr", "add", "10.42.0.1/24", "dev", "d0"],
        );
        run("ip", &[n[0], n[1], "link", "set", "d0", "up"]);
        run(
            "ip",
            &[n[0], n[1], "route", "add", "10.43.0.0/16", "dev", "d0"],
        );
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

/// Runs a command in namespace `ns` (blocking; call from `spawn_blocking` in async tests).
fn ns_exec(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&run("ip", &all).stdout).into_owned()
}

/// UDP conntrack entries of namespace `ns`, one per line.
fn udp_flows(ns: &str) -> Vec<String> {
    ns_exec(ns, &["cat", "/proc/net/nf_conntrack"])
        .lines()
        .filter(|l| l.contains(" udp "))
        .map(str::to_string)
        .collect()
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// Binds the DNS sockets inside the namespace (a socket stays in the namespace it was made in).
fn bind_in(ns: &Path, addr: SocketAddr) -> (std::net::UdpSocket, std::net::TcpListener) {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("open netns");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let udp = std::net::UdpSocket::bind(addr).expect("bind udp");
        let tcp = std::net::TcpListener::bind(addr).expect("bind tcp");
        udp.set_nonblocking(true).expect("nonblocking");
        tcp.set_nonblocking(true).expect("nonblocking");
        (udp, tcp)
    })
    .join()
    .expect("bind thread")
}

fn kube_dns() -> KubeDns {
    KubeDns {
        cluster_ip: "10.43.0.10".parse().expect("ip"),
        node_name: NODE.into(),
        endpoint_ip: DNS_IP.parse().expect("ip"),
        endpoint_port: DNS_PORT,
    }
}

fn service(name: &str, cluster_ip: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(svc: &str, ips: &[String]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(format!("{svc}-x")),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                svc.to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

/// The node: rules and conntrack in the namespace, the DNS server on 10.42.0.1:5353 there,
/// registered as the kube-dns endpoint; `web` is a ClusterIP Service, `many` a headless one
/// with 60 endpoints (too many for a 512-byte UDP answer).
struct Node {
    ns: Netns,
    syncer: Syncer,
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    shutdown: CancellationToken,
}

impl Node {
    async fn start() -> Node {
        let ns = Netns::new();
        let (udp, tcp) = bind_in(
            &ns.path(),
            SocketAddr::new(DNS_IP.parse().expect("ip"), DNS_PORT),
        );
        let many: Vec<String> = (1..=60).map(|i| format!("10.42.1.{i}")).collect();
        let mut headless = service("many", "None");
        headless.spec.as_mut().expect("spec").cluster_ip = Some("None".into());
        let services = vec![
            Arc::new(kube_dns().service()),
            Arc::new(service("web", "10.43.0.20")),
            Arc::new(headless),
        ];
        let slices = vec![
            Arc::new(kube_dns().endpoint_slice()),
            Arc::new(slice("many", &many)),
        ];
        let cache = DnsCache::default();
        cache.update(DnsIndex::build(
            "cluster.local",
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
        ));
        let shutdown = CancellationToken::new();
        let udp = tokio::net::UdpSocket::from_std(udp).expect("tokio udp");
        let tcp = tokio::net::TcpListener::from_std(tcp).expect("tokio tcp");
        tokio::spawn(serve_dns_on(udp, cache.clone(), vec![], shutdown.clone()));
        tokio::spawn(serve_dns_tcp_on(tcp, cache, vec![], shutdown.clone()));
        let config = RulesConfig {
            node_name: NODE.into(),
            cluster_cidr: Some("10.42.0.0/16".parse().expect("cidr")),
            ..Default::default()
        };
        let syncer = Syncer::new(
            config,
            Arc::new(LibNftables::in_netns(&ns.path()).expect("nft")),
            Arc::new(Metrics::new()),
        )
        .with_conntrack(Arc::new(
            NetlinkConntrack::new(Some(&ns.path())).expect("conntrack socket"),
        ));
        let mut node = Node {
            ns,
            syncer,
            services,
            slices,
            shutdown,
        };
        node.sync().await;
        node
    }

    async fn sync(&mut self) {
        self.syncer
            .sync(&self.services, &self.slices, false)
            .await
            .expect("sync");
    }

    async fn exec(&self, args: &[&str]) -> String {
        let ns = self.ns.0.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ns_exec(&ns, &args)
        })
        .await
        .expect("exec task")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Our tables in the namespace, by name.
async fn our_tables(node: &Node) -> Vec<String> {
    node.exec(&["nft", "list", "tables"])
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("table ip "))
        .filter(|t| t.starts_with("r8s"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_resyncs_replace_the_table_without_dropping_new_connections() {
    if !is_root() {
        return;
    }
    let mut node = Node::start().await;
    assert_eq!(our_tables(&node).await, ["r8s"]);
    // New TCP connections to the kube-dns ClusterIP, back to back, while the table is
    // replaced: each needs the DNAT (without it the SYN goes unanswered down d0).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let path = node.ns.path();
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let to: SocketAddr = "10.43.0.10:53".parse().expect("addr");
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.kind()),
                }
                // Paced, so that the DNS server's accept queue (128) never overflows under load (a dropped SYN
                // would time out like a missing DNAT).
                std::thread::sleep(Duration::from_millis(2));
            }
            (ok, failed)
        })
    };
    let mut names = Vec::new();
    for _ in 0..6 {
        node.syncer
            .sync(&node.services, &node.slices, true)
            .await
            .expect("full resync");
        names.push(our_tables(&node).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = prober.join().expect("prober");
    assert!(ok > 0, "no connection was tried");
    assert!(
        failed.is_empty(),
        "{} of {} connections failed: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    // The table alternates between its two names; one of them at a time is left.
    let want: Vec<Vec<String>> = (0..6)
        .map(|i| vec![if i % 2 == 0 { "r8s-b" } else { "r8s" }.to_string()])
        .collect();
    assert_eq!(names, want);
    // Incremental syncs go to the live table.
    node.services
        .retain(|s| s.metadata.name.as_deref() != Some("web"));
    node.sync().await;
    let listed = node
        .exec(&["nft", "list", "map", "ip", "r8s", "service-ips"])
        .await;
    assert!(!listed.contains("10.43.0.20"), "{listed}");
    assert!(listed.contains("10.43.0.10 . udp . 53"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_at_the_kube_dns_ip_over_udp_and_tcp() {
    if !is_root() {
        return;
    }
    let node = Node::start().await;
    let dig = |args: &[&str]| {
        let mut all = vec!["dig", "+time=3", "+tries=1", "@10.43.0.10"];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let ask = |args: Vec<String>| {
        let node = &node;
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            node.exec(&a).await
        }
    };
    let tcp = ask(dig(&["+tcp", "+short", "web.default.svc.cluster.local"])).await;
    assert_eq!(tcp.trim(), "10.43.0.20");
    let udp = ask(dig(&["+notcp", "+short", "web.default.svc.cluster.local"])).await;
    assert_eq!(udp.trim(), "10.43.0.20");

    let truncated = ask(dig(&[
        "+notcp",
        "+ignore",
        "+noedns",
        "many.default.svc.cluster.local",
    ]))
    .await;
    assert!(truncated.contains(" tc"), "{truncated}");
    // Without +ignore dig retries a truncated answer over TCP and gets all of it.
    let retried = ask(dig(&[
        "+noedns",
        "+short",
        "many.default.svc.cluster.local",
    ]))
    .await;
    assert_eq!(retried.lines().count(), 60, "{retried}");

    let nx = ask(dig(&["+tcp", "nope.default.svc.cluster.local"])).await;
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    let srv = ask(dig(&[
        "+tcp",
        "+short",
        "SRV",
        "_dns._udp.kube-dns.kube-system.svc.cluster.local",
    ]))
    .await;
    assert_eq!(
        srv.trim(),
        "0 100 53 kube-dns.kube-system.svc.cluster.local."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_udp_endpoint_deletes_its_conntrack_entries() {
    if !is_root() {
        return;
    }
    let mut node = Node::start().await;
    let out = node
        .exec(&[
            "dig",
            "+notcp",
            "+short",
            "+time=3",
            "+tries=1",
            "@10.43.0.10",
            "web.default.svc.cluster.local",
        ])
        .await;
    assert_eq!(out.trim(), "10.43.0.20");
    let to_dns = |flows: Vec<String>| -> Vec<String> {
        flows
            .into_iter()
            .filter(|l| l.contains("dst=10.43.0.10") && l.contains(&format!("src={DNS_IP}")))
            .collect()
    };
    let ns = node.ns.0.clone();
    let before = to_dns(udp_flows(&ns));
    assert_eq!(before.len(), 1, "one DNATed udp flow: {before:?}");

    // The DNS endpoint goes away (its EndpointSlice is deleted).
    node.slices.retain(|s| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            != Some(&"kube-dns".to_string())
    });
    node.sync().await;
    let after = to_dns(udp_flows(&ns));
    assert!(after.is_empty(), "stale flow left: {after:?}");
}

/// The real r8s-server binary on a free loopback port and a temp data dir; killed on drop.
struct Server {
    dir: PathBuf,
    child: Child,
}

impl Server {
    fn start() -> Server {
        let bin = std::env::current_exe()
            .expect("test exe")
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .join("r8s-server");
        let dir =
            std::env::temp_dir().join(format!("r8s-proxy-test-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.join("server.log")).expect("log");
        let child = Command::new(&bin)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--write-kubeconfig")
            .arg(dir.join("kubeconfig"))
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--disable-agent", "--secure-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let server = Server { dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server
            .kubectl(&["get", "--raw", "/readyz"], None)
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "r8s-server not ready:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl(&self.kubeconfig(), args, stdin)
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .expect("kubectl stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.43.0.50
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.42.0.7]
  conditions: {ready: true}
ports: [{name: http, port: 8080, protocol: TCP}]
"#;

/// A loopback port that is free for both UDP and TCP (the DNS server binds both).
fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("tcp addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both udp and tcp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_run_programs_services_from_a_real_api_server() {
    if !is_root() {
        return;
    }
    // The proxy's own log goes to the test's output, shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("netproxy=debug,info")
        .with_test_writer()
        .try_init();
    let server = tokio::task::spawn_blocking(Server::start)
        .await
        .expect("server start");
    let ns = Netns::new();
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    let client = kube::Client::try_from(cfg).expect("client");
    let dns_port = free_udp_and_tcp_port();
    let mut dns = DnsConfig::new(SocketAddr::from(([127, 0, 0, 1], dns_port)));
    dns.upstreams = vec![];
    let mut config = ProxyConfig::new(NODE).with_dns(dns);
    config.netns = Some(ns.path());
    config.metrics_bind_address = None;
    config.healthz_bind_address = None;
    config.periods = SyncPeriods {
        min: Duration::from_millis(100),
        full: Duration::from_secs(3600),
    };
    let shutdown = CancellationToken::new();
    let _stop = scopeguard::guard(shutdown.clone(), |s| s.cancel());
    let proxy = tokio::spawn(netproxy::run(client, config, shutdown.clone()));

    let kubeconfig = server.kubeconfig();
    let out = tokio::task::spawn_blocking(move || {
        kubectl(&kubeconfig, &["apply", "-f", "-"], Some(MANIFEST))
    })
    .await
    .expect("kubectl task");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let ns_name = ns.0.clone();
    let map = loop {
        if proxy.is_finished() {
            let ended = proxy.await;
            panic!("the proxy stopped early: {ended:?}\n{}", server.log());
        }
        let ns_name = ns_name.clone();
        let map = tokio::task::spawn_blocking(move || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns_name,
                    "nft",
                    "list",
                    "map",
                    "ip",
                    "r8s",
                    "service-ips",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        })
        .await
        .expect("nft task");
        if (map.contains("10.43.0.50 . tcp . 80") && map.contains("10.43.0.10 . udp . 53"))
            || Instant::now() > deadline
        {
            break map;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        map.contains("10.43.0.50 . tcp . 80"),
        "web not programmed:\n{map}\n{}",
        server.log()
    );
    assert!(
        map.contains("10.43.0.10 . udp . 53"),
        "kube-dns not registered:\n{map}"
    );

    // Cluster DNS follows the Service as it comes and goes (changed one
    // Service at a time after the first full build).
    // The DNS server listens on the host's loopback.
    let dig = move || {
        Command::new("dig")
            .args(["@127.0.0.1", "-p"])
            .arg(dns_port.to_string())
            .args(["+tries=1", "+time=2", "web.default.svc.cluster.local", "A"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let answered = |want: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = tokio::task::spawn_blocking(dig).await.expect("dig task");
            if out.contains(want) || Instant::now() > deadline {
                break out;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let out = answered("10.43.0.50").await;
    assert!(out.contains("10.43.0.50"), "web not in DNS:\n{out}");
    let kubeconfig = server.kubeconfig();
    let deleted = tokio::task::spawn_blocking(move || {
        kubectl(&kubeconfig, &["delete", "service", "web"], None)
    })
    .await
    .expect("kubectl task");
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let out = answered("status: NXDOMAIN").await;
    assert!(out.contains("status: NXDOMAIN"), "web still in DNS:\n{out}");
    shutdown.cancel();
    proxy.await.expect("proxy task").expect("proxy run");
}
