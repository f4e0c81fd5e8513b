//! The HTTP edge: authorization, routing of every request path, body
//! reading and decoding, verb selection, response encoding and metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::auth::{self, UserInfo};
use crate::patch::PatchType;
use crate::resources::{self, ResourceType};

use super::negotiate::{self, IncludeObject, Output};
use super::objects::{
    DeleteOptions, FieldValidation, Filter, ListOptions, UpdateMode, WriteOptions,
};
use super::pod_binding::BindingRequest;
use super::route::{self, ResourcePath, Route};
use super::status::{self, ApiError};
use super::watch::WatchRequest;
use super::{Api, discovery, render, reviews};

/// The largest request body accepted, as kube-apiserver's 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Query parameters, in order.
pub struct Params(Vec<(String, String)>);

impl Params {
    fn parse(uri: &http::Uri) -> Self {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| q.0)
            .unwrap_or_default();
        Self(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn json_bytes(code: u16, body: Vec<u8>, content_type: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// A JSON (or YAML) response.
fn respond(code: u16, value: &Value, output: Output) -> Response<Body> {
    if output == Output::Yaml
        && let Ok(s) = serde_yaml::to_string(value)
    {
        return json_bytes(code, s.into_bytes(), "application/yaml");
    }
    json_bytes(
        code,
        serde_json::to_vec(value).unwrap_or_default(),
        "application/json",
    )
}

fn error_response(err: &ApiError) -> Response<Body> {
    respond(err.code, &err.status(), Output::Json)
}

fn text(code: u16, body: String) -> Response<Body> {
    let mut resp = json_bytes(code, body.into_bytes(), "text/plain; charset=utf-8");
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(h) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

/// How much of an oversized body is read (and dropped) before answering 413,
/// so that clients still sending see the Status rather than a reset.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a request body of at most `MAX_BODY` bytes.
async fn read_body(
    mut body: axum::body::Body,
    content_length: Option<u64>,
) -> Result<Bytes, ApiError> {
    let too_large_declared = content_length.is_some_and(|l| l > MAX_BODY as u64);
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let drain = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::bad_request(format!("failed to read the request body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > DRAIN_LIMIT {
                    break;
                }
                if seen <= MAX_BODY && !too_large_declared {
                    buf.extend_from_slice(&data);
                }
            }
        }
        Ok::<(), ApiError>(())
    };
    match tokio::time::timeout(Duration::from_secs(30), drain).await {
        Ok(result) => result?,
        Err(_) => return Err(ApiError::timeout("timed out reading the request body")),
    }
    if too_large_declared || seen > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(buf.freeze())
}

/// What a request is, for metrics.
struct Labels {
    verb: &'static str,
    resource: String,
}

/// Serves one request; `cert_user` is the verified client certificate's user.
pub async fn handle<B>(
    api: Arc<Api>,
    cert_user: Option<UserInfo>,
    req: Request<B>,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let req = req.map(Body::new);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut labels = Labels {
        verb: "GET",
        resource: String::new(),
    };
    let user = match api.auth.authenticate(req.headers(), cert_user).await {
        Ok(user) => user,
        Err(err) => {
            tracing::debug!(%method, %path, %err, "unauthorized");
            return error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"));
        }
    };
    let user = match auth::impersonation::impersonate(&api.auth, req.headers(), user) {
        Ok(user) => user,
        Err(auth::impersonation::ImpersonationError::Forbidden { message, attrs }) => {
            return error_response(&ApiError {
                details: Some(attrs.forbidden_details()),
                ..ApiError::forbidden(message)
            });
        }
        Err(err) => return error_response(&ApiError::bad_request(err.to_string())),
    };
    let routed = route_request(&api, &user, req, &mut labels);
    let resp = match auth::scope_request_user(user.clone(), routed).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    };
    let code = resp.status().as_u16();
    let elapsed = started.elapsed();
    if labels.verb != "WATCH" {
        api.metrics
            .record(labels.verb, &labels.resource, code, elapsed.as_secs_f64());
    } else {
        api.metrics.record(labels.verb, &labels.resource, code, 0.0);
    }
    tracing::debug!(%method, %path, user = %user.username, code, ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX), "request");
    resp
}

async fn route_request(
    api: &Arc<Api>,
    user: &UserInfo,
    req: Request<Body>,
    labels: &mut Labels,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let params = Params::parse(req.uri());
    let attrs = auth::Attributes::from_request(
        req.method(),
        &path,
        params.flag("watch"),
        params.get("fieldSelector"),
    );
    let decision = api.auth.authorize(user, &attrs);
    if !decision.allowed {
        tracing::debug!(user = %user.username, ?attrs, reason = %decision.reason, "forbidden");
        return Err(ApiError {
            details: Some(attrs.forbidden_details()),
            ..ApiError::forbidden(attrs.forbidden_message(&user.username, &decision.reason))
        });
    }
    if let Some(resp) = super::token_request::well_known(api, req.method(), &path)? {
        return Ok(resp);
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let get_only = |m: &Method| {
        if m == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ))
        }
    };
    match route::parse(&path) {
        Route::Root => {
            get_only(req.method())?;
            let mut paths = vec![
                "/api".to_string(),
                "/api/v1".to_string(),
                "/apis".to_string(),
            ];
            for (g, v) in discovery::group_versions() {
                if !g.is_empty() {
                    paths.push(format!("/apis/{g}"));
                    paths.push(format!("/apis/{g}/{v}"));
                }
            }
            paths.extend(
                [
                    "/healthz",
                    "/livez",
                    "/metrics",
                    "/openapi/v2",
                    "/openapi/v3",
                    "/readyz",
                    "/version",
                ]
                .map(String::from),
            );
            Ok(respond(200, &json!({"paths": paths}), Output::Json))
        }
        Route::Health(kind) => Ok(health(api, &kind, &path, params.get("verbose").is_some())),
        Route::Version => Ok(respond(200, &version(), Output::Json)),
        Route::Metrics => {
            get_only(req.method())?;
            count_objects(api).await;
            let mut resp = text(200, api.metrics.encode());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(resp)
        }
        Route::OpenApiV2 => {
            get_only(req.method())?;
            super::openapi_http::v2(req.headers()).await
        }
        Route::OpenApiV3Root => {
            get_only(req.method())?;
            crate::openapi::ready().await;
            Ok(respond(200, &crate::openapi::v3_index(), Output::Json))
        }
        Route::OpenApiV3 { group, version } => {
            get_only(req.method())?;
            let hash = params.get("hash");
            super::openapi_http::v3(req.headers(), &group, &version, hash, &path).await
        }
        Route::CoreVersions | Route::Groups => {
            get_only(req.method())?;
            let core = matches!(route::parse(&path), Route::CoreVersions);
            if let Some(v) = negotiate::aggregated_discovery(&accept) {
                let body = serde_json::to_vec(&discovery::aggregated(core, v)).unwrap_or_default();
                return Ok(json_bytes(
                    200,
                    body,
                    &discovery::aggregated_content_type(v),
                ));
            }
            let doc = if core {
                discovery::core_versions(&api.server_address)
            } else {
                discovery::group_list()
            };
            Ok(respond(200, &doc, Output::Json))
        }
        Route::Group(g) => {
            get_only(req.method())?;
            Ok(respond(
                200,
                &discovery::group(&g).ok_or_else(ApiError::path_not_found)?,
                Output::Json,
            ))
        }
        Route::ResourceList { group, version } => {
            get_only(req.method())?;
            let list =
                discovery::resource_list(&group, &version).ok_or_else(ApiError::path_not_found)?;
            Ok(respond(200, &list, Output::Json))
        }
        Route::Resource(p) => resource_request(api, user, req, p, params, &accept, labels).await,
        Route::NotFound => Err(ApiError::path_not_found()),
    }
}

fn health(api: &Api, kind: &str, path: &str, verbose: bool) -> Response<Body> {
    let ready = api.ready.load(Ordering::SeqCst);
    let ok = kind != "readyz" || ready;
    let sub = path.trim_start_matches('/').split('/').nth(1);
    if let Some(check) = sub {
        let good = match check {
            "poststarthook" => ok,
            _ => true,
        };
        return text(
            if good { 200 } else { 500 },
            if good {
                "ok".into()
            } else {
                "not ready".into()
            },
        );
    }
    if !verbose {
        return text(
            if ok { 200 } else { 500 },
            if ok {
                "ok".into()
            } else {
                format!(
                    "[-]poststarthook/r8s-bootstrap failed: reason withheld\n{kind} check failed"
                )
            },
        );
    }
    let mut body = String::from("[+]ping ok\n[+]log ok\n[+]etcd ok\n");
    if kind == "readyz" {
        body.push_str(if ready {
            "[+]poststarthook/r8s-bootstrap ok\n"
        } else {
            "[-]poststarthook/r8s-bootstrap failed: not finished\n"
        });
    }
    body.push_str(&format!(
        "{kind} check {}\n",
        if ok { "passed" } else { "failed" }
    ));
    text(if ok { 200 } else { 500 }, body)
}

/// `/version`: minor "32", which the kubectl dispatcher maps to its built-in client.
pub fn version() -> Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-r8s",
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, arch),
    })
}

async fn count_objects(api: &Api) {
    let Ok(list) = api.cache.list("/registry/").await else {
        return;
    };
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for kv in &list.items {
        if let Some(plural) = kv
            .key
            .strip_prefix("/registry/")
            .and_then(|k| k.split('/').next())
        {
            *counts.entry(plural).or_default() += 1;
        }
    }
    for r in resources::catalog() {
        api.metrics.set_objects(
            &status::qualified(r),
            counts.get(r.storage_plural).copied().unwrap_or(0),
        );
    }
}

/// The options of a write: `fieldManager` (else the User-Agent's product,
/// as upstream's `prefixFromUserAgent`) and `force` included.
fn write_options(params: &Params, headers: &http::HeaderMap) -> Result<WriteOptions, ApiError> {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let field_manager = match params.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => super::field_manager::clean(m),
        None => super::field_manager::from_user_agent(user_agent),
    };
    Ok(WriteOptions {
        dry_run: params.get("dryRun") == Some("All"),
        validation: FieldValidation::parse(params.get("fieldValidation"))?,
        field_manager: Some(field_manager),
        force: params.flag("force"),
    })
}

fn patch_type(content_type: Option<&str>) -> Result<PatchType, ApiError> {
    let mime = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        _ => Err(ApiError::unsupported_media_type(content_type.unwrap_or(""))),
    }
}

fn not_allowed() -> ApiError {
    ApiError::method_not_allowed("the server does not allow this method on the requested resource")
}

fn require_verb(r: &ResourceType, verb: &str) -> Result<(), ApiError> {
    if r.has_verb(verb) {
        Ok(())
    } else {
        Err(not_allowed())
    }
}

/// A new CSR names its requester, as upstream's CSR strategy: the server
/// sets `spec.username`/`groups` from the authenticated user and clears
/// the status, whatever the client sent.
fn csr_requester(body: &mut Value, user: &UserInfo) {
    if !body.get("spec").is_some_and(Value::is_object) {
        return;
    }
    body["spec"]["username"] = json!(user.username);
    body["spec"]["groups"] = json!(user.groups);
    if let Some(spec) = body["spec"].as_object_mut() {
        spec.remove("uid");
        spec.remove("extra");
    }
    if let Some(obj) = body.as_object_mut() {
        obj.remove("status");
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource_request(
    api: &Arc<Api>,
    user: &UserInfo,
    req: Request<Body>,
    p: ResourcePath,
    params: Params,
    accept: &str,
    labels: &mut Labels,
) -> Result<Response<Body>, ApiError> {
    if super::proxy::is_proxied(&p) {
        labels.resource = p.plural.clone();
        return super::proxy::handle(api, req, &p).await;
    }
    if super::metrics_api::is_metrics(&p) {
        labels.resource = p.plural.clone();
        let out =
            super::metrics_api::handle(api, req.method(), &p, params.get("labelSelector")).await?;
        return Ok(respond(200, &out, Output::Json));
    }
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let method = parts.method;
    labels.resource = p.plural.clone();
    labels.verb = match method {
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "GET",
    };
    // The body's bytes and the format its content type names.
    let read_raw = |body: Body| {
        let ct = content_type.clone();
        async move {
            let bytes = read_body(body, content_length).await?;
            Ok::<_, ApiError>((negotiate::body_format(ct.as_deref())?, bytes))
        }
    };
    let read_value = |body: Body| {
        let raw = read_raw(body);
        async move {
            let (format, bytes) = raw.await?;
            negotiate::decode_body(format, &bytes)
        }
    };
    let read_binding = |body: Body| {
        let raw = read_raw(body);
        async move {
            let (format, bytes) = raw.await?;
            BindingRequest::decode(format, &bytes)
        }
    };
    let output = negotiate::choose_output(accept);
    let include = IncludeObject::parse(params.get("includeObject"));
    let ns = p.namespace.as_deref();

    if let Some(v) = reviews::find(&p.group, &p.version, &p.plural) {
        if method != Method::POST || p.name.is_some() {
            return Err(not_allowed());
        }
        if v.namespaced != ns.is_some() {
            return Err(ApiError::path_not_found());
        }
        if v.plural == "bindings" {
            let binding = read_binding(body).await?;
            let name = binding.metadata.name.as_deref().unwrap_or("");
            api.bind(ns.unwrap_or("default"), name, binding.node())
                .await?;
            return Ok(respond(201, &status::success(json!({})), Output::Json));
        }
        let body = read_value(body).await?;
        let out = reviews::review(&api.auth, v, user, ns, &body)
            .await
            .ok_or_else(ApiError::path_not_found)?;
        return Ok(respond(201, &out, Output::Json));
    }

    let r: &'static ResourceType =
        resources::find(&p.group, &p.version, &p.plural).ok_or_else(ApiError::path_not_found)?;
    if (!r.namespaced && ns.is_some()) || (r.namespaced && ns.is_none() && p.name.is_some()) {
        return Err(ApiError::path_not_found());
    }
    if let Some(sub) = p.subresource.as_deref()
        && !r.has_subresource(sub)
    {
        return Err(ApiError::path_not_found());
    }
    let watch = p.watch_path || params.flag("watch");
    let name = p.name.as_deref();
    match (&method, name, p.subresource.as_deref()) {
        (&Method::GET, None, None) if watch => {
            require_verb(r, "watch")?;
            labels.verb = "WATCH";
            watch_response(api, r, &p, &params, output, include, None).await
        }
        (&Method::GET, Some(n), None) if watch => {
            require_verb(r, "watch")?;
            labels.verb = "WATCH";
            watch_response(api, r, &p, &params, output, include, Some(n.to_string())).await
        }
        (&Method::GET, None, None) => {
            require_verb(r, "list")?;
            labels.verb = "LIST";
            let opts = ListOptions {
                label_selector: params.get("labelSelector").map(str::to_string),
                field_selector: params.get("fieldSelector").map(str::to_string),
                limit: params.get("limit").and_then(|l| l.parse().ok()),
                continue_token: params.get("continue").map(str::to_string),
                resource_version: params.get("resourceVersion").map(str::to_string),
                resource_version_match: params.get("resourceVersionMatch").map(str::to_string),
            };
            let page = api.list(r, ns, &opts).await?;
            Ok(respond(
                200,
                &render::list(r, page, output, include),
                output,
            ))
        }
        (&Method::GET, Some(n), None | Some("status")) => {
            require_verb(r, "get")?;
            let obj = api.get(r, ns, n).await?;
            Ok(respond(
                200,
                &render::object(r, obj, output, include),
                output,
            ))
        }
        (&Method::GET, Some(n), Some("scale")) => {
            Ok(respond(200, &api.get_scale(r, ns, n).await?, plain(output)))
        }
        (&Method::POST, None, None) => {
            require_verb(r, "create")?;
            if r.namespaced && ns.is_none() {
                return Err(not_allowed());
            }
            let mut body = read_value(body).await?;
            if r.group == "certificates.k8s.io" && r.plural == "certificatesigningrequests" {
                csr_requester(&mut body, user);
            }
            let w = api
                .create(r, ns, body, &write_options(&params, &parts.headers)?)
                .await?;
            Ok(with_warnings(
                respond(201, &render::object(r, w.object, output, include), output),
                &w.warnings,
            ))
        }
        (&Method::POST, Some(n), Some("binding")) => {
            let binding = read_binding(body).await?;
            if binding.metadata.name.as_deref() != Some(n) {
                return Err(ApiError::bad_request(
                    "name in URL does not match name in Binding object",
                ));
            }
            api.bind(ns.unwrap_or("default"), n, binding.node()).await?;
            Ok(respond(201, &status::success(json!({})), Output::Json))
        }
        (&Method::POST, Some(n), Some("token")) => {
            let body = read_value(body).await?;
            crate::admission::validate_subresource_create(api, ns, n, "token", &body).await?;
            let out = super::token_request::create(api, ns.unwrap_or("default"), n, &body).await?;
            Ok(respond(201, &out, plain(output)))
        }
        (&Method::POST, Some(n), Some("eviction")) => {
            let body = read_value(body).await?;
            crate::admission::validate_subresource_create(api, ns, n, "eviction", &body).await?;
            let out = api.evict(ns.unwrap_or("default"), n, &body).await?;
            Ok(respond(201, &out, Output::Json))
        }
        (&Method::PUT, Some(n), sub @ (None | Some("status" | "finalize" | "approval"))) => {
            require_verb(r, "update")?;
            let mode = match sub {
                // A CSR's approval conditions live in its status.
                Some("status" | "approval") => UpdateMode::Status,
                Some("finalize") => UpdateMode::Finalize,
                _ => UpdateMode::Main,
            };
            let body = read_value(body).await?;
            let w = api
                .update(
                    r,
                    ns,
                    n,
                    body,
                    mode,
                    &write_options(&params, &parts.headers)?,
                )
                .await?;
            let code = if w.created { 201 } else { 200 };
            Ok(with_warnings(
                respond(code, &render::object(r, w.object, output, include), output),
                &w.warnings,
            ))
        }
        (&Method::PUT, Some(n), Some("scale")) => {
            let body = read_value(body).await?;
            let opts = write_options(&params, &parts.headers)?;
            Ok(respond(
                200,
                &api.update_scale(r, ns, n, None, Some(body), &opts).await?,
                plain(output),
            ))
        }
        (&Method::PATCH, Some(n), sub @ (None | Some("status" | "approval"))) => {
            require_verb(r, "patch")?;
            let pt = patch_type(content_type.as_deref())?;
            let bytes = read_body(body, content_length).await?;
            let patch_body = decode_patch(pt, &bytes)?;
            let mode = if sub.is_some() {
                UpdateMode::Status
            } else {
                UpdateMode::Main
            };
            super::field_manager::validate_patch_options(
                pt,
                params.get("fieldManager"),
                params.get("force"),
            )?;
            let opts = write_options(&params, &parts.headers)?;
            let w = api.patch(r, ns, n, mode, pt, &patch_body, &opts).await?;
            let code = if w.created { 201 } else { 200 };
            Ok(with_warnings(
                respond(code, &render::object(r, w.object, output, include), output),
                &w.warnings,
            ))
        }
        (&Method::PATCH, Some(n), Some("scale")) => {
            let pt = patch_type(content_type.as_deref())?;
            let bytes = read_body(body, content_length).await?;
            let patch_body = decode_patch(pt, &bytes)?;
            super::field_manager::validate_patch_options(
                pt,
                params.get("fieldManager"),
                params.get("force"),
            )?;
            let opts = write_options(&params, &parts.headers)?;
            Ok(respond(
                200,
                &api.update_scale(r, ns, n, Some((pt, &patch_body)), None, &opts)
                    .await?,
                plain(output),
            ))
        }
        (&Method::DELETE, Some(n), None) => {
            require_verb(r, "delete")?;
            let opts = delete_options(&params, body, content_length).await?;
            let (obj, gone) = api.delete(r, ns, n, &opts).await?;
            let returns_object = !gone || matches!(r.plural, "pods" | "namespaces");
            if returns_object {
                return Ok(respond(
                    200,
                    &render::object(r, obj, output, include),
                    output,
                ));
            }
            let uid = obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
            let details = json!({"name": n, "group": r.group, "kind": r.plural, "uid": uid});
            Ok(respond(200, &status::success(details), plain(output)))
        }
        (&Method::DELETE, None, None) => {
            require_verb(r, "deletecollection")?;
            labels.verb = "DELETECOLLECTION";
            let opts = delete_options(&params, body, content_length).await?;
            let list = ListOptions {
                label_selector: params.get("labelSelector").map(str::to_string),
                field_selector: params.get("fieldSelector").map(str::to_string),
                ..Default::default()
            };
            let page = api.delete_collection(r, ns, &list, &opts).await?;
            Ok(respond(
                200,
                &render::list(r, page, plain(output), include),
                plain(output),
            ))
        }
        (_, Some(_), Some(_)) => Err(ApiError::path_not_found()),
        _ => Err(not_allowed()),
    }
}

/// JSON or YAML only (subresource kinds have no table).
fn plain(output: Output) -> Output {
    if output == Output::Yaml {
        Output::Yaml
    } else {
        Output::Json
    }
}

fn decode_patch(pt: PatchType, bytes: &[u8]) -> Result<Value, ApiError> {
    let format = if pt == PatchType::Apply {
        negotiate::BodyFormat::Yaml
    } else {
        negotiate::BodyFormat::Json
    };
    negotiate::decode_body(format, bytes)
}

async fn delete_options(
    params: &Params,
    body: Body,
    content_length: Option<u64>,
) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        grace_period_seconds: params
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok()),
        propagation_policy: params.get("propagationPolicy").map(str::to_string),
        dry_run: params.get("dryRun") == Some("All"),
        ..Default::default()
    };
    let bytes = read_body(body, content_length).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let v = negotiate::decode_body(negotiate::BodyFormat::Json, &bytes)?;
        opts = opts.merge_body(&v);
    }
    Ok(opts)
}

#[allow(clippy::too_many_arguments)]
async fn watch_response(
    api: &Arc<Api>,
    r: &'static ResourceType,
    p: &ResourcePath,
    params: &Params,
    output: Output,
    include: IncludeObject,
    name: Option<String>,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::new(r, params.get("labelSelector"), params.get("fieldSelector"))?;
    let req = WatchRequest {
        resource: r,
        namespace: p.namespace.clone(),
        name,
        filter,
        resource_version: params.get("resourceVersion").map(str::to_string),
        allow_bookmarks: params.flag("allowWatchBookmarks"),
        send_initial_events: params.get("sendInitialEvents").map(|v| v == "true"),
        timeout: params
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs),
        output: if output == Output::Yaml {
            Output::Json
        } else {
            output
        },
        include,
    };
    let rx = api.watch(req).await?;
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}
