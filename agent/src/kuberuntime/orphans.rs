//! Pods the runtime or the disk still holds that the node no longer has
//! (kubelet's `HandlePodCleanups` once its sources are ready): a pod deleted
//! while the agent was down keeps its sandboxes, containers, volume and log
//! directories until the agent finds it here and kills it.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use cri::proto;

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
        found.extend(sandboxes.iter().filter_map(|s| pod_uid(&s.labels)));
        let containers = self
            .cri
            .runtime
            .clone()
            .list_containers(proto::ListContainersRequest { filter: None })
            .await
            .map_err(call_err("ListContainers"))?
            .into_inner()
            .containers;
        found.extend(containers.iter().filter_map(|c| pod_uid(&c.labels)));
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

fn pod_uid(labels: &std::collections::HashMap<String, String>) -> Option<String> {
    labels
        .get(labels::POD_UID)
        .filter(|u| !u.is_empty())
        .cloned()
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

/// The pod UID of a log directory `<namespace>_<name>_<uid>`.
fn log_dir_uid(name: &str) -> Option<&str> {
    let (_, uid) = name.rsplit_once('_')?;
    (!uid.is_empty()).then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_directory_names_its_pod_uid_last() {
        assert_eq!(log_dir_uid("default_web_1234-abcd"), Some("1234-abcd"));
        assert_eq!(log_dir_uid("kube-system_my_pod_uid9"), Some("uid9"));
        assert_eq!(log_dir_uid("nouid"), None);
        assert_eq!(log_dir_uid("ns_name_"), None);
    }
}
