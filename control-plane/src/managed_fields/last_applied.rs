//! Keeps client-side apply's annotation in step with server-side apply
//! (upstream's `lastAppliedUpdater`): when `kubectl` applies server-side
//! to an object that has `kubectl.kubernetes.io/last-applied-configuration`,
//! the annotation becomes the applied configuration, so a later client-side
//! `kubectl apply` computes its three-way patch from what was applied last.

use serde_json::Value;

pub const ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Only kubectl's own server-side apply syncs it; another field manager
/// opts out, as upstream.
const SYNCING_MANAGER: &str = "kubectl";

/// Rewrites the annotation of `merged` (the object after the apply) from
/// `applied` (the applied configuration) when `manager` is kubectl's.
pub fn sync(merged: &mut Value, applied: &Value, manager: &str) {
    if manager != SYNCING_MANAGER {
        return;
    }
    let Some(annotations) = merged
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if !annotations.contains_key(ANNOTATION) {
        return;
    }
    let mut config = applied.clone();
    if let Some(own) = config
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        own.remove(ANNOTATION);
    }
    annotations.insert(ANNOTATION.into(), Value::String(config.to_string()));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kubectl_rewrites_an_existing_annotation_from_the_applied_config() {
        let mut merged = json!({"metadata": {"name": "c", "annotations": {ANNOTATION: "{\"old\":1}\n", "x": "y"}}, "data": {"a": "1", "b": "2"}});
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": {ANNOTATION: "stale", "x": "y"}}, "data": {"a": "1"}});
        sync(&mut merged, &applied, "kubectl");
        let text = merged["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .unwrap();
        let synced: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            synced,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": {"x": "y"}}, "data": {"a": "1"}})
        );
        assert_eq!(merged["metadata"]["annotations"]["x"], "y");
    }

    #[test]
    fn other_managers_and_objects_without_the_annotation_are_left_alone() {
        let applied = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        let mut merged = json!({"metadata": {"name": "c", "annotations": {ANNOTATION: "old"}}});
        sync(&mut merged, &applied, "helm");
        assert_eq!(merged["metadata"]["annotations"][ANNOTATION], "old");
        let mut bare = json!({"metadata": {"name": "c"}});
        sync(&mut bare, &applied, "kubectl");
        assert_eq!(bare, json!({"metadata": {"name": "c"}}));
    }
}
