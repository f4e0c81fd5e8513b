//! End-to-end tests of r8s-cri over its CRI socket (need root, docker-registry,
//! skopeo and busybox-static; CI runs them as root).
mod common;

use cri::proto;

#[tokio::test(flavor = "multi_thread")]
async fn version_status_and_unimplemented_rpcs() {
    require_root!();
    let env = common::Runtime::start().await;
    let mut rt = env.runtime().await;
    let v = rt
        .version(proto::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "r8s-cri");
    assert_eq!(v.runtime_api_version, "v1");
    let s = rt
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let conditions = s.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.r#type == "RuntimeReady" && c.status)
    );
    assert!(
        conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status)
    );
    let err = rt
        .checkpoint_container(proto::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread")]
async fn image_pull_status_list_remove() {
    require_root!();
    let env = common::Runtime::start().await;
    // Concurrent pulls of one image share a single pull and agree on the id.
    let image = env.registry.busybox();
    let pull = || async {
        env.images()
            .await
            .pull_image(proto::PullImageRequest {
                image: Some(proto::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .image_ref
    };
    let (a, b) = tokio::join!(pull(), pull());
    assert!(a.starts_with("sha256:"));
    assert_eq!(a, b);
    let mut images = env.images().await;
    let status = images
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .expect("pulled image has a status");
    assert!(status.id.starts_with("sha256:"));
    assert_eq!(status.repo_tags, vec![image.clone()]);
    assert!(status.size > 0);
    // A second pull reuses the stored blobs and gives the same id.
    let again = images
        .pull_image(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.image_ref, status.id);
    let list = images
        .list_images(proto::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.images.len(), 1);
    let fs = images
        .image_fs_info(proto::ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);
    images
        .remove_image(proto::RemoveImageRequest {
            image: Some(proto::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let gone = images
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image,
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.image.is_none());
    assert_eq!(
        std::fs::read_dir(env.root().join("snapshots"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_lifecycle_logs_exec_exit_code_and_cleanup() {
    require_root!();
    let env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("web").await;
    let mut rt = env.runtime().await;

    let pod_status = env.sandbox_status(&pod).await;
    assert_eq!(
        pod_status.state,
        proto::PodSandboxState::SandboxReady as i32
    );
    let ip = pod_status.network.unwrap().ip;
    let prefix = env.cidr.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod ip {ip} not in {}", env.cidr);

    let server = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config(
                "server",
                &image,
                &["sh", "-c", "echo hello; echo oops >&2; exec sleep 1000"],
            ),
        )
        .await;
    let status = env.status(&server).await;
    assert_eq!(status.state, proto::ContainerState::ContainerRunning as i32);
    assert!(status.started_at > 0);
    let log = env.logs().join("web/server/0.log");
    // stdout and stderr are copied by separate tasks: wait for each line.
    env.wait_for_file_text(&log, "stderr F oops").await;
    let text = env.wait_for_file_text(&log, " stdout F hello\n").await;
    assert!(text.contains("stderr F oops\n"), "{text}");

    let out = env.exec(&server, &["hostname"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");
    let out = env.exec(&server, &["cat", "/etc/resolv.conf"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("nameserver 10.96.0.10"));
    let out = env
        .exec(&server, &["sh", "-c", "echo to-err >&2; exit 3"])
        .await;
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-err\n");
    let out = env
        .exec(&server, &["ip", "-o", "-4", "addr", "show", "eth0"])
        .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&ip));

    let stats = rt
        .container_stats(proto::ContainerStatsRequest {
            container_id: server.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.memory.unwrap().usage_bytes.unwrap().value > 0);
    // The CPU rate needs a previous sample at least a second older.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let cpu = rt
        .container_stats(proto::ContainerStatsRequest {
            container_id: server.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
        .cpu
        .unwrap();
    assert!(cpu.usage_nano_cores.is_some(), "{cpu:?}");

    // A container that fails on its own reports its code and reason.
    let failing = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config("failing", &image, &["sh", "-c", "exit 3"]),
        )
        .await;
    let s = env.wait_exited(&failing).await;
    assert_eq!(s.exit_code, 3);
    assert_eq!(s.reason, "Error");
    assert!(s.finished_at >= s.started_at);

    // Stop: sleep as pid 1 ignores SIGTERM, so SIGKILL follows the timeout.
    rt.stop_container(proto::StopContainerRequest {
        container_id: server.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let s = env.status(&server).await;
    assert_eq!(s.state, proto::ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137);

    let listed = rt
        .list_containers(proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);

    rt.remove_container(proto::RemoveContainerRequest {
        container_id: server.clone(),
    })
    .await
    .unwrap();
    let err = rt
        .container_status(proto::ContainerStatusRequest {
            container_id: server.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(!env.state().join("containers").join(&server).exists());

    let veth = format!("veth{}", &pod[..11]);
    assert!(common::Runtime::link_exists(&veth));
    rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert!(!common::Runtime::link_exists(&veth));
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let pods = rt
        .list_pod_sandbox(proto::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty());
    assert!(!env.cgroup_exists(&format!("pod-{}", &pod[..12])));
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_in_a_pod_share_localhost() {
    require_root!();
    let env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("pair").await;
    env.create_and_start(
        &pod,
        &sandbox_config,
        env.container_config(
            "server",
            &image,
            &["sh", "-c", "while true; do echo pong | nc -l -p 8080; done"],
        ),
    )
    .await;
    let client = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config("client", &image, &["sleep", "1000"]),
        )
        .await;
    let out = env
        .exec(
            &client,
            &[
                "sh",
                "-c",
                "for i in $(seq 100); do nc 127.0.0.1 8080 </dev/null && exit 0; sleep 0.1; done; exit 1",
            ],
        )
        .await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pong");
    env.runtime()
        .await
        .remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

/// Reads what a TCP server at `addr` says, retrying while it is not up yet.
async fn read_tcp(addr: &str) -> String {
    for _ in 0..100 {
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            let mut out = String::new();
            if tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
                .await
                .is_ok()
                && !out.is_empty()
            {
                return out;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("nothing answered at {addr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_ports_reach_the_pod_from_the_node_and_from_the_pod_itself() {
    require_root!();
    let mut env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let gateway = env.gateway();
    let host_port = 20000 + rand::random::<u16>() % 20000;
    let mut config = env.sandbox_config("web");
    // Only the test's own bridge address: nothing else of the host is redirected.
    config.port_mappings = vec![proto::PortMapping {
        protocol: proto::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port.into(),
        host_ip: gateway.clone(),
    }];
    let (pod, config) = env.run_pod_with(config).await;
    let server = env
        .create_and_start(
            &pod,
            &config,
            env.container_config(
                "server",
                &image,
                &["sh", "-c", "while true; do echo pong | nc -l -p 8080; done"],
            ),
        )
        .await;
    let addr = format!("{gateway}:{host_port}");
    assert_eq!(read_tcp(&addr).await.trim(), "pong");

    // Hairpin: the pod reaches itself through the node's hostPort.
    let out = env
        .exec(
            &server,
            &[
                "sh",
                "-c",
                &format!(
                    "for i in $(seq 50); do nc {gateway} {host_port} </dev/null && exit 0; sleep 0.1; done; exit 1"
                ),
            ],
        )
        .await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pong");

    // A restarted runtime programs the table again from its sandboxes.
    let table = env.hostport_table();
    env.kill_runtime();
    let deleted = std::process::Command::new("nft")
        .args(["delete", "table", "ip", &table])
        .status()
        .unwrap();
    assert!(deleted.success());
    env.spawn().await;
    assert!(env.nft_table_exists(&table));
    assert_eq!(read_tcp(&addr).await.trim(), "pong");

    // The last hostPort gone, the table goes too.
    env.runtime()
        .await
        .remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    assert!(!env.nft_table_exists(&table));
}

/// The UDP conntrack entries of the node (the test's namespace) to `addr:port`.
fn udp_flows_to(
    conntrack: &r8s_nft::conntrack::NetlinkConntrack,
    addr: std::net::Ipv4Addr,
    port: u16,
) -> Vec<r8s_nft::conntrack::Flow> {
    conntrack
        .flows()
        .expect("conntrack dump")
        .into_iter()
        .filter(|f| f.orig_dst == addr && f.orig_dst_port == port)
        .collect()
}

/// Sends datagrams from `socket` to `addr:port` until conntrack holds a flow to it that
/// `want` accepts; panics with the flows and the hostPort table after 90 s.
async fn send_until(
    env: &common::Runtime,
    conntrack: &r8s_nft::conntrack::NetlinkConntrack,
    socket: &std::net::UdpSocket,
    (addr, port): (std::net::Ipv4Addr, u16),
    what: &str,
    want: impl Fn(&r8s_nft::conntrack::Flow) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        // Errors (an earlier datagram's port unreachable) do not matter: only conntrack does.
        let _ = socket.send_to(b"ping", (addr, port));
        let flows = udp_flows_to(conntrack, addr, port);
        if flows.iter().any(&want) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let table = std::process::Command::new("nft")
                .args(["list", "table", "ip", &env.hostport_table()])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "no udp flow to {addr}:{port} {what}; flows: {flows:?}; hostPort table:\n{table}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// As portmap and kubelet do: a UDP hostPort's conntrack entries are deleted when the mapping
/// appears (flows that went elsewhere before are DNATed now) and when its pod goes (flows stop
/// going to the removed pod).
#[tokio::test(flavor = "multi_thread")]
async fn udp_host_port_flows_follow_the_mapping_not_stale_conntrack_entries() {
    require_root!();
    let mut env = common::Runtime::start().await;
    let gateway: std::net::Ipv4Addr = env.gateway().parse().unwrap();
    let host_port = 20000 + rand::random::<u16>() % 20000;
    let mapping = |protocol: proto::Protocol, host_port: u16| proto::PortMapping {
        protocol: protocol as i32,
        container_port: 53,
        host_port: host_port.into(),
        // Only the test's own bridge address: nothing else of the host is redirected.
        host_ip: gateway.to_string(),
    };
    // Keeps the hostPort table (and its NAT) while the UDP pod comes and goes, so that only
    // the runtime's conntrack cleanup can forget the flows.
    let mut keeper = env.sandbox_config("keeper");
    keeper.port_mappings = vec![mapping(proto::Protocol::Tcp, host_port ^ 1)];
    let (keeper, _) = env.run_pod_with(keeper).await;
    let conntrack = r8s_nft::conntrack::NetlinkConntrack::new(None).expect("conntrack socket");
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let dst = (gateway, host_port);

    // Before the mapping, the flow goes to the node itself.
    send_until(&env, &conntrack, &socket, dst, "to the node", |f| {
        f.reply_src == gateway
    })
    .await;

    let mut config = env.sandbox_config("dns");
    config.port_mappings = vec![mapping(proto::Protocol::Udp, host_port)];
    let (pod, _) = env.run_pod_with(config).await;
    let pod_ip: std::net::Ipv4Addr = env
        .sandbox_status(&pod)
        .await
        .network
        .map(|n| n.ip)
        .unwrap_or_default()
        .parse()
        .unwrap();
    // The same socket (same tuple) reaches the pod: the flow to the node was forgotten.
    send_until(&env, &conntrack, &socket, dst, "DNATed to the pod", |f| {
        f.reply_src == pod_ip
    })
    .await;
    // A restarted runtime keeps the flows of mappings that did not change.
    env.kill_runtime();
    env.spawn().await;
    env.sandbox_status(&pod).await;
    let kept: Vec<_> = udp_flows_to(&conntrack, gateway, host_port)
        .into_iter()
        .filter(|f| f.reply_src == pod_ip)
        .collect();
    assert!(
        !kept.is_empty(),
        "the flow to {pod_ip} was flushed by the restart"
    );

    env.runtime()
        .await
        .remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    let to_pod = |flows: Vec<r8s_nft::conntrack::Flow>| {
        let stale: Vec<_> = flows
            .into_iter()
            .filter(|f| f.reply_src == pod_ip)
            .collect();
        assert!(
            stale.is_empty(),
            "flows to the removed pod {pod_ip}: {stale:?}"
        );
    };
    to_pod(udp_flows_to(&conntrack, gateway, host_port));
    send_until(&env, &conntrack, &socket, dst, "to the node again", |f| {
        f.reply_src == gateway
    })
    .await;
    to_pod(udp_flows_to(&conntrack, gateway, host_port));
    env.remove_pod(&keeper).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_limit_is_enforced_as_oom_killed() {
    require_root!();
    let env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("hog").await;
    let mut config = env.container_config(
        "hog",
        &image,
        &["sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done"],
    );
    config.linux = Some(proto::LinuxContainerConfig {
        resources: Some(proto::LinuxContainerResources {
            memory_limit_in_bytes: 32 * 1024 * 1024,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = env.create_and_start(&pod, &sandbox_config, config).await;
    let s = env.wait_exited(&id).await;
    assert_eq!(s.reason, "OOMKilled");
    assert_eq!(s.exit_code, 137);
    env.runtime()
        .await
        .remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_rootfs_and_run_as_user() {
    require_root!();
    let env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("locked").await;
    let mut config = env.container_config("locked", &image, &["sleep", "1000"]);
    config.linux = Some(proto::LinuxContainerConfig {
        security_context: Some(proto::LinuxContainerSecurityContext {
            readonly_rootfs: true,
            run_as_user: Some(proto::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = env.create_and_start(&pod, &sandbox_config, config).await;
    let out = env.exec(&id, &["id"]).await;
    let id_text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        id_text.starts_with("uid=1000(app) gid=1000(app)"),
        "{id_text}"
    );
    let out = env.exec(&id, &["sh", "-c", "touch /tmp/x"]).await;
    assert_ne!(out.exit_code, 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));

    // Root in a read-write rootfs may write.
    let rw = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config("rw", &image, &["sleep", "1000"]),
        )
        .await;
    let out = env.exec(&rw, &["sh", "-c", "touch /x && id -u"]).await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    env.runtime()
        .await
        .remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_pods_running() {
    require_root!();
    let mut env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("survivor").await;
    let id = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config(
                "ticker",
                &image,
                &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
            ),
        )
        .await;
    let log = env.logs().join("survivor/ticker/0.log");
    env.wait_for_file_text(&log, "stdout F tick").await;
    let doomed = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config("doomed", &image, &["sleep", "3600"]),
        )
        .await;
    let exiter = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config(
                "exiter",
                &image,
                &[
                    "sh",
                    "-c",
                    "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7",
                ],
            ),
        )
        .await;
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root().join(format!("containers/{doomed}.json"))).unwrap(),
    )
    .unwrap();
    let doomed_pid = i32::try_from(record["pid"].as_i64().unwrap()).unwrap();

    env.kill_runtime();
    // A container that ends while the runtime is down: its exit status is
    // lost, reported as containerd does (255, Unknown).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(doomed_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Dead before the runtime is back (a zombie whose parent has not reaped it yet counts).
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{doomed_pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| rest.starts_with('Z'))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    env.spawn().await;
    let s = env.wait_exited(&doomed).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (255, "Unknown"));
    // One that ends after the restart: not our child, yet its code is known.
    env.exec(&exiter, &["touch", "/tmp/go"]).await;
    let s = env.wait_exited(&exiter).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"));

    let s = env.status(&id).await;
    assert_eq!(s.state, proto::ContainerState::ContainerRunning as i32);
    let out = env.exec(&id, &["echo", "still here"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    let pods = env
        .runtime()
        .await
        .list_pod_sandbox(proto::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, proto::PodSandboxState::SandboxReady as i32);
    // Logs keep flowing through the re-opened fifo.
    let before = std::fs::read_to_string(&log).unwrap().len();
    for _ in 0..100 {
        if std::fs::read_to_string(&log).unwrap().len() > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_to_string(&log).unwrap().len() > before);
    let mut rt = env.runtime().await;
    rt.stop_container(proto::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let s = env.status(&id).await;
    assert_eq!(s.state, proto::ContainerState::ContainerExited as i32);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pod_shares_the_node_netns() {
    require_root!();
    let env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let mut config = env.sandbox_config("hostnet");
    config.linux = Some(proto::LinuxPodSandboxConfig {
        security_context: Some(proto::LinuxSandboxSecurityContext {
            namespace_options: Some(proto::NamespaceOption {
                network: proto::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut rt = env.runtime().await;
    let pod = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let status = env.sandbox_status(&pod).await;
    assert_eq!(status.network.unwrap().ip, "");
    assert!(!common::Runtime::link_exists(&format!(
        "veth{}",
        &pod[..11]
    )));
    let mut c = env.container_config("c", &image, &["sleep", "1000"]);
    c.linux = Some(proto::LinuxContainerConfig {
        security_context: Some(proto::LinuxContainerSecurityContext {
            namespace_options: Some(proto::NamespaceOption {
                network: proto::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = env.create_and_start(&pod, &config, c).await;
    let out = env.exec(&id, &["readlink", "/proc/self/ns/net"]).await;
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        host.display().to_string()
    );
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}
