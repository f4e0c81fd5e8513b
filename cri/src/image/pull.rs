//! Pulling one image: manifest (index resolved to linux/amd64 by oci-client), then
//! the config and layer blobs into the content store (digest checked, deduplicated),
//! then each layer unpacked once into its snapshot directory.
use std::io::Read;
use std::path::Path;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::info;

use super::reference;
use super::store::{ImageRecord, ImageStore};

/// Errors of one pull.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("registry request failed")]
    Registry(#[source] oci_client::errors::OciDistributionError),
    #[error("failed to create the registry client")]
    Client(#[source] oci_client::errors::OciDistributionError),
    #[error("failed to write blob {digest}")]
    Write {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} has digest {actual}")]
    DigestMismatch { digest: String, actual: String },
    #[error("invalid image config")]
    Config(#[source] serde_json::Error),
    #[error("failed to unpack layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: super::unpack::UnpackError,
    },
    #[error("failed to record image")]
    Record(#[source] super::store::ImageError),
    #[error("background task failed")]
    Join(#[source] tokio::task::JoinError),
}

pub(crate) async fn pull(
    store: &ImageStore,
    r: &Reference,
    auth: &RegistryAuth,
) -> Result<String, PullError> {
    let started = std::time::Instant::now();
    let registry = r.resolve_registry().to_string();
    let protocol = if store.config.is_insecure(&registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    // Not `Client::new`: on error it falls back to a default client whose
    // construction panics (e.g. a host without CA certificates).
    let client = Client::try_from(ClientConfig {
        protocol,
        ..Default::default()
    })
    .map_err(PullError::Client)?;
    info!(image = %r.whole(), "pulling image");
    let (manifest, manifest_digest) = client
        .pull_image_manifest(r, auth)
        .await
        .map_err(PullError::Registry)?;
    let mut size = 0u64;
    for desc in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
        size += u64::try_from(desc.size).unwrap_or(0);
        fetch_blob(store, &client, r, desc).await?;
    }
    let config_bytes = tokio::fs::read(store.blob_path(&manifest.config.digest))
        .await
        .map_err(|source| PullError::Write {
            digest: manifest.config.digest.clone(),
            source,
        })?;
    let config = serde_json::from_slice(&config_bytes).map_err(PullError::Config)?;
    for layer in &manifest.layers {
        let dir = store.snapshot_dir(&layer.digest);
        if dir.join("fs").is_dir() {
            continue;
        }
        let blob = store.blob_path(&layer.digest);
        let digest = layer.digest.clone();
        tokio::task::spawn_blocking(move || unpack_snapshot(&blob, &dir))
            .await
            .map_err(PullError::Join)?
            .map_err(|source| PullError::Unpack { digest, source })?;
    }
    let record = ImageRecord {
        id: manifest.config.digest.clone(),
        repo_tags: reference::repo_tag(r).into_iter().collect(),
        repo_digests: vec![reference::repo_digest(r, &manifest_digest)],
        size,
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        config,
    };
    let id = record.id.clone();
    store.insert(record).map_err(PullError::Record)?;
    info!(image = %r.whole(), %id, size, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
    Ok(id)
}

/// Unpacks into a temporary directory first so a crash never leaves a half snapshot.
fn unpack_snapshot(blob: &Path, dir: &Path) -> Result<(), super::unpack::UnpackError> {
    let io = |source| super::unpack::UnpackError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let tmp = dir.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(tmp.join("fs")).map_err(io)?;
    if let Err(e) = super::unpack::unpack_layer(blob, &tmp.join("fs")) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // A concurrent pull of another image sharing this layer won the race.
        Err(_) if dir.join("fs").is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

async fn fetch_blob(
    store: &ImageStore,
    client: &Client,
    r: &Reference,
    desc: &OciDescriptor,
) -> Result<(), PullError> {
    let path = store.blob_path(&desc.digest);
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        tracing::debug!(digest = %desc.digest, "blob already present");
        return Ok(());
    }
    let werr = |source| PullError::Write {
        digest: desc.digest.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(werr)?;
    }
    let tmp = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(werr)?;
    let res = client.pull_blob(r, desc, &mut file).await;
    if let Err(e) = res {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(PullError::Registry(e));
    }
    file.flush().await.map_err(werr)?;
    drop(file);
    let tmp2 = tmp.clone();
    let actual = tokio::task::spawn_blocking(move || sha256_file(&tmp2))
        .await
        .map_err(PullError::Join)?
        .map_err(werr)?;
    if actual != desc.digest {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(PullError::DigestMismatch {
            digest: desc.digest.clone(),
            actual,
        });
    }
    tokio::fs::rename(&tmp, &path).await.map_err(werr)?;
    info!(digest = %desc.digest, size = desc.size, "fetched blob");
    Ok(())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
