//! Printers of the workload kinds: apps/v1 (deployments, replica sets,
//! stateful sets, daemon sets, controller revisions), batch/v1 (jobs, cron
//! jobs), autoscaling (horizontal pod autoscalers) and policy/v1
//! (pod disruption budgets), as upstream's printers with wide output on.

use chrono::{DateTime, Utc};
use k8s_openapi::api::{apps::v1 as apps, autoscaling::v2 as as2, batch::v1 as batch};
use serde_json::{Value, json};

use super::Printer;
use super::columns::{age, col, containers_images, doc, name, wide};
use super::format::{
    age_at, arr, bool_ptr, condition_true, containers, format_label_selector, format_labels,
    human_duration, i, int_or_string, obj, opt_i, opt_s, s, selector_string, time,
};

fn name_of(v: &Value) -> Value {
    json!(s(v, "/metadata/name"))
}

fn age_cell(v: &Value, now: DateTime<Utc>) -> Value {
    json!(super::format::age(v, now))
}

/// `spec.replicas`, defaulted to 1 as the API server does.
fn replicas(v: &Value) -> i64 {
    opt_i(v, "/spec/replicas").unwrap_or(1)
}

pub const DEPLOYMENT: Printer = Printer {
    columns: || {
        let [c, im] = containers_images();
        vec![
            name(),
            col("Ready", "string", "Number of the pod with ready state"),
            col(
                "Up-to-date",
                "string",
                doc::<apps::DeploymentStatus>("updatedReplicas"),
            ),
            col(
                "Available",
                "string",
                doc::<apps::DeploymentStatus>("availableReplicas"),
            ),
            age(),
            c,
            im,
            wide(
                "Selector",
                "string",
                doc::<apps::DeploymentSpec>("selector"),
            ),
        ]
    },
    cells: |v, now| {
        let (names, images) = containers(arr(v, "/spec/template/spec/containers"));
        // printDeployment prints the selector without the `<none>` fallback.
        let selector =
            selector_string(v.pointer("/spec/selector")).unwrap_or_else(|| "<invalid>".into());
        vec![
            name_of(v),
            json!(format!("{}/{}", i(v, "/status/readyReplicas"), replicas(v))),
            json!(i(v, "/status/updatedReplicas")),
            json!(i(v, "/status/availableReplicas")),
            age_cell(v, now),
            json!(names),
            json!(images),
            json!(selector),
        ]
    },
};

pub const REPLICA_SET: Printer = Printer {
    columns: || {
        let [c, im] = containers_images();
        vec![
            name(),
            col(
                "Desired",
                "integer",
                doc::<apps::ReplicaSetSpec>("replicas"),
            ),
            col(
                "Current",
                "integer",
                doc::<apps::ReplicaSetStatus>("replicas"),
            ),
            col(
                "Ready",
                "integer",
                doc::<apps::ReplicaSetStatus>("readyReplicas"),
            ),
            age(),
            c,
            im,
            wide(
                "Selector",
                "string",
                doc::<apps::ReplicaSetSpec>("selector"),
            ),
        ]
    },
    cells: |v, now| {
        let (names, images) = containers(arr(v, "/spec/template/spec/containers"));
        vec![
            name_of(v),
            json!(replicas(v)),
            json!(i(v, "/status/replicas")),
            json!(i(v, "/status/readyReplicas")),
            age_cell(v, now),
            json!(names),
            json!(images),
            json!(format_label_selector(v.pointer("/spec/selector"))),
        ]
    },
};

pub const STATEFUL_SET: Printer = Printer {
    columns: || {
        let [c, im] = containers_images();
        vec![
            name(),
            col("Ready", "string", "Number of the pod with ready state"),
            age(),
            c,
            im,
        ]
    },
    cells: |v, now| {
        let (names, images) = containers(arr(v, "/spec/template/spec/containers"));
        vec![
            name_of(v),
            json!(format!("{}/{}", i(v, "/status/readyReplicas"), replicas(v))),
            age_cell(v, now),
            json!(names),
            json!(images),
        ]
    },
};

pub const DAEMON_SET: Printer = Printer {
    columns: || {
        let [c, im] = containers_images();
        vec![
            name(),
            col(
                "Desired",
                "integer",
                doc::<apps::DaemonSetStatus>("desiredNumberScheduled"),
            ),
            col(
                "Current",
                "integer",
                doc::<apps::DaemonSetStatus>("currentNumberScheduled"),
            ),
            col(
                "Ready",
                "integer",
                doc::<apps::DaemonSetStatus>("numberReady"),
            ),
            col(
                "Up-to-date",
                "integer",
                doc::<apps::DaemonSetStatus>("updatedNumberScheduled"),
            ),
            col(
                "Available",
                "integer",
                doc::<apps::DaemonSetStatus>("numberAvailable"),
            ),
            col(
                "Node Selector",
                "string",
                doc::<k8s_openapi::api::core::v1::PodSpec>("nodeSelector"),
            ),
            age(),
            c,
            im,
            wide("Selector", "string", doc::<apps::DaemonSetSpec>("selector")),
        ]
    },
    cells: |v, now| {
        let (names, images) = containers(arr(v, "/spec/template/spec/containers"));
        vec![
            name_of(v),
            json!(i(v, "/status/desiredNumberScheduled")),
            json!(i(v, "/status/currentNumberScheduled")),
            json!(i(v, "/status/numberReady")),
            json!(i(v, "/status/updatedNumberScheduled")),
            json!(i(v, "/status/numberAvailable")),
            json!(format_labels(obj(v, "/spec/template/spec/nodeSelector"))),
            age_cell(v, now),
            json!(names),
            json!(images),
            json!(format_label_selector(v.pointer("/spec/selector"))),
        ]
    },
};

pub const CONTROLLER_REVISION: Printer = Printer {
    columns: || {
        vec![
            name(),
            col("Controller", "string", "Controller of the object"),
            col(
                "Revision",
                "string",
                doc::<apps::ControllerRevision>("revision"),
            ),
            age(),
        ]
    },
    cells: |v, now| {
        let controller = arr(v, "/metadata/ownerReferences")
            .iter()
            .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
        let controller_name = match controller {
            None => "<none>".to_string(),
            Some(r) => {
                let api_version = s(r, "/apiVersion");
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                let kind = s(r, "/kind");
                let name = s(r, "/name");
                match (kind.is_empty(), group.is_empty()) {
                    (true, true) => name.to_string(),
                    (_, true) => format!("{}/{name}", kind.to_lowercase()),
                    _ => format!("{}.{}/{name}", kind.to_lowercase(), group.to_lowercase()),
                }
            }
        };
        vec![
            name_of(v),
            json!(controller_name),
            json!(i(v, "/revision")),
            age_cell(v, now),
        ]
    },
};

pub const JOB: Printer = Printer {
    columns: || {
        let [c, im] = containers_images();
        vec![
            name(),
            col("Status", "string", "Status of the job."),
            col(
                "Completions",
                "string",
                doc::<batch::JobStatus>("succeeded"),
            ),
            col("Duration", "string", "Time required to complete the job."),
            age(),
            c,
            im,
            wide("Selector", "string", doc::<batch::JobSpec>("selector")),
        ]
    },
    cells: job_cells,
};

fn job_cells(v: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = i(v, "/status/succeeded");
    let completions = match opt_i(v, "/spec/completions") {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = i(v, "/spec/parallelism");
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let duration = match (
        time(v, "/status/startTime"),
        time(v, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let conditions = arr(v, "/status/conditions");
    let deleting = v
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null());
    let status = if job_condition(conditions, "Complete") {
        "Complete"
    } else if job_condition(conditions, "Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if job_condition(conditions, "Suspended") {
        "Suspended"
    } else if job_condition(conditions, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers(arr(v, "/spec/template/spec/containers"));
    vec![
        name_of(v),
        json!(status),
        json!(completions),
        json!(duration),
        age_cell(v, now),
        json!(names),
        json!(images),
        json!(format_label_selector(v.pointer("/spec/selector"))),
    ]
}

/// `hasJobCondition`: the first condition of the type decides.
fn job_condition(conditions: &[Value], kind: &str) -> bool {
    condition_true(conditions, kind)
}

pub const CRON_JOB: Printer = Printer {
    columns: || {
        let [c, im] = containers_images();
        vec![
            name(),
            col("Schedule", "string", doc::<batch::CronJobSpec>("schedule")),
            col("Timezone", "string", doc::<batch::CronJobSpec>("timeZone")),
            col("Suspend", "boolean", doc::<batch::CronJobSpec>("suspend")),
            col("Active", "integer", doc::<batch::CronJobStatus>("active")),
            col(
                "Last Schedule",
                "string",
                doc::<batch::CronJobStatus>("lastScheduleTime"),
            ),
            age(),
            c,
            im,
            wide("Selector", "string", doc::<batch::JobSpec>("selector")),
        ]
    },
    cells: |v, now| {
        let last = match time(v, "/status/lastScheduleTime") {
            Some(_) => age_at(v, "/status/lastScheduleTime", now),
            None => "<none>".to_string(),
        };
        let (names, images) = containers(arr(v, "/spec/jobTemplate/spec/template/spec/containers"));
        vec![
            name_of(v),
            json!(s(v, "/spec/schedule")),
            json!(opt_s(v, "/spec/timeZone").unwrap_or("<none>")),
            json!(bool_ptr(
                v.pointer("/spec/suspend").and_then(Value::as_bool)
            )),
            json!(arr(v, "/status/active").len()),
            json!(last),
            age_cell(v, now),
            json!(names),
            json!(images),
            json!(format_label_selector(
                v.pointer("/spec/jobTemplate/spec/selector")
            )),
        ]
    },
};

pub const HORIZONTAL_POD_AUTOSCALER: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Reference",
                "string",
                doc::<as2::HorizontalPodAutoscalerSpec>("scaleTargetRef"),
            ),
            col(
                "Targets",
                "string",
                doc::<as2::HorizontalPodAutoscalerSpec>("metrics"),
            ),
            col(
                "MinPods",
                "string",
                doc::<as2::HorizontalPodAutoscalerSpec>("minReplicas"),
            ),
            col(
                "MaxPods",
                "string",
                doc::<as2::HorizontalPodAutoscalerSpec>("maxReplicas"),
            ),
            col(
                "Replicas",
                "string",
                doc::<as2::HorizontalPodAutoscalerStatus>("currentReplicas"),
            ),
            age(),
        ]
    },
    cells: |v, now| {
        let reference = format!(
            "{}/{}",
            s(v, "/spec/scaleTargetRef/kind"),
            s(v, "/spec/scaleTargetRef/name")
        );
        let min =
            opt_i(v, "/spec/minReplicas").map_or_else(|| "<unset>".to_string(), |m| m.to_string());
        vec![
            name_of(v),
            json!(reference),
            json!(hpa_metrics(v)),
            json!(min),
            json!(i(v, "/spec/maxReplicas")),
            json!(i(v, "/status/currentReplicas")),
            age_cell(v, now),
        ]
    },
};

/// `formatHPAMetrics`; autoscaling/v1 objects are read as their v2 form
/// (one CPU utilization metric), as upstream converts them first.
fn hpa_metrics(v: &Value) -> String {
    let v1_specs;
    let v1_statuses;
    let (specs, statuses): (&[Value], &[Value]) = if v.pointer("/spec/metrics").is_some() {
        (arr(v, "/spec/metrics"), arr(v, "/status/currentMetrics"))
    } else if let Some(target) = opt_i(v, "/spec/targetCPUUtilizationPercentage") {
        v1_specs = vec![json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target}}})];
        v1_statuses = match opt_i(v, "/status/currentCPUUtilizationPercentage") {
            Some(current) => vec![json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": current}}})],
            None => Vec::new(),
        };
        (v1_specs.as_slice(), v1_statuses.as_slice())
    } else {
        (&[], &[])
    };
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let unknown = || "<unknown>".to_string();
    let mut list: Vec<String> = Vec::new();
    for (idx, spec) in specs.iter().enumerate() {
        let status = statuses.get(idx);
        let q = |v: Option<&Value>, p: &str| {
            v.and_then(|v| v.pointer(p))
                .filter(|x| !x.is_null())
                .map(int_or_string)
        };
        let text = match s(spec, "/type") {
            "External" | "Object" => {
                let key = if s(spec, "/type") == "External" {
                    "external"
                } else {
                    "object"
                };
                let st = status.and_then(|st| st.get(key));
                if let Some(avg) = q(Some(spec), &format!("/{key}/target/averageValue")) {
                    let current = q(st, "/current/averageValue").unwrap_or_else(unknown);
                    format!("{current}/{avg} (avg)")
                } else {
                    let current =
                        st.map(|st| q(Some(st), "/current/value").unwrap_or_else(|| "0".into()));
                    let target = q(Some(spec), &format!("/{key}/target/value"))
                        .unwrap_or_else(|| "0".into());
                    format!("{}/{target}", current.unwrap_or_else(unknown))
                }
            }
            "Pods" => {
                let current = status
                    .and_then(|st| st.get("pods"))
                    .map(|st| q(Some(st), "/current/averageValue").unwrap_or_else(|| "0".into()));
                let target =
                    q(Some(spec), "/pods/target/averageValue").unwrap_or_else(|| "0".into());
                format!("{}/{target}", current.unwrap_or_else(unknown))
            }
            "Resource" | "ContainerResource" => {
                let key = if s(spec, "/type") == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let st = status.and_then(|st| st.get(key));
                let resource = s(spec, &format!("/{key}/name"));
                if let Some(avg) = q(Some(spec), &format!("/{key}/target/averageValue")) {
                    let current = st
                        .map(|st| {
                            q(Some(st), "/current/averageValue").unwrap_or_else(|| "0".into())
                        })
                        .unwrap_or_else(unknown);
                    format!("{resource}: {current}/{avg}")
                } else {
                    let current = q(st, "/current/averageUtilization")
                        .map_or_else(unknown, |c| format!("{c}%"));
                    let target = q(Some(spec), &format!("/{key}/target/averageUtilization"))
                        .map_or_else(|| "<auto>".to_string(), |t| format!("{t}%"));
                    format!("{resource}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(text);
    }
    const MAX: usize = 2;
    let count = list.len();
    if count > MAX {
        list.truncate(MAX);
        return format!("{} + {} more...", list.join(", "), count - MAX);
    }
    list.join(", ")
}

pub const POD_DISRUPTION_BUDGET: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Min Available",
                "string",
                "The minimum number of pods that must be available.",
            ),
            col(
                "Max Unavailable",
                "string",
                "The maximum number of pods that may be unavailable.",
            ),
            col(
                "Allowed Disruptions",
                "integer",
                "Calculated number of pods that may be disrupted at this time.",
            ),
            age(),
        ]
    },
    cells: |v, now| {
        let or_na = |p: &str| {
            v.pointer(p)
                .filter(|x| !x.is_null())
                .map_or_else(|| "N/A".to_string(), int_or_string)
        };
        vec![
            name_of(v),
            json!(or_na("/spec/minAvailable")),
            json!(or_na("/spec/maxUnavailable")),
            json!(i(v, "/status/disruptionsAllowed")),
            age_cell(v, now),
        ]
    },
};
