//! Read-only CRI queries of the runtime: a pod's sandboxes (newest first),
//! its container statuses and its sandbox addresses, all by the pod-uid label.

use cri::proto;

use super::*;

impl CriRuntime {
    pub(super) async fn sandboxes(
        &self,
        uid: &str,
    ) -> Result<Vec<proto::PodSandbox>, RuntimeError> {
        let mut items = self
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(proto::ListPodSandboxRequest {
                filter: Some(proto::PodSandboxFilter {
                    label_selector: labels::pod_selector(uid),
                    ..proto::PodSandboxFilter::default()
                }),
            })
            .await
            .map_err(call_err("ListPodSandbox"))?
            .into_inner()
            .items;
        items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(items)
    }

    /// Statuses of every container of the pod (in `sandbox` when given).
    pub(super) async fn container_statuses(
        &self,
        uid: &str,
        sandbox: Option<&str>,
    ) -> Result<Vec<proto::ContainerStatus>, RuntimeError> {
        let mut rt = self.cri.runtime.clone();
        let list = rt
            .list_containers(proto::ListContainersRequest {
                filter: Some(proto::ContainerFilter {
                    label_selector: labels::pod_selector(uid),
                    pod_sandbox_id: sandbox.unwrap_or_default().to_owned(),
                    ..proto::ContainerFilter::default()
                }),
            })
            .await
            .map_err(call_err("ListContainers"))?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            match rt
                .container_status(proto::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(r) => out.extend(r.into_inner().status),
                // Removed between the list and the status call.
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(call_err("ContainerStatus")(s)),
            }
        }
        Ok(out)
    }

    pub(super) async fn pod_ips(&self, sandbox_id: &str) -> Vec<String> {
        let status = self
            .cri
            .runtime
            .clone()
            .pod_sandbox_status(proto::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.to_owned(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().status);
        let Some(net) = status.and_then(|s| s.network) else {
            return Vec::new();
        };
        std::iter::once(net.ip)
            .chain(net.additional_ips.into_iter().map(|i| i.ip))
            .filter(|ip| !ip.is_empty())
            .collect()
    }
}
