//! Services and cluster DNS on a single-node r8s-server, through the
//! embedded agent's in-process service proxy: a Deployment of busybox httpd
//! behind a NodePort Service is reached from another pod by ClusterIP, by
//! `<svc>.<ns>.svc.cluster.local` and by the short name (through the pod's
//! resolv.conf and the cluster DNS), and from the host by NodePort; a Service
//! without endpoints refuses connections; scaling to 0 and back is followed;
//! `kubectl expose` makes a Service that works the same.
//! Needs root, docker-registry, skopeo, busybox-static, nftables and kubectl
//! (CI has them).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use e2e::cluster::Cluster;
use e2e::registry::Registry;
use e2e::scenario;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

fn deployment(image: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "httpd",
                        "image": image,
                        "command": ["sh", "-c",
                            "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "ports": [{ "containerPort": 8080 }],
                    }],
                },
            },
        },
    })
}

fn service(name: &str, kind: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "type": kind,
            "selector": { "app": app },
            "ports": [{ "name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP" }],
        },
    })
}

fn client_pod(image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "client", "namespace": "default" },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{ "name": "client", "image": image, "command": ["sleep", "3600"] }],
        },
    })
}

/// Runs `cmd` in `pod`. (Debian's static busybox `wget -T` segfaults, so
/// time limits come from busybox `timeout`.)
fn exec(cluster: &Cluster, pod: &str, cmd: &[&str]) -> anyhow::Result<Output> {
    let mut args = vec!["exec", pod, "--"];
    args.extend_from_slice(cmd);
    cluster.kubectl(&args, None)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `wget` from the client pod until it prints a page of the web pods.
fn wget_until_served(cluster: &Cluster, url: &str) -> anyhow::Result<String> {
    let mut last = String::new();
    let r = e2e::wait_for(&format!("{url} to answer"), TIMEOUT, || {
        let out = exec(cluster, "client", &["timeout", "10", "wget", "-qO-", url]).ok()?;
        last = text(&out);
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && body.contains("hello-from-web")).then_some(body)
    });
    r.map_err(|e| anyhow::anyhow!("{e}; last wget: {last}"))
}

/// `wget` from the client pod until the connection is refused.
fn wget_until_refused(cluster: &Cluster, url: &str) -> anyhow::Result<()> {
    let mut last = String::new();
    let r = e2e::wait_for(&format!("{url} to refuse"), TIMEOUT, || {
        let out = exec(cluster, "client", &["timeout", "20", "wget", "-qO-", url]).ok()?;
        last = text(&out);
        let refused = !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("Connection refused");
        refused.then_some(())
    });
    r.map_err(|e| anyhow::anyhow!("{e}; last wget: {last}"))
}

fn http_get(addr: &str) -> anyhow::Result<String> {
    let addr = addr.parse()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn ready_endpoints(cluster: &Cluster, service: &str) -> usize {
    let Ok(slices) = cluster.get_json(&[
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={service}"),
    ]) else {
        return usize::MAX;
    };
    slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] != false)
        .count()
}

fn scale(cluster: &Cluster, replicas: u32) -> anyhow::Result<()> {
    cluster.kubectl_ok(
        &["scale", "deployment/web", &format!("--replicas={replicas}")],
        None,
    )?;
    let want = usize::try_from(replicas)?;
    e2e::wait_for(
        &format!("{replicas} ready endpoints of web"),
        TIMEOUT,
        || (ready_endpoints(cluster, "web") == want).then_some(()),
    )
}

fn scenarios(cluster: &Cluster, registry: &Registry) -> anyhow::Result<()> {
    let image = registry.busybox();
    // The cluster DNS Service exists from bootstrap at the 10th address of the
    // cluster's own service range.
    let dns = cluster.get_json(&["get", "service", "-n", "kube-system", "kube-dns"])?;
    assert_eq!(dns["spec"]["clusterIP"], cluster.cluster_dns().as_str());

    cluster.apply(&deployment(&image, 2))?;
    cluster.apply(&service("web", "NodePort", "web"))?;
    cluster.apply(&service("empty", "ClusterIP", "nothing-matches"))?;
    cluster.apply(&client_pod(&image))?;
    e2e::wait_for("the client pod to run", TIMEOUT, || {
        let p = cluster.get_json(&["get", "pod", "client"]).ok()?;
        (p["status"]["phase"] == "Running").then_some(())
    })?;
    e2e::wait_for("2 ready endpoints of web", TIMEOUT, || {
        (ready_endpoints(cluster, "web") == 2).then_some(())
    })?;
    let web = cluster.get_json(&["get", "service", "web"])?;
    let cluster_ip = web["spec"]["clusterIP"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("web has no clusterIP: {web}"))?
        .to_owned();
    let node_port = web["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("web has no nodePort: {web}"))?;

    // The agent points pods at the cluster DNS.
    let resolv = exec(cluster, "client", &["cat", "/etc/resolv.conf"])?;
    let resolv = String::from_utf8_lossy(&resolv.stdout).into_owned();
    assert!(
        resolv.contains(&format!("nameserver {}", cluster.cluster_dns())),
        "resolv.conf: {resolv}"
    );
    assert!(
        resolv.contains("default.svc.cluster.local"),
        "resolv.conf: {resolv}"
    );

    // By ClusterIP, by full name and by short name.
    wget_until_served(cluster, &format!("http://{cluster_ip}/"))?;
    wget_until_served(cluster, "http://web.default.svc.cluster.local/")?;
    wget_until_served(cluster, "http://web/")?;
    // Both replicas serve: repeated requests reach more than one pod.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(wget_until_served(
            cluster,
            &format!("http://{cluster_ip}/"),
        )?);
        if seen.len() > 1 {
            break;
        }
    }
    assert!(seen.len() > 1, "only one backend answered: {seen:?}");

    // From the host, by NodePort on the node's pod-network address.
    let host_url = format!("{}:{node_port}", cluster.gateway());
    let page = e2e::wait_for("the NodePort to answer", TIMEOUT, || {
        http_get(&host_url)
            .ok()
            .filter(|p| p.contains("hello-from-web"))
    })?;
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 "),
        "{page}"
    );

    // A Service without endpoints is rejected, not black-holed.
    let empty = cluster.get_json(&["get", "service", "empty"])?;
    let empty_ip = empty["spec"]["clusterIP"].as_str().unwrap_or_default();
    wget_until_refused(cluster, &format!("http://{empty_ip}/"))?;

    // The Service follows the Deployment to 0 replicas and back.
    scale(cluster, 0)?;
    wget_until_refused(cluster, &format!("http://{cluster_ip}/"))?;
    scale(cluster, 1)?;
    wget_until_served(cluster, "http://web/")?;

    // `kubectl expose`, as the README shows it.
    cluster.kubectl_ok(
        &[
            "expose",
            "deployment/web",
            "--name=exposed",
            "--port=8081",
            "--target-port=8080",
        ],
        None,
    )?;
    wget_until_served(cluster, "http://exposed:8081/")?;
    Ok(())
}

#[test]
fn services_and_cluster_dns_route_to_pods() -> anyhow::Result<()> {
    let images = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    scenario::with_cluster(&images, |cluster, registry| scenarios(cluster, registry))
}
