use serde_json::{Value, json};

use super::*;

fn shape() -> Shape {
    Shape::root("apps/v1", "Deployment")
}

const MAIN: Scope = Scope::Main {
    ignore_status: true,
};

fn mgr<'a>(name: &'a str, subresource: &'a str, time: &'a str) -> Manager<'a> {
    Manager {
        name,
        api_version: "apps/v1",
        subresource,
        time,
    }
}

fn deploy(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}
            }
        }
    })
}

fn managers(obj: &Value) -> Vec<(String, String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                        e["subresource"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn owned(obj: &Value, manager: &str, operation: &str) -> Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["manager"] == manager && e["operation"] == operation)
        })
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

fn entry(name: &str, op: &str, sub: &str) -> (String, String, String) {
    (name.into(), op.into(), sub.into())
}

#[test]
fn create_records_the_creator_without_server_fields() {
    let mut obj = deploy(1);
    obj["status"] = json!({"replicas": 0});
    record_update(
        None,
        &mut obj,
        shape(),
        MAIN,
        &mgr("kubectl-create", "", "2026-01-01T00:00:01Z"),
    );
    assert_eq!(managers(&obj), vec![entry("kubectl-create", "Update", "")]);
    let f = owned(&obj, "kubectl-create", "Update");
    assert_eq!(f["f:metadata"], json!({"f:labels": {".": {}, "f:app": {}}}));
    assert!(f.get("f:status").is_none());
    assert!(f.get("f:apiVersion").is_none());
    assert_eq!(f["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        obj["metadata"]["managedFields"][0]["time"],
        "2026-01-01T00:00:01Z"
    );
}

#[test]
fn updates_take_changed_fields_and_merge_per_manager() {
    let mut v1 = deploy(1);
    record_update(
        None,
        &mut v1,
        shape(),
        MAIN,
        &mgr("kubectl-create", "", "2026-01-01T00:00:01Z"),
    );
    let mut v2 = v1.clone();
    v2["spec"]["replicas"] = json!(3);
    record_update(
        Some(&v1),
        &mut v2,
        shape(),
        MAIN,
        &mgr("kubectl", "scale", "2026-01-01T00:00:02Z"),
    );
    assert_eq!(
        managers(&v2),
        vec![
            entry("kubectl-create", "Update", ""),
            entry("kubectl", "Update", "scale")
        ]
    );
    assert!(
        owned(&v2, "kubectl-create", "Update")["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    // An update that changes nothing keeps entries and times as they were.
    let mut v3 = v2.clone();
    record_update(
        Some(&v2),
        &mut v3,
        shape(),
        MAIN,
        &mgr("kubectl-edit", "", "2026-01-01T00:00:03Z"),
    );
    assert_eq!(v3, v2);
    // Removed fields lose their owners; empty entries are dropped.
    let mut v4 = v2.clone();
    v4["spec"].as_object_mut().unwrap().remove("replicas");
    record_update(
        Some(&v2),
        &mut v4,
        shape(),
        MAIN,
        &mgr("kubectl-edit", "", "2026-01-01T00:00:04Z"),
    );
    assert_eq!(managers(&v4), vec![entry("kubectl-create", "Update", "")]);
}

#[test]
fn reset_clears_managed_fields() {
    let mut v1 = deploy(1);
    record_update(
        None,
        &mut v1,
        shape(),
        MAIN,
        &mgr("kubectl-create", "", "2026-01-01T00:00:01Z"),
    );
    let mut v2 = v1.clone();
    v2["metadata"]["managedFields"] = json!([{}]);
    record_update(
        Some(&v1),
        &mut v2,
        shape(),
        MAIN,
        &mgr("x", "", "2026-01-01T00:00:02Z"),
    );
    assert!(v2["metadata"].get("managedFields").is_none());
}

#[test]
fn apply_conflicts_with_the_scaler_and_force_takes_over() {
    let a = mgr("kubectl", "", "2026-01-01T00:00:01Z");
    let v1 = apply(None, &deploy(1), shape(), MAIN, &a, false).unwrap();
    assert_eq!(managers(&v1), vec![entry("kubectl", "Apply", "")]);
    let mut v2 = v1.clone();
    v2["spec"]["replicas"] = json!(3);
    record_update(
        Some(&v1),
        &mut v2,
        shape(),
        MAIN,
        &mgr("kubectl", "scale", "2026-01-01T00:00:02Z"),
    );
    // Re-applying what is there is no conflict and no change.
    let same = apply(
        Some(&v2),
        &deploy(3),
        shape(),
        MAIN,
        &mgr("kubectl", "", "2026-01-01T00:00:03Z"),
        false,
    )
    .unwrap();
    let err = apply(
        Some(&v2),
        &deploy(1),
        shape(),
        MAIN,
        &mgr("kubectl", "", "2026-01-01T00:00:03Z"),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas"#
    );
    let forced = apply(
        Some(&v2),
        &deploy(1),
        shape(),
        MAIN,
        &mgr("kubectl", "", "2026-01-01T00:00:03Z"),
        true,
    )
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 1);
    assert_eq!(managers(&forced), vec![entry("kubectl", "Apply", "")]);
    assert_eq!(same["spec"]["replicas"], 3);
}

#[test]
fn repeated_apply_changes_nothing() {
    let v1 = apply(
        None,
        &deploy(1),
        shape(),
        MAIN,
        &mgr("kubectl", "", "2026-01-01T00:00:01Z"),
        false,
    )
    .unwrap();
    let v2 = apply(
        Some(&v1),
        &deploy(1),
        shape(),
        MAIN,
        &mgr("kubectl", "", "2026-01-01T00:00:02Z"),
        false,
    )
    .unwrap();
    assert_eq!(v1, v2);
}

#[test]
fn fields_dropped_from_the_configuration_are_removed_unless_shared() {
    let mut config = deploy(1);
    config["metadata"]["labels"]["tier"] = json!("fe");
    let v1 = apply(
        None,
        &config,
        shape(),
        MAIN,
        &mgr("kubectl", "", "2026-01-01T00:00:01Z"),
        false,
    )
    .unwrap();
    // Another manager also sets the same replicas value (co-ownership).
    let v2 = apply(Some(&v1), &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 1}}), shape(), MAIN, &mgr("other", "", "2026-01-01T00:00:02Z"), false).unwrap();
    let mut smaller = deploy(1);
    smaller["spec"].as_object_mut().unwrap().remove("replicas");
    let v3 = apply(
        Some(&v2),
        &smaller,
        shape(),
        MAIN,
        &mgr("kubectl", "", "2026-01-01T00:00:03Z"),
        false,
    )
    .unwrap();
    assert_eq!(v3["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(v3["spec"]["replicas"], 1, "still owned by other");
    let v4 = apply(
        Some(&v3),
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
        shape(),
        MAIN,
        &mgr("other", "", "2026-01-01T00:00:04Z"),
        false,
    )
    .unwrap();
    assert!(v4["spec"].get("replicas").is_none());
}

#[test]
fn first_apply_on_untracked_object_conflicts_with_before_first_apply() {
    let live = deploy(2);
    let err = apply(
        Some(&live),
        &deploy(1),
        shape(),
        MAIN,
        &mgr("kubectl", "", "2026-01-01T00:00:01Z"),
        false,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"conflict with "before-first-apply" using apps/v1: .spec.replicas"#),
        "{err}"
    );
}

#[test]
fn several_conflicts_are_listed_per_manager() {
    let msg = conflict_message(&[
        Conflict {
            manager: r#""b""#.into(),
            field: ".x".into(),
        },
        Conflict {
            manager: r#""a""#.into(),
            field: ".y".into(),
        },
    ]);
    assert_eq!(
        msg,
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .y\nconflicts with \"b\":\n- .x"
    );
}

#[test]
fn status_scope_tracks_only_status() {
    let mut old = deploy(1);
    record_update(
        None,
        &mut old,
        shape(),
        MAIN,
        &mgr("kubectl-create", "", "2026-01-01T00:00:01Z"),
    );
    let mut new = old.clone();
    new["status"] = json!({"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]});
    record_update(
        Some(&old),
        &mut new,
        shape(),
        Scope::Status,
        &mgr("kube-controller-manager", "status", "2026-01-01T00:00:02Z"),
    );
    let f = owned(&new, "kube-controller-manager", "Update");
    assert_eq!(
        f,
        json!({"f:status": {".": {}, "f:conditions": {".": {}, "k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:replicas": {}}})
    );
}

#[test]
fn the_tracked_part_is_seen_in_place_and_the_object_is_left_as_it_was() {
    let mut obj = deploy(2);
    obj["metadata"]["uid"] = json!("u");
    obj["metadata"]["managedFields"] = json!([{"manager": "m"}]);
    obj["status"] = json!({"replicas": 1});
    let before = obj.clone();
    for scope in [
        MAIN,
        Scope::Main {
            ignore_status: false,
        },
        Scope::Status,
    ] {
        let seen = with_tracked(&mut obj, scope, Value::clone);
        assert_eq!(seen, tracked(&before, scope));
        assert_eq!(
            serde_json::to_string(&obj).unwrap(),
            serde_json::to_string(&before).unwrap()
        );
    }
    assert!(with_tracked(&mut json!([1]), MAIN, Value::is_null));
}
