//! A tiny in-memory API server for agent tests (nodes, leases, pods) over a
//! kube `Client`, with every request recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kube::Client;
use serde_json::{Value, json};

#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<String, Value>,
    pub requests: Vec<String>,
    next_rv: u64,
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason}),
    )
}

fn handle(state: &mut State, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    state.requests.push(format!("{method} {path}"));
    let (key, subresource) = match path.strip_suffix("/status") {
        Some(k) => (k.to_owned(), true),
        None => (path.to_owned(), false),
    };
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    state.next_rv += 1;
    let rv = state.next_rv.to_string();
    match method {
        "GET" => match state.objects.get(&key) {
            Some(o) => (200, o.clone()),
            None => status(404, "NotFound"),
        },
        "POST" => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let key = format!("{key}/{name}");
            if state.objects.contains_key(&key) {
                return status(409, "AlreadyExists");
            }
            let mut obj = body;
            obj["metadata"]["uid"] = json!(format!("uid-{name}"));
            obj["metadata"]["resourceVersion"] = json!(rv);
            state.objects.insert(key, obj.clone());
            (201, obj)
        }
        "PUT" => {
            let Some(existing) = state.objects.get(&key) else {
                return status(404, "NotFound");
            };
            if body["metadata"]["resourceVersion"] != existing["metadata"]["resourceVersion"] {
                return status(409, "Conflict");
            }
            let mut obj = body;
            obj["metadata"]["resourceVersion"] = json!(rv);
            state.objects.insert(key, obj.clone());
            (200, obj)
        }
        "PATCH" => {
            let Some(obj) = state.objects.get_mut(&key) else {
                return status(404, "NotFound");
            };
            let patch = if subresource {
                json!({"status": body["status"]})
            } else {
                body
            };
            merge(obj, &patch);
            obj["metadata"]["resourceVersion"] = json!(rv);
            (200, obj.clone())
        }
        "DELETE" => match state.objects.remove(&key) {
            Some(o) => (200, o),
            None => status(404, "NotFound"),
        },
        _ => status(405, "MethodNotAllowed"),
    }
}

/// A client whose requests are served from `state`.
pub fn client(state: Arc<Mutex<State>>) -> Client {
    let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
        let state = state.clone();
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await?.to_bytes();
            let (code, value) = handle(&mut state.lock().unwrap(), &method, &path, &body);
            let resp = Response::builder()
                .status(StatusCode::from_u16(code).unwrap())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(value.to_string())))
                .unwrap();
            Ok::<_, kube::Error>(resp)
        }
    });
    Client::new(svc, "default")
}
