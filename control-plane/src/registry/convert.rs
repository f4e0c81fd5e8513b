//! Conversions between served versions that share storage: events.k8s.io/v1
//! Events are stored as core/v1 Events, autoscaling/v1 HPAs as
//! autoscaling/v2. Applied at the handler edge on the way in and out. No I/O.

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;

const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

fn is_new_event(r: &ResourceType) -> bool {
    r.group == "events.k8s.io" && r.plural == "events"
}

fn is_hpa_v1(r: &ResourceType) -> bool {
    r.group == "autoscaling" && r.version == "v1" && r.plural == "horizontalpodautoscalers"
}

/// Whether `from_storage` leaves the metadata as stored (the HPA v1
/// conversion moves v2 fields into annotations).
pub fn keeps_metadata(resource: &ResourceType) -> bool {
    !is_hpa_v1(resource)
}

/// Whether `from_storage` changes nothing but `apiVersion` and `kind`.
pub fn keeps_body(resource: &ResourceType) -> bool {
    !is_new_event(resource) && !is_hpa_v1(resource)
}

/// Converts an object of a served version into its storage version.
pub fn to_storage(resource: &ResourceType, obj: Value) -> Value {
    if is_new_event(resource) && obj.get("apiVersion").and_then(Value::as_str) != Some("v1") {
        event_to_core(obj)
    } else if is_hpa_v1(resource)
        && obj.get("apiVersion").and_then(Value::as_str) != Some("autoscaling/v2")
    {
        hpa_v1_to_v2(obj)
    } else {
        obj
    }
}

/// Converts a stored object into the version a request asked for, labelled
/// with that version's apiVersion and kind.
pub fn from_storage(resource: &ResourceType, obj: Value) -> Value {
    let mut obj = if is_new_event(resource)
        && obj.get("apiVersion").and_then(Value::as_str) != Some("events.k8s.io/v1")
    {
        event_from_core(obj)
    } else if is_hpa_v1(resource)
        && obj.get("apiVersion").and_then(Value::as_str) != Some("autoscaling/v1")
    {
        hpa_v2_to_v1(obj)
    } else {
        obj
    };
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(resource.api_version));
        m.insert("kind".into(), json!(resource.kind));
    }
    obj
}

fn rename(from: &mut Map<String, Value>, to: &mut Map<String, Value>, pairs: &[(&str, &str)]) {
    for (a, b) in pairs {
        if let Some(v) = from.remove(*a) {
            to.insert((*b).to_string(), v);
        }
    }
}

/// The field pairs (events.k8s.io/v1 name, core/v1 name).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("metadata", "metadata"),
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("series", "series"),
    ("eventTime", "eventTime"),
    ("action", "action"),
    ("type", "type"),
    ("reason", "reason"),
];

/// events.k8s.io/v1 Event into core/v1.
pub fn event_to_core(obj: Value) -> Value {
    let Value::Object(mut from) = obj else {
        return obj;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    rename(&mut from, &mut out, EVENT_FIELDS);
    // Not omitempty in core/v1.
    out.entry("involvedObject").or_insert_with(|| json!({}));
    Value::Object(out)
}

/// core/v1 Event into events.k8s.io/v1.
pub fn event_from_core(obj: Value) -> Value {
    let Value::Object(mut from) = obj else {
        return obj;
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    let reversed: Vec<(&str, &str)> = EVENT_FIELDS.iter().map(|(a, b)| (*b, *a)).collect();
    rename(&mut from, &mut out, &reversed);
    // Not omitempty in events.k8s.io/v1.
    out.entry("eventTime").or_insert(Value::Null);
    Value::Object(out)
}

fn is_cpu_utilization(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && m.pointer("/resource/target/type").and_then(Value::as_str) == Some("Utilization")
}

fn take_annotation(meta: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let ann = meta.get_mut("annotations")?.as_object_mut()?;
    let raw = ann.remove(key)?;
    let empty = ann.is_empty();
    if empty {
        meta.remove("annotations");
    }
    serde_json::from_str(raw.as_str()?).ok()
}

fn put_annotation(meta: &mut Map<String, Value>, key: &str, value: &Value) {
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(ann) = ann.as_object_mut() {
        ann.insert(key.to_string(), json!(value.to_string()));
    }
}

/// autoscaling/v1 HPA into autoscaling/v2: the CPU target becomes a
/// Resource metric; what v1 kept in annotations comes back.
pub fn hpa_v1_to_v2(obj: Value) -> Value {
    let Value::Object(mut o) = obj else {
        return obj;
    };
    o.insert("apiVersion".into(), json!("autoscaling/v2"));
    let mut meta = o
        .remove("metadata")
        .and_then(|m| m.as_object().cloned())
        .unwrap_or_default();
    let extra_metrics = take_annotation(&mut meta, METRICS_ANNOTATION);
    let extra_current = take_annotation(&mut meta, CURRENT_METRICS_ANNOTATION);
    let conditions = take_annotation(&mut meta, CONDITIONS_ANNOTATION);
    let behavior = take_annotation(&mut meta, BEHAVIOR_ANNOTATION);
    o.insert("metadata".into(), Value::Object(meta));
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        let mut metrics = Vec::new();
        if let Some(cpu) = spec
            .remove("targetCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}));
        }
        if let Some(Value::Array(extra)) = extra_metrics {
            metrics.extend(extra);
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), Value::Array(metrics));
        }
        if let Some(b) = behavior {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(status) = o.get_mut("status").and_then(Value::as_object_mut) {
        let mut current = Vec::new();
        if let Some(cpu) = status
            .remove("currentCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            current.push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}));
        }
        if let Some(Value::Array(extra)) = extra_current {
            current.extend(extra);
        }
        if !current.is_empty() {
            status.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(c) = conditions {
            status.insert("conditions".into(), c);
        }
    }
    Value::Object(o)
}

/// autoscaling/v2 HPA into autoscaling/v1: a CPU utilization metric becomes
/// `targetCPUUtilizationPercentage`; the rest is kept in annotations as upstream.
pub fn hpa_v2_to_v1(obj: Value) -> Value {
    let Value::Object(mut o) = obj else {
        return obj;
    };
    o.insert("apiVersion".into(), json!("autoscaling/v1"));
    let mut meta = o
        .remove("metadata")
        .and_then(|m| m.as_object().cloned())
        .unwrap_or_default();
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = match spec.remove("metrics") {
            Some(Value::Array(m)) => m,
            _ => Vec::new(),
        };
        let (cpu, rest): (Vec<Value>, Vec<Value>) =
            metrics.into_iter().partition(is_cpu_utilization);
        if let Some(u) = cpu
            .first()
            .and_then(|m| m.pointer("/resource/target/averageUtilization"))
        {
            spec.insert("targetCPUUtilizationPercentage".into(), u.clone());
        }
        if !rest.is_empty() {
            put_annotation(&mut meta, METRICS_ANNOTATION, &Value::Array(rest));
        }
        if let Some(b) = spec.remove("behavior").filter(|b| !b.is_null()) {
            put_annotation(&mut meta, BEHAVIOR_ANNOTATION, &b);
        }
    }
    if let Some(status) = o.get_mut("status").and_then(Value::as_object_mut) {
        let current = match status.remove("currentMetrics") {
            Some(Value::Array(m)) => m,
            _ => Vec::new(),
        };
        let (cpu, rest): (Vec<Value>, Vec<Value>) = current.into_iter().partition(|m| {
            m.get("type").and_then(Value::as_str) == Some("Resource")
                && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
                && m.pointer("/resource/current/averageUtilization").is_some()
        });
        if let Some(u) = cpu
            .first()
            .and_then(|m| m.pointer("/resource/current/averageUtilization"))
        {
            status.insert("currentCPUUtilizationPercentage".into(), u.clone());
        }
        if !rest.is_empty() {
            put_annotation(&mut meta, CURRENT_METRICS_ANNOTATION, &Value::Array(rest));
        }
        if let Some(c) = status
            .remove("conditions")
            .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
        {
            put_annotation(&mut meta, CONDITIONS_ANNOTATION, &c);
        }
    }
    o.insert("metadata".into(), Value::Object(meta));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn events_round_trip_through_core() {
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "d"},
            "eventTime": "2024-01-01T00:00:00.000000Z", "note": "hello",
            "regarding": {"kind": "Pod", "name": "p"}, "reason": "Started", "type": "Normal",
            "reportingController": "kubelet", "reportingInstance": "node1", "action": "Start",
            "deprecatedSource": {"component": "kubelet"}, "deprecatedCount": 2,
            "deprecatedFirstTimestamp": "2024-01-01T00:00:00Z", "deprecatedLastTimestamp": "2024-01-01T00:00:01Z",
            "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"}});
        let stored = to_storage(ev, new.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["message"], "hello");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["reportingComponent"], "kubelet");
        assert_eq!(stored["source"]["component"], "kubelet");
        assert_eq!(stored["count"], 2);
        assert_eq!(stored["firstTimestamp"], "2024-01-01T00:00:00Z");
        assert!(stored.get("note").is_none());
        assert_eq!(from_storage(ev, stored.clone()), new);
        let core = find("", "v1", "events").unwrap();
        assert_eq!(from_storage(core, stored.clone()), stored);
    }

    #[test]
    fn hpa_round_trip_through_v2() {
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let hpa = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "namespace": "d"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 1, "desiredReplicas": 1, "currentCPUUtilizationPercentage": 20}});
        let stored = to_storage(v1, hpa.clone());
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert_eq!(
            stored["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            20
        );
        assert_eq!(from_storage(v1, stored), hpa);
    }

    #[test]
    fn events_get_their_required_fields() {
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "message": "hi"});
        let served = from_storage(ev, core);
        assert_eq!(served["eventTime"], Value::Null);
        assert_eq!(served["note"], "hi");
        let stored = to_storage(
            ev,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
        );
        assert_eq!(stored["involvedObject"], json!({}));
    }

    #[test]
    fn v2_only_fields_survive_v1_in_annotations() {
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h"},
            "spec": {"maxReplicas": 3, "metrics": [
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}}]},
            "status": {"conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let old = from_storage(v1, v2.clone());
        assert!(old["spec"].get("targetCPUUtilizationPercentage").is_none());
        assert!(old["metadata"]["annotations"][METRICS_ANNOTATION].is_string());
        assert_eq!(to_storage(v1, old), v2);
    }
}
