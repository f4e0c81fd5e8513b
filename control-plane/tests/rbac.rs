//! RBAC and ServiceAccount tokens with real kubectl: a client-certificate
//! user is forbidden (upstream's exact message) until a RoleBinding to
//! `view` exists, then reads pods in that namespace only; `auth can-i`
//! answers from the authorizer; `create token` gives a bearer token that
//! `auth whoami` names, that RBAC limits, and that dies with its
//! ServiceAccount; `--as` impersonates only with the right to.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine;
use common::{Server, wait_for};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A kubeconfig for `server` with the cluster CA and `user` (a YAML mapping
/// body, may be empty for no credentials).
fn write_kubeconfig(s: &Server, name: &str, user: &str) -> PathBuf {
    let ca = std::fs::read_to_string(s.data_dir().join("tls/ca.crt")).unwrap();
    let path = s.dir.path().join(format!("{name}.yaml"));
    let user = if user.is_empty() {
        "{}".to_string()
    } else {
        user.to_string()
    };
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.1:{}\n  name: c\ncontexts:\n- context:\n    cluster: c\n    user: u\n  name: c\ncurrent-context: c\nusers:\n- name: u\n  user: {user}\n",
            b64(&ca),
            s.port
        ),
    )
    .unwrap();
    path
}

/// A kubeconfig for user `cn` with a client certificate signed by the CA.
fn cert_user(s: &Server, cn: &str) -> PathBuf {
    let ca = std::fs::read_to_string(s.data_dir().join("tls/ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(s.data_dir().join("tls/ca.key")).unwrap();
    let key = rcgen::KeyPair::from_pem(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca, key).unwrap();
    let (cert, key) = control_plane::pki::issue_client_cert(&issuer, cn, &[]).unwrap();
    write_kubeconfig(
        s,
        cn,
        &format!(
            "\n    client-certificate-data: {}\n    client-key-data: {}",
            b64(&cert),
            b64(&key)
        ),
    )
}

fn as_user(s: &Server, kubeconfig: &Path, args: &[&str]) -> Output {
    s.kubectl_cmd(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run kubectl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[test]
fn role_bindings_grant_access_and_can_i_answers_from_rbac() {
    let s = Server::start();
    s.ok(&["create", "namespace", "dev"]);
    s.ok(&["create", "namespace", "prod"]);
    let jane = cert_user(&s, "jane");

    let denied = as_user(&s, &jane, &["get", "pods", "-n", "dev"]);
    assert!(!denied.status.success());
    assert_eq!(
        stderr(&denied),
        "Error from server (Forbidden): pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"dev\""
    );
    let nodes = as_user(&s, &jane, &["get", "nodes"]);
    assert_eq!(
        stderr(&nodes),
        "Error from server (Forbidden): nodes is forbidden: User \"jane\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    let path = as_user(&s, &jane, &["get", "--raw", "/foo"]);
    assert!(
        stderr(&path).contains("forbidden: User \"jane\" cannot get path \"/foo\""),
        "{}",
        stderr(&path)
    );
    let no = as_user(&s, &jane, &["auth", "can-i", "list", "pods", "-n", "dev"]);
    assert_eq!(stdout(&no), "no");
    assert!(!no.status.success());
    // Every authenticated user may ask who they are.
    let whoami = as_user(
        &s,
        &jane,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(stdout(&whoami), "jane", "{}", stderr(&whoami));

    s.ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
        "-n",
        "dev",
    ]);
    // `view` gets its rules from system:aggregate-to-view via the
    // aggregation controller, and the authorizer sees the binding soon.
    wait_for(30, "jane may list pods in dev", || {
        as_user(&s, &jane, &["get", "pods", "-n", "dev"])
            .status
            .success()
    });
    let prod = as_user(&s, &jane, &["get", "pods", "-n", "prod"]);
    assert!(stderr(&prod).contains(
        "pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"prod\""
    ));
    let can = |args: &[&str]| stdout(&as_user(&s, &jane, &[&["auth", "can-i"], args].concat()));
    assert_eq!(can(&["list", "pods", "-n", "dev"]), "yes");
    assert_eq!(can(&["get", "pods/log", "-n", "dev"]), "yes");
    assert_eq!(can(&["watch", "deployments.apps", "-n", "dev"]), "yes");
    assert_eq!(can(&["delete", "pods", "-n", "dev"]), "no");
    assert_eq!(can(&["get", "secrets", "-n", "dev"]), "no");
    assert_eq!(can(&["list", "pods", "-n", "prod"]), "no");
    // The admin asks on jane's behalf (SubjectAccessReview through --as is
    // impersonation, so ask with a review instead).
    let sar = s.ok_stdin(
        &["create", "--validate=false", "-f", "-", "-o", "jsonpath={.status.allowed}"],
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: jane\n  resourceAttributes:\n    namespace: dev\n    verb: get\n    resource: pods\n",
    );
    assert_eq!(sar.trim(), "true");
    // Impersonation: the admin may act as jane (and then gets jane's rights);
    // jane may not act as anyone.
    let as_jane = |args: &[&str]| {
        stdout(
            &s.kubectl_cmd(&[args, &["--as=jane"]].concat())
                .output()
                .unwrap(),
        )
    };
    assert_eq!(
        as_jane(&["auth", "can-i", "list", "pods", "-n", "dev"]),
        "yes"
    );
    assert_eq!(
        as_jane(&["auth", "can-i", "list", "pods", "-n", "prod"]),
        "no"
    );
    let escalate = as_user(&s, &jane, &["get", "pods", "-n", "prod", "--as=admin"]);
    assert_eq!(
        stderr(&escalate),
        "Error from server (Forbidden): users \"admin\" is forbidden: User \"jane\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    let list = stdout(&as_user(
        &s,
        &jane,
        &["auth", "can-i", "--list", "-n", "dev"],
    ));
    assert!(list.lines().any(|l| l.starts_with("pods ")), "{list}");
}

#[test]
fn service_account_tokens_authenticate_until_the_account_is_deleted() {
    let s = Server::start();
    s.ok(&["create", "namespace", "ci"]);
    s.ok(&["create", "serviceaccount", "bot", "-n", "ci"]);
    let token = s.ok(&["create", "token", "bot", "-n", "ci", "--duration=1h"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let anon = write_kubeconfig(&s, "anon", "");
    let with_token = |args: &[&str]| as_user(&s, &anon, &[&["--token", token], args].concat());

    let whoami = with_token(&["auth", "whoami", "-o", "jsonpath={.status.userInfo}"]);
    let info = stdout(&whoami);
    assert!(
        info.contains("\"username\":\"system:serviceaccount:ci:bot\""),
        "{info} {}",
        stderr(&whoami)
    );
    assert!(info.contains("system:serviceaccounts:ci"), "{info}");
    let secrets = with_token(&["get", "secrets", "-n", "ci"]);
    assert_eq!(
        stderr(&secrets),
        "Error from server (Forbidden): secrets is forbidden: User \"system:serviceaccount:ci:bot\" cannot list resource \"secrets\" in API group \"\" in the namespace \"ci\""
    );
    // A role for the account works through its ServiceAccount subject.
    s.ok(&[
        "create",
        "rolebinding",
        "bot-view",
        "--clusterrole=view",
        "--serviceaccount=ci:bot",
        "-n",
        "ci",
    ]);
    wait_for(30, "the bot may list pods", || {
        with_token(&["get", "pods", "-n", "ci"]).status.success()
    });

    // Anonymous users are named in the message; bad tokens are 401.
    // kubectl prompts for a username when a kubeconfig has no credentials;
    // basic auth is not an authenticator here, so these requests are anonymous.
    let anonymous = |args: &[&str]| {
        as_user(
            &s,
            &anon,
            &[&["--username=nobody", "--password=none"], args].concat(),
        )
    };
    let anon_pods = anonymous(&["get", "--raw", "/api/v1/namespaces/ci/pods"]);
    assert!(
        stderr(&anon_pods).contains(
            "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"ci\""
        ),
        "{}",
        stderr(&anon_pods)
    );
    let version = anonymous(&["get", "--raw", "/version"]);
    assert!(version.status.success(), "{}", stderr(&version));
    let bad = as_user(&s, &anon, &["--token", "not-a-token", "get", "pods"]);
    assert!(stderr(&bad).contains("Unauthorized"), "{}", stderr(&bad));

    // The issuer discovery documents are public to service accounts.
    let jwks = with_token(&["get", "--raw", "/openid/v1/jwks"]);
    assert!(
        stdout(&jwks).contains("\"kty\":\"EC\""),
        "{}",
        stderr(&jwks)
    );

    // A TokenReview (what webhook authenticators ask) names the account too.
    let review = s.ok_stdin(
        &[
            "create",
            "--validate=false",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.user.username}",
        ],
        &format!(
            "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n"
        ),
    );
    assert_eq!(review.trim(), "system:serviceaccount:ci:bot");

    s.ok(&["delete", "serviceaccount", "bot", "-n", "ci"]);
    wait_for(30, "the deleted account's token to be refused", || {
        stderr(&with_token(&["auth", "whoami"])).contains("Unauthorized")
    });
}

#[test]
fn token_requests_validate_duration_and_bound_objects() {
    let s = Server::start();
    s.ok(&["create", "serviceaccount", "bot"]);
    let short = s.kubectl(&["create", "token", "bot", "--duration=1m"]);
    assert!(
        stderr(&short).contains("may not specify a duration less than 10 minutes"),
        "{}",
        stderr(&short)
    );
    let missing = s.kubectl(&[
        "create",
        "token",
        "bot",
        "--bound-object-kind=Pod",
        "--bound-object-name=nope",
    ]);
    assert!(
        stderr(&missing).contains("pods \"nope\" not found"),
        "{}",
        stderr(&missing)
    );
    let nosa = s.kubectl(&["create", "token", "ghost"]);
    assert!(
        stderr(&nosa).contains("serviceaccounts \"ghost\" not found"),
        "{}",
        stderr(&nosa)
    );
    // A pod-bound token lives as long as its pod.
    s.ok(&[
        "run",
        "web",
        "--image=registry.invalid/web:1",
        "--restart=Never",
    ]);
    let bound = s.ok(&[
        "create",
        "token",
        "bot",
        "--bound-object-kind=Pod",
        "--bound-object-name=web",
    ]);
    let anon = write_kubeconfig(&s, "anon", "");
    let whoami = |token: &str| {
        as_user(
            &s,
            &anon,
            &[
                "--token",
                token,
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        )
    };
    assert_eq!(
        stdout(&whoami(bound.trim())),
        "system:serviceaccount:default:bot"
    );
    s.ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    wait_for(30, "the pod-bound token to be refused", || {
        stderr(&whoami(bound.trim())).contains("Unauthorized")
    });

    // A legacy token Secret gets a token filled in.
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bot-token\n  annotations:\n    kubernetes.io/service-account.name: bot\ntype: kubernetes.io/service-account-token\n",
    );
    let mut legacy = String::new();
    wait_for(30, "the token controller to fill the secret", || {
        legacy = s.ok(&["get", "secret", "bot-token", "-o", "jsonpath={.data.token}"]);
        !legacy.trim().is_empty()
    });
    let token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(legacy.trim())
            .unwrap(),
    )
    .unwrap();
    let legacy_user = whoami(&token);
    assert_eq!(
        stdout(&legacy_user),
        "system:serviceaccount:default:bot",
        "{}",
        stderr(&legacy_user)
    );
}
