//! The streaming proxy of `/exec`, `/attach` and `/portForward`: the
//! client's HTTP Upgrade (WebSocket or SPDY) is replayed against the CRI
//! streaming URL and, once both sides answered 101, the two connections
//! are spliced byte for byte. The protocol is never looked at, as kubelet's
//! `proxyStream` (pkg/kubelet/server/server.go, UpgradeAwareHandler).

use std::io;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::{Body, text};

/// Why the upstream streaming server could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("invalid streaming url {0:?}")]
    Url(String),
    #[error("failed to connect to the streaming server {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("streaming server request failed")]
    Http(#[source] hyper::Error),
    #[error("failed to build the streaming request")]
    Request(#[source] http::Error),
}

/// Whether the request asks for a protocol upgrade.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && req.headers().contains_key(header::UPGRADE)
}

/// Proxies the upgrade request `req` to `url` (`http://host:port/path`).
pub async fn proxy<B>(req: Request<B>, url: &str) -> Response<Body>
where
    B: Send + 'static,
{
    if !is_upgrade(&req) {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    match try_proxy(req, url).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::warn!(%url, error = %err, "streaming proxy failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
        }
    }
}

async fn try_proxy<B>(mut req: Request<B>, url: &str) -> Result<Response<Body>, UpgradeError>
where
    B: Send + 'static,
{
    let uri: http::Uri = url.parse().map_err(|_| UpgradeError::Url(url.to_owned()))?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority().cloned()) else {
        return Err(UpgradeError::Url(url.to_owned()));
    };
    let mut path = uri.path().to_owned();
    // As UpgradeAwareHandler: the client's query goes along when the
    // location has none (port-forward ports travel there for WebSocket).
    match (uri.query(), req.uri().query()) {
        (Some(q), _) | (None, Some(q)) => {
            path.push('?');
            path.push_str(q);
        }
        (None, None) => {}
    }
    let addr = authority.as_str().to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|source| UpgradeError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(UpgradeError::Http)?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(%err, "streaming upstream connection ended");
        }
    });
    let mut upstream = Request::builder()
        .method(req.method().clone())
        .uri(path)
        .body(Empty::<Bytes>::new())
        .map_err(UpgradeError::Request)?;
    for (name, value) in req.headers() {
        if name != header::HOST && name != header::AUTHORIZATION {
            upstream.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        upstream.headers_mut().insert(header::HOST, host);
    }
    let mut resp = sender
        .send_request(upstream)
        .await
        .map_err(UpgradeError::Http)?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp.map(|b| b.map_err(io::Error::other).boxed()));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let client_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(%err, "upgrade did not complete");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(%err, "streaming connection ended");
        }
    });
    let mut out = Response::new(Empty::<Bytes>::new().map_err(io::Error::other).boxed());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    Ok(out)
}
