//! Pod volumes before the sandbox starts (kubelet's volume manager
//! `WaitForAttachAndMount`, node-local plugins only): every volume is set up
//! by `crate::volume`, hostPath types are checked or created.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{HostPathVolumeSource, Pod};

use crate::volume::{PayloadSources, VolumeError, setup_volume};

/// Why a pod's volumes are not ready.
#[derive(Debug, thiserror::Error)]
pub enum VolumesError {
    #[error("MountVolume.SetUp failed for volume {name:?} : {source}")]
    SetUp {
        name: String,
        #[source]
        source: VolumeError,
    },
    #[error(
        "MountVolume.SetUp failed for volume {name:?} : hostPath type check failed: {path} is not a {kind}"
    )]
    HostPathType {
        name: String,
        path: String,
        kind: &'static str,
    },
    #[error("MountVolume.SetUp failed for volume {name:?} : failed to create {path}: {source}")]
    HostPathCreate {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn check_host_path(name: &str, hp: &HostPathVolumeSource) -> Result<(), VolumesError> {
    let path = Path::new(&hp.path);
    let create_err = |source| VolumesError::HostPathCreate {
        name: name.to_owned(),
        path: hp.path.clone(),
        source,
    };
    let wrong = |kind| VolumesError::HostPathType {
        name: name.to_owned(),
        path: hp.path.clone(),
        kind,
    };
    let meta = std::fs::metadata(path).ok();
    match hp.type_.as_deref().unwrap_or_default() {
        "DirectoryOrCreate" if meta.is_none() => {
            std::fs::create_dir_all(path).map_err(create_err)?;
        }
        "FileOrCreate" if meta.is_none() => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(create_err)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(create_err)?;
        }
        "Directory" | "DirectoryOrCreate" if !meta.as_ref().is_some_and(|m| m.is_dir()) => {
            return Err(wrong("directory"));
        }
        "File" | "FileOrCreate" if !meta.as_ref().is_some_and(|m| m.is_file()) => {
            return Err(wrong("file"));
        }
        "Socket" if !meta.as_ref().is_some_and(|m| m.file_type().is_socket()) => {
            return Err(wrong("socket file"));
        }
        "CharDevice"
            if !meta
                .as_ref()
                .is_some_and(|m| m.file_type().is_char_device()) =>
        {
            return Err(wrong("character device"));
        }
        "BlockDevice"
            if !meta
                .as_ref()
                .is_some_and(|m| m.file_type().is_block_device()) =>
        {
            return Err(wrong("block device"));
        }
        _ => {}
    }
    Ok(())
}

/// Sets up every volume of `pod`; returns the host path of each by name.
/// Blocking file I/O: run it in `spawn_blocking`.
pub fn prepare(
    root_dir: &Path,
    pod: &Pod,
    sources: &PayloadSources,
) -> Result<HashMap<String, PathBuf>, VolumesError> {
    let mut out = HashMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(hp) = &v.host_path {
            check_host_path(&v.name, hp)?;
        }
        let mounted =
            setup_volume(root_dir, pod, v, sources).map_err(|source| VolumesError::SetUp {
                name: v.name.clone(),
                source,
            })?;
        out.insert(v.name.clone(), mounted.host_path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSpec, Volume};

    use super::*;

    fn pod(path: &Path, kind: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some("u".to_owned());
        p.spec = Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "h".to_owned(),
                host_path: Some(HostPathVolumeSource {
                    path: path.display().to_string(),
                    type_: Some(kind.to_owned()),
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        });
        p
    }

    #[test]
    fn host_path_types_are_checked_or_created() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("made");
        let v = prepare(
            root.path(),
            &pod(&dir, "DirectoryOrCreate"),
            &PayloadSources::default(),
        )
        .unwrap();
        assert!(dir.is_dir());
        assert_eq!(v["h"], dir);
        let missing = root.path().join("missing");
        let err = prepare(
            root.path(),
            &pod(&missing, "Directory"),
            &PayloadSources::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("is not a directory"));
        let err = prepare(root.path(), &pod(&dir, "File"), &PayloadSources::default()).unwrap_err();
        assert!(err.to_string().contains("is not a file"));
    }
}
