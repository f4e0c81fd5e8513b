//! A pod deleted while the node's agent was down (kubelet's
//! `HandlePodCleanups`): its containers kept running; when the agent is back
//! and has listed the node's pods, the pod's containers, sandbox and log
//! directory go. Needs root (CI is root).

use std::path::Path;
use std::time::Duration;

use e2e::cluster::Cluster;
use e2e::registry::Registry;
use e2e::scenario::{self, container, first_status, pod, wait_pod};

fn of_pod(cluster: &Cluster, uid: &str) -> anyhow::Result<usize> {
    let label = "io.kubernetes.pod.uid";
    let containers = e2e::cri_query::containers(&cluster.cri_socket())?;
    Ok(containers
        .iter()
        .filter(|c| c.labels.get(label).map(String::as_str) == Some(uid))
        .count())
}

fn scenario(cluster: &mut Cluster, registry: &Registry) -> anyhow::Result<()> {
    cluster.apply(&pod(
        cluster,
        "leftover",
        serde_json::json!({ "containers": [container(&registry.busybox(), "echo here; exec sleep 3600")] }),
    ))?;
    let running = wait_pod(
        cluster,
        "leftover",
        "leftover Running",
        Duration::from_secs(90),
        |p| first_status(p)["state"]["running"].is_object(),
    )?;
    let uid = running["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let logs = cluster
        .path()
        .join("logs")
        .join(format!("default_leftover_{uid}"));
    assert!(logs.is_dir(), "{}", logs.display());

    // The pod goes from the API while no agent runs (its containers stay).
    cluster.restart_with_env(&[("R8S_DISABLE_AGENT", "true")])?;
    cluster.kubectl_ok(
        &["delete", "pod", "leftover", "--force", "--grace-period=0"],
        None,
    )?;
    cluster.extra_env.retain(|(k, _)| k != "R8S_DISABLE_AGENT");
    cluster.stop()?;
    cluster.spawn()?;

    let mut left = usize::MAX;
    e2e::wait_for(
        "the deleted pod's containers to go",
        Duration::from_secs(90),
        || {
            left = of_pod(cluster, &uid).ok()?;
            (left == 0).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; {left} container(s) of {uid} left"))?;
    let sandboxes = e2e::cri_query::pod_sandboxes(&cluster.cri_socket(), "leftover")?;
    assert!(sandboxes.is_empty(), "sandboxes left: {sandboxes:?}");
    e2e::wait_for("its log directory to go", Duration::from_secs(30), || {
        (!logs.exists()).then_some(())
    })?;
    Ok(())
}

#[test]
fn a_pod_deleted_while_the_agent_was_down_is_cleaned_up() -> anyhow::Result<()> {
    let images = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    scenario::with_cluster(&images, scenario)
}
