//! CRI client side: connects to a CRI endpoint (`unix:///run/r8s/cri.sock`
//! or a plain socket path, as kubelet's `--container-runtime-endpoint`
//! accepts) and hands out the generated runtime and image clients. Used by
//! the agent and by tests; works against r8s-cri and containerd alike.

use std::path::{Path, PathBuf};

use tonic::transport::Channel;

use crate::proto::image_service_client::ImageServiceClient;
use crate::proto::runtime_service_client::RuntimeServiceClient;

/// Why connecting to a CRI endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported CRI endpoint {0:?}: only unix sockets are supported")]
    Scheme(String),
    #[error("failed to connect to the CRI endpoint {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The socket path of a CRI endpoint: `unix:///path` or `/path`.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ConnectError> {
    if let Some(rest) = endpoint.strip_prefix("unix://") {
        return Ok(PathBuf::from(rest));
    }
    if endpoint.starts_with('/') {
        return Ok(PathBuf::from(endpoint));
    }
    Err(ConnectError::Scheme(endpoint.to_owned()))
}

/// Both CRI services over one connection (cheap to clone).
#[derive(Clone, Debug)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

/// Connects to the CRI unix socket at `path`. The channel reconnects by itself
/// when the runtime restarts.
pub async fn connect_path(path: &Path) -> Result<CriClient, ConnectError> {
    let socket = path.to_path_buf();
    // The URI is required by tonic but never dialled: the connector below
    // always opens the unix socket.
    let channel = tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|source| ConnectError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(CriClient {
        runtime: RuntimeServiceClient::new(channel.clone()),
        image: ImageServiceClient::new(channel),
    })
}

/// Connects to a CRI endpoint given as kubelet's `--container-runtime-endpoint`.
pub async fn connect(endpoint: &str) -> Result<CriClient, ConnectError> {
    connect_path(&socket_path(endpoint)?).await
}

impl CriClient {
    /// Stops and removes every pod sandbox the runtime has, and so their
    /// containers (cleanup for tests and tools). Returns how many were removed.
    pub async fn remove_all_sandboxes(&self) -> Result<usize, tonic::Status> {
        let mut rt = self.runtime.clone();
        let list = rt
            .list_pod_sandbox(crate::proto::ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items;
        for s in &list {
            rt.stop_pod_sandbox(crate::proto::StopPodSandboxRequest {
                pod_sandbox_id: s.id.clone(),
            })
            .await?;
            rt.remove_pod_sandbox(crate::proto::RemovePodSandboxRequest {
                pod_sandbox_id: s.id.clone(),
            })
            .await?;
        }
        Ok(list.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets() {
        assert_eq!(
            socket_path("unix:///run/r8s/cri.sock").unwrap(),
            PathBuf::from("/run/r8s/cri.sock")
        );
        assert_eq!(
            socket_path("/run/containerd/containerd.sock").unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert!(matches!(
            socket_path("tcp://127.0.0.1:1234"),
            Err(ConnectError::Scheme(_))
        ));
    }
}
