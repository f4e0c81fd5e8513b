//! The text users see when a pod cannot be scheduled: upstream's
//! `FitError.Error()` histogram of node reasons and the preemption
//! (PostFilter) message, byte for byte. No I/O.

use std::collections::BTreeMap;

use super::filter::NodeStatus;

/// Upstream `ErrNoNodesAvailable`.
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";
pub const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const PREEMPTION_NEVER: &str = "not eligible due to preemptionPolicy=Never.";

/// `0/N nodes are available: <count reason, ...>.` — the reasons counted
/// over nodes, formatted `"{count} {reason}"` and sorted as strings.
pub fn nodes_available_message<'a>(
    num_all_nodes: usize,
    statuses: impl IntoIterator<Item = &'a NodeStatus>,
) -> String {
    reasons_message(
        num_all_nodes,
        statuses
            .into_iter()
            .flat_map(|s| s.reasons.iter().map(|r| r.as_ref())),
    )
}

/// The same message from the nodes' reasons, one item per node and reason.
pub fn reasons_message<'a>(num_all_nodes: usize, reasons: impl Iterator<Item = &'a str>) -> String {
    let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *histogram.entry(r).or_insert(0) += 1;
    }
    let mut reasons: Vec<String> = histogram
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    reasons.sort();
    let mut msg = format!("0/{num_all_nodes} nodes are available:");
    if !reasons.is_empty() {
        msg.push_str(&format!(" {}.", reasons.join(", ")));
    }
    msg
}

/// The whole message: the filter histogram plus the PostFilter message.
pub fn fit_error_message<'a>(
    num_all_nodes: usize,
    statuses: impl IntoIterator<Item = &'a NodeStatus>,
    post_filter: Option<&str>,
) -> String {
    let mut msg = nodes_available_message(num_all_nodes, statuses);
    if let Some(p) = post_filter.filter(|p| !p.is_empty()) {
        msg.push(' ');
        msg.push_str(p);
        if !p.ends_with('.') {
            msg.push('.');
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::super::filter::Code;
    use super::*;

    fn status(r: &str) -> NodeStatus {
        NodeStatus {
            code: Code::Unschedulable,
            reasons: vec![r.to_string().into()],
        }
    }

    #[test]
    fn message_matches_upstream_format() {
        let statuses = [
            status("Insufficient cpu"),
            status("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
            status("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
        ];
        let preemption = format!(
            "preemption: {}",
            nodes_available_message(
                3,
                &[
                    status(PREEMPTION_NOT_HELPFUL),
                    status(PREEMPTION_NOT_HELPFUL),
                    status(PREEMPTION_NOT_HELPFUL)
                ]
            )
        );
        assert_eq!(
            fit_error_message(3, &statuses, Some(&preemption)),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn reasons_sort_as_strings_with_counts() {
        let statuses = [
            status("Insufficient memory"),
            status("Insufficient cpu"),
            status("Insufficient cpu"),
        ];
        assert_eq!(
            nodes_available_message(3, &statuses),
            "0/3 nodes are available: 1 Insufficient memory, 2 Insufficient cpu."
        );
    }
}
