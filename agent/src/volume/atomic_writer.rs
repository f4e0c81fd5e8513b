//! kubelet's AtomicWriter: a volume's files are written into a fresh
//! timestamped dir, `..data` is swapped to it with one rename, and the
//! user-visible names are symlinks through `..data`, so readers never see a
//! half-written update.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::jiff::Timestamp;

/// Name of the symlink to the current payload dir.
pub const DATA_DIR_NAME: &str = "..data";
/// Name of the symlink prepared before the swap.
pub const NEW_DATA_DIR_NAME: &str = "..data_tmp";
const MAX_PATH_LENGTH: usize = 4096;
const MAX_FILE_NAME_LENGTH: usize = 255;

/// One file of a volume payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (e.g. 0o644).
    pub mode: u32,
}

/// Relative path -> file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Why a payload could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("invalid path: must not be empty: {0:?}")]
    EmptyPath(String),
    #[error("invalid path: must be relative path: {0}")]
    AbsolutePath(String),
    #[error("invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters")]
    PathTooLong,
    #[error("invalid path: must not contain '..': {0}")]
    DotDot(String),
    #[error(
        "invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
    )]
    NameTooLong,
    #[error("invalid path: must not start with '..': {0}")]
    LeadingDots(String),
    #[error("failed to {step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = WriterError> = std::result::Result<T, E>;

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriterError + use<> {
    let path = path.to_owned();
    move |source| WriterError::Io { step, path, source }
}

/// Checks one payload path as upstream `validatePath`.
pub fn validate_path(target: &str) -> Result<()> {
    if target.is_empty() {
        return Err(WriterError::EmptyPath(target.to_owned()));
    }
    if target.starts_with('/') {
        return Err(WriterError::AbsolutePath(target.to_owned()));
    }
    if target.len() > MAX_PATH_LENGTH {
        return Err(WriterError::PathTooLong);
    }
    let items: Vec<&str> = target.split('/').collect();
    for item in &items {
        if *item == ".." {
            return Err(WriterError::DotDot(target.to_owned()));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(WriterError::NameTooLong);
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return Err(WriterError::LeadingDots(target.to_owned()));
    }
    Ok(())
}

/// `path.Clean` for already-validated relative paths.
fn clean(p: &str) -> String {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn first_component(p: &str) -> &str {
    p.split('/').next().unwrap_or(p)
}

/// Writes payloads atomically into one volume directory.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target_dir: PathBuf,
}

impl AtomicWriter {
    pub fn new(target_dir: impl Into<PathBuf>) -> Self {
        Self {
            target_dir: target_dir.into(),
        }
    }

    /// Makes the directory show exactly `payload`. Returns whether a new
    /// version was written (false when the content was already there).
    pub fn write(&self, payload: &Payload) -> Result<bool> {
        let mut clean_payload = Payload::new();
        for (path, file) in payload {
            validate_path(path)?;
            clean_payload.insert(clean(path), file.clone());
        }
        let data_dir = self.target_dir.join(DATA_DIR_NAME);
        let old_ts_dir = match std::fs::read_link(&data_dir) {
            Ok(target) => Some(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read link", &data_dir)(e)),
        };
        let mut to_remove = BTreeSet::new();
        if let Some(old) = &old_ts_dir {
            let old_path = self.target_dir.join(old);
            to_remove = paths_to_remove(&clean_payload, &old_path)?;
            if !should_write_payload(&clean_payload, &old_path)? && to_remove.is_empty() {
                self.create_user_visible_files(&clean_payload)?;
                return Ok(false);
            }
        }
        let ts_dir = self.new_timestamp_dir()?;
        let ts_name = ts_dir.file_name().map(|n| n.to_owned()).unwrap_or_default();
        write_payload_to_dir(&clean_payload, &ts_dir)?;
        let new_data_dir = self.target_dir.join(NEW_DATA_DIR_NAME);
        match std::fs::remove_file(&new_data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &new_data_dir)(e)),
        }
        symlink(&ts_name, &new_data_dir).map_err(io_err("symlink", &new_data_dir))?;
        std::fs::rename(&new_data_dir, &data_dir).map_err(io_err("rename", &data_dir))?;
        for path in to_remove.iter().filter(|p| !p.contains('/')) {
            let visible = self.target_dir.join(path);
            match std::fs::remove_file(&visible) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &visible)(e)),
            }
        }
        self.create_user_visible_files(&clean_payload)?;
        if let Some(old) = old_ts_dir {
            let old_path = self.target_dir.join(old);
            if let Err(err) = std::fs::remove_dir_all(&old_path) {
                tracing::warn!(path = %old_path.display(), %err, "failed to remove old volume data dir");
            }
        }
        Ok(true)
    }

    fn new_timestamp_dir(&self) -> Result<PathBuf> {
        let now = Timestamp::now();
        let prefix = now.strftime("..%Y_%m_%d_%H_%M_%S.").to_string();
        let seed = now.subsec_nanosecond().unsigned_abs() ^ std::process::id();
        for attempt in 0u32..1000 {
            let path = self.target_dir.join(format!(
                "{prefix}{}",
                seed.wrapping_add(attempt.wrapping_mul(7919))
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .map_err(io_err("chmod", &path))?;
                    return Ok(path);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create", &path)(e)),
            }
        }
        Err(io_err("create a timestamped dir in", &self.target_dir)(
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    fn create_user_visible_files(&self, payload: &Payload) -> Result<()> {
        let tops: BTreeSet<&str> = payload.keys().map(|p| first_component(p)).collect();
        for top in tops {
            let visible = self.target_dir.join(top);
            if std::fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new(DATA_DIR_NAME).join(top), &visible)
                    .map_err(io_err("symlink", &visible))?;
            }
        }
        Ok(())
    }
}

fn should_write_payload(payload: &Payload, old_dir: &Path) -> Result<bool> {
    for (path, file) in payload {
        let full = old_dir.join(path);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(io_err("stat", &full)(e)),
        };
        if meta.permissions().mode() & 0o7777 != file.mode {
            return Ok(true);
        }
        let on_disk = std::fs::read(&full).map_err(io_err("read", &full))?;
        if on_disk != file.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Paths in the old dir that the new payload no longer has (with their
/// parents kept when a new file still lives below them).
fn paths_to_remove(payload: &Payload, old_dir: &Path) -> Result<BTreeSet<String>> {
    let mut old = BTreeSet::new();
    let mut stack = vec![old_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read dir", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("read dir", &dir))?;
            let path = entry.path();
            if let Ok(rel) = path.strip_prefix(old_dir) {
                old.insert(rel.to_string_lossy().into_owned());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    let mut new = BTreeSet::new();
    for file in payload.keys() {
        let mut sub = file.as_str();
        loop {
            new.insert(sub.to_owned());
            match sub.rsplit_once('/') {
                Some((parent, _)) => sub = parent,
                None => break,
            }
        }
    }
    Ok(old.difference(&new).cloned().collect())
}

fn write_payload_to_dir(payload: &Payload, dir: &Path) -> Result<()> {
    for (path, file) in payload {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        std::fs::write(&full, &file.data).map_err(io_err("write", &full))?;
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(file.mode))
            .map_err(io_err("chmod", &full))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: s.as_bytes().to_vec(),
            mode,
        }
    }

    fn payload(items: &[(&str, &str)]) -> Payload {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), file(v, 0o644)))
            .collect()
    }

    #[test]
    fn first_write_creates_data_link_and_visible_links() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        assert!(w.write(&payload(&[("a", "1"), ("sub/b", "2")])).unwrap());
        let data = std::fs::read_link(dir.path().join("..data")).unwrap();
        let ts = data.to_string_lossy().into_owned();
        assert!(ts.starts_with("..20"), "{ts}");
        let (stamp, suffix) = ts[2..].split_once('.').unwrap();
        assert_eq!(stamp.len(), "2024_01_01_00_00_00".len());
        assert!(
            stamp
                .split('_')
                .all(|p| p.chars().all(|c| c.is_ascii_digit()))
        );
        assert!(!suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(
            std::fs::read_link(dir.path().join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sub/b")).unwrap(),
            "2"
        );
        let mode = std::fs::metadata(dir.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn unchanged_payload_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let p = payload(&[("a", "1")]);
        assert!(w.write(&p).unwrap());
        let before = std::fs::read_link(dir.path().join("..data")).unwrap();
        assert!(!w.write(&p).unwrap());
        assert_eq!(
            std::fs::read_link(dir.path().join("..data")).unwrap(),
            before
        );
    }

    #[test]
    fn changes_swap_data_and_drop_removed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        assert!(w.write(&payload(&[("a", "1"), ("b", "2")])).unwrap());
        let old = std::fs::read_link(dir.path().join("..data")).unwrap();
        assert!(w.write(&payload(&[("a", "changed")])).unwrap());
        let new = std::fs::read_link(dir.path().join("..data")).unwrap();
        assert_ne!(old, new);
        assert!(!dir.path().join(&old).exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).unwrap(),
            "changed"
        );
        assert!(std::fs::symlink_metadata(dir.path().join("b")).is_err());
    }

    #[test]
    fn mode_changes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(dir.path());
        let mut p = payload(&[("a", "1")]);
        w.write(&p).unwrap();
        p.get_mut("a").unwrap().mode = 0o400;
        assert!(w.write(&p).unwrap());
        let mode = std::fs::metadata(dir.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
    }

    #[test]
    fn bad_paths_are_rejected_like_kubelet() {
        let msg = |p: &str| validate_path(p).unwrap_err().to_string();
        assert_eq!(
            msg("/etc/passwd"),
            "invalid path: must be relative path: /etc/passwd"
        );
        assert_eq!(msg("a/../b"), "invalid path: must not contain '..': a/../b");
        assert_eq!(
            msg("..data"),
            "invalid path: must not start with '..': ..data"
        );
        assert_eq!(msg(""), "invalid path: must not be empty: \"\"");
        assert!(validate_path("a/b.txt").is_ok());
    }
}
