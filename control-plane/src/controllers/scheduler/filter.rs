//! Filter plugins of the default profile, run per node in upstream's order
//! (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts,
//! NodeResourcesFit, PodTopologySpread, InterPodAffinity), with their
//! PreFilter state computed once per pod. No I/O.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::cache::{Cache, NodeInfo, PodInfo};
use super::matching::{
    node_taints, pod_labels, pod_matches_node, pod_tolerations, selector_matches, tolerates,
    untolerated_taint,
};

pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const ERR_TOO_MANY_PODS: &str = "Too many pods";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// How bad a node's failure is: `Unresolvable` means preempting pods on it
/// cannot help (upstream `UnschedulableAndUnresolvable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unschedulable,
    Unresolvable,
}

/// One reason a node failed; most are fixed texts, borrowed so that a
/// cycle failing on thousands of nodes allocates no string per node.
pub type Reason = Cow<'static, str>;

/// Why a node cannot take the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub code: Code,
    pub reasons: Vec<Reason>,
}

impl NodeStatus {
    pub fn new(code: Code, reason: impl Into<Reason>) -> Self {
        Self {
            code,
            reasons: vec![reason.into()],
        }
    }
}

/// A topology pair `(key, value)`.
type Pair = (String, String);

/// One DoNotSchedule topology spread constraint with its domain counts.
#[derive(Debug, Clone)]
pub struct SpreadConstraint {
    pub max_skew: i32,
    pub key: String,
    pub selector: LabelSelector,
    pub self_match: bool,
    pub counts: HashMap<String, i64>,
    pub min: i64,
}

/// The PreFilter state of one scheduling cycle.
#[derive(Debug)]
pub struct PodState {
    pub info: PodInfo,
    affinity_terms: Vec<PodAffinityTerm>,
    anti_affinity_terms: Vec<PodAffinityTerm>,
    affinity_counts: HashMap<Pair, i64>,
    anti_affinity_counts: HashMap<Pair, i64>,
    existing_anti_affinity_counts: HashMap<Pair, i64>,
    pub spread: Vec<SpreadConstraint>,
}

/// Namespaces an affinity term applies to: its `namespaces`, or every
/// namespace for an empty `namespaceSelector`, else the owner's.
pub fn term_matches_pod(term: &PodAffinityTerm, owner_ns: &str, pod: &Pod) -> bool {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let namespaces = term.namespaces.as_deref().unwrap_or(&[]);
    let ns_ok = if !namespaces.is_empty() {
        namespaces.iter().any(|n| n == ns)
    } else if let Some(sel) = term.namespace_selector.as_ref() {
        let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
        empty || ns == owner_ns
    } else {
        ns == owner_ns
    };
    ns_ok
        && term
            .label_selector
            .as_ref()
            .is_some_and(|s| selector_matches(s, pod_labels(pod)))
}

fn required_terms(pod: &Pod, anti: bool) -> Vec<PodAffinityTerm> {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = if anti {
        affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            })
    } else {
        affinity
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            })
    };
    terms.unwrap_or_default()
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Computes the PreFilter state; scans bound pods only when the pod has
/// inter-pod (anti-)affinity or spread constraints, or some bound pod has
/// required anti-affinity.
pub fn prefilter(pod: Arc<Pod>, cache: &Cache) -> PodState {
    let info = PodInfo::new(pod.clone());
    let ns = info.namespace().to_string();
    let affinity_terms = required_terms(&pod, false);
    let anti_affinity_terms = required_terms(&pod, true);
    let mut affinity_counts = HashMap::new();
    let mut anti_affinity_counts = HashMap::new();
    let mut existing_anti_affinity_counts = HashMap::new();

    if !affinity_terms.is_empty() || !anti_affinity_terms.is_empty() {
        for (node, existing) in cache.all_pods() {
            if node.node.is_none() {
                continue;
            }
            for (terms, counts) in [
                (&affinity_terms, &mut affinity_counts),
                (&anti_affinity_terms, &mut anti_affinity_counts),
            ] {
                for term in terms.iter() {
                    if term_matches_pod(term, &ns, &existing.pod)
                        && let Some(v) = node.label(&term.topology_key)
                    {
                        *counts
                            .entry((term.topology_key.clone(), v.to_string()))
                            .or_insert(0) += 1;
                    }
                }
            }
        }
    }
    for key in &cache.anti_affinity_pods {
        let Some((node, existing)) = cache.pod(key) else {
            continue;
        };
        for term in required_terms(&existing.pod, true) {
            if term_matches_pod(&term, existing.namespace(), &pod)
                && let Some(v) = node.label(&term.topology_key)
            {
                *existing_anti_affinity_counts
                    .entry((term.topology_key.clone(), v.to_string()))
                    .or_insert(0) += 1;
            }
        }
    }
    let spread = spread_constraints(&pod, &ns, cache, "DoNotSchedule");
    PodState {
        info,
        affinity_terms,
        anti_affinity_terms,
        affinity_counts,
        anti_affinity_counts,
        existing_anti_affinity_counts,
        spread,
    }
}

/// Topology spread constraints of `pod` with `when_unsatisfiable`, counted
/// over the nodes that pass the pod's node affinity and carry every key.
pub fn spread_constraints(
    pod: &Pod,
    ns: &str,
    cache: &Cache,
    when_unsatisfiable: &str,
) -> Vec<SpreadConstraint> {
    let constraints: Vec<_> = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when_unsatisfiable)
        .collect();
    if constraints.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<SpreadConstraint> = constraints
        .iter()
        .map(|c| {
            let selector = c.label_selector.clone().unwrap_or_default();
            SpreadConstraint {
                max_skew: c.max_skew,
                key: c.topology_key.clone(),
                self_match: c.label_selector.is_some()
                    && selector_matches(&selector, pod_labels(pod)),
                selector,
                counts: HashMap::new(),
                min: 0,
            }
        })
        .collect();
    for node in cache.entries() {
        let Some(n) = node.node.as_ref() else {
            continue;
        };
        if !pod_matches_node(pod, n) || out.iter().any(|c| node.label(&c.key).is_none()) {
            continue;
        }
        for c in &mut out {
            let value = node.label(&c.key).unwrap_or_default().to_string();
            let matching = node
                .pods
                .values()
                .filter(|p| {
                    p.namespace() == ns
                        && !is_terminating(&p.pod)
                        && selector_matches(&c.selector, pod_labels(&p.pod))
                })
                .count() as i64;
            *c.counts.entry(value).or_insert(0) += matching;
        }
    }
    for (c, spec) in out.iter_mut().zip(&constraints) {
        let min_domains = i64::from(spec.min_domains.unwrap_or(1));
        c.min = if (c.counts.len() as i64) < min_domains {
            0
        } else {
            c.counts.values().copied().min().unwrap_or(0)
        };
    }
    out
}

fn unschedulable_toleration() -> Taint {
    Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    }
}

fn tolerates_any(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// Runs every filter on one node; the first failing plugin's status wins.
pub fn filter(state: &PodState, node: &NodeInfo) -> Result<(), NodeStatus> {
    let Some(n) = node.node.as_ref() else {
        return Err(NodeStatus::new(Code::Unresolvable, "node(s) not found"));
    };
    let pod = &state.info.pod;
    let tolerations = pod_tolerations(pod);
    // NodeUnschedulable
    if node.unschedulable && !tolerates_any(tolerations, &unschedulable_toleration()) {
        return Err(NodeStatus::new(Code::Unresolvable, ERR_UNSCHEDULABLE));
    }
    // NodeName
    if let Some(name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
        && !name.is_empty()
        && name != node.name
    {
        return Err(NodeStatus::new(Code::Unresolvable, ERR_NODE_NAME));
    }
    // TaintToleration
    if node.tainted
        && let Some(taint) =
            untolerated_taint(node_taints(n), tolerations, &["NoSchedule", "NoExecute"])
    {
        return Err(NodeStatus::new(
            Code::Unresolvable,
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ),
        ));
    }
    // NodeAffinity
    if !pod_matches_node(pod, n) {
        return Err(NodeStatus::new(Code::Unresolvable, ERR_NODE_AFFINITY));
    }
    // NodePorts
    if state
        .info
        .host_ports
        .iter()
        .any(|p| node.used_ports.iter().any(|u| u.conflicts(p)))
    {
        return Err(NodeStatus::new(Code::Unschedulable, ERR_NODE_PORTS));
    }
    fit_resources(&state.info, node)?;
    filter_spread(state, node)?;
    filter_inter_pod_affinity(state, node)
}

/// NodeResourcesFit: requests against allocatable minus what is placed.
pub fn fit_resources(pod: &PodInfo, node: &NodeInfo) -> Result<(), NodeStatus> {
    let mut reasons = Vec::new();
    let mut unresolvable = false;
    if node.pods.len() as i64 + 1 > node.allocatable.pods {
        reasons.push(ERR_TOO_MANY_PODS.into());
    }
    let req = &pod.requests;
    let alloc = &node.allocatable;
    let used = &node.requested;
    let mut check = |name: &str, want: i64, have: i64, used: i64| {
        if want > 0 && want > have - used {
            reasons.push(format!("Insufficient {name}").into());
            if want > have {
                unresolvable = true;
            }
        }
    };
    check("cpu", req.milli_cpu, alloc.milli_cpu, used.milli_cpu);
    check("memory", req.memory, alloc.memory, used.memory);
    check(
        "ephemeral-storage",
        req.ephemeral_storage,
        alloc.ephemeral_storage,
        used.ephemeral_storage,
    );
    for (name, want) in &req.scalar {
        check(name, *want, alloc.scalar(name), used.scalar(name));
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(NodeStatus {
        code: if unresolvable {
            Code::Unresolvable
        } else {
            Code::Unschedulable
        },
        reasons,
    })
}

fn filter_spread(state: &PodState, node: &NodeInfo) -> Result<(), NodeStatus> {
    for c in &state.spread {
        let Some(value) = node.label(&c.key) else {
            return Err(NodeStatus::new(Code::Unresolvable, ERR_SPREAD_LABEL));
        };
        let count = c.counts.get(value).copied().unwrap_or(0);
        let skew = count + i64::from(c.self_match) - c.min;
        if skew > i64::from(c.max_skew) {
            return Err(NodeStatus::new(Code::Unschedulable, ERR_SPREAD));
        }
    }
    Ok(())
}

fn filter_inter_pod_affinity(state: &PodState, node: &NodeInfo) -> Result<(), NodeStatus> {
    let pair_count = |counts: &HashMap<Pair, i64>, key: &str| {
        node.label(key)
            .and_then(|v| counts.get(&(key.to_string(), v.to_string())))
            .copied()
            .unwrap_or(0)
    };
    if !state.affinity_terms.is_empty() {
        let all_present = state.affinity_terms.iter().all(|t| {
            node.label(&t.topology_key).is_some()
                && pair_count(&state.affinity_counts, &t.topology_key) > 0
        });
        if !all_present {
            // The first pod of a group may go anywhere its own terms match
            // itself, as long as no pod matches them yet.
            let ns = state.info.namespace();
            let first_of_group = state.affinity_counts.is_empty()
                && state
                    .affinity_terms
                    .iter()
                    .all(|t| term_matches_pod(t, ns, &state.info.pod))
                && state
                    .affinity_terms
                    .iter()
                    .all(|t| node.label(&t.topology_key).is_some());
            if !first_of_group {
                return Err(NodeStatus::new(Code::Unresolvable, ERR_AFFINITY));
            }
        }
    }
    if state
        .anti_affinity_terms
        .iter()
        .any(|t| pair_count(&state.anti_affinity_counts, &t.topology_key) > 0)
    {
        return Err(NodeStatus::new(Code::Unschedulable, ERR_ANTI_AFFINITY));
    }
    // The counts hold the few topology pairs that existing pods' terms
    // match; looking each up in the node's labels costs no allocation per
    // node (the node's labels looked up in the counts would).
    if state
        .existing_anti_affinity_counts
        .iter()
        .any(|((k, v), c)| *c > 0 && node.label(k) == Some(v.as_str()))
    {
        return Err(NodeStatus::new(
            Code::Unschedulable,
            ERR_EXISTING_ANTI_AFFINITY,
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub fn node(name: &str, cpu: &str, extra: Value) -> k8s_openapi::api::core::v1::Node {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
        });
        json_patch::merge(&mut n, &extra);
        serde_json::from_value(n).unwrap()
    }

    pub fn pod(name: &str, spec: Value) -> Arc<Pod> {
        let mut s = json!({"containers": [{"name": "c"}]});
        json_patch::merge(&mut s, &spec);
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": name}}, "spec": s}))
                .unwrap(),
        )
    }

    pub fn cache(nodes: Vec<k8s_openapi::api::core::v1::Node>) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.upsert_node(n);
        }
        c
    }

    fn cpu(c: &str) -> Value {
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": c}}}]})
    }

    #[test]
    fn resources_fit_reports_insufficient_and_unresolvable() {
        let mut c = cache(vec![node("n1", "2", json!({}))]);
        c.add_pod(PodInfo::new(pod("a", cpu("1500m"))), "n1", false);
        let s = prefilter(pod("b", cpu("1")), &c);
        let err = filter(&s, c.node("n1").unwrap()).unwrap_err();
        assert_eq!(err.reasons, vec!["Insufficient cpu"]);
        assert_eq!(err.code, Code::Unschedulable);
        let s = prefilter(pod("b", cpu("3")), &c);
        assert_eq!(
            filter(&s, c.node("n1").unwrap()).unwrap_err().code,
            Code::Unresolvable
        );
        let s = prefilter(pod("b", cpu("500m")), &c);
        assert!(filter(&s, c.node("n1").unwrap()).is_ok());
    }

    #[test]
    fn taints_report_key_and_value() {
        let c = cache(vec![node(
            "n1",
            "2",
            json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}),
        )]);
        let s = prefilter(pod("b", json!({})), &c);
        let err = filter(&s, c.node("n1").unwrap()).unwrap_err();
        assert_eq!(
            err.reasons,
            vec!["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
        );
        let s = prefilter(
            pod(
                "b",
                json!({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}),
            ),
            &c,
        );
        assert!(filter(&s, c.node("n1").unwrap()).is_ok());
    }

    #[test]
    fn unschedulable_node_is_filtered() {
        let c = cache(vec![node(
            "n1",
            "2",
            json!({"spec": {"unschedulable": true}}),
        )]);
        let s = prefilter(pod("b", json!({})), &c);
        assert_eq!(
            filter(&s, c.node("n1").unwrap()).unwrap_err().reasons,
            vec![ERR_UNSCHEDULABLE]
        );
    }

    #[test]
    fn host_port_conflicts_filter_the_node() {
        let mut c = cache(vec![node("n1", "2", json!({}))]);
        let ports = json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]});
        c.add_pod(PodInfo::new(pod("a", ports.clone())), "n1", false);
        let s = prefilter(pod("b", ports), &c);
        assert_eq!(
            filter(&s, c.node("n1").unwrap()).unwrap_err().reasons,
            vec![ERR_NODE_PORTS]
        );
    }

    #[test]
    fn anti_affinity_keeps_pods_apart() {
        let mut c = cache(vec![node("n1", "2", json!({})), node("n2", "2", json!({}))]);
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "a"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        c.add_pod(PodInfo::new(pod("a", json!({}))), "n1", false);
        let s = prefilter(pod("x", anti), &c);
        assert_eq!(
            filter(&s, c.node("n1").unwrap()).unwrap_err().reasons,
            vec![ERR_ANTI_AFFINITY]
        );
        assert!(filter(&s, c.node("n2").unwrap()).is_ok());
    }

    #[test]
    fn existing_anti_affinity_is_respected() {
        let mut c = cache(vec![node("n1", "2", json!({})), node("n2", "2", json!({}))]);
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "b"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        c.add_pod(PodInfo::new(pod("a", anti)), "n1", false);
        let s = prefilter(pod("b", json!({})), &c);
        assert_eq!(
            filter(&s, c.node("n1").unwrap()).unwrap_err().reasons,
            vec![ERR_EXISTING_ANTI_AFFINITY]
        );
        assert!(filter(&s, c.node("n2").unwrap()).is_ok());
    }

    #[test]
    fn affinity_requires_a_matching_pod_in_the_domain() {
        let mut c = cache(vec![node("n1", "2", json!({})), node("n2", "2", json!({}))]);
        let aff = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "a"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        c.add_pod(PodInfo::new(pod("a", json!({}))), "n1", false);
        let s = prefilter(pod("x", aff), &c);
        assert!(filter(&s, c.node("n1").unwrap()).is_ok());
        assert_eq!(
            filter(&s, c.node("n2").unwrap()).unwrap_err().reasons,
            vec![ERR_AFFINITY]
        );
    }

    #[test]
    fn topology_spread_limits_skew() {
        let mut c = cache(vec![node("n1", "8", json!({})), node("n2", "8", json!({}))]);
        let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
        let mut web = (*pod("w1", json!({}))).clone();
        web.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        c.add_pod(PodInfo::new(Arc::new(web.clone())), "n1", false);
        let mut incoming = (*pod("w2", spread)).clone();
        incoming.metadata.labels = web.metadata.labels.clone();
        let s = prefilter(Arc::new(incoming), &c);
        assert_eq!(
            filter(&s, c.node("n1").unwrap()).unwrap_err().reasons,
            vec![ERR_SPREAD]
        );
        assert!(filter(&s, c.node("n2").unwrap()).is_ok());
    }

    #[test]
    fn too_many_pods_is_reported() {
        let mut c = cache(vec![node(
            "n1",
            "2",
            json!({"status": {"allocatable": {"pods": "1"}}}),
        )]);
        c.add_pod(PodInfo::new(pod("a", json!({}))), "n1", false);
        let s = prefilter(pod("b", json!({})), &c);
        assert_eq!(
            filter(&s, c.node("n1").unwrap()).unwrap_err().reasons,
            vec![ERR_TOO_MANY_PODS]
        );
    }
}
