//! Container probes and lifecycle details on a single-node r8s-server with
//! real containers: an exec readiness probe holds a pod unready until a file
//! exists, a failing liveness probe restarts its container with kubelet's
//! events, an httpGet readiness probe against busybox httpd passes, a startup
//! probe holds started/ready back and gates liveness, a failing
//! postStart hook is reported, and a memory-backed emptyDir is a tmpfs that
//! goes away with its pod. Needs root, docker-registry, skopeo,
//! busybox-static and kubectl (CI has them).

use std::path::Path;
use std::time::Duration;

use e2e::cluster::Cluster;
use e2e::registry::Registry;
use e2e::scenario::{self, container, first_status, wait_pod};
use serde_json::{Value, json};

fn pod(cluster: &Cluster, name: &str, spec: Value) -> Value {
    let mut pod = scenario::pod(cluster, name, spec);
    // busybox sh as PID 1 ignores SIGTERM: keep kills short.
    pod["spec"]["terminationGracePeriodSeconds"] = json!(2);
    pod
}

fn condition<'a>(p: &'a Value, kind: &str) -> &'a Value {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .map_or(&Value::Null, |c| &c["status"])
}

/// The READY column of `kubectl get pod` (`0/1`).
fn ready_column(cluster: &Cluster, name: &str) -> anyhow::Result<String> {
    let out = cluster.kubectl_ok(&["get", "pod", name, "--no-headers"], None)?;
    Ok(out.split_whitespace().nth(1).unwrap_or_default().to_owned())
}

/// Waits for an event of the pod with `reason` whose message starts with
/// `prefix`.
fn wait_event(cluster: &Cluster, pod: &str, reason: &str, prefix: &str) -> anyhow::Result<String> {
    let selector = format!("involvedObject.name={pod}");
    let mut seen = Vec::new();
    let r = e2e::wait_for(
        &format!("a {reason} event of {pod}"),
        Duration::from_secs(90),
        || {
            let list = cluster
                .get_json(&["get", "events", "--field-selector", &selector])
                .ok()?;
            seen = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["reason"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            seen.iter()
                .find(|e| e.starts_with(&format!("{reason}: {prefix}")))
                .cloned()
        },
    );
    r.map_err(|e| anyhow::anyhow!("{e}; events: {seen:#?}"))
}

fn scenarios(cluster: &Cluster, registry: &Registry) -> anyhow::Result<()> {
    let image = registry.busybox();
    // Every exec probe forks in the runtime: keep them few (see the report
    // on forks deadlocking in libcontainer under load).
    let probe_timing = json!({ "periodSeconds": 2, "failureThreshold": 1 });

    let mut gated = container(&image, "exec sleep 3600");
    gated["readinessProbe"] = json!({ "exec": { "command": ["cat", "/tmp/ready"] } });
    merge(&mut gated["readinessProbe"], &probe_timing);
    cluster.apply(&pod(cluster, "gated", json!({ "containers": [gated] })))?;

    let mut live = container(&image, "exec sleep 3600");
    live["livenessProbe"] = json!({ "exec": { "command": ["cat", "/tmp/never"] } });
    merge(&mut live["livenessProbe"], &probe_timing);
    cluster.apply(&pod(cluster, "live", json!({ "containers": [live] })))?;

    let mut web = container(
        &image,
        "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    web["ports"] = json!([{ "name": "http", "containerPort": 8080 }]);
    web["readinessProbe"] = json!({
        "httpGet": { "path": "/index.html", "port": "http",
                     "httpHeaders": [{ "name": "X-Probe", "value": "e2e" }] },
        "periodSeconds": 1,
    });
    web["livenessProbe"] = json!({ "tcpSocket": { "port": 8080 }, "periodSeconds": 2,
                                   "initialDelaySeconds": 1 });
    cluster.apply(&pod(cluster, "web", json!({ "containers": [web] })))?;

    let mut slow = container(&image, "exec sleep 3600");
    slow["startupProbe"] = json!({ "exec": { "command": ["cat", "/tmp/started"] },
                                   "periodSeconds": 2, "failureThreshold": 300 });
    slow["livenessProbe"] = json!({ "exec": { "command": ["cat", "/tmp/started"] },
                                    "periodSeconds": 5 });
    cluster.apply(&pod(cluster, "slow", json!({ "containers": [slow] })))?;

    let mut hook = container(&image, "exec sleep 3600");
    hook["lifecycle"] = json!({ "postStart": { "exec": { "command": ["sh", "-c", "exit 7"] } } });
    cluster.apply(&pod(cluster, "hook", json!({ "containers": [hook] })))?;

    let mut mem = container(&image, "exec sleep 3600");
    mem["volumeMounts"] = json!([{ "name": "cache", "mountPath": "/cache" }]);
    cluster.apply(&pod(
        cluster,
        "mem",
        json!({
            "volumes": [{ "name": "cache", "emptyDir": { "medium": "Memory", "sizeLimit": "16Mi" } }],
            "containers": [mem],
        }),
    ))?;

    // (a) The exec readiness probe fails until /tmp/ready exists.
    let gated_pod = wait_pod(
        cluster,
        "gated",
        "gated Running",
        Duration::from_secs(120),
        |p| first_status(p)["state"]["running"].is_object(),
    )?;
    assert_eq!(first_status(&gated_pod)["ready"], false);
    assert_eq!(first_status(&gated_pod)["started"], true);
    wait_event(
        cluster,
        "gated",
        "Unhealthy",
        "Readiness probe failed: cat: can't open '/tmp/ready'",
    )?;
    let gated_pod = cluster.get_json(&["get", "pod", "gated"])?;
    assert_eq!(condition(&gated_pod, "Ready"), "False");
    assert_eq!(condition(&gated_pod, "ContainersReady"), "False");
    assert_eq!(ready_column(cluster, "gated")?, "0/1");
    // Repeated failures are one Event with a growing count.
    let selector = "involvedObject.name=gated,reason=Unhealthy";
    let events = e2e::wait_for(
        "the Unhealthy event of gated to be counted twice",
        Duration::from_secs(60),
        || {
            let list = cluster
                .get_json(&["get", "events", "--field-selector", selector])
                .ok()?;
            let events: Vec<(String, i64)> = list["items"]
                .as_array()?
                .iter()
                .map(|e| {
                    (
                        e["message"].as_str().unwrap_or_default().to_owned(),
                        e["count"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
            events.iter().any(|(_, c)| *c >= 2).then_some(events)
        },
    )?;
    let (message, _) = events
        .iter()
        .find(|(_, c)| *c >= 2)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        events.iter().filter(|(m, _)| *m == message).count(),
        1,
        "Unhealthy events of gated: {events:?}"
    );
    cluster.kubectl_ok(&["exec", "gated", "--", "touch", "/tmp/ready"], None)?;
    wait_pod(
        cluster,
        "gated",
        "gated Ready after the file appeared",
        Duration::from_secs(60),
        |p| first_status(p)["ready"] == true && condition(p, "Ready") == "True",
    )?;
    assert_eq!(ready_column(cluster, "gated")?, "1/1");

    // (b) A failing liveness probe restarts the container.
    let live_pod = wait_pod(
        cluster,
        "live",
        "live restarted by its liveness probe",
        Duration::from_secs(120),
        |p| first_status(p)["restartCount"].as_i64().unwrap_or(0) >= 1,
    )?;
    assert_eq!(live_pod["status"]["phase"], "Running");
    wait_event(
        cluster,
        "live",
        "Unhealthy",
        "Liveness probe failed: cat: can't open '/tmp/never'",
    )?;
    wait_event(
        cluster,
        "live",
        "Killing",
        "Container app failed liveness probe, will be restarted",
    )?;
    let describe = cluster.kubectl_ok(&["describe", "pod", "live"], None)?;
    assert!(describe.contains("Liveness probe failed"), "{describe}");

    // (c) httpGet readiness through a named port against busybox httpd,
    // with a passing tcpSocket liveness probe.
    let web_pod = wait_pod(
        cluster,
        "web",
        "web Ready through its httpGet probe",
        Duration::from_secs(120),
        |p| first_status(p)["ready"] == true && condition(p, "Ready") == "True",
    )?;
    assert_eq!(first_status(&web_pod)["restartCount"], 0);

    // (f) The startup probe holds started/ready back and gates liveness.
    let slow_pod = wait_pod(
        cluster,
        "slow",
        "slow Running",
        Duration::from_secs(120),
        |p| first_status(p)["state"]["running"].is_object(),
    )?;
    wait_event(
        cluster,
        "slow",
        "Unhealthy",
        "Startup probe failed: cat: can't open '/tmp/started'",
    )?;
    let slow_pod = cluster
        .get_json(&["get", "pod", "slow"])
        .unwrap_or(slow_pod);
    assert_eq!(first_status(&slow_pod)["started"], false);
    assert_eq!(first_status(&slow_pod)["ready"], false);
    assert_eq!(first_status(&slow_pod)["restartCount"], 0);
    cluster.kubectl_ok(&["exec", "slow", "--", "touch", "/tmp/started"], None)?;
    let slow_pod = wait_pod(
        cluster,
        "slow",
        "slow started and ready",
        Duration::from_secs(60),
        |p| first_status(p)["started"] == true && first_status(p)["ready"] == true,
    )?;
    assert_eq!(first_status(&slow_pod)["restartCount"], 0);

    // (d) A failing postStart hook is reported and the container killed.
    wait_event(
        cluster,
        "hook",
        "FailedPostStartHook",
        "Exec lifecycle hook ([sh -c exit 7]) for Container \"app\" in Pod \"hook_default(",
    )?;
    wait_event(cluster, "hook", "Killing", "FailedPostStartHook")?;

    // (e) emptyDir medium Memory is a tmpfs of the given size, unmounted
    // when the pod goes away.
    let mem_pod = wait_pod(
        cluster,
        "mem",
        "mem Running",
        Duration::from_secs(120),
        |p| first_status(p)["state"]["running"].is_object(),
    )?;
    let mounts = cluster.kubectl_ok(&["exec", "mem", "--", "cat", "/proc/mounts"], None)?;
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/cache"))
        .unwrap_or_default();
    assert!(line.starts_with("tmpfs /cache tmpfs"), "{mounts}");
    assert!(line.contains("size=16384k"), "{line}");
    let uid = mem_pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let host_dir = cluster.agent_root().join("pods").join(&uid);
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .contains(&host_dir.display().to_string())
    };
    assert!(mounted(), "no tmpfs under {}", host_dir.display());
    cluster.kubectl_ok(&["delete", "pod", "mem", "--wait=false"], None)?;
    e2e::wait_for(
        "the mem tmpfs to be unmounted",
        Duration::from_secs(90),
        || (!mounted()).then_some(()),
    )?;
    Ok(())
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

#[test]
fn probes_and_lifecycle_hooks_act_like_kubelet() -> anyhow::Result<()> {
    let images = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    scenario::with_cluster(&images, |cluster, registry| scenarios(cluster, registry))
}
