//! Leader election across a restart: a server that stops gives its Leases
//! up (client-go's ReleaseOnCancel), so the next one leads at once instead
//! of waiting out the old holder's lease.

mod common;

use common::{Server, wait_for};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

const LEASES: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];

fn lease(server: &Server, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", "lease", "-n", "kube-system", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn holder(lease: &Value) -> &str {
    lease["spec"]["holderIdentity"].as_str().unwrap_or("")
}

fn time(lease: &Value, field: &str) -> Timestamp {
    lease["spec"][field]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("lease has no {field}: {lease}"))
}

#[test]
fn a_restarted_server_leads_before_the_old_lease_would_have_expired() {
    let mut server = Server::start();
    for name in LEASES {
        wait_for(30, &format!("{name} to be led"), || {
            lease(&server, name).is_some_and(|l| !holder(&l).is_empty())
        });
    }
    let before: Vec<Value> = LEASES.iter().filter_map(|n| lease(&server, n)).collect();
    assert_eq!(before.len(), LEASES.len(), "both leases readable");

    server.restart();

    for old in before {
        let name = old["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut new = None;
        wait_for(30, &format!("{name} to change hands"), || {
            new = lease(&server, &name)
                .filter(|l| !holder(l).is_empty() && holder(l) != holder(&old));
            new.is_some()
        });
        let new = new.unwrap_or_default();
        let duration = old["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(15);
        let old_expiry = time(&old, "renewTime")
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(duration))
            .expect("expiry in range");
        assert!(
            time(&new, "acquireTime") < old_expiry,
            "{name} was taken over only after the old holder's lease ran out (not released on shutdown): old {old}, new {new}"
        );
        assert_eq!(
            new["spec"]["leaseTransitions"].as_i64(),
            old["spec"]["leaseTransitions"].as_i64().map(|t| t + 1),
            "{name}: one transition"
        );
    }
}
