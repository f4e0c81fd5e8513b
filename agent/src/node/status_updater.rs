//! The node status loop (kubelet's `updateNodeStatus`): every
//! `--node-status-update-frequency` compute the status and patch
//! `nodes/status` when it changed or the report interval passed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::conditions::{NodeHealth, conditions_changed};
use super::object::node_status;
use super::{NodeContext, NodeError};

/// How often an unchanged status is still reported (kubelet's
/// `nodeStatusReportFrequency` default).
pub const NODE_STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(5 * 60);

/// Whether `new` differs from `old` beyond condition heartbeats.
pub fn node_status_changed(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    let Some(old) = old else {
        return true;
    };
    let empty = Vec::new();
    if conditions_changed(
        old.conditions.as_ref().unwrap_or(&empty),
        new.conditions.as_ref().unwrap_or(&empty),
    ) {
        return true;
    }
    let mut a = old.clone();
    let mut b = new.clone();
    a.conditions = None;
    b.conditions = None;
    a != b
}

/// Patches the Node status periodically.
pub struct StatusUpdater {
    api: Api<Node>,
    ctx: Arc<NodeContext>,
    health: watch::Receiver<NodeHealth>,
    last_report: Option<Instant>,
}

impl StatusUpdater {
    pub fn new(api: Api<Node>, ctx: Arc<NodeContext>, health: watch::Receiver<NodeHealth>) -> Self {
        Self {
            api,
            ctx,
            health,
            last_report: None,
        }
    }

    /// One update: read the Node, compute its status, patch if needed.
    pub async fn sync(&mut self) -> Result<(), NodeError> {
        let name = &self.ctx.config.node_name;
        let node = self.api.get(name).await.map_err(|source| NodeError::Api {
            step: "get node",
            source,
        })?;
        let facts = self.ctx.host.facts()?;
        let health = self.health.borrow().clone();
        let now = Time(Timestamp::now());
        let status = node_status(
            &self.ctx.inputs(&facts),
            node.status.as_ref(),
            &health,
            &now,
        );
        let fresh = self
            .last_report
            .is_some_and(|t| t.elapsed() < NODE_STATUS_REPORT_FREQUENCY);
        if fresh && !node_status_changed(node.status.as_ref(), &status) {
            return Ok(());
        }
        let patch = json!({ "status": status });
        self.api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map_err(|source| NodeError::Api {
                step: "patch node status",
                source,
            })?;
        self.last_report = Some(Instant::now());
        tracing::debug!(node = %name, "node status updated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeAddress;

    use super::*;
    use crate::node::conditions::update_conditions;

    #[test]
    fn status_change_ignores_heartbeats_but_not_other_fields() {
        let t = |s| Time(Timestamp::from_second(s).unwrap());
        let mut a = NodeStatus {
            conditions: Some(Vec::new()),
            ..NodeStatus::default()
        };
        update_conditions(
            a.conditions.as_mut().unwrap(),
            &NodeHealth::default(),
            &t(1),
        );
        let mut b = a.clone();
        update_conditions(
            b.conditions.as_mut().unwrap(),
            &NodeHealth::default(),
            &t(2),
        );
        assert!(!node_status_changed(Some(&a), &b));
        b.addresses = Some(vec![NodeAddress {
            type_: "InternalIP".to_owned(),
            address: "10.0.0.1".to_owned(),
        }]);
        assert!(node_status_changed(Some(&a), &b));
        assert!(node_status_changed(None, &b));
    }
}

#[cfg(test)]
mod api_tests {
    use std::sync::{Arc, Mutex};

    use clap::Parser;
    use kube::api::PostParams;

    use super::*;
    use crate::config::{AgentFlags, Config};
    use crate::node::fake_api;
    use crate::node::host::{FakeHost, HostFacts};

    #[tokio::test]
    async fn status_is_patched_once_then_skipped_while_unchanged() {
        let state = Arc::new(Mutex::new(fake_api::State::default()));
        let client = fake_api::client(state.clone());
        let nodes: Api<Node> = Api::all(client);
        let mut n = Node::default();
        n.metadata.name = Some("node-1".to_owned());
        nodes.create(&PostParams::default(), &n).await.unwrap();
        let flags =
            AgentFlags::try_parse_from(["r8s-agent", "--hostname-override", "node-1"]).unwrap();
        let ctx = Arc::new(NodeContext {
            config: Arc::new(Config::from_flags_with_hostname(flags, "x").unwrap()),
            host: Arc::new(FakeHost(HostFacts {
                num_cpus: 2,
                memory_bytes: 4 << 30,
                operating_system: "linux".to_owned(),
                architecture: "amd64".to_owned(),
                ..HostFacts::default()
            })),
            node_ip: "10.0.0.5".parse().unwrap(),
            runtime_version: "r8s://0.1.0".to_owned(),
        });
        let (_tx, rx) = watch::channel(NodeHealth::default());
        let mut updater = StatusUpdater::new(nodes, ctx, rx);
        updater.sync().await.unwrap();
        updater.sync().await.unwrap();
        let s = state.lock().unwrap();
        let patches = s.requests.iter().filter(|r| r.starts_with("PATCH")).count();
        assert_eq!(patches, 1);
        let node = &s.objects["/api/v1/nodes/node-1"];
        assert_eq!(node["status"]["capacity"]["cpu"], "2");
        assert_eq!(node["status"]["conditions"][3]["type"], "Ready");
        assert_eq!(node["status"]["conditions"][3]["reason"], "KubeletReady");
    }
}
