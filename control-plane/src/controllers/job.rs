//! The Job controller: runs pods until `completions` succeed (or, Indexed,
//! every index has succeeded), retries failures with exponential back-off up
//! to `backoffLimit`, enforces `activeDeadlineSeconds`, applies the
//! podFailurePolicy, tracks finished pods through the
//! `batch.kubernetes.io/job-tracking` finalizer and `uncountedTerminatedPods`,
//! and deletes finished jobs after `ttlSecondsAfterFinished` (upstream
//! pkg/controller/job and pkg/controller/ttlafterfinished).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobStatus, PodFailurePolicyRule, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::ControllerContext;
use super::replicaset::Expectations;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// First retry delay after a failed pod; doubles per failure up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(360);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("failed to {action} for job {name}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    expectations: Expectations,
    /// Finished pods already counted in a job's status whose finalizer
    /// removal the pod store may not show yet (upstream's finalizer
    /// expectations), by job UID.
    counted: Mutex<HashMap<String, HashSet<String>>>,
    events: util::Events,
}

/// Starts the controller.
pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let jobs = ctx.informers.informer(
        Api::<Job>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |j: &Job| q.add_key(util::key_of(j)),
    );
    let q = queue.clone();
    let pods = ctx.informers.informer(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default().labels(crate::registry::job::CONTROLLER_UID_LABEL),
        move |pod: &Pod| {
            if let Some(r) = util::controller_ref(pod.metadata.owner_references.as_ref())
                && r.kind == "Job"
            {
                q.add(&pod.namespace().unwrap_or_default(), &r.name);
            }
        },
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        jobs,
        pods,
        expectations: Expectations::default(),
        counted: Mutex::new(HashMap::new()),
        events: util::Events::new(ctx.client.clone(), "job-controller"),
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.jobs.wait_until_ready().await;
        c.pods.wait_until_ready().await;
        util::run_workers("job", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

fn has_condition(s: &JobStatus, type_: &str) -> bool {
    s.conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    let now = util::now();
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn add_condition(s: &mut JobStatus, c: JobCondition) {
    if !has_condition(s, &c.type_) {
        s.conditions.get_or_insert_with(Vec::new).push(c);
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether a finished (or deleted while running) pod counts as failed.
fn is_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed"
        || (pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations().get(COMPLETION_INDEX)?.parse().ok()
}

/// Parses `completedIndexes` ("1,3-5").
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats indexes as upstream does: ascending, runs as `a-b`.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The back-off before the next pod after `failures` failures.
pub fn backoff_delay(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let shift = u32::try_from(failures - 1).unwrap_or(0).min(10);
    (BASE_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
}

/// The first podFailurePolicy rule matching a failed pod.
fn matching_rule<'a>(
    rules: &'a [PodFailurePolicyRule],
    pod: &Pod,
) -> Option<(usize, &'a PodFailurePolicyRule, String)> {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(req) = &rule.on_exit_codes {
            for cs in &statuses {
                if req.container_name.as_ref().is_some_and(|n| *n != cs.name) {
                    continue;
                }
                let Some(code) = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                let hit = req.values.contains(&code);
                if (req.operator == "In") == hit {
                    let msg = format!(
                        "Container {} for pod {}/{} failed with exit code {code} matching {} rule at index {i}",
                        cs.name,
                        pod.namespace().unwrap_or_default(),
                        pod.name_any(),
                        rule.action
                    );
                    return Some((i, rule, msg));
                }
            }
        }
        for pat in rule.on_pod_conditions.iter().flatten() {
            let hit = pod
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == pat.type_ && c.status == pat.status);
            if hit {
                let msg = format!(
                    "Pod {}/{} has condition {} matching {} rule at index {i}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any(),
                    pat.type_,
                    rule.action
                );
                return Some((i, rule, msg));
            }
        }
    }
    None
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, JobError> {
    let Some(job) = c.jobs.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(None);
    };
    let uid = job.uid().unwrap_or_default();
    let err = |action: &'static str| {
        let name = name.clone();
        move |source| JobError::Api {
            action,
            name,
            source,
        }
    };
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let spec = job.spec.clone().unwrap_or_default();
    // Status writes are conditional on this: counts accumulate, so a write
    // from a stale copy must fail rather than lose counts.
    let mut rv = job.resource_version().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let pods: Vec<Arc<Pod>> = c
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(ns.as_str())
                && util::controller_ref(p.metadata.owner_references.as_ref())
                    .is_some_and(|r| r.uid == uid)
        })
        .collect();
    let finished = has_condition(&old, "Complete") || has_condition(&old, "Failed");
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let rules = spec
        .pod_failure_policy
        .as_ref()
        .map(|p| p.rules.clone())
        .unwrap_or_default();

    // 1. Record newly finished pods as uncounted, then drop their finalizers.
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut ignored: BTreeSet<String> = BTreeSet::new();
    let mut fail_job: Option<String> = None;
    let mut changed = false;
    let already: HashSet<String> = c
        .counted
        .lock()
        .ok()
        .and_then(|m| m.get(&uid).cloned())
        .unwrap_or_default();
    for pod in &pods {
        let pod_uid = pod.uid().unwrap_or_default();
        if !pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER) || already.contains(&pod_uid) {
            continue;
        }
        let (succeeded, failed) = (phase(pod) == "Succeeded", is_failed(pod));
        if !succeeded && !failed {
            continue;
        }
        let list = if succeeded {
            uncounted.succeeded.get_or_insert_with(Vec::new)
        } else {
            if let Some((_, rule, msg)) = matching_rule(&rules, pod) {
                match rule.action.as_str() {
                    "Ignore" => {
                        ignored.insert(pod_uid.clone());
                    }
                    "FailJob" => {
                        fail_job.get_or_insert(msg);
                    }
                    _ => {}
                }
            }
            uncounted.failed.get_or_insert_with(Vec::new)
        };
        if !list.contains(&pod_uid) && !ignored.contains(&pod_uid) {
            list.push(pod_uid);
            changed = true;
        }
    }
    if changed {
        status.uncounted_terminated_pods = Some(uncounted.clone());
        rv = write_status(&jobs, &name, &rv, &status)
            .await
            .map_err(err("record finished pods"))?;
    }
    for pod in &pods {
        let pod_uid = pod.uid().unwrap_or_default();
        let in_uncounted = already.contains(&pod_uid)
            || uncounted
                .succeeded
                .iter()
                .flatten()
                .chain(uncounted.failed.iter().flatten())
                .any(|u| *u == pod_uid);
        let remove = pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
            && (in_uncounted
                || ignored.contains(&pod_uid)
                || (finished && !util::is_pod_active(pod))
                || (finished && phase(pod) != "Running"));
        if remove {
            remove_finalizer(&pods_api, pod)
                .await
                .map_err(err("remove a pod finalizer"))?;
        }
    }
    // 2. Count what is uncounted now that its finalizers are gone.
    let mut completed: BTreeSet<i32> =
        parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    if uncounted.succeeded.iter().flatten().next().is_some()
        || uncounted.failed.iter().flatten().next().is_some()
    {
        let by_uid = |u: &String| pods.iter().find(|p| p.uid().as_ref() == Some(u)).cloned();
        let n_succ = uncounted
            .succeeded
            .iter()
            .flatten()
            .filter(|u| !already.contains(*u))
            .count();
        let n_fail = uncounted
            .failed
            .iter()
            .flatten()
            .filter(|u| !already.contains(*u))
            .count();
        for u in uncounted.succeeded.iter().flatten() {
            if let Some(i) = by_uid(u).as_deref().and_then(index_of) {
                completed.insert(i);
            }
        }
        status.succeeded = Some(status.succeeded.unwrap_or(0) + i32::try_from(n_succ).unwrap_or(0));
        status.failed = Some(status.failed.unwrap_or(0) + i32::try_from(n_fail).unwrap_or(0));
        if let Ok(mut m) = c.counted.lock() {
            m.entry(uid.clone()).or_default().extend(
                uncounted
                    .succeeded
                    .iter()
                    .flatten()
                    .chain(uncounted.failed.iter().flatten())
                    .cloned(),
            );
        }
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
    }
    if indexed {
        status.completed_indexes = Some(format_indexes(&completed));
        if let Some(n) = spec.completions {
            status.succeeded =
                Some(i32::try_from(completed.iter().filter(|i| **i < n).count()).unwrap_or(0));
        }
    }
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| util::is_pod_active(p)).collect();
    status.active = Some(i32::try_from(active.len()).unwrap_or(0));
    status.ready =
        Some(i32::try_from(active.iter().filter(|p| util::is_pod_ready(p)).count()).unwrap_or(0));
    if status.uncounted_terminated_pods.is_none() {
        if let Ok(mut m) = c.counted.lock() {
            m.entry(uid.clone()).or_default().extend(
                uncounted
                    .succeeded
                    .iter()
                    .flatten()
                    .chain(uncounted.failed.iter().flatten())
                    .cloned(),
            );
        }
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
    }
    let suspended = spec.suspend.unwrap_or(false);
    if status.start_time.is_none() && !suspended && !finished {
        status.start_time = Some(util::now());
    }
    let succeeded = status.succeeded.unwrap_or(0);
    let failed = status.failed.unwrap_or(0);
    let now = util::now_secs();

    // 3. Decide the outcome.
    if !finished
        && !has_condition(&status, "FailureTarget")
        && !has_condition(&status, "SuccessCriteriaMet")
    {
        let deadline_hit = spec
            .active_deadline_seconds
            .zip(status.start_time.as_ref())
            .is_some_and(|(ads, st)| !suspended && util::secs(st) + ads <= now);
        let complete = if indexed {
            spec.completions.is_some_and(|n| {
                i32::try_from(completed.iter().filter(|i| **i < n).count()).unwrap_or(0) >= n
            })
        } else {
            match spec.completions {
                Some(n) => succeeded >= n,
                None => succeeded > 0 && active.is_empty(),
            }
        };
        if let Some(msg) = fail_job {
            add_condition(
                &mut status,
                condition("FailureTarget", "PodFailurePolicy", &msg),
            );
        } else if failed > spec.backoff_limit.unwrap_or(6) {
            add_condition(
                &mut status,
                condition(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
            );
        } else if deadline_hit {
            add_condition(
                &mut status,
                condition(
                    "FailureTarget",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ),
            );
        } else if complete {
            add_condition(
                &mut status,
                condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
            );
        }
    }
    let failing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "FailureTarget")
        .cloned();
    let succeeding = has_condition(&status, "SuccessCriteriaMet");
    let mut requeue: Requeue = None;
    if finished {
        // Nothing to run; only the TTL is left.
    } else if failing.is_some() || succeeding || suspended {
        for pod in &active {
            delete_pod(&pods_api, pod)
                .await
                .map_err(err("delete a pod"))?;
        }
        if suspended && failing.is_none() && !succeeding {
            add_condition(
                &mut status,
                condition("Suspended", "JobSuspended", "Job suspended"),
            );
        }
        let leftovers = pods
            .iter()
            .any(|p| p.finalizers().iter().any(|f| f == TRACKING_FINALIZER) && !is_terminal(p));
        if !leftovers && active.is_empty() {
            if let Some(f) = &failing {
                if !has_condition(&status, "Failed") {
                    c.events.warning(
                        &*job,
                        f.reason.as_deref().unwrap_or("Failed"),
                        f.message.clone().unwrap_or_default(),
                    );
                }
                add_condition(
                    &mut status,
                    condition(
                        "Failed",
                        f.reason.as_deref().unwrap_or(""),
                        f.message.as_deref().unwrap_or(""),
                    ),
                );
            } else if succeeding {
                if !has_condition(&status, "Complete") {
                    c.events.normal(&*job, "Completed", "Job completed".into());
                }
                add_condition(
                    &mut status,
                    condition(
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                );
                status.completion_time = Some(util::now());
            }
        }
    } else {
        if let Some(cs) = status.conditions.as_mut() {
            cs.retain(|c| c.type_ != "Suspended");
        }
        if c.expectations.satisfied(&uid, &c.pods, &ns) {
            requeue = manage(c, &job, &pods, &active, &status, &pods_api)
                .await
                .map_err(err("create pods"))?;
        }
        if let Some(ads) = spec.active_deadline_seconds
            && let Some(st) = &status.start_time
        {
            let left = util::secs(st) + ads - now;
            let d = Duration::from_secs(u64::try_from(left.max(0)).unwrap_or(0) + 1);
            requeue = Some(requeue.map_or(d, |r| r.min(d)));
        }
    }
    if pruned(&status) != pruned(&old) {
        write_status(&jobs, &name, &rv, &status)
            .await
            .map_err(err("update status"))?;
    }
    // 4. TTL after finishing.
    let finished_at = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .filter_map(|c| c.last_transition_time.as_ref().map(util::secs))
        .next();
    if let (Some(ttl), Some(at)) = (spec.ttl_seconds_after_finished, finished_at) {
        let left = at + i64::from(ttl) - now;
        if left <= 0 {
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match jobs.delete(&name, &dp).await {
                Ok(_) => tracing::info!(job = %name, "deleted finished job after its ttl"),
                Err(e) if util::is_not_found(&e) || util::is_conflict(&e) => {}
                Err(e) => return Err(err("delete the finished job")(e)),
            }
            return Ok(None);
        }
        return Ok(Some(Duration::from_secs(
            u64::try_from(left).unwrap_or(0) + 1,
        )));
    }
    Ok(requeue)
}

/// The status as JSON without zero counts and empty values, which the
/// server may or may not keep; compared to skip no-op writes.
fn pruned(s: &JobStatus) -> serde_json::Value {
    fn prune(v: serde_json::Value) -> Option<serde_json::Value> {
        match v {
            serde_json::Value::Null => None,
            serde_json::Value::Number(n) if n.as_i64() == Some(0) => None,
            serde_json::Value::Object(m) => {
                let m: serde_json::Map<_, _> = m
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, prune(v)?)))
                    .collect();
                (!m.is_empty()).then_some(serde_json::Value::Object(m))
            }
            serde_json::Value::Array(a) if a.is_empty() => None,
            serde_json::Value::String(s) if s.is_empty() => None,
            v => Some(v),
        }
    }
    prune(serde_json::to_value(s).unwrap_or_default()).unwrap_or_default()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Creates or deletes pods toward the wanted parallelism; returns when to
/// look again if a back-off holds creation.
async fn manage(
    c: &Ctx,
    job: &Job,
    pods: &[Arc<Pod>],
    active: &[&Arc<Pod>],
    status: &JobStatus,
    api: &Api<Pod>,
) -> Result<Requeue, kube::Error> {
    let spec = job.spec.clone().unwrap_or_default();
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let succeeded = status.succeeded.unwrap_or(0);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let uid = job.uid().unwrap_or_default();
    let want = if indexed {
        parallelism
    } else {
        match spec.completions {
            Some(n) => parallelism.min(n - succeeded).max(0),
            None if succeeded > 0 => 0,
            None => parallelism,
        }
    };
    let n_active = i32::try_from(active.len()).unwrap_or(0);
    if n_active > want {
        let mut extra: Vec<&&Arc<Pod>> = active.iter().collect();
        extra.sort_by_key(|p| {
            std::cmp::Reverse(
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(util::secs)
                    .unwrap_or(0),
            )
        });
        for p in extra
            .into_iter()
            .take(usize::try_from(n_active - want).unwrap_or(0))
        {
            delete_pod(api, p).await?;
        }
        return Ok(None);
    }
    if n_active >= want {
        return Ok(None);
    }
    // Back-off after failures, from the last failed pod's finish.
    let failed = status.failed.unwrap_or(0);
    if failed > 0 {
        let last = pods
            .iter()
            .filter(|p| is_failed(p))
            .filter_map(|p| finish_time(p))
            .max()
            .unwrap_or(0);
        let ready_at = last + i64::try_from(backoff_delay(failed).as_secs()).unwrap_or(0);
        let now = util::now_secs();
        if last > 0 && ready_at > now {
            return Ok(Some(Duration::from_secs(
                u64::try_from(ready_at - now).unwrap_or(1),
            )));
        }
    }
    let mut to_create: Vec<Option<i32>> = Vec::new();
    if indexed {
        let completions = spec.completions.unwrap_or(0);
        let done = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
        let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
        for i in 0..completions {
            if i32::try_from(to_create.len()).unwrap_or(0) >= want - n_active {
                break;
            }
            if !done.contains(&i) && !running.contains(&i) {
                to_create.push(Some(i));
            }
        }
    } else {
        to_create = vec![None; usize::try_from(want - n_active).unwrap_or(0)];
    }
    let mut created = Vec::new();
    for index in to_create {
        match api
            .create(&PostParams::default(), &pod_for(job, index))
            .await
        {
            Ok(p) => {
                c.events.normal(
                    job,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                );
                created.push(p.name_any());
            }
            Err(kube::Error::Api(s)) if s.code == 403 => break,
            Err(e) => {
                c.expectations.expect(&uid, created, Vec::new());
                return Err(e);
            }
        }
    }
    c.expectations.expect(&uid, created, Vec::new());
    Ok(None)
}

fn finish_time(pod: &Pod) -> Option<i64> {
    let st = pod.status.as_ref()?;
    let from_containers = st
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| {
            c.state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
                .map(util::secs)
        })
        .max();
    from_containers
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(util::secs))
        .or_else(|| {
            st.conditions
                .iter()
                .flatten()
                .filter_map(|c| c.last_transition_time.as_ref().map(util::secs))
                .max()
        })
}

/// A pod for the job from its template; Indexed pods carry their index.
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{}-{i}", job.name_any()));
            }
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                c.env.get_or_insert_with(Vec::new).push(EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
                        }),
                        ..Default::default()
                    }),
                });
            }
            format!("{}-{i}-", job.name_any())
        }
        None => format!("{}-", job.name_any()),
    };
    let mut finalizers = tm.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![util::owner_ref(job)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

async fn delete_pod(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    match api
        .delete(&pod.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    let left: Vec<&String> = pod
        .finalizers()
        .iter()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let fins = if left.is_empty() {
        serde_json::Value::Null
    } else {
        json!(left)
    };
    let patch =
        json!({"metadata": {"finalizers": fins, "resourceVersion": pod.resource_version()}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the status if the job is still at `rv`; returns the new one.
async fn write_status(
    api: &Api<Job>,
    name: &str,
    rv: &str,
    status: &JobStatus,
) -> Result<String, kube::Error> {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for k in [
            "conditions",
            "completedIndexes",
            "completionTime",
            "startTime",
        ] {
            m.entry(k).or_insert(serde_json::Value::Null);
        }
        // A merge patch keeps lists left out; empty ones must be nulled.
        let u = m
            .entry("uncountedTerminatedPods")
            .or_insert_with(|| json!({}));
        for k in ["succeeded", "failed"] {
            if let Some(u) = u.as_object_mut() {
                u.entry(k).or_insert(serde_json::Value::Null);
            }
        }
    }
    let patch = json!({"metadata": {"resourceVersion": rv}, "status": v});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(j) => Ok(j.resource_version().unwrap_or_default()),
        Err(e) if util::is_not_found(&e) => Ok(rv.to_string()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_round_trip_as_ranges() {
        let set = parse_indexes("0,2-4,7");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&set), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(3), Duration::from_secs(40));
        assert_eq!(backoff_delay(20), MAX_BACKOFF);
    }

    #[test]
    fn indexed_pods_carry_index_hostname_and_finalizer() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "d", "uid": "j1"},
            "spec": {"completionMode": "Indexed", "completions": 3,
                "template": {"metadata": {"labels": {"job-name": "pi"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap();
        let pod = pod_for(&job, Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(
            pod.annotations().get(COMPLETION_INDEX).map(String::as_str),
            Some("2")
        );
        assert_eq!(pod.spec.as_ref().unwrap().hostname.as_deref(), Some("pi-2"));
        assert!(pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER));
    }
}
