//! Per-pod usage for ranking: memory working set per container from CRI
//! `ListContainerStats`, ephemeral storage as the bytes of the pod's
//! volumes dir and log dir (the writable layer is not measured).

use std::path::{Path, PathBuf};

use cri::client::CriClient;
use k8s_openapi::api::core::v1::Pod;

use super::rank::{ContainerUsage, PodUsages};
use crate::kuberuntime::sandbox::pod_log_dir;
use crate::volume::pod_dir;

/// Where pod usage comes from.
#[async_trait::async_trait]
pub trait PodStats: Send + Sync {
    async fn usage(&self, pods: &[Pod]) -> PodUsages;
}

/// Bytes of the regular files under `dir` (not following symlinks or
/// crossing into other file systems' mounts is not checked: emptyDirs are
/// plain dirs).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// The node's pods through CRI (when there is a runtime) and their dirs.
pub struct NodePodStats {
    pub cri: Option<CriClient>,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
}

#[async_trait::async_trait]
impl PodStats for NodePodStats {
    async fn usage(&self, pods: &[Pod]) -> PodUsages {
        let mut out = PodUsages::new();
        if let Some(cri) = &self.cri {
            match crate::server::stats::container_usage(cri).await {
                Ok(usage) => {
                    for u in usage {
                        out.entry(u.uid.clone())
                            .or_default()
                            .containers
                            .push(ContainerUsage {
                                name: u.container.clone(),
                                memory_working_set: u
                                    .memory
                                    .and_then(|m| m.working_set_bytes)
                                    .and_then(|v| i64::try_from(v.value).ok()),
                            });
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "failed to read container stats for eviction")
                }
            }
        }
        let dirs: Vec<(String, PathBuf, PathBuf)> = pods
            .iter()
            .filter_map(|p| {
                let uid = p.metadata.uid.clone()?;
                Some((
                    uid.clone(),
                    pod_dir(&self.root_dir, &uid).join("volumes"),
                    pod_log_dir(&self.pod_logs_dir, p),
                ))
            })
            .collect();
        let sizes = tokio::task::spawn_blocking(move || {
            dirs.into_iter()
                .map(|(uid, vols, logs)| (uid, dir_bytes(&vols).saturating_add(dir_bytes(&logs))))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (uid, bytes) in sizes {
            out.entry(uid).or_default().ephemeral_storage =
                Some(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_bytes_sums_nested_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/x"), vec![0u8; 10]).unwrap();
        std::fs::write(d.path().join("a/b/y"), vec![0u8; 5]).unwrap();
        assert_eq!(dir_bytes(d.path()), 15);
        assert_eq!(dir_bytes(&d.path().join("missing")), 0);
    }
}
