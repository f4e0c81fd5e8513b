//! Request routing of the kubelet API: the paths kubelet serves
//! (pkg/kubelet/server/server.go) mapped onto CRI lookups, the log reader,
//! the streaming proxy and the stats.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use cri::proto;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::log_file::{self, Liveness};
use super::logs::LogOptions;
use super::lookup::{self, LookupError, StreamingRequest};
use super::{Body, State, json, stats, text, upgrade};

fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn lookup_error(err: &LookupError) -> Response<Body> {
    match err {
        LookupError::NotFound(msg) => text(StatusCode::NOT_FOUND, msg),
        other => {
            tracing::warn!(error = %other, "kubelet API request failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string())
        }
    }
}

/// Serves one authenticated request.
pub async fn handle<B>(state: Arc<State>, req: Request<B>) -> Response<Body>
where
    B: Send + 'static,
{
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = req.method() == Method::GET;
    let resp = match segs.as_slice() {
        ["healthz", ..] if get => text(StatusCode::OK, "ok"),
        ["pods"] if get => pods(&state, false).await,
        ["runningpods"] if get => pods(&state, true).await,
        ["containerLogs", ns, pod, container] if get => {
            container_logs(&state, &req, ns, pod, container).await
        }
        ["exec" | "attach", ns, pod, container] => {
            stream(&state, req, segs[0] == "exec", ns, pod, None, container).await
        }
        ["exec" | "attach", ns, pod, uid, container] => {
            stream(
                &state,
                req,
                segs[0] == "exec",
                ns,
                pod,
                Some(uid),
                container,
            )
            .await
        }
        ["portForward", ns, pod] => port_forward(&state, req, ns, pod, None).await,
        ["portForward", ns, pod, uid] => port_forward(&state, req, ns, pod, Some(uid)).await,
        ["stats", "summary"] if get => summary(&state).await,
        ["metrics"] if get => metrics(&state).await,
        ["metrics", "resource"] if get => resource_metrics(&state).await,
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    };
    tracing::debug!(%path, code = resp.status().as_u16(), "kubelet API request");
    resp
}

/// `/pods` and `/runningpods/`: the pods CRI knows of, as a PodList.
async fn pods(state: &State, running_only: bool) -> Response<Body> {
    let cri = match state.cri.get().await {
        Ok(c) => c,
        Err(e) => return lookup_error(&e),
    };
    let (sandboxes, containers) =
        match tokio::try_join!(lookup::list_sandboxes(&cri), lookup::list_containers(&cri)) {
            Ok(both) => both,
            Err(e) => return lookup_error(&e),
        };
    let ready = proto::PodSandboxState::SandboxReady as i32;
    let running = proto::ContainerState::ContainerRunning as i32;
    let items: Vec<Value> = sandboxes
        .iter()
        .filter(|s| !running_only || s.state == ready)
        .map(|s| {
            let md = s.metadata.clone().unwrap_or_default();
            let uid = lookup::sandbox_uid(s);
            let mine: Vec<&proto::Container> = containers
                .iter()
                .filter(|c| c.pod_sandbox_id == s.id && (!running_only || c.state == running))
                .collect();
            let specs: Vec<Value> = mine
                .iter()
                .map(|c| {
                    json!({
                        "name": c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                        "image": c.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
                    })
                })
                .collect();
            json!({
                "metadata": {"name": md.name, "namespace": md.namespace, "uid": uid,
                             "creationTimestamp": null},
                "spec": {"containers": specs},
                "status": {"phase": if s.state == ready { "Running" } else { "Unknown" }},
            })
        })
        .collect();
    json(&json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}))
}

/// Asks CRI whether a container still runs.
struct CriLiveness {
    cri: cri::client::CriClient,
    id: String,
}

#[async_trait::async_trait]
impl Liveness for CriLiveness {
    async fn is_live(&self) -> bool {
        lookup::container_status(&self.cri, &self.id)
            .await
            .is_ok_and(|s| lookup::is_live(&s))
    }
}

async fn container_logs<B>(
    state: &State,
    req: &Request<B>,
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let opts = match LogOptions::from_query(&query_pairs(req.uri()), Utc::now()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let cri = match state.cri.get().await {
        Ok(c) => c,
        Err(e) => return lookup_error(&e),
    };
    let found = match lookup::find_container(&cri, ns, pod, None, container, opts.previous).await {
        Ok(c) => c,
        // kubelet answers a missing container with 400 and the reason.
        Err(LookupError::NotFound(msg)) if !msg.ends_with("does not exist") => {
            return text(StatusCode::BAD_REQUEST, &msg);
        }
        Err(e) => return lookup_error(&e),
    };
    let status = match lookup::container_status(&cri, &found.id).await {
        Ok(s) => s,
        Err(e) => return lookup_error(&e),
    };
    if status.log_path.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("container {container:?} in pod {pod:?} has no log file"),
        );
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let live = Box::new(CriLiveness {
        cri,
        id: found.id.clone(),
    });
    let path = std::path::PathBuf::from(&status.log_path);
    tokio::spawn(async move {
        if let Err(err) = log_file::stream(path.clone(), opts, live, tx).await {
            tracing::warn!(path = %path.display(), %err, "failed to read a container log");
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

fn flag(pairs: &[(String, String)], names: &[&str]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true"))
}

/// `/exec` and `/attach`: the CRI streaming URL for the running container,
/// then the upgrade proxied to it.
async fn stream<B>(
    state: &State,
    req: Request<B>,
    exec: bool,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
    container: &str,
) -> Response<Body>
where
    B: Send + 'static,
{
    let q = query_pairs(req.uri());
    // kubelet's own names are input/output/error; the API's are stdin/...
    let stdin = flag(&q, &["input", "stdin"]);
    let stdout = flag(&q, &["output", "stdout"]);
    let stderr = flag(&q, &["error", "stderr"]);
    let tty = flag(&q, &["tty"]);
    let cmd: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if exec && cmd.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 command",
        );
    }
    let cri = match state.cri.get().await {
        Ok(c) => c,
        Err(e) => return lookup_error(&e),
    };
    let found = match lookup::find_container(&cri, ns, pod, uid, container, false).await {
        Ok(c) => c,
        Err(LookupError::NotFound(msg)) if msg.ends_with("does not exist") => {
            return text(StatusCode::NOT_FOUND, "pod does not exist");
        }
        Err(LookupError::NotFound(_)) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("container not found ({container:?})"),
            );
        }
        Err(e) => return lookup_error(&e),
    };
    let request = if exec {
        StreamingRequest::Exec(proto::ExecRequest {
            container_id: found.id,
            cmd,
            tty,
            stdin,
            stdout,
            stderr: stderr && !tty,
        })
    } else {
        StreamingRequest::Attach(proto::AttachRequest {
            container_id: found.id,
            stdin,
            tty,
            stdout,
            stderr: stderr && !tty,
        })
    };
    match lookup::streaming_url(&cri, request).await {
        Ok(url) => upgrade::proxy(req, &url).await,
        Err(e) => lookup_error(&e),
    }
}

/// `/portForward`: the sandbox's CRI port-forward URL, upgrade proxied.
async fn port_forward<B>(
    state: &State,
    req: Request<B>,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
) -> Response<Body>
where
    B: Send + 'static,
{
    let cri = match state.cri.get().await {
        Ok(c) => c,
        Err(e) => return lookup_error(&e),
    };
    let sandbox = match lookup::find_sandbox(&cri, ns, pod, uid).await {
        Ok(Some(s)) => s,
        Ok(None) => return text(StatusCode::NOT_FOUND, "pod does not exist"),
        Err(e) => return lookup_error(&e),
    };
    let request = StreamingRequest::PortForward(proto::PortForwardRequest {
        pod_sandbox_id: sandbox.id,
        port: Vec::new(),
    });
    match lookup::streaming_url(&cri, request).await {
        Ok(url) => upgrade::proxy(req, &url).await,
        Err(e) => lookup_error(&e),
    }
}

fn node_cpu_rate(state: &State, sample: &stats::NodeSample, now: i64) -> Option<u64> {
    let mut last = state.last_cpu.lock().ok()?;
    let rate = stats::nano_cores(*last, (now, sample.cpu_core_nanos));
    *last = Some((now, sample.cpu_core_nanos));
    rate
}

async fn summary(state: &State) -> Response<Body> {
    let now = Utc::now();
    let sample = stats::node_sample();
    let rate = node_cpu_rate(
        state,
        &sample,
        now.timestamp_nanos_opt().unwrap_or_default(),
    );
    let node = stats::node_json(&state.node_name, &sample, rate, &state.root_dir, now);
    let usage = match state.cri.get().await {
        Ok(cri) => stats::container_usage(&cri).await,
        Err(e) => Err(e),
    };
    let pods = match usage {
        Ok(u) => stats::pods_json(&u, now),
        Err(e) => return lookup_error(&e),
    };
    json(&json!({"node": node, "pods": pods}))
}

fn prometheus(body: String) -> Response<Body> {
    let mut resp = Response::new(super::full(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn metrics(state: &State) -> Response<Body> {
    let cri = match state.cri.get().await {
        Ok(c) => c,
        Err(e) => return lookup_error(&e),
    };
    match tokio::try_join!(lookup::list_sandboxes(&cri), lookup::list_containers(&cri)) {
        Ok((s, c)) => {
            let mut text = stats::kubelet_metrics(&state.node_name, &s, &c);
            if let Some(handle) = &state.evictions {
                text += &crate::eviction::render_metrics(&handle.evictions());
            }
            if let Some(counts) = &state.image_gc {
                text += &crate::image_gc::render_metrics(counts);
            }
            prometheus(text)
        }
        Err(e) => lookup_error(&e),
    }
}

async fn resource_metrics(state: &State) -> Response<Body> {
    let sample = stats::node_sample();
    let usage = match state.cri.get().await {
        Ok(cri) => stats::container_usage(&cri).await,
        Err(e) => Err(e),
    };
    match usage {
        Ok(u) => prometheus(stats::resource_metrics(
            &sample,
            &u,
            Utc::now().timestamp_millis(),
        )),
        Err(e) => lookup_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let uri: http::Uri = "/exec/a/b/c?command=echo&command=hi%20there&input=1&x"
            .parse()
            .unwrap();
        let q = query_pairs(&uri);
        assert_eq!(q[1], ("command".into(), "hi there".into()));
        assert!(flag(&q, &["input"]));
        assert!(!flag(&q, &["x"]));
        assert_eq!(decode("a%2Fb%zz+c"), "a/b%zz c");
    }
}
