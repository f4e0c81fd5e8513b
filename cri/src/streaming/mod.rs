//! The CRI streaming server, as kubelet's `k8s.io/kubelet/pkg/cri/streaming`
//! and containerd run it: the Exec/Attach/PortForward RPCs store the request
//! under a single-use token and return `http://<addr>/<kind>/<token>`; the
//! client (kubelet proxying kubectl, or crictl) upgrades that URL to a
//! WebSocket or SPDY connection (`http`), which runs the session
//! (`remotecommand`, `portforward`).
pub mod http;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod spdy_exec;
pub mod token;
pub mod transport;
pub mod ws_exec;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use token::{RequestCache, StreamRequest, TokenError};

use crate::runtime::Runtime;

/// The shared state of the streaming server: its URL and pending tokens.
pub struct Streaming {
    cache: RequestCache,
    base_url: String,
}

impl Streaming {
    /// Registers `request` and returns the URL its client must open.
    pub fn url(&self, request: StreamRequest) -> Result<String, TokenError> {
        let kind = request.kind();
        let token = self.cache.insert(request)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }
}

/// Binds the streaming server's listener; an unspecified address is
/// advertised as loopback (kubelet on the same host is the client).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(Arc<Streaming>, TcpListener)> {
    let listener = TcpListener::bind(addr).await?;
    let mut local = listener.local_addr()?;
    if local.ip().is_unspecified() {
        local.set_ip(match local.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let streaming = Arc::new(Streaming {
        cache: RequestCache::default(),
        base_url: format!("http://{local}"),
    });
    Ok((streaming, listener))
}

/// Serves streaming connections until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    streaming: Arc<Streaming>,
    rt: Arc<Runtime>,
    shutdown: CancellationToken,
) {
    tracing::info!(url = %streaming.base_url, "streaming server listening");
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(?err, "streaming accept failed");
                    continue;
                }
            },
        };
        let (streaming, rt) = (streaming.clone(), rt.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                http::handle(req, streaming.clone(), rt.clone())
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, ?err, "streaming connection ended with an error");
            }
        });
    }
}

/// An error and its sources, joined as Go's wrapped errors read.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}
