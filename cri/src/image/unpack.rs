//! Unpacks one layer tarball (plain or gzip) into its own snapshot directory,
//! turning OCI whiteouts into overlayfs ones (0/0 char devices, opaque xattr).
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

/// Errors of unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("failed to read layer {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to unpack entry {entry}")]
    Entry {
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer entry {0} escapes the layer root")]
    Unsafe(String),
    #[error("failed to create whiteout {path}")]
    Whiteout {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unsupported layer compression (only gzip and plain tar)")]
    Compression,
}

const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// Unpacks the layer blob at `blob` into `dest` (which must exist and be empty).
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<(), UnpackError> {
    let read_err = |source| UnpackError::Read {
        path: blob.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(File::open(blob).map_err(read_err)?);
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(read_err)?;
    drop(file);
    let file = BufReader::new(File::open(blob).map_err(read_err)?);
    let reader: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(GzDecoder::new(file)),
        [0x28, 0xb5, 0x2f, 0xfd] => return Err(UnpackError::Compression),
        _ => Box::new(file),
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    archive.set_preserve_mtime(true);
    let entries = archive.entries().map_err(read_err)?;
    for entry in entries {
        let mut entry = entry.map_err(read_err)?;
        let path = entry.path().map_err(read_err)?.into_owned();
        let name = path.to_string_lossy().to_string();
        let file_name = path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        if file_name == OPAQUE || file_name.starts_with(WHITEOUT_PREFIX) {
            let parent = safe_join(dest, path.parent().unwrap_or(Path::new("")))
                .ok_or_else(|| UnpackError::Unsafe(name.clone()))?;
            std::fs::create_dir_all(&parent).map_err(|source| UnpackError::Entry {
                entry: name.clone(),
                source,
            })?;
            if file_name == OPAQUE {
                xattr::set(&parent, "trusted.overlay.opaque", b"y").map_err(|source| {
                    UnpackError::Entry {
                        entry: name.clone(),
                        source,
                    }
                })?;
            } else {
                let target = parent.join(&file_name[WHITEOUT_PREFIX.len()..]);
                let _ = std::fs::remove_file(&target);
                mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|source| {
                    UnpackError::Whiteout {
                        path: target,
                        source,
                    }
                })?;
            }
            continue;
        }
        entry.unpack_in(dest).map_err(|source| UnpackError::Entry {
            entry: name,
            source,
        })?;
    }
    Ok(())
}

/// Joins a relative archive path onto `root`, refusing `..` and absolute components.
fn safe_join(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn layer(dir: &Path, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> PathBuf {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let data = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let p = dir.join("layer.tar.gz");
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        p
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    #[test]
    fn whiteouts_become_overlay_char_devices_and_opaque_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let blob = layer(tmp.path(), |b| {
            file(b, "etc/.wh.passwd", 0o644, b"");
            file(b, "var/.wh..wh..opq", 0o644, b"");
            file(b, "bin/tool", 0o755, b"#!/bin/sh\n");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_link(&mut h, "bin/link", "tool").unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_link(&mut h, "bin/hard", "bin/tool").unwrap();
        });
        let dest = tmp.path().join("fs");
        std::fs::create_dir(&dest).unwrap();
        unpack_layer(&blob, &dest).unwrap();
        let wh = std::fs::symlink_metadata(dest.join("etc/passwd")).unwrap();
        assert!(wh.file_type().is_char_device());
        if let Ok(Some(v)) = xattr::get(dest.join("var"), "trusted.overlay.opaque") {
            assert_eq!(v, b"y");
        }
        let tool = std::fs::metadata(dest.join("bin/tool")).unwrap();
        assert_eq!(tool.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(dest.join("bin/link")).unwrap(),
            Path::new("tool")
        );
        assert_eq!(
            std::fs::read(dest.join("bin/hard")).unwrap(),
            b"#!/bin/sh\n"
        );
    }

    #[test]
    fn parent_dir_whiteout_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(safe_join(tmp.path(), Path::new("../x")).is_none());
        assert!(safe_join(tmp.path(), Path::new("a/./b")).is_some());
    }
}
