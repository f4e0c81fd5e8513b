//! RBAC escalation prevention with real kubectl: a user allowed to create
//! roles may only grant what it holds (upstream's exact message otherwise)
//! unless it may `escalate`; a user allowed to create bindings may only
//! bind a role whose rules it holds unless it may `bind` that role; the
//! admin (system:masters) and `kubectl auth reconcile` are not limited.
//! The user is `bob`, impersonated by the admin with `--as`.

mod common;

use std::process::Output;

use common::{Server, wait_for};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

fn as_bob(s: &Server, args: &[&str]) -> Output {
    s.kubectl(&[args, &["--as=bob"]].concat())
}

/// Waits until the authorizer lets bob do `can_i` (the policy follows the
/// store asynchronously).
fn wait_bob_can(s: &Server, can_i: &[&str]) {
    wait_for(30, &format!("bob may {can_i:?}"), || {
        as_bob(s, &[&["auth", "can-i"], can_i].concat())
            .status
            .success()
    });
}

const NOT_HELD: &str = "user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:";

#[test]
fn roles_grant_only_what_their_author_holds_unless_it_may_escalate() {
    let s = Server::start();
    s.ok(&["create", "namespace", "dev"]);
    // bob may write roles in dev (kubectl patch reads them first) and read
    // pods there, nothing else.
    s.ok(&[
        "create",
        "role",
        "role-writer",
        "--verb=get,create,update,patch",
        "--resource=roles.rbac.authorization.k8s.io",
        "-n",
        "dev",
    ]);
    s.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get",
        "--resource=pods",
        "-n",
        "dev",
    ]);
    s.ok(&[
        "create",
        "clusterrole",
        "clusterrole-writer",
        "--verb=create",
        "--resource=clusterroles.rbac.authorization.k8s.io",
    ]);
    for role in ["role-writer", "pod-reader"] {
        s.ok(&[
            "create",
            "rolebinding",
            &format!("bob-{role}"),
            &format!("--role={role}"),
            "--user=bob",
            "-n",
            "dev",
        ]);
    }
    s.ok(&[
        "create",
        "clusterrolebinding",
        "bob-clusterrole-writer",
        "--clusterrole=clusterrole-writer",
        "--user=bob",
    ]);
    wait_bob_can(&s, &["get", "pods", "-n", "dev"]);
    wait_bob_can(
        &s,
        &["create", "roles.rbac.authorization.k8s.io", "-n", "dev"],
    );
    wait_bob_can(&s, &["create", "clusterroles.rbac.authorization.k8s.io"]);

    let secrets = as_bob(
        &s,
        &[
            "create",
            "role",
            "secret-reader",
            "--verb=get",
            "--resource=secrets",
            "-n",
            "dev",
        ],
    );
    assert!(!secrets.status.success());
    assert_eq!(
        stderr(&secrets),
        format!(
            "Error from server (Forbidden): roles.rbac.authorization.k8s.io \"secret-reader\" is forbidden: {NOT_HELD}\n{{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}}"
        )
    );
    // What bob holds in dev he may grant there.
    let pods = as_bob(
        &s,
        &[
            "create",
            "role",
            "pod-getter",
            "--verb=get",
            "--resource=pods",
            "-n",
            "dev",
        ],
    );
    assert!(pods.status.success(), "{}", stderr(&pods));
    // Adding a verb bob lacks is refused on update too (several missing
    // verbs on one resource are listed as one rule).
    let patch = as_bob(
        &s,
        &[
            "patch",
            "role",
            "pod-getter",
            "-n",
            "dev",
            "--type=json",
            "-p",
            r#"[{"op": "replace", "path": "/rules/0/verbs", "value": ["get", "delete", "list"]}]"#,
        ],
    );
    assert_eq!(
        stderr(&patch),
        format!(
            "Error from server (Forbidden): roles.rbac.authorization.k8s.io \"pod-getter\" is forbidden: {NOT_HELD}\n{{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\" \"list\"]}}"
        )
    );
    // A namespace's rules do not count for a ClusterRole.
    let cluster = as_bob(
        &s,
        &[
            "create",
            "clusterrole",
            "pod-getter",
            "--verb=get",
            "--resource=pods",
        ],
    );
    assert_eq!(
        stderr(&cluster),
        format!(
            "Error from server (Forbidden): clusterroles.rbac.authorization.k8s.io \"pod-getter\" is forbidden: {NOT_HELD}\n{{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\"]}}"
        )
    );

    // With `escalate` on roles in dev, bob may grant anything there.
    s.ok(&[
        "create",
        "role",
        "escalator",
        "--verb=escalate",
        "--resource=roles.rbac.authorization.k8s.io",
        "-n",
        "dev",
    ]);
    s.ok(&[
        "create",
        "rolebinding",
        "bob-escalator",
        "--role=escalator",
        "--user=bob",
        "-n",
        "dev",
    ]);
    wait_bob_can(
        &s,
        &["escalate", "roles.rbac.authorization.k8s.io", "-n", "dev"],
    );
    let escalated = as_bob(
        &s,
        &[
            "create",
            "role",
            "secret-reader",
            "--verb=get",
            "--resource=secrets",
            "-n",
            "dev",
        ],
    );
    assert!(escalated.status.success(), "{}", stderr(&escalated));
    let rules = s.ok(&[
        "get",
        "role",
        "secret-reader",
        "-n",
        "dev",
        "-o",
        "jsonpath={.rules[0].resources}",
    ]);
    assert_eq!(rules, r#"["secrets"]"#);
}

#[test]
fn bindings_need_the_bound_rules_or_bind_on_the_role() {
    let s = Server::start();
    s.ok(&["create", "namespace", "dev"]);
    s.ok(&[
        "create",
        "role",
        "binding-writer",
        "--verb=create,update",
        "--resource=rolebindings.rbac.authorization.k8s.io",
        "-n",
        "dev",
    ]);
    s.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
        "-n",
        "dev",
    ]);
    s.ok(&[
        "create",
        "clusterrole",
        "crb-writer",
        "--verb=create",
        "--resource=clusterrolebindings.rbac.authorization.k8s.io",
    ]);
    for role in ["binding-writer", "pod-reader"] {
        s.ok(&[
            "create",
            "rolebinding",
            &format!("bob-{role}"),
            &format!("--role={role}"),
            "--user=bob",
            "-n",
            "dev",
        ]);
    }
    s.ok(&[
        "create",
        "clusterrolebinding",
        "bob-crb-writer",
        "--clusterrole=crb-writer",
        "--user=bob",
    ]);
    wait_bob_can(&s, &["list", "pods", "-n", "dev"]);
    wait_bob_can(
        &s,
        &[
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            "-n",
            "dev",
        ],
    );
    wait_bob_can(
        &s,
        &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
    );

    let admin = as_bob(
        &s,
        &[
            "create",
            "rolebinding",
            "bob-admin",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "-n",
            "dev",
        ],
    );
    assert!(!admin.status.success());
    assert_eq!(
        stderr(&admin),
        format!(
            // kubectl's `create rolebinding` words its own prefix.
            "error: failed to create rolebinding: rolebindings.rbac.authorization.k8s.io \"bob-admin\" is forbidden: {NOT_HELD}\n{{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}}\n{{NonResourceURLs:[\"*\"], Verbs:[\"*\"]}}"
        )
    );
    // A role whose rules bob holds he may bind without `bind`.
    let held = as_bob(
        &s,
        &[
            "create",
            "rolebinding",
            "alice-pod-reader",
            "--role=pod-reader",
            "--user=alice",
            "-n",
            "dev",
        ],
    );
    assert!(held.status.success(), "{}", stderr(&held));
    // A missing role is NotFound, as upstream's registry lookup.
    let ghost = as_bob(
        &s,
        &[
            "create",
            "rolebinding",
            "ghost",
            "--role=ghost",
            "--user=bob",
            "-n",
            "dev",
        ],
    );
    assert_eq!(
        stderr(&ghost),
        "error: failed to create rolebinding: roles.rbac.authorization.k8s.io \"ghost\" not found"
    );

    // `bind` on the clusterrole named cluster-admin, in dev only.
    s.ok(&[
        "create",
        "role",
        "admin-binder",
        "--verb=bind",
        "--resource=clusterroles.rbac.authorization.k8s.io",
        "--resource-name=cluster-admin",
        "-n",
        "dev",
    ]);
    s.ok(&[
        "create",
        "rolebinding",
        "bob-admin-binder",
        "--role=admin-binder",
        "--user=bob",
        "-n",
        "dev",
    ]);
    wait_bob_can(
        &s,
        &[
            "bind",
            "clusterroles.rbac.authorization.k8s.io/cluster-admin",
            "-n",
            "dev",
        ],
    );
    let bound = as_bob(
        &s,
        &[
            "create",
            "rolebinding",
            "bob-admin",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "-n",
            "dev",
        ],
    );
    assert!(bound.status.success(), "{}", stderr(&bound));
    // The namespaced `bind` does not reach a ClusterRoleBinding.
    let cluster = as_bob(
        &s,
        &[
            "create",
            "clusterrolebinding",
            "bob-cluster-admin",
            "--clusterrole=cluster-admin",
            "--user=bob",
        ],
    );
    assert!(
        !cluster.status.success()
            && stderr(&cluster).contains(
                "clusterrolebindings.rbac.authorization.k8s.io \"bob-cluster-admin\" is forbidden: user \"bob\""
            ),
        "{}",
        stderr(&cluster)
    );
}

#[test]
fn the_admin_binds_and_reconciles_anything() {
    let s = Server::start();
    s.ok(&[
        "create",
        "clusterrolebinding",
        "carol-admin",
        "--clusterrole=cluster-admin",
        "--user=carol",
    ]);
    let reconciled = s.ok_stdin(
        &["auth", "reconcile", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: everything\nrules:\n- apiGroups: [\"*\"]\n  resources: [\"*\"]\n  verbs: [\"*\"]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: dave-everything\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: everything\nsubjects:\n- kind: User\n  name: dave\n  apiGroup: rbac.authorization.k8s.io\n",
    );
    assert!(
        reconciled.contains("clusterrole.rbac.authorization.k8s.io/everything reconciled"),
        "{reconciled}"
    );
    // Once bound to everything, dave may grant anything (he holds it).
    wait_for(30, "dave may do anything", || {
        s.kubectl(&["auth", "can-i", "*", "*", "--as=dave"])
            .status
            .success()
    });
    let granted = s.kubectl(&[
        "create",
        "clusterrole",
        "secret-admin",
        "--verb=*",
        "--resource=secrets",
        "--as=dave",
    ]);
    assert!(granted.status.success(), "{}", stderr(&granted));
}
