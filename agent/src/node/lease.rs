//! The node Lease heartbeat (kubelet's nodelease controller): a Lease named
//! after the node in kube-node-lease, renewed every 10 s, owned by the Node.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

use super::NodeError;

/// Namespace of node leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// kubelet's `nodeLeaseDurationSeconds` default.
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// The renew interval: a quarter of the lease duration, as kubelet.
pub fn renew_interval() -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(LEASE_DURATION_SECONDS.unsigned_abs()) / 4)
}

/// The lease to write: `base` (or a fresh one) held by the node and renewed
/// `now`, with an owner reference to the Node when it has none yet.
pub fn new_lease(
    base: Option<&Lease>,
    node_name: &str,
    node_uid: Option<&str>,
    now: Timestamp,
) -> Lease {
    let mut lease = base.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_owned()),
            namespace: Some(NODE_LEASE_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node_name.to_owned());
    spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
    spec.renew_time = Some(MicroTime(now));
    let owners = lease.metadata.owner_references.get_or_insert_with(Vec::new);
    if owners.is_empty()
        && let Some(uid) = node_uid
    {
        owners.push(OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Node".to_owned(),
            name: node_name.to_owned(),
            uid: uid.to_owned(),
            ..OwnerReference::default()
        });
    }
    if owners.is_empty() {
        lease.metadata.owner_references = None;
    }
    lease
}

/// Keeps the node's Lease renewed.
pub struct LeaseKeeper {
    leases: Api<Lease>,
    nodes: Api<Node>,
    node_name: String,
    latest: Option<Lease>,
}

impl LeaseKeeper {
    pub fn new(leases: Api<Lease>, nodes: Api<Node>, node_name: impl Into<String>) -> Self {
        Self {
            leases,
            nodes,
            node_name: node_name.into(),
            latest: None,
        }
    }

    async fn node_uid(&self, lease: Option<&Lease>) -> Option<String> {
        let has_owner = lease
            .and_then(|l| l.metadata.owner_references.as_ref())
            .is_some_and(|o| !o.is_empty());
        if has_owner {
            return None;
        }
        match self.nodes.get_opt(&self.node_name).await {
            Ok(node) => node.and_then(|n| n.metadata.uid),
            Err(err) => {
                tracing::warn!(node = %self.node_name, error = %err, "failed to get node for the lease owner");
                None
            }
        }
    }

    /// One renewal: update the last known lease, or get/create it.
    pub async fn sync(&mut self) -> Result<(), NodeError> {
        let name = self.node_name.clone();
        if let Some(latest) = self.latest.take() {
            let uid = self.node_uid(Some(&latest)).await;
            let lease = new_lease(Some(&latest), &name, uid.as_deref(), Timestamp::now());
            match self
                .leases
                .replace(&name, &PostParams::default(), &lease)
                .await
            {
                Ok(stored) => {
                    self.latest = Some(stored);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {
                    tracing::debug!(node = %name, "lease changed under us, re-reading it");
                }
                Err(source) => {
                    return Err(NodeError::Api {
                        step: "update lease",
                        source,
                    });
                }
            }
        }
        let existing = self
            .leases
            .get_opt(&name)
            .await
            .map_err(|source| NodeError::Api {
                step: "get lease",
                source,
            })?;
        let uid = self.node_uid(existing.as_ref()).await;
        let lease = new_lease(existing.as_ref(), &name, uid.as_deref(), Timestamp::now());
        let stored = if existing.is_some() {
            self.leases
                .replace(&name, &PostParams::default(), &lease)
                .await
        } else {
            self.leases.create(&PostParams::default(), &lease).await
        }
        .map_err(|source| NodeError::Api {
            step: "ensure lease",
            source,
        })?;
        self.latest = Some(stored);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_lease_is_held_by_the_node_and_owned_by_it() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let l = new_lease(None, "node-1", Some("uid-1"), now);
        assert_eq!(l.metadata.name.as_deref(), Some("node-1"));
        assert_eq!(l.metadata.namespace.as_deref(), Some("kube-node-lease"));
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node-1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        let owner = &l.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str()
            ),
            ("v1", "Node", "node-1", "uid-1")
        );
        assert_eq!(renew_interval(), std::time::Duration::from_secs(10));
    }

    #[test]
    fn renewal_keeps_metadata_and_moves_renew_time() {
        let t1 = Timestamp::from_second(1).unwrap();
        let t2 = Timestamp::from_second(2).unwrap();
        let mut first = new_lease(None, "n", None, t1);
        assert!(first.metadata.owner_references.is_none());
        first.metadata.resource_version = Some("7".to_owned());
        let second = new_lease(Some(&first), "n", Some("u"), t2);
        assert_eq!(second.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(
            second.spec.as_ref().unwrap().renew_time,
            Some(MicroTime(t2))
        );
        assert_eq!(second.metadata.owner_references.as_ref().unwrap().len(), 1);
    }
}

#[cfg(test)]
mod api_tests {
    use std::sync::{Arc, Mutex};

    use k8s_openapi::api::core::v1::Node;
    use kube::api::PostParams;

    use super::*;
    use crate::node::fake_api;

    #[tokio::test]
    async fn lease_is_created_owned_and_then_renewed_in_place() {
        let state = Arc::new(Mutex::new(fake_api::State::default()));
        let client = fake_api::client(state.clone());
        let nodes: Api<Node> = Api::all(client.clone());
        let mut n = Node::default();
        n.metadata.name = Some("node-1".to_owned());
        nodes.create(&PostParams::default(), &n).await.unwrap();
        let mut keeper = LeaseKeeper::new(
            Api::namespaced(client, NODE_LEASE_NAMESPACE),
            nodes,
            "node-1",
        );
        keeper.sync().await.unwrap();
        keeper.sync().await.unwrap();
        let s = state.lock().unwrap();
        let lease =
            &s.objects["/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1"];
        assert_eq!(lease["spec"]["holderIdentity"], "node-1");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "uid-node-1");
        let lease_requests: Vec<&str> = s
            .requests
            .iter()
            .filter(|r| r.contains("leases"))
            .map(|r| r.split(' ').next().unwrap())
            .collect();
        assert_eq!(lease_requests, ["GET", "POST", "PUT"]);
    }

    #[tokio::test]
    async fn conflicting_update_falls_back_to_a_fresh_read() {
        let state = Arc::new(Mutex::new(fake_api::State::default()));
        let client = fake_api::client(state.clone());
        let nodes: Api<Node> = Api::all(client.clone());
        let mut keeper = LeaseKeeper::new(
            Api::namespaced(client, NODE_LEASE_NAMESPACE),
            nodes,
            "node-1",
        );
        keeper.sync().await.unwrap();
        // Someone else writes the lease: our resourceVersion is stale.
        state
            .lock()
            .unwrap()
            .objects
            .get_mut("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1")
            .unwrap()["metadata"]["resourceVersion"] = serde_json::json!("999");
        keeper.sync().await.unwrap();
        let s = state.lock().unwrap();
        let lease_requests: Vec<&str> = s
            .requests
            .iter()
            .filter(|r| r.contains("leases"))
            .map(|r| r.split(' ').next().unwrap())
            .collect();
        assert_eq!(lease_requests, ["GET", "POST", "PUT", "GET", "PUT"]);
    }
}
