//! ResourceQuota admission (upstream plugin/pkg/admission/resourcequota):
//! a create (or an update that adds usage: a claim resized, a service
//! changing type) is checked against every quota of its namespace that
//! selects it, and charged to each quota's `status.used` with a compare-and-swap on
//! the quota's revision, so that two racing creates can never both take the
//! last unit of a quota.

use serde_json::{Value, json};

use crate::resources::{self, ResourceType};
use crate::server::Api;
use crate::server::meta;
use crate::server::objects::{self, ListOptions};
use crate::server::status::{ApiError, qualified};
use crate::storage::StoreError;

use super::usage::{self, Usage};

/// How often a quota write is retried after losing a race.
const CONFLICT_RETRIES: usize = 50;

/// Resources whose request each container must state when a quota tracks
/// them (upstream `validationSet`).
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

fn quotas() -> Option<&'static ResourceType> {
    resources::find("", "v1", "resourcequotas")
}

/// What a create took from quotas, given back if the create fails.
#[derive(Debug, Default)]
pub struct Charge {
    namespace: String,
    taken: Vec<(String, Usage)>,
}

impl Charge {
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }
}

/// The quota's `status.hard` names the object uses: what this quota limits for it.
fn restricted(quota: &Value, r: &ResourceType, obj: &Value) -> Vec<String> {
    let hard = usage::resource_list(quota.pointer("/status/hard"));
    let is_pod = r.group.is_empty() && r.plural == "pods";
    let used = usage::usage(r, obj, chrono::Utc::now());
    hard.keys()
        .filter(|k| usage::tracks(quota, k))
        .filter(|k| used.contains_key(*k) || (is_pod && pod_resource(k)))
        .cloned()
        .collect()
}

/// Whether a quota resource name is one the pod evaluator computes.
fn pod_resource(name: &str) -> bool {
    matches!(
        name,
        "pods" | "count/pods" | "cpu" | "memory" | "ephemeral-storage"
    ) || name.starts_with("requests.")
        || name.starts_with("limits.")
}

/// Containers missing an explicit request or limit a quota tracks
/// (upstream pod evaluator `Constraints`).
fn pod_constraints(pod: &Value, required: &[String]) -> Result<(), String> {
    let required: Vec<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| MUST_SPECIFY.contains(r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for list in ["containers", "initContainers"] {
        for c in pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let has =
                |which: &str, res: &str| c.pointer(&format!("/resources/{which}/{res}")).is_some();
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            for r in &required {
                let present = match *r {
                    "cpu" | "requests.cpu" => has("requests", "cpu"),
                    "memory" | "requests.memory" => has("requests", "memory"),
                    "limits.cpu" => has("limits", "cpu"),
                    _ => has("limits", "memory"),
                };
                if !present {
                    let names = missing.entry(r).or_default();
                    if !names.iter().any(|n| n == name) {
                        names.push(name.to_string());
                    }
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// Checks one quota; `Ok(Some(new used))` when it must be charged.
fn check(
    quota: &Value,
    r: &ResourceType,
    obj: &Value,
    delta: &Usage,
) -> Result<Option<(Usage, Value)>, String> {
    let name = meta::name(quota);
    let restricted = restricted(quota, r, obj);
    if r.group.is_empty() && r.plural == "pods" {
        pod_constraints(obj, &restricted).map_err(|e| format!("failed quota: {name}: {e}"))?;
    }
    let used = usage::resource_list(quota.pointer("/status/used"));
    let hard = usage::resource_list(quota.pointer("/status/hard"));
    // Upstream `hasUsageStats`; the message names every restricted resource.
    if restricted.iter().any(|k| !used.contains_key(k)) {
        return Err(format!(
            "status unknown for quota: {name}, resource: {}",
            restricted.join(",")
        ));
    }
    let requested: Usage = delta
        .iter()
        .filter(|(k, v)| restricted.contains(k) && !v.is_zero())
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    if requested.is_empty() {
        return Ok(None);
    }
    let new_used = usage::add(&used, &requested);
    let exceeded: Vec<&String> = requested
        .keys()
        .filter(|k| match (new_used.get(*k), hard.get(*k)) {
            (Some(u), Some(h)) => u > h,
            _ => false,
        })
        .collect();
    if !exceeded.is_empty() {
        let mask = |u: &Usage| -> Usage {
            u.iter()
                .filter(|(k, _)| exceeded.contains(k))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            usage::pretty(&mask(&requested)),
            usage::pretty(&mask(&used)),
            usage::pretty(&mask(&hard))
        ));
    }
    let mut status_used = quota
        .pointer("/status/used")
        .cloned()
        .unwrap_or_else(|| json!({}));
    for k in requested.keys() {
        if let Some(total) = new_used.get(k) {
            status_used[k] = json!(total.to_string());
        }
    }
    Ok(Some((requested, status_used)))
}

fn forbidden(r: &ResourceType, obj: &Value, why: &str) -> ApiError {
    ApiError::forbidden(format!(
        "{} \"{}\" is forbidden: {why}",
        qualified(r),
        meta::name(obj)
    ))
}

/// Admits a create of `obj` into `ns`, charging the quotas that select it.
pub async fn admit(
    api: &Api,
    r: &ResourceType,
    ns: &str,
    obj: &Value,
    dry_run: bool,
) -> Result<Charge, ApiError> {
    charge_for(api, r, ns, None, obj, dry_run).await
}

/// Whether updates of a kind can change its quota usage: the evaluators
/// upstream registers for updates (claims resized, services changing type;
/// a pod's resources only change through its `resize` subresource).
fn usage_changes_on_update(r: &ResourceType) -> bool {
    r.group.is_empty() && matches!(r.plural, "persistentvolumeclaims" | "services")
}

/// Admits an update of `old` to `obj`, charging what it adds to usage.
pub async fn admit_update(
    api: &Api,
    r: &ResourceType,
    ns: &str,
    old: &Value,
    obj: &Value,
    dry_run: bool,
) -> Result<Charge, ApiError> {
    if !usage_changes_on_update(r) {
        return Ok(Charge {
            namespace: ns.to_string(),
            taken: Vec::new(),
        });
    }
    charge_for(api, r, ns, Some(old), obj, dry_run).await
}

/// Checks and charges the usage of `obj` (less that of `old` on updates).
async fn charge_for(
    api: &Api,
    r: &ResourceType,
    ns: &str,
    old: Option<&Value>,
    obj: &Value,
    dry_run: bool,
) -> Result<Charge, ApiError> {
    let mut charge = Charge {
        namespace: ns.to_string(),
        taken: Vec::new(),
    };
    let Some(qr) = quotas() else {
        return Ok(charge);
    };
    let page = api.list(qr, Some(ns), &ListOptions::default()).await?;
    let selecting: Vec<&Value> = page
        .items
        .iter()
        .filter(|q| usage::scopes_match(q, r, obj))
        .collect();
    if selecting.is_empty() {
        return Ok(charge);
    }
    let delta = match old {
        // Only what the update adds is charged (upstream
        // `SubtractWithNonNegativeResult`); nothing is given back.
        Some(old) => usage::sub(
            &usage::usage(r, obj, chrono::Utc::now()),
            &usage::usage(r, old, chrono::Utc::now()),
        ),
        None => usage::usage(r, obj, chrono::Utc::now()),
    };
    if old.is_some() && delta.values().all(|v| v.is_zero()) {
        return Ok(charge);
    }
    // Check every quota before charging any.
    for q in &selecting {
        check(q, r, obj, &delta).map_err(|why| forbidden(r, obj, &why))?;
    }
    if dry_run {
        return Ok(charge);
    }
    for q in selecting {
        let name = meta::name(q).to_string();
        match charge_one(api, qr, ns, &name, r, obj, &delta).await {
            Ok(Some(taken)) => charge.taken.push((name, taken)),
            Ok(None) => {}
            Err(e) => {
                refund(api, charge).await;
                return Err(e);
            }
        }
    }
    Ok(charge)
}

/// Charges one quota: re-reads it from the store and writes it back with
/// the revision it was read at, retrying when another write came first.
async fn charge_one(
    api: &Api,
    qr: &ResourceType,
    ns: &str,
    name: &str,
    r: &ResourceType,
    obj: &Value,
    delta: &Usage,
) -> Result<Option<Usage>, ApiError> {
    let key = meta::key(qr, Some(ns), name);
    for _ in 0..CONFLICT_RETRIES {
        let Some(kv) = api
            .store
            .get(&key, None)
            .await
            .map_err(|e| ApiError::from_store(e, qr, name))?
        else {
            return Ok(None);
        };
        let mut quota = objects::decode(qr, &kv)?;
        let Some((taken, used)) =
            check(&quota, r, obj, delta).map_err(|why| forbidden(r, obj, &why))?
        else {
            return Ok(None);
        };
        quota["status"]["used"] = used;
        match api
            .store
            .update(&key, objects::encode(qr, &quota)?, kv.mod_revision)
            .await
        {
            Ok(_) => return Ok(Some(taken)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, qr, name)),
        }
    }
    Err(ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on resourcequotas \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    ))
}

/// Gives back what a failed create took (the controller's recount would
/// also repair it, later).
pub async fn refund(api: &Api, charge: Charge) {
    let Some(qr) = quotas() else {
        return;
    };
    for (name, taken) in charge.taken {
        let key = meta::key(qr, Some(&charge.namespace), &name);
        for _ in 0..CONFLICT_RETRIES {
            let Ok(Some(kv)) = api.store.get(&key, None).await else {
                break;
            };
            let Ok(mut quota) = objects::decode(qr, &kv) else {
                break;
            };
            let used = usage::resource_list(quota.pointer("/status/used"));
            let back = usage::sub(&used, &taken);
            for k in taken.keys() {
                if let Some(v) = back.get(k) {
                    quota["status"]["used"][k] = json!(v.to_string());
                }
            }
            let Ok(body) = objects::encode(qr, &quota) else {
                break;
            };
            match api.store.update(&key, body, kv.mod_revision).await {
                Err(StoreError::Conflict { .. }) => continue,
                Err(err) => {
                    tracing::warn!(quota = %name, %err, "failed to give back quota");
                    break;
                }
                Ok(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "q"}, "spec": {"hard": hard.clone()}, "status": {"hard": hard, "used": used}})
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": resources}]}})
    }

    #[test]
    fn the_last_slot_is_taken_then_refused_with_upstreams_message() {
        let pods = find("", "v1", "pods").unwrap();
        let p = pod(json!({}));
        let delta = usage::usage(pods, &p, chrono::Utc::now());
        let q = quota(json!({"pods": "2"}), json!({"pods": "1"}));
        let (taken, used) = check(&q, pods, &p, &delta).unwrap().unwrap();
        assert_eq!(usage::pretty(&taken), "pods=1");
        assert_eq!(used, json!({"pods": "2"}));
        let q = quota(json!({"pods": "2"}), json!({"pods": "2"}));
        assert_eq!(
            check(&q, pods, &p, &delta).unwrap_err(),
            "exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
    }

    #[test]
    fn tracked_compute_resources_must_be_specified() {
        let pods = find("", "v1", "pods").unwrap();
        let p = pod(json!({"requests": {"cpu": "1"}}));
        let delta = usage::usage(pods, &p, chrono::Utc::now());
        let q = quota(
            json!({"limits.cpu": "2", "requests.cpu": "2", "limits.memory": "1Gi"}),
            json!({"limits.cpu": "0", "requests.cpu": "0", "limits.memory": "0"}),
        );
        assert_eq!(
            check(&q, pods, &p, &delta).unwrap_err(),
            "failed quota: q: must specify limits.cpu for: c; limits.memory for: c"
        );
        let q = quota(
            json!({"requests.cpu": "1500m"}),
            json!({"requests.cpu": "1"}),
        );
        assert_eq!(
            check(&q, pods, &p, &delta).unwrap_err(),
            "exceeded quota: q, requested: requests.cpu=1, used: requests.cpu=1, limited: requests.cpu=1500m"
        );
    }

    #[test]
    fn a_service_turning_node_port_is_charged_its_node_ports_only() {
        let svcs = find("", "v1", "services").unwrap();
        let old = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        let new = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}});
        let now = chrono::Utc::now();
        let delta = usage::sub(
            &usage::usage(svcs, &new, now),
            &usage::usage(svcs, &old, now),
        );
        let q = quota(
            json!({"services": "1", "services.nodeports": "0"}),
            json!({"services": "1", "services.nodeports": "0"}),
        );
        assert_eq!(
            check(&q, svcs, &new, &delta).unwrap_err(),
            "exceeded quota: q, requested: services.nodeports=1, used: services.nodeports=0, limited: services.nodeports=0"
        );
        assert!(usage_changes_on_update(svcs));
        assert!(!usage_changes_on_update(
            find("", "v1", "configmaps").unwrap()
        ));
    }

    #[test]
    fn a_claim_resize_is_charged_the_added_storage() {
        let pvcs = find("", "v1", "persistentvolumeclaims").unwrap();
        let claim = |size: &str| json!({"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": size}}}});
        let now = chrono::Utc::now();
        let delta = usage::sub(
            &usage::usage(pvcs, &claim("5Gi"), now),
            &usage::usage(pvcs, &claim("1Gi"), now),
        );
        let q = quota(
            json!({"requests.storage": "4Gi"}),
            json!({"requests.storage": "1Gi"}),
        );
        assert_eq!(
            check(&q, pvcs, &claim("5Gi"), &delta).unwrap_err(),
            "exceeded quota: q, requested: requests.storage=4Gi, used: requests.storage=1Gi, limited: requests.storage=4Gi"
        );
    }

    #[test]
    fn quotas_without_status_are_unknown_and_other_resources_pass() {
        let cms = find("", "v1", "configmaps").unwrap();
        let cm = json!({"metadata": {"name": "c"}});
        let delta = usage::usage(cms, &cm, chrono::Utc::now());
        let q = quota(
            json!({"configmaps": "1", "count/configmaps": "2", "count/secrets": "3"}),
            json!({"configmaps": "0"}),
        );
        assert_eq!(
            check(&q, cms, &cm, &delta).unwrap_err(),
            "status unknown for quota: q, resource: configmaps,count/configmaps"
        );
        let q = quota(json!({"count/secrets": "3"}), json!({"count/secrets": "3"}));
        assert_eq!(check(&q, cms, &cm, &delta).unwrap(), None);
    }
}
