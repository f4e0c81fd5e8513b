//! ImageService handlers.
use std::sync::Arc;

use oci_client::secrets::RegistryAuth;
use tonic::{Request, Response, Status};

use super::BoxStream;
use crate::image::ImageRecord;
use crate::proto;
use crate::proto::image_service_server::ImageService;
use crate::runtime::Runtime;

/// Serves `runtime.v1.ImageService`.
pub struct ImageHandler {
    rt: Arc<Runtime>,
}

impl ImageHandler {
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt }
    }
}

fn to_proto(r: &ImageRecord) -> proto::Image {
    let ic = r.config.config().clone().unwrap_or_default();
    let user = ic.user().clone().unwrap_or_default();
    let (uid, username) = match user.split(':').next().unwrap_or("") {
        "" => (None, String::new()),
        u => match u.parse::<i64>() {
            Ok(n) => (Some(proto::Int64Value { value: n }), String::new()),
            Err(_) => (None, u.to_string()),
        },
    };
    proto::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid,
        username,
        spec: Some(proto::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

fn auth_of(a: Option<proto::AuthConfig>) -> RegistryAuth {
    match a {
        Some(a) if !a.username.is_empty() => RegistryAuth::Basic(a.username, a.password),
        Some(a) if !a.registry_token.is_empty() => RegistryAuth::Bearer(a.registry_token),
        _ => RegistryAuth::Anonymous,
    }
}

#[tonic::async_trait]
impl ImageService for ImageHandler {
    type StreamImagesStream = BoxStream<proto::StreamImagesResponse>;

    async fn list_images(
        &self,
        request: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let images = match filter {
            Some(f) => self.rt.images.resolve(&f).into_iter().collect(),
            None => self.rt.images.list(),
        };
        Ok(Response::new(proto::ListImagesResponse {
            images: images.iter().map(to_proto).collect(),
        }))
    }

    async fn stream_images(
        &self,
        _request: Request<proto::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        Err(Status::unimplemented("StreamImages is not implemented"))
    }

    async fn image_status(
        &self,
        request: Request<proto::ImageStatusRequest>,
    ) -> Result<Response<proto::ImageStatusResponse>, Status> {
        let image = request
            .into_inner()
            .image
            .map(|i| i.image)
            .unwrap_or_default();
        Ok(Response::new(proto::ImageStatusResponse {
            image: self.rt.images.resolve(&image).as_ref().map(to_proto),
            info: Default::default(),
        }))
    }

    async fn pull_image(
        &self,
        request: Request<proto::PullImageRequest>,
    ) -> Result<Response<proto::PullImageResponse>, Status> {
        let req = request.into_inner();
        let image = req.image.map(|i| i.image).unwrap_or_default();
        let image_ref = self.rt.images.pull(&image, auth_of(req.auth)).await?;
        Ok(Response::new(proto::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        request: Request<proto::RemoveImageRequest>,
    ) -> Result<Response<proto::RemoveImageResponse>, Status> {
        let image = request
            .into_inner()
            .image
            .map(|i| i.image)
            .unwrap_or_default();
        self.rt.images.remove(&image).await?;
        Ok(Response::new(proto::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<proto::ImageFsInfoRequest>,
    ) -> Result<Response<proto::ImageFsInfoResponse>, Status> {
        let images = self.rt.images.clone();
        let (bytes, inodes) = tokio::task::spawn_blocking(move || images.fs_usage())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let usage = proto::FilesystemUsage {
            timestamp: crate::container::now_nanos(),
            fs_id: Some(proto::FilesystemIdentifier {
                mountpoint: self.rt.images.fs_root().display().to_string(),
            }),
            used_bytes: Some(proto::UInt64Value { value: bytes }),
            inodes_used: Some(proto::UInt64Value { value: inodes }),
        };
        Ok(Response::new(proto::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        }))
    }
}
