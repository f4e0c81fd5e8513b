//! What the single-cluster scenarios share: a registry and a cluster around a
//! scenario (with the server log on failure), pod manifests and pod polling.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::registry::Registry;

/// Runs `scenario` against a fresh cluster and local registry (images cached
/// under `images`); skipped unless root. On failure the end of the server log
/// is printed. Both are stopped and removed afterwards.
pub fn with_cluster(
    images: &Path,
    scenario: impl FnOnce(&mut Cluster, &Registry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if !crate::is_root() {
        eprintln!("skipping: this test needs root (CI runs it as root)");
        return Ok(());
    }
    let registry = Registry::start(images)?;
    let mut cluster = Cluster::start()?;
    let result = scenario(&mut cluster, &registry);
    if result.is_err() {
        eprintln!(
            "r8s-server log ({}):\n{}",
            cluster.log_path().display(),
            cluster.log_tail(150)
        );
    }
    result
}

/// A Pod in `default` bound to the cluster's node.
pub fn pod(cluster: &Cluster, name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["nodeName"] = json!(cluster.node_name);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": spec,
    })
}

/// A container named `app` running `sh -c script`.
pub fn container(image: &str, script: &str) -> Value {
    json!({ "name": "app", "image": image, "command": ["sh", "-c", script] })
}

pub fn first_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

/// Waits for `pred` on the pod; the error shows the last status seen.
pub fn wait_pod(
    cluster: &Cluster,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    let r = crate::wait_for(what, timeout, || {
        let p = cluster.get_json(&["get", "pod", name]).ok()?;
        let ok = pred(&p);
        last = p.clone();
        ok.then_some(p)
    });
    r.map_err(|e| anyhow::anyhow!("{e}; pod {name}: {:#}", last["status"]))
}

/// Waits (up to a minute) for an Event with `reason` about the cluster's Node; returns it.
pub fn wait_node_event(cluster: &Cluster, reason: &str) -> anyhow::Result<Value> {
    let mut events = Value::Null;
    let selector = format!("reason={reason}");
    crate::wait_for(
        &format!("a {reason} event on the node"),
        Duration::from_secs(60),
        || {
            events = cluster
                .get_json(&[
                    "get",
                    "events",
                    "-n",
                    "default",
                    "--field-selector",
                    &selector,
                ])
                .ok()?;
            events["items"]
                .as_array()?
                .iter()
                .find(|e| {
                    e["involvedObject"]["kind"] == "Node"
                        && e["involvedObject"]["name"] == cluster.node_name.as_str()
                })
                .cloned()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; events: {events:#}"))
}
