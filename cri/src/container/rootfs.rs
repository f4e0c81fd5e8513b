//! The container rootfs: an overlayfs mounted on the host over the image's layer
//! snapshots (lowerdir, top first) with a per-container upper and work dir.
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Errors of mounting the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("failed to prepare {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to mount overlay at {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("image has no layers")]
    NoLayers,
}

/// Mounts the overlay at `merged`, with `upper`/`work` under `rw_dir`.
pub fn mount_overlay(lower: &[PathBuf], rw_dir: &Path, merged: &Path) -> Result<(), RootfsError> {
    if lower.is_empty() {
        return Err(RootfsError::NoLayers);
    }
    let upper = rw_dir.join("upper");
    let work = rw_dir.join("work");
    for d in [&upper, &work, &merged.to_path_buf()] {
        std::fs::create_dir_all(d).map_err(|source| RootfsError::Dir {
            path: d.clone(),
            source,
        })?;
    }
    let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|source| RootfsError::Mount {
        path: merged.to_path_buf(),
        source,
    })
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub fn is_mounted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != m.dev())
}

/// Unmounts the overlay; already unmounted is fine.
pub fn unmount(merged: &Path) {
    match umount2(merged, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(err) => tracing::warn!(path = %merged.display(), ?err, "failed to unmount rootfs"),
    }
}
