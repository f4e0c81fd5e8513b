//! One scheduling cycle over the cache: PreFilter, Filter on enough
//! feasible nodes (upstream percentageOfNodesToScore), Score, select; and
//! on failure the DefaultPreemption PostFilter and the FitError text. No I/O.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use rand::Rng;

use super::cache::{Cache, NodeInfo, PodInfo};
use super::filter::{Code, NodeStatus, PodState, filter, prefilter};
use super::fit_error::{
    NO_NODES_AVAILABLE, NO_VICTIMS, PREEMPTION_NEVER, PREEMPTION_NOT_HELPFUL, fit_error_message,
    reasons_message,
};
use super::score::score_nodes;

/// Upstream's minimum number of feasible nodes to find before scoring.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;

/// What a scheduling cycle decided.
#[derive(Debug)]
pub enum Outcome {
    /// Bind the pod to this node; what the cycle read of the pod, to
    /// assume it there.
    Fit(String, PodInfo),
    /// No node fits; `preemption` says which pods to evict and where the
    /// pod is nominated.
    Unschedulable {
        message: String,
        preemption: Option<(String, Vec<Arc<PodInfo>>)>,
    },
}

/// Upstream `numFeasibleNodesToFind` with the adaptive percentage.
fn num_feasible_nodes_to_find(all: usize) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let pct = (50 - all / 125).max(5);
    (all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Where the next cycle starts examining nodes, in name order: after the
/// last node the previous cycle examined, so nodes are sampled evenly
/// (upstream's `nextStartNodeIndex`).
#[derive(Debug, Default)]
pub struct NextStart(usize);

/// Schedules one pod, examining nodes from `next_start` on.
pub fn schedule(pod: Arc<Pod>, cache: &Cache, next_start: &mut NextStart) -> Outcome {
    let all = cache.node_count();
    if all == 0 {
        return Outcome::Unschedulable {
            message: NO_NODES_AVAILABLE.into(),
            preemption: None,
        };
    }
    let state = prefilter(pod, cache);
    let want = num_feasible_nodes_to_find(all);
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want);
    // Failing nodes with their status, in the order examined.
    let mut statuses: Vec<(&NodeInfo, NodeStatus)> = Vec::new();
    let mut examined = 0;
    for node in cache.nodes_from(next_start.0) {
        examined += 1;
        match filter(&state, node) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(s) => statuses.push((node, s)),
        }
    }
    next_start.0 = (next_start.0 + examined) % all;
    if feasible.is_empty() {
        let post_filter = preempt(&state, &statuses);
        let (post, preemption) = match post_filter {
            Ok(p) => (None, Some(p)),
            Err(msg) => (Some(msg), None),
        };
        return Outcome::Unschedulable {
            message: fit_error_message(all, statuses.iter().map(|(_, s)| s), post.as_deref()),
            preemption,
        };
    }
    let node = if feasible.len() == 1 {
        feasible[0].name.clone()
    } else {
        let scores = score_nodes(&state, cache, &feasible);
        select_host(&feasible, &scores)
    };
    Outcome::Fit(node, state.info)
}

/// The highest score, ties broken uniformly at random, as upstream's
/// reservoir sampling does; with one random number per cycle rather than
/// one per tie (most of hundreds of equal nodes tie).
fn select_host(nodes: &[&NodeInfo], scores: &[i64]) -> String {
    let Some(&best) = scores.iter().max() else {
        return String::new();
    };
    let ties = scores.iter().filter(|s| **s == best).count();
    let pick = rand::rng().random_range(0..ties);
    let at = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == best)
        .nth(pick)
        .map_or(0, |(i, _)| i);
    nodes[at].name.clone()
}

/// A preemption candidate: (max victim priority, sum of victim
/// priorities, victim count, node, victims); lower is better.
type Candidate = (i32, i64, usize, String, Vec<Arc<PodInfo>>);

/// DefaultPreemption: the node where evicting the fewest, lowest-priority
/// pods lets the pod fit; or the PostFilter message when none exists.
fn preempt(
    state: &PodState,
    statuses: &[(&NodeInfo, NodeStatus)],
) -> Result<(String, Vec<Arc<PodInfo>>), String> {
    let pod = &state.info.pod;
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never")
    {
        return Err(PREEMPTION_NEVER.into());
    }
    let priority = state.info.priority;
    let mut node_statuses: Vec<NodeStatus> = Vec::new();
    // Nodes where preemption cannot help (upstream's
    // nodesWherePreemptionMightHelp leaves them out), counted only.
    let mut not_helpful = 0;
    let mut best: Option<Candidate> = None;
    for (node, status) in statuses {
        if status.code == Code::Unresolvable {
            not_helpful += 1;
            continue;
        }
        match victims_on_node(state, node, priority) {
            Ok(victims) => {
                let max = victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
                let sum: i64 = victims.iter().map(|v| i64::from(v.priority)).sum();
                let candidate = (max, sum, victims.len(), node.name.clone(), victims);
                let better = best
                    .as_ref()
                    .is_none_or(|b| (candidate.0, candidate.1, candidate.2) < (b.0, b.1, b.2));
                if better {
                    best = Some(candidate);
                }
            }
            Err(s) => node_statuses.push(s),
        }
    }
    if let Some((_, _, _, node, victims)) = best {
        return Ok((node, victims));
    }
    let reasons = std::iter::repeat_n(PREEMPTION_NOT_HELPFUL, not_helpful).chain(
        node_statuses
            .iter()
            .flat_map(|s| s.reasons.iter().map(|r| r.as_ref())),
    );
    Err(format!(
        "preemption: {}",
        reasons_message(statuses.len(), reasons)
    ))
}

/// Upstream `SelectVictimsOnNode`: remove every lower-priority pod, check
/// the pod fits, then reprieve as many as possible, highest priority first.
fn victims_on_node(
    state: &PodState,
    node: &NodeInfo,
    priority: i32,
) -> Result<Vec<Arc<PodInfo>>, NodeStatus> {
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .values()
        .filter(|p| p.priority < priority && p.pod.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if lower.is_empty() {
        return Err(NodeStatus {
            code: Code::Unresolvable,
            reasons: vec![NO_VICTIMS.into()],
        });
    }
    lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.key.cmp(&b.key)));
    let mut trial = node.clone();
    for p in &lower {
        trial.remove_pod(&p.key);
    }
    filter(state, &trial)?;
    let mut victims = Vec::new();
    for p in lower {
        trial.add_pod(p.clone());
        if filter(state, &trial).is_err() {
            trial.remove_pod(&p.key);
            victims.push(p);
        }
    }
    Ok(victims)
}

#[cfg(test)]
mod tests {
    use super::super::filter::tests::{cache, node, pod};
    use super::*;
    use serde_json::json;

    fn cpu_pod(name: &str, cpu: &str, priority: i32) -> Arc<Pod> {
        pod(
            name,
            json!({"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        )
    }

    #[test]
    fn too_much_cpu_gives_the_upstream_message() {
        let c = cache(vec![
            node("n1", "2", json!({})),
            node("n2", "2", json!({})),
            node("n3", "2", json!({})),
        ]);
        let Outcome::Unschedulable {
            message,
            preemption,
        } = schedule(cpu_pod("p", "4", 0), &c, &mut NextStart::default())
        else {
            panic!("should not fit");
        };
        assert!(preemption.is_none());
        assert_eq!(
            message,
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn equal_priority_pods_are_not_victims() {
        let mut c = cache(vec![node("n1", "2", json!({}))]);
        c.add_pod(PodInfo::new(cpu_pod("a", "2", 0)), "n1", false);
        let Outcome::Unschedulable { message, .. } =
            schedule(cpu_pod("p", "1", 0), &c, &mut NextStart::default())
        else {
            panic!("should not fit");
        };
        assert_eq!(
            message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn higher_priority_preempts_the_minimal_set() {
        let mut c = cache(vec![node("n1", "2", json!({}))]);
        c.add_pod(PodInfo::new(cpu_pod("low", "1", 0)), "n1", false);
        c.add_pod(PodInfo::new(cpu_pod("mid", "1", 5)), "n1", false);
        let Outcome::Unschedulable { preemption, .. } =
            schedule(cpu_pod("p", "1", 10), &c, &mut NextStart::default())
        else {
            panic!("should not fit");
        };
        let (node, victims) = preemption.expect("a preemption candidate");
        assert_eq!(node, "n1");
        assert_eq!(victims.len(), 1);
        assert_eq!(victims[0].key, "default/low");
    }

    #[test]
    fn pods_spread_over_equal_nodes() {
        let mut c = cache(vec![
            node("n1", "4", json!({})),
            node("n2", "4", json!({})),
            node("n3", "4", json!({})),
        ]);
        let mut next = NextStart::default();
        for i in 0..6 {
            let p = cpu_pod(&format!("p{i}"), "500m", 0);
            let Outcome::Fit(n, info) = schedule(p.clone(), &c, &mut next) else {
                panic!("should fit");
            };
            c.add_pod(info, &n, true);
        }
        for n in ["n1", "n2", "n3"] {
            assert_eq!(c.node(n).unwrap().pods.len(), 2, "{n}");
        }
    }

    #[test]
    fn the_best_score_wins_and_ties_are_picked_at_random() {
        let c = cache(vec![
            node("n1", "4", json!({})),
            node("n2", "4", json!({})),
            node("n3", "4", json!({})),
        ]);
        let nodes: Vec<&NodeInfo> = c.known_nodes().collect();
        assert_eq!(select_host(&nodes, &[1, 7, 3]), "n2");
        let mut picked = std::collections::BTreeSet::new();
        for _ in 0..200 {
            picked.insert(select_host(&nodes, &[5, 2, 5]));
        }
        assert_eq!(picked.into_iter().collect::<Vec<_>>(), ["n1", "n3"]);
    }

    #[test]
    fn no_nodes_message() {
        let c = Cache::default();
        let Outcome::Unschedulable { message, .. } =
            schedule(cpu_pod("p", "1", 0), &c, &mut NextStart::default())
        else {
            panic!("should not fit");
        };
        assert_eq!(message, NO_NODES_AVAILABLE);
    }

    #[test]
    fn feasible_node_count_follows_upstream() {
        assert_eq!(num_feasible_nodes_to_find(50), 50);
        assert_eq!(num_feasible_nodes_to_find(1000), 420);
        assert_eq!(num_feasible_nodes_to_find(5000), 500);
    }
}
