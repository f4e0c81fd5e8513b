//! Pod volumes on the node: each volume gets a directory under
//! `<root-dir>/pods/<uid>/volumes/<plugin>/<name>`; emptyDir is a plain
//! directory (a `tmpfs` for medium Memory), configMap/secret/downwardAPI/
//! projected are written by the `atomic_writer` from a `payload`.

pub mod atomic_writer;
pub mod payload;
pub mod tmpfs;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, Volume};

pub use atomic_writer::{AtomicWriter, FileProjection, Payload};
pub use payload::{PayloadError, PayloadSources};

/// Why a volume could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Writer(#[from] atomic_writer::WriterError),
    #[error("failed to create volume directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tmpfs(#[from] tmpfs::TmpfsError),
    #[error("volume {name:?}: unsupported volume type")]
    Unsupported { name: String },
}

/// Where a volume lives and how it was set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    /// The host path to bind into containers.
    pub host_path: PathBuf,
    /// Whether content was (re)written by this call.
    pub changed: bool,
}

/// The plugin directory names kubelet uses (`kubernetes.io~<plugin>`).
pub mod plugin {
    pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
    pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
    pub const SECRET: &str = "kubernetes.io~secret";
    pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";
    pub const PROJECTED: &str = "kubernetes.io~projected";
}

/// `<root-dir>/pods/<uid>`.
pub fn pod_dir(root_dir: &Path, pod_uid: &str) -> PathBuf {
    root_dir.join("pods").join(pod_uid)
}

/// `<root-dir>/pods/<uid>/volumes/<plugin>/<name>`.
pub fn volume_dir(root_dir: &Path, pod_uid: &str, plugin: &str, name: &str) -> PathBuf {
    pod_dir(root_dir, pod_uid)
        .join("volumes")
        .join(plugin)
        .join(name)
}

/// Creates a volume directory world-writable as kubelet's emptyDir (0777,
/// set explicitly past the umask).
fn make_volume_dir(dir: &Path) -> Result<(), VolumeError> {
    let err = |source| VolumeError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(err)
}

fn write_payload(dir: &Path, payload: &Payload) -> Result<bool, VolumeError> {
    make_volume_dir(dir)?;
    Ok(AtomicWriter::new(dir).write(payload)?)
}

/// Sets up (or refreshes) one pod volume. Re-running it is how configMap and
/// secret updates reach the pod: files are swapped only when content changed.
/// hostPath volumes need no setup and return their path.
///
/// This does blocking file I/O: call it from `spawn_blocking`.
pub fn setup_volume(
    root_dir: &Path,
    pod: &Pod,
    volume: &Volume,
    sources: &PayloadSources,
) -> Result<MountedVolume, VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let name = &volume.name;
    if let Some(src) = &volume.empty_dir {
        let dir = volume_dir(root_dir, uid, plugin::EMPTY_DIR, name);
        let existed = dir.exists();
        make_volume_dir(&dir)?;
        let mut changed = !existed;
        if src.medium.as_deref() == Some("Memory") {
            changed |= tmpfs::ensure_tmpfs(&dir, tmpfs::tmpfs_size(src))?;
        }
        return Ok(MountedVolume {
            host_path: dir,
            changed,
        });
    }
    if let Some(hp) = &volume.host_path {
        return Ok(MountedVolume {
            host_path: PathBuf::from(&hp.path),
            changed: false,
        });
    }
    let (plugin_dir, payload) = if let Some(src) = &volume.config_map {
        (
            plugin::CONFIG_MAP,
            payload::config_map_volume_payload(src, sources)?,
        )
    } else if let Some(src) = &volume.secret {
        (
            plugin::SECRET,
            payload::secret_volume_payload(src, sources)?,
        )
    } else if let Some(src) = &volume.downward_api {
        (
            plugin::DOWNWARD_API,
            payload::downward_api_payload(
                src.items.as_deref().unwrap_or_default(),
                pod,
                src.default_mode.unwrap_or(payload::DEFAULT_MODE),
                sources,
            )?,
        )
    } else if let Some(src) = &volume.projected {
        (
            plugin::PROJECTED,
            payload::projected_payload(src, pod, sources)?,
        )
    } else {
        return Err(VolumeError::Unsupported { name: name.clone() });
    };
    let dir = volume_dir(root_dir, uid, plugin_dir, name);
    let changed = write_payload(&dir, &payload)?;
    tracing::debug!(pod = %uid, volume = %name, changed, "volume set up");
    Ok(MountedVolume {
        host_path: dir,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, EmptyDirVolumeSource};

    use super::*;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some("uid-1".to_owned());
        p
    }

    #[test]
    fn empty_dir_is_a_world_writable_dir_in_the_pod_tree() {
        let root = tempfile::tempdir().unwrap();
        let v = Volume {
            name: "cache".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        };
        let m = setup_volume(root.path(), &pod(), &v, &PayloadSources::default()).unwrap();
        assert_eq!(
            m.host_path,
            root.path()
                .join("pods/uid-1/volumes/kubernetes.io~empty-dir/cache")
        );
        assert!(m.changed);
        let mode = std::fs::metadata(&m.host_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777);
        assert!(
            !setup_volume(root.path(), &pod(), &v, &PayloadSources::default())
                .unwrap()
                .changed
        );
    }

    #[test]
    fn config_map_volume_updates_only_when_content_changes() {
        let root = tempfile::tempdir().unwrap();
        let v = Volume {
            name: "conf".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: "app".to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        };
        let mut sources = PayloadSources::default();
        let cm = |v: &str| ConfigMap {
            data: Some(BTreeMap::from([("k".to_owned(), v.to_owned())])),
            ..ConfigMap::default()
        };
        sources.config_maps.insert("app".to_owned(), cm("1"));
        let m = setup_volume(root.path(), &pod(), &v, &sources).unwrap();
        assert!(m.changed);
        assert_eq!(
            m.host_path,
            root.path()
                .join("pods/uid-1/volumes/kubernetes.io~configmap/conf")
        );
        assert_eq!(std::fs::read_to_string(m.host_path.join("k")).unwrap(), "1");
        assert!(
            !setup_volume(root.path(), &pod(), &v, &sources)
                .unwrap()
                .changed
        );
        sources.config_maps.insert("app".to_owned(), cm("2"));
        assert!(
            setup_volume(root.path(), &pod(), &v, &sources)
                .unwrap()
                .changed
        );
        assert_eq!(std::fs::read_to_string(m.host_path.join("k")).unwrap(), "2");
    }

    #[test]
    fn unknown_volume_types_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let v = Volume {
            name: "x".to_owned(),
            ..Volume::default()
        };
        assert_eq!(
            setup_volume(root.path(), &pod(), &v, &PayloadSources::default())
                .unwrap_err()
                .to_string(),
            "volume \"x\": unsupported volume type"
        );
    }
}
