//! Label and field selectors of list and watch requests. No I/O.
//! Placeholder: the registry work replaces it with the full syntax.

use serde_json::Value;

use crate::resources::ResourceType;

/// A parsed label selector (`app=web,tier!=db,env in (a,b),!legacy`).
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    raw: String,
}

/// A parsed field selector (`metadata.name=x,spec.nodeName!=n`).
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    raw: String,
}

/// Parses a `labelSelector` query parameter; the error is the message of a 400.
pub fn parse_label_selector(s: &str) -> Result<LabelSelector, String> {
    Ok(LabelSelector { raw: s.to_string() })
}

/// Parses a `fieldSelector` for a resource; fields the resource does not
/// support are an error (upstream: `field label not supported: x`).
pub fn parse_field_selector(resource: &ResourceType, s: &str) -> Result<FieldSelector, String> {
    let _ = resource;
    Ok(FieldSelector { raw: s.to_string() })
}

impl LabelSelector {
    /// Whether the object's `metadata.labels` match.
    pub fn matches(&self, object: &Value) -> bool {
        let _ = object;
        self.raw.is_empty()
    }
}

impl FieldSelector {
    /// Whether the object's fields match.
    pub fn matches(&self, object: &Value) -> bool {
        let _ = object;
        self.raw.is_empty()
    }
}
