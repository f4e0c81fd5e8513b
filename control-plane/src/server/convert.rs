//! Version conversion at the handler edge for resources that share storage:
//! core/v1 and events.k8s.io/v1 Events (stored as core/v1), autoscaling v1
//! and v2 HorizontalPodAutoscalers (stored as v2).

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;

/// The `(apiVersion, kind)` objects of `resource` are stored as.
pub fn storage_version(resource: &ResourceType) -> (&'static str, &'static str) {
    match (resource.storage_plural, resource.kind) {
        ("events", _) => ("v1", "Event"),
        ("horizontalpodautoscalers", _) => ("autoscaling/v2", "HorizontalPodAutoscaler"),
        _ => (resource.api_version, resource.kind),
    }
}

fn api_version(obj: &Value) -> &str {
    obj.get("apiVersion").and_then(Value::as_str).unwrap_or("")
}

/// Converts a stored object into the version `resource` serves.
pub fn to_served(resource: &ResourceType, mut obj: Value) -> Value {
    let from = api_version(&obj).to_string();
    if from != resource.api_version {
        obj = match (from.as_str(), resource.api_version) {
            ("v1", "events.k8s.io/v1") => core_event_to_events(obj),
            ("events.k8s.io/v1", "v1") => events_to_core_event(obj),
            ("autoscaling/v2", "autoscaling/v1") => hpa_v2_to_v1(obj),
            ("autoscaling/v1", "autoscaling/v2") => hpa_v1_to_v2(obj),
            _ => obj,
        };
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(resource.api_version));
        m.insert("kind".into(), json!(resource.kind));
    }
    obj
}

/// Converts a served object into its storage version.
pub fn to_storage(resource: &ResourceType, mut obj: Value) -> Value {
    let (av, kind) = storage_version(resource);
    if resource.api_version != av {
        obj = match (resource.api_version, av) {
            ("events.k8s.io/v1", "v1") => events_to_core_event(obj),
            ("autoscaling/v1", "autoscaling/v2") => hpa_v1_to_v2(obj),
            _ => obj,
        };
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(av));
        m.insert("kind".into(), json!(kind));
    }
    obj
}

fn moved(src: &mut Map<String, Value>, dst: &mut Map<String, Value>, pairs: &[(&str, &str)]) {
    for (from, to) in pairs {
        if let Some(v) = src.remove(*from) {
            dst.insert((*to).to_string(), v);
        }
    }
}

fn core_event_to_events(obj: Value) -> Value {
    let Value::Object(mut src) = obj else {
        return obj;
    };
    let mut dst = Map::new();
    moved(
        &mut src,
        &mut dst,
        &[
            ("metadata", "metadata"),
            ("eventTime", "eventTime"),
            ("series", "series"),
            ("reportingComponent", "reportingController"),
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("reason", "reason"),
            ("involvedObject", "regarding"),
            ("related", "related"),
            ("message", "note"),
            ("type", "type"),
            ("source", "deprecatedSource"),
            ("firstTimestamp", "deprecatedFirstTimestamp"),
            ("lastTimestamp", "deprecatedLastTimestamp"),
            ("count", "deprecatedCount"),
        ],
    );
    if !dst.contains_key("eventTime") {
        dst.insert("eventTime".into(), Value::Null);
    }
    Value::Object(dst)
}

fn events_to_core_event(obj: Value) -> Value {
    let Value::Object(mut src) = obj else {
        return obj;
    };
    let mut dst = Map::new();
    moved(
        &mut src,
        &mut dst,
        &[
            ("metadata", "metadata"),
            ("eventTime", "eventTime"),
            ("series", "series"),
            ("reportingController", "reportingComponent"),
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("reason", "reason"),
            ("regarding", "involvedObject"),
            ("related", "related"),
            ("note", "message"),
            ("type", "type"),
            ("deprecatedSource", "source"),
            ("deprecatedFirstTimestamp", "firstTimestamp"),
            ("deprecatedLastTimestamp", "lastTimestamp"),
            ("deprecatedCount", "count"),
        ],
    );
    if !dst.contains_key("involvedObject") {
        dst.insert("involvedObject".into(), json!({}));
    }
    Value::Object(dst)
}

fn hpa_v2_to_v1(mut obj: Value) -> Value {
    let cpu = obj
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter().find_map(|m| {
                (m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
                    .then(|| m.pointer("/resource/target/averageUtilization").cloned())
                    .flatten()
            })
        });
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("metrics");
        spec.remove("behavior");
        if let Some(cpu) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), cpu);
        }
    }
    let current = obj
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .and_then(|ms| {
            ms.iter()
                .find_map(|m| m.pointer("/resource/current/averageUtilization").cloned())
        });
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        status.remove("currentMetrics");
        status.remove("conditions");
        if let Some(c) = current {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    obj
}

fn hpa_v1_to_v2(mut obj: Value) -> Value {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(cpu) = spec.remove("targetCPUUtilizationPercentage")
    {
        spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]),
            );
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
        && let Some(c) = status.remove("currentCPUUtilizationPercentage")
    {
        status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": c}}}]),
            );
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_convert_both_ways() {
        let ev = crate::resources::find("events.k8s.io", "v1", "events").unwrap();
        let stored = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "message": "hi", "involvedObject": {"kind": "Pod", "name": "p"}});
        let served = to_served(ev, stored.clone());
        assert_eq!(served["note"], "hi");
        assert_eq!(served["regarding"]["name"], "p");
        assert_eq!(served["apiVersion"], "events.k8s.io/v1");
        let back = to_storage(ev, served);
        assert_eq!(back["message"], "hi");
        assert_eq!(back["apiVersion"], "v1");
    }

    #[test]
    fn hpa_v1_target_becomes_a_v2_metric() {
        let v1 = crate::resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let obj = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}, "spec": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        let stored = to_storage(v1, obj);
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        let back = to_served(v1, stored);
        assert_eq!(back["spec"]["targetCPUUtilizationPercentage"], 50);
    }
}
