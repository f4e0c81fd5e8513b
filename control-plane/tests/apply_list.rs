//! Real kubectl applies a `kind: List` file to a real r8s-server with the
//! default validation: kubectl validates the items itself against the
//! protobuf `/openapi/v2` document.

mod common;

use common::Server;

const LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: list-config
  data:
    greeting: hello
- apiVersion: v1
  kind: Service
  metadata:
    name: list-svc
  spec:
    selector: {app: web}
    ports:
    - port: 80
      targetPort: 8080
"#;

/// A List whose Service has a field no Service has.
const LIST_WITH_UNKNOWN_FIELD: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: bad-config
  data:
    greeting: hello
- apiVersion: v1
  kind: Service
  metadata:
    name: bad-svc
  spec:
    foo: bar
    ports:
    - port: 80
"#;

fn write(server: &Server, name: &str, text: &str) -> String {
    let path = server.dir.path().join(name);
    std::fs::write(&path, text).expect("write the manifest");
    path.to_string_lossy().into_owned()
}

#[test]
fn kubectl_applies_a_list_with_default_validation() {
    let s = Server::start();
    let file = write(&s, "list.yaml", LIST);

    let out = s.ok(&["apply", "-f", &file]);
    assert!(out.contains("configmap/list-config created"), "{out}");
    assert!(out.contains("service/list-svc created"), "{out}");
    let data = s.ok(&[
        "get",
        "configmap",
        "list-config",
        "-o",
        "jsonpath={.data.greeting}",
    ]);
    assert_eq!(data, "hello");
    let port = s.ok(&[
        "get",
        "service",
        "list-svc",
        "-o",
        "jsonpath={.spec.ports[0].targetPort}",
    ]);
    assert_eq!(port, "8080");

    let out = s.ok(&["apply", "-f", &file]);
    assert!(out.contains("configmap/list-config unchanged"), "{out}");
    assert!(out.contains("service/list-svc unchanged"), "{out}");
}

#[test]
fn kubectl_rejects_a_list_item_with_an_unknown_field() {
    let s = Server::start();
    let file = write(&s, "bad-list.yaml", LIST_WITH_UNKNOWN_FIELD);

    let err = s.fails(&["apply", "-f", &file]);
    assert!(
        err.contains(
            r#"error validating data: ValidationError(Service.spec): unknown field "foo" in io.k8s.api.core.v1.ServiceSpec"#
        ),
        "{err}"
    );
    assert!(err.contains("--validate=false"), "{err}");
    // Client-side validation fails before anything is written.
    let out = s.kubectl(&["get", "configmap", "bad-config"]);
    assert!(!out.status.success(), "bad-config was created");

    // Without validation kubectl sends the items and the server keeps
    // what it knows (upstream drops unknown fields with a warning).
    let out = s.ok(&["apply", "--validate=false", "-f", &file]);
    assert!(out.contains("service/bad-svc created"), "{out}");
}
