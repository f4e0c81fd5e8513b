//! The CronJob controller: creates a Job named `<cronjob>-<minutes since the
//! epoch>` at each scheduled time, honouring concurrencyPolicy,
//! startingDeadlineSeconds and suspend, keeps `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`, and prunes finished jobs past
//! the history limits (upstream pkg/controller/cronjob, v2).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream gives up counting missed start times past this many.
const MAX_MISSED: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    #[error("failed to {action} for cron job {name}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// A parsed schedule.
pub struct Schedule {
    cron: croner::Cron,
}

impl Schedule {
    /// Parses a 5-field schedule or a descriptor (`@hourly`); a `TZ=`/
    /// `CRON_TZ=` prefix or `spec.timeZone` other than UTC is not supported.
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Self, String> {
        let s = schedule.trim();
        let (tz, body) = match s.strip_prefix("TZ=").or_else(|| s.strip_prefix("CRON_TZ=")) {
            Some(rest) => match rest.split_once(' ') {
                Some((tz, body)) => (Some(tz), body.trim()),
                None => return Err(format!("unparseable schedule: {s}")),
            },
            None => (time_zone, s),
        };
        if let Some(tz) = tz
            && !matches!(tz, "UTC" | "Etc/UTC" | "Etc/GMT" | "GMT" | "")
        {
            return Err(format!("unknown time zone {tz}"));
        }
        let body = match body {
            "@midnight" => "@daily",
            "@annually" => "@yearly",
            b => b,
        };
        let cron = croner::Cron::new(body).parse().map_err(|e| e.to_string())?;
        Ok(Self { cron })
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }
}

/// The latest scheduled time in `(earliest, now]` and how many were missed
/// (upstream `mostRecentScheduleTime`).
pub fn most_recent(
    sched: &Schedule,
    earliest: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, usize) {
    let mut t = earliest;
    let mut last = None;
    let mut n = 0;
    while let Some(next) = sched.next_after(t) {
        if next > now {
            break;
        }
        last = Some(next);
        n += 1;
        if n > MAX_MISSED * 10 {
            break;
        }
        t = next;
    }
    (last, n)
}

/// The job name for a scheduled time (upstream `getJobName`).
pub fn job_name(cj: &str, scheduled: DateTime<Utc>) -> String {
    format!("{cj}-{}", scheduled.timestamp().div_euclid(60))
}

fn to_chrono(t: &Time) -> DateTime<Utc> {
    Utc.timestamp_opt(t.0.as_second(), 0)
        .single()
        .unwrap_or_default()
}

fn to_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

struct Ctx {
    client: kube::Client,
    cronjobs: Store<CronJob>,
    jobs: Store<Job>,
    events: util::Events,
}

/// Starts the controller.
pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let cronjobs = ctx.informers.informer(
        Api::<CronJob>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |cj: &CronJob| q.add_key(util::key_of(cj)),
    );
    let q = queue.clone();
    let jobs = ctx.informers.informer(
        Api::<Job>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |j: &Job| {
            if let Some(r) = util::controller_ref(j.metadata.owner_references.as_ref())
                && r.kind == "CronJob"
            {
                q.add(&j.namespace().unwrap_or_default(), &r.name);
            }
        },
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        cronjobs,
        jobs,
        events: util::Events::new(ctx.client.clone(), "cronjob-controller"),
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.cronjobs.wait_until_ready().await;
        c.jobs.wait_until_ready().await;
        util::run_workers("cronjob", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

fn finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, CronJobError> {
    let Some(cj) = c.cronjobs.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(None);
    };
    let err = |action: &'static str| {
        let name = name.clone();
        move |source| CronJobError::Api {
            action,
            name,
            source,
        }
    };
    let uid = cj.uid().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let cj_api: Api<CronJob> = Api::namespaced(c.client.clone(), &ns);
    let job_api: Api<Job> = Api::namespaced(c.client.clone(), &ns);
    let mut jobs: Vec<Arc<Job>> = c
        .jobs
        .state()
        .into_iter()
        .filter(|j| {
            j.namespace().as_deref() == Some(ns.as_str())
                && util::controller_ref(j.metadata.owner_references.as_ref())
                    .is_some_and(|r| r.uid == uid)
        })
        .collect();
    jobs.sort_by_key(|j| {
        j.metadata
            .creation_timestamp
            .as_ref()
            .map(util::secs)
            .unwrap_or(0)
    });
    let old = cj.status.clone().unwrap_or_default();
    let mut status = old.clone();
    // Active: owned jobs still running.
    let active: Vec<ObjectReference> = jobs
        .iter()
        .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .map(|j| job_ref(j))
        .collect();
    status.active = (!active.is_empty()).then_some(active);
    let last_success = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.clone())
        .max_by_key(util::secs);
    if let Some(t) = last_success
        && status
            .last_successful_time
            .as_ref()
            .is_none_or(|cur| util::secs(cur) < util::secs(&t))
    {
        status.last_successful_time = Some(t);
    }
    cleanup_history(&job_api, &jobs, &spec)
        .await
        .map_err(err("delete old jobs"))?;
    if cj.metadata.deletion_timestamp.is_some() {
        write_status(&cj_api, &name, &old, &status)
            .await
            .map_err(err("update status"))?;
        return Ok(None);
    }
    let sched = match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(cronjob = %name, schedule = %spec.schedule, error = %e, "unparseable schedule");
            write_status(&cj_api, &name, &old, &status)
                .await
                .map_err(err("update status"))?;
            return Ok(None);
        }
    };
    let now = Utc::now();
    if spec.suspend.unwrap_or(false) {
        write_status(&cj_api, &name, &old, &status)
            .await
            .map_err(err("update status"))?;
        return Ok(None);
    }
    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(to_chrono)
        .unwrap_or(now);
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .map(to_chrono)
        .unwrap_or(created);
    if let Some(sds) = spec.starting_deadline_seconds {
        let bound = now - chrono::Duration::seconds(sds);
        if bound > earliest {
            earliest = bound;
        }
    }
    let next_wake = |after: DateTime<Utc>| {
        sched.next_after(after).map(|t| {
            Duration::from_millis(
                u64::try_from((t - Utc::now()).num_milliseconds().max(0)).unwrap_or(0) + 100,
            )
        })
    };
    let (scheduled, missed) = most_recent(&sched, earliest, now);
    if missed > MAX_MISSED {
        tracing::warn!(cronjob = %name, missed, "too many missed start times; check clock skew");
    }
    let Some(scheduled) = scheduled else {
        write_status(&cj_api, &name, &old, &status)
            .await
            .map_err(err("update status"))?;
        return Ok(next_wake(now));
    };
    if let Some(sds) = spec.starting_deadline_seconds
        && scheduled + chrono::Duration::seconds(sds) < now
    {
        tracing::info!(cronjob = %name, %scheduled, "missed the starting deadline");
        write_status(&cj_api, &name, &old, &status)
            .await
            .map_err(err("update status"))?;
        return Ok(next_wake(now));
    }
    let job_name = job_name(&name, scheduled);
    let already = jobs.iter().any(|j| j.name_any() == job_name);
    if already {
        status.last_schedule_time = Some(to_time(scheduled));
        write_status(&cj_api, &name, &old, &status)
            .await
            .map_err(err("update status"))?;
        return Ok(next_wake(now));
    }
    let running = status.active.as_ref().is_some_and(|a| !a.is_empty());
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if running => {
            write_status(&cj_api, &name, &old, &status)
                .await
                .map_err(err("update status"))?;
            // Looked at again when the running job finishes.
            return Ok(next_wake(now));
        }
        Some("Replace") if running => {
            for r in status.active.take().unwrap_or_default() {
                let name = r.name.unwrap_or_default();
                match job_api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(err("replace a running job")(e)),
                }
            }
        }
        _ => {}
    }
    let template = spec.job_template.clone();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let job = Job {
        metadata: ObjectMeta {
            name: Some(job_name.clone()),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![util::owner_ref(&*cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    match job_api.create(&PostParams::default(), &job).await {
        Ok(j) => {
            tracing::info!(cronjob = %name, job = %job_name, "created job");
            c.events
                .normal(&*cj, "SuccessfulCreate", format!("Created job {job_name}"));
            status.active.get_or_insert_with(Vec::new).push(job_ref(&j));
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(err("create a job")(e)),
    }
    status.last_schedule_time = Some(to_time(scheduled));
    write_status(&cj_api, &name, &old, &status)
        .await
        .map_err(err("update status"))?;
    Ok(next_wake(now))
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(j.name_any()),
        namespace: j.namespace(),
        uid: j.uid(),
        resource_version: j.resource_version(),
        ..Default::default()
    }
}

async fn cleanup_history(
    api: &Api<Job>,
    jobs: &[Arc<Job>],
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
) -> Result<(), kube::Error> {
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let extra = done
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for j in done.into_iter().take(extra) {
            match api.delete(&j.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

async fn write_status(
    api: &Api<CronJob>,
    name: &str,
    old: &CronJobStatus,
    new: &CronJobStatus,
) -> Result<(), kube::Error> {
    if old == new {
        return Ok(());
    }
    let mut v = serde_json::to_value(new).unwrap_or_default();
    if new.active.is_none() {
        v["active"] = serde_json::Value::Null;
    }
    match api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": v})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn schedules_parse_fields_and_descriptors() {
        let s = Schedule::parse("*/5 * * * *", None).unwrap();
        assert_eq!(
            s.next_after(at("2024-01-01T00:02:00Z")),
            Some(at("2024-01-01T00:05:00Z"))
        );
        let s = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            s.next_after(at("2024-01-01T00:02:00Z")),
            Some(at("2024-01-01T01:00:00Z"))
        );
        let s = Schedule::parse("TZ=UTC 30 2 * * 1", None).unwrap();
        assert_eq!(
            s.next_after(at("2024-01-01T00:00:00Z")),
            Some(at("2024-01-01T02:30:00Z"))
        );
        assert!(Schedule::parse("TZ=Mars/Base 0 * * * *", None).is_err());
        assert!(Schedule::parse("61 * * * *", None).is_err());
    }

    #[test]
    fn most_recent_finds_the_last_missed_time() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        let (t, n) = most_recent(&s, at("2024-01-01T00:00:00Z"), at("2024-01-01T00:03:30Z"));
        assert_eq!(t, Some(at("2024-01-01T00:03:00Z")));
        assert_eq!(n, 3);
    }

    #[test]
    fn job_names_use_minutes_since_the_epoch() {
        assert_eq!(
            job_name("hello", at("2024-01-01T00:03:00Z")),
            "hello-28401123"
        );
    }
}
