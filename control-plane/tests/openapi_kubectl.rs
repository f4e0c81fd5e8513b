//! Real kubectl against a tiny server that serves only discovery, the
//! OpenAPI documents of `control_plane::openapi`, and records write bodies
//! (decoded with `control_plane::protobuf`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use control_plane::resources::{catalog, group_versions};
use control_plane::{openapi, protobuf};
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    uri: String,
    content_type: String,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// What the server knows: the request log and objects kubectl may GET.
#[derive(Clone, Default)]
struct AppState {
    log: Log,
    /// Path → object served on GET.
    objects: Arc<Mutex<std::collections::HashMap<String, Value>>>,
    /// Serve `/openapi/v2` (as JSON, whatever the Accept header).
    serve_v2: bool,
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

fn resource_list(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = catalog()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                   "verbs": r.verbs, "shortNames": r.short_names})
        })
        .collect();
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn group_list() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for (group, version) in group_versions().into_iter().filter(|(g, _)| !g.is_empty()) {
        let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
        if let Some(existing) = groups.iter_mut().find(|g| g["name"] == group) {
            existing["versions"].as_array_mut().unwrap().push(gv);
        } else {
            groups.push(json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv}));
        }
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

async fn handle(State(state): State<AppState>, headers: HeaderMap, request: Request) -> Response {
    let log = &state.log;
    let method = request.method().clone();
    let uri = request.uri().clone();
    let body = axum::body::to_bytes(request.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    log.lock().unwrap().push(Recorded {
        method: method.clone(),
        uri: uri.to_string(),
        content_type: content_type.clone(),
        body: body.clone(),
    });
    let path = uri.path();
    if method == Method::GET {
        if let Some(object) = state.objects.lock().unwrap().get(path) {
            return json_response(StatusCode::OK, object);
        }
        if path == "/openapi/v2" && state.serve_v2 {
            return (
                [(header::CONTENT_TYPE, "application/json")],
                openapi::v2_document_json(),
            )
                .into_response();
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        return match segments.as_slice() {
            ["version"] => json_response(
                StatusCode::OK,
                &json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"}),
            ),
            ["api"] => json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ),
            ["apis"] => json_response(StatusCode::OK, &group_list()),
            ["api", version] => json_response(StatusCode::OK, &resource_list("", version)),
            ["apis", group, version] => {
                json_response(StatusCode::OK, &resource_list(group, version))
            }
            ["openapi", "v3"] => json_response(StatusCode::OK, &openapi::v3_index()),
            ["openapi", "v3", "api", version] => v3(openapi::v3_group_version_json("", version)),
            ["openapi", "v3", "apis", group, version] => {
                v3(openapi::v3_group_version_json(group, version))
            }
            _ => not_found(),
        };
    }
    if method == Method::PUT
        && let Some(object) = state
            .objects
            .lock()
            .unwrap()
            .get(path.trim_end_matches("/approval"))
    {
        return json_response(StatusCode::OK, object);
    }
    if method == Method::PATCH
        && let Some(object) = state.objects.lock().unwrap().get(path)
    {
        return json_response(StatusCode::OK, object);
    }
    if method == Method::POST {
        let object = if content_type.starts_with("application/vnd.kubernetes.protobuf") {
            match protobuf::decode(&body) {
                Ok(object) => object,
                Err(e) => {
                    return (StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()).into_response();
                }
            }
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        return json_response(StatusCode::CREATED, &object);
    }
    not_found()
}

fn v3(doc: Option<(&'static str, &'static str)>) -> Response {
    match doc {
        Some((body, _)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => not_found(),
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    log: Log,
    objects: Arc<Mutex<std::collections::HashMap<String, Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with(false).await
    }

    async fn start_with(serve_v2: bool) -> Cluster {
        let state = AppState {
            serve_v2,
            ..AppState::default()
        };
        let (log, objects) = (state.log.clone(), state.objects.clone());
        let app = Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\nusers:\n- name: u\n  user: {{}}\ncurrent-context: t\n"
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        Cluster {
            dir,
            log,
            objects,
            server,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs kubectl with `args`; returns (success, stdout, stderr).
    async fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let mut command = std::process::Command::new(KUBECTL);
        command
            .arg("--kubeconfig")
            .arg(self.path("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn posts(&self) -> Vec<Recorded> {
        self.requests(Method::POST)
    }

    fn requests(&self, method: Method) -> Vec<Recorded> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|r| r.method == method).cloned().collect()
    }
}

fn kubectl_missing() -> bool {
    if Path::new(KUBECTL).exists() {
        return false;
    }
    eprintln!("skipping: {KUBECTL} is not installed");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_prints_fields_from_the_v3_documents() {
    if kubectl_missing() {
        return;
    }
    let cluster = Cluster::start().await;

    let (ok, out, err) = cluster.kubectl(&["explain", "pods"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("KIND:       Pod"), "{out}");
    assert!(out.contains("VERSION:    v1"), "{out}");
    assert!(out.contains("Pod is a collection of containers"), "{out}");
    assert!(out.contains("spec\t<PodSpec>"), "{out}");

    let (ok, out, err) = cluster.kubectl(&["explain", "pod.spec.containers"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("FIELD: containers <[]Container>"), "{out}");
    assert!(out.contains("image\t<string>"), "{out}");
    assert!(out.contains("name\t<string> -required-"), "{out}");
    assert!(out.contains("Container image name."), "{out}");

    let (ok, out, err) = cluster
        .kubectl(&["explain", "deployment.spec.strategy"])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("GROUP:      apps"), "{out}");
    assert!(
        out.contains("rollingUpdate\t<RollingUpdateDeployment>"),
        "{out}"
    );
    assert!(out.contains("type\t<string>"), "{out}");

    let (ok, out, err) = cluster
        .kubectl(&["explain", "deployment.spec.strategy.rollingUpdate.maxSurge"])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("maxSurge <IntOrString>"), "{out}");

    let (ok, out, err) = cluster
        .kubectl(&["explain", "pod.spec.containers.resources"])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("limits\t<map[string]Quantity>"), "{out}");

    for (args, expected) in [
        (
            &["explain", "crd.spec.versions.schema"][..],
            "openAPIV3Schema\t<JSONSchemaProps>",
        ),
        (&["explain", "hpa.spec"][..], "VERSION:    v2"),
        (
            &["explain", "apiservices.spec"][..],
            "GROUP:      apiregistration.k8s.io",
        ),
        (
            &["explain", "clusterrolebinding.roleRef"][..],
            "apiGroup\t<string> -required-",
        ),
        (
            &["explain", "secret.data"][..],
            "FIELD: data <map[string]string>",
        ),
    ] {
        let (ok, out, err) = cluster.kubectl(args).await;
        assert!(ok, "{args:?}: {err}");
        assert!(out.contains(expected), "{args:?}: {out}");
    }

    let (ok, out, err) = cluster.kubectl(&["explain", "pod", "--recursive"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("imagePullPolicy\t<string>"), "{out}");
    assert!(out.contains("creationTimestamp\t<string>"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_leaves_validation_to_the_server() {
    if kubectl_missing() {
        return;
    }
    let cluster = Cluster::start().await;
    let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  bogus: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n";
    std::fs::write(cluster.path("deploy.yaml"), manifest).unwrap();
    let (ok, _, err) = cluster
        .kubectl(&["apply", "-f", cluster.path("deploy.yaml").to_str().unwrap()])
        .await;
    assert!(ok, "{err}");
    assert!(!err.contains("warning"), "{err}");
    let posts = cluster.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(
        posts[0].uri.contains("fieldValidation=Strict"),
        "{}",
        posts[0].uri
    );
    let body: Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(body["spec"]["bogus"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_protobuf_bodies_decode_to_json() {
    if kubectl_missing() {
        return;
    }
    let cluster = Cluster::start().await;

    let (ok, out, err) = cluster.kubectl(&["create", "namespace", "foo"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("namespace/foo created"), "{out}");
    let (ok, _, err) = cluster
        .kubectl(&[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80",
        ])
        .await;
    assert!(ok, "{err}");
    let (ok, _, err) = cluster
        .kubectl(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=1",
            "--from-literal=b=two",
        ])
        .await;
    assert!(ok, "{err}");

    let posts = cluster.posts();
    assert_eq!(posts.len(), 3, "{posts:?}");
    for post in &posts {
        assert!(
            post.content_type
                .starts_with("application/vnd.kubernetes.protobuf"),
            "{post:?}"
        );
        assert!(post.body.starts_with(protobuf::MAGIC), "{post:?}");
    }
    let namespace = protobuf::decode(&posts[0].body).unwrap();
    assert_eq!(
        namespace,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}, "spec": {}})
    );

    let deployment = protobuf::decode(&posts[1].body).unwrap();
    assert_eq!(
        posts[1].uri.split('?').next().unwrap(),
        "/apis/apps/v1/namespaces/default/deployments"
    );
    assert_eq!(
        deployment,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}], "resources": {}}]},
                },
                "strategy": {},
            },
        })
    );
    let typed: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(deployment).unwrap();
    assert_eq!(typed.metadata.name.as_deref(), Some("web"));

    let configmap = protobuf::decode(&posts[2].body).unwrap();
    assert_eq!(
        configmap,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "two"}})
    );
}

/// Every `kubectl create <x>` / `auth` subcommand that posts protobuf: the
/// body decodes, and the JSON is a valid object of its type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kubectl_create_subcommand_body_decodes() {
    use k8s_openapi::api::{authentication::v1 as authn, authorization::v1 as authz};
    if kubectl_missing() {
        return;
    }
    let cluster = Cluster::start().await;
    let commands: &[&[&str]] = &[
        &["create", "secret", "generic", "s1", "--from-literal=k=v"],
        &["create", "secret", "tls", "s2", "--cert=CERT", "--key=KEY"],
        &[
            "create",
            "secret",
            "docker-registry",
            "s3",
            "--docker-server=r.example",
            "--docker-username=u",
            "--docker-password=p",
        ],
        &["create", "service", "clusterip", "svc1", "--tcp=80:8080"],
        &[
            "create",
            "service",
            "nodeport",
            "svc2",
            "--tcp=80:8080",
            "--node-port=30080",
        ],
        &[
            "create",
            "service",
            "externalname",
            "svc3",
            "--external-name=example.com",
        ],
        &["create", "serviceaccount", "sa1"],
        &[
            "create",
            "job",
            "job1",
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ],
        &[
            "create",
            "cronjob",
            "cj1",
            "--image=busybox",
            "--schedule=*/1 * * * *",
            "--",
            "date",
        ],
        &["create", "role", "r1", "--verb=get,list", "--resource=pods"],
        &[
            "create",
            "rolebinding",
            "rb1",
            "--role=r1",
            "--user=alice",
            "--serviceaccount=default:sa1",
        ],
        &[
            "create",
            "clusterrole",
            "cr1",
            "--verb=get",
            "--resource=nodes",
            "--non-resource-url=/healthz",
        ],
        &[
            "create",
            "clusterrolebinding",
            "crb1",
            "--clusterrole=cr1",
            "--group=devs",
        ],
        &[
            "create",
            "priorityclass",
            "pc1",
            "--value=1000",
            "--description=high",
        ],
        &[
            "create",
            "poddisruptionbudget",
            "pdb1",
            "--selector=app=web",
            "--min-available=0",
        ],
        &[
            "create",
            "ingress",
            "ing1",
            "--rule=foo.example/bar=svc1:80",
        ],
        &["create", "quota", "q1", "--hard=cpu=1,memory=1G,pods=2"],
        &[
            "create",
            "deployment",
            "web2",
            "--image=nginx",
            "--replicas=0",
        ],
        &["create", "token", "sa1", "--duration=10m", "--audience=aud"],
        &["auth", "whoami"],
        &["auth", "can-i", "get", "pods"],
    ];
    let tls = rcgen::generate_simple_self_signed(vec!["example.com".into()]).unwrap();
    std::fs::write(cluster.path("CERT"), tls.cert.pem()).unwrap();
    std::fs::write(cluster.path("KEY"), tls.signing_key.serialize_pem()).unwrap();
    for args in commands {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("CERT", cluster.path("CERT").to_str().unwrap())
                    .replace("KEY", cluster.path("KEY").to_str().unwrap())
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let before = cluster.posts().len();
        let (_, _, err) = cluster.kubectl(&args).await;
        let posts = cluster.posts();
        assert_eq!(posts.len(), before + 1, "{args:?}: {err}");
        let post = posts.last().unwrap();
        assert!(
            post.content_type
                .starts_with("application/vnd.kubernetes.protobuf"),
            "{args:?}: {post:?}"
        );
        let object = protobuf::decode(&post.body).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        eprintln!("{args:?} -> {object}");
        let api_version = object["apiVersion"].as_str().unwrap();
        let kind = object["kind"].as_str().unwrap();
        let typed = match control_plane::resources::find_kind(api_version, kind) {
            Some(r) => (r.roundtrip)(&object),
            None => match kind {
                "TokenRequest" => serde_json::from_value::<authn::TokenRequest>(object.clone())
                    .and_then(serde_json::to_value),
                "SelfSubjectReview" => {
                    serde_json::from_value::<authn::SelfSubjectReview>(object.clone())
                        .and_then(serde_json::to_value)
                }
                "SelfSubjectAccessReview" => {
                    serde_json::from_value::<authz::SelfSubjectAccessReview>(object.clone())
                        .and_then(serde_json::to_value)
                }
                other => panic!("unexpected kind {other}"),
            },
        };
        let typed = typed.unwrap_or_else(|e| panic!("{args:?}: {e}: {object}"));
        // Nothing is lost or added by the typed roundtrip.
        assert_eq!(typed, object, "{args:?}");
    }
}

/// `kubectl apply` of a changed, existing Deployment computes its strategic
/// merge patch from compiled-in types: no warning about the v3 schemas, and
/// list items merged by key. With and without `/openapi/v2` served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_patches_an_existing_deployment_without_warnings() {
    if kubectl_missing() {
        return;
    }
    for serve_v2 in [false, true] {
        let cluster = Cluster::start_with(serve_v2).await;
        let manifest = |image: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: default\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n      - name: side\n        image: busybox\n"
            )
        };
        let original: Value = serde_yaml::from_str(&manifest("nginx:1")).unwrap();
        let mut existing = original.clone();
        existing["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/last-applied-configuration": original.to_string()});
        existing["metadata"]["resourceVersion"] = json!("5");
        cluster.objects.lock().unwrap().insert(
            "/apis/apps/v1/namespaces/default/deployments/web".into(),
            existing,
        );
        std::fs::write(cluster.path("deploy.yaml"), manifest("nginx:2")).unwrap();
        let (ok, out, err) = cluster
            .kubectl(&["apply", "-f", cluster.path("deploy.yaml").to_str().unwrap()])
            .await;
        assert!(ok, "v2={serve_v2}: {err}");
        assert!(!err.contains("warning"), "v2={serve_v2}: {err}");
        assert!(out.contains("deployment.apps/web configured"), "{out}");
        let patches = cluster.requests(Method::PATCH);
        assert_eq!(patches.len(), 1, "{patches:?}");
        assert_eq!(
            patches[0].content_type,
            "application/strategic-merge-patch+json"
        );
        let patch: Value = serde_json::from_slice(&patches[0].body).unwrap();
        let spec = &patch["spec"]["template"]["spec"];
        assert_eq!(
            spec["$setElementOrder/containers"],
            json!([{"name": "web"}, {"name": "side"}]),
            "{patch}"
        );
        assert_eq!(
            spec["containers"],
            json!([{"image": "nginx:2", "name": "web"}]),
            "{patch}"
        );
    }
}

/// `kubectl certificate approve` PUTs the CSR with protobuf: conditions,
/// byte fields and extra user info decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_certificate_approve_put_body_decodes() {
    if kubectl_missing() {
        return;
    }
    let cluster = Cluster::start().await;
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "csr1", "resourceVersion": "3", "creationTimestamp": "2024-01-02T03:04:05Z"},
        "spec": {"request": "aGVsbG8=", "signerName": "kubernetes.io/kube-apiserver-client",
                 "usages": ["client auth"], "username": "alice", "extra": {"k": ["v1", "v2"]}},
    });
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests/csr1";
    cluster
        .objects
        .lock()
        .unwrap()
        .insert(path.into(), csr.clone());
    let (ok, _, err) = cluster.kubectl(&["certificate", "approve", "csr1"]).await;
    assert!(ok, "{err}");
    let puts = cluster.requests(Method::PUT);
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(
        puts[0].uri.split('?').next().unwrap(),
        format!("{path}/approval")
    );
    assert!(
        puts[0]
            .content_type
            .starts_with("application/vnd.kubernetes.protobuf"),
        "{:?}",
        puts[0]
    );
    let object = protobuf::decode(&puts[0].body).unwrap();
    assert_eq!(object["spec"], csr["spec"], "{object}");
    assert_eq!(
        object["metadata"]["creationTimestamp"],
        "2024-01-02T03:04:05Z"
    );
    assert_eq!(object["metadata"]["resourceVersion"], "3");
    let condition = &object["status"]["conditions"][0];
    assert_eq!(condition["type"], "Approved");
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "KubectlApprove");
    assert!(
        condition["lastUpdateTime"].as_str().unwrap().ends_with('Z'),
        "{condition}"
    );
}
