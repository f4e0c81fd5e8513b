//! r8s-cri: a CRI v1 runtime on youki's libcontainer.
//!
//! Flow: `serve` loads persisted state (`runtime::Runtime`), then the gRPC
//! handlers in `service/` call into `image/` (pull, unpack), `sandbox/`
//! (namespaces, pod files), `network/` (bridge, veth, IPAM) and `container/`
//! (OCI spec, libcontainer, logs, stats).

#[cfg(not(feature = "system-allocator"))]
mod alloc;
pub mod client;
pub mod config;
pub mod container;
pub mod fs_usage;
pub mod image;
pub mod logging;
pub mod network;
pub mod runtime;
pub mod sandbox;
pub mod service;
pub mod store;
pub mod streaming;
mod sys;

pub mod proto {
    //! Code generated from the vendored CRI `api.proto` (runtime.v1, cri-api v0.36.3).
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("runtime.v1");
}

use std::sync::Arc;

pub use config::Config;
use tokio_util::sync::CancellationToken;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to prepare directory {path}")]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to load runtime state")]
    Load(#[source] runtime::RuntimeError),
    #[error("failed to bind {path}")]
    Bind {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to bind the streaming server on {addr}")]
    StreamingBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("grpc server failed")]
    Server(#[source] tonic::transport::Error),
}

/// Makes this process the reaper of orphaned descendants, so that exit codes of
/// container inits (whose libcontainer parent exits) reach us. Call it first.
/// The runtime's name and version as CRI `Version` reports them.
pub const RUNTIME_NAME: &str = "r8s-cri";
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn become_subreaper() -> std::io::Result<()> {
    sys::set_child_subreaper()
}

/// Runs the CRI gRPC server on `config.listen` until `shutdown` is cancelled.
///
/// ```no_run
/// # async fn f(config: cri::Config) {
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// cri::serve(config, shutdown).await.unwrap();
/// # }
/// ```
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    // reqwest is built without a default crypto provider; ring is the workspace's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    for dir in [&config.root, &config.state, &config.libcontainer_root()] {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let runtime = Arc::new(
        runtime::Runtime::load(config.clone(), shutdown.clone())
            .await
            .map_err(ServeError::Load)?,
    );
    let (streaming, stream_listener) =
        streaming::bind(config.streaming_address)
            .await
            .map_err(|source| ServeError::StreamingBind {
                addr: config.streaming_address,
                source,
            })?;
    let stream_server = tokio::spawn(streaming::serve(
        stream_listener,
        streaming.clone(),
        runtime.clone(),
        shutdown.clone(),
    ));
    if let Some(parent) = config.listen.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ServeError::Dir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(&config.listen);
    let listener =
        tokio::net::UnixListener::bind(&config.listen).map_err(|source| ServeError::Bind {
            path: config.listen.clone(),
            source,
        })?;
    tracing::info!(listen = %config.listen.display(), "r8s-cri serving");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(proto::runtime_service_server::RuntimeServiceServer::new(
            service::RuntimeHandler::new(runtime.clone(), streaming),
        ))
        .add_service(proto::image_service_server::ImageServiceServer::new(
            service::ImageHandler::new(runtime.clone()),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await
        .map_err(ServeError::Server)?;
    let _ = std::fs::remove_file(&config.listen);
    stream_server.abort();
    tracing::info!("r8s-cri stopped");
    Ok(())
}
