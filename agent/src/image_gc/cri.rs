//! The image GC manager's runtime over CRI (r8s-cri in-process or any CRI
//! socket such as containerd's): `ListImages`, `ListContainers` (every
//! container, running or exited), `ImageFsInfo` whose mountpoint is
//! statfs'd for capacity and free space (kubelet asks cAdvisor for the
//! same mountpoint), and `RemoveImage`.

use std::collections::HashSet;
use std::path::PathBuf;

use cri::client::CriClient;
use cri::proto;

use super::manager::{FsCapacity, ImageGcError, ImageRuntime};
use super::records::ImageInfo;
use crate::eviction::signals::fs_stats;

/// A CRI runtime's images.
pub struct CriImages {
    pub cri: CriClient,
}

#[async_trait::async_trait]
impl ImageRuntime for CriImages {
    async fn list_images(&self) -> Result<Vec<ImageInfo>, ImageGcError> {
        let images = self
            .cri
            .image
            .clone()
            .list_images(proto::ListImagesRequest { filter: None })
            .await
            .map_err(ImageGcError::ListImages)?
            .into_inner()
            .images;
        Ok(images
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                repo_tags: i.repo_tags,
                repo_digests: i.repo_digests,
                size: i.size,
                pinned: i.pinned,
            })
            .collect())
    }

    async fn images_in_use(&self) -> Result<HashSet<String>, ImageGcError> {
        let containers = self
            .cri
            .runtime
            .clone()
            .list_containers(proto::ListContainersRequest { filter: None })
            .await
            .map_err(ImageGcError::ListContainers)?
            .into_inner()
            .containers;
        Ok(containers
            .into_iter()
            .flat_map(|c| {
                let spec = c.image.map(|i| i.image).unwrap_or_default();
                [c.image_ref, c.image_id, spec]
            })
            .filter(|r| !r.is_empty())
            .collect())
    }

    async fn image_fs(&self) -> Result<FsCapacity, ImageGcError> {
        let info = self
            .cri
            .image
            .clone()
            .image_fs_info(proto::ImageFsInfoRequest {})
            .await
            .map_err(ImageGcError::ImageFsInfo)?
            .into_inner();
        let mountpoint = info
            .image_filesystems
            .first()
            .and_then(|f| f.fs_id.as_ref())
            .map(|id| PathBuf::from(&id.mountpoint))
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or(ImageGcError::NoImageFilesystem)?;
        let path = mountpoint.clone();
        let stats = tokio::task::spawn_blocking(move || fs_stats(&path))
            .await
            .ok()
            .flatten()
            .ok_or(ImageGcError::Statfs(mountpoint))?;
        Ok(FsCapacity {
            capacity: stats.bytes.capacity,
            available: stats.bytes.available,
        })
    }

    async fn remove_image(&self, id: &str) -> Result<(), ImageGcError> {
        self.cri
            .image
            .clone()
            .remove_image(proto::RemoveImageRequest {
                image: Some(proto::ImageSpec {
                    image: id.to_owned(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|source| ImageGcError::RemoveImage {
                id: id.to_owned(),
                source,
            })?;
        Ok(())
    }
}
