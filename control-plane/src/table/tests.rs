use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;
use crate::resources::{find, find_kind};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-01T01:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn names(resource: &ResourceType) -> Vec<(String, i64)> {
    column_definitions(resource)
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn pods() -> &'static ResourceType {
    find("", "v1", "pods").unwrap()
}

fn pod(status: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]},
        "status": status,
    })
}

#[test]
fn pod_columns_match_upstream() {
    let cols = column_definitions(pods());
    assert_eq!(
        names(pods()),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1),
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    assert_eq!(cols[0]["format"], "name");
    assert_eq!(cols[0]["type"], "string");
    assert!(
        cols[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("Name must be unique within a namespace.")
    );
    assert_eq!(cols[3]["type"], "string");
    assert!(!cols[5]["description"].as_str().unwrap().is_empty());
}

#[test]
fn running_pod_row() {
    let p = pod(json!({
        "phase": "Running",
        "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2024-01-01T00:00:01Z"}}},
            {"name": "b", "ready": true, "restartCount": 3, "state": {"running": {}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:55:00Z"}}}
        ]
    }));
    assert_eq!(
        row_cells(pods(), &p, now()),
        vec![
            json!("web"),
            json!("2/2"),
            json!("Running"),
            json!("3 (5m ago)"),
            json!("60m"),
            json!("10.0.0.5"),
            json!("node-1"),
            json!("<none>"),
            json!("<none>"),
        ]
    );
    assert_eq!(row_conditions(pods(), &p), None);
}

#[test]
fn crash_looping_pod_shows_waiting_reason() {
    let p = pod(json!({
        "phase": "Running",
        "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": false, "restartCount": 7, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:58:00Z"}}}
        ]
    }));
    let cells = row_cells(pods(), &p, now());
    assert_eq!(cells[1], "1/2");
    assert_eq!(cells[2], "CrashLoopBackOff");
    assert_eq!(cells[3], "7 (2m ago)");
    assert_eq!(cells[5], "<none>");
}

#[test]
fn completed_pod_has_completed_condition() {
    let p = pod(json!({
        "phase": "Succeeded",
        "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]
    }));
    let cells = row_cells(pods(), &p, now());
    assert_eq!(cells[1], "0/2");
    assert_eq!(cells[2], "Completed");
    assert_eq!(cells[3], "0");
    assert_eq!(
        row_conditions(pods(), &p).unwrap()[0]["reason"],
        json!("Succeeded")
    );
}

#[test]
fn initializing_pod_shows_init_progress() {
    let mut p = pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [
            {"name": "init", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ],
        "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ]
    }));
    p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    let cells = row_cells(pods(), &p, now());
    assert_eq!(cells[2], "Init:0/1");
    assert_eq!(cells[1], "0/2");

    p["status"]["initContainerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 2, "reason": "Error"}});
    assert_eq!(row_cells(pods(), &p, now())[2], "Init:Error");
    p["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 2}});
    assert_eq!(row_cells(pods(), &p, now())[2], "Init:ExitCode:2");
}

#[test]
fn sidecar_init_containers_count_towards_ready() {
    let mut p = pod(json!({
        "phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [
            {"name": "proxy", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}}
        ],
        "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}
        ]
    }));
    p["spec"]["initContainers"] =
        json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
    let cells = row_cells(pods(), &p, now());
    assert_eq!(cells[1], "3/3");
    assert_eq!(cells[2], "Running");
    assert_eq!(cells[3], "1");
}

#[test]
fn deleted_pod_is_terminating() {
    let mut p = pod(json!({
        "phase": "Running",
        "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}
        ]
    }));
    p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:59:00Z");
    assert_eq!(row_cells(pods(), &p, now())[2], "Terminating");
    p["status"]["phase"] = json!("Succeeded");
    p["status"]["containerStatuses"] = json!([]);
    assert_eq!(row_cells(pods(), &p, now())[2], "Succeeded");
}

#[test]
fn pending_pod_without_status() {
    let p = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
    assert_eq!(
        row_cells(pods(), &p, now()),
        vec![
            json!("x"),
            json!("0/1"),
            json!("Pending"),
            json!("0"),
            json!("<unknown>"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>"),
            json!("<none>"),
        ]
    );
}

#[test]
fn deployment_row() {
    let deploy = find("apps", "v1", "deployments").unwrap();
    assert_eq!(
        names(deploy),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    let d = json!({
        "metadata": {"name": "web", "creationTimestamp": "2023-12-30T20:00:00Z"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}, {"name": "side", "image": "busybox"}]}}},
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    assert_eq!(
        row_cells(deploy, &d, now()),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("29h"),
            json!("nginx,side"),
            json!("nginx:1.25,busybox"),
            json!("app=web"),
        ]
    );
}

#[test]
fn node_port_service_row() {
    let svc = find("", "v1", "services").unwrap();
    assert_eq!(
        names(svc),
        [
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1),
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    let s = json!({
        "metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:59:55Z"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "selector": {"app": "web", "tier": "fe"},
                 "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}
    });
    assert_eq!(
        row_cells(svc, &s, now()),
        vec![
            json!("web"),
            json!("NodePort"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80/TCP,443:30443/TCP"),
            json!("5s"),
            json!("app=web,tier=fe"),
        ]
    );
    let lb =
        json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "None"}});
    let cells = row_cells(svc, &lb, now());
    assert_eq!(cells[2], "None");
    assert_eq!(cells[3], "<pending>");
    assert_eq!(cells[4], "<none>");
    assert_eq!(cells[6], "<none>");
}

#[test]
fn node_row() {
    let nodes = find("", "v1", "nodes").unwrap();
    assert_eq!(
        names(nodes),
        [
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1),
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    let mut n = json!({
        "metadata": {"name": "node-1", "creationTimestamp": "2023-12-25T01:00:00Z",
                     "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "", "kubernetes.io/os": "linux"}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "node-1"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0", "containerRuntimeVersion": "r8s://0.1.0"}
        }
    });
    assert_eq!(
        row_cells(nodes, &n, now()),
        vec![
            json!("node-1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,worker"),
            json!("7d"),
            json!("v1.32.0"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0"),
            json!("r8s://0.1.0"),
        ]
    );
    n["spec"] = json!({});
    n["status"]["conditions"][1]["status"] = json!("Unknown");
    n["metadata"]["labels"] = json!({});
    let cells = row_cells(nodes, &n, now());
    assert_eq!(cells[1], "NotReady");
    assert_eq!(cells[2], "<none>");
}

#[test]
fn event_row() {
    let events = find("", "v1", "events").unwrap();
    assert_eq!(
        names(events),
        [
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1),
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    let e = json!({
        "metadata": {"name": "web.17a", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
        "reason": "Pulled", "type": "Normal", "message": "Successfully pulled image \"nginx\"\n",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2024-01-01T00:50:00Z", "lastTimestamp": "2024-01-01T00:58:00Z", "count": 4
    });
    assert_eq!(
        row_cells(events, &e, now()),
        vec![
            json!("2m"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web"),
            json!("spec.containers{a}"),
            json!("kubelet, node-1"),
            json!("Successfully pulled image \"nginx\""),
            json!("10m"),
            json!(4),
            json!("web.17a"),
        ]
    );
    // events.k8s.io/v1 form: eventTime, regarding, note, no count.
    let v1 = find("events.k8s.io", "v1", "events").unwrap();
    let e2 = json!({
        "metadata": {"name": "x"}, "eventTime": "2024-01-01T00:59:30.000000Z",
        "regarding": {"kind": "Node", "name": "node-1"}, "note": "hello", "reason": "R", "type": "Warning",
        "reportingController": "r8s-agent", "reportingInstance": "node-1"
    });
    assert_eq!(
        row_cells(v1, &e2, now()),
        vec![
            json!("30s"),
            json!("Warning"),
            json!("R"),
            json!("node/node-1"),
            json!(""),
            json!("r8s-agent, node-1"),
            json!("hello"),
            json!("30s"),
            json!(1),
            json!("x"),
        ]
    );
}

#[test]
fn kinds_without_printer_use_default_table() {
    let roles = find("rbac.authorization.k8s.io", "v1", "roles").unwrap();
    let cols = column_definitions(roles);
    assert_eq!(cols.len(), 2);
    assert_eq!(cols[1]["name"], "Created At");
    assert_eq!(cols[1]["type"], "date");
    let r = json!({"metadata": {"name": "r", "creationTimestamp": "2024-01-01T00:00:00Z"}});
    assert_eq!(
        row_cells(roles, &r, now()),
        vec![json!("r"), json!("2024-01-01T00:00:00Z")]
    );
}

#[test]
fn every_catalog_row_matches_its_columns() {
    let empty = json!({"metadata": {"name": "x"}});
    for r in crate::resources::catalog() {
        let cols = column_definitions(r);
        assert_eq!(cols[0]["type"], "string", "{r:?}");
        assert_eq!(
            cols.len(),
            row_cells(r, &empty, now()).len(),
            "{r:?} has cells for every column"
        );
    }
}

#[test]
fn small_kinds_rows() {
    let cm = find("", "v1", "configmaps").unwrap();
    let v = json!({"metadata": {"name": "c", "creationTimestamp": "2024-01-01T00:00:00Z"}, "data": {"a": "1"}, "binaryData": {"b": ""}});
    assert_eq!(
        row_cells(cm, &v, now()),
        vec![json!("c"), json!(2), json!("60m")]
    );

    let secret = find("", "v1", "secrets").unwrap();
    let v = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "eA=="}});
    assert_eq!(
        row_cells(secret, &v, now()),
        vec![json!("s"), json!("Opaque"), json!(1), json!("<unknown>")]
    );

    let lease = find_kind("coordination.k8s.io/v1", "Lease").unwrap();
    let v = json!({"metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1"}});
    assert_eq!(
        row_cells(lease, &v, now()),
        vec![json!("node-1"), json!("node-1"), json!("<unknown>")]
    );

    let job = find("batch", "v1", "jobs").unwrap();
    let v = json!({"metadata": {"name": "j", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"completions": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
                 "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"succeeded": 1, "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:00:42Z",
                   "conditions": [{"type": "Complete", "status": "True"}]}});
    assert_eq!(
        row_cells(job, &v, now()),
        vec![
            json!("j"),
            json!("Complete"),
            json!("1/1"),
            json!("42s"),
            json!("60m"),
            json!("pi"),
            json!("perl"),
            json!("batch.kubernetes.io/controller-uid=u"),
        ]
    );

    let ns = find("", "v1", "namespaces").unwrap();
    let v = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
    assert_eq!(
        row_cells(ns, &v, now()),
        vec![json!("default"), json!("Active"), json!("<unknown>")]
    );

    let ep = find("", "v1", "endpoints").unwrap();
    let v = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}], "ports": [{"port": 80}]}]});
    assert_eq!(
        row_cells(ep, &v, now())[1],
        json!("10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more...")
    );
}

#[test]
fn table_row_carries_partial_metadata_by_default() {
    let p = pod(json!({"phase": "Succeeded"}));
    let row = table_row(pods(), &p, now(), IncludeObject::default());
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["namespace"], "default");
    assert_eq!(row["conditions"][0]["type"], "Completed");
    assert_eq!(row["cells"][2], "Succeeded");
    let row = table_row(pods(), &p, now(), IncludeObject::None);
    assert!(row.get("object").is_none());
    assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::parse("bogus"), None);
}

#[test]
fn more_workload_and_cluster_rows() {
    let ds = find("apps", "v1", "daemonsets").unwrap();
    let v = json!({"metadata": {"name": "proxy", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"selector": {"matchLabels": {"k8s-app": "proxy"}},
                 "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                       "containers": [{"name": "p", "image": "r8s/netproxy"}]}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                   "updatedNumberScheduled": 2, "numberAvailable": 1}});
    assert_eq!(
        row_cells(ds, &v, now()),
        vec![
            json!("proxy"),
            json!(2),
            json!(2),
            json!(1),
            json!(2),
            json!(1),
            json!("kubernetes.io/os=linux"),
            json!("60m"),
            json!("p"),
            json!("r8s/netproxy"),
            json!("k8s-app=proxy"),
        ]
    );

    let sts = find("apps", "v1", "statefulsets").unwrap();
    let v = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "pg", "image": "postgres"}]}}},
        "status": {"readyReplicas": 1}});
    assert_eq!(
        row_cells(sts, &v, now()),
        vec![
            json!("db"),
            json!("1/3"),
            json!("<unknown>"),
            json!("pg"),
            json!("postgres")
        ]
    );

    let cj = find("batch", "v1", "cronjobs").unwrap();
    let v = json!({"metadata": {"name": "tick", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"schedule": "*/5 * * * *", "suspend": false,
                 "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "image": "busybox"}]}}}}},
        "status": {"active": [{"name": "tick-1"}], "lastScheduleTime": "2024-01-01T00:55:00Z"}});
    assert_eq!(
        row_cells(cj, &v, now()),
        vec![
            json!("tick"),
            json!("*/5 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("5m"),
            json!("60m"),
            json!("t"),
            json!("busybox"),
            json!("<none>"),
        ]
    );

    let hpa = find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
    let v = json!({"metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
        "status": {"currentReplicas": 2}});
    assert_eq!(
        row_cells(hpa, &v, now()),
        vec![
            json!("web"),
            json!("Deployment/web"),
            json!("cpu: <unknown>/50%"),
            json!("1"),
            json!(5),
            json!(2),
            json!("<unknown>"),
        ]
    );
    let hpa_v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
    let v = json!({"metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80},
        "status": {"currentReplicas": 2, "currentCPUUtilizationPercentage": 12}});
    assert_eq!(row_cells(hpa_v1, &v, now())[2], json!("cpu: 12%/80%"));
    assert_eq!(row_cells(hpa_v1, &v, now())[3], json!("<unset>"));

    let pvc = find("", "v1", "persistentvolumeclaims").unwrap();
    let v = json!({"metadata": {"name": "data"},
        "spec": {"volumeName": "pv-1", "storageClassName": "local", "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"]}});
    assert_eq!(
        row_cells(pvc, &v, now()),
        vec![
            json!("data"),
            json!("Bound"),
            json!("pv-1"),
            json!("2Gi"),
            json!("RWO"),
            json!("local"),
            json!("<unset>"),
            json!("<unknown>"),
            json!("<unset>"),
        ]
    );

    let rb = find("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap();
    let v = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "Role", "name": "reader"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"},
                     {"kind": "Group", "name": "devs"}, {"kind": "User", "name": "bob"}]});
    assert_eq!(
        row_cells(rb, &v, now()),
        vec![
            json!("rb"),
            json!("Role/reader"),
            json!("<unknown>"),
            json!("alice, bob"),
            json!("devs"),
            json!("ns/sa"),
        ]
    );

    let sc = find("storage.k8s.io", "v1", "storageclasses").unwrap();
    let v = json!({"metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "r8s.io/local", "volumeBindingMode": "WaitForFirstConsumer"});
    assert_eq!(
        row_cells(sc, &v, now()),
        vec![
            json!("local (default)"),
            json!("r8s.io/local"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false),
            json!("<unknown>"),
        ]
    );
}

#[test]
fn every_column_has_its_upstream_description() {
    for r in crate::resources::catalog() {
        for c in column_definitions(r) {
            let name = c["name"].as_str().unwrap();
            let description = c["description"].as_str().unwrap();
            // Upstream reads RuntimeClass `handler` from ObjectMeta's docs: empty.
            let expect_empty = r.kind == "RuntimeClass" && name == "Handler";
            assert_eq!(description.is_empty(), expect_empty, "{r:?} column {name}");
        }
    }
}
