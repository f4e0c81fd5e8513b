//! Score plugins of the default profile with upstream's normalization and
//! weights: NodeResourcesFit (LeastAllocated) 1, BalancedAllocation 1,
//! NodeAffinity 2, TaintToleration 3, InterPodAffinity 2,
//! PodTopologySpread 2. Scores are 0..=100 per plugin. No I/O.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Toleration;

use super::cache::{Cache, NodeInfo};
use super::filter::{PodState, SpreadConstraint, spread_constraints, term_matches_pod};
use super::matching::{node_taints, pod_tolerations, term_matches, tolerates};

pub const MAX_NODE_SCORE: i64 = 100;

/// Cluster-wide state the scores need, computed once per pod (PreScore).
pub struct ScoreState {
    /// InterPodAffinity preferred terms: weight per topology pair.
    affinity_pairs: HashMap<(String, String), i64>,
    spread: Vec<SpreadConstraint>,
}

pub fn prescore(state: &PodState, cache: &Cache) -> ScoreState {
    let pod = &state.info.pod;
    let ns = state.info.namespace().to_string();
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let mut weighted = Vec::new();
    for t in affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
    {
        weighted.push((t.pod_affinity_term.clone(), i64::from(t.weight)));
    }
    for t in affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
    {
        weighted.push((t.pod_affinity_term.clone(), -i64::from(t.weight)));
    }
    let mut affinity_pairs = HashMap::new();
    if !weighted.is_empty() {
        for (node, existing) in cache.all_pods() {
            for (term, w) in &weighted {
                if term_matches_pod(term, &ns, &existing.pod)
                    && let Some(v) = node.label(&term.topology_key)
                {
                    *affinity_pairs
                        .entry((term.topology_key.clone(), v.to_string()))
                        .or_insert(0) += w;
                }
            }
        }
    }
    ScoreState {
        affinity_pairs,
        spread: spread_constraints(pod, &ns, cache, "ScheduleAnyway"),
    }
}

fn least_allocated(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// NodeResourcesFit LeastAllocated over cpu and memory (weights 1 and 1),
/// with the pod's non-zero requests added.
pub fn least_allocated_score(state: &PodState, node: &NodeInfo) -> i64 {
    let r = &state.info.non_zero;
    let cpu = least_allocated(
        node.non_zero_requested.milli_cpu + r.milli_cpu,
        node.allocatable.milli_cpu,
    );
    let mem = least_allocated(
        node.non_zero_requested.memory + r.memory,
        node.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// NodeResourcesBalancedAllocation: 100 × (1 − std-dev of the cpu and
/// memory fractions).
pub fn balanced_allocation_score(state: &PodState, node: &NodeInfo) -> i64 {
    let r = &state.info.non_zero;
    let fraction = |req: i64, cap: i64| {
        if cap <= 0 {
            1.0
        } else {
            (req as f64 / cap as f64).min(1.0)
        }
    };
    let cpu = fraction(
        node.non_zero_requested.milli_cpu + r.milli_cpu,
        node.allocatable.milli_cpu,
    );
    let mem = fraction(
        node.non_zero_requested.memory + r.memory,
        node.allocatable.memory,
    );
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// NodeAffinity: the sum of the weights of matching preferred terms (raw).
pub fn node_affinity_raw(state: &PodState, node: &NodeInfo) -> i64 {
    let Some(n) = node.node.as_ref() else {
        return 0;
    };
    state
        .info
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| t.weight != 0 && term_matches(&t.preference, n))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// The pod's tolerations that TaintToleration's score reads: those of
/// PreferNoSchedule taints (or of any effect).
fn prefer_no_schedule_tolerations(state: &PodState) -> Vec<&Toleration> {
    pod_tolerations(&state.info.pod)
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect()
}

/// TaintToleration: the number of PreferNoSchedule taints not tolerated (raw).
fn taint_toleration_raw(tolerations: &[&Toleration], node: &NodeInfo) -> i64 {
    let Some(n) = node.node.as_ref().filter(|_| node.tainted) else {
        return 0;
    };
    node_taints(n)
        .iter()
        .filter(|taint| {
            taint.effect == "PreferNoSchedule" && !tolerations.iter().any(|t| tolerates(t, taint))
        })
        .count() as i64
}

/// InterPodAffinity preferred terms (raw, may be negative).
pub fn inter_pod_affinity_raw(score: &ScoreState, node: &NodeInfo) -> i64 {
    if score.affinity_pairs.is_empty() {
        return 0;
    }
    let Some(labels) = node.node.as_ref().and_then(|n| n.metadata.labels.as_ref()) else {
        return 0;
    };
    labels
        .iter()
        .filter_map(|(k, v)| score.affinity_pairs.get(&(k.clone(), v.clone())))
        .sum()
}

/// PodTopologySpread ScheduleAnyway: matching pods in the node's domains,
/// weighted by log(domains + 2) (raw; fewer is better).
pub fn topology_spread_raw(score: &ScoreState, node: &NodeInfo) -> i64 {
    let mut total = 0.0;
    for c in &score.spread {
        let Some(v) = node.label(&c.key) else {
            continue;
        };
        let weight = ((c.counts.len() + 2) as f64).ln();
        total += c.counts.get(v).copied().unwrap_or(0) as f64 * weight;
    }
    total.round() as i64
}

/// Upstream `helper.DefaultNormalizeScore`.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// InterPodAffinity's min-max normalization.
pub fn min_max_normalize(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    let min = scores.iter().copied().min().unwrap_or(0);
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 {
            MAX_NODE_SCORE * (*s - min) / diff
        } else {
            0
        };
    }
}

/// PodTopologySpread's normalization: fewer matching pods score higher.
pub fn spread_normalize(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    let min = scores.iter().copied().min().unwrap_or(0);
    for s in scores.iter_mut() {
        *s = if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE * (max + min - *s) / max
        };
    }
}

/// Total weighted scores of the feasible `nodes`, in order.
pub fn score_nodes(state: &PodState, cache: &Cache, nodes: &[&NodeInfo]) -> Vec<i64> {
    let score = prescore(state, cache);
    let tolerations = prefer_no_schedule_tolerations(state);
    // One pass over the nodes for the plugins that read every node: with
    // thousands of nodes, each pass is mostly cache misses.
    let mut totals = Vec::with_capacity(nodes.len());
    let mut affinity = Vec::with_capacity(nodes.len());
    let mut taints = Vec::with_capacity(nodes.len());
    for n in nodes {
        totals.push(least_allocated_score(state, n) + balanced_allocation_score(state, n));
        affinity.push(node_affinity_raw(state, n));
        taints.push(taint_toleration_raw(&tolerations, n));
    }
    let mut add = |mut raw: Vec<i64>, weight: i64, normalize: &dyn Fn(&mut [i64])| {
        normalize(&mut raw);
        for (t, s) in totals.iter_mut().zip(raw) {
            *t += s * weight;
        }
    };
    add(affinity, 2, &|s| default_normalize(s, false));
    add(taints, 3, &|s| default_normalize(s, true));
    if !score.affinity_pairs.is_empty() {
        add(
            nodes
                .iter()
                .map(|n| inter_pod_affinity_raw(&score, n))
                .collect(),
            2,
            &min_max_normalize,
        );
    }
    if !score.spread.is_empty() {
        add(
            nodes
                .iter()
                .map(|n| topology_spread_raw(&score, n))
                .collect(),
            2,
            &spread_normalize,
        );
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::super::cache::PodInfo;
    use super::super::filter::prefilter;
    use super::super::filter::tests::{cache, node, pod};
    use super::*;
    use serde_json::json;

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let mut c = cache(vec![node("n1", "4", json!({})), node("n2", "4", json!({}))]);
        c.add_pod(
            PodInfo::new(pod(
                "a",
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}),
            )),
            "n1",
            false,
        );
        let s = prefilter(pod("b", json!({})), &c);
        let nodes: Vec<_> = c.known_nodes().collect();
        let scores = score_nodes(&s, &c, &nodes);
        assert!(scores[1] > scores[0], "{scores:?}");
    }

    #[test]
    fn default_normalize_scales_and_reverses() {
        let mut s = vec![0, 1, 2];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 1, 2];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 100]);
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let c = cache(vec![
            node(
                "n1",
                "4",
                json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
            ),
            node("n2", "4", json!({})),
        ]);
        let s = prefilter(pod("b", json!({})), &c);
        let nodes: Vec<_> = c.known_nodes().collect();
        let scores = score_nodes(&s, &c, &nodes);
        assert!(scores[1] > scores[0], "{scores:?}");
    }

    #[test]
    fn preferred_node_affinity_raises_the_score() {
        let c = cache(vec![
            node("n1", "4", json!({})),
            node("n2", "4", json!({"metadata": {"labels": {"disk": "ssd"}}})),
        ]);
        let s = prefilter(
            pod(
                "b",
                json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}),
            ),
            &c,
        );
        let nodes: Vec<_> = c.known_nodes().collect();
        let scores = score_nodes(&s, &c, &nodes);
        assert!(scores[1] > scores[0], "{scores:?}");
    }

    #[test]
    fn balanced_allocation_is_100_when_fractions_match() {
        let c = cache(vec![node(
            "n1",
            "4",
            json!({"status": {"allocatable": {"memory": "4Gi"}}}),
        )]);
        let s = prefilter(
            pod(
                "b",
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}),
            ),
            &c,
        );
        assert_eq!(balanced_allocation_score(&s, c.node("n1").unwrap()), 100);
    }
}
