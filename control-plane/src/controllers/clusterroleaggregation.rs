//! The clusterrole-aggregation controller (upstream
//! `pkg/controller/clusterroleaggregation`): a ClusterRole with an
//! `aggregationRule` gets as its rules the union of the rules of every
//! ClusterRole its selectors match, so `admin`, `edit` and `view` grow with
//! the `aggregate-to-*` roles (including those CRDs' owners add).

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

#[derive(Debug, thiserror::Error)]
pub enum AggregationError {
    #[error("failed to update the rules of cluster role {name}")]
    Update {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Starts the controller.
pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    // Any change may feed an aggregated role: re-check all of them (there
    // are few) on every event, as upstream does.
    let roles_for_events: Arc<std::sync::OnceLock<Store<ClusterRole>>> = Arc::default();
    let watched = Arc::clone(&roles_for_events);
    let roles = ctx.informers.informer(
        Api::<ClusterRole>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |changed: &ClusterRole| {
            if changed.aggregation_rule.is_some() {
                q.add("", &changed.name_any());
            }
            if let Some(store) = watched.get() {
                for r in store.state() {
                    if r.aggregation_rule.is_some() {
                        q.add("", &r.name_any());
                    }
                }
            }
        },
    );
    let _ = roles_for_events.set(roles.clone());
    let client = ctx.client.clone();
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        roles.wait_until_ready().await;
        for r in roles.state() {
            if r.aggregation_rule.is_some() {
                queue.add("", &r.name_any());
            }
        }
        util::run_workers("clusterrole-aggregation", 1, rx, queue, shutdown, |key| {
            let (client, roles) = (client.clone(), roles.clone());
            async move { sync(&client, &roles, key).await }
        })
        .await;
    });
}

/// The rules `role` aggregates from `all`, in name order, without duplicates.
pub fn aggregate(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Vec<PolicyRule> {
    let Some(rule) = &role.aggregation_rule else {
        return role.rules.clone().unwrap_or_default();
    };
    let selectors = rule.cluster_role_selectors.clone().unwrap_or_default();
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.name_any() != role.name_any())
        .filter(|r| {
            let labels = r.labels();
            selectors
                .iter()
                .any(|s| util::selector_matches(s, labels) && !is_empty_selector(s))
        })
        .collect();
    sources.sort_by_key(|r| r.name_any());
    let mut rules: Vec<PolicyRule> = Vec::new();
    for source in sources {
        for r in source.rules.iter().flatten() {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
    }
    rules
}

/// An empty selector would match every role (upstream matches nothing).
fn is_empty_selector(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

async fn sync(
    client: &kube::Client,
    roles: &Store<ClusterRole>,
    (_, name): Key,
) -> Result<Requeue, AggregationError> {
    let Some(role) = roles.get(&ObjectRef::new(&name)) else {
        return Ok(None);
    };
    if role.aggregation_rule.is_none() {
        return Ok(None);
    }
    let rules = aggregate(&role, &roles.state());
    if role.rules.clone().unwrap_or_default() == rules {
        return Ok(None);
    }
    let mut updated = (*role).clone();
    updated.rules = Some(rules);
    Api::<ClusterRole>::all(client.clone())
        .replace(&name, &PostParams::default(), &updated)
        .await
        .map_err(|source| AggregationError::Update {
            name: name.clone(),
            source,
        })?;
    tracing::info!(clusterrole = %name, "updated aggregated rules");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn role(v: serde_json::Value) -> Arc<ClusterRole> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn aggregated_rules_are_the_union_of_matching_roles() {
        let view = role(json!({
            "metadata": {"name": "view", "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]},
        }));
        let a = role(json!({
            "metadata": {"name": "a", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
        }));
        let b = role(json!({
            "metadata": {"name": "b", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["list"], "apiGroups": ["apps"], "resources": ["deployments"]}],
        }));
        let other = role(json!({
            "metadata": {"name": "c"},
            "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
        }));
        let rules = aggregate(&view, &[other, b, view.clone(), a]);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["pods".to_string()][..])
        );
    }
}
