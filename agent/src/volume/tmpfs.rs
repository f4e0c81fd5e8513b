//! emptyDir with `medium: Memory` (kubelet's emptyDir `setupTmpfs`): a tmpfs
//! on the volume directory, sized by `sizeLimit` or else the node's memory,
//! and the unmounting of every mount under a pod's directory when the pod is
//! removed. Blocking: call from `spawn_blocking`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::EmptyDirVolumeSource;
use nix::mount::{MntFlags, MsFlags};

/// Why a tmpfs could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum TmpfsError {
    #[error("failed to mount tmpfs on {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
}

/// Undoes the octal escapes of mountinfo paths (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points listed in a mountinfo text, in mount order.
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

fn own_mount_points() -> Vec<PathBuf> {
    mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Whether `dir` is a mount point in this mount namespace.
pub fn is_mount_point(dir: &Path) -> bool {
    own_mount_points().iter().any(|p| p == dir)
}

/// The size of a memory-backed emptyDir: its `sizeLimit` when positive,
/// else the node's memory.
pub fn tmpfs_size(src: &EmptyDirVolumeSource) -> u64 {
    src.size_limit
        .as_ref()
        .and_then(|q| crate::quantity::ParsedQuantity::from_quantity(q).ok())
        .and_then(|q| u64::try_from(q.value()).ok())
        .filter(|v| *v > 0)
        .or_else(|| {
            std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| crate::node::host::parse_meminfo_total(&t))
        })
        .unwrap_or(0)
}

/// Mounts a tmpfs of `size` bytes (0: the kernel default) on `dir` unless
/// one is mounted there already.
pub fn ensure_tmpfs(dir: &Path, size: u64) -> Result<bool, TmpfsError> {
    if is_mount_point(dir) {
        return Ok(false);
    }
    let mut options = "mode=0777".to_owned();
    if size > 0 {
        options.push_str(&format!(",size={size}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|source| TmpfsError::Mount {
        path: dir.to_owned(),
        source,
    })?;
    Ok(true)
}

/// Unmounts every mount at or under `dir`, deepest first (lazily, so a
/// mount still in use goes away once released).
pub fn unmount_under(dir: &Path) {
    let mut under: Vec<PathBuf> = own_mount_points()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    under.dedup();
    for p in under {
        if let Err(err) = nix::mount::umount2(&p, MntFlags::MNT_DETACH) {
            tracing::warn!(path = %p.display(), %err, "failed to unmount pod volume");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(
            mount_points(text),
            vec![PathBuf::from("/mnt/a b"), PathBuf::from("/proc")]
        );
    }

    #[test]
    fn size_comes_from_the_limit_or_the_node_memory() {
        let src = EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(Quantity("64Mi".to_owned())),
        };
        assert_eq!(tmpfs_size(&src), 64 << 20);
        assert!(tmpfs_size(&EmptyDirVolumeSource::default()) > 0);
    }

    #[test]
    fn tmpfs_is_mounted_once_and_unmounted_with_the_pod_dir() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: mounting a tmpfs needs root (CI runs as root)");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("volumes/mem");
        std::fs::create_dir_all(&dir).unwrap();
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                unmount_under(&self.0);
            }
        }
        let guard = Unmount(root.path().to_owned());
        assert!(ensure_tmpfs(&dir, 1 << 20).unwrap());
        assert!(!ensure_tmpfs(&dir, 1 << 20).unwrap());
        assert!(is_mount_point(&dir));
        let stat = nix::sys::statfs::statfs(&dir).unwrap();
        assert_eq!(stat.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        unmount_under(root.path());
        assert!(!is_mount_point(&dir));
        drop(guard);
    }
}
