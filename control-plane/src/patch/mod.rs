//! Patches as kubectl sends them: JSON patch (RFC 6902), JSON merge patch
//! (RFC 7386) and strategic merge patch with the patch-merge keys of the
//! built-in types. Pure functions, no I/O.
//!
//! The PATCH handler reads the stored object, calls one of these by
//! Content-Type, then validates and stores the result. Server-side apply
//! (`application/apply-patch+yaml`) is `managed_fields::apply`, which finds
//! its list types through `merge_keys`.

pub(crate) mod merge_keys;
mod strategic;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed (400 BadRequest upstream).
    #[error("{0}")]
    BadPatch(String),
    /// A JSON patch `test` failed or a path did not exist (422/500 upstream wording).
    #[error("{0}")]
    Failed(String),
}

/// The patch types of `PATCH` requests, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` header (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }

    /// The media type of this patch type.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::Strategic => "application/strategic-merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Applies a JSON patch document to `original`.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::BadPatch(e.to_string()))?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::Failed(e.to_string()))?;
    Ok(doc)
}

/// Applies a JSON merge patch to `original`.
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// Applies a strategic merge patch to an object of the given `apiVersion`
/// and `kind` (both read by the implementation to find merge keys). Kinds
/// outside the catalog have no merge keys: their lists are replaced.
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::BadPatch(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_type_name(patch)
        )));
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        Value::Null => serde_json::Map::new(),
        _ => return Err(PatchError::BadPatch("invalid JSON document".to_string())),
    };
    let root = merge_keys::root(api_version, kind);
    strategic::merge_map(original, patch.clone(), root).map(Value::Object)
}

/// The JSON type names Go's decoder uses in its errors.
fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests;
