//! The resourcequota controller (upstream pkg/controller/resourcequota):
//! copies each quota's `spec.hard` into `status.hard` and recounts
//! `status.used` from the objects of its namespace whenever a quota, pod,
//! service, configmap, secret or claim there changes, and every minute for
//! the object counts of other types. Admission charges creates to
//! `status.used` between two recounts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use agent::quantity::ParsedQuantity;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use serde_json::Value;

use super::ControllerContext;
use super::informers::Change;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};
use crate::admission::usage::{self, Usage};
use crate::resources::{self, ResourceType};

/// How often every quota is recounted without a change (upstream's full
/// resync is 5 minutes; object counts of unwatched types need it).
const RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("failed to {action} for resource quota {name}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to encode resource quota {name}")]
    Encode {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

struct Ctx {
    client: kube::Client,
    quotas: Store<ResourceQuota>,
}

/// Queues every quota of a namespace.
fn enqueue_namespace(queue: &Queue, quotas: &Store<ResourceQuota>, ns: Option<String>) {
    let ns = ns.unwrap_or_default();
    for q in quotas.state() {
        if q.namespace().as_deref() == Some(ns.as_str()) {
            queue.add(&ns, &q.name_any());
        }
    }
}

/// Whether a change can lower a quota's usage, which only the recount
/// notices (upstream's replenishment): a deletion, or a pod that stopped
/// counting (terminal, or being deleted). Creates and other updates are
/// charged by admission; recounting on them would race with it (admission
/// charges the quota before the object is stored, so a recount in between
/// undercounts and lets more objects in than the quota allows). A Service
/// changing type is caught by the periodic resync.
fn replenishes<K: 'static>(change: Change<'_, K>) -> bool {
    let obj = match change {
        Change::Deleted(_) => return true,
        Change::Listed(_) => return false,
        Change::Applied(obj) => obj,
    };
    let Some(pod) = (obj as &dyn std::any::Any).downcast_ref::<Pod>() else {
        return false;
    };
    pod.metadata.deletion_timestamp.is_some()
        || pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// Whether a quota event calls for a recount: every quota listed (at start
/// and after a relist), and a quota whose `spec.hard` its status does not
/// show yet (new or changed). Status writes, admission's charges included,
/// do not: as upstream, the controller's own writes and admission's need
/// no recount, and one right after a charge would race with the create it
/// is for.
fn needs_recount(change: Change<'_, ResourceQuota>) -> bool {
    match change {
        Change::Listed(_) => true,
        Change::Deleted(_) => false,
        Change::Applied(rq) => {
            let spec = rq.spec.as_ref().and_then(|s| s.hard.as_ref());
            let status = rq.status.as_ref().and_then(|s| s.hard.as_ref());
            spec != status
        }
    }
}

macro_rules! trigger {
    ($ctx:expr, $queue:expr, $quotas:expr, $ty:ty) => {{
        let (q, s) = ($queue.clone(), $quotas.clone());
        $ctx.informers.watch_changes(
            Api::<$ty>::all($ctx.client.clone()),
            watcher::Config::default(),
            move |c: Change<'_, $ty>| {
                if replenishes(c) {
                    enqueue_namespace(&q, &s, c.object().namespace());
                }
            },
        );
    }};
}

pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let quotas = ctx.informers.informer_changes(
        Api::<ResourceQuota>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |c: Change<'_, ResourceQuota>| {
            if needs_recount(c) {
                q.add_key(util::key_of(c.object()));
            }
        },
    );
    trigger!(ctx, queue, quotas, Pod);
    // Only their deletions replenish: metadata-only watches (the garbage
    // collector's, so the server encodes each event once for both).
    trigger!(ctx, queue, quotas, PartialObjectMeta<Service>);
    trigger!(ctx, queue, quotas, PartialObjectMeta<ConfigMap>);
    trigger!(ctx, queue, quotas, PartialObjectMeta<Secret>);
    trigger!(ctx, queue, quotas, PartialObjectMeta<PersistentVolumeClaim>);
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        quotas,
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.quotas.wait_until_ready().await;
        util::run_workers("resourcequota", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

/// The resource type a quota resource name counts.
pub fn resource_for(name: &str) -> Option<&'static ResourceType> {
    let core = |plural: &str| resources::find("", "v1", plural);
    if let Some(rest) = name.strip_prefix("count/") {
        let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
        return resources::catalog()
            .iter()
            .find(|r| r.plural == plural && r.group == group && r.storage_plural == plural);
    }
    if name.contains(".storageclass.storage.k8s.io/") || name == "requests.storage" {
        return core("persistentvolumeclaims");
    }
    match name {
        "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
        "persistentvolumeclaims"
        | "configmaps"
        | "secrets"
        | "replicationcontrollers"
        | "resourcequotas" => core(name),
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        n if n.starts_with("requests.") || n.starts_with("limits.") => core("pods"),
        _ => None,
    }
}

/// `status.used` for `hard` from the objects of each counted type.
pub fn recount(
    quota: &Value,
    hard: &Usage,
    objects: &BTreeMap<&'static str, (&'static ResourceType, Vec<Value>)>,
    now: chrono::DateTime<chrono::Utc>,
) -> Usage {
    let mut total = Usage::new();
    for (r, objs) in objects.values() {
        for obj in objs {
            if usage::scopes_match(quota, r, obj) {
                total = usage::add(&total, &usage::usage(r, obj, now));
            }
        }
    }
    hard.iter()
        .map(|(k, h)| {
            let zero = ParsedQuantity::zero(h.format());
            let used = if usage::tracks(quota, k) {
                total.get(k).copied().unwrap_or(zero)
            } else {
                zero
            };
            (k.clone(), used)
        })
        .collect()
}

fn to_list(u: &Usage) -> BTreeMap<String, Quantity> {
    u.iter()
        .map(|(k, v)| (k.clone(), Quantity(v.to_string())))
        .collect()
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, QuotaError> {
    let api: Api<ResourceQuota> = Api::namespaced(c.client.clone(), &ns);
    let err = |action: &'static str| {
        let name = name.clone();
        move |source| QuotaError::Api {
            action,
            name,
            source,
        }
    };
    // Fresh, so the status write below fails if admission charged meanwhile.
    let Some(rq) = api.get_opt(&name).await.map_err(err("read the quota"))? else {
        return Ok(None);
    };
    let spec_hard = rq
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let quota = serde_json::to_value(&rq).map_err(|source| QuotaError::Encode {
        name: name.clone(),
        source,
    })?;
    let hard = usage::resource_list(quota.pointer("/spec/hard"));
    let types: BTreeSet<&'static str> = hard
        .keys()
        .filter_map(|k| resource_for(k))
        .map(|r| r.plural)
        .collect();
    let mut objects = BTreeMap::new();
    for plural in types {
        let Some(r) = hard
            .keys()
            .filter_map(|k| resource_for(k))
            .find(|r| r.plural == plural)
        else {
            continue;
        };
        let dyn_api: Api<DynamicObject> =
            Api::namespaced_with(c.client.clone(), &ns, &util::api_resource(r));
        let list = dyn_api
            .list(&ListParams::default())
            .await
            .map_err(err("list the counted objects"))?;
        let values: Vec<Value> = list
            .items
            .iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect();
        objects.insert(plural, (r, values));
    }
    let used = recount(&quota, &hard, &objects, chrono::Utc::now());
    let status = ResourceQuotaStatus {
        hard: Some(spec_hard),
        used: Some(to_list(&used)),
    };
    let same = rq.status.as_ref().is_some_and(|s| {
        s.hard == status.hard
            && usage::resource_list(serde_json::to_value(&s.used).ok().as_ref()) == used
    });
    if !same {
        let mut new = rq.clone();
        new.status = Some(status);
        api.replace_status(&name, &PostParams::default(), &new)
            .await
            .map_err(err("write the status"))?;
        tracing::debug!(namespace = %ns, quota = %name, used = %usage::pretty(&used), "quota recounted");
    }
    Ok(Some(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_new_or_changed_limits_recount_a_quota() {
        let rq = |spec: Value, status: Value| -> ResourceQuota {
            serde_json::from_value(
                json!({"metadata": {"name": "q"}, "spec": {"hard": spec}, "status": status}),
            )
            .unwrap()
        };
        let charged = rq(
            json!({"pods": "2"}),
            json!({"hard": {"pods": "2"}, "used": {"pods": "1"}}),
        );
        assert!(!needs_recount(Change::Applied(&charged)), "a charge");
        assert!(needs_recount(Change::Listed(&charged)), "at start");
        let raised = rq(
            json!({"pods": "3"}),
            json!({"hard": {"pods": "2"}, "used": {"pods": "1"}}),
        );
        assert!(needs_recount(Change::Applied(&raised)));
        let new = rq(json!({"pods": "3"}), json!({}));
        assert!(needs_recount(Change::Applied(&new)));
    }

    #[test]
    fn deletions_and_pods_that_stop_counting_replenish() {
        let cm = ConfigMap::default();
        assert!(!replenishes(Change::Applied(&cm)), "a create is charged");
        assert!(replenishes(Change::Deleted(&cm)));
        let pod = |phase: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"phase": phase}}))
                .unwrap()
        };
        assert!(!replenishes(Change::Applied(&pod("Running"))));
        assert!(replenishes(Change::Applied(&pod("Succeeded"))));
        assert!(!replenishes(Change::Listed(&pod("Failed"))));
    }

    #[test]
    fn quota_names_map_to_the_types_they_count() {
        assert_eq!(resource_for("requests.cpu").unwrap().plural, "pods");
        assert_eq!(
            resource_for("requests.storage").unwrap().plural,
            "persistentvolumeclaims"
        );
        let d = resource_for("count/deployments.apps").unwrap();
        assert_eq!((d.group, d.plural), ("apps", "deployments"));
        assert_eq!(
            resource_for("count/configmaps").unwrap().plural,
            "configmaps"
        );
        assert!(resource_for("bogus").is_none());
    }

    #[test]
    fn recount_sums_matching_objects_for_the_hard_names() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let quota =
            json!({"spec": {"hard": {"pods": "5", "requests.cpu": "2", "count/configmaps": "1"}}});
        let hard = usage::resource_list(quota.pointer("/spec/hard"));
        let pod = |cpu: &str, phase: &str| json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}, "status": {"phase": phase}});
        let objects = BTreeMap::from([(
            "pods",
            (
                pods,
                vec![
                    pod("500m", "Running"),
                    pod("250m", "Pending"),
                    pod("1", "Failed"),
                ],
            ),
        )]);
        let used = recount(&quota, &hard, &objects, chrono::Utc::now());
        assert_eq!(
            usage::pretty(&used),
            "count/configmaps=0,pods=2,requests.cpu=750m"
        );
    }
}
