//! The image index: records under `root/images/`, blobs under `root/blobs/sha256/`,
//! unpacked layers under `root/snapshots/<digest hex>/fs`. Lookups by id, tag or digest.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::reference;
use crate::config::Config;
use crate::store::{StoreError, read_dir_json, write_json};

/// Errors of the image service.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {0:?}")]
    InvalidReference(String),
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("failed to pull image {reference}: {message}")]
    Pull { reference: String, message: String },
    #[error("failed to persist image record")]
    Store(#[source] StoreError),
    #[error("failed to remove image files")]
    Remove(#[source] std::io::Error),
}

/// One pulled image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<config digest>`, the CRI image id.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Sum of the compressed layer and config sizes.
    pub size: u64,
    /// Layer digests, bottom layer first.
    pub layers: Vec<String>,
    pub config: ImageConfiguration,
}

type PullFuture = Shared<BoxFuture<'static, Result<String, String>>>;

/// The on-disk image store.
pub struct ImageStore {
    pub(crate) config: Arc<Config>,
    images: RwLock<HashMap<String, ImageRecord>>,
    pulls: Mutex<HashMap<String, PullFuture>>,
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl ImageStore {
    /// Loads the records persisted under `root/images`.
    pub fn load(config: Arc<Config>) -> Self {
        let records: Vec<ImageRecord> = read_dir_json(&config.root.join("images"));
        let images = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        Self {
            config,
            images: RwLock::new(images),
            pulls: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn blob_path(&self, digest: &str) -> PathBuf {
        self.config.root.join("blobs/sha256").join(hex_of(digest))
    }

    pub(crate) fn snapshot_dir(&self, digest: &str) -> PathBuf {
        self.config.root.join("snapshots").join(hex_of(digest))
    }

    /// Directories to stack as overlay lowerdirs, top layer first.
    pub fn lower_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .map(|d| self.snapshot_dir(d).join("fs"))
            .collect()
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.config
            .root
            .join("images")
            .join(format!("{}.json", hex_of(id)))
    }

    /// Finds an image by id (or unique id prefix), tag or repo digest.
    pub fn resolve(&self, image: &str) -> Option<ImageRecord> {
        let images = self.images.read().ok()?;
        let id = if image.starts_with("sha256:") {
            image.to_string()
        } else {
            format!("sha256:{image}")
        };
        if let Some(r) = images.get(&id) {
            return Some(r.clone());
        }
        if let Some(r) = reference::normalize(image) {
            let tag = reference::repo_tag(&r);
            let digest = r.digest().map(|d| reference::repo_digest(&r, d));
            if let Some(found) = images.values().find(|rec| {
                tag.as_ref().is_some_and(|t| rec.repo_tags.contains(t))
                    || digest
                        .as_ref()
                        .is_some_and(|d| rec.repo_digests.contains(d))
            }) {
                return Some(found.clone());
            }
        }
        if image.len() >= 12 && image.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut matches = images.values().filter(|r| hex_of(&r.id).starts_with(image));
            if let (Some(one), None) = (matches.next(), matches.next()) {
                return Some(one.clone());
            }
        }
        None
    }

    /// Every image.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.images
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Pulls `image` (one pull per reference at a time; concurrent callers share it)
    /// and returns the image id.
    pub async fn pull(
        self: &Arc<Self>,
        image: &str,
        auth: oci_client::secrets::RegistryAuth,
    ) -> Result<String, ImageError> {
        let r = reference::normalize(image)
            .ok_or_else(|| ImageError::InvalidReference(image.to_string()))?;
        let key = r.whole();
        let fut = {
            let mut pulls = self.pulls.lock().map_err(|_| ImageError::Pull {
                reference: key.clone(),
                message: "pull table poisoned".into(),
            })?;
            if let Some(f) = pulls.get(&key) {
                f.clone()
            } else {
                let this = self.clone();
                let r2 = r.clone();
                let key2 = key.clone();
                let handle = tokio::spawn(async move {
                    let res = super::pull::pull(&this, &r2, &auth)
                        .await
                        .map_err(|e| format!("{e:#}"));
                    if let Ok(mut pulls) = this.pulls.lock() {
                        pulls.remove(&key2);
                    }
                    res
                });
                let f = async move {
                    handle
                        .await
                        .unwrap_or_else(|e| Err(format!("pull task failed: {e}")))
                }
                .boxed()
                .shared();
                pulls.insert(key.clone(), f.clone());
                f
            }
        };
        fut.await.map_err(|message| ImageError::Pull {
            reference: key,
            message,
        })
    }

    /// Adds or replaces an image record; a tag moves from any older image to this one.
    pub(crate) fn insert(&self, mut record: ImageRecord) -> Result<(), ImageError> {
        let mut images = self
            .images
            .write()
            .map_err(|_| ImageError::NotFound(record.id.clone()))?;
        if let Some(old) = images.get(&record.id) {
            for t in &old.repo_tags {
                if !record.repo_tags.contains(t) {
                    record.repo_tags.push(t.clone());
                }
            }
            for d in &old.repo_digests {
                if !record.repo_digests.contains(d) {
                    record.repo_digests.push(d.clone());
                }
            }
        }
        let mut changed = Vec::new();
        for other in images.values_mut() {
            if other.id != record.id {
                let before = other.repo_tags.len();
                other.repo_tags.retain(|t| !record.repo_tags.contains(t));
                if other.repo_tags.len() != before {
                    changed.push(other.clone());
                }
            }
        }
        for c in changed {
            write_json(&self.record_path(&c.id), &c).map_err(ImageError::Store)?;
        }
        write_json(&self.record_path(&record.id), &record).map_err(ImageError::Store)?;
        images.insert(record.id.clone(), record);
        Ok(())
    }

    /// Removes an image and the blobs and snapshots no other image uses.
    /// Removing an absent image succeeds, as the CRI requires.
    pub async fn remove(&self, image: &str) -> Result<(), ImageError> {
        let Some(record) = self.resolve(image) else {
            return Ok(());
        };
        let (garbage, record_path) = {
            let mut images = self
                .images
                .write()
                .map_err(|_| ImageError::NotFound(image.to_string()))?;
            images.remove(&record.id);
            let used: HashSet<&String> = images.values().flat_map(|r| r.layers.iter()).collect();
            let garbage: Vec<String> = record
                .layers
                .iter()
                .filter(|l| !used.contains(l))
                .cloned()
                .collect();
            (garbage, self.record_path(&record.id))
        };
        let mut paths: Vec<PathBuf> = vec![record_path, self.blob_path(&record.id)];
        for l in &garbage {
            paths.push(self.blob_path(l));
            paths.push(self.snapshot_dir(l));
        }
        tokio::task::spawn_blocking(move || {
            for p in paths {
                let res = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                match res {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ImageError::Remove(e)),
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| ImageError::Remove(std::io::Error::other(e)))?
    }

    /// Bytes and inodes used under `root` by blobs and snapshots.
    pub fn fs_usage(&self) -> (u64, u64) {
        let mut bytes = 0;
        let mut inodes = 0;
        for dir in ["blobs", "snapshots"] {
            du(&self.config.root.join(dir), &mut bytes, &mut inodes);
        }
        (bytes, inodes)
    }

    /// The mountpoint reported for the image filesystem.
    pub fn fs_root(&self) -> &Path {
        &self.config.root
    }
}

fn du(path: &Path, bytes: &mut u64, inodes: &mut u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    *inodes += 1;
    *bytes += meta.blocks() * 512;
    if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for e in entries.flatten() {
            du(&e.path(), bytes, inodes);
        }
    }
}
