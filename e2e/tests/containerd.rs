//! The agent against another CRI runtime, as kubelet's
//! `--container-runtime-endpoint` allows: r8s-server's embedded agent on a
//! private containerd (Debian's 1.6 with runc and the CNI bridge plugin).
//! The node is Ready with containerd's version, a pod runs with an address
//! from containerd's CNI and serves HTTP to the host, `kubectl logs` and
//! `kubectl exec` work through containerd's streaming server, and deleting
//! the pod removes it. Needs root, containerd, runc,
//! containernetworking-plugins, docker-registry, skopeo and kubectl (CI has
//! them).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use e2e::cluster::Cluster;
use e2e::containerd::{Containerd, ContainerdOptions};
use e2e::registry::Registry;
use e2e::scenario::{container, pod, wait_pod};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);

fn http_get(ip: &str, port: u16) -> anyhow::Result<String> {
    let addr = format!("{ip}:{port}").parse()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn scenario(cluster: &Cluster, registry: &Registry) -> anyhow::Result<()> {
    let node = cluster.get_json(&["get", "node", &cluster.node_name])?;
    let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap_or_default();
    anyhow::ensure!(
        runtime.starts_with("containerd://"),
        "nodeInfo.containerRuntimeVersion is {runtime:?}"
    );

    cluster.apply(&pod(
        cluster,
        "web",
        json!({
            "terminationGracePeriodSeconds": 1,
            "containers": [container(
                &registry.busybox(),
                "echo started-on-containerd; mkdir -p /www && echo hello-containerd > /www/index.html && exec httpd -f -p 8080 -h /www",
            )],
        }),
    ))?;
    let running = wait_pod(cluster, "web", "web Running", TIMEOUT, |p| {
        p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
    })?;
    let ip = running["status"]["podIP"].as_str().unwrap_or_default();
    let prefix = cluster.pod_cidr.trim_end_matches("0/24");
    anyhow::ensure!(
        ip.starts_with(prefix),
        "pod IP {ip} not in {}",
        cluster.pod_cidr
    );
    let container_id = running["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default();
    anyhow::ensure!(
        container_id.starts_with("containerd://"),
        "containerID {container_id:?}"
    );

    let page = e2e::wait_for("HTTP from the pod", Duration::from_secs(30), || {
        http_get(ip, 8080).ok()
    })?;
    anyhow::ensure!(page.contains("hello-containerd"), "got {page:?}");

    let logs = cluster.kubectl_ok(&["logs", "web"], None)?;
    anyhow::ensure!(logs.contains("started-on-containerd"), "logs: {logs:?}");

    let out = cluster.kubectl_ok(&["exec", "web", "--", "cat", "/www/index.html"], None)?;
    anyhow::ensure!(out.trim() == "hello-containerd", "exec printed {out:?}");
    let out = cluster.kubectl_ok(&["exec", "-i", "web", "--", "wc", "-c"], Some("12345"))?;
    anyhow::ensure!(out.trim() == "5", "exec with stdin printed {out:?}");

    cluster.kubectl_ok(
        &["delete", "pod", "web", "--wait=true", "--timeout=60s"],
        None,
    )?;
    let gone = cluster.kubectl(&["get", "pod", "web"], None)?;
    anyhow::ensure!(!gone.status.success(), "pod still there after delete");
    Ok(())
}

#[test]
fn the_agent_runs_pods_on_containerd() -> anyhow::Result<()> {
    if !e2e::is_root() {
        eprintln!("skipping: this test needs root (CI runs it as root)");
        return Ok(());
    }
    let images = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    let registry = Registry::start(&images)?;
    let mut cluster = Cluster::new()?;
    let containerd = Containerd::start(
        &cluster.path().join("containerd"),
        &ContainerdOptions {
            registry: &registry.addr,
            bridge: &cluster.resources.bridge,
            pod_cidr: &cluster.pod_cidr,
        },
    )?;
    cluster.extra_env.push((
        "R8S_CONTAINER_RUNTIME_ENDPOINT".into(),
        containerd.endpoint(),
    ));
    let result = cluster.spawn().and_then(|()| scenario(&cluster, &registry));
    if result.is_err() {
        eprintln!("r8s-server log:\n{}", cluster.log_tail(150));
        eprintln!("containerd log:\n{}", containerd.log_tail(60));
    }
    // The agent goes first so that it does not recreate what containerd's
    // cleanup removes; then containerd; the cluster's files and links last.
    let stopped = cluster.stop();
    drop(containerd);
    result.and(stopped)
}
