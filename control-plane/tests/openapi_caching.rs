//! HTTP caching of the OpenAPI documents, as kube-openapi serves them, on a
//! real r8s-server: `/openapi/v2` has an ETag per form (JSON, protobuf) with
//! `Vary: Accept` and answers a matching `If-None-Match` with 304; a v3
//! document under its current `?hash=` is cacheable forever, under an old
//! hash it redirects (301) to the current URL.

mod common;

use common::Server;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use kube::client::Body;

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

async fn get(client: &kube::Client, path: &str, headers: &[(header::HeaderName, &str)]) -> Reply {
    let mut req = Request::get(path);
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    let resp = client
        .send(req.body(Body::empty()).expect("request"))
        .await
        .expect("send");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn header_of(reply: &Reply, name: header::HeaderName) -> &str {
    reply
        .headers
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} in {:?}", reply.headers))
}

const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

#[tokio::test(flavor = "multi_thread")]
async fn openapi_documents_carry_etags_and_v3_hash_urls_are_immutable() {
    let s = Server::start();
    let client = s.client().await;

    let json = get(
        &client,
        "/openapi/v2",
        &[(header::ACCEPT, "application/json")],
    )
    .await;
    assert_eq!(json.status, StatusCode::OK);
    let json_etag = header_of(&json, header::ETAG).to_owned();
    assert!(
        json_etag.starts_with('"') && json_etag.ends_with('"'),
        "{json_etag}"
    );
    assert_eq!(header_of(&json, header::VARY), "Accept");
    assert!(json.body.starts_with(b"{"));

    let again = get(
        &client,
        "/openapi/v2",
        &[
            (header::ACCEPT, "application/json"),
            (header::IF_NONE_MATCH, &json_etag),
        ],
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(header_of(&again, header::ETAG), json_etag);

    let proto = get(&client, "/openapi/v2", &[(header::ACCEPT, PROTOBUF)]).await;
    assert_eq!(proto.status, StatusCode::OK);
    let proto_etag = header_of(&proto, header::ETAG).to_owned();
    assert_ne!(proto_etag, json_etag, "each form has its own tag");
    // The JSON form's tag does not match the protobuf form.
    let stale = get(
        &client,
        "/openapi/v2",
        &[
            (header::ACCEPT, PROTOBUF),
            (header::IF_NONE_MATCH, &json_etag),
        ],
    )
    .await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body, proto.body);

    let index = get(&client, "/openapi/v3", &[]).await;
    let index: serde_json::Value = serde_json::from_slice(&index.body).expect("index");
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .expect("apps/v1 in the v3 index")
        .to_owned();
    let (path, hash) = url.split_once("?hash=").expect("a hash URL");

    let current = get(&client, &url, &[]).await;
    assert_eq!(current.status, StatusCode::OK);
    assert_eq!(
        header_of(&current, header::CACHE_CONTROL),
        "public, immutable"
    );
    assert!(!header_of(&current, header::EXPIRES).is_empty());
    assert_eq!(header_of(&current, header::ETAG), format!("\"{hash}\""));

    let old = get(&client, &format!("{path}?hash=0123"), &[]).await;
    assert_eq!(old.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(header_of(&old, header::LOCATION), url);

    let plain = get(&client, path, &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.headers.get(header::CACHE_CONTROL).is_none());
    assert_eq!(plain.body, current.body);
}
