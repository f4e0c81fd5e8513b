//! The Deployment controller: owns one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolls pods from old to new sets with
//! the RollingUpdate or Recreate strategy, scales proportionally, prunes old
//! sets past revisionHistoryLimit and reports progress conditions (upstream
//! pkg/controller/deployment).

pub mod hash;
pub mod rolling;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};
use hash::POD_TEMPLATE_HASH;
use rolling::{DESIRED_REPLICAS, MAX_REPLICAS};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Annotations of a Deployment not copied to its ReplicaSets
/// (upstream `skipCopyAnnotation`).
const SKIP_COPY: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
const MAX_REV_HISTORY_CHARS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("failed to {action} for deployment {name}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("replica set name {0} collides with a set of another template")]
    Collision(String),
}

struct Ctx {
    client: kube::Client,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    events: util::Events,
}

/// Starts the controller.
pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let deployments = ctx.informers.informer(
        Api::<Deployment>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |d: &Deployment| q.add_key(util::key_of(d)),
    );
    let q = queue.clone();
    let dstore = deployments.clone();
    let sets = ctx.informers.informer(
        Api::<ReplicaSet>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |rs: &ReplicaSet| {
            let ns = rs.namespace().unwrap_or_default();
            if let Some(r) = util::controller_ref(rs.metadata.owner_references.as_ref()) {
                if r.kind == "Deployment" {
                    q.add(&ns, &r.name);
                }
                return;
            }
            for d in dstore.state() {
                if d.namespace().as_deref() == Some(ns.as_str())
                    && d.spec
                        .as_ref()
                        .is_some_and(|s| util::selector_matches(&s.selector, rs.labels()))
                {
                    q.add(&ns, &d.name_any());
                }
            }
        },
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        deployments,
        sets,
        events: util::Events::new(ctx.client.clone(), "deployment-controller"),
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.deployments.wait_until_ready().await;
        c.sets.wait_until_ready().await;
        util::run_workers("deployment", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

/// One sync's view: the deployment as last written and its sets.
struct Run<'a> {
    c: &'a Ctx,
    d: Deployment,
    sets: Vec<ReplicaSet>,
}

impl Run<'_> {
    fn name(&self) -> String {
        self.d.name_any()
    }

    fn ns(&self) -> String {
        self.d.namespace().unwrap_or_default()
    }

    fn err(&self, action: &'static str) -> impl FnOnce(kube::Error) -> DeploymentError + use<> {
        let name = self.name();
        move |source| DeploymentError::Api {
            action,
            name,
            source,
        }
    }

    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.c.client.clone(), &self.ns())
    }

    fn d_api(&self) -> Api<Deployment> {
        Api::namespaced(self.c.client.clone(), &self.ns())
    }

    fn template(&self) -> PodTemplateSpec {
        self.d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }

    /// (new set, old sets), new being the oldest set whose template equals
    /// the deployment's (upstream `FindNewReplicaSet` / `FindOldReplicaSets`).
    fn split(&self) -> (Option<usize>, Vec<usize>) {
        let template = self.template();
        let mut idx: Vec<usize> = (0..self.sets.len()).collect();
        idx.sort_by_key(|&i| {
            let rs = &self.sets[i];
            (
                rs.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(util::secs)
                    .unwrap_or(0),
                rs.name_any(),
            )
        });
        let new = idx.iter().copied().find(|&i| {
            self.sets[i]
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| hash::equal_ignore_hash(t, &template))
        });
        let old = idx.into_iter().filter(|&i| Some(i) != new).collect();
        (new, old)
    }

    async fn write_status(&mut self, s: DeploymentStatus) -> Result<(), DeploymentError> {
        if self.d.status.as_ref() == Some(&s) {
            return Ok(());
        }
        let mut v = serde_json::to_value(&s).unwrap_or_default();
        if s.conditions.is_none() {
            v["conditions"] = serde_json::Value::Null;
        }
        let d = self
            .d_api()
            .patch_status(
                &self.name(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": v})),
            )
            .await
            .map_err(self.err("update status"))?;
        self.d = d;
        Ok(())
    }

    /// Sets the deployment's revision annotation (upstream `SetDeploymentRevision`).
    async fn set_revision(&mut self, revision: &str) -> Result<(), DeploymentError> {
        if self.d.annotations().get(REVISION).map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        let d = self
            .d_api()
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(self.err("set the revision"))?;
        self.d.metadata = d.metadata;
        Ok(())
    }

    /// Writes a changed set and keeps the local copy current.
    async fn replace_set(&mut self, i: usize, rs: ReplicaSet) -> Result<(), DeploymentError> {
        let name = rs.name_any();
        let out = self
            .rs_api()
            .replace(&name, &PostParams::default(), &rs)
            .await
            .map_err(self.err("update a replica set"))?;
        self.sets[i] = out;
        Ok(())
    }

    /// Scales set `i` and refreshes its replica annotations
    /// (upstream `scaleReplicaSet`); returns whether anything changed.
    async fn scale_set(&mut self, i: usize, to: i32) -> Result<bool, DeploymentError> {
        let mut rs = self.sets[i].clone();
        let size_changed = rolling::rs_replicas(&rs) != to;
        let ann_changed = set_replicas_annotations(
            &mut rs,
            rolling::replicas(&self.d),
            rolling::replicas(&self.d) + rolling::max_surge(&self.d),
        );
        if !size_changed && !ann_changed {
            return Ok(false);
        }
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(to);
        }
        let from = rolling::rs_replicas(&self.sets[i]);
        self.replace_set(i, rs).await?;
        if size_changed {
            let rs = self.sets[i].name_any();
            tracing::info!(deployment = %self.name(), %rs, from, to, "scaled replica set");
            let direction = if to > from { "up" } else { "down" };
            self.c.events.normal(
                &self.d,
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {rs} from {from} to {to}"),
            );
        }

        Ok(size_changed)
    }

    fn max_old_revision(&self, old: &[usize]) -> i64 {
        old.iter()
            .filter_map(|&i| revision_of(&self.sets[i]))
            .max()
            .unwrap_or(0)
    }

    /// Finds or creates the new set and syncs revisions
    /// (upstream `getAllReplicaSetsAndSyncRevision` + `getNewReplicaSet`).
    async fn new_set(
        &mut self,
        create: bool,
    ) -> Result<(Option<usize>, Vec<usize>), DeploymentError> {
        let (new, old) = self.split();
        let new_revision = (self.max_old_revision(&old) + 1).to_string();
        if let Some(i) = new {
            let mut rs = self.sets[i].clone();
            let mut changed = set_new_rs_annotations(&self.d, &mut rs, &new_revision, true);
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if let Some(spec) = rs.spec.as_mut()
                && spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0)
            {
                spec.min_ready_seconds = min_ready;
                changed = true;
            }
            if changed {
                self.replace_set(i, rs).await?;
            }
            let revision = self.sets[i]
                .annotations()
                .get(REVISION)
                .cloned()
                .unwrap_or_default();
            self.set_revision(&revision).await?;
            let mut s = self.d.status.clone().unwrap_or_default();
            if status::has_progress_deadline(&self.d)
                && status::get(&s, status::PROGRESSING).is_none()
            {
                let msg = format!("Found new replica set \"{}\"", self.sets[i].name_any());
                status::set(
                    &mut s,
                    status::condition(status::PROGRESSING, "True", status::FOUND_NEW_RS, msg),
                );
                self.write_status(s).await?;
            }
            return Ok((Some(i), old));
        }
        if !create {
            return Ok((None, old));
        }
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let template = self.template();
        let hash = hash::compute_hash(&template, collision);
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut new_template = template.clone();
        new_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels = Some(labels.clone());
        let mut selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", self.name());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns()),
                labels: Some(labels),
                owner_references: Some(vec![util::owner_ref(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(new_template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().map(|&i| &self.sets[i]).chain([&rs]).collect();
        let count = rolling::new_rs_new_replicas(&self.d, &all, 0);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(count);
        }
        set_new_rs_annotations(&self.d, &mut rs, &new_revision, false);
        let created = match self.rs_api().create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if count > 0 {
                    self.c.events.normal(
                        &self.d,
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {count}"),
                    );
                }
                tracing::info!(deployment = %self.name(), rs = %name, replicas = count, "created new replica set");
                created
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = self
                    .rs_api()
                    .get(&name)
                    .await
                    .map_err(self.err("read a replica set"))?;
                let same = util::controller_ref(existing.metadata.owner_references.as_ref())
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref())
                    && existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| hash::equal_ignore_hash(t, &template));
                if !same {
                    let mut s = self.d.status.clone().unwrap_or_default();
                    s.collision_count = Some(s.collision_count.unwrap_or(0) + 1);
                    self.write_status(s).await?;
                    return Err(DeploymentError::Collision(name));
                }
                self.sets.push(existing);
                let i = self.sets.len() - 1;
                return Ok((Some(i), old));
            }
            Err(e) => {
                if status::has_progress_deadline(&self.d)
                    && !matches!(&e, kube::Error::Api(s) if s.code == 403)
                {
                    let mut s = self.d.status.clone().unwrap_or_default();
                    let msg = format!("Failed to create new replica set \"{name}\": {e}");
                    status::set(
                        &mut s,
                        status::condition(
                            status::PROGRESSING,
                            "False",
                            status::FAILED_RS_CREATE,
                            msg,
                        ),
                    );
                    self.write_status(s).await?;
                }
                return Err(self.err("create a replica set")(e));
            }
        };
        self.sets.push(created);
        let i = self.sets.len() - 1;
        self.set_revision(&new_revision).await?;
        if status::has_progress_deadline(&self.d) {
            let mut s = self.d.status.clone().unwrap_or_default();
            let msg = format!("Created new replica set \"{name}\"");
            status::set(
                &mut s,
                status::condition(status::PROGRESSING, "True", status::NEW_RS_CREATED, msg),
            );
            self.write_status(s).await?;
        }
        Ok((Some(i), old))
    }

    fn active(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .copied()
            .filter(|&i| rolling::rs_replicas(&self.sets[i]) > 0)
            .collect()
    }

    fn refs(&self, idx: &[usize]) -> Vec<&ReplicaSet> {
        idx.iter().map(|&i| &self.sets[i]).collect()
    }

    fn all_idx(new: Option<usize>, old: &[usize]) -> Vec<usize> {
        old.iter().copied().chain(new).collect()
    }

    /// Upstream `isScalingEvent`.
    async fn is_scaling_event(&mut self) -> Result<bool, DeploymentError> {
        let (new, old) = self.new_set(false).await?;
        let want = rolling::replicas(&self.d);
        Ok(self
            .active(&Self::all_idx(new, &old))
            .iter()
            .any(|&i| rolling::desired_annotation(&self.sets[i]).is_some_and(|d| d != want)))
    }

    /// Upstream `sync`: scaling and paused deployments.
    async fn sync_scale(&mut self) -> Result<Requeue, DeploymentError> {
        let (new, old) = self.new_set(false).await?;
        self.scale(new, &old).await?;
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused {
            self.cleanup(&old).await?;
        }
        let all = Self::all_idx(new, &old);
        let s = status::calculate(&self.refs(&all), new.map(|i| &self.sets[i]), &self.d);
        self.write_status(s).await?;
        Ok(None)
    }

    /// Upstream `scale`: proportional scaling across active sets.
    async fn scale(&mut self, new: Option<usize>, old: &[usize]) -> Result<(), DeploymentError> {
        let want = rolling::replicas(&self.d);
        let all = Self::all_idx(new, old);
        let active = self.active(&all);
        let active_or_latest = match active.len() {
            0 => new.or_else(|| {
                old.iter().copied().max_by_key(|&i| {
                    self.sets[i]
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(util::secs)
                        .unwrap_or(0)
                })
            }),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = active_or_latest {
            if rolling::rs_replicas(&self.sets[i]) != want {
                self.scale_set(i, want).await?;
            }
            return Ok(());
        }
        if let Some(n) = new
            && is_saturated(&self.d, &self.sets[n])
        {
            for i in self.active(old) {
                self.scale_set(i, 0).await?;
            }
            return Ok(());
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        let total = rolling::sum_spec(&self.refs(&active));
        let allowed = if want > 0 {
            want + rolling::max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - total;
        let mut order = active.clone();
        let created = |rs: &ReplicaSet| {
            rs.metadata
                .creation_timestamp
                .as_ref()
                .map(util::secs)
                .unwrap_or(0)
        };
        if to_add > 0 {
            // Bigger first, newer first among equals.
            order.sort_by_key(|&i| {
                (
                    std::cmp::Reverse(rolling::rs_replicas(&self.sets[i])),
                    std::cmp::Reverse(created(&self.sets[i])),
                )
            });
        } else {
            order.sort_by_key(|&i| {
                (
                    std::cmp::Reverse(rolling::rs_replicas(&self.sets[i])),
                    created(&self.sets[i]),
                )
            });
        }
        let mut added = 0;
        let mut sizes = Vec::new();
        for &i in &order {
            let rs = &self.sets[i];
            let p = if to_add != 0 {
                rolling::proportion(rs, &self.d, to_add, added)
            } else {
                0
            };
            added += p;
            sizes.push(rolling::rs_replicas(rs) + p);
        }
        if to_add != 0
            && let Some(first) = sizes.first_mut()
        {
            *first = (*first + to_add - added).max(0);
        }
        for (k, &i) in order.iter().enumerate() {
            self.scale_set(i, sizes[k]).await?;
        }
        Ok(())
    }

    /// Upstream `rolloutRolling`.
    async fn rollout_rolling(&mut self) -> Result<Requeue, DeploymentError> {
        let (new, old) = self.new_set(true).await?;
        let Some(n) = new else {
            return Ok(None);
        };
        let all = Self::all_idx(new, &old);
        let want = rolling::replicas(&self.d);
        let new_replicas = rolling::rs_replicas(&self.sets[n]);
        let scaled_up = if new_replicas == want {
            false
        } else if new_replicas > want {
            self.scale_set(n, want).await?
        } else {
            let count = rolling::new_rs_new_replicas(&self.d, &self.refs(&all), new_replicas);
            self.scale_set(n, count).await?
        };
        if !scaled_up {
            let scaled_down = self.reconcile_old(n, &old).await?;
            if !scaled_down {
                let s = status::calculate(&self.refs(&all), Some(&self.sets[n]), &self.d);
                if status::complete(&self.d, &s) {
                    self.cleanup(&old).await?;
                }
            }
        }
        self.sync_rollout_status(new, &old).await
    }

    /// Upstream `reconcileOldReplicaSets`.
    async fn reconcile_old(&mut self, n: usize, old: &[usize]) -> Result<bool, DeploymentError> {
        let old_count = rolling::sum_spec(&self.refs(old));
        if old_count == 0 {
            return Ok(false);
        }
        let all = Self::all_idx(Some(n), old);
        let all_count = rolling::sum_spec(&self.refs(&all));
        let min_available = rolling::replicas(&self.d) - rolling::max_unavailable(&self.d);
        let new_unavailable =
            rolling::rs_replicas(&self.sets[n]) - rolling::rs_available(&self.sets[n]);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut sorted: Vec<usize> = self.active(old);
        sorted.sort_by_key(|&i| {
            (
                self.sets[i]
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(util::secs)
                    .unwrap_or(0),
                self.sets[i].name_any(),
            )
        });
        // Unhealthy pods of old sets go first (upstream `cleanupUnhealthyReplicas`).
        let mut cleaned = 0;
        for &i in &sorted {
            if cleaned >= max_scaled_down {
                break;
            }
            let (spec, avail) = (
                rolling::rs_replicas(&self.sets[i]),
                rolling::rs_available(&self.sets[i]),
            );
            if spec == avail {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(spec - avail);
            self.scale_set(i, spec - down).await?;
            cleaned += down;
        }
        // Then healthy ones down to minAvailable
        // (upstream `scaleDownOldReplicaSetsForRollingUpdate`).
        let available: i32 = all
            .iter()
            .map(|&i| rolling::rs_available(&self.sets[i]))
            .sum();
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for &i in &sorted {
                if scaled >= total {
                    break;
                }
                let spec = rolling::rs_replicas(&self.sets[i]);
                if spec == 0 {
                    continue;
                }
                let down = spec.min(total - scaled);
                self.scale_set(i, spec - down).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// Upstream `rolloutRecreate`.
    async fn rollout_recreate(&mut self) -> Result<Requeue, DeploymentError> {
        let (mut new, old) = self.new_set(false).await?;
        let mut scaled_down = false;
        for i in self.active(&old) {
            scaled_down |= self.scale_set(i, 0).await?;
        }
        let old_running = old
            .iter()
            .any(|&i| self.sets[i].status.as_ref().is_some_and(|s| s.replicas > 0));
        if scaled_down || old_running {
            return self.sync_rollout_status(new, &old).await;
        }
        if new.is_none() {
            new = self.new_set(true).await?.0;
        }
        if let Some(n) = new {
            let want = rolling::replicas(&self.d);
            self.scale_set(n, want).await?;
            let all = Self::all_idx(new, &old);
            let s = status::calculate(&self.refs(&all), Some(&self.sets[n]), &self.d);
            if status::complete(&self.d, &s) {
                self.cleanup(&old).await?;
            }
        }
        self.sync_rollout_status(new, &old).await
    }

    /// Writes the rollout status and asks to be woken for the progress
    /// deadline (upstream `syncRolloutStatus` + `requeueStuckDeployment`).
    async fn sync_rollout_status(
        &mut self,
        new: Option<usize>,
        old: &[usize],
    ) -> Result<Requeue, DeploymentError> {
        let all = Self::all_idx(new, old);
        let s = status::rollout(&self.refs(&all), new.map(|i| &self.sets[i]), &self.d);
        self.write_status(s.clone()).await?;
        if status::complete(&self.d, &s) {
            return Ok(None);
        }
        Ok(status::deadline_left(&self.d, &s, util::now_secs())
            .filter(|left| *left >= 0)
            .map(|left| Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1)))
    }

    /// Deletes the oldest empty sets beyond revisionHistoryLimit
    /// (upstream `cleanupDeployment`).
    async fn cleanup(&mut self, old: &[usize]) -> Result<(), DeploymentError> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut alive: Vec<usize> = old
            .iter()
            .copied()
            .filter(|&i| self.sets[i].metadata.deletion_timestamp.is_none())
            .collect();
        let diff = i64::try_from(alive.len()).unwrap_or(0) - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        alive.sort_by_key(|&i| {
            (
                revision_of(&self.sets[i]).unwrap_or(0),
                self.sets[i]
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(util::secs)
                    .unwrap_or(0),
            )
        });
        for &i in alive.iter().take(usize::try_from(diff).unwrap_or(0)) {
            let rs = &self.sets[i];
            let st = rs.status.clone().unwrap_or_default();
            if st.replicas != 0
                || rolling::rs_replicas(rs) != 0
                || rs.metadata.generation > st.observed_generation
            {
                continue;
            }
            match self
                .rs_api()
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(deployment = %self.name(), rs = %rs.name_any(), "deleted old replica set")
                }
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(self.err("delete an old replica set")(e)),
            }
        }
        Ok(())
    }

    /// Upstream `checkPausedConditions`.
    async fn check_paused(&mut self) -> Result<(), DeploymentError> {
        if !status::has_progress_deadline(&self.d) {
            return Ok(());
        }
        let mut s = self.d.status.clone().unwrap_or_default();
        let reason = status::get(&s, status::PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(status::TIMED_OUT) {
            return Ok(());
        }
        let paused_cond = reason.as_deref() == Some(status::PAUSED);
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused && !paused_cond {
            status::set(
                &mut s,
                status::condition(
                    status::PROGRESSING,
                    "Unknown",
                    status::PAUSED,
                    "Deployment is paused".into(),
                ),
            );
        } else if !paused && paused_cond {
            status::set(
                &mut s,
                status::condition(
                    status::PROGRESSING,
                    "Unknown",
                    status::RESUMED,
                    "Deployment is resumed".into(),
                ),
            );
        } else {
            return Ok(());
        }
        self.write_status(s).await
    }
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.annotations().get(REVISION)?.parse().ok()
}

/// Upstream `IsSaturated`.
fn is_saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let want = rolling::replicas(d);
    rolling::desired_annotation(rs) == Some(want)
        && rolling::rs_replicas(rs) == want
        && rolling::rs_available(rs) == want
}

/// Upstream `SetReplicasAnnotations`.
fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if ann.get(k) != Some(&v) {
            ann.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// Upstream `SetNewReplicaSetAnnotations`: copies the deployment's
/// annotations, raises the revision (keeping the history on rollbacks) and
/// for a set about to be created the replica annotations.
fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: &str,
    exists: bool,
) -> bool {
    let mut changed = false;
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.annotations() {
        if SKIP_COPY.contains(&k.as_str()) || ann.get(k) == Some(v) {
            continue;
        }
        ann.insert(k.clone(), v.clone());
        changed = true;
    }
    let old_revision = ann.get(REVISION).cloned();
    let old_int: i64 = old_revision
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let new_int: i64 = new_revision.parse().unwrap_or(0);
    if old_int < new_int {
        ann.insert(REVISION.into(), new_revision.into());
        changed = true;
        if let Some(old) = old_revision {
            let history = ann.get(REVISION_HISTORY).cloned().unwrap_or_default();
            let joined = if history.is_empty() {
                old
            } else {
                format!("{history},{old}")
            };
            if joined.len() <= MAX_REV_HISTORY_CHARS {
                ann.insert(REVISION_HISTORY.into(), joined);
            }
        }
    }
    if !exists {
        let want = rolling::replicas(d);
        changed |= set_replicas_annotations(rs, want, want + rolling::max_surge(d));
    }
    changed
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, DeploymentError> {
    let Some(d) = c.deployments.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(None);
    };
    let d = (*d).clone();
    let Some(spec) = d.spec.as_ref() else {
        return Ok(None);
    };
    if spec
        .selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && spec
            .selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
    {
        return Ok(None);
    }
    let sets = claim(c, &d).await?;
    let mut run = Run { c, d, sets };
    if run.d.metadata.deletion_timestamp.is_some() {
        let (new, old) = run.new_set(false).await?;
        let all = Run::all_idx(new, &old);
        let s = status::calculate(&run.refs(&all), new.map(|i| &run.sets[i]), &run.d);
        run.write_status(s).await?;
        return Ok(None);
    }
    run.check_paused().await?;
    if run.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        return run.sync_scale().await;
    }
    if run.is_scaling_event().await? {
        return run.sync_scale().await;
    }
    if is_rolling(&run.d) {
        run.rollout_rolling().await
    } else {
        run.rollout_recreate().await
    }
}

/// The deployment's sets: owned ones whose labels still match, plus
/// orphans it adopts; owned ones that stopped matching are released
/// (upstream `ReplicaSetControllerRefManager.ClaimReplicaSets`).
async fn claim(c: &Ctx, d: &Deployment) -> Result<Vec<ReplicaSet>, DeploymentError> {
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let selector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), &ns);
    let err = |action: &'static str| {
        let name = d.name_any();
        move |source| DeploymentError::Api {
            action,
            name,
            source,
        }
    };
    let mut out = Vec::new();
    for rs in c.sets.state() {
        if rs.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = util::selector_matches(&selector, rs.labels());
        match util::controller_ref(rs.metadata.owner_references.as_ref()) {
            Some(r) if r.uid == uid => {
                if matches {
                    out.push((*rs).clone());
                } else {
                    let refs: Vec<_> = rs
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    let refs = if refs.is_empty() {
                        serde_json::Value::Null
                    } else {
                        json!(refs)
                    };
                    let patch = json!({"metadata": {"ownerReferences": refs, "uid": rs.uid()}});
                    match api
                        .patch(
                            &rs.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(patch),
                        )
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if util::is_not_found(&e) => {}
                        Err(e) => return Err(err("release a replica set")(e)),
                    }
                }
            }
            None if matches
                && d.metadata.deletion_timestamp.is_none()
                && rs.metadata.deletion_timestamp.is_none() =>
            {
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(util::owner_ref(d));
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": rs.uid()}});
                match api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await
                {
                    Ok(rs) => out.push(rs),
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(err("adopt a replica set")(e)),
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_keeps_the_revision_history_and_copies_annotations() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": {"kubernetes.io/change-cause": "undo", REVISION: "3"}},
            "spec": {"replicas": 2, "selector": {}, "template": {}}
        }))
        .unwrap();
        let mut rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "annotations": {REVISION: "1"}},
            "spec": {"selector": {}}
        }))
        .unwrap();
        assert!(set_new_rs_annotations(&d, &mut rs, "3", true));
        let ann = rs.annotations();
        assert_eq!(ann.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(ann.get(REVISION_HISTORY).map(String::as_str), Some("1"));
        assert_eq!(
            ann.get("kubernetes.io/change-cause").map(String::as_str),
            Some("undo")
        );
        assert!(!set_new_rs_annotations(&d, &mut rs, "3", true));
    }

    #[test]
    fn new_sets_get_replica_annotations() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 4, "selector": {}, "template": {},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}
        }))
        .unwrap();
        let mut rs = ReplicaSet::default();
        set_new_rs_annotations(&d, &mut rs, "1", false);
        let ann = rs.annotations();
        assert_eq!(ann.get(DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(ann.get(MAX_REPLICAS).map(String::as_str), Some("5"));
    }
}
