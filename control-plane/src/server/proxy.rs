//! Subresources served by the kubelet: `pods/log`, `pods/exec`,
//! `pods/attach`, `pods/portforward` and `nodes/proxy`. The pod's node and
//! the Node's address and kubelet port locate the kubelet; the request goes
//! there over TLS with the `kube-apiserver-kubelet-client` certificate.
//! Upgrades (WebSocket, SPDY) are spliced byte for byte once both sides
//! answered 101, as kube-apiserver's UpgradeAwareHandler does.
//!
//! Upstream: pkg/registry/core/pod/strategy.go (LogLocation,
//! streamLocation), pkg/registry/core/node/strategy.go (ResourceLocation).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use super::Api;
use super::route::ResourcePath;
use super::status::ApiError;
use crate::resources;

/// The kubelet paths behind the proxied subresources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Log,
    Exec,
    Attach,
    PortForward,
    NodeProxy,
}

fn kind_of(p: &ResourcePath) -> Option<Kind> {
    if !p.group.is_empty() || p.version != "v1" || p.name.is_none() {
        return None;
    }
    let namespaced = p.namespace.is_some();
    match (p.plural.as_str(), p.subresource.as_deref()?) {
        ("pods", _) if !namespaced => None,
        ("nodes", _) if namespaced => None,
        ("pods", "log") => Some(Kind::Log),
        ("pods", "exec") => Some(Kind::Exec),
        ("pods", "attach") => Some(Kind::Attach),
        ("pods", "portforward") => Some(Kind::PortForward),
        ("nodes", "proxy") => Some(Kind::NodeProxy),
        _ => None,
    }
}

/// Whether the request is for a subresource the kubelet serves.
pub fn is_proxied(p: &ResourcePath) -> bool {
    kind_of(p).is_some()
}

/// Query pairs of a request, decoded.
fn query(uri: &http::Uri) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn flag(q: &[(String, String)], key: &str) -> bool {
    matches!(param(q, key), Some("true" | "1"))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn to_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Serves a proxied subresource request.
pub async fn handle(
    api: &Arc<Api>,
    req: Request<Body>,
    p: &ResourcePath,
) -> Result<Response<Body>, ApiError> {
    let kind = kind_of(p).ok_or_else(ApiError::path_not_found)?;
    let name = p.name.clone().unwrap_or_default();
    let q = query(req.uri());
    if kind == Kind::NodeProxy {
        let rest = node_proxy_rest(req.uri().path(), &name);
        let target = kubelet_of_node(api, &name).await?;
        let mut path = format!("/{rest}");
        if let Some(query) = req.uri().query() {
            path.push('?');
            path.push_str(query);
        }
        return forward(api, req, target, path, Forward::Any, &p.plural, &name).await;
    }
    let ns = p.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let pods = resources::find("", "v1", "pods").ok_or_else(ApiError::path_not_found)?;
    let pod = api.get(pods, Some(&ns), &name).await?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match kind {
        Kind::Log => {
            if req.method() != Method::GET {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            let container = log_container(&pod, &name, param(&q, "container"))?;
            let previous = flag(&q, "previous");
            check_log_status(&pod, &name, &container, previous)?;
            if node.is_empty() {
                // As upstream: an unscheduled pod has an empty log.
                return Ok(text_response(StatusCode::OK, Body::empty()));
            }
            let mut params: Vec<(&str, String)> = Vec::new();
            for key in ["follow", "previous", "timestamps"] {
                if flag(&q, key) {
                    params.push((key, "true".to_owned()));
                }
            }
            for key in ["tailLines", "sinceSeconds", "sinceTime", "limitBytes"] {
                if let Some(v) = param(&q, key) {
                    params.push((key, v.to_owned()));
                }
            }
            let mut path = format!(
                "/containerLogs/{}/{}/{}",
                encode(&ns),
                encode(&name),
                encode(&container)
            );
            if !params.is_empty() {
                path.push('?');
                path.push_str(&to_query(&params));
            }
            let target = kubelet_of_node(api, &node).await?;
            forward(api, req, target, path, Forward::Log, &p.plural, &name).await
        }
        Kind::Exec | Kind::Attach => {
            let container = stream_container(&pod, &name, param(&q, "container"))?;
            if node.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "pod {name} does not have a host assigned"
                )));
            }
            let mut params: Vec<(&str, String)> = Vec::new();
            if kind == Kind::Exec {
                let cmds: Vec<String> = q
                    .iter()
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.clone())
                    .collect();
                if cmds.is_empty() {
                    return Err(ApiError::bad_request("you must specify at least 1 command"));
                }
                params.extend(cmds.into_iter().map(|c| ("command", c)));
            }
            for (api_name, kubelet_name) in [
                ("stdin", "input"),
                ("stdout", "output"),
                ("stderr", "error"),
                ("tty", "tty"),
            ] {
                if flag(&q, api_name) {
                    params.push((kubelet_name, "1".to_owned()));
                }
            }
            let verb = if kind == Kind::Exec { "exec" } else { "attach" };
            let path = format!(
                "/{verb}/{}/{}/{}?{}",
                encode(&ns),
                encode(&name),
                encode(&container),
                to_query(&params)
            );
            let target = kubelet_of_node(api, &node).await?;
            forward(api, req, target, path, Forward::Upgrade, &p.plural, &name).await
        }
        Kind::PortForward => {
            if node.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "pod {name} does not have a host assigned"
                )));
            }
            let mut path = format!("/portForward/{}/{}", encode(&ns), encode(&name));
            if let Some(query) = req.uri().query() {
                path.push('?');
                path.push_str(query);
            }
            let target = kubelet_of_node(api, &node).await?;
            forward(api, req, target, path, Forward::Upgrade, &p.plural, &name).await
        }
        Kind::NodeProxy => Err(ApiError::path_not_found()),
    }
}

/// What follows `/nodes/<name>/proxy/` in the request path.
fn node_proxy_rest<'a>(path: &'a str, name: &str) -> &'a str {
    let marker = format!("/nodes/{name}/proxy");
    path.find(&marker)
        .map(|i| &path[i + marker.len()..])
        .unwrap_or("")
        .trim_start_matches('/')
}

fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn has_container(pod: &Value, name: &str) -> bool {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .any(|f| container_names(pod, f).iter().any(|n| n == name))
}

/// The container of a log request (upstream `validateContainer` for logs).
fn log_container(pod: &Value, pod_name: &str, requested: Option<&str>) -> Result<String, ApiError> {
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if has_container(pod, c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None => {
            let containers = container_names(pod, "containers");
            match containers.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}"
                ))),
                _ => {
                    let all: Vec<String> = ["initContainers", "containers", "ephemeralContainers"]
                        .iter()
                        .flat_map(|f| container_names(pod, f))
                        .collect();
                    Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                        all.join(" ")
                    )))
                }
            }
        }
    }
}

/// The container of an exec/attach request (upstream `streamLocation`).
fn stream_container(
    pod: &Value,
    pod_name: &str,
    requested: Option<&str>,
) -> Result<String, ApiError> {
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if has_container(pod, c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None => {
            let containers = container_names(pod, "containers");
            match containers.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}"
                ))),
                _ => {
                    let mut msg = format!(
                        "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                        containers.join(" ")
                    );
                    let init = container_names(pod, "initContainers");
                    if !init.is_empty() {
                        msg.push_str(&format!(
                            " or one of the init containers: [{}]",
                            init.join(" ")
                        ));
                    }
                    Err(ApiError::bad_request(msg))
                }
            }
        }
    }
}

/// kubelet's `validateContainerLogStatus`, answered from the stored pod
/// status so the message is the same whether or not the kubelet is asked.
fn check_log_status(
    pod: &Value,
    pod_name: &str,
    container: &str,
    previous: bool,
) -> Result<(), ApiError> {
    let status = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .filter_map(|f| {
        pod.pointer(&format!("/status/{f}"))
            .and_then(Value::as_array)
    })
    .flatten()
    .find(|s| s.get("name").and_then(Value::as_str) == Some(container));
    let Some(status) = status else {
        // Nothing reported yet: the kubelet decides.
        return Ok(());
    };
    if previous {
        let terminated = status.pointer("/lastState/terminated");
        if terminated.is_none_or(Value::is_null) {
            return Err(ApiError::bad_request(format!(
                "previous terminated container {container:?} in pod {pod_name:?} not found"
            )));
        }
        return Ok(());
    }
    let running = status
        .pointer("/state/running")
        .is_some_and(|v| !v.is_null());
    let terminated = status
        .pointer("/state/terminated")
        .is_some_and(|v| !v.is_null());
    if running || terminated {
        return Ok(());
    }
    if let Some(waiting) = status.pointer("/state/waiting") {
        let reason = waiting.get("reason").and_then(Value::as_str).unwrap_or("");
        let why = match reason {
            "ErrImagePull" => "image can't be pulled",
            "ImagePullBackOff" => "trying and failing to pull image",
            other => other,
        };
        return Err(ApiError::bad_request(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {why}"
        )));
    }
    Ok(())
}

/// Where a node's kubelet listens.
#[derive(Debug, Clone)]
pub(super) struct Kubelet {
    pub(super) host: String,
    pub(super) port: u16,
}

pub(super) async fn kubelet_of_node(api: &Arc<Api>, node: &str) -> Result<Kubelet, ApiError> {
    let nodes = resources::find("", "v1", "nodes").ok_or_else(ApiError::path_not_found)?;
    let obj = api.get(nodes, None, node).await?;
    let addresses = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // kube-apiserver's default --kubelet-preferred-address-types, IPs first.
    let host = [
        "InternalIP",
        "ExternalIP",
        "Hostname",
        "InternalDNS",
        "ExternalDNS",
    ]
    .iter()
    .find_map(|t| {
        addresses
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .and_then(|a| a.get("address").and_then(Value::as_str))
    })
    .ok_or_else(|| {
        ApiError::bad_request(format!("node {node:?} has no address to reach its kubelet"))
    })?
    .to_owned();
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(10250);
    Ok(Kubelet { host, port })
}

/// The TLS client configuration with the kubelet client certificate.
fn client_config(data_dir: &Path) -> Result<Arc<rustls::ClientConfig>, ApiError> {
    let (cert_path, key_path) = crate::pki::kubelet_client_paths(data_dir);
    let internal = |e: &dyn std::fmt::Display| ApiError::internal(e.to_string());
    let cert_pem = std::fs::read(&cert_path).map_err(|e| internal(&e))?;
    let key_pem = std::fs::read(&key_path).map_err(|e| internal(&e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| internal(&e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| internal(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| internal(&e))?
        .dangerous()
        // Any kubelet serving certificate, as kube-apiserver without
        // `--kubelet-certificate-authority` (kubelets may serve self-signed ones).
        .with_custom_certificate_verifier(Arc::new(agent::insecure_tls::AcceptAnyServerCert(
            provider,
        )))
        .with_client_auth_cert(chain, key)
        .map_err(|e| internal(&e))?;
    // Upgrades need HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// Opens an HTTP/1.1 connection to the kubelet over TLS.
pub(super) async fn connect(api: &Api, target: &Kubelet) -> Result<Sender, ApiError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::new(
            502,
            "InternalError",
            format!(
                "error dialing backend: dial tcp {}:{}: {e}",
                target.host, target.port
            ),
        )
    };
    let tls = client_config(&api.config.data_dir)?;
    let addr = match target.host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", target.port),
        _ => format!("{}:{}", target.host, target.port),
    };
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(target.host.clone()).map_err(|e| unreachable(&e))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| unreachable(&e))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(%err, "kubelet connection ended");
        }
    });
    Ok(sender)
}

/// How a request travels to the kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forward {
    /// A GET whose 2xx body streams back as text/plain; errors become Status.
    Log,
    /// Must be an upgrade (exec, attach, port-forward).
    Upgrade,
    /// Anything: upgrades are spliced, other answers pass through.
    Any,
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && req.headers().contains_key(header::UPGRADE)
}

/// Headers that describe the hop to us, not the request.
fn hop_header(name: &header::HeaderName) -> bool {
    name == header::HOST
        || name == header::AUTHORIZATION
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name.as_str().starts_with("impersonate-")
}

fn text_response(status: StatusCode, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// The Status for a kubelet error answer (upstream
/// GenericHttpResponseChecker): the body text becomes the message.
fn kubelet_error(code: u16, body: &str, plural: &str, name: &str) -> ApiError {
    let text = body.trim_end().to_owned();
    match code {
        400 => ApiError::bad_request(text),
        500 => ApiError::internal(text),
        404 => ApiError::new(
            404,
            "NotFound",
            format!("{plural} \"{name}\" not found: {text}"),
        ),
        other => ApiError::new(other, "InternalError", text),
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    api: &Arc<Api>,
    req: Request<Body>,
    target: Kubelet,
    path: String,
    mode: Forward,
    plural: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let upgrade = is_upgrade(&req);
    if mode == Forward::Upgrade && !upgrade {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let (mut parts, body) = req.into_parts();
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(&path)
        .body(if upgrade || parts.method == Method::GET {
            Body::empty()
        } else {
            body
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
    for (k, v) in &parts.headers {
        if !hop_header(k) {
            out.headers_mut().append(k.clone(), v.clone());
        }
    }
    let host = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    if let Ok(h) = HeaderValue::from_str(&host) {
        out.headers_mut().insert(header::HOST, h);
    }
    let mut sender = connect(api, &target).await?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| ApiError::internal(format!("error sending request to the kubelet: {e}")))?;
    tracing::debug!(%path, code = resp.status().as_u16(), "kubelet answered");
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS && upgrade {
        let kubelet_side = hyper::upgrade::on(&mut resp);
        let client_side = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let Some(client_side) = client_side else {
            return Err(ApiError::bad_request(
                "the connection cannot be upgraded (use HTTP/1.1)",
            ));
        };
        tokio::spawn(async move {
            match tokio::try_join!(client_side, kubelet_side) {
                Ok((client, kubelet)) => {
                    let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
                    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await
                    {
                        tracing::debug!(%err, "proxied stream ended");
                    }
                }
                Err(err) => tracing::debug!(%err, "upgrade did not complete"),
            }
        });
        let mut back = Response::new(Body::empty());
        *back.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *back.headers_mut() = resp.headers().clone();
        return Ok(back);
    }
    let status = resp.status();
    if mode == Forward::Log {
        if !status.is_success() {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(kubelet_error(
                status.as_u16(),
                &String::from_utf8_lossy(&bytes),
                plural,
                name,
            ));
        }
        return Ok(text_response(status, Body::new(resp.into_body())));
    }
    let (rparts, rbody) = resp.into_parts();
    let mut back = Response::new(Body::new(rbody));
    *back.status_mut() = rparts.status;
    for (k, v) in &rparts.headers {
        if k != header::CONNECTION && k != header::TRANSFER_ENCODING {
            back.headers_mut().append(k.clone(), v.clone());
        }
    }
    Ok(back)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"containerStatuses": [
                {"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "b", "state": {"running": {}}, "lastState": {}}
            ]}
        })
    }

    #[test]
    fn container_choice_matches_upstream_messages() {
        let err = log_container(&pod(), "p", None).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        let err = stream_container(&pod(), "p", None).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(
            log_container(&pod(), "p", Some("x")).unwrap_err().message,
            "container x is not valid for pod p"
        );
        assert_eq!(log_container(&pod(), "p", Some("i")).unwrap(), "i");
    }

    #[test]
    fn log_status_explains_waiting_and_missing_previous() {
        assert_eq!(
            check_log_status(&pod(), "p", "a", false)
                .unwrap_err()
                .message,
            "container \"a\" in pod \"p\" is waiting to start: ContainerCreating"
        );
        check_log_status(&pod(), "p", "b", false).unwrap();
        assert_eq!(
            check_log_status(&pod(), "p", "b", true)
                .unwrap_err()
                .message,
            "previous terminated container \"b\" in pod \"p\" not found"
        );
        // No status yet: the kubelet is asked.
        check_log_status(&pod(), "p", "i", false).unwrap();
    }

    #[test]
    fn node_proxy_keeps_the_rest_of_the_path() {
        assert_eq!(
            node_proxy_rest("/api/v1/nodes/n1/proxy/stats/summary", "n1"),
            "stats/summary"
        );
        assert_eq!(node_proxy_rest("/api/v1/nodes/n1/proxy", "n1"), "");
    }

    #[test]
    fn kubelet_queries_are_escaped() {
        assert_eq!(
            to_query(&[("command", "echo hi/x".into()), ("input", "1".into())]),
            "command=echo%20hi%2Fx&input=1"
        );
    }
}
