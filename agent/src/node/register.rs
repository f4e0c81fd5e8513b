//! Node registration as kubelet's `tryRegisterWithAPIServer`: create the
//! Node, or reconcile kubelet's default labels on the one that exists.

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};

use super::NodeError;
use super::object::reconcile_default_labels;

/// The merge patch turning `before` labels into `after` (null deletes).
fn labels_patch(before: &Node, after: &Node) -> Value {
    let empty = Default::default();
    let old = before.metadata.labels.as_ref().unwrap_or(&empty);
    let new = after.metadata.labels.as_ref().unwrap_or(&empty);
    let mut labels = Map::new();
    for (k, v) in new {
        if old.get(k) != Some(v) {
            labels.insert(k.clone(), Value::String(v.clone()));
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        labels.insert(k.clone(), Value::Null);
    }
    json!({ "metadata": { "labels": labels } })
}

/// Creates `desired`, or brings an existing Node's default labels in line.
/// Returns the Node as stored.
pub async fn register_node(api: &Api<Node>, desired: &Node) -> Result<Node, NodeError> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), desired).await {
        Ok(node) => {
            tracing::info!(node = %name, "successfully registered node");
            return Ok(node);
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        Err(source) => {
            return Err(NodeError::Api {
                step: "create node",
                source,
            });
        }
    }
    let existing = api.get(&name).await.map_err(|source| NodeError::Api {
        step: "get node",
        source,
    })?;
    let mut reconciled = existing.clone();
    if !reconcile_default_labels(desired, &mut reconciled) {
        tracing::info!(node = %name, "node was previously registered");
        return Ok(existing);
    }
    let patch = labels_patch(&existing, &reconciled);
    let node = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| NodeError::Api {
            step: "patch node labels",
            source,
        })?;
    tracing::info!(node = %name, "node was previously registered, labels reconciled");
    Ok(node)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn labels_patch_sets_changed_and_nulls_removed() {
        let mut a = Node::default();
        a.metadata.labels = Some(BTreeMap::from([
            ("x".to_owned(), "1".to_owned()),
            ("gone".to_owned(), "1".to_owned()),
            ("same".to_owned(), "1".to_owned()),
        ]));
        let mut b = Node::default();
        b.metadata.labels = Some(BTreeMap::from([
            ("x".to_owned(), "2".to_owned()),
            ("same".to_owned(), "1".to_owned()),
        ]));
        assert_eq!(
            labels_patch(&a, &b),
            json!({"metadata": {"labels": {"x": "2", "gone": null}}})
        );
    }
}

#[cfg(test)]
mod api_tests {
    use std::sync::{Arc, Mutex};

    use k8s_openapi::api::core::v1::Node;
    use kube::Api;

    use super::register_node;
    use crate::node::fake_api;

    fn node(labels: &[(&str, &str)]) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("node-1".to_owned());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        n
    }

    #[tokio::test]
    async fn new_node_is_created() {
        let state = Arc::new(Mutex::new(fake_api::State::default()));
        let api: Api<Node> = Api::all(fake_api::client(state.clone()));
        let stored = register_node(&api, &node(&[("kubernetes.io/os", "linux")]))
            .await
            .unwrap();
        assert_eq!(stored.metadata.uid.as_deref(), Some("uid-node-1"));
        assert_eq!(state.lock().unwrap().requests, ["POST /api/v1/nodes"]);
    }

    #[tokio::test]
    async fn existing_node_gets_default_labels_reconciled() {
        let state = Arc::new(Mutex::new(fake_api::State::default()));
        let api: Api<Node> = Api::all(fake_api::client(state.clone()));
        register_node(
            &api,
            &node(&[("kubernetes.io/arch", "arm64"), ("team", "a")]),
        )
        .await
        .unwrap();
        let stored = register_node(&api, &node(&[("kubernetes.io/arch", "amd64")]))
            .await
            .unwrap();
        let labels = stored.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["team"], "a");
        assert_eq!(
            state.lock().unwrap().requests[1..],
            [
                "POST /api/v1/nodes",
                "GET /api/v1/nodes/node-1",
                "PATCH /api/v1/nodes/node-1"
            ]
        );
    }
}
