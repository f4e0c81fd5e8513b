//! The CSR approver (kube-controller-manager's csrapproving controller):
//! approves kubelet client certificate requests
//! (`kubernetes.io/kube-apiserver-client-kubelet`) from bootstrap tokens
//! (`system:bootstrappers`, upstream "nodeclient") and from a node renewing
//! its own certificate (`system:nodes`, "selfnodeclient").
//!
//! Unlike upstream, and like k3s, kubelet serving certificate requests
//! (`kubernetes.io/kubelet-serving`) are approved too when a node asks for
//! itself and every SAN is the node's name or one of its reported addresses,
//! and so are a node's requests for the `system:kube-proxy` client identity
//! (`kubernetes.io/kube-apiserver-client`) its in-process service proxy and
//! pod network use (k3s's supervisor hands its agents that certificate).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::ControllerContext;
use super::csr::{self, CsrInfo};
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};
use crate::auth::node::node_name;

const CLIENT_MESSAGE: &str = "Auto approving kubelet client certificate after SubjectAccessReview.";
const SELF_CLIENT_MESSAGE: &str =
    "Auto approving self kubelet client certificate after SubjectAccessReview.";
const SERVING_MESSAGE: &str =
    "Auto approving kubelet serving certificate for the node's own addresses.";
const KUBE_PROXY_MESSAGE: &str = "Auto approving kube-proxy client certificate of a node.";
/// How soon a serving request is looked at again while its Node is missing.
const NODE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CsrApprovingError {
    #[error("failed to {action} for certificate signing request {name}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What the approver decides about one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Approve(&'static str),
    /// Not for this approver (left for a human: `kubectl certificate approve`).
    Skip,
    /// A serving request of a node not registered yet.
    WaitForNode(String),
}

fn in_group(csr: &CertificateSigningRequest, group: &str) -> bool {
    csr.spec
        .groups
        .as_ref()
        .is_some_and(|g| g.iter().any(|x| x == group))
}

/// Decides on a request, given its decoded request and a way to look up a
/// Node by name.
pub fn decide(
    csr: &CertificateSigningRequest,
    info: &CsrInfo,
    node: impl Fn(&str) -> Option<Arc<Node>>,
) -> Decision {
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let username = csr.spec.username.as_deref().unwrap_or_default();
    match csr.spec.signer_name.as_str() {
        csr::KUBELET_CLIENT_SIGNER => {
            if csr::check_kubelet_client(info, &usages).is_err() {
                return Decision::Skip;
            }
            if in_group(csr, csr::NODES_GROUP) && username == info.common_name {
                Decision::Approve(SELF_CLIENT_MESSAGE)
            } else if in_group(csr, agent::bootstrap::token::BOOTSTRAPPERS_GROUP) {
                Decision::Approve(CLIENT_MESSAGE)
            } else {
                Decision::Skip
            }
        }
        csr::KUBE_APISERVER_CLIENT_SIGNER => {
            let groups = csr.spec.groups.as_deref().unwrap_or_default();
            let from_node = node_name(username, groups).is_some_and(|n| !n.is_empty());
            if from_node && csr::check_kube_proxy_client(info, &usages).is_ok() {
                Decision::Approve(KUBE_PROXY_MESSAGE)
            } else {
                Decision::Skip
            }
        }
        csr::KUBELET_SERVING_SIGNER => {
            if csr::check_kubelet_serving(info, &usages).is_err()
                || !in_group(csr, csr::NODES_GROUP)
                || username != info.common_name
            {
                return Decision::Skip;
            }
            let name = username
                .strip_prefix(csr::NODE_USER_PREFIX)
                .unwrap_or_default();
            let Some(node) = node(name) else {
                return Decision::WaitForNode(name.to_owned());
            };
            let addresses = node
                .status
                .as_ref()
                .and_then(|s| s.addresses.clone())
                .unwrap_or_default();
            let dns_ok = info.dns_names.iter().all(|d| {
                d == name
                    || addresses.iter().any(|a| {
                        matches!(a.type_.as_str(), "Hostname" | "InternalDNS" | "ExternalDNS")
                            && &a.address == d
                    })
            });
            let ips_ok = info.ip_addresses.iter().all(|ip| {
                addresses.iter().any(|a| {
                    matches!(a.type_.as_str(), "InternalIP" | "ExternalIP")
                        && a.address.parse::<IpAddr>().ok() == Some(*ip)
                })
            });
            if dns_ok && ips_ok {
                Decision::Approve(SERVING_MESSAGE)
            } else {
                Decision::Skip
            }
        }
        _ => Decision::Skip,
    }
}

struct Ctx {
    client: kube::Client,
    csrs: Store<CertificateSigningRequest>,
    nodes: Store<Node>,
}

pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let csrs = ctx.informers.informer(
        Api::<CertificateSigningRequest>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |c: &CertificateSigningRequest| q.add("", &c.name_any()),
    );
    let nodes = ctx.informers.informer(
        Api::<Node>::all(ctx.client.clone()),
        watcher::Config::default(),
        |_: &Node| {},
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        csrs,
        nodes,
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.csrs.wait_until_ready().await;
        c.nodes.wait_until_ready().await;
        util::run_workers("csrapproving", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

async fn sync(c: &Ctx, (_, name): Key) -> Result<Requeue, CsrApprovingError> {
    let Some(obj) = c.csrs.get(&ObjectRef::new(&name)) else {
        return Ok(None);
    };
    if csr::is_approved(&obj) || csr::is_denied(&obj) || csr::is_issued(&obj) {
        return Ok(None);
    }
    let Ok(info) = csr::request_of(&obj) else {
        return Ok(None);
    };
    let message = match decide(&obj, &info, |n| c.nodes.get(&ObjectRef::new(n))) {
        Decision::Approve(m) => m,
        Decision::Skip => return Ok(None),
        Decision::WaitForNode(node) => {
            tracing::debug!(csr = %name, %node, "serving certificate request waits for its node");
            return Ok(Some(NODE_WAIT));
        }
    };
    let mut conditions = obj
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    conditions.push(CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some("AutoApproved".into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
    let patch = serde_json::json!({"status": {"conditions": conditions}});
    Api::<CertificateSigningRequest>::all(c.client.clone())
        .patch_approval(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| CsrApprovingError::Api {
            action: "approve",
            name: name.clone(),
            source,
        })?;
    tracing::info!(csr = %name, requester = ?obj.spec.username, "approved certificate signing request");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    use super::*;
    use crate::controllers::csr::tests::request;

    fn csr(
        signer: &str,
        user: &str,
        groups: &[&str],
        usages: &[&str],
        pem: &str,
    ) -> (CertificateSigningRequest, CsrInfo) {
        let obj = CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                username: Some(user.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                usages: Some(usages.iter().map(|g| g.to_string()).collect()),
                request: k8s_openapi::ByteString(pem.as_bytes().to_vec()),
                ..Default::default()
            },
            ..Default::default()
        };
        let info = csr::parse_request(pem.as_bytes()).unwrap();
        (obj, info)
    }

    const CLIENT: &[&str] = &["digital signature", "key encipherment", "client auth"];
    const SERVING: &[&str] = &["digital signature", "key encipherment", "server auth"];

    fn no_node(_: &str) -> Option<Arc<Node>> {
        None
    }

    #[test]
    fn bootstrappers_and_nodes_get_kubelet_client_certificates() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let (c, i) = csr(
            csr::KUBELET_CLIENT_SIGNER,
            "system:bootstrap:abcdef",
            &["system:bootstrappers", "system:authenticated"],
            CLIENT,
            &pem,
        );
        assert_eq!(decide(&c, &i, no_node), Decision::Approve(CLIENT_MESSAGE));
        let (c, i) = csr(
            csr::KUBELET_CLIENT_SIGNER,
            "system:node:n1",
            &["system:nodes"],
            CLIENT,
            &pem,
        );
        assert_eq!(
            decide(&c, &i, no_node),
            Decision::Approve(SELF_CLIENT_MESSAGE)
        );
        // A node may not renew another node's certificate.
        let (c, i) = csr(
            csr::KUBELET_CLIENT_SIGNER,
            "system:node:n2",
            &["system:nodes"],
            CLIENT,
            &pem,
        );
        assert_eq!(decide(&c, &i, no_node), Decision::Skip);
        // Anyone else waits for a human.
        let (c, i) = csr(csr::KUBELET_CLIENT_SIGNER, "alice", &["dev"], CLIENT, &pem);
        assert_eq!(decide(&c, &i, no_node), Decision::Skip);
        let admin = request("admin", &["system:masters"], &[]);
        let (c, i) = csr(
            csr::KUBELET_CLIENT_SIGNER,
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
            CLIENT,
            &admin,
        );
        assert_eq!(decide(&c, &i, no_node), Decision::Skip);
    }

    #[test]
    fn nodes_get_the_kube_proxy_identity_and_nothing_else_by_this_signer() {
        let proxy = request("system:kube-proxy", &[], &[]);
        let from = |user: &str, groups: &[&str], pem: &str| {
            let (c, i) = csr(csr::KUBE_APISERVER_CLIENT_SIGNER, user, groups, CLIENT, pem);
            decide(&c, &i, no_node)
        };
        assert_eq!(
            from("system:node:n1", &["system:nodes"], &proxy),
            Decision::Approve(KUBE_PROXY_MESSAGE)
        );
        // Only nodes, and only that subject, without groups or SANs.
        assert_eq!(
            from("system:bootstrap:abcdef", &["system:bootstrappers"], &proxy),
            Decision::Skip
        );
        assert_eq!(from("alice", &["dev"], &proxy), Decision::Skip);
        for pem in [
            request("system:kube-proxy", &["system:masters"], &[]),
            request("admin", &[], &[]),
            request("system:kube-proxy", &[], &["10.0.0.1"]),
        ] {
            assert_eq!(
                from("system:node:n1", &["system:nodes"], &pem),
                Decision::Skip
            );
        }
        let (c, i) = csr(
            csr::KUBE_APISERVER_CLIENT_SIGNER,
            "system:node:n1",
            &["system:nodes"],
            SERVING,
            &proxy,
        );
        assert_eq!(decide(&c, &i, no_node), Decision::Skip);
    }

    #[test]
    fn serving_certificates_only_for_the_nodes_own_addresses() {
        let node = Arc::new(Node {
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: "10.0.0.1".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let lookup = |n: &str| (n == "n1").then(|| node.clone());
        let own = request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.1"]);
        let (c, i) = csr(
            csr::KUBELET_SERVING_SIGNER,
            "system:node:n1",
            &["system:nodes"],
            SERVING,
            &own,
        );
        assert_eq!(decide(&c, &i, lookup), Decision::Approve(SERVING_MESSAGE));
        assert_eq!(decide(&c, &i, no_node), Decision::WaitForNode("n1".into()));
        let foreign = request("system:node:n1", &["system:nodes"], &["n1", "10.9.9.9"]);
        let (c, i) = csr(
            csr::KUBELET_SERVING_SIGNER,
            "system:node:n1",
            &["system:nodes"],
            SERVING,
            &foreign,
        );
        assert_eq!(decide(&c, &i, lookup), Decision::Skip);
        let (c, i) = csr(
            csr::KUBELET_SERVING_SIGNER,
            "system:bootstrap:abcdef",
            &["system:bootstrappers"],
            SERVING,
            &own,
        );
        assert_eq!(decide(&c, &i, lookup), Decision::Skip);
    }
}
