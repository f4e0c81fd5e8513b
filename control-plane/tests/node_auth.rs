//! The Node authorizer and NodeRestriction seen by real kubectl with a
//! node's credentials (a `system:node:a` client certificate issued through
//! a kubelet client CSR): a node reads its own pods and the secrets they
//! reference and nothing else, and writes only its own Node, Lease and
//! pods, with kube-apiserver's messages.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine;
use common::{Server, wait_for};

/// A kubeconfig for `system:node:<node>` with a certificate the server's
/// signer issued for an approved kubelet client CSR.
fn node_kubeconfig(server: &Server, node: &str) -> PathBuf {
    let (key, request) =
        agent::bootstrap::csr::build_request(&agent::bootstrap::csr::Subject::node(node), &[], &[])
            .expect("request");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let csr = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: node-{node}\nspec:\n  request: {}\n  signerName: kubernetes.io/kube-apiserver-client-kubelet\n  usages: [digital signature, client auth]\n",
        b64(request.as_bytes())
    );
    server.ok_stdin(&["create", "-f", "-"], &csr);
    server.ok(&["certificate", "approve", &format!("node-{node}")]);
    let mut cert = String::new();
    wait_for(30, "the node certificate", || {
        cert = server.ok(&[
            "get",
            "csr",
            &format!("node-{node}"),
            "-o",
            "jsonpath={.status.certificate}",
        ]);
        !cert.is_empty()
    });
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(server.kubeconfig()).expect("kubeconfig"))
            .expect("kubeconfig yaml");
    let cluster = &admin["clusters"][0]["cluster"];
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: r8s\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: node\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: node\n  context: {{cluster: r8s, user: node}}\ncurrent-context: node\n",
        cluster["server"].as_str().expect("server"),
        cluster["certificate-authority-data"]
            .as_str()
            .expect("CA data"),
        cert.trim(),
        b64(key.serialize_pem().as_bytes()),
    );
    let path = server.dir.path().join(format!("node-{node}.yaml"));
    std::fs::write(&path, yaml).expect("write the node kubeconfig");
    path
}

/// kubectl with `kubeconfig`.
fn kubectl_as(server: &Server, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(server.dir.path().join("node-cache"))
        .arg("--request-timeout=20s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

fn ok_as(server: &Server, kc: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_as(server, kc, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} as the node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails_as(server: &Server, kc: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_as(server, kc, args, stdin);
    assert!(
        !out.status.success(),
        "kubectl {args:?} as the node should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

fn pod_yaml(name: &str, node: &str, secret: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n  volumes:\n  - name: s\n    secret:\n      secretName: {secret}\n"
    )
}

#[test]
fn a_node_reaches_only_its_own_objects() {
    let server = Server::start();
    let kc = node_kubeconfig(&server, "a");

    // A node registers itself; another node's object is the admin's.
    let node = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n"
        )
    };
    ok_as(&server, &kc, &["create", "-f", "-"], Some(&node("a")));
    server.ok_stdin(&["create", "-f", "-"], &node("b"));
    // Its own Node only (AuthorizeNodeWithSelectors): the agent reads all
    // Nodes as system:kube-proxy.
    assert_eq!(
        ok_as(&server, &kc, &["get", "node", "a", "-o", "name"], None).trim(),
        "node/a"
    );
    assert_eq!(
        ok_as(
            &server,
            &kc,
            &[
                "get",
                "nodes",
                "--field-selector",
                "metadata.name=a",
                "-o",
                "name"
            ],
            None
        )
        .trim(),
        "node/a"
    );
    assert_eq!(
        fails_as(&server, &kc, &["get", "nodes"], None),
        "Error from server (Forbidden): nodes is forbidden: User \"system:node:a\" cannot list resource \"nodes\" in API group \"\" at the cluster scope: node 'a' cannot read all nodes, only its own Node object"
    );
    assert_eq!(
        fails_as(&server, &kc, &["get", "node", "b"], None),
        "Error from server (Forbidden): nodes \"b\" is forbidden: User \"system:node:a\" cannot get resource \"nodes\" in API group \"\" at the cluster scope: node 'a' cannot read 'b', only its own Node object"
    );

    server.ok(&["create", "secret", "generic", "db", "--from-literal=k=v"]);
    server.ok(&[
        "create",
        "secret",
        "generic",
        "mine-not",
        "--from-literal=k=v",
    ]);
    server.ok(&[
        "create",
        "secret",
        "generic",
        "theirs",
        "--from-literal=k=v",
    ]);
    server.ok_stdin(&["create", "-f", "-"], &pod_yaml("web", "a", "db"));
    server.ok_stdin(&["create", "-f", "-"], &pod_yaml("other", "b", "theirs"));

    // The secret of a pod bound to the node is readable (once the graph
    // has the pod); others are not, with the Node authorizer's reason.
    wait_for(30, "the bound pod's secret to be readable", || {
        kubectl_as(&server, &kc, &["get", "secret", "db"], None)
            .status
            .success()
    });
    for secret in ["mine-not", "theirs"] {
        assert_eq!(
            fails_as(&server, &kc, &["get", "secret", secret], None),
            format!(
                "Error from server (Forbidden): secrets \"{secret}\" is forbidden: User \"system:node:a\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'a' and this object"
            )
        );
    }
    let list = fails_as(&server, &kc, &["get", "secrets"], None);
    assert!(list.contains("cannot list resource \"secrets\""), "{list}");

    // Its own pods: by name when bound to it, and lists only scoped to it
    // (upstream's AuthorizeNodeWithSelectors).
    ok_as(&server, &kc, &["get", "pod", "web"], None);
    assert_eq!(
        fails_as(&server, &kc, &["get", "pod", "other"], None),
        "Error from server (Forbidden): pods \"other\" is forbidden: User \"system:node:a\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\": no relationship found between node 'a' and this object"
    );
    let mine = ok_as(
        &server,
        &kc,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=a",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(mine.trim(), "pod/web");
    let all = fails_as(&server, &kc, &["get", "pods", "-A"], None);
    assert!(
        all.contains("cannot list resource \"pods\"")
            && all.ends_with("can only list/watch pods with spec.nodeName field selector"),
        "{all}"
    );

    // Its own Node only, and not its restricted labels or taints.
    ok_as(
        &server,
        &kc,
        &["label", "node", "a", "node.kubernetes.io/pool=blue"],
        None,
    );
    assert_eq!(
        fails_as(
            &server,
            &kc,
            &[
                "label",
                "node",
                "a",
                "node-restriction.kubernetes.io/secure=true"
            ],
            None
        ),
        "Error from server (Forbidden): nodes \"a\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/secure"
    );
    assert_eq!(
        fails_as(
            &server,
            &kc,
            &["taint", "node", "a", "k=v:NoSchedule"],
            None
        ),
        "Error from server (Forbidden): nodes \"a\" is forbidden: node \"a\" is not allowed to modify taints"
    );

    // Pod status and deletion only for its own pods (kubectl's patch of
    // status reads it first, which nodes may not: a client patches it).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let patch_status = |name: &str| {
        rt.block_on(async {
            let client = common::client_for(&kc).await;
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(client, "default");
            pods.patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"status": {"message": "checked"}})),
            )
            .await
            .map(|_| ())
        })
    };
    // Another Node is not its to change (kubectl label reads it first,
    // which the node may not either).
    let patched = rt.block_on(async {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(common::client_for(&kc).await);
        let patch = serde_json::json!({"metadata": {"labels": {"x": "y"}}});
        nodes
            .patch(
                "b",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await
            .map(|_| ())
    });
    match patched {
        Err(kube::Error::Api(s)) => assert_eq!(
            s.message,
            "nodes \"b\" is forbidden: node \"a\" is not allowed to modify node \"b\""
        ),
        other => panic!("patching another Node: {other:?}"),
    }
    patch_status("web").expect("the node patches its own pod's status");
    match patch_status("other") {
        Err(kube::Error::Api(s)) => assert_eq!(
            s.message,
            "pods \"other\" is forbidden: node \"a\" can only update pod status for pods with spec.nodeName set to itself"
        ),
        other => panic!("patching another node's pod status: {other:?}"),
    }
    assert_eq!(
        fails_as(
            &server,
            &kc,
            &["delete", "pod", "other", "--grace-period=0", "--force"],
            None
        )
        .lines()
        .last()
        .unwrap_or_default(),
        "Error from server (Forbidden): pods \"other\" is forbidden: node \"a\" can only delete pods with spec.nodeName set to itself"
    );
    // A pod that is not a mirror pod is not the node's to create.
    let created = fails_as(
        &server,
        &kc,
        &["create", "-f", "-"],
        Some(&pod_yaml("sneaky", "a", "db")),
    );
    assert!(
        created.contains("node \"a\" can only create mirror pods"),
        "{created}"
    );

    // Its own Lease only.
    let lease = |name: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {name}\n"
        )
    };
    ok_as(&server, &kc, &["create", "-f", "-"], Some(&lease("a")));
    assert_eq!(
        fails_as(&server, &kc, &["create", "-f", "-"], Some(&lease("b"))),
        "Error from server (Forbidden): error when creating \"STDIN\": leases.coordination.k8s.io \"b\" is forbidden: can only access node lease with the same name as the requesting node"
    );
    // Nothing else the system:node rules do not give.
    let ns = fails_as(&server, &kc, &["create", "namespace", "x"], None);
    assert!(ns.contains("(Forbidden)"), "{ns}");
}
