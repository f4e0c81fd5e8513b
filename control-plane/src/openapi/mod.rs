//! OpenAPI documents generated from the k8s-openapi schemas: `/openapi/v2`
//! and `/openapi/v3` (root index and one document per group version).
//!
//! Everything is built on the first request for any of them and kept only
//! as serialized bytes (a few MB, where the JSON trees they come from take
//! tens of MB); the `*_json` functions hand those out for serving. The
//! protobuf form of the v2 document is encoded from its JSON the first time
//! a client asks for it, and kept as bytes too.

mod gnostic;
mod paths;
pub(crate) mod schemas;
mod v2_protobuf;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use crate::resources::{ResourceType, catalog, group_versions};
use schemas::{Definitions, Flavor, STATUS, definitions, reachable, render};

/// The version reported in the documents' `info`.
const INFO_VERSION: &str = "v1.32.0";

/// The Swagger 2.0 document served at `/openapi/v2`, parsed.
pub fn v2_document() -> Value {
    serde_json::from_str(v2_document_json()).unwrap_or_default()
}

/// The serialized `/openapi/v2` document.
pub fn v2_document_json() -> &'static str {
    &documents().v2
}

/// The entity tag of `/openapi/v2` in one form (JSON or protobuf): the hash
/// of its bytes, as `hash` below.
pub fn v2_etag(protobuf: bool) -> Option<&'static str> {
    static JSON: OnceLock<String> = OnceLock::new();
    static PROTOBUF: OnceLock<Option<String>> = OnceLock::new();
    if protobuf {
        PROTOBUF
            .get_or_init(|| v2_protobuf_bytes().map(hash))
            .as_deref()
    } else {
        Some(JSON.get_or_init(|| hash(v2_document_json().as_bytes())))
    }
}

/// Upper-case hex SHA-512, as kube-openapi hashes its documents.
fn hash(bytes: &[u8]) -> String {
    hex::encode_upper(Sha512::digest(bytes))
}

pub use v2_protobuf::{V2_PROTOBUF_CONTENT_TYPE, V2_PROTOBUF_MEDIA_TYPES};

/// The form of `/openapi/v2` to serve for the media ranges of an `Accept`
/// header, in order: the first acceptable one wins (kubectl asks for
/// protobuf only). `Some(true)` is protobuf, `Some(false)` JSON, `None`
/// neither (an empty header means JSON).
pub fn v2_wants_protobuf<'a>(mut mimes: impl Iterator<Item = &'a str>) -> Option<bool> {
    let mut any = false;
    let found = mimes.find_map(|mime| {
        any = true;
        if V2_PROTOBUF_MEDIA_TYPES.contains(&mime) {
            Some(true)
        } else {
            matches!(mime, "application/json" | "*/*").then_some(false)
        }
    });
    if any { found } else { Some(false) }
}

/// The `/openapi/v2` document as a gnostic `openapi.v2.Document` message
/// (none if it could not be encoded, which is logged). Encoded on the first
/// call (~1 s in a debug build), on a blocking thread.
pub async fn v2_document_protobuf() -> Option<&'static [u8]> {
    if V2_PROTOBUF.get().is_none() {
        let _ = tokio::task::spawn_blocking(v2_protobuf_bytes).await;
    }
    v2_protobuf_bytes()
}

static V2_PROTOBUF: OnceLock<Option<Vec<u8>>> = OnceLock::new();

fn v2_protobuf_bytes() -> Option<&'static [u8]> {
    V2_PROTOBUF
        .get_or_init(|| match v2_protobuf::encode(v2_document_json()) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                tracing::error!(?err, "failed to encode the openapi v2 document as protobuf");
                None
            }
        })
        .as_deref()
}

/// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL": ...}}}`.
pub fn v3_index() -> Value {
    let paths: Map<String, Value> = documents()
        .v3
        .iter()
        .map(|(key, doc)| {
            let url = format!("/openapi/v3/{key}?hash={}", doc.hash);
            (key.clone(), json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

/// The OpenAPI 3 document of one group version (`""`/`v1` for core), if
/// served, parsed.
pub fn v3_group_version(group: &str, version: &str) -> Option<Value> {
    v3_group_version_json(group, version).and_then(|(json, _)| serde_json::from_str(json).ok())
}

/// The serialized OpenAPI 3 document of one group version, and its hash
/// (the `hash` query parameter of its URL, usable as an ETag).
pub fn v3_group_version_json(group: &str, version: &str) -> Option<(&'static str, &'static str)> {
    documents()
        .v3
        .get(&v3_key(group, version))
        .map(|d| (d.json.as_str(), d.hash.as_str()))
}

/// Builds every document unless built already (~1 s in a debug build), on
/// a blocking thread: await it before the accessors above in async code.
pub async fn ready() {
    if DOCUMENTS.get().is_none() {
        let _ = tokio::task::spawn_blocking(documents).await;
    }
}

/// `api/v1` or `apis/<group>/<version>`: the key of a group version in the
/// v3 index and in its URL.
fn v3_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

struct Documents {
    v2: String,
    v3: BTreeMap<String, V3Doc>,
}

struct V3Doc {
    json: String,
    /// Upper-case hex SHA-512 of `json`, as upstream.
    hash: String,
}

static DOCUMENTS: OnceLock<Documents> = OnceLock::new();

fn documents() -> &'static Documents {
    DOCUMENTS.get_or_init(|| {
        // One set of definitions for all documents; dropped once they are
        // serialized.
        let defs = definitions();
        let v2 = build_v2(&defs).to_string();
        let v3 = group_versions()
            .into_iter()
            .map(|(group, version)| {
                let json = build_v3(&defs, group, version).to_string();
                let hash = hash(json.as_bytes());
                (v3_key(group, version), V3Doc { json, hash })
            })
            .collect();
        Documents { v2, v3 }
    })
}

/// The served resources with their definition names.
fn resources_with_definitions(
    defs: &Definitions,
) -> impl Iterator<Item = (&'static ResourceType, &str)> {
    catalog()
        .iter()
        .filter_map(move |r| defs.root_of(r).map(|d| (r, d)))
}

fn build_v2(defs: &Definitions) -> Value {
    let mut paths = Map::new();
    for (r, def) in resources_with_definitions(defs) {
        paths::add_paths(&mut paths, r, def, Flavor::V2);
    }
    let definitions = render(&defs.defs, defs.defs.keys(), Flavor::V2);
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {"description": "Bearer Token authentication", "type": "apiKey", "name": "authorization", "in": "header"}
        },
        "security": [{"BearerToken": []}],
    })
}

fn build_v3(defs: &Definitions, group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut roots = vec![STATUS];
    for (r, def) in
        resources_with_definitions(defs).filter(|(r, _)| r.group == group && r.version == version)
    {
        paths::add_paths(&mut paths, r, def, Flavor::V3);
        roots.push(def);
    }
    let names = reachable(&defs.defs, roots);
    let schemas = render(&defs.defs, &names, Flavor::V3);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {"description": "Bearer Token authentication", "type": "apiKey", "name": "authorization", "in": "header"}
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in a document points at a definition it contains.
    fn assert_refs_resolve(value: &Value, prefix: &str, defs: &Map<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    // JSONSchemaProps has a property named `$ref`.
                    if let (true, Some(target)) = (k == "$ref", v.as_str()) {
                        let name = target
                            .strip_prefix(prefix)
                            .unwrap_or_else(|| panic!("bad ref {target}"));
                        assert!(defs.contains_key(name), "dangling ref {target}");
                    } else {
                        assert_refs_resolve(v, prefix, defs);
                    }
                }
            }
            Value::Array(items) => items
                .iter()
                .for_each(|v| assert_refs_resolve(v, prefix, defs)),
            _ => {}
        }
    }

    #[test]
    fn v3_index_lists_every_group_version_with_a_hash() {
        let index = v3_index();
        let paths = index["paths"].as_object().unwrap();
        assert_eq!(paths.len(), group_versions().len());
        let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        let (_, hash) = v3_group_version_json("apps", "v1").unwrap();
        assert_eq!(url, format!("/openapi/v3/apis/apps/v1?hash={hash}"));
        assert_eq!(hash.len(), 128);
        assert!(paths.contains_key("api/v1"));
    }

    #[test]
    fn v3_documents_are_self_contained() {
        for (group, version) in group_versions() {
            let doc = v3_group_version(group, version).unwrap();
            assert_eq!(doc["openapi"], "3.0.0");
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            assert_refs_resolve(&doc, "#/components/schemas/", schemas);
        }
        assert!(v3_group_version("nope", "v1").is_none());
    }

    #[test]
    fn v3_core_document_describes_pods_for_kubectl_explain() {
        let doc = v3_group_version("", "v1").unwrap();
        let schemas = &doc["components"]["schemas"];
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert_eq!(
            pod["properties"]["spec"]["allOf"],
            json!([{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}])
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert!(
            containers["description"]
                .as_str()
                .unwrap()
                .contains("containers")
        );
        assert!(schemas.get("io.k8s.api.apps.v1.Deployment").is_none());
    }

    #[test]
    fn every_resource_has_a_patch_operation_with_field_validation() {
        let mut gvks_with_patch = Vec::new();
        for (group, version) in group_versions() {
            let doc = v3_group_version(group, version).unwrap();
            for item in doc["paths"].as_object().unwrap().values() {
                let Some(patch) = item.get("patch") else {
                    continue;
                };
                let params = patch["parameters"].as_array().unwrap();
                assert!(params.iter().any(|p| p["name"] == "fieldValidation"));
                assert!(patch.get("requestBody").is_none());
                gvks_with_patch.push(patch["x-kubernetes-group-version-kind"].clone());
            }
        }
        for r in catalog().iter().filter(|r| r.has_verb("patch")) {
            let gvk = json!({"group": r.group, "kind": r.kind, "version": r.version});
            assert!(gvks_with_patch.contains(&gvk), "{r:?}");
        }
    }

    #[test]
    fn v2_form_follows_the_first_acceptable_media_range() {
        let wants = |mimes: &[&str]| v2_wants_protobuf(mimes.iter().copied());
        assert_eq!(wants(&[V2_PROTOBUF_MEDIA_TYPES[0]]), Some(true));
        assert_eq!(wants(&[V2_PROTOBUF_CONTENT_TYPE]), Some(true));
        assert_eq!(
            wants(&["application/json", V2_PROTOBUF_CONTENT_TYPE]),
            Some(false)
        );
        assert_eq!(wants(&["text/html", "*/*"]), Some(false));
        assert_eq!(wants(&[]), Some(false));
        assert_eq!(wants(&["application/vnd.kubernetes.protobuf"]), None);
    }

    #[test]
    fn v2_document_has_definitions_and_paths() {
        let doc = v2_document();
        assert_eq!(doc["swagger"], "2.0");
        let defs = doc["definitions"].as_object().unwrap();
        assert_refs_resolve(&doc, "#/definitions/", defs);
        assert_eq!(
            defs["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch");
        let or_array = &defs["io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray"];
        assert!(or_array.get("oneOf").is_none(), "{or_array}");
        assert!(!v2_document_json().contains("$defs"));
    }
}
