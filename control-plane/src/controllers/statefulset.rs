//! The StatefulSet controller: pods with stable names `<set>-<ordinal>`,
//! hostname and subdomain, their PersistentVolumeClaims from
//! `volumeClaimTemplates`, created in order (OrderedReady) or all at once
//! (Parallel), removed from the highest ordinal down, replaced one at a time
//! from the top on template changes (RollingUpdate with partition), and the
//! status `kubectl rollout status` reads (upstream pkg/controller/statefulset,
//! without ControllerRevision objects).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::ControllerContext;
use super::deployment::hash;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

pub const REVISION_LABEL: &str = "controller-revision-hash";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

#[derive(Debug, thiserror::Error)]
pub enum StatefulSetError {
    #[error("failed to {action} for stateful set {name}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    events: util::Events,
}

/// Starts the controller.
pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let sets = ctx.informers.informer(
        Api::<StatefulSet>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |s: &StatefulSet| q.add_key(util::key_of(s)),
    );
    let q = queue.clone();
    let pods = ctx.informers.informer(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |pod: &Pod| {
            if let Some(r) = util::controller_ref(pod.metadata.owner_references.as_ref())
                && r.kind == "StatefulSet"
            {
                q.add(&pod.namespace().unwrap_or_default(), &r.name);
            }
        },
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        sets,
        pods,
        events: util::Events::new(ctx.client.clone(), "statefulset-controller"),
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.sets.wait_until_ready().await;
        c.pods.wait_until_ready().await;
        util::run_workers("statefulset", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

/// The ordinal of a pod named `<set>-<n>`.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The revision name of the set's current template.
pub fn update_revision(sts: &StatefulSet) -> String {
    let spec = sts.spec.clone().unwrap_or_default();
    let collisions = sts.status.as_ref().and_then(|s| s.collision_count);
    format!(
        "{}-{}",
        sts.name_any(),
        hash::compute_hash(&spec.template, collisions)
    )
}

fn claim_name(template: &PersistentVolumeClaim, set: &str, ordinal: i32) -> String {
    format!("{}-{set}-{ordinal}", template.name_any())
}

/// The pod for one ordinal, with its identity and claims.
pub fn pod_for(sts: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
    let set = sts.name_any();
    let spec = sts.spec.clone().unwrap_or_default();
    let tm = spec.template.metadata.unwrap_or_default();
    let name = format!("{set}-{ordinal}");
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), revision.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut pod_spec = spec.template.spec.unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    if let Some(svc) = spec.service_name.filter(|s| !s.is_empty()) {
        pod_spec.subdomain = Some(svc);
    }
    for t in spec.volume_claim_templates.iter().flatten() {
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        let claim = claim_name(t, &set, ordinal);
        volumes.retain(|v| v.name != t.name_any());
        volumes.push(Volume {
            name: t.name_any(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![util::owner_ref(sts)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.labels().get(REVISION_LABEL).map(String::as_str)
}

fn running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && util::is_pod_ready(pod)
        && pod.metadata.deletion_timestamp.is_none()
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, StatefulSetError> {
    let Some(sts) = c.sets.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(None);
    };
    let err = |action: &'static str| {
        let name = name.clone();
        move |source| StatefulSetError::Api {
            action,
            name,
            source,
        }
    };
    let uid = sts.uid().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let update = update_revision(&sts);
    let pods_api: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let mut pods: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    for pod in c.pods.state() {
        if pod.namespace().as_deref() == Some(ns.as_str())
            && util::controller_ref(pod.metadata.owner_references.as_ref())
                .is_some_and(|r| r.uid == uid)
            && let Some(o) = ordinal(&name, &pod.name_any())
        {
            pods.insert(o, pod);
        }
    }
    let old_status = sts.status.clone().unwrap_or_default();
    if sts.metadata.deletion_timestamp.is_none() {
        manage(c, &sts, &pods, replicas, parallel, &update, &pods_api)
            .await
            .map_err(err("manage pods"))?;
    }
    let active: Vec<&Arc<Pod>> = pods.values().filter(|p| util::is_pod_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = util::now_secs();
    let updated = count(&|p| revision_of(p) == Some(update.as_str()));
    let mut current_revision = old_status
        .current_revision
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| update.clone());
    if updated == replicas && count(&util::is_pod_ready) == replicas {
        current_revision = update.clone();
    }
    let status = StatefulSetStatus {
        replicas: count(&|_| true),
        ready_replicas: Some(count(&util::is_pod_ready)),
        available_replicas: Some(count(&|p| util::is_pod_available(p, min_ready, now))),
        current_replicas: Some(count(&|p| {
            revision_of(p) == Some(current_revision.as_str())
        })),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update),
        observed_generation: sts.metadata.generation,
        collision_count: Some(old_status.collision_count.unwrap_or(0)),
        conditions: old_status.conditions.clone(),
    };
    if status != old_status {
        let api: Api<StatefulSet> = Api::namespaced(c.client.clone(), &ns);
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(err("update status")(e)),
        }
    }
    Ok(None)
}

/// One step toward the wanted pods; waits (returns) whenever OrderedReady
/// asks to.
async fn manage(
    c: &Ctx,
    sts: &StatefulSet,
    pods: &BTreeMap<i32, Arc<Pod>>,
    replicas: i32,
    parallel: bool,
    update: &str,
    api: &Api<Pod>,
) -> Result<(), kube::Error> {
    let set = sts.name_any();
    let ns = sts.namespace().unwrap_or_default();
    for ordinal in 0..replicas {
        match pods.get(&ordinal) {
            None => {
                create_claims(c, sts, ordinal, &ns).await?;
                match api
                    .create(&PostParams::default(), &pod_for(sts, ordinal, update))
                    .await
                {
                    Ok(p) => c.events.normal(
                        sts,
                        "SuccessfulCreate",
                        format!(
                            "create Pod {} in StatefulSet {set} successful",
                            p.name_any()
                        ),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
                    Err(e) => return Err(e),
                }
                if !parallel {
                    return Ok(());
                }
            }
            Some(pod) => {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Failed") | Some("Succeeded"))
                    && pod.metadata.deletion_timestamp.is_none()
                {
                    delete(api, pod).await?;
                    if !parallel {
                        return Ok(());
                    }
                }
                if !parallel && !running_and_ready(pod) {
                    return Ok(());
                }
            }
        }
    }
    // Scale down from the highest ordinal, one at a time unless Parallel.
    let condemned: Vec<&Arc<Pod>> = pods.range(replicas..).rev().map(|(_, p)| p).collect();
    for pod in &condemned {
        if pod.metadata.deletion_timestamp.is_some() {
            if !parallel {
                return Ok(());
            }
            continue;
        }
        delete(api, pod).await?;
        c.events.normal(
            sts,
            "SuccessfulDelete",
            format!(
                "delete Pod {} in StatefulSet {set} successful",
                pod.name_any()
            ),
        );
        if !parallel {
            return Ok(());
        }
    }
    // Rolling update: replace the highest outdated ordinal at or above the
    // partition once every pod is running and ready.
    let spec = sts.spec.clone().unwrap_or_default();
    let strategy = spec.update_strategy.unwrap_or_default();
    if strategy.type_.as_deref() == Some("OnDelete") {
        return Ok(());
    }
    let partition = strategy
        .rolling_update
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if pods.range(..replicas).any(|(_, p)| !running_and_ready(p))
        || pods.range(..replicas).count() < usize::try_from(replicas).unwrap_or(0)
    {
        return Ok(());
    }
    if let Some((_, pod)) = pods
        .range(partition..replicas)
        .rev()
        .find(|(_, p)| revision_of(p) != Some(update))
    {
        delete(api, pod).await?;
    }
    Ok(())
}

async fn create_claims(
    c: &Ctx,
    sts: &StatefulSet,
    ordinal: i32,
    ns: &str,
) -> Result<(), kube::Error> {
    let set = sts.name_any();
    let spec = sts.spec.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), ns);
    for t in spec.volume_claim_templates.iter().flatten() {
        let mut claim = t.clone();
        let mut labels = spec.selector.match_labels.clone().unwrap_or_default();
        labels.extend(t.labels().clone());
        claim.metadata = ObjectMeta {
            name: Some(claim_name(t, &set, ordinal)),
            labels: Some(labels),
            annotations: t.metadata.annotations.clone(),
            ..Default::default()
        };
        claim.status = None;
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn delete(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_parse_only_the_sets_own_pods() {
        assert_eq!(ordinal("web", "web-3"), Some(3));
        assert_eq!(ordinal("web", "web-x-3"), None);
        assert_eq!(ordinal("web", "webby-3"), None);
    }

    #[test]
    fn pods_get_identity_and_claims() {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "d", "uid": "s1"},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"]}}]}
        }))
        .unwrap();
        let pod = pod_for(&sts, 1, "db-abc");
        assert_eq!(pod.name_any(), "db-1");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let claim = spec.volumes.unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, "data-db-1");
        assert_eq!(
            pod.metadata
                .labels
                .unwrap()
                .get(REVISION_LABEL)
                .map(String::as_str),
            Some("db-abc")
        );
    }
}
