//! Field ownership and server-side apply with real kubectl against a real
//! r8s-server: managedFields after create/apply/patch/scale, apply
//! conflicts as kubectl prints them, `--force-conflicts`, and removal of
//! fields dropped from the applied manifest.

mod common;

use common::{Server, wait_for};
use serde_json::Value;

fn deployment(replicas: u32, extra_label: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
{extra_label}spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: main
        image: nginx:1.27
        ports:
        - containerPort: 80
"#
    )
}

fn get_json(s: &Server, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&s.ok(&all)).expect("kubectl -o json prints JSON")
}

/// `(manager, operation, subresource)` of every managedFields entry.
fn managers(obj: &Value) -> Vec<(String, String, String)> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    (s("manager"), s("operation"), s("subresource"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn entry(m: &str, op: &str, sub: &str) -> (String, String, String) {
    (m.into(), op.into(), sub.into())
}

fn rv(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

#[test]
fn apply_conflicts_force_and_removal_with_kubectl() {
    let s = Server::start();
    let v = s.validate();
    let apply = ["apply", v, "--server-side", "-f", "-"];
    s.ok_stdin(&apply, &deployment(1, "    tier: fe\n"));
    let d = get_json(&s, &["deploy", "web"]);
    assert_eq!(managers(&d)[0], entry("kubectl", "Apply", ""));
    let fields = &d["metadata"]["managedFields"][0];
    assert_eq!(fields["apiVersion"], "apps/v1");
    assert_eq!(fields["fieldsType"], "FieldsV1");
    assert!(fields["time"].is_string());
    assert_eq!(
        fields["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"main\"}"]
            ["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["f:containerPort"],
        serde_json::json!({})
    );

    // kubectl hides managedFields unless asked; the server sends them.
    let yaml = s.ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(!yaml.contains("managedFields"));
    let raw = s.ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web",
    ]);
    assert!(raw.contains("\"managedFields\""));

    s.ok(&["scale", "deploy", "web", "--replicas=3"]);
    let d = get_json(&s, &["deploy", "web"]);
    let scaler = managers(&d)
        .into_iter()
        .find(|(_, op, sub)| op == "Update" && sub == "scale")
        .unwrap_or_else(|| panic!("no scale entry in {:?}", managers(&d)))
        .0;
    assert!(scaler.starts_with("kubectl"), "{scaler}");

    let out = s.kubectl_stdin(&apply, &deployment(1, "    tier: fe\n"));
    assert!(!out.status.success(), "the apply must conflict");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "error: Apply failed with 1 conflict: conflict with \"{scaler}\" with subresource \"scale\" using apps/v1: .spec.replicas\n\
Please review the fields above--they currently have other managers. Here\n\
are the ways you can resolve this warning:\n\
* If you intend to manage all of these fields, please re-run the apply\n  \
command with the `--force-conflicts` flag.\n\
* If you do not intend to manage all of the fields, please edit your\n  \
manifest to remove references to the fields that should keep their\n  \
current managers.\n\
* You may co-own fields by updating your manifest to match the existing\n  \
value; in this case, you'll become the manager if the other manager(s)\n  \
stop managing the field (remove it from their configuration).\n\
See https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts\n"
    );
    assert_eq!(stderr, expected);
    assert_eq!(get_json(&s, &["deploy", "web"])["spec"]["replicas"], 3);

    s.ok_stdin(
        &["apply", v, "--server-side", "--force-conflicts", "-f", "-"],
        &deployment(1, "    tier: fe\n"),
    );
    let d = get_json(&s, &["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 1);
    assert!(
        !managers(&d).iter().any(|(_, _, sub)| sub == "scale"),
        "the scaler lost its only field: {:?}",
        managers(&d)
    );

    // A label dropped from the manifest is removed from the object.
    s.ok_stdin(&apply, &deployment(1, ""));
    let d = get_json(&s, &["deploy", "web"]);
    assert_eq!(d["metadata"]["labels"], serde_json::json!({"app": "web"}));

    // In-process controllers own what they write.
    wait_for(30, "the controller's entries", || {
        let rs = get_json(&s, &["rs", "-l", "app=web"]);
        let d = get_json(&s, &["deploy", "web"]);
        rs["items"]
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(|rs| {
                managers(rs).contains(&entry("kube-controller-manager", "Update", ""))
            })
            && managers(&d).contains(&entry("kube-controller-manager", "Update", "status"))
    });
}

#[test]
fn create_patch_and_edit_like_updates_record_their_managers() {
    let s = Server::start();
    let v = s.validate();
    let cm =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    s.ok_stdin(&["create", v, "-f", "-"], cm);
    let obj = get_json(&s, &["cm", "cfg"]);
    assert_eq!(managers(&obj), vec![entry("kubectl-create", "Update", "")]);
    assert_eq!(
        obj["metadata"]["managedFields"][0]["fieldsV1"],
        serde_json::json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}})
    );

    s.ok(&[
        "patch",
        "cm",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"9","c":"3"}}"#,
    ]);
    let obj = get_json(&s, &["cm", "cfg"]);
    assert_eq!(
        managers(&obj),
        vec![
            entry("kubectl-create", "Update", ""),
            entry("kubectl-patch", "Update", "")
        ]
    );
    assert_eq!(
        obj["metadata"]["managedFields"][0]["fieldsV1"],
        serde_json::json!({"f:data": {".": {}, "f:b": {}}})
    );
    assert_eq!(
        obj["metadata"]["managedFields"][1]["fieldsV1"],
        serde_json::json!({"f:data": {"f:a": {}, "f:c": {}}})
    );

    // Applying a value another manager set conflicts; the same value is shared.
    let applied = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  c: \"3\"\n";
    s.ok_stdin(&["apply", v, "--server-side", "-f", "-"], applied);
    // The same apply again changes nothing, not even the resourceVersion.
    let before = rv(&get_json(&s, &["cm", "cfg"]));
    s.ok_stdin(&["apply", v, "--server-side", "-f", "-"], applied);
    assert_eq!(rv(&get_json(&s, &["cm", "cfg"])), before);
    let err = {
        let out = s.kubectl_stdin(
            &["apply", v, "--server-side", "-f", "-"],
            &applied.replace("c: \"3\"", "c: \"4\""),
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        err.starts_with(
            "error: Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .data.c\n"
        ),
        "{err}"
    );

    // Removing a field takes it from its owners; clearing with [{}] drops all.
    s.ok(&[
        "patch",
        "cm",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/b"}]"#,
    ]);
    let obj = get_json(&s, &["cm", "cfg"]);
    let create = obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["manager"] == "kubectl-create"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        create["fieldsV1"],
        serde_json::json!({"f:data": {}}),
        "kubectl-create keeps only the map itself"
    );
    s.ok(&[
        "patch",
        "cm",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"metadata":{"managedFields":[{}]}}"#,
    ]);
    assert!(managers(&get_json(&s, &["cm", "cfg"])).is_empty());
}

#[test]
fn more_than_ten_update_managers_merge_the_oldest_into_ancient_changes() {
    let s = Server::start();
    s.ok(&["create", "configmap", "many", "--from-literal=base=1"]);
    for i in 0..10 {
        let patch = format!(r#"{{"data":{{"k{i:02}":"v"}}}}"#);
        let manager = format!("m{i:02}");
        s.ok(&[
            "patch",
            "cm",
            "many",
            "--type=merge",
            "-p",
            &patch,
            "--field-manager",
            &manager,
        ]);
    }
    let obj = get_json(&s, &["cm", "many"]);
    let mut names: Vec<String> = managers(&obj).into_iter().map(|(m, _, _)| m).collect();
    names.sort();
    let mut want: Vec<String> = (1..10).map(|i| format!("m{i:02}")).collect();
    want.push("ancient-changes".into());
    want.sort();
    assert_eq!(names, want, "{obj:#}");
    let ancient = obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["manager"] == "ancient-changes"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ancient["operation"], "Update");
    assert_eq!(ancient["apiVersion"], "v1");
    assert_eq!(
        ancient["fieldsV1"],
        serde_json::json!({"f:data": {".": {}, "f:base": {}, "f:k00": {}}}),
        "kubectl-create's and m00's fields"
    );
}

#[test]
fn kubectl_server_side_apply_keeps_the_client_side_annotation_in_step() {
    let s = Server::start();
    let cm = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: csa\ndata:\n{data}")
    };
    s.ok_stdin(&["apply", "-f", "-"], &cm("  a: \"1\"\n"));
    s.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &cm("  a: \"1\"\n  c: \"3\"\n"),
    );
    let obj = get_json(&s, &["cm", "csa"]);
    let annotation =
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("the annotation stays");
    let last: Value = serde_json::from_str(annotation).expect("JSON");
    assert_eq!(
        last["data"],
        serde_json::json!({"a": "1", "c": "3"}),
        "{annotation}"
    );
    // Back to client-side apply without `c`: its three-way patch now removes it.
    s.ok_stdin(&["apply", "-f", "-"], &cm("  a: \"1\"\n"));
    let obj = get_json(&s, &["cm", "csa"]);
    assert_eq!(obj["data"], serde_json::json!({"a": "1"}), "{obj:#}");
}

#[test]
fn moving_from_client_side_to_server_side_apply_takes_over_what_was_applied() {
    let s = Server::start();
    let cm = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: move\ndata:\n{data}")
    };
    s.ok_stdin(&["apply", "-f", "-"], &cm("  a: \"1\"\n  b: \"2\"\n"));
    // `b` changed by someone else since: that one stays a conflict.
    s.ok(&[
        "patch",
        "cm",
        "move",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"3"}}"#,
        "--field-manager",
        "other",
    ]);
    let ssa = ["apply", "--server-side", "-f", "-"];
    let out = s.kubectl_stdin(&ssa, &cm("  a: \"10\"\n  b: \"20\"\n"));
    assert!(!out.status.success(), "b must still conflict");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conflict with \"other\"")
            && err.contains(".data.b")
            && !err.contains(".data.a"),
        "{err}"
    );
    // What the last client-side apply set and nobody changed moves over.
    s.ok_stdin(&ssa, &cm("  a: \"10\"\n  b: \"3\"\n"));
    let obj = get_json(&s, &["cm", "move"]);
    assert_eq!(obj["data"], serde_json::json!({"a": "10", "b": "3"}));
    let kubectl = obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["manager"] == "kubectl" && e["operation"] == "Apply")
        })
        .cloned()
        .unwrap_or_default();
    assert!(
        kubectl["fieldsV1"]["f:data"]["f:a"].is_object(),
        "kubectl's apply owns data.a: {obj:#}"
    );
}
