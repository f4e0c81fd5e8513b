//! Pods the runtime or the disk still holds that the node no longer has
//! (kubelet's `HandlePodCleanups` once its sources are ready): a pod deleted
//! while the agent was down keeps its sandboxes, containers, volume and log
//! directories until the agent finds it here and kills it.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use cri::proto;

use super::gc::pod_uid;
use super::sandbox::log_dir_uid;
use super::*;

impl CriRuntime {
    /// UIDs of pods with runtime objects, a volume directory or a log
    /// directory, that are not in `known`.
    pub(super) async fn orphans(
        &self,
        known: &HashSet<String>,
    ) -> Result<Vec<String>, RuntimeError> {
        let mut found = BTreeSet::new();
        let sandboxes = self
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(proto::ListPodSandboxRequest { filter: None })
            .await
            .map_err(call_err("ListPodSandbox"))?
            .into_inner()
            .items;
        found.extend(
            sandboxes
                .iter()
                .filter_map(|s| pod_uid(&s.labels).map(str::to_owned)),
        );
        let containers = self
            .cri
            .runtime
            .clone()
            .list_containers(proto::ListContainersRequest { filter: None })
            .await
            .map_err(call_err("ListContainers"))?
            .into_inner()
            .containers;
        found.extend(
            containers
                .iter()
                .filter_map(|c| pod_uid(&c.labels).map(str::to_owned)),
        );
        let (pods_dir, logs_dir) = (
            self.config.root_dir.join("pods"),
            self.config.pod_log_dir.clone(),
        );
        let on_disk = tokio::task::spawn_blocking(move || {
            let mut uids = dir_names(&pods_dir);
            uids.extend(
                dir_names(&logs_dir)
                    .into_iter()
                    .filter_map(|n| log_dir_uid(&n).map(str::to_owned)),
            );
            uids
        })
        .await
        .unwrap_or_default();
        found.extend(on_disk);
        Ok(found.into_iter().filter(|u| !known.contains(u)).collect())
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}
