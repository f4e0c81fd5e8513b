//! The streaming HTTP server: `/{exec,attach,portforward}/{token}` (GET or
//! POST), consuming the token and upgrading the connection to a WebSocket
//! channel protocol, a WebSocket-tunnelled SPDY connection or plain SPDY/3.1.
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

use super::remotecommand::{self, SessionIo};
use super::spdy::{Connection, Role};
use super::token::StreamRequest;
use super::ws_exec::{self, Streams};
use super::{Streaming, portforward, spdy_exec, transport};
use crate::container::exec::StreamOptions;
use crate::runtime::Runtime;

type Reply = Response<Full<Bytes>>;

const STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";
const ACCEPTED_STREAM_PROTOCOL_VERSIONS: &str = "x-accepted-stream-protocol-versions";

fn text(status: StatusCode, msg: impl Into<String>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(format!("{}\n", msg.into()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// All values of a header, comma lists split.
fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    values(headers, name.as_str())
        .iter()
        .any(|v| v.to_ascii_lowercase().contains(token))
}

fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

/// Accepts a WebSocket upgrade with `protocol` (empty: none).
fn websocket_accept(headers: &HeaderMap, protocol: &str) -> Result<Reply, Box<Reply>> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Box::new(text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")))?;
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| Box::new(text(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key")))?;
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if !protocol.is_empty() {
        let p = HeaderValue::from_str(protocol)
            .map_err(|_| Box::new(text(StatusCode::BAD_REQUEST, "bad protocol")))?;
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(r)
}

/// httpstream.Handshake plus the SPDY upgrade response: returns the protocol.
fn spdy_accept(
    headers: &HeaderMap,
    supported: &[&'static str],
) -> Result<(&'static str, Reply), Box<Reply>> {
    let offered = values(headers, STREAM_PROTOCOL_VERSION);
    if offered.is_empty() {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        )));
    }
    let Some(protocol) = offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
    else {
        let mut r = text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
            ),
        );
        for s in supported {
            r.headers_mut().append(
                ACCEPTED_STREAM_PROTOCOL_VERSIONS,
                HeaderValue::from_static(s),
            );
        }
        return Err(Box::new(r));
    };
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "spdy/3.1")
    {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        )));
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(STREAM_PROTOCOL_VERSION, HeaderValue::from_static(protocol));
    Ok((protocol, r))
}

/// Routes one request.
pub async fn handle(
    mut req: Request<Incoming>,
    streaming: Arc<Streaming>,
    rt: Arc<Runtime>,
) -> Result<Reply, Infallible> {
    if req.method() != http::Method::GET && req.method() != http::Method::POST {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
        return Ok(text(StatusCode::NOT_FOUND, "404 page not found"));
    };
    if !matches!(kind, "exec" | "attach" | "portforward") || token.contains('/') {
        return Ok(text(StatusCode::NOT_FOUND, "404 page not found"));
    }
    let Some(request) = streaming.cache.consume(token) else {
        return Ok(text(StatusCode::NOT_FOUND, "404 page not found"));
    };
    if request.kind() != kind {
        return Ok(text(StatusCode::BAD_REQUEST, "invalid request type"));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let headers = req.headers().clone();
    let reply = match request {
        StreamRequest::Exec(e) => {
            let streams = Streams {
                stdin: e.stdin,
                stdout: e.stdout,
                stderr: e.stderr && !e.tty,
                tty: e.tty,
            };
            let opts = StreamOptions {
                stdin: e.stdin,
                tty: e.tty,
            };
            let cmd = e.cmd.clone();
            let run = move |io: SessionIo| {
                let start = async move { rt.start_exec(&e.container_id, e.cmd, opts).await };
                remotecommand::exec_session(start, cmd, io)
            };
            remote_command(&headers, upgrade, streams, run)
        }
        StreamRequest::Attach(a) => {
            let streams = Streams {
                stdin: a.stdin,
                stdout: a.stdout,
                stderr: a.stderr && !a.tty,
                tty: a.tty,
            };
            let run =
                move |io: SessionIo| async move { rt.attach_session(&a.container_id, io).await };
            remote_command(&headers, upgrade, streams, run)
        }
        StreamRequest::PortForward(p) => match rt.port_forward_target(&p.pod_sandbox_id).await {
            Ok(target) => port_forward(&headers, upgrade, target),
            Err(err) => text(StatusCode::NOT_FOUND, err.to_string()),
        },
    };
    Ok(reply)
}

fn remote_command<F, Fut>(
    headers: &HeaderMap,
    upgrade: OnUpgrade,
    streams: Streams,
    run: F,
) -> Reply
where
    F: FnOnce(SessionIo) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if is_websocket(headers) {
        let offered = values(headers, header::SEC_WEBSOCKET_PROTOCOL.as_str());
        let Some(protocol) = ws_exec::negotiate(&offered) else {
            return text(
                StatusCode::FORBIDDEN,
                format!("requested protocol(s) are not supported: {offered:?}"),
            );
        };
        let reply = match websocket_accept(headers, protocol.name) {
            Ok(r) => r,
            Err(r) => return *r,
        };
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), WsRole::Server, None)
                .await;
            ws_exec::serve(ws, protocol, streams, run).await;
        });
        return reply;
    }
    let (protocol, reply) = match spdy_accept(headers, spdy_exec::PROTOCOLS) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let (input, output) = transport::upgraded(upgraded);
        let (conn, incoming) = Connection::start(input, output, Role::Server);
        spdy_exec::serve(conn, incoming, protocol, streams, run).await;
    });
    reply
}

fn port_forward(headers: &HeaderMap, upgrade: OnUpgrade, target: portforward::Target) -> Reply {
    if is_websocket(headers) {
        let offered = values(headers, header::SEC_WEBSOCKET_PROTOCOL.as_str());
        if !offered.iter().any(|p| p == portforward::TUNNEL_PROTOCOL) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("requested protocol(s) are not supported: {offered:?}"),
            );
        }
        let reply = match websocket_accept(headers, portforward::TUNNEL_PROTOCOL) {
            Ok(r) => r,
            Err(r) => return *r,
        };
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), WsRole::Server, None)
                .await;
            let (input, output) = transport::websocket(ws);
            let (conn, incoming) = Connection::start(input, output, Role::Server);
            portforward::serve(conn, incoming, target).await;
        });
        return reply;
    }
    let reply = match spdy_accept(headers, &[portforward::PROTOCOL]) {
        Ok((_, r)) => r,
        Err(r) => return *r,
    };
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let (input, output) = transport::upgraded(upgraded);
        let (conn, incoming) = Connection::start(input, output, Role::Server);
        portforward::serve(conn, incoming, target).await;
    });
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn spdy_handshake_picks_the_first_offered_supported_protocol() {
        let h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v5.channel.k8s.io"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v3.channel.k8s.io"),
        ]);
        let (p, r) = spdy_accept(&h, spdy_exec::PROTOCOLS).unwrap();
        assert_eq!(p, "v4.channel.k8s.io");
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            r.headers()["x-stream-protocol-version"],
            "v4.channel.k8s.io"
        );
    }

    #[test]
    fn spdy_handshake_without_a_common_protocol_is_forbidden() {
        let h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v9.channel.k8s.io"),
        ]);
        let r = spdy_accept(&h, &[portforward::PROTOCOL]).unwrap_err();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            r.headers()[ACCEPTED_STREAM_PROTOCOL_VERSIONS],
            "portforward.k8s.io"
        );
    }

    #[test]
    fn websocket_accept_echoes_the_protocol_and_key() {
        let h = headers(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]);
        let r = websocket_accept(&h, "v5.channel.k8s.io").unwrap();
        assert_eq!(
            r.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(r.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
    }
}
