//! Per-pod usage for eviction: memory working set and writable layer per
//! container from CRI `ListContainerStats`; logs per container, emptyDir
//! volumes and the pod's local ephemeral storage from its dirs.

use std::path::{Path, PathBuf};

use cri::client::CriClient;
use cri::fs_usage::dir_usage;
use k8s_openapi::api::core::v1::Pod;

use super::rank::{ContainerUsage, PodUsage, PodUsages};
use crate::kuberuntime::sandbox::pod_log_dir;
use crate::volume::{plugin, volume_dir};

/// Where pod usage comes from.
#[async_trait::async_trait]
pub trait PodStats: Send + Sync {
    async fn usage(&self, pods: &[Pod]) -> PodUsages;
}

/// The node's pods through CRI (when there is a runtime) and their dirs.
pub struct NodePodStats {
    pub cri: Option<CriClient>,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
}

fn bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The dirs of one pod to measure.
struct PodDirs {
    uid: String,
    logs: PathBuf,
    /// Container names.
    containers: Vec<String>,
    /// emptyDir volumes: (name, dir, disk-backed).
    empty_dirs: Vec<(String, PathBuf, bool)>,
    /// configMap volume dirs (local ephemeral storage as kubelet counts it).
    config_maps: Vec<PathBuf>,
}

impl PodDirs {
    fn of(pod: &Pod, root_dir: &Path, pod_logs_dir: &Path) -> Option<Self> {
        let uid = pod.metadata.uid.clone()?;
        let spec = pod.spec.as_ref()?;
        let mut empty_dirs = Vec::new();
        let mut config_maps = Vec::new();
        for v in spec.volumes.iter().flatten() {
            if let Some(e) = &v.empty_dir {
                let dir = volume_dir(root_dir, &uid, plugin::EMPTY_DIR, &v.name);
                let on_disk = e.medium.as_deref().unwrap_or_default() != "Memory";
                empty_dirs.push((v.name.clone(), dir, on_disk));
            } else if v.config_map.is_some() {
                config_maps.push(volume_dir(root_dir, &uid, plugin::CONFIG_MAP, &v.name));
            }
        }
        Some(Self {
            logs: pod_log_dir(pod_logs_dir, pod),
            containers: spec.containers.iter().map(|c| c.name.clone()).collect(),
            uid,
            empty_dirs,
            config_maps,
        })
    }

    /// Measures the dirs into `usage` (whose containers carry their writable layers).
    fn measure(&self, usage: &mut PodUsage) {
        let mut total = 0u64;
        for name in &self.containers {
            let logs = dir_usage(&self.logs.join(name)).bytes;
            total = total.saturating_add(logs);
            match usage.containers.iter_mut().find(|c| &c.name == name) {
                Some(c) => {
                    total = total.saturating_add(c.rootfs_bytes.unwrap_or(0).unsigned_abs());
                    c.logs_bytes = Some(bytes(logs));
                }
                None => usage.containers.push(ContainerUsage {
                    name: name.clone(),
                    logs_bytes: Some(bytes(logs)),
                    ..ContainerUsage::default()
                }),
            }
        }
        for (name, dir, on_disk) in &self.empty_dirs {
            let used = dir_usage(dir).bytes;
            usage.volumes.insert(name.clone(), bytes(used));
            if *on_disk {
                total = total.saturating_add(used);
            }
        }
        for dir in &self.config_maps {
            total = total.saturating_add(dir_usage(dir).bytes);
        }
        usage.ephemeral_storage = Some(bytes(total));
    }
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
                                rootfs_bytes: u
                                    .writable_layer
                                    .and_then(|l| l.used_bytes)
                                    .map(|v| bytes(v.value)),
                                logs_bytes: None,
                            });
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "failed to read container stats for eviction")
                }
            }
        }
        let dirs: Vec<PodDirs> = pods
            .iter()
            .filter_map(|p| PodDirs::of(p, &self.root_dir, &self.pod_logs_dir))
            .collect();
        tokio::task::spawn_blocking(move || {
            for d in dirs {
                d.measure(out.entry(d.uid.clone()).or_default());
            }
            out
        })
        .await
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, Container, EmptyDirVolumeSource, PodSpec, Volume,
    };

    use super::*;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some("uid-1".into());
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("default".into());
        let volume = |name: &str, medium: Option<&str>| Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: medium.map(Into::into),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        };
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ..Container::default()
            }],
            volumes: Some(vec![
                volume("scratch", None),
                volume("shm", Some("Memory")),
                Volume {
                    name: "conf".into(),
                    config_map: Some(ConfigMapVolumeSource::default()),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        });
        p
    }

    #[test]
    fn a_pod_counts_disk_volumes_logs_and_writable_layers() {
        let root = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let p = pod();
        let write = |dir: PathBuf, n: usize| {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("f"), vec![1u8; n]).unwrap();
            dir_usage(&dir).bytes
        };
        let scratch = write(
            volume_dir(root.path(), "uid-1", plugin::EMPTY_DIR, "scratch"),
            1 << 20,
        );
        let shm = write(
            volume_dir(root.path(), "uid-1", plugin::EMPTY_DIR, "shm"),
            1 << 20,
        );
        let conf = write(
            volume_dir(root.path(), "uid-1", plugin::CONFIG_MAP, "conf"),
            4096,
        );
        let app_logs = write(pod_log_dir(logs.path(), &p).join("app"), 8192);

        let dirs = PodDirs::of(&p, root.path(), logs.path()).unwrap();
        let mut usage = PodUsage {
            containers: vec![ContainerUsage {
                name: "app".into(),
                rootfs_bytes: Some(100),
                ..ContainerUsage::default()
            }],
            ..PodUsage::default()
        };
        dirs.measure(&mut usage);
        assert_eq!(usage.volumes["scratch"], bytes(scratch));
        assert_eq!(
            usage.volumes["shm"],
            bytes(shm),
            "measured for its sizeLimit"
        );
        assert_eq!(usage.containers[0].logs_bytes, Some(bytes(app_logs)));
        assert_eq!(
            usage.ephemeral_storage,
            Some(bytes(scratch + conf + app_logs + 100)),
            "memory-backed volumes are not ephemeral storage"
        );
    }
}
