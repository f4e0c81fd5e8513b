//! Disk usage of a directory tree, as `du` counts it (allocated blocks and inodes, not
//! following symlinks): a container's writable layer in ContainerStats, and the agent's pod
//! volumes and logs for local storage eviction.
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a directory tree holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirUsage {
    /// Bytes of the allocated blocks of its files and directories.
    pub bytes: u64,
    /// Files, directories and links in it, itself included.
    pub inodes: u64,
}

/// The usage of `dir`; zero when it does not exist. Entries that vanish meanwhile are skipped.
pub fn dir_usage(dir: &Path) -> DirUsage {
    let mut usage = DirUsage::default();
    let Ok(root) = dir.symlink_metadata() else {
        return usage;
    };
    add(&mut usage, &root);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            add(&mut usage, &meta);
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    usage
}

fn add(usage: &mut DirUsage, meta: &std::fs::Metadata) {
    // st_blocks is in 512-byte units whatever the block size of the filesystem.
    usage.bytes = usage
        .bytes
        .saturating_add(meta.blocks().saturating_mul(512));
    usage.inodes += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocated_bytes_and_inodes_of_nested_files() {
        let d = tempfile::tempdir().unwrap();
        let empty = dir_usage(d.path());
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/x"), vec![1u8; 64 << 10]).unwrap();
        std::fs::write(d.path().join("a/b/y"), vec![1u8; 64 << 10]).unwrap();
        let u = dir_usage(d.path());
        assert_eq!(u.inodes, 5, "root, a, a/b, a/x, a/b/y");
        assert!(u.bytes >= empty.bytes + (128 << 10), "{u:?}");
        assert_eq!(dir_usage(&d.path().join("missing")), DirUsage::default());
    }

    #[test]
    fn sparse_files_count_what_they_allocate() {
        let d = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(d.path().join("sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        assert!(dir_usage(d.path()).bytes < 1 << 20);
    }
}
