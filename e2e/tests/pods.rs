//! Pods bound to the node of a single-node r8s-server run as real
//! containers through the embedded agent and its in-process CRI runtime:
//! running with an address, crash loops, failures, graceful deletion and
//! adoption after a restart. Needs root, docker-registry, skopeo,
//! busybox-static and kubectl (CI has them).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use e2e::cluster::Cluster;
use e2e::registry::Registry;
use e2e::scenario::{self, container, first_status, pod, wait_pod};
use serde_json::json;

fn http_get(ip: &str, port: u16) -> anyhow::Result<String> {
    let addr = format!("{ip}:{port}").parse()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn scenarios(cluster: &mut Cluster, registry: &Registry) -> anyhow::Result<()> {
    let image = registry.busybox();
    let out_dir = cluster.host_dir("term")?;
    cluster.apply(&pod(
        cluster,
        "web",
        json!({ "containers": [container(
            &image,
            "mkdir -p /www && echo hello-r8s > /www/index.html && exec httpd -f -p 8080 -h /www",
        )] }),
    ))?;
    cluster.apply(&pod(
        cluster,
        "crash",
        json!({ "containers": [container(&image, "echo boom; exit 2")] }),
    ))?;
    cluster.apply(&pod(
        cluster,
        "fail",
        json!({ "restartPolicy": "Never", "containers": [container(&image, "echo failing; exit 3")] }),
    ))?;
    let mut term = container(
        &image,
        "trap 'echo TERM > /out/signal; exit 0' TERM; while true; do sleep 1; done",
    );
    term["volumeMounts"] = json!([{ "name": "out", "mountPath": "/out" }]);
    cluster.apply(&pod(
        cluster,
        "term",
        json!({
            "terminationGracePeriodSeconds": 30,
            "volumes": [{ "name": "out", "hostPath": { "path": out_dir.display().to_string(), "type": "Directory" } }],
            "containers": [term],
        }),
    ))?;

    // (a) Running with an address, ready, serving HTTP from inside its netns.
    let web = wait_pod(
        cluster,
        "web",
        "web Running and ready",
        Duration::from_secs(90),
        |p| {
            p["status"]["phase"] == "Running"
                && p["status"]["podIP"].is_string()
                && first_status(p)["ready"] == true
        },
    )?;
    assert_eq!(first_status(&web)["restartCount"], 0);
    let ip = web["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let web_id = first_status(&web)["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(web_id.contains("://"), "containerID {web_id:?}");
    // The embedded agent writes the status as kubelet, as upstream's
    // managedFields name it.
    let status_manager = cluster.kubectl_ok(
        &[
            "get",
            "pod",
            "web",
            "--show-managed-fields",
            "-o",
            r#"jsonpath={.metadata.managedFields[?(@.subresource=="status")].manager}"#,
        ],
        None,
    )?;
    assert_eq!(status_manager.trim(), "kubelet");
    assert!(
        web["status"]["podIPs"][0]["ip"] == ip.as_str(),
        "podIPs {:?}",
        web["status"]["podIPs"]
    );
    let body = e2e::wait_for("httpd to answer", Duration::from_secs(20), || {
        http_get(&ip, 8080).ok()
    })?;
    assert!(body.contains("hello-r8s"), "HTTP answer {body:?}");

    // kubectl exec goes API server -> kubelet API -> CRI streaming server.
    let out = cluster.kubectl(
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo exec-$((40+2)); exit 3",
        ],
        None,
    )?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "exec-42\n",
        "kubectl exec stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "kubectl exec exit status");
    let echoed = cluster.kubectl_ok(&["exec", "-i", "web", "--", "cat"], Some("piped\n"))?;
    assert_eq!(echoed, "piped\n");

    // (c) restartPolicy Never: the exit code fails the pod.
    let fail = wait_pod(
        cluster,
        "fail",
        "fail to be Failed",
        Duration::from_secs(60),
        |p| p["status"]["phase"] == "Failed",
    )?;
    assert_eq!(first_status(&fail)["state"]["terminated"]["exitCode"], 3);
    assert_eq!(
        first_status(&fail)["state"]["terminated"]["reason"],
        "Error"
    );
    // Its sandbox stops (the address goes back to the pool), while the dead
    // container and its log stay for kubectl logs.
    e2e::wait_for(
        "the fail pod's sandbox to stop",
        Duration::from_secs(30),
        || {
            let states: Vec<_> = e2e::cri_query::pod_sandboxes(&cluster.cri_socket(), "fail")
                .ok()?
                .into_iter()
                .map(|s| s.state())
                .collect();
            (!states.is_empty() && !states.contains(&cri::proto::PodSandboxState::SandboxReady))
                .then_some(())
        },
    )?;
    assert_eq!(cluster.kubectl_ok(&["logs", "fail"], None)?, "failing\n");

    // (b) A crashing container loops with back-off.
    let crash = wait_pod(
        cluster,
        "crash",
        "crash in CrashLoopBackOff after 2 restarts",
        Duration::from_secs(120),
        |p| {
            let s = first_status(p);
            s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && s["restartCount"].as_i64().unwrap_or(0) >= 2
        },
    )?;
    assert_eq!(
        first_status(&crash)["lastState"]["terminated"]["exitCode"],
        2
    );
    assert_eq!(crash["status"]["phase"], "Running");
    // kubectl logs reads the CRI log file through the kubelet API.
    let logs = cluster.kubectl_ok(&["logs", "crash", "--previous"], None)?;
    assert_eq!(logs, "boom\n");

    // (d) Graceful deletion: SIGTERM reaches the container, the pod goes away.
    wait_pod(
        cluster,
        "term",
        "term Running",
        Duration::from_secs(60),
        |p| first_status(p)["state"]["running"].is_object(),
    )?;
    let term_uid = cluster.kubectl_ok(
        &["get", "pod", "term", "-o", "jsonpath={.metadata.uid}"],
        None,
    )?;
    let term_logs = cluster
        .path()
        .join("logs")
        .join(format!("default_term_{term_uid}"));
    assert!(
        term_logs.is_dir(),
        "{} exists while the pod runs; the log dir has {:?}",
        term_logs.display(),
        std::fs::read_dir(cluster.path().join("logs"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    cluster.kubectl_ok(
        &["delete", "pod", "term", "--grace-period=20", "--wait=false"],
        None,
    )?;
    let signal = out_dir.join("signal");
    e2e::wait_for("the TERM trap to run", Duration::from_secs(30), || {
        std::fs::read_to_string(&signal)
            .ok()
            .filter(|s| s.contains("TERM"))
    })?;
    e2e::wait_for(
        "the term pod to be deleted",
        Duration::from_secs(40),
        || {
            let out = cluster.kubectl(&["get", "pod", "term"], None).ok()?;
            String::from_utf8_lossy(&out.stderr)
                .contains("NotFound")
                .then_some(())
        },
    )?;
    // Its log directory goes with it.
    e2e::wait_for("the term pod's logs to go", Duration::from_secs(20), || {
        (!term_logs.exists()).then_some(())
    })?;

    // (e) A restarted server+agent adopts the running container.
    cluster.stop()?;
    cluster.spawn()?;
    // Let the agent sync the pod more than once (its resync is 10 s).
    std::thread::sleep(Duration::from_secs(15));
    let web = wait_pod(
        cluster,
        "web",
        "web Running after restart",
        Duration::from_secs(60),
        |p| p["status"]["phase"] == "Running" && first_status(p)["ready"] == true,
    )?;
    assert_eq!(first_status(&web)["containerID"], web_id.as_str());
    assert_eq!(first_status(&web)["restartCount"], 0);
    assert!(http_get(&ip, 8080)?.contains("hello-r8s"));
    Ok(())
}

#[test]
fn pods_run_as_real_containers() -> anyhow::Result<()> {
    let images = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    scenario::with_cluster(&images, scenarios)
}
