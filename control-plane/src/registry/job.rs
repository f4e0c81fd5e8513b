//! Jobs and CronJobs: upstream's `SetDefaults_Job`/`SetDefaults_CronJob`,
//! the generated job selector, and batch validation. No I/O.

use serde_json::{Map, Value, json};

use super::Cause;
use super::field::{self, BadValue, FieldPath};
use super::json::{default_str, default_value, get_str, obj_mut};
use super::pod::{SpecRules, default_template, normalized, validate_template};
use crate::selectors::LabelSelector;

/// The job's uid label on its selector and pods.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The job's name label on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

const JOB_RESTART_POLICIES: &[&str] = &["OnFailure", "Never"];

/// `SetDefaults_Job` plus upstream's `generateSelector` (needs
/// `metadata.uid`; without it only the name labels are added).
pub fn default_job(job: &mut Value) {
    let name = get_str(job, &["metadata", "name"]).to_string();
    let uid = get_str(job, &["metadata", "uid"]).to_string();
    let template_labels = job.pointer("/spec/template/metadata/labels").cloned();
    let Some(obj) = job.as_object_mut() else {
        return;
    };
    // The job's labels default to the user's template labels.
    if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        && let Some(meta) = obj_mut(obj, "metadata")
        && meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
    {
        meta.insert("labels".into(), labels);
    }
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    let unset = |spec: &Map<String, Value>, k: &str| spec.get(k).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    default_value(spec, "parallelism", json!(1));
    if unset(spec, "backoffLimit") {
        let limit = if unset(spec, "backoffLimitPerIndex") {
            6
        } else {
            i64::from(i32::MAX)
        };
        spec.insert("backoffLimit".into(), json!(limit));
    }
    default_str(spec, "completionMode", "NonIndexed");
    default_value(spec, "suspend", json!(false));
    let policy = if unset(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    default_str(spec, "podReplacementPolicy", policy);
    if let Some(t) = obj_mut(spec, "template") {
        default_template(t);
    }
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if manual {
        return;
    }
    if let Some(labels) = obj_mut(spec, "template")
        .and_then(|t| obj_mut(t, "metadata"))
        .and_then(|m| obj_mut(m, "labels"))
    {
        if !name.is_empty() {
            for key in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
                labels.entry(key).or_insert_with(|| json!(name));
            }
        }
        if !uid.is_empty() {
            for key in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
                labels.entry(key).or_insert_with(|| json!(uid));
            }
        }
    }
    if !uid.is_empty()
        && let Some(ml) = obj_mut(spec, "selector").and_then(|s| obj_mut(s, "matchLabels"))
    {
        ml.entry(CONTROLLER_UID_LABEL).or_insert_with(|| json!(uid));
    }
}

/// `SetDefaults_CronJob` and the pod template inside its job template.
pub fn default_cron_job(cj: &mut Value) {
    let Some(spec) = cj.as_object_mut().and_then(|o| obj_mut(o, "spec")) else {
        return;
    };
    default_str(spec, "concurrencyPolicy", "Allow");
    default_value(spec, "suspend", json!(false));
    default_value(spec, "successfulJobsHistoryLimit", json!(3));
    default_value(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(t) = obj_mut(spec, "jobTemplate")
        .and_then(|jt| obj_mut(jt, "spec"))
        .and_then(|s| obj_mut(s, "template"))
    {
        default_template(t);
    }
}

fn non_negative(spec: &Value, key: &str, path: &FieldPath, errs: &mut Vec<Cause>) {
    if let Some(n) = spec.get(key).and_then(Value::as_i64)
        && n < 0
    {
        errs.push(field::invalid(
            &path.child(key),
            n,
            "must be greater than or equal to 0",
        ));
    }
}

/// Validates a job spec at `path` (`spec`, or `spec.jobTemplate.spec`).
fn validate_job_spec(spec: &Value, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(spec, key, path, &mut errs);
    }
    if let Some(ads) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && ads == 0
    {
        errs.push(field::invalid(
            &path.child("activeDeadlineSeconds"),
            ads,
            "must be greater than 0",
        ));
    }
    match get_str(spec, &["completionMode"]) {
        "" | "NonIndexed" => {}
        "Indexed" => {
            if spec.get("completions").is_none_or(Value::is_null) {
                errs.push(field::required(
                    &path.child("completions"),
                    "when completion mode is Indexed",
                ));
            }
        }
        other => errs.push(field::not_supported(
            &path.child("completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        )),
    }
    let template = spec.get("template").cloned().unwrap_or(Value::Null);
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    let selector = spec.get("selector").filter(|s| !s.is_null());
    match selector {
        None if manual => errs.push(field::required(&path.child("selector"), "")),
        None => {}
        Some(sel) => {
            errs.extend(super::deployment::validate_label_selector(
                sel,
                &path.child("selector"),
            ));
            if let Some(s) = LabelSelector::from_json(sel)
                && !s.is_empty()
                && !s.matches(&template)
            {
                let labels = match template.pointer("/metadata/labels") {
                    Some(l) if l.is_object() => super::meta::map_value(Some(l)),
                    _ => BadValue::Raw("map[string]string(nil)".into()),
                };
                errs.push(field::invalid(
                    &path.child("template").child("metadata").child("labels"),
                    labels,
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    let rules = SpecRules {
        restart_policies: Some(JOB_RESTART_POLICIES),
        forbid_active_deadline: None,
    };
    if template.is_null() {
        errs.push(field::required(&path.child("template"), ""));
    } else {
        errs.extend(validate_template(&template, &path.child("template"), rules));
    }
    errs
}

/// Validates a Job on create.
pub fn validate_job(job: &Value) -> Vec<Cause> {
    let spec = job.get("spec").cloned().unwrap_or(Value::Null);
    validate_job_spec(&spec, &FieldPath::new("spec"))
}

/// Validates a Job update: selector, completions mode and template are immutable.
pub fn validate_job_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_job(new);
    let spec = FieldPath::new("spec");
    for key in ["selector", "completionMode", "template"] {
        let n = new
            .pointer(&format!("/spec/{key}"))
            .cloned()
            .unwrap_or(Value::Null);
        let o = old
            .pointer(&format!("/spec/{key}"))
            .cloned()
            .unwrap_or(Value::Null);
        if normalized(&n) != normalized(&o) {
            let bad = if key == "selector" {
                super::deployment::selector_repr(&n)
            } else {
                BadValue::from_json(&n)
            };
            errs.push(field::invalid(&spec.child(key), bad, "field is immutable"));
        }
    }
    errs
}

/// Whether a cron schedule has the shape upstream's parser accepts: five
/// fields, or a `@` descriptor; the error is robfig/cron's message.
fn check_schedule(s: &str) -> Result<(), String> {
    let s = s.trim();
    let body = s
        .strip_prefix("TZ=")
        .or_else(|| s.strip_prefix("CRON_TZ="))
        .and_then(|rest| rest.split_once(' ').map(|(_, b)| b.trim()))
        .unwrap_or(s);
    if let Some(d) = body.strip_prefix('@') {
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ if d.starts_with("every ") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {body}")),
        };
    }
    let fields: Vec<&str> = body.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let ok = fields.iter().all(|f| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || "*/,-?".contains(c))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("failed to parse schedule: {body}"))
    }
}

/// Validates a CronJob on create.
pub fn validate_cron_job(cj: &Value) -> Vec<Cause> {
    let spec_path = FieldPath::new("spec");
    let mut errs = Vec::new();
    let name = get_str(cj, &["metadata", "name"]);
    if name.len() > 52 {
        errs.push(field::invalid(
            &FieldPath::new("metadata").child("name"),
            name,
            "must be no more than 52 characters",
        ));
    }
    let schedule = get_str(cj, &["spec", "schedule"]);
    if schedule.is_empty() {
        errs.push(field::required(&spec_path.child("schedule"), ""));
    } else if let Err(e) = check_schedule(schedule) {
        errs.push(field::invalid(&spec_path.child("schedule"), schedule, &e));
    }
    match get_str(cj, &["spec", "concurrencyPolicy"]) {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.push(field::required(&spec_path.child("concurrencyPolicy"), "")),
        other => errs.push(field::not_supported(
            &spec_path.child("concurrencyPolicy"),
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let spec = cj.get("spec").cloned().unwrap_or(Value::Null);
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(&spec, key, &spec_path, &mut errs);
    }
    let job_spec = cj
        .pointer("/spec/jobTemplate/spec")
        .cloned()
        .unwrap_or(Value::Null);
    errs.extend(validate_job_spec(
        &job_spec,
        &spec_path.child("jobTemplate").child("spec"),
    ));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(restart: Option<&str>) -> Value {
        let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "d", "uid": "u-1"},
            "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl:5"}]}}}});
        if let Some(r) = restart {
            j["spec"]["template"]["spec"]["restartPolicy"] = json!(r);
        }
        j
    }

    #[test]
    fn job_defaults_and_generated_selector() {
        let mut j = job(Some("Never"));
        default_job(&mut j);
        let spec = &j["spec"];
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert!(spec.get("manualSelector").is_none());
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {CONTROLLER_UID_LABEL: "u-1"}})
        );
        let labels = &spec["template"]["metadata"]["labels"];
        assert_eq!(labels[JOB_NAME_LABEL], "pi");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        assert!(validate_job(&j).is_empty(), "{:?}", validate_job(&j));
    }

    #[test]
    fn parallelism_alone_leaves_completions_unset() {
        let mut j = job(Some("Never"));
        j["spec"]["parallelism"] = json!(3);
        default_job(&mut j);
        assert!(j["spec"].get("completions").is_none());
    }

    #[test]
    fn job_restart_policy_always_is_rejected() {
        let mut j = job(None);
        default_job(&mut j);
        let errs = validate_job(&j);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template.spec.restartPolicy");
        assert_eq!(
            errs[0].message,
            "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
    }

    #[test]
    fn job_template_is_immutable() {
        let mut old = job(Some("Never"));
        default_job(&mut old);
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:6");
        let errs = validate_job_update(&new, &old);
        assert_eq!(errs[0].field, "spec.template");
        assert!(errs[0].message.ends_with(": field is immutable"));
    }

    #[test]
    fn cron_job_defaults_and_schedule() {
        let mut cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        default_cron_job(&mut cj);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["suspend"], false);
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
        assert!(
            validate_cron_job(&cj).is_empty(),
            "{:?}",
            validate_cron_job(&cj)
        );
        cj["spec"]["schedule"] = json!("bad");
        let errs = validate_cron_job(&cj);
        assert_eq!(
            errs[0].message,
            "Invalid value: \"bad\": expected exactly 5 fields, found 1: [bad]"
        );
    }
}
