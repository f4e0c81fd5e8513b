//! Blocking reads of a test cluster's CRI runtime (its in-process r8s-cri,
//! at `Cluster::cri_socket`), for scenarios that check what the agent did
//! below the API: images, containers, sandboxes.
use std::path::Path;

use cri::proto;

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// The repo tags of every image the runtime has.
pub fn image_tags(socket: &Path) -> anyhow::Result<Vec<String>> {
    block_on(async {
        let cri = cri::client::connect_path(socket).await?;
        let images = cri
            .image
            .clone()
            .list_images(proto::ListImagesRequest { filter: None })
            .await?
            .into_inner()
            .images;
        Ok(images.into_iter().flat_map(|i| i.repo_tags).collect())
    })
}

/// Every container the runtime has.
pub fn containers(socket: &Path) -> anyhow::Result<Vec<proto::Container>> {
    block_on(async {
        let cri = cri::client::connect_path(socket).await?;
        Ok(cri
            .runtime
            .clone()
            .list_containers(proto::ListContainersRequest { filter: None })
            .await?
            .into_inner()
            .containers)
    })
}

/// The sandboxes of the pod named `name` (kubelet's `io.kubernetes.pod.name` label).
pub fn pod_sandboxes(socket: &Path, name: &str) -> anyhow::Result<Vec<proto::PodSandbox>> {
    block_on(async {
        let cri = cri::client::connect_path(socket).await?;
        let filter = proto::PodSandboxFilter {
            label_selector: [("io.kubernetes.pod.name".to_owned(), name.to_owned())].into(),
            ..Default::default()
        };
        Ok(cri
            .runtime
            .clone()
            .list_pod_sandbox(proto::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await?
            .into_inner()
            .items)
    })
}
