//! LimitRange admission (upstream plugin/pkg/admission/limitranger): a pod
//! created in a namespace with LimitRanges gets the `default` limits and
//! `defaultRequest` requests its containers leave out, then must respect
//! each range's min, max and maxLimitRequestRatio per Container and per
//! Pod; a PersistentVolumeClaim must respect the storage min and max.

use agent::quantity::ParsedQuantity;
use serde_json::{Map, Value, json};

use crate::resources::{self, ResourceType};
use crate::server::Api;
use crate::server::meta;
use crate::server::objects::ListOptions;
use crate::server::status::{ApiError, qualified};

use super::usage::{self, Usage};

/// The annotation listing what the plugin set (upstream `limitRangerAnnotation`).
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

async fn ranges(api: &Api, ns: &str) -> Result<Vec<Value>, ApiError> {
    let Some(lr) = resources::find("", "v1", "limitranges") else {
        return Ok(Vec::new());
    };
    Ok(api.list(lr, Some(ns), &ListOptions::default()).await?.items)
}

fn items<'a>(ranges: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .flat_map(|r| {
            r.pointer("/spec/limits")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter(move |i| i.get("type").and_then(Value::as_str) == Some(kind))
}

/// Sets the Container defaults of every range on the pod's containers
/// (upstream `mergePodResourceRequirements`).
pub fn apply_defaults(pod: &mut Value, ranges: &[Value]) {
    let mut defaults = Map::new();
    let mut default_requests = Map::new();
    for item in items(ranges, "Container") {
        for (src, dst) in [
            ("default", &mut defaults),
            ("defaultRequest", &mut default_requests),
        ] {
            if let Some(m) = item.get(src).and_then(Value::as_object) {
                for (k, v) in m {
                    dst.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    if defaults.is_empty() && default_requests.is_empty() {
        return;
    }
    let mut notes: Vec<String> = Vec::new();
    for (list, kind) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(cs) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let Some(obj) = c.as_object_mut() else {
                continue;
            };
            let res = obj.entry("resources").or_insert_with(|| json!({}));
            let mut set_req = Vec::new();
            let mut set_lim = Vec::new();
            for (which, defaults, set) in [
                ("requests", &default_requests, &mut set_req),
                ("limits", &defaults, &mut set_lim),
            ] {
                for (k, v) in defaults {
                    let present = res.pointer(&format!("/{which}/{k}")).is_some();
                    if present {
                        continue;
                    }
                    if !res.get(which).is_some_and(Value::is_object) {
                        res[which] = json!({});
                    }
                    res[which][k] = v.clone();
                    set.push(k.clone());
                }
            }
            if !set_req.is_empty() {
                set_req.sort();
                notes.push(format!("{} request for {kind} {name}", set_req.join(", ")));
            }
            if !set_lim.is_empty() {
                set_lim.sort();
                notes.push(format!("{} limit for {kind} {name}", set_lim.join(", ")));
            }
        }
    }
    if !notes.is_empty() {
        meta::set_meta(pod, "annotations", {
            let mut a = pod
                .pointer("/metadata/annotations")
                .cloned()
                .unwrap_or_else(|| json!({}));
            a[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
            a
        });
    }
}

/// `(request, limit, enforced)` compared in milli-units when they fit, as
/// upstream `requestLimitEnforcedValues`.
fn values(
    req: Option<&ParsedQuantity>,
    lim: Option<&ParsedQuantity>,
    enforced: &ParsedQuantity,
) -> (i128, i128, i128) {
    let milli = |q: Option<&ParsedQuantity>| q.map_or(0, |q| i128::from(q.milli_value()));
    (milli(req), milli(lim), i128::from(enforced.milli_value()))
}

fn min_constraint(
    kind: &str,
    res: &str,
    enforced: &ParsedQuantity,
    req: &Usage,
    lim: &Usage,
) -> Option<String> {
    let (r, l) = (req.get(res), lim.get(res));
    let (rv, lv, ev) = values(r, l, enforced);
    match (r, l) {
        (None, _) => Some(format!(
            "minimum {res} usage per {kind} is {enforced}.  No request is specified"
        )),
        (Some(r), _) if rv < ev => Some(format!(
            "minimum {res} usage per {kind} is {enforced}, but request is {r}"
        )),
        (_, Some(l)) if lv < ev => Some(format!(
            "minimum {res} usage per {kind} is {enforced}, but limit is {l}"
        )),
        _ => None,
    }
}

fn max_constraint(
    kind: &str,
    res: &str,
    enforced: &ParsedQuantity,
    req: &Usage,
    lim: &Usage,
) -> Option<String> {
    let (r, l) = (req.get(res), lim.get(res));
    let (rv, lv, ev) = values(r, l, enforced);
    match (r, l) {
        (_, None) => Some(format!(
            "maximum {res} usage per {kind} is {enforced}.  No limit is specified"
        )),
        (_, Some(l)) if lv > ev => Some(format!(
            "maximum {res} usage per {kind} is {enforced}, but limit is {l}"
        )),
        (Some(r), _) if rv > ev => Some(format!(
            "maximum {res} usage per {kind} is {enforced}, but request is {r}"
        )),
        _ => None,
    }
}

#[allow(clippy::cast_precision_loss)]
fn ratio_constraint(
    kind: &str,
    res: &str,
    enforced: &ParsedQuantity,
    req: &Usage,
    lim: &Usage,
) -> Option<String> {
    let (r, l) = (req.get(res), lim.get(res));
    let (rv, lv, _) = values(r, l, enforced);
    if r.is_none() || rv == 0 {
        return Some(format!(
            "{res} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
        ));
    }
    if l.is_none() || lv == 0 {
        return Some(format!(
            "{res} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
        ));
    }
    let observed = lv as f64 / rv as f64;
    let max = enforced.milli_value() as f64 / 1000.0;
    (observed > max).then(|| {
        format!(
            "{res} max limit to request ratio per {kind} is {enforced}, but provided ratio is {observed:.6}"
        )
    })
}

/// Every violation of one range item by a request/limit pair.
fn check_item(item: &Value, kind: &str, req: &Usage, lim: &Usage, errs: &mut Vec<String>) {
    for (field, f) in [
        (
            "min",
            min_constraint as fn(&str, &str, &ParsedQuantity, &Usage, &Usage) -> Option<String>,
        ),
        ("max", max_constraint),
        ("maxLimitRequestRatio", ratio_constraint),
    ] {
        for (res, enforced) in usage::resource_list(item.get(field)) {
            if let Some(e) = f(kind, &res, &enforced, req, lim) {
                errs.push(e);
            }
        }
    }
}

/// Checks a pod against the Container and Pod items of every range
/// (upstream `PodValidateLimitFunc`); the messages, aggregated.
pub fn validate_pod(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errs = Vec::new();
    for item in items(ranges, "Container") {
        for list in ["containers", "initContainers"] {
            for c in pod
                .pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let req = usage::resource_list(c.pointer("/resources/requests"));
                let lim = usage::resource_list(c.pointer("/resources/limits"));
                check_item(item, "Container", &req, &lim, &mut errs);
            }
        }
    }
    for item in items(ranges, "Pod") {
        let req = usage::pod_resources(pod, "requests");
        let lim = usage::pod_resources(pod, "limits");
        check_item(item, "Pod", &req, &lim, &mut errs);
    }
    errs
}

/// Checks a claim's storage request against PersistentVolumeClaim items.
pub fn validate_claim(pvc: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errs = Vec::new();
    let req = usage::resource_list(pvc.pointer("/spec/resources/requests"));
    for item in items(ranges, "PersistentVolumeClaim") {
        for (res, enforced) in usage::resource_list(item.get("min")) {
            if let Some(q) = req.get(&res).filter(|q| **q < enforced) {
                errs.push(format!(
                    "minimum {res} usage per PersistentVolumeClaim is {enforced}, but request is {q}"
                ));
            } else if !req.contains_key(&res) {
                errs.push(format!(
                    "minimum {res} usage per PersistentVolumeClaim is {enforced}.  No request is specified"
                ));
            }
        }
        for (res, enforced) in usage::resource_list(item.get("max")) {
            if let Some(q) = req.get(&res).filter(|q| **q > enforced) {
                errs.push(format!(
                    "maximum {res} usage per PersistentVolumeClaim is {enforced}, but request is {q}"
                ));
            }
        }
    }
    errs
}

/// The aggregate message of upstream `utilerrors.NewAggregate`.
fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        _ => format!("[{}]", errs.join(", ")),
    }
}

fn applies(r: &ResourceType) -> bool {
    r.group.is_empty() && matches!(r.plural, "pods" | "persistentvolumeclaims")
}

/// The mutating half: defaults for a pod about to be created.
pub async fn default(
    api: &Api,
    r: &ResourceType,
    ns: &str,
    obj: &mut Value,
) -> Result<(), ApiError> {
    if !(r.group.is_empty() && r.plural == "pods") {
        return Ok(());
    }
    let ranges = ranges(api, ns).await?;
    apply_defaults(obj, &ranges);
    Ok(())
}

/// The validating half, on the object as it will be stored.
pub async fn validate(api: &Api, r: &ResourceType, ns: &str, obj: &Value) -> Result<(), ApiError> {
    if !applies(r) {
        return Ok(());
    }
    let ranges = ranges(api, ns).await?;
    if ranges.is_empty() {
        return Ok(());
    }
    let errs = if r.plural == "pods" {
        validate_pod(obj, &ranges)
    } else {
        validate_claim(obj, &ranges)
    };
    if errs.is_empty() {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} \"{}\" is forbidden: {}",
        qualified(r),
        meta::name(obj),
        aggregate(&errs)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(item: Value) -> Vec<Value> {
        vec![json!({"spec": {"limits": [item]}})]
    }

    #[test]
    fn defaults_fill_what_containers_leave_out_and_are_annotated() {
        let ranges = range(
            json!({"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "100m"}}),
        );
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "64Mi"}}}, {"name": "b"}]}});
        apply_defaults(&mut pod, &ranges);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "100m"}})
        );
        assert_eq!(
            pod["spec"]["containers"][1]["resources"]["limits"],
            json!({"cpu": "500m", "memory": "128Mi"})
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container a; cpu limit for container a; cpu request for container b; cpu, memory limit for container b"
        );
    }

    #[test]
    fn min_max_and_ratio_messages_match_upstream() {
        let ranges = range(
            json!({"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "10Mi"}, "maxLimitRequestRatio": {"cpu": "2"}}),
        );
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "500m", "memory": "1Mi"}, "limits": {"cpu": "2"}}}]}});
        assert_eq!(
            validate_pod(&pod, &ranges),
            [
                "minimum memory usage per Container is 10Mi, but request is 1Mi",
                "maximum cpu usage per Container is 1, but limit is 2",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000",
            ]
        );
        let ok = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "500m", "memory": "20Mi"}, "limits": {"cpu": "1"}}}]}});
        assert!(validate_pod(&ok, &ranges).is_empty());
        let pod_range = range(json!({"type": "Pod", "max": {"memory": "100Mi"}}));
        let two = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "60Mi"}}},
            {"name": "b", "resources": {"limits": {"memory": "60Mi"}}}]}});
        assert_eq!(
            aggregate(&validate_pod(&two, &pod_range)),
            "maximum memory usage per Pod is 100Mi, but limit is 120Mi"
        );
    }
}
