//! Client-side apply's annotation beside server-side apply, for `kubectl`'s
//! own server-side apply only (another field manager opts out, as upstream):
//! - `sync` (upstream's `lastAppliedUpdater`): when `kubectl` applies
//!   server-side to an object that has
//!   `kubectl.kubernetes.io/last-applied-configuration`, the annotation
//!   becomes the applied configuration, so a later client-side `kubectl apply`
//!   computes its three-way patch from what was applied last;
//! - `allowed_conflicts` (upstream's `lastAppliedManager`): moving from
//!   client-side to server-side apply does not conflict on the fields the last
//!   client-side apply set and the object still has as it set them.

use serde_json::Value;

use super::{Conflict, Scope, Shape, path, tracked, walk};

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

/// The conflicts of `kubectl`'s server-side apply to `live` that remain
/// once those on fields its last client-side apply set, to the value `live`
/// still has, are let through (all of them for another manager or without
/// the annotation). None left: the apply goes on as if forced.
pub fn remaining_conflicts(
    live: &Value,
    conflicts: Vec<Conflict>,
    shape: Shape,
    scope: Scope,
    manager: &str,
) -> Vec<Conflict> {
    if manager != SYNCING_MANAGER {
        return conflicts;
    }
    let Some(last) = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    else {
        return conflicts;
    };
    let (last, live) = (tracked(&last, scope), tracked(live, scope));
    let mut allowed = walk::to_set(&last, shape);
    let cmp = walk::compare(Some(&last), Some(&live), shape);
    allowed.subtract(&cmp.changed());
    allowed.subtract(&cmp.removed);
    let allowed: std::collections::HashSet<String> =
        allowed.paths().iter().map(|p| path::display(p)).collect();
    conflicts
        .into_iter()
        .filter(|c| !allowed.contains(&c.field))
        .collect()
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
    fn conflicts_on_what_client_side_apply_set_and_nobody_changed_go_away() {
        let last = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": {ANNOTATION: last.to_string()}}, "data": {"a": "1", "b": "3"}});
        let conflict = |field: &str| Conflict {
            manager: "\"kubectl-client-side-apply\" using v1".into(),
            field: field.into(),
        };
        let shape = Shape::root("v1", "ConfigMap");
        let scope = Scope::Main {
            ignore_status: true,
        };
        let both = vec![conflict(".data.a"), conflict(".data.b")];
        assert_eq!(
            remaining_conflicts(&live, both.clone(), shape, scope, "kubectl"),
            [conflict(".data.b")]
        );
        assert_eq!(
            remaining_conflicts(&live, both.clone(), shape, scope, "helm"),
            both
        );
        let bare = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        assert_eq!(
            remaining_conflicts(&bare, both.clone(), shape, scope, "kubectl"),
            both
        );
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
