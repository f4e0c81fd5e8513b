//! The `pods/eviction` subresource (upstream
//! pkg/registry/core/pod/storage/eviction.go): a delete of a pod that first
//! takes one disruption from the PodDisruptionBudget covering it, writing
//! the budget's status with a resourceVersion precondition so that racing
//! evictions never both take the last disruption.

use serde_json::{Value, json};

use crate::resources::{self, ResourceType};
use crate::selectors::LabelSelector;
use crate::storage::StoreError;

use super::Api;
use super::meta::{self, str_at};
use super::objects::{self, DeleteOptions, ListOptions};
use super::status::{self, ApiError};

/// Status causes of type `DisruptionBudget` (upstream `policyv1.DisruptionBudgetCause`).
pub const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";

/// Upstream's message when a budget allows no disruption.
pub const VIOLATES_BUDGET: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

/// Upstream `MaxDisruptedPodSize`: evictions the controller has not yet confirmed.
const MAX_DISRUPTED_PODS: usize = 2000;

/// How often a budget write is retried on a conflict.
const CONFLICT_RETRIES: usize = 20;

fn pods() -> Result<&'static ResourceType, ApiError> {
    resources::find("", "v1", "pods").ok_or_else(ApiError::path_not_found)
}

fn budgets() -> Result<&'static ResourceType, ApiError> {
    resources::find("policy", "v1", "poddisruptionbudgets").ok_or_else(ApiError::path_not_found)
}

/// 429 TooManyRequests with a `DisruptionBudget` cause, as upstream's
/// `NewTooManyRequests(..., 0)` plus the cause.
pub fn too_many_requests(cause: String) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", VIOLATES_BUDGET);
    e.details = Some(json!({"causes": [{"reason": DISRUPTION_BUDGET_CAUSE, "message": cause}]}));
    e
}

/// Whether the pod's Ready condition is True.
pub fn is_pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Pods whose eviction needs no budget: finished, pending or already
/// being deleted (upstream `canIgnorePDB`).
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(
        str_at(pod, "/status/phase"),
        Some("Succeeded" | "Failed" | "Pending") | None
    ) || meta::is_deleting(pod)
}

/// Whether a budget's selector covers the pod; an empty or missing selector
/// covers nothing here, as upstream's eviction decides.
fn budget_covers(budget: &Value, pod: &Value) -> bool {
    let Some(sel) = budget.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        return false;
    };
    match LabelSelector::from_json(sel) {
        Some(s) if !s.is_empty() => s.matches(pod),
        _ => false,
    }
}

/// Sets the `DisruptionAllowed` condition from `status.disruptionsAllowed`
/// (upstream `pdbhelper.UpdateDisruptionAllowedCondition`).
pub fn update_disruption_allowed_condition(status: &mut Value) {
    let allowed = status
        .get("disruptionsAllowed")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let observed = status
        .get("observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let (cond_status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionAllowed"))
    {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some(cond_status) {
                c["status"] = json!(cond_status);
                c["lastTransitionTime"] = json!(meta::now());
            }
            c["reason"] = json!(reason);
            c["observedGeneration"] = json!(observed);
        }
        None => conditions.push(json!({
            "type": "DisruptionAllowed",
            "status": cond_status,
            "reason": reason,
            "message": "",
            "observedGeneration": observed,
            "lastTransitionTime": meta::now(),
        })),
    }
    status["conditions"] = Value::Array(conditions);
}

/// What an eviction does with the budget covering the pod.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Delete the pod without touching the budget.
    Delete,
    /// Take one disruption: the budget's new status.
    Take(Value),
}

/// Decides an eviction against one budget (upstream `checkAndDecrement` and
/// the unhealthy-pod policies before it).
fn decide(budget: &Value, pod: &Value, pod_name: &str) -> Result<Decision, ApiError> {
    let status = budget.get("status").cloned().unwrap_or_else(|| json!({}));
    let int = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
    let name = meta::name(budget);
    if !is_pod_ready(pod) {
        let policy = str_at(budget, "/spec/unhealthyPodEvictionPolicy");
        if policy == Some("AlwaysAllow") {
            return Ok(Decision::Delete);
        }
        // IfHealthyBudget: an unready pod goes when the budget is met.
        if int("currentHealthy") >= int("desiredHealthy") && int("desiredHealthy") > 0 {
            return Ok(Decision::Delete);
        }
    }
    let generation = budget
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if int("observedGeneration") < generation {
        return Err(too_many_requests(format!(
            "The disruption budget {name} is still being processed by the server."
        )));
    }
    let allowed = int("disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden(format!(
            "poddisruptionbudgets.policy \"{name}\" is forbidden: pdb disruptions allowed is negative"
        )));
    }
    let disrupted = status
        .get("disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len);
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(format!(
            "poddisruptionbudgets.policy \"{name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
        )));
    }
    if allowed == 0 {
        return Err(too_many_requests(format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            int("desiredHealthy"),
            int("currentHealthy")
        )));
    }
    let mut status = status;
    status["disruptionsAllowed"] = json!(allowed - 1);
    if allowed - 1 == 0 {
        update_disruption_allowed_condition(&mut status);
    }
    if !status.get("disruptedPods").is_some_and(Value::is_object) {
        status["disruptedPods"] = json!({});
    }
    status["disruptedPods"][pod_name] = json!(meta::now());
    Ok(Decision::Take(status))
}

impl Api {
    /// Evicts a pod (`POST pods/<name>/eviction`); the answer is a success Status.
    pub async fn evict(&self, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
        let pods = pods()?;
        check_body(body, ns, name)?;
        let opts =
            DeleteOptions::default().merge_body(body.get("deleteOptions").unwrap_or(&Value::Null));
        let (pod, _) = self
            .read(pods, Some(ns), name)
            .await?
            .ok_or_else(|| ApiError::not_found(pods, name))?;
        if !can_ignore_budget(&pod) {
            let budgets = self.budgets_of(ns, &pod).await?;
            match budgets.as_slice() {
                [] => {}
                [budget] => {
                    self.take_disruption(ns, meta::name(budget), &pod, &opts)
                        .await?
                }
                _ => {
                    return Err(ApiError::internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    ));
                }
            }
        }
        let opts = self.mark_disruption_target(ns, name, &pod, opts).await?;
        self.delete(pods, Some(ns), name, &opts).await?;
        Ok(status::success(json!({})))
    }

    /// The budgets in `ns` whose selector covers the pod.
    async fn budgets_of(&self, ns: &str, pod: &Value) -> Result<Vec<Value>, ApiError> {
        let page = self
            .list(budgets()?, Some(ns), &ListOptions::default())
            .await?;
        Ok(page
            .items
            .into_iter()
            .filter(|b| budget_covers(b, pod))
            .collect())
    }

    /// Takes one disruption from the budget, re-reading it on conflicts.
    async fn take_disruption(
        &self,
        ns: &str,
        budget_name: &str,
        pod: &Value,
        opts: &DeleteOptions,
    ) -> Result<(), ApiError> {
        let r = budgets()?;
        let key = meta::key(r, Some(ns), budget_name);
        for _ in 0..CONFLICT_RETRIES {
            let Some(kv) = self
                .store
                .get(&key, None)
                .await
                .map_err(|e| ApiError::from_store(e, r, budget_name))?
            else {
                // The budget went away in between: nothing protects the pod.
                return Ok(());
            };
            let mut budget = objects::decode(r, &kv)?;
            let status = match decide(&budget, pod, meta::name(pod))? {
                Decision::Delete => return Ok(()),
                Decision::Take(status) => status,
            };
            if opts.dry_run {
                return Ok(());
            }
            budget["status"] = status;
            match self
                .store
                .update(&key, objects::encode(r, &budget)?, kv.mod_revision)
                .await
            {
                Ok(_) => {
                    tracing::debug!(
                        namespace = ns,
                        budget = budget_name,
                        pod = meta::name(pod),
                        "disruption taken"
                    );
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, r, budget_name)),
            }
        }
        Err(ApiError::modified(r, budget_name))
    }

    /// Adds the `DisruptionTarget` condition to the pod before its delete
    /// (upstream `addConditionAndDeletePod`); a resourceVersion
    /// precondition that held moves to the updated pod.
    async fn mark_disruption_target(
        &self,
        ns: &str,
        name: &str,
        pod: &Value,
        mut opts: DeleteOptions,
    ) -> Result<DeleteOptions, ApiError> {
        if opts.dry_run || meta::is_deleting(pod) {
            return Ok(opts);
        }
        let rv = str_at(pod, "/metadata/resourceVersion").unwrap_or("");
        if opts
            .precondition_resource_version
            .as_deref()
            .is_some_and(|p| p != rv)
        {
            // The delete reports the failed precondition.
            return Ok(opts);
        }
        let mut new = pod.clone();
        meta::set_condition(
            &mut new["status"],
            json!({
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
                "lastProbeTime": null,
                "lastTransitionTime": meta::now(),
            }),
        );
        let written = self
            .update(
                pods()?,
                Some(ns),
                name,
                new,
                objects::UpdateMode::Status,
                &objects::WriteOptions::default(),
            )
            .await?;
        if opts.precondition_resource_version.is_some() {
            opts.precondition_resource_version =
                str_at(&written.object, "/metadata/resourceVersion").map(str::to_string);
        }
        Ok(opts)
    }
}

/// The body must be an Eviction (policy/v1 or v1beta1) naming the URL's pod.
fn check_body(body: &Value, ns: &str, name: &str) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object of kind Eviction",
        ));
    }
    if let Some(kind) = str_at(body, "/kind").filter(|k| !k.is_empty() && *k != "Eviction") {
        return Err(ApiError::bad_request(format!(
            "{kind} is not suitable for evicting pod {name} from namespace {ns}"
        )));
    }
    if let Some(av) = str_at(body, "/apiVersion")
        .filter(|a| !a.is_empty() && !matches!(*a, "policy/v1" | "policy/v1beta1" | "v1"))
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version (policy/v1)"
        )));
    }
    if str_at(body, "/metadata/name").is_some_and(|n| !n.is_empty() && n != name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    if str_at(body, "/metadata/namespace").is_some_and(|n| !n.is_empty() && n != ns) {
        return Err(ApiError::bad_request(
            "namespace in URL does not match namespace in Eviction object",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready: bool) -> Value {
        json!({"metadata": {"name": "p", "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    fn budget(allowed: i64, current: i64, desired: i64) -> Value {
        json!({"metadata": {"name": "b", "generation": 1}, "spec": {"selector": {"matchLabels": {"app": "web"}}},
            "status": {"observedGeneration": 1, "disruptionsAllowed": allowed, "currentHealthy": current, "desiredHealthy": desired, "expectedPods": current}})
    }

    #[test]
    fn a_budget_without_disruptions_answers_429_with_its_numbers() {
        let err = decide(&budget(0, 2, 2), &pod(true), "p").unwrap_err();
        assert_eq!((err.code, err.reason), (429, "TooManyRequests"));
        assert_eq!(err.message, VIOLATES_BUDGET);
        assert_eq!(
            err.status()["details"]["causes"][0],
            json!({"reason": "DisruptionBudget", "message": "The disruption budget b needs 2 healthy pods and has 2 currently"})
        );
    }

    #[test]
    fn taking_the_last_disruption_records_the_pod_and_flips_the_condition() {
        let Decision::Take(status) = decide(&budget(1, 3, 2), &pod(true), "p").unwrap() else {
            panic!("expected a disruption to be taken");
        };
        assert_eq!(status["disruptionsAllowed"], 0);
        assert!(status["disruptedPods"]["p"].is_string());
        assert_eq!(status["conditions"][0]["reason"], "InsufficientPods");
        assert_eq!(status["conditions"][0]["status"], "False");
    }

    #[test]
    fn unready_pods_go_when_the_budget_is_met_or_the_policy_allows() {
        assert_eq!(
            decide(&budget(0, 2, 2), &pod(false), "p").unwrap(),
            Decision::Delete
        );
        let mut b = budget(0, 1, 2);
        assert!(decide(&b, &pod(false), "p").is_err());
        b["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert_eq!(decide(&b, &pod(false), "p").unwrap(), Decision::Delete);
    }

    #[test]
    fn an_unobserved_generation_is_still_being_processed() {
        let mut b = budget(1, 3, 2);
        b["metadata"]["generation"] = json!(2);
        let err = decide(&b, &pod(true), "p").unwrap_err();
        assert_eq!(err.code, 429);
        assert_eq!(
            err.status()["details"]["causes"][0]["message"],
            "The disruption budget b is still being processed by the server."
        );
    }

    #[test]
    fn empty_selectors_cover_no_pod_and_pending_pods_bypass() {
        let mut b = budget(0, 0, 0);
        assert!(budget_covers(&b, &pod(true)));
        b["spec"]["selector"] = json!({});
        assert!(!budget_covers(&b, &pod(true)));
        let mut p = pod(true);
        assert!(!can_ignore_budget(&p));
        p["status"]["phase"] = json!("Pending");
        assert!(can_ignore_budget(&p));
    }

    #[test]
    fn eviction_bodies_must_name_the_pod() {
        assert!(check_body(&json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "p"}}), "d", "p").is_ok());
        assert_eq!(
            check_body(&json!({"metadata": {"name": "q"}}), "d", "p")
                .unwrap_err()
                .message,
            "name in URL does not match name in Eviction object"
        );
    }
}
