//! Applies the ruleset through libnftables inside network namespaces this test creates, and
//! checks real TCP traffic: ClusterIP balancing, NodePort, reject without endpoints,
//! incremental updates and table removal. Needs root (CI runs as root).
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use netproxy::model::service_ports;
use netproxy::nft::{Applier, LibNftables};
use netproxy::rules::{RulesConfig, Ruleset, build};

const NODE_IP: &str = "192.168.77.1";
const CLIENT_IP: &str = "192.168.77.2";

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: needs root to create network namespaces (CI runs as root)");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread that has entered the network namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = PathBuf::from(format!("/run/netns/{ns}"));
    thread::scope(|s| {
        s.spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// A TCP server in an endpoint namespace that answers every connection with its name.
struct Echo {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &str, port: u16, name: &str) -> Echo {
        let listener = in_netns(ns, || TcpListener::bind(("0.0.0.0", port)).expect("bind"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, name) = (stop.clone(), name.to_string());
        let handle = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.write_all(name.as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        Echo {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A node namespace with a bridge to `n` endpoint namespaces (10.42.0.11..) and a veth to a
/// client namespace (192.168.77.0/24). Everything is deleted on drop.
struct Topology {
    prefix: String,
    endpoints: usize,
    _servers: Vec<Echo>,
}

impl Topology {
    fn node(&self) -> String {
        format!("{}-node", self.prefix)
    }
    fn client(&self) -> String {
        format!("{}-cl", self.prefix)
    }
    fn ep(&self, i: usize) -> String {
        format!("{}-e{i}", self.prefix)
    }

    fn new(endpoints: usize) -> Topology {
        let prefix = format!("r8s-test-{:08x}", rand::random::<u32>());
        let mut topo = Topology {
            prefix,
            endpoints: 0,
            _servers: Vec::new(),
        };
        let node = topo.node();
        let client = topo.client();
        ip(&["netns", "add", &node]);
        ip(&["netns", "add", &client]);
        topo.endpoints = endpoints;
        for i in 0..endpoints {
            ip(&["netns", "add", &topo.ep(i)]);
        }
        let n = ["-n", node.as_str()];
        ip(&[n[0], n[1], "link", "set", "lo", "up"]);
        ip(&[n[0], n[1], "link", "add", "br0", "type", "bridge"]);
        ip(&[n[0], n[1], "addr", "add", "10.42.0.1/24", "dev", "br0"]);
        ip(&[n[0], n[1], "link", "set", "br0", "up"]);
        // Services without endpoints must meet our reject, not a routing error.
        ip(&[n[0], n[1], "route", "add", "10.43.0.0/16", "dev", "br0"]);
        ip(&[
            n[0], n[1], "link", "add", "vcl", "type", "veth", "peer", "name", "eth0", "netns",
            &client,
        ]);
        ip(&[
            n[0],
            n[1],
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "vcl",
        ]);
        ip(&[n[0], n[1], "link", "set", "vcl", "up"]);
        ip(&["-n", &client, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &client, "link", "set", "eth0", "up"]);
        ip(&["-n", &client, "route", "add", "default", "via", NODE_IP]);
        for i in 0..endpoints {
            let ep = topo.ep(i);
            let host = format!("ve{i}");
            ip(&[
                n[0], n[1], "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
                &ep,
            ]);
            ip(&[n[0], n[1], "link", "set", &host, "master", "br0", "up"]);
            ip(&["-n", &ep, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ep,
                "addr",
                "add",
                &format!("10.42.0.{}/24", 11 + i),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ep, "link", "set", "eth0", "up"]);
            ip(&["-n", &ep, "route", "add", "default", "via", "10.42.0.1"]);
        }
        in_netns(&node, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward");
        });
        for i in 0..endpoints {
            let server = Echo::start(&topo.ep(i), 8080, &format!("e{i}"));
            topo._servers.push(server);
        }
        topo
    }

    fn nft(&self) -> LibNftables {
        LibNftables::in_netns(&PathBuf::from(format!("/run/netns/{}", self.node())))
            .expect("nft ctx")
    }

    /// Connects from the client namespace; Ok(reply) or the connect error kind.
    fn connect(&self, addr: &str) -> Result<String, ErrorKind> {
        let addr: SocketAddr = addr.parse().expect("addr");
        in_netns(&self.client(), move || {
            let mut s =
                TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.kind())?;
            s.set_read_timeout(Some(Duration::from_secs(3)))
                .map_err(|e| e.kind())?;
            let mut out = String::new();
            s.read_to_string(&mut out).map_err(|e| e.kind())?;
            Ok(out)
        })
    }

    /// The endpoints that answer 30 connections to `addr`.
    fn answering(&self, addr: &str) -> BTreeSet<String> {
        (0..30)
            .map(|_| self.connect(addr).expect("connect"))
            .collect()
    }
}

/// Endpoint names as a set.
fn names(eps: &[&str]) -> BTreeSet<String> {
    eps.iter().map(|e| e.to_string()).collect()
}

impl Drop for Topology {
    fn drop(&mut self) {
        self._servers.clear();
        // Deleting the namespaces removes the bridge, the veths and our table with them.
        let mut names = vec![self.node(), self.client()];
        names.extend((0..self.endpoints).map(|i| self.ep(i)));
        for ns in names {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        }
    }
}

fn service(name: &str, cluster_ip: &str, node_port: Option<i32>) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            type_: Some(
                if node_port.is_some() {
                    "NodePort"
                } else {
                    "ClusterIP"
                }
                .into(),
            ),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                node_port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
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
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some("node-a".into()),
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

fn config() -> RulesConfig {
    RulesConfig {
        node_name: "node-a".into(),
        cluster_cidr: Some("10.42.0.0/16".parse().expect("cidr")),
        ..Default::default()
    }
}

fn ruleset(svcs: &[Service], slices: &[EndpointSlice]) -> Ruleset {
    build(&config(), &service_ports(svcs, slices))
}

/// Chain name -> rule handles, for chains of our table in the node namespace.
fn chain_handles(nft: &LibNftables) -> BTreeMap<String, Vec<u64>> {
    let out = nft.run("list table ip r8s").expect("list");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let mut map: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for obj in v["nftables"].as_array().expect("array") {
        if let Some(c) = obj.get("chain") {
            map.entry(c["name"].as_str().unwrap_or_default().to_string())
                .or_default();
        }
        if let Some(r) = obj.get("rule") {
            map.entry(r["chain"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(r["handle"].as_u64().unwrap_or_default());
        }
    }
    map
}

#[test]
fn cluster_ip_node_port_and_reject_work_in_a_node_namespace() {
    if !is_root() {
        return;
    }
    let topo = Topology::new(3);
    let nft = topo.nft();
    let eps = ["10.42.0.11", "10.42.0.12", "10.42.0.13"];
    let rs = ruleset(
        &[
            service("web", "10.43.0.10", Some(30080)),
            service("empty", "10.43.0.11", None),
        ],
        &[slice("web", &eps)],
    );
    nft.apply(&rs.full_transaction())
        .expect("apply full ruleset");

    assert_eq!(topo.answering("10.43.0.10:80"), names(&["e0", "e1", "e2"]));

    let reply = topo
        .connect(&format!("{NODE_IP}:30080"))
        .expect("connect to NodePort");
    assert!(reply.starts_with('e'), "{reply}");

    assert_eq!(
        topo.connect("10.43.0.11:80"),
        Err(ErrorKind::ConnectionRefused)
    );
}

#[test]
fn incremental_update_of_cluster_ips_swaps_map_elements_only() {
    if !is_root() {
        return;
    }
    let topo = Topology::new(2);
    let nft = topo.nft();
    let svcs = [
        service("web", "10.43.0.10", None),
        service("db", "10.43.0.20", None),
    ];
    let old = ruleset(
        &svcs,
        &[
            slice("web", &["10.42.0.11", "10.42.0.12"]),
            slice("db", &["10.42.0.11"]),
        ],
    );
    nft.apply(&old.full_transaction())
        .expect("apply full ruleset");
    let before = chain_handles(&nft);
    assert!(
        before.keys().all(|name| !name.contains('/')),
        "plain ClusterIP Services own no chain: {before:?}"
    );

    // web scales down to e1 (its map entry moves to the pick-1 chain db uses), rolls over to e0
    // (its endpoint entry is swapped), then scales up again (back to pick-2, which stayed).
    let mut applied = old;
    let steps: [(&[&str], &[&str]); 3] = [
        (&["10.42.0.12"], &["e1"]),
        (&["10.42.0.11"], &["e0"]),
        (&["10.42.0.11", "10.42.0.12"], &["e0", "e1"]),
    ];
    for (eps, want) in steps {
        let mut next = ruleset(&svcs, &[slice("web", eps), slice("db", &["10.42.0.11"])]);
        let tx = next.diff_transaction(&applied);
        assert!(
            !tx.to_text().contains("10.43.0.20"),
            "db is untouched: {tx:?}"
        );
        nft.apply(&tx).expect("apply incremental update");
        next.picks.extend(applied.picks.iter().copied());
        applied = next;
        assert_eq!(
            chain_handles(&nft),
            before,
            "no chain or rule was rewritten"
        );
        assert_eq!(topo.answering("10.43.0.10:80"), names(want));
        assert_eq!(topo.connect("10.43.0.20:80").as_deref(), Ok("e0"));
    }
}

#[test]
fn incremental_updates_add_endpoints_to_the_hairpin_set() {
    if !is_root() {
        return;
    }
    let topo = Topology::new(2);
    let nft = topo.nft();
    let svcs = [service("web", "10.43.0.10", None)];
    let on_e1 = ruleset(&svcs, &[slice("web", &["10.42.0.12"])]);
    nft.apply(&on_e1.full_transaction()).expect("apply");
    assert_eq!(topo.connect("10.43.0.10:80").as_deref(), Ok("e1"));
    // The endpoint moves to e0 through an incremental update, which adds e0 to the hairpin set.
    let on_e0 = ruleset(&svcs, &[slice("web", &["10.42.0.11"])]);
    let mut leftovers = netproxy::rules::Leftovers::default();
    nft.apply(&on_e0.incremental_transaction(&on_e1, &mut leftovers))
        .expect("move to e0");
    // The kernel's hairpin set now holds both addresses (it only grows between full syncs),
    // and e0 still answers through the ClusterIP.
    let set = nft
        .run("list set ip r8s hairpin")
        .expect("list hairpin set");
    assert!(
        set.contains("10.42.0.11") && set.contains("10.42.0.12"),
        "{set}"
    );
    assert_eq!(topo.connect("10.43.0.10:80").as_deref(), Ok("e0"));
}

#[test]
fn deleting_the_table_leaves_nothing() {
    if !is_root() {
        return;
    }
    let topo = Topology::new(1);
    let nft = topo.nft();
    let rs = ruleset(
        &[service("web", "10.43.0.10", Some(30081))],
        &[slice("web", &["10.42.0.11"])],
    );
    nft.apply(&rs.full_transaction()).expect("apply");
    // Applying twice replaces the table atomically rather than failing on existing objects.
    nft.apply(&rs.full_transaction()).expect("apply again");
    nft.apply(&Ruleset::delete_table_transaction("r8s"))
        .expect("delete table");
    let out = nft.run("list ruleset").expect("list ruleset");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let objects: Vec<_> = v["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter(|o| o.get("metainfo").is_none())
        .collect();
    assert!(objects.is_empty(), "left over: {objects:?}");
}

#[test]
fn client_ip_affinity_sticks_to_one_endpoint() {
    if !is_root() {
        return;
    }
    let topo = Topology::new(3);
    let nft = topo.nft();
    let mut svc = service("web", "10.43.0.10", None);
    svc.spec.as_mut().expect("spec").session_affinity = Some("ClientIP".into());
    let rs = ruleset(
        &[svc],
        &[slice("web", &["10.42.0.11", "10.42.0.12", "10.42.0.13"])],
    );
    nft.apply(&rs.full_transaction()).expect("apply");
    let seen: BTreeSet<String> = (0..10)
        .map(|_| topo.connect("10.43.0.10:80").expect("connect"))
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[test]
fn every_rule_kind_is_accepted_by_libnftables() {
    if !is_root() {
        return;
    }
    let topo = Topology::new(0);
    let nft = topo.nft();
    let config = RulesConfig {
        node_name: "node-a".into(),
        cluster_cidr: Some("10.42.0.0/16".parse().expect("cidr")),
        masquerade_all: true,
        nodeport_addresses: vec!["192.168.77.0/24".parse().expect("cidr")],
        ..Default::default()
    };
    let mut all = service("all", "10.43.0.30", Some(30090));
    let spec = all.spec.as_mut().expect("spec");
    spec.session_affinity = Some("ClientIP".into());
    spec.external_traffic_policy = Some("Local".into());
    spec.external_ips = Some(vec!["192.0.2.10".into()]);
    let mut internal = service("internal", "10.43.0.31", None);
    internal
        .spec
        .as_mut()
        .expect("spec")
        .internal_traffic_policy = Some("Local".into());
    let mut remote = slice("internal", &["10.42.5.5"]);
    remote.endpoints[0].node_name = Some("node-b".into());
    let slices = [slice("all", &["10.42.0.11", "10.42.0.12"]), remote];
    let svcs = [all.clone(), internal];
    let old = build(&config, &service_ports(&svcs, &slices));
    nft.apply(&old.full_transaction())
        .expect("apply full ruleset");

    all.spec.as_mut().expect("spec").session_affinity = None;
    let new = build(&config, &service_ports(&[all, svcs[1].clone()], &slices));
    nft.apply(&new.diff_transaction(&old))
        .expect("apply update without affinity");
    let listed = nft.run("list table ip r8s").expect("list");
    assert!(!listed.contains("affinity-"), "affinity sets removed");
    assert_eq!(chain_handles(&nft).len(), new.chain_count());
}

/// The table as nft lists it, without rule handles (which differ between two loads).
fn listing(nft: &LibNftables) -> Vec<serde_json::Value> {
    let out = nft.run("list table ip r8s").expect("list");
    let mut v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let mut objects = v["nftables"].as_array_mut().expect("array").clone();
    for obj in &mut objects {
        for kind in ["table", "chain", "rule", "set", "map"] {
            if let Some(o) = obj.get_mut(kind).and_then(|o| o.as_object_mut()) {
                o.remove("handle");
            }
        }
    }
    objects.retain(|o| o.get("metainfo").is_none());
    objects
}

#[test]
fn elements_sent_over_netlink_load_the_same_table_as_nft_syntax() {
    if !is_root() {
        return;
    }
    let topo = Topology::new(3);
    let nft = topo.nft();
    let eps = ["10.42.0.11", "10.42.0.12", "10.42.0.13"];
    let mut udp = service("dns", "10.43.0.12", None);
    udp.spec
        .as_mut()
        .expect("spec")
        .ports
        .as_mut()
        .expect("ports")[0]
        .protocol = Some("UDP".into());
    let mut udp_slice = slice("dns", &eps[..2]);
    udp_slice.ports.as_mut().expect("ports")[0].protocol = Some("UDP".into());
    let rs = ruleset(
        &[
            service("web", "10.43.0.10", None),
            service("np", "10.43.0.13", Some(30080)),
            service("empty", "10.43.0.11", Some(30081)),
            udp,
        ],
        &[slice("web", &eps), slice("np", &eps[1..]), udp_slice],
    );
    let initial = rs.initial_transaction();
    assert!(
        initial.elements().len() > 10,
        "elements go over netlink: {initial:?}"
    );
    assert!(!initial.to_text().contains("elements ="), "{initial:?}");
    nft.apply(&initial).expect("apply with netlink elements");
    let over_netlink = listing(&nft);
    nft.apply(&Ruleset::delete_table_transaction("r8s"))
        .expect("delete table");
    nft.apply(&rs.full_transaction())
        .expect("apply as nft syntax");
    assert_eq!(over_netlink, listing(&nft));
    // And the table routes: the plain ClusterIP through the endpoints map.
    nft.apply(&Ruleset::delete_table_transaction("r8s"))
        .expect("delete table");
    nft.apply(&initial)
        .expect("apply with netlink elements again");
    assert_eq!(topo.answering("10.43.0.10:80"), names(&["e0", "e1", "e2"]));
    assert_eq!(
        topo.connect("10.43.0.11:80"),
        Err(ErrorKind::ConnectionRefused)
    );
}
