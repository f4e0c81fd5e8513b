//! `/openapi/v2` and `/openapi/v3/...` over HTTP as kube-openapi serves them:
//! the document in the form the `Accept` header picks, an `ETag` (the hash of
//! the bytes served) with `Vary: Accept`, `304 Not Modified` for a matching
//! `If-None-Match`, and for a v3 URL with `?hash=`: cacheable forever when
//! the hash is current, a 301 to the current URL when it is not.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::negotiate;
use super::status::ApiError;

/// `GET /openapi/v2`.
pub async fn v2(headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let accept = header_str(headers, header::ACCEPT);
    let ranges = negotiate::parse_accept(accept);
    let protobuf = crate::openapi::v2_wants_protobuf(ranges.iter().map(|r| r.mime.as_str()))
        .ok_or_else(ApiError::path_not_found)?;
    crate::openapi::ready().await;
    let (body, content_type) = if protobuf {
        let doc = crate::openapi::v2_document_protobuf()
            .await
            .ok_or_else(|| ApiError::internal("the openapi v2 document could not be encoded"))?;
        (doc, crate::openapi::V2_PROTOBUF_CONTENT_TYPE)
    } else {
        (
            crate::openapi::v2_document_json().as_bytes(),
            "application/json",
        )
    };
    let etag = crate::openapi::v2_etag(protobuf)
        .ok_or_else(|| ApiError::internal("the openapi v2 document could not be hashed"))?;
    Ok(document(headers, body, content_type, etag))
}

/// `GET /openapi/v3/<group version>[?hash=...]`.
pub async fn v3(
    headers: &HeaderMap,
    group: &str,
    version: &str,
    hash: Option<&str>,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    crate::openapi::ready().await;
    let (doc, current) = crate::openapi::v3_group_version_json(group, version)
        .ok_or_else(ApiError::path_not_found)?;
    let Some(hash) = hash else {
        return Ok(document(
            headers,
            doc.as_bytes(),
            "application/json",
            current,
        ));
    };
    if hash != current {
        return Ok(moved(&format!("{path}?hash={current}")));
    }
    let mut resp = document(headers, doc.as_bytes(), "application/json", current);
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, immutable"),
    );
    let year = chrono::Utc::now() + chrono::Duration::days(365);
    if let Ok(v) = HeaderValue::from_str(&year.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        h.insert(header::EXPIRES, v);
    }
    Ok(resp)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The document, or 304 when the client's copy is current.
fn document(
    headers: &HeaderMap,
    body: &'static [u8],
    content_type: &'static str,
    etag: &str,
) -> Response<Body> {
    let quoted = format!("\"{etag}\"");
    let fresh = none_match(header_str(headers, header::IF_NONE_MATCH), &quoted);
    let mut resp = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(Bytes::from_static(body)));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(v) = HeaderValue::from_str(header_str(headers, header::ACCEPT)) {
        h.insert("x-varied-accept", v);
    }
    resp
}

/// Whether an `If-None-Match` value names `quoted` (weak comparison, as
/// Go's `http.ServeContent`): a list of entity tags, or `*`.
fn none_match(if_none_match: &str, quoted: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == quoted)
}

fn moved(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        assert!(none_match("\"A\"", "\"A\""));
        assert!(none_match("W/\"A\"", "\"A\""));
        assert!(none_match("\"B\", \"A\"", "\"A\""));
        assert!(none_match("*", "\"A\""));
        assert!(!none_match("\"B\"", "\"A\""));
        assert!(!none_match("", "\"A\""));
        assert!(!none_match("A", "\"A\""));
    }
}
