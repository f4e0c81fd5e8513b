//! The pod network between nodes against real network namespaces: a "wire"
//! netns with a bridge, two "node" netns each with a veth to it and a dummy
//! bridge holding the node's pod gateway. The flannel programmer runs in
//! each node netns (library API, one thread per apply, so every apply starts
//! from the kernel's state as after an agent restart); TCP from one pod
//! gateway to the other must work with host-gw and with the VXLAN overlay,
//! and removed nodes must leave no route, neighbour or fdb entry. Needs root
//! and iproute2; everything lives in the test's own namespaces.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use agent::flannel::annotations::{self, MacAddr};
use agent::flannel::desired::{self, Local, NodeNet};
use agent::flannel::masquerade;
use agent::flannel::netlink::{RTPROT_R8S, VXLAN_DEVICE, Vtep};
use agent::flannel::{Backend, Desired, Programmer};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use kube::api::ObjectMeta;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLUSTER_CIDR: &str = "10.252.0.0/16";

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn bridge(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "bridge"])
        .args(args)
        .output()
        .expect("run bridge");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One simulated node: its netns, node IP and pod gateway.
#[derive(Clone)]
struct TestNode {
    name: String,
    ns: String,
    node_ip: Ipv4Addr,
    pod_cidr: String,
    gateway: Ipv4Addr,
}

impl TestNode {
    fn node(&self) -> Node {
        node(
            &self.name,
            &self.pod_cidr,
            self.node_ip,
            MacAddr::for_node(&self.name),
        )
    }
}

fn node(name: &str, pod_cidr: &str, node_ip: Ipv4Addr, mac: MacAddr) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(annotations::own(Backend::Vxlan, node_ip, mac)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr.to_owned()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: node_ip.to_string(),
            }]),
            ..Default::default()
        }),
    }
}

/// Runs `f` on a thread that entered netns `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// Applies what `me` wants given `nodes`, twice (the second must be a no-op
/// that still succeeds), with its own rtnetlink connection in its netns.
fn apply(me: &TestNode, backend: Backend, direct_routing: bool, nodes: &[Node]) -> Desired {
    let me = me.clone();
    let nodes: Vec<NodeNet> = nodes.iter().filter_map(NodeNet::from_node).collect();
    in_netns(&me.ns.clone(), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let programmer =
                Programmer::connect(CLUSTER_CIDR.parse().expect("cidr")).expect("netlink");
            let host = programmer.host_net(me.node_ip, None).await.expect("host");
            assert_eq!(host.iface, "eth0");
            let own = me.pod_cidr.parse().ok();
            let local = Local {
                node_name: &me.name,
                backend,
                direct_routing,
                cluster_cidr: CLUSTER_CIDR.parse().expect("cidr"),
                own_pod_cidr: own,
                host: &host,
            };
            let desired = desired::compute(&local, &nodes);
            let vtep = Vtep {
                mac: MacAddr::for_node(&me.name),
                own_pod_cidr: own,
            };
            for _ in 0..2 {
                programmer
                    .apply(&host, &vtep, &desired)
                    .await
                    .expect("apply");
            }
            desired
        })
    })
}

/// TCP from `from`'s pod gateway to `to`'s, with 256 KiB echoed back (full
/// size segments through the overlay's MTU).
fn tcp_works(from: &TestNode, to: &TestNode) -> Result<(), String> {
    tcp((&from.ns, from.gateway), (&to.ns, to.gateway))
}

/// TCP from `source` in netns `from` to `target` in netns `to`, which sees the source.
fn tcp(from: (&str, Ipv4Addr), to: (&str, Ipv4Addr)) -> Result<(), String> {
    tcp_seen_as(from, to, from.1)
}

/// TCP from `source` in netns `from` to `target` in netns `to`, which sees `seen_as`.
fn tcp_seen_as(
    from: (&str, Ipv4Addr),
    to: (&str, Ipv4Addr),
    seen_as: Ipv4Addr,
) -> Result<(), String> {
    let ((from_ns, source), (to_ns, listen_on)) = (from, to);
    let listener = in_netns(to_ns, move || {
        std::net::TcpListener::bind((listen_on, 0)).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        })
    })
    .map_err(|e| format!("listen: {e}"))?;
    let target = listener.local_addr().map_err(|e| e.to_string())?;
    in_netns(from_ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            let exchange = async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((source, 0)))?;
                let mut client = socket.connect(target).await?;
                let (mut server, peer) = listener.accept().await?;
                assert_eq!(peer.ip(), seen_as, "the source address seen by the server");
                let data: Vec<u8> = (0..256 * 1024)
                    .map(|i| u8::try_from(i % 251).unwrap_or(0))
                    .collect();
                let echo = async {
                    let mut buf = vec![0u8; data.len()];
                    server.read_exact(&mut buf).await?;
                    server.write_all(&buf).await?;
                    std::io::Result::Ok(())
                };
                let send = async {
                    client.write_all(&data).await?;
                    let mut back = vec![0u8; data.len()];
                    client.read_exact(&mut back).await?;
                    std::io::Result::Ok(back)
                };
                let ((), back) = tokio::try_join!(echo, send)?;
                std::io::Result::Ok(back == data)
            };
            match tokio::time::timeout(Duration::from_secs(10), exchange).await {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err("echoed data differs".to_owned()),
                Ok(Err(e)) => Err(format!("tcp: {e}")),
                Err(_) => Err("tcp timed out".to_owned()),
            }
        })
    })
}

/// A random suffix for the test's names and a third octet for its subnets;
/// `None` when not root.
fn test_ids() -> Option<(u16, u8)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let r: u16 = rand::random();
    Some((r, u8::try_from(r % 40 + 10).expect("fits")))
}

/// Creates the network namespaces (loopback up); they go when the guard drops.
fn create_namespaces(names: &[String]) -> scopeguard::ScopeGuard<Vec<String>, fn(Vec<String>)> {
    let guard = scopeguard::guard(
        names.to_vec(),
        (|ns| {
            for n in ns {
                let _ = Command::new("ip").args(["netns", "del", &n]).status();
            }
        }) as fn(Vec<String>),
    );
    for n in names {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    guard
}

fn routes(ns: &str) -> String {
    ip(&["-n", ns, "route", "show", "proto", &RTPROT_R8S.to_string()])
}

fn has_vxlan(ns: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", VXLAN_DEVICE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn pods_reach_other_nodes_over_host_gw_and_vxlan() {
    let Some((r, x)) = test_ids() else {
        eprintln!("skipping: needs root (network namespaces)");
        return;
    };
    let wire = format!("r8srt-w-{r}");
    let (a, b) = (
        TestNode {
            name: "node-a".into(),
            ns: format!("r8srt-a-{r}"),
            node_ip: Ipv4Addr::new(10, 251, x, 2),
            pod_cidr: format!("10.252.{x}.0/24"),
            gateway: Ipv4Addr::new(10, 252, x, 1),
        },
        TestNode {
            name: "node-b".into(),
            ns: format!("r8srt-b-{r}"),
            node_ip: Ipv4Addr::new(10, 251, x, 3),
            pod_cidr: format!("10.252.{}.0/24", x + 50),
            gateway: Ipv4Addr::new(10, 252, x + 50, 1),
        },
    );
    let pods = [
        (format!("r8srt-pa-{r}"), Ipv4Addr::new(10, 252, x, 2)),
        (format!("r8srt-pb-{r}"), Ipv4Addr::new(10, 252, x + 50, 2)),
    ];
    let namespaces = [
        wire.clone(),
        a.ns.clone(),
        b.ns.clone(),
        pods[0].0.clone(),
        pods[1].0.clone(),
    ];
    let _cleanup = create_namespaces(&namespaces);
    ip(&["-n", &wire, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &wire, "link", "set", "br0", "up"]);
    for (i, n) in [&a, &b].into_iter().enumerate() {
        let port = format!("p{i}");
        ip(&[
            "-n", &wire, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &n.ns,
        ]);
        ip(&["-n", &wire, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &n.ns,
            "addr",
            "add",
            &format!("{}/24", n.node_ip),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &n.ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &n.ns, "link", "add", "r8s0", "type", "bridge"]);
        ip(&[
            "-n",
            &n.ns,
            "addr",
            "add",
            &format!("{}/24", n.gateway),
            "dev",
            "r8s0",
        ]);
        ip(&["-n", &n.ns, "link", "set", "r8s0", "up"]);
    }
    // A pod on each node, MTU 1500 as the CRI gives it, behind r8s0.
    for (n, (ns, pod_ip)) in [&a, &b].into_iter().zip(&pods) {
        ip(&[
            "-n", &n.ns, "link", "add", "vethpod", "type", "veth", "peer", "name", "eth0", "netns",
            ns,
        ]);
        ip(&[
            "-n", &n.ns, "link", "set", "vethpod", "master", "r8s0", "up",
        ]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{pod_ip}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &n.gateway.to_string(),
        ]);
        let forward = Command::new("ip")
            .args([
                "netns",
                "exec",
                &n.ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .expect("sysctl");
        assert!(forward.success());
    }
    // A route of our protocol outside the cluster CIDR (another cluster's
    // agent in the same netns): left alone.
    ip(&[
        "-n",
        &a.ns,
        "route",
        "add",
        "10.253.7.0/24",
        "via",
        &b.node_ip.to_string(),
        "proto",
        &RTPROT_R8S.to_string(),
    ]);
    // A route r8s did not add, to a pod CIDR a Node claims: left alone.
    ip(&[
        "-n",
        &a.ns,
        "route",
        "add",
        "10.252.250.0/24",
        "via",
        &b.node_ip.to_string(),
    ]);
    let squatter = node(
        "node-z",
        "10.252.250.0/24",
        Ipv4Addr::new(10, 251, x, 9),
        MacAddr::for_node("node-z"),
    );
    // A third node that never answers: its entries must go when it does.
    let phantom_ip = Ipv4Addr::new(10, 251, x, 4);
    let phantom_cidr = format!("10.252.{}.0/24", x + 100);
    let phantom = node(
        "node-c",
        &phantom_cidr,
        phantom_ip,
        MacAddr::for_node("node-c"),
    );
    let all = [a.node(), b.node(), squatter.clone()];

    assert!(
        tcp_works(&a, &b).is_err(),
        "no route between the nodes' pods yet"
    );

    // host-gw: a route via the other node's IP.
    let d = apply(&a, Backend::HostGw, true, &all);
    assert_eq!(d.routes.len(), 2, "{d:?}");
    assert!(!d.vxlan_device);
    apply(&b, Backend::HostGw, true, &all);
    let ra = routes(&a.ns);
    assert!(
        ra.contains(&format!("{} via {} dev eth0", b.pod_cidr, b.node_ip)),
        "{ra}"
    );
    assert!(
        !ra.contains("10.252.250.0"),
        "the existing route is not ours"
    );
    tcp_works(&a, &b).expect("host-gw");
    tcp((&pods[0].0, pods[0].1), (&pods[1].0, pods[1].1)).expect("host-gw pod to pod");
    assert!(!has_vxlan(&a.ns), "host-gw creates no device");

    // vxlan, the overlay forced although the nodes share a subnet; the
    // host-gw routes are replaced, and a third node gets entries too.
    let with_c = [a.node(), b.node(), phantom.clone()];
    let d = apply(&a, Backend::Vxlan, false, &with_c);
    assert!(d.vxlan_device);
    apply(&b, Backend::Vxlan, false, &with_c);
    let b_mac = MacAddr::for_node("node-b").to_string();
    let c_mac = MacAddr::for_node("node-c").to_string();
    let ra = routes(&a.ns);
    let b_vtep = b.pod_cidr.trim_end_matches("/24");
    assert!(
        ra.contains(&format!(
            "{} via {b_vtep} dev {VXLAN_DEVICE} onlink",
            b.pod_cidr
        )),
        "{ra}"
    );
    assert!(
        !ra.contains(&format!("{} via {}", b.pod_cidr, b.node_ip)),
        "host-gw routes removed: {ra}"
    );
    let neigh = ip(&["-n", &a.ns, "neigh", "show", "dev", VXLAN_DEVICE]);
    assert!(
        neigh.contains(&format!("{b_vtep} lladdr {b_mac} PERMANENT")),
        "{neigh}"
    );
    assert!(neigh.contains(&c_mac), "{neigh}");
    let fdb = bridge(&a.ns, &["fdb", "show", "dev", VXLAN_DEVICE]);
    assert!(
        fdb.contains(&format!("{b_mac} dst {} self permanent", b.node_ip)),
        "{fdb}"
    );
    assert!(fdb.contains(&format!("{c_mac} dst {phantom_ip}")), "{fdb}");
    let link = ip(&["-d", "-n", &a.ns, "link", "show", VXLAN_DEVICE]);
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(link.contains("vxlan id 1"), "{link}");
    assert!(link.contains(&format!("local {}", a.node_ip)), "{link}");
    assert!(link.contains("dstport 8472"), "{link}");
    assert!(link.contains("nolearning"), "{link}");
    let addr = ip(&["-n", &a.ns, "addr", "show", "dev", VXLAN_DEVICE]);
    let a_vtep = a.pod_cidr.trim_end_matches("/24");
    assert!(addr.contains(&format!("inet {a_vtep}/32")), "{addr}");
    tcp_works(&a, &b).expect("vxlan");
    tcp_works(&b, &a).expect("vxlan, back");
    // Full-size segments from a 1500-MTU pod shrink to the overlay's MTU
    // through path MTU discovery (ICMP fragmentation needed from node-a).
    // Pod to pod: both pods are on MTU 1500 links and advertise an MSS to
    // match; full-size segments shrink to the overlay's MTU through path MTU
    // discovery (ICMP fragmentation needed from node-a).
    let ((pod_a, pod_a_ip), (pod_b, pod_b_ip)) = (&pods[0], &pods[1]);
    tcp((pod_a, *pod_a_ip), (pod_b, *pod_b_ip)).expect("vxlan pod to pod");
    let learned = ip(&["-n", pod_a, "route", "get", &pod_b_ip.to_string()]);
    assert!(learned.contains("mtu 1450"), "{learned}");

    // node-c goes: its route, neighbour and fdb entry go, node-b's stay.
    let d = apply(&a, Backend::Vxlan, false, &[a.node(), b.node()]);
    assert_eq!(d.routes.len(), 1);
    let ra = routes(&a.ns);
    assert!(!ra.contains(&phantom_cidr), "{ra}");
    let neigh = ip(&["-n", &a.ns, "neigh", "show", "dev", VXLAN_DEVICE]);
    assert!(!neigh.contains(&c_mac) && neigh.contains(&b_mac), "{neigh}");
    let fdb = bridge(&a.ns, &["fdb", "show", "dev", VXLAN_DEVICE]);
    assert!(!fdb.contains(&c_mac) && fdb.contains(&b_mac), "{fdb}");
    tcp_works(&a, &b).expect("vxlan after node-c left");

    // node-b goes too: nothing of ours is left, the foreign route stays.
    let d = apply(&a, Backend::Vxlan, false, &[a.node()]);
    assert_eq!(d, Desired::default());
    assert!(
        !has_vxlan(&a.ns),
        "the device goes with the last remote node"
    );
    assert!(
        routes(&a.ns).trim().starts_with("10.253.7.0/24") && routes(&a.ns).lines().count() == 1,
        "{}",
        routes(&a.ns)
    );
    assert!(ip(&["-n", &a.ns, "route", "show"]).contains("10.252.250.0/24"));
    assert!(
        tcp_works(&a, &b).is_err(),
        "no route to node-b's pods any more"
    );

    // Backend none on node-b removes what an earlier backend left.
    assert!(has_vxlan(&b.ns) && !routes(&b.ns).is_empty());
    in_netns(&b.ns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let cidr = CLUSTER_CIDR.parse().expect("cidr");
            let programmer = Programmer::connect(cidr).expect("netlink");
            programmer.clear().await.expect("clear");
        });
    });
    assert!(!has_vxlan(&b.ns));
    assert_eq!(routes(&b.ns).trim(), "");
}

#[test]
fn pod_traffic_leaving_the_cluster_appears_as_the_node() {
    let Some((r, x)) = test_ids() else {
        eprintln!("skipping: needs root (network namespaces)");
        return;
    };
    let (outside, node_ns, pod_ns) = (
        format!("r8srt-o-{r}"),
        format!("r8srt-n-{r}"),
        format!("r8srt-p-{r}"),
    );
    let outside_ip = Ipv4Addr::new(10, 251, x, 254);
    let node_ip = Ipv4Addr::new(10, 251, x, 2);
    let (gateway, pod_ip) = (Ipv4Addr::new(10, 252, x, 1), Ipv4Addr::new(10, 252, x, 2));
    let namespaces = [outside.clone(), node_ns.clone(), pod_ns.clone()];
    let _cleanup = create_namespaces(&namespaces);
    // The node's uplink to a host outside the cluster network, which has no
    // route to the pods; and a pod behind the node's bridge.
    for (peer_ns, there, here, node_side) in [
        (&outside, outside_ip, node_ip, "eth0"),
        (&pod_ns, pod_ip, gateway, "vethpod"),
    ] {
        ip(&[
            "-n", &node_ns, "link", "add", node_side, "type", "veth", "peer", "name", "eth0",
            "netns", peer_ns,
        ]);
        ip(&[
            "-n",
            peer_ns,
            "addr",
            "add",
            &format!("{there}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", peer_ns, "link", "set", "eth0", "up"]);
        if node_side == "eth0" {
            ip(&[
                "-n",
                &node_ns,
                "addr",
                "add",
                &format!("{here}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &node_ns, "link", "set", "eth0", "up"]);
        }
    }
    ip(&["-n", &node_ns, "link", "add", "r8s0", "type", "bridge"]);
    ip(&[
        "-n",
        &node_ns,
        "addr",
        "add",
        &format!("{gateway}/24"),
        "dev",
        "r8s0",
    ]);
    ip(&["-n", &node_ns, "link", "set", "r8s0", "up"]);
    ip(&[
        "-n", &node_ns, "link", "set", "vethpod", "master", "r8s0", "up",
    ]);
    ip(&[
        "-n",
        &pod_ns,
        "route",
        "add",
        "default",
        "via",
        &gateway.to_string(),
    ]);
    let forward = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node_ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .expect("sysctl");
    assert!(forward.success());

    assert!(
        tcp((&pod_ns, pod_ip), (&outside, outside_ip)).is_err(),
        "without masquerade the outside host cannot answer the pod"
    );
    let table = masquerade::table_name("r8s0");
    let script = masquerade::render(
        &table,
        CLUSTER_CIDR.parse().expect("cidr"),
        format!("10.252.{x}.0/24").parse().ok(),
    );
    in_netns(&node_ns, move || {
        let nft = r8s_nft::LibNftables::new().expect("libnftables");
        // Twice: replacing the table is idempotent.
        for _ in 0..2 {
            nft.run(&script).expect("masquerade rules");
        }
    });
    tcp_seen_as((&pod_ns, pod_ip), (&outside, outside_ip), node_ip)
        .expect("the pod reaches the outside host as the node");
    // The node itself talking to its pod keeps its address.
    tcp((&node_ns, gateway), (&pod_ns, pod_ip)).expect("node to pod");
}
