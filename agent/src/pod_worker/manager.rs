//! Pod workers driven by a watch on the pods bound to this node
//! (`spec.nodeName=<node>`): one task per pod UID syncs the pod through a
//! `PodRuntime` and writes `pods/status`; deleted pods are killed and their
//! API objects removed, as kubelet does once they are stopped.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::runtime::{PodRuntime, RuntimeError};
use super::static_source::{StaticPods, is_mirror};
use super::status::{StatusInputs, generate_pod_status};

/// How often a pod is re-synced without any change (kubelet's resync is 1m;
/// shorter here so runtime state shows up in status sooner).
pub const RESYNC_PERIOD: Duration = Duration::from_secs(10);

/// Seconds a pod that is no longer known gets to stop (kubelet's
/// `minimumGracePeriodInSeconds` for pods it has no spec of).
const ORPHAN_GRACE_PERIOD: i64 = 2;

/// Why one pod sync failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("failed to {step}")]
    Api {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// What every pod worker shares.
pub struct WorkerContext {
    pub client: Client,
    pub runtime: Arc<dyn PodRuntime>,
    pub host_ips: Vec<IpAddr>,
    /// Evictions and admission (`crate::eviction`).
    pub eviction: Arc<crate::eviction::EvictionHandle>,
}

fn pod_api(client: &Client, pod: &Pod) -> Api<Pod> {
    Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

/// One sync: run the pod (or kill it when it is being deleted), then report.
#[tracing::instrument(skip_all, fields(pod = ?pod.metadata.name, uid = ?pod.metadata.uid))]
pub async fn sync_pod(ctx: &WorkerContext, pod: &Pod) -> Result<(), WorkerError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api = pod_api(&ctx.client, pod);
    if pod.metadata.deletion_timestamp.is_some() {
        ctx.runtime
            .kill_pod(&uid, pod.metadata.deletion_grace_period_seconds)
            .await?;
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!("pod stopped and deleted"),
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
            Err(source) => {
                return Err(WorkerError::Api {
                    step: "delete pod",
                    source,
                });
            }
        }
        return Ok(());
    }
    if crate::eviction::worker::intercept(ctx, pod).await? {
        return Ok(());
    }
    ctx.runtime.sync_pod(pod).await?;
    let observed = ctx.runtime.observed(&uid).await?;
    let status = generate_pod_status(&StatusInputs {
        pod,
        observed: &observed.containers,
        sandbox_ready: observed.sandbox_ready,
        pod_is_terminal: false,
        host_ips: &ctx.host_ips,
        pod_ips: &observed.pod_ips,
        now: Timestamp::now(),
    });
    if pod.status.as_ref() == Some(&status) {
        return Ok(());
    }
    // A static pod's status goes to its mirror pod (another UID).
    let patch = if super::static_source::is_static(pod) {
        json!({ "status": status })
    } else {
        json!({ "metadata": { "uid": uid }, "status": status })
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| WorkerError::Api {
            step: "patch pod status",
            source,
        })?;
    tracing::debug!(phase = ?status.phase, "pod status updated");
    Ok(())
}

/// The task of one pod UID: syncs on every update and on a resync tick;
/// `None` means the pod is gone and stops the worker after a kill.
async fn pod_worker(
    ctx: Arc<WorkerContext>,
    uid: String,
    mut updates: watch::Receiver<Option<Pod>>,
    shutdown: CancellationToken,
) {
    let mut resync = tokio::time::interval(RESYNC_PERIOD);
    resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let wake = ctx.runtime.sync_signal(&uid);
    let mut evictions = ctx.eviction.subscribe();
    let woken = || async {
        match &wake {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    loop {
        let pod = updates.borrow_and_update().clone();
        match pod {
            Some(pod) => {
                if let Err(err) = sync_pod(&ctx, &pod).await {
                    tracing::warn!(pod = %uid, error = %err, "error syncing pod, will retry");
                }
            }
            None => {
                if let Err(err) = ctx.runtime.kill_pod(&uid, None).await {
                    tracing::warn!(pod = %uid, error = %err, "failed to kill removed pod");
                }
                ctx.eviction.forget(&uid);
                return;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = updates.changed() => if changed.is_err() { return },
            _ = resync.tick() => {}
            () = woken() => {}
            _ = evictions.changed() => {}
        }
    }
}

/// Watches the pods bound to `node_name` (and reads the static pods of
/// `manifest_dir`) and runs one worker per pod until `shutdown`.
pub async fn run_pod_workers(
    ctx: Arc<WorkerContext>,
    node_name: &str,
    manifest_dir: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
) {
    let mut statics = manifest_dir.map(|d| StaticPods::new(d, node_name));
    let period = super::static_source::FILE_CHECK_FREQUENCY;
    let mut file_check = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    file_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut mirrors_known = false;
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut events = kube::runtime::watcher(api, config)
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut tasks = JoinSet::new();
    let spawn_worker = |workers: &mut HashMap<String, watch::Sender<Option<Pod>>>,
                        tasks: &mut JoinSet<()>,
                        uid: String,
                        pod: Pod| {
        match workers.get(&uid) {
            Some(tx) => {
                tx.send_replace(Some(pod));
            }
            None => {
                let (tx, rx) = watch::channel(Some(pod));
                workers.insert(uid.clone(), tx);
                tasks.spawn(pod_worker(ctx.clone(), uid, rx, shutdown.clone()));
            }
        }
    };
    // Static pods first, so that the orphan check below knows them.
    if let Some(s) = statics.as_mut() {
        for pod in s.read().await.added {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            spawn_worker(&mut workers, &mut tasks, uid, pod);
        }
    }
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            e = events.next() => e,
            _ = file_check.tick(), if statics.is_some() => {
                if let Some(s) = statics.as_mut() {
                    let update = s.read().await;
                    for uid in update.removed {
                        if let Some(tx) = workers.remove(&uid) {
                            tx.send_replace(None);
                        }
                    }
                    for pod in update.added {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        spawn_worker(&mut workers, &mut tasks, uid, pod);
                    }
                    if mirrors_known {
                        s.reconcile(&ctx.client).await;
                    }
                }
                continue;
            }
        };
        let event = match event {
            None => break,
            Some(Err(err)) => {
                tracing::warn!(error = %err, "pod watch failed, retrying");
                continue;
            }
            Some(Ok(e)) => e,
        };
        match event {
            Event::Init => listed.clear(),
            Event::InitApply(pod) | Event::Apply(pod) if is_mirror(&pod) => {
                // Shown for a static pod, never run: its status feeds that pod's worker.
                let is_delete = pod.metadata.deletion_timestamp.is_some();
                if let Some(s) = statics.as_mut() {
                    if let Some(static_pod) = s.mirror_changed(pod) {
                        let uid = static_pod.metadata.uid.clone().unwrap_or_default();
                        spawn_worker(&mut workers, &mut tasks, uid, static_pod);
                    }
                    if is_delete && mirrors_known {
                        s.reconcile(&ctx.client).await;
                    }
                }
            }
            Event::InitApply(pod) | Event::Apply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                listed.insert(uid.clone());
                spawn_worker(&mut workers, &mut tasks, uid, pod);
            }
            Event::Delete(pod) if is_mirror(&pod) => {
                if let Some(s) = statics.as_mut() {
                    s.mirror_deleted(&pod);
                    s.reconcile(&ctx.client).await;
                }
            }
            Event::Delete(pod) => {
                if let Some(tx) = pod
                    .metadata
                    .uid
                    .as_ref()
                    .and_then(|uid| workers.remove(uid))
                {
                    tx.send_replace(None);
                }
            }
            Event::InitDone => {
                // Pods that vanished while the watch was down.
                let gone: Vec<String> = workers
                    .keys()
                    .filter(|u| !listed.contains(*u))
                    .filter(|u| !statics.as_ref().is_some_and(|s| s.contains(u)))
                    .cloned()
                    .collect();
                for uid in &gone {
                    if let Some(tx) = workers.remove(uid) {
                        tx.send_replace(None);
                    }
                }
                // Pods deleted while the agent was down: their runtime objects
                // and directories go. Listed before any later event can start a
                // pod, so nothing found here is a pod about to run.
                // (The vanished ones above are being killed by their workers.)
                let known: HashSet<String> = listed
                    .iter()
                    .chain(workers.keys())
                    .chain(&gone)
                    .chain(statics.iter().flat_map(|s| s.uids()))
                    .cloned()
                    .collect();
                match ctx.runtime.orphans(&known).await {
                    Ok(orphans) => {
                        for uid in orphans {
                            tracing::info!(pod = %uid, "cleaning up a pod the node no longer has");
                            let runtime = ctx.runtime.clone();
                            tasks.spawn(async move {
                                if let Err(err) =
                                    runtime.kill_pod(&uid, Some(ORPHAN_GRACE_PERIOD)).await
                                {
                                    tracing::warn!(pod = %uid, error = %err, "failed to clean up the pod");
                                }
                            });
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot look for orphaned pods"),
                }
                mirrors_known = true;
                if let Some(s) = statics.as_mut() {
                    s.reconcile(&ctx.client).await;
                }
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    drop(workers);
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::PostParams;

    use super::*;
    use crate::node::fake_api;
    use crate::pod_worker::FakeRuntime;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web".to_owned());
        p.metadata.namespace = Some("default".to_owned());
        p.spec = Some(PodSpec {
            node_name: Some("node-1".to_owned()),
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("nginx".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        p
    }

    #[tokio::test]
    async fn synced_pod_reports_running_once_and_deleted_pod_is_removed() {
        let state = Arc::new(Mutex::new(fake_api::State::default()));
        let client = fake_api::client(state.clone());
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let stored = api.create(&PostParams::default(), &pod()).await.unwrap();
        let ctx = WorkerContext {
            client,
            runtime: Arc::new(FakeRuntime::new(Ipv4Addr::new(10, 42, 7, 0))),
            host_ips: vec!["10.0.0.5".parse().unwrap()],
            eviction: Arc::default(),
        };
        sync_pod(&ctx, &stored).await.unwrap();
        let updated = api.get("web").await.unwrap();
        let status = updated.status.clone().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.42.7.1"));
        assert_eq!(status.host_ip.as_deref(), Some("10.0.0.5"));
        // Nothing changed: no second status write.
        sync_pod(&ctx, &updated).await.unwrap();
        let patches =
            |s: &fake_api::State| s.requests.iter().filter(|r| r.starts_with("PATCH")).count();
        assert_eq!(patches(&state.lock().unwrap()), 1);

        let mut deleting = api.get("web").await.unwrap();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        sync_pod(&ctx, &deleting).await.unwrap();
        assert!(api.get_opt("web").await.unwrap().is_none());
        let uid = stored.metadata.uid.unwrap();
        assert_eq!(
            ctx.runtime.observed(&uid).await.unwrap().containers.len(),
            0
        );
    }
}
