//! Replicated workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ReplicationController): defaults, selector/template validation and
//! immutable selectors, as upstream's apps and core validation. No I/O.

use serde_json::{Map, Value, json};

use super::Cause;
use super::field::{self, BadValue, FieldPath};
use super::json::{default_str, default_value, get_str, obj_mut, str_map};
use super::meta::{map_value, validate_labels};
use super::pod::{
    SpecRules, default_template, normalized, validate_template, validate_template_metadata,
};
use crate::selectors::LabelSelector;

/// The replicated workload kinds this module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    ReplicationController,
}

impl Workload {
    /// The workload of a kind, if it is one.
    pub fn of_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "Deployment" => Workload::Deployment,
            "ReplicaSet" => Workload::ReplicaSet,
            "StatefulSet" => Workload::StatefulSet,
            "DaemonSet" => Workload::DaemonSet,
            "ReplicationController" => Workload::ReplicationController,
            _ => return None,
        })
    }

    /// The word upstream's "empty selector is invalid for X" uses.
    fn empty_selector_word(self) -> &'static str {
        match self {
            Workload::Deployment | Workload::ReplicaSet => "deployment",
            Workload::StatefulSet => "statefulset",
            Workload::DaemonSet => "daemonset",
            Workload::ReplicationController => "replicationcontroller",
        }
    }
}

fn spec_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    obj_mut(object.as_object_mut()?, "spec")
}

/// Upstream `SetDefaults_*` for the workload and its pod template.
pub fn default_workload(kind: Workload, object: &mut Value) {
    let Some(spec) = spec_mut(object) else {
        return;
    };
    if let Some(t) = obj_mut(spec, "template") {
        default_template(t);
    }
    match kind {
        Workload::Deployment => {
            default_value(spec, "replicas", json!(1));
            if let Some(strategy) = obj_mut(spec, "strategy") {
                default_str(strategy, "type", "RollingUpdate");
                if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                    && let Some(ru) = obj_mut(strategy, "rollingUpdate")
                {
                    default_value(ru, "maxUnavailable", json!("25%"));
                    default_value(ru, "maxSurge", json!("25%"));
                }
            }
            default_value(spec, "revisionHistoryLimit", json!(10));
            default_value(spec, "progressDeadlineSeconds", json!(600));
        }
        Workload::ReplicaSet => default_value(spec, "replicas", json!(1)),
        Workload::StatefulSet => {
            default_value(spec, "replicas", json!(1));
            default_str(spec, "podManagementPolicy", "OrderedReady");
            if let Some(us) = obj_mut(spec, "updateStrategy") {
                default_str(us, "type", "RollingUpdate");
                if us.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                    && let Some(ru) = obj_mut(us, "rollingUpdate")
                {
                    default_value(ru, "partition", json!(0));
                }
            }
            default_value(spec, "revisionHistoryLimit", json!(10));
            if let Some(p) = obj_mut(spec, "persistentVolumeClaimRetentionPolicy") {
                default_str(p, "whenDeleted", "Retain");
                default_str(p, "whenScaled", "Retain");
            }
            super::json::for_each_obj(spec, "volumeClaimTemplates", |pvc| {
                if let Some(s) = obj_mut(pvc, "spec") {
                    default_str(s, "volumeMode", "Filesystem");
                }
                if let Some(st) = obj_mut(pvc, "status") {
                    default_str(st, "phase", "Pending");
                }
            });
        }
        Workload::DaemonSet => {
            if let Some(us) = obj_mut(spec, "updateStrategy") {
                default_str(us, "type", "RollingUpdate");
                if us.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                    && let Some(ru) = obj_mut(us, "rollingUpdate")
                {
                    default_value(ru, "maxUnavailable", json!(1));
                    default_value(ru, "maxSurge", json!(0));
                }
            }
            default_value(spec, "revisionHistoryLimit", json!(10));
        }
        Workload::ReplicationController => {
            default_value(spec, "replicas", json!(1));
            // The selector and the RC's own labels default to the template labels.
            let labels = spec
                .get("template")
                .and_then(|t| t.pointer("/metadata/labels"))
                .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                .cloned();
            if let Some(labels) = labels {
                let empty = spec
                    .get("selector")
                    .and_then(Value::as_object)
                    .is_none_or(Map::is_empty);
                if empty {
                    spec.insert("selector".into(), labels.clone());
                }
                if let Some(meta) = object.as_object_mut().and_then(|o| obj_mut(o, "metadata")) {
                    let none = meta
                        .get("labels")
                        .and_then(Value::as_object)
                        .is_none_or(Map::is_empty);
                    if none {
                        meta.insert("labels".into(), labels);
                    }
                }
            }
        }
    }
}

/// Go's `%#v` of a `metav1.LabelSelector` value, as upstream prints it.
pub fn selector_repr(selector: &Value) -> BadValue {
    let ml = match selector.get("matchLabels") {
        Some(m) if m.is_object() => map_value(Some(m)).to_go(),
        _ => "map[string]string(nil)".to_string(),
    };
    let exprs = match selector.get("matchExpressions").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    let values: Vec<String> = e
                        .get("values")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .map(|v| field::go_quote(v.as_str().unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default();
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:[]string{{{}}}}}",
                        field::go_quote(get_str(e, &["key"])),
                        field::go_quote(get_str(e, &["operator"])),
                        values.join(", ")
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
        _ => "[]v1.LabelSelectorRequirement(nil)".to_string(),
    };
    BadValue::Raw(format!(
        "v1.LabelSelector{{MatchLabels:{ml}, MatchExpressions:{exprs}}}"
    ))
}

fn template_labels_repr(template: &Value) -> BadValue {
    match template.pointer("/metadata/labels") {
        Some(l) if l.is_object() => map_value(Some(l)),
        _ => BadValue::Raw("map[string]string(nil)".into()),
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

/// Validates a `metav1.LabelSelector` (keys, values, operators).
pub fn validate_label_selector(selector: &Value, path: &FieldPath) -> Vec<Cause> {
    let mut errs = validate_labels(selector.get("matchLabels"), &path.child("matchLabels"));
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for (i, e) in exprs.iter().enumerate() {
            let ep = path.child("matchExpressions").index(i);
            let op = get_str(e, &["operator"]);
            let n = e
                .get("values")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            match op {
                "In" | "NotIn" if n == 0 => errs.push(field::required(
                    &ep.child("values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                )),
                "Exists" | "DoesNotExist" if n > 0 => errs.push(field::forbidden(
                    &ep.child("values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => errs.push(field::invalid(
                    &ep.child("operator"),
                    other,
                    "not a valid selector operator",
                )),
            }
            let key = get_str(e, &["key"]);
            for m in super::meta::is_qualified_name(key) {
                errs.push(field::invalid(&ep.child("key"), key, &m));
            }
        }
    }
    errs
}

fn validate_percent_or_int(v: Option<&Value>, path: &FieldPath, errs: &mut Vec<Cause>) -> bool {
    // Returns whether the value is zero.
    match v {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            if n < 0 {
                errs.push(field::invalid(
                    path,
                    n,
                    "must be greater than or equal to 0",
                ));
            }
            n == 0
        }
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => {
                if p < 0 {
                    errs.push(field::invalid(
                        path,
                        BadValue::Raw(s.clone()),
                        "must be greater than or equal to 0",
                    ));
                } else if p > 100 {
                    errs.push(field::invalid(
                        path,
                        BadValue::Raw(s.clone()),
                        "must not be greater than 100%",
                    ));
                }
                p == 0
            }
            None => {
                errs.push(field::invalid(
                    path,
                    BadValue::Raw(s.clone()),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
                false
            }
        },
        _ => true,
    }
}

/// An `intstr.IntOrString` as its `String()` prints it.
fn int_or_string(v: Option<&Value>) -> BadValue {
    match v {
        Some(Value::String(s)) => BadValue::Raw(s.clone()),
        Some(Value::Number(n)) => BadValue::Raw(n.to_string()),
        _ => BadValue::Raw("0".into()),
    }
}

fn validate_deployment_strategy(spec: &Value, path: &FieldPath, errs: &mut Vec<Cause>) {
    let sp = path.child("strategy");
    let strategy = spec.get("strategy").cloned().unwrap_or(Value::Null);
    match get_str(&strategy, &["type"]) {
        "Recreate" => {
            if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                errs.push(field::forbidden(
                    &sp.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let ru = strategy
                .get("rollingUpdate")
                .cloned()
                .unwrap_or(Value::Null);
            let rp = sp.child("rollingUpdate");
            let unavailable_zero = validate_percent_or_int(
                ru.get("maxUnavailable"),
                &rp.child("maxUnavailable"),
                errs,
            );
            let surge_zero =
                validate_percent_or_int(ru.get("maxSurge"), &rp.child("maxSurge"), errs);
            if unavailable_zero && surge_zero {
                errs.push(field::invalid(
                    &rp.child("maxUnavailable"),
                    int_or_string(ru.get("maxUnavailable")),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        other => errs.push(field::not_supported(
            &sp.child("type"),
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// Validates a workload on create (the spec part; metadata is checked by the caller).
pub fn validate_workload(kind: Workload, object: &Value) -> Vec<Cause> {
    let spec_path = FieldPath::new("spec");
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let mut errs = Vec::new();
    non_negative(&spec, "replicas", &spec_path, &mut errs);
    non_negative(&spec, "minReadySeconds", &spec_path, &mut errs);
    non_negative(&spec, "revisionHistoryLimit", &spec_path, &mut errs);
    let template = spec.get("template").cloned().unwrap_or(Value::Null);
    let who = match kind {
        Workload::Deployment | Workload::ReplicaSet => "ReplicaSet",
        Workload::StatefulSet => "StatefulSet",
        Workload::DaemonSet => "DaemonSet",
        Workload::ReplicationController => "ReplicationController",
    };
    let rules = SpecRules {
        restart_policies: Some(&["Always"]),
        forbid_active_deadline: Some(who),
    };
    let template_path = spec_path.child("template");
    // The selector: a plain map for RCs, a LabelSelector for apps/v1.
    let mut selects_nothing = false;
    let selector = if kind == Workload::ReplicationController {
        let map = str_map(spec.get("selector"));
        if map.is_empty() {
            errs.push(field::required(&spec_path.child("selector"), ""));
            None
        } else {
            errs.extend(validate_labels(
                spec.get("selector"),
                &spec_path.child("selector"),
            ));
            Some(LabelSelector::from_match_labels(&map))
        }
    } else {
        match spec.get("selector").filter(|s| !s.is_null()) {
            None => {
                // A missing selector selects nothing: upstream then also
                // reports the template labels as unmatched.
                if kind != Workload::DaemonSet {
                    errs.push(field::required(&spec_path.child("selector"), ""));
                }
                selects_nothing = true;
                None
            }
            Some(sel) => {
                errs.extend(validate_label_selector(sel, &spec_path.child("selector")));
                let n = sel
                    .get("matchLabels")
                    .and_then(Value::as_object)
                    .map_or(0, Map::len)
                    + sel
                        .get("matchExpressions")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                if n == 0 {
                    errs.push(field::invalid(
                        &spec_path.child("selector"),
                        selector_repr(sel),
                        &format!(
                            "empty selector is invalid for {}",
                            kind.empty_selector_word()
                        ),
                    ));
                }
                match LabelSelector::from_json(sel) {
                    Some(s) => Some(s),
                    None => {
                        errs.push(field::invalid(
                            &spec_path.child("selector"),
                            selector_repr(sel),
                            "invalid label selector",
                        ));
                        None
                    }
                }
            }
        }
    };
    if template.is_null() {
        errs.push(field::required(&template_path, ""));
    } else {
        let unmatched = selects_nothing
            || selector
                .filter(|s| !s.is_empty())
                .is_some_and(|sel| !sel.matches(&template));
        if unmatched {
            errs.push(field::invalid(
                &template_path.child("metadata").child("labels"),
                template_labels_repr(&template),
                "`selector` does not match template `labels`",
            ));
        }
        if kind == Workload::StatefulSet {
            // Upstream validates only the template's metadata here: its
            // volumes come from volumeClaimTemplates as well.
            errs.extend(validate_template_metadata(&template, &template_path));
            let rp = template_path.child("spec").child("restartPolicy");
            let restart = get_str(&template, &["spec", "restartPolicy"]);
            if restart != "Always" {
                errs.push(field::not_supported(&rp, restart, &["Always"]));
            }
            if template
                .pointer("/spec/activeDeadlineSeconds")
                .is_some_and(|v| !v.is_null())
            {
                errs.push(field::forbidden(
                    &template_path.child("spec").child("activeDeadlineSeconds"),
                    "activeDeadlineSeconds in StatefulSet is not Supported",
                ));
            }
        } else {
            errs.extend(validate_template(&template, &template_path, rules));
        }
    }
    match kind {
        Workload::Deployment => {
            validate_deployment_strategy(&spec, &spec_path, &mut errs);
            non_negative(&spec, "progressDeadlineSeconds", &spec_path, &mut errs);
            if let Some(pds) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
                let mrs = spec
                    .get("minReadySeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if pds <= mrs {
                    errs.push(field::invalid(
                        &spec_path.child("progressDeadlineSeconds"),
                        pds,
                        "must be greater than minReadySeconds",
                    ));
                }
            }
        }
        Workload::StatefulSet => {
            match get_str(&spec, &["podManagementPolicy"]) {
                "OrderedReady" | "Parallel" => {}
                "" => errs.push(field::required(&spec_path.child("podManagementPolicy"), "")),
                other => errs.push(field::invalid(
                    &spec_path.child("podManagementPolicy"),
                    other,
                    "must be 'OrderedReady' or 'Parallel'",
                )),
            }
            match get_str(&spec, &["updateStrategy", "type"]) {
                "RollingUpdate" | "OnDelete" => {}
                "" => errs.push(field::required(&spec_path.child("updateStrategy"), "")),
                other => errs.push(field::invalid(
                    &spec_path.child("updateStrategy"),
                    other,
                    "must be 'RollingUpdate' or 'OnDelete'",
                )),
            }
        }
        Workload::DaemonSet => match get_str(&spec, &["updateStrategy", "type"]) {
            "OnDelete" => {}
            "RollingUpdate" => {
                let rp = spec_path.child("updateStrategy").child("rollingUpdate");
                match spec
                    .pointer("/updateStrategy/rollingUpdate")
                    .filter(|v| !v.is_null())
                {
                    None => errs.push(field::required(&rp, "")),
                    Some(ru) => {
                        let unavailable_zero = validate_percent_or_int(
                            ru.get("maxUnavailable"),
                            &rp.child("maxUnavailable"),
                            &mut errs,
                        );
                        let surge_zero = validate_percent_or_int(
                            ru.get("maxSurge"),
                            &rp.child("maxSurge"),
                            &mut errs,
                        );
                        if !unavailable_zero && !surge_zero {
                            errs.push(field::invalid(
                                &rp.child("maxSurge"),
                                int_or_string(ru.get("maxSurge")),
                                "may not be set when maxUnavailable is non-zero",
                            ));
                        } else if unavailable_zero && surge_zero {
                            errs.push(field::required(
                                &rp.child("maxUnavailable"),
                                "cannot be 0 when maxSurge is 0",
                            ));
                        }
                    }
                }
            }
            other => errs.push(field::not_supported(
                &spec_path.child("updateStrategy").child("type"),
                other,
                &["OnDelete", "RollingUpdate"],
            )),
        },
        _ => {}
    }
    errs
}

/// Validates a workload update: the new object as on create, plus the
/// immutable selector (apps/v1) and StatefulSet's fixed spec fields.
pub fn validate_workload_update(kind: Workload, new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_workload(kind, new);
    let spec_path = FieldPath::new("spec");
    let new_sel = new
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or(Value::Null);
    let old_sel = old
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or(Value::Null);
    if kind != Workload::ReplicationController && normalized(&new_sel) != normalized(&old_sel) {
        errs.push(field::invalid(
            &spec_path.child("selector"),
            selector_repr(&new_sel),
            "field is immutable",
        ));
    }
    if kind == Workload::StatefulSet {
        let strip = |v: &Value| {
            let mut s = normalized(v.get("spec").unwrap_or(&Value::Null));
            if let Some(m) = s.as_object_mut() {
                for k in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    m.remove(k);
                }
            }
            s
        };
        if strip(new) != strip(old) {
            errs.push(field::forbidden(
                &spec_path,
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": selector, "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
    }

    #[test]
    fn deployment_gets_upstream_defaults() {
        let mut d = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        default_workload(Workload::Deployment, &mut d);
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert!(pod.get("enableServiceLinks").is_none());
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
        assert!(
            validate_workload(Workload::Deployment, &d).is_empty(),
            "{:?}",
            validate_workload(Workload::Deployment, &d)
        );
    }

    #[test]
    fn selector_must_match_template_labels() {
        let mut d = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "other"}),
        );
        default_workload(Workload::Deployment, &mut d);
        let errs = validate_workload(Workload::Deployment, &d);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        assert_eq!(
            errs[0].message,
            "Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn selector_is_required_and_immutable() {
        let mut d = deployment(Value::Null, json!({"app": "web"}));
        default_workload(Workload::Deployment, &mut d);
        let text: Vec<String> = validate_workload(Workload::Deployment, &d)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            vec![
                "spec.selector: Required value",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
            ]
        );
        let mut old = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web", "v": "1"}),
        );
        default_workload(Workload::Deployment, &mut old);
        let mut new = deployment(
            json!({"matchLabels": {"app": "web", "v": "1"}}),
            json!({"app": "web", "v": "1"}),
        );
        default_workload(Workload::Deployment, &mut new);
        let errs = validate_workload_update(Workload::Deployment, &new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].message,
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"1\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        );
    }

    #[test]
    fn replicas_and_restart_policy() {
        let mut d = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        default_workload(Workload::Deployment, &mut d);
        let text: Vec<String> = validate_workload(Workload::Deployment, &d)
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(
            text,
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
    }

    #[test]
    fn daemonset_rolling_update_needs_one_non_zero() {
        let mut ds = json!({"spec": {"selector": {"matchLabels": {"a": "b"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        default_workload(Workload::DaemonSet, &mut ds);
        assert_eq!(
            validate_workload(Workload::DaemonSet, &ds)[0].to_string(),
            "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
        );
        ds["spec"]["updateStrategy"]["rollingUpdate"] =
            json!({"maxUnavailable": "10%", "maxSurge": 1});
        assert_eq!(
            validate_workload(Workload::DaemonSet, &ds)[0].to_string(),
            "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"
        );
    }

    #[test]
    fn statefulset_and_daemonset_defaults() {
        let mut s = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        let mut ds = s.clone();
        default_workload(Workload::StatefulSet, &mut s);
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(s["spec"]["replicas"], 1);
        assert!(validate_workload(Workload::StatefulSet, &s).is_empty());
        default_workload(Workload::DaemonSet, &mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        assert!(validate_workload(Workload::DaemonSet, &ds).is_empty());
    }

    #[test]
    fn statefulset_mounts_may_name_claim_templates() {
        let mut s = json!({"metadata": {"name": "db"}, "spec": {"serviceName": "db", "selector": {"matchLabels": {"a": "b"}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}],
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}}});
        default_workload(Workload::StatefulSet, &mut s);
        assert!(
            validate_workload(Workload::StatefulSet, &s).is_empty(),
            "{:?}",
            validate_workload(Workload::StatefulSet, &s)
        );
    }

    #[test]
    fn statefulset_spec_is_mostly_immutable() {
        let mut old = json!({"spec": {"serviceName": "a", "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        default_workload(Workload::StatefulSet, &mut old);
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        assert!(validate_workload_update(Workload::StatefulSet, &new, &old).is_empty());
        new["spec"]["serviceName"] = json!("b");
        assert_eq!(
            validate_workload_update(Workload::StatefulSet, &new, &old)[0].field,
            "spec"
        );
    }

    #[test]
    fn replication_controller_selector_defaults_from_template() {
        let mut rc = json!({"metadata": {"name": "r"}, "spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        default_workload(Workload::ReplicationController, &mut rc);
        assert_eq!(rc["spec"]["selector"], json!({"app": "x"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "x"}));
        assert!(validate_workload(Workload::ReplicationController, &rc).is_empty());
    }
}
