//! Node-level disk reclaim end to end (kubelet's `reclaimNodeLevelResources`
//! for a disk signal: `DeleteAllUnusedContainers`, then `DeleteUnusedImages`):
//! r8s-server with its embedded agent and in-process r8s-cri, images from
//! the local test registry. A pod on `pause` runs to completion
//! (restartPolicy Never), so its dead container is the only user of that
//! image; a system-critical pod and a BestEffort pod run `busybox`. The
//! agent restarts with a disk threshold that is always met
//! (`--eviction-hard=nodefs.available<1Pi`). Through CRI: the dead
//! container goes, then the `pause` image only it used, while `busybox` and
//! the critical pod's container stay. Reclaim cannot free a petabyte, so
//! the BestEffort pod is evicted with kubelet's message; the Node has
//! DiskPressure and kubelet's `EvictionThresholdMet` event; the completed
//! pod keeps its Succeeded status and is not started again. Needs root (CI
//! is root).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use cri::proto;
use e2e::cluster::Cluster;
use e2e::registry::Registry;
use e2e::scenario::{self, container, first_status, pod, wait_pod};
use serde_json::{Value, json};

/// kubelet's `io.kubernetes.pod.uid` label on CRI objects.
const POD_UID: &str = "io.kubernetes.pod.uid";

fn of_pod<'a>(containers: &'a [proto::Container], uid: &str) -> Vec<&'a proto::Container> {
    containers
        .iter()
        .filter(|c| c.labels.get(POD_UID).is_some_and(|u| u == uid))
        .collect()
}

/// A short listing for failure messages: id, state, pod.
fn show(containers: &[proto::Container]) -> Vec<String> {
    containers
        .iter()
        .map(|c| {
            let pod = c.labels.get(POD_UID).cloned().unwrap_or_default();
            format!("{} state={} pod={pod}", c.id, c.state)
        })
        .collect()
}

fn condition(node: &Value, kind: &str) -> Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
        .unwrap_or_default()
}

fn reclaim_scenario(cluster: &mut Cluster, registry: &Registry) -> anyhow::Result<()> {
    let busybox = registry.busybox();
    let pause = format!("{}/pause:latest", registry.addr);
    let socket = cluster.cri_socket();
    let running = |p: &Value| first_status(p)["state"]["running"].is_object();

    cluster.apply(&pod(
        cluster,
        "done",
        json!({"restartPolicy": "Never", "containers": [container(&pause, "true")]}),
    ))?;
    let done = wait_pod(
        cluster,
        "done",
        "done Succeeded",
        Duration::from_secs(120),
        |p| p["status"]["phase"] == "Succeeded",
    )?;
    let done_uid = done["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Never evicted (kubelet's IsCriticalPod): its container must survive.
    let mut critical = pod(
        cluster,
        "critical",
        json!({
            "priorityClassName": "system-node-critical",
            "priority": 2_000_001_000,
            "containers": [container(&busybox, "sleep 3600")]
        }),
    );
    critical["metadata"]["namespace"] = json!("kube-system");
    cluster.apply(&critical)?;
    cluster.apply(&pod(
        cluster,
        "victim",
        json!({
            "terminationGracePeriodSeconds": 1,
            "containers": [container(&busybox, "sleep 3600")]
        }),
    ))?;
    let critical_running = |cluster: &Cluster, what: &str| -> anyhow::Result<Value> {
        let mut last = Value::Null;
        e2e::wait_for(what, Duration::from_secs(120), || {
            last = cluster
                .get_json(&["get", "pod", "critical", "-n", "kube-system"])
                .ok()?;
            running(&last).then(|| last.clone())
        })
        .map_err(|e| anyhow::anyhow!("{e}; pod critical: {:#}", last["status"]))
    };
    let before = critical_running(cluster, "critical Running")?;
    let critical_id = first_status(&before)["containerID"].clone();
    wait_pod(
        cluster,
        "victim",
        "victim Running",
        Duration::from_secs(120),
        running,
    )?;

    let containers =
        e2e::cri_query::containers(&socket).context("CRI ListContainers before reclaim")?;
    let dead = of_pod(&containers, &done_uid);
    anyhow::ensure!(
        dead.len() == 1 && dead[0].state == proto::ContainerState::ContainerExited as i32,
        "the completed pod's dead container is in CRI before reclaim: {:?}",
        show(&containers)
    );
    let dead_id = dead[0].id.clone();
    let tags = e2e::cri_query::image_tags(&socket).context("CRI ListImages before reclaim")?;
    anyhow::ensure!(
        tags.contains(&pause) && tags.contains(&busybox),
        "both images pulled before reclaim: {tags:?}"
    );

    // The same node, now with a disk threshold no node can satisfy (image
    // GC of its own stays off: only the eviction manager removes images).
    cluster.restart_with_env(&[
        ("R8S_EVICTION_HARD", "nodefs.available<1Pi"),
        ("R8S_EVICTION_MONITORING_PERIOD", "5s"),
        ("R8S_MINIMUM_IMAGE_TTL_DURATION", "0s"),
    ])?;

    let mut last = Vec::new();
    e2e::wait_for(
        "the completed pod's dead container to be removed",
        Duration::from_secs(120),
        || {
            last = e2e::cri_query::containers(&socket).ok()?;
            of_pod(&last, &done_uid).is_empty().then_some(())
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}; dead container {dead_id}; CRI containers: {:?}",
            show(&last)
        )
    })?;
    let mut tags = Vec::new();
    e2e::wait_for(
        "the pause image, used only by the dead container, to be removed",
        Duration::from_secs(60),
        || {
            tags = e2e::cri_query::image_tags(&socket).ok()?;
            (!tags.contains(&pause)).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; CRI images: {tags:?}"))?;
    anyhow::ensure!(
        tags.contains(&busybox),
        "the image of running pods stays: {tags:?}"
    );

    // Reclaim could not free enough: the BestEffort pod goes, as kubelet.
    let victim = wait_pod(
        cluster,
        "victim",
        "victim evicted",
        Duration::from_secs(120),
        |p| p["status"]["phase"] == "Failed",
    )?;
    anyhow::ensure!(
        victim["status"]["reason"] == "Evicted",
        "{:#}",
        victim["status"]
    );
    let message = victim["status"]["message"].as_str().unwrap_or_default();
    anyhow::ensure!(
        message.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 1Pi, available: "
        ),
        "{message}"
    );

    let node_name = cluster.node_name.clone();
    let mut node = Value::Null;
    e2e::wait_for(
        "DiskPressure=True on the node",
        Duration::from_secs(60),
        || {
            node = cluster.get_json(&["get", "node", &node_name]).ok()?;
            (condition(&node, "DiskPressure")["status"] == "True").then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; node status: {:#}", node["status"]))?;
    let pressure = condition(&node, "DiskPressure");
    anyhow::ensure!(
        pressure["reason"] == "KubeletHasDiskPressure",
        "{pressure:#}"
    );
    let event = scenario::wait_node_event(cluster, "EvictionThresholdMet")?;
    anyhow::ensure!(
        event["type"] == "Warning" && event["message"] == "Attempting to reclaim ephemeral-storage",
        "{event:#}"
    );

    // The critical pod never noticed.
    let after = critical_running(cluster, "critical Running after reclaim")?;
    anyhow::ensure!(
        first_status(&after)["containerID"] == critical_id
            && first_status(&after)["restartCount"] == 0,
        "critical restarted: {:#}",
        after["status"]
    );
    let containers =
        e2e::cri_query::containers(&socket).context("CRI ListContainers after reclaim")?;
    let critical_uid = after["metadata"]["uid"].as_str().unwrap_or_default();
    anyhow::ensure!(
        of_pod(&containers, critical_uid)
            .iter()
            .any(|c| c.state == proto::ContainerState::ContainerRunning as i32),
        "the critical pod's container runs: {:?}",
        show(&containers)
    );

    // The completed pod keeps the status it had, and is never run again
    // (its worker resyncs every 10 s: give it a few chances).
    for _ in 0..15 {
        let containers = e2e::cri_query::containers(&socket).context("CRI ListContainers")?;
        anyhow::ensure!(
            of_pod(&containers, &done_uid).is_empty(),
            "the completed pod was started again: {:?}",
            show(&containers)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let done = cluster.get_json(&["get", "pod", "done"])?;
    let terminated = &first_status(&done)["state"]["terminated"];
    anyhow::ensure!(
        done["status"]["phase"] == "Succeeded"
            && terminated["exitCode"] == 0
            && terminated["reason"] == "Completed"
            && terminated["containerID"] == format!("{}://{dead_id}", cri::RUNTIME_NAME),
        "the completed pod's status changed: {:#}",
        done["status"]
    );
    Ok(())
}

#[test]
fn disk_reclaim_removes_dead_containers_then_their_images_before_evicting() -> anyhow::Result<()> {
    let images = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    scenario::with_cluster(&images, reclaim_scenario)
}
