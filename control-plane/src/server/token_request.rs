//! ServiceAccount token issuance: the `serviceaccounts/token` subresource
//! (TokenRequest, `kubectl create token`) and the service-account issuer
//! discovery documents (`/.well-known/openid-configuration`,
//! `/openid/v1/jwks`).

use axum::body::Body;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::auth::sa_token::{BoundToken, ISSUER, ObjectRef};
use crate::resources::{self, ResourceType};

use super::Api;
use super::status::ApiError;

/// Upstream's default and bounds of `spec.expirationSeconds`.
const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;

fn json_response(value: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The issuer discovery documents, or `None` for any other path.
pub fn well_known(
    api: &Api,
    method: &Method,
    path: &str,
) -> Result<Option<Response<Body>>, ApiError> {
    let doc = match path.trim_end_matches('/') {
        "/.well-known/openid-configuration" => json!({
            "issuer": ISSUER,
            "jwks_uri": format!("https://{}/openid/v1/jwks", api.server_address),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }),
        "/openid/v1/jwks" => {
            let keys: Vec<Value> = api
                .auth
                .signing_key()
                .map(|k| k.jwk())
                .into_iter()
                .collect();
            json!({"keys": keys})
        }
        _ => return Ok(None),
    };
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    Ok(Some(json_response(&doc)))
}

fn core(plural: &str) -> Result<&'static ResourceType, ApiError> {
    resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

fn invalid(name: &str, field: &str, value: Value, detail: &str) -> ApiError {
    let cause = crate::registry::Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    };
    ApiError::invalid("TokenRequest", "authentication.k8s.io", name, &[cause])
}

fn uid_of(obj: &Value) -> String {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Resolves `spec.boundObjectRef` into the token's pod/secret/node claims.
async fn bind(api: &Api, ns: &str, bound: &Value, token: &mut BoundToken) -> Result<(), ApiError> {
    let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = bound.get("name").and_then(Value::as_str).unwrap_or("");
    let want_uid = bound.get("uid").and_then(Value::as_str).unwrap_or("");
    let (plural, namespaced) = match kind {
        "Pod" => ("pods", true),
        "Secret" => ("secrets", true),
        "Node" => ("nodes", false),
        other => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for object of type {other}"
            )));
        }
    };
    let r = core(plural)?;
    let obj = api.get(r, namespaced.then_some(ns), name).await?;
    let uid = uid_of(&obj);
    if !want_uid.is_empty() && want_uid != uid {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    let this = ObjectRef {
        name: name.to_string(),
        uid,
    };
    match kind {
        "Pod" => {
            // Upstream (ServiceAccountTokenPodNodeInfo) also names the pod's node.
            if let Some(node) = obj.pointer("/spec/nodeName").and_then(Value::as_str)
                && let Ok(Some((n, _))) = api.read(core("nodes")?, None, node).await
            {
                token.node = Some(ObjectRef {
                    name: node.to_string(),
                    uid: uid_of(&n),
                });
            }
            token.pod = Some(this);
        }
        "Secret" => token.secret = Some(this),
        _ => token.node = Some(this),
    }
    Ok(())
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`.
pub async fn create(api: &Api, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
    let key = api
        .auth
        .signing_key()
        .ok_or_else(|| ApiError::internal("the service account signing key is not loaded"))?;
    let sa = api.get(core("serviceaccounts")?, Some(ns), name).await?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds").and_then(Value::as_i64) {
        None | Some(0) => DEFAULT_EXPIRATION,
        Some(s) if s < MIN_EXPIRATION => {
            return Err(invalid(
                name,
                "spec.expirationSeconds",
                json!(s),
                "may not specify a duration less than 10 minutes",
            ));
        }
        Some(s) if s > MAX_EXPIRATION => {
            return Err(invalid(
                name,
                "spec.expirationSeconds",
                json!(s),
                "may not specify a duration larger than 2^32 seconds",
            ));
        }
        Some(s) => s,
    };
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| vec![ISSUER.to_string()]);
    let now = chrono::Utc::now();
    let mut token = BoundToken {
        namespace: ns.to_string(),
        service_account: ObjectRef {
            name: name.to_string(),
            uid: uid_of(&sa),
        },
        pod: None,
        secret: None,
        node: None,
        audiences: audiences.clone(),
        issued_at: now.timestamp(),
        expires_at: now.timestamp() + expiration,
        id: uuid::Uuid::new_v4().to_string(),
    };
    let bound = spec.get("boundObjectRef").filter(|b| !b.is_null());
    if let Some(bound) = bound {
        bind(api, ns, bound, &mut token).await?;
    }
    let jwt = key
        .sign(&token.claims())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = chrono::DateTime::from_timestamp(token.expires_at, 0)
        .unwrap_or(now)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    tracing::info!(
        namespace = ns,
        serviceaccount = name,
        expiration,
        "issued a service account token"
    );
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
        "spec": {
            "audiences": audiences,
            "expirationSeconds": expiration,
            "boundObjectRef": bound.cloned().unwrap_or(Value::Null),
        },
        "status": {"token": jwt, "expirationTimestamp": expires},
    }))
}
