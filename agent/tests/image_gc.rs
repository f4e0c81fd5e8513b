//! Image garbage collection end to end: r8s-server with its embedded agent
//! and in-process r8s-cri, images from the local test registry. Two pods
//! run, one on `busybox`, one on `pause` (a distinct image over the same
//! layer); the second is deleted. The agent restarts with image GC that
//! always finds the disk too full (`--image-gc-high-threshold=1`,
//! `--image-gc-low-threshold=0`, no minimum age, a 1 s period): CRI
//! `ListImages` must lose the unused `pause` image and keep `busybox`, the
//! running pod keeps its container, and the shortfall is a
//! `FreeDiskSpaceFailed` Warning on the Node. Needs root (CI is root).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use e2e::cluster::Cluster;
use e2e::registry::Registry;
use e2e::scenario::{self, container, first_status, pod, wait_pod};

fn has_image(tags: &[String], image: &str) -> bool {
    tags.iter().any(|t| t == image)
}

fn gc_scenario(cluster: &mut Cluster, registry: &Registry) -> anyhow::Result<()> {
    let busybox = registry.busybox();
    let pause = format!("{}/pause:latest", registry.addr);
    cluster.apply(&pod(
        cluster,
        "keep",
        serde_json::json!({"containers": [container(&busybox, "sleep 3600")]}),
    ))?;
    cluster.apply(&pod(
        cluster,
        "gone",
        serde_json::json!({
            "terminationGracePeriodSeconds": 1,
            "containers": [container(&pause, "sleep 3600")]
        }),
    ))?;
    let running = |p: &serde_json::Value| first_status(p)["state"]["running"].is_object();
    let keep = wait_pod(
        cluster,
        "keep",
        "keep Running",
        Duration::from_secs(120),
        running,
    )?;
    wait_pod(
        cluster,
        "gone",
        "gone Running",
        Duration::from_secs(120),
        running,
    )?;
    let keep_id = first_status(&keep)["containerID"].clone();
    cluster.kubectl_ok(&["delete", "pod", "gone", "--timeout=90s"], None)?;
    let socket = cluster.cri_socket();
    let tags = e2e::cri_query::image_tags(&socket).context("CRI ListImages before GC")?;
    anyhow::ensure!(
        has_image(&tags, &pause) && has_image(&tags, &busybox),
        "both images pulled before GC: {tags:?}"
    );

    // The same node, now with image GC that always wants space.
    cluster.restart_with_env(&[
        ("R8S_IMAGE_GC_HIGH_THRESHOLD", "1"),
        ("R8S_IMAGE_GC_LOW_THRESHOLD", "0"),
        ("R8S_MINIMUM_IMAGE_TTL_DURATION", "0s"),
        ("R8S_IMAGE_GC_PERIOD", "1s"),
    ])?;

    let mut last = Vec::new();
    e2e::wait_for(
        "the unused pause image to be removed",
        Duration::from_secs(120),
        || {
            last = e2e::cri_query::image_tags(&socket).ok()?;
            (!has_image(&last, &pause)).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; CRI images: {last:?}"))?;
    let tags = e2e::cri_query::image_tags(&socket).context("CRI ListImages after GC")?;
    anyhow::ensure!(
        has_image(&tags, &busybox),
        "the image of the running pod must stay: {tags:?}"
    );

    // Usage can never get down to 0%: the node says so.
    let event = scenario::wait_node_event(cluster, "FreeDiskSpaceFailed")?;
    anyhow::ensure!(event["type"] == "Warning", "{event:#}");
    let message = event["message"].as_str().unwrap_or_default();
    anyhow::ensure!(
        message
            .starts_with("Failed to garbage collect required amount of images. Attempted to free ")
            && message.ends_with(" bytes eligible to free."),
        "{message}"
    );

    // The pod on the kept image never noticed.
    let keep = wait_pod(
        cluster,
        "keep",
        "keep Running after GC",
        Duration::from_secs(60),
        running,
    )?;
    anyhow::ensure!(
        first_status(&keep)["containerID"] == keep_id && first_status(&keep)["restartCount"] == 0,
        "keep restarted: {:#}",
        keep["status"]
    );
    Ok(())
}

#[test]
fn unused_images_are_garbage_collected_and_used_ones_stay() -> anyhow::Result<()> {
    let images = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    scenario::with_cluster(&images, gc_scenario)
}
