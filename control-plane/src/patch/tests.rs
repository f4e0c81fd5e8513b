use serde_json::{Value, json};

use super::*;

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "fe"},
                     "finalizers": ["a", "b"]},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "nginx:1.25",
                         "env": [{"name": "A", "value": "1"}, {"name": "X", "value": "2"}],
                         "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                        {"name": "side", "image": "busybox", "command": ["sleep", "3600"]}
                    ],
                    "tolerations": [{"key": "k", "operator": "Exists"}],
                    "volumes": [{"name": "v", "emptyDir": {}}]
                }
            }
        }
    })
}

fn smp(original: &Value, patch: Value) -> Value {
    strategic_merge_patch(original, &patch, "apps/v1", "Deployment").expect("patch applies")
}

#[test]
fn apply_changing_one_image_keeps_the_other_container() {
    let out = smp(
        &deployment(),
        json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
               "spec": {"template": {"spec": {
                   "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
                   "containers": [{"image": "nginx:1.26", "name": "app"}]}}}}),
    );
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 2);
    assert_eq!(containers[0]["name"], "app");
    assert_eq!(containers[0]["image"], "nginx:1.26");
    assert_eq!(containers[0]["env"][1]["name"], "X");
    assert_eq!(
        containers[1],
        deployment()["spec"]["template"]["spec"]["containers"][1]
    );
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{}\n"
    );
    assert!(!out.to_string().contains("$setElementOrder"));
}

#[test]
fn delete_directive_removes_one_env_var() {
    let out = smp(
        &deployment(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
            "containers": [{"$setElementOrder/env": [{"name": "A"}],
                            "env": [{"$patch": "delete", "name": "X"}], "name": "app"}]}}}}),
    );
    let app = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(app["env"], json!([{"name": "A", "value": "1"}]));
    assert_eq!(app["image"], "nginx:1.25");
    assert!(!out.to_string().contains("$patch"));
}

#[test]
fn null_removes_a_label() {
    let out = smp(
        &deployment(),
        json!({"metadata": {"labels": {"tier": null, "new": "x"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
}

#[test]
fn set_element_order_reorders_and_adds() {
    let out = smp(
        &deployment(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "extra"}, {"name": "app"}],
            "containers": [{"name": "extra", "image": "redis"}]}}}}),
    );
    let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["side", "extra", "app"]);
}

#[test]
fn new_list_item_without_order_goes_first_as_upstream() {
    let out = smp(
        &deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "extra", "image": "redis"}]}}}}),
    );
    let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // mergeSortedSlice puts patch items the live list does not know first.
    assert_eq!(names, ["extra", "app", "side"]);
}

#[test]
fn lists_without_merge_key_are_replaced() {
    let out = smp(
        &deployment(),
        json!({"spec": {"template": {"spec": {"tolerations": [{"key": "other", "operator": "Exists"}],
            "containers": [{"name": "side", "command": ["sh"]}]}}}}),
    );
    let spec = &out["spec"]["template"]["spec"];
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "other", "operator": "Exists"}])
    );
    assert_eq!(spec["containers"][1]["command"], json!(["sh"]));
}

#[test]
fn finalizers_merge_and_delete_as_primitives() {
    let out = smp(
        &deployment(),
        json!({"metadata": {"finalizers": ["c", "a"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    let out = smp(
        &deployment(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    assert!(
        out["metadata"]
            .get("$deleteFromPrimitiveList/finalizers")
            .is_none()
    );
}

#[test]
fn retain_keys_clears_the_other_strategy_fields() {
    let out = smp(
        &deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    let out = smp(
        &deployment(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/volumes": [{"name": "v"}],
            "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "v"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "v", "configMap": {"name": "cm"}}])
    );
}

#[test]
fn retain_keys_refuses_fields_outside_the_list() {
    let err = strategic_merge_patch(
        &deployment(),
        &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}}),
        "apps/v1",
        "Deployment",
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::BadPatch(m) if m == "invalid patch format of retainKeys"));
}

#[test]
fn replace_directives_on_maps_and_lists() {
    let out = smp(
        &deployment(),
        json!({"spec": {"selector": {"$patch": "replace", "matchLabels": {"x": "y"}}}}),
    );
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"x": "y"}}));
    let out = smp(
        &deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "i"}, {"$patch": "replace"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "only", "image": "i"}])
    );
    let out = smp(
        &deployment(),
        json!({"spec": {"strategy": {"$patch": "delete"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({}));
}

#[test]
fn adding_a_port_to_a_service() {
    let svc = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    });
    let out = strategic_merge_patch(
        &svc,
        &json!({"spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}],
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}]}}),
        "v1",
        "Service",
    )
    .unwrap();
    assert_eq!(
        out["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
        ])
    );
    assert_eq!(out["spec"]["clusterIP"], "10.96.0.10");
}

#[test]
fn container_ports_merge_by_container_port() {
    let out = smp(
        &deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 9090}]}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 9090}])
    );
}

#[test]
fn pod_status_conditions_merge_by_type() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
    let out = strategic_merge_patch(
        &pod,
        &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        "v1",
        "Pod",
    )
    .unwrap();
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
    );
}

#[test]
fn unknown_kinds_replace_lists() {
    let original = json!({"spec": {"items": [{"name": "a"}, {"name": "b"}], "keep": 1}});
    let out = strategic_merge_patch(
        &original,
        &json!({"spec": {"items": [{"name": "c"}]}}),
        "example.com/v1",
        "Foo",
    )
    .unwrap();
    assert_eq!(out, json!({"spec": {"items": [{"name": "c"}], "keep": 1}}));
}

#[test]
fn malformed_patches_are_refused() {
    let d = deployment();
    assert!(matches!(
        strategic_merge_patch(&d, &json!([1]), "apps/v1", "Deployment"),
        Err(PatchError::BadPatch(m)) if m.contains("cannot unmarshal array")
    ));
    assert!(matches!(
        strategic_merge_patch(&d, &json!({"spec": {"$patch": "bogus"}}), "apps/v1", "Deployment"),
        Err(PatchError::Failed(m)) if m.starts_with("unknown patch type: bogus")
    ));
    assert!(matches!(
        strategic_merge_patch(
            &d,
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
            "apps/v1",
            "Deployment"
        ),
        Err(PatchError::Failed(m)) if m == "map: map[image:x] does not contain declared merge key: name"
    ));
    assert!(matches!(
        strategic_merge_patch(&d, &json!({"metadata": {"$setElementOrder/finalizers": "x"}}), "apps/v1", "Deployment"),
        Err(PatchError::BadPatch(m)) if m == "invalid patch format of setElementOrder list"
    ));
}

#[test]
fn merge_and_json_patches_still_work() {
    let d = deployment();
    let out = merge_patch(&d, &json!({"spec": {"replicas": 5, "strategy": null}}));
    assert_eq!(out["spec"]["replicas"], 5);
    assert!(out["spec"].get("strategy").is_none());
    let out = json_patch(
        &d,
        &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
    )
    .unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    assert!(
        json_patch(
            &d,
            &json!([{"op": "test", "path": "/spec/replicas", "value": 9}])
        )
        .is_err()
    );
}

#[test]
fn edit_removing_a_container_and_scaling() {
    // The two-way patch `kubectl edit` sends after deleting `side` and
    // changing replicas.
    let out = smp(
        &deployment(),
        json!({"spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"$patch": "delete", "name": "side"}]}}}}),
    );
    assert_eq!(out["spec"]["replicas"], 3);
    let containers = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(
        containers[0],
        deployment()["spec"]["template"]["spec"]["containers"][0]
    );
}

#[test]
fn out_of_order_patch_list_is_refused() {
    let err = strategic_merge_patch(
        &deployment(),
        &json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
            "containers": [{"name": "side", "image": "a"}, {"name": "app", "image": "b"}]}}}}),
        "apps/v1",
        "Deployment",
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::Failed(m) if m.starts_with("The order in patch list:")));
}

#[test]
fn patch_types_from_content_type() {
    assert_eq!(
        PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
        Some(PatchType::Strategic)
    );
    assert_eq!(
        PatchType::from_content_type("application/apply-patch+yaml"),
        Some(PatchType::Apply)
    );
    assert_eq!(PatchType::from_content_type("application/json"), None);
    assert_eq!(
        PatchType::Merge.media_type(),
        "application/merge-patch+json"
    );
}

#[test]
fn new_lists_are_taken_even_without_merge_keys() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}});
    let out = strategic_merge_patch(
        &pod,
        &json!({"spec": {"containers": [{"image": "x"}]}}),
        "v1",
        "Pod",
    )
    .unwrap();
    assert_eq!(out["spec"]["containers"], json!([{"image": "x"}]));
}
