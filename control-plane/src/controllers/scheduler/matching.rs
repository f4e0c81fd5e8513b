//! Predicates shared by the scheduler plugins and the DaemonSet controller:
//! label selectors, node selector terms (with `Gt`/`Lt` and `matchFields`),
//! and taints against tolerations, with upstream's semantics. No I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

pub fn node_labels(node: &Node) -> &BTreeMap<String, String> {
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

pub fn pod_labels(pod: &Pod) -> &BTreeMap<String, String> {
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether `labels` match a `metav1.LabelSelector`; a malformed expression
/// matches nothing, an empty selector everything.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    for (k, v) in selector.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or(&[]);
        let value = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if req.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches: every expression on the labels and
/// every field (only `metadata.name`) must match; an empty term matches
/// nothing, as upstream.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node_labels(node);
    if !exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key)))
    {
        return false;
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    fields.iter().all(|r| {
        r.key == "metadata.name"
            && matches!(r.operator.as_str(), "In" | "NotIn")
            && requirement_matches(r, Some(&name))
    })
}

/// NodeAffinity's filter: `spec.nodeSelector` and the required node
/// affinity terms (ORed) both match.
pub fn pod_matches_node(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = spec.node_selector.as_ref()
        && !sel.iter().all(|(k, v)| node_labels(node).get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Whether a toleration tolerates a taint (`v1.Toleration.ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

pub fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

pub fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels}})).unwrap()
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn node_affinity_operators_match_like_upstream() {
        let n = node(json!({"zone": "a", "gpus": "4"}));
        let affinity = |exprs: serde_json::Value| {
            pod(
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": exprs}]}}}}),
            )
        };
        assert!(pod_matches_node(
            &affinity(json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}])),
            &n
        ));
        assert!(!pod_matches_node(
            &affinity(json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}])),
            &n
        ));
        assert!(pod_matches_node(
            &affinity(json!([{"key": "gpus", "operator": "Gt", "values": ["3"]}])),
            &n
        ));
        assert!(!pod_matches_node(
            &affinity(json!([{"key": "gpus", "operator": "Lt", "values": ["3"]}])),
            &n
        ));
        assert!(pod_matches_node(
            &affinity(json!([{"key": "ssd", "operator": "DoesNotExist"}])),
            &n
        ));
        assert!(!pod_matches_node(
            &affinity(json!([{"key": "ssd", "operator": "Exists"}])),
            &n
        ));
    }

    #[test]
    fn match_fields_selects_by_node_name() {
        let n = node(json!({}));
        let p = pod(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}),
        );
        assert!(pod_matches_node(&p, &n));
        let p = pod(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}),
        );
        assert!(!pod_matches_node(&p, &n));
    }

    #[test]
    fn node_selector_must_match_every_label() {
        let n = node(json!({"disk": "ssd"}));
        assert!(pod_matches_node(
            &pod(json!({"containers": [], "nodeSelector": {"disk": "ssd"}})),
            &n
        ));
        assert!(!pod_matches_node(
            &pod(json!({"containers": [], "nodeSelector": {"disk": "hdd"}})),
            &n
        ));
    }

    #[test]
    fn tolerations_match_key_value_and_effect() {
        let taint: Taint =
            serde_json::from_value(json!({"key": "k", "value": "v", "effect": "NoSchedule"}))
                .unwrap();
        let tol = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).unwrap() };
        assert!(tolerates(&tol(json!({"key": "k", "value": "v"})), &taint));
        assert!(!tolerates(&tol(json!({"key": "k", "value": "w"})), &taint));
        assert!(tolerates(
            &tol(json!({"key": "k", "operator": "Exists"})),
            &taint
        ));
        assert!(tolerates(&tol(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(
            &tol(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
    }
}
