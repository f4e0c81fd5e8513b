//! Per-resource strategy: defaulting, validation, immutability, version
//! conversion, and the Service ClusterIP/NodePort allocators. No I/O.
//! Placeholder: the registry work fills it in (one file per resource).

use serde_json::Value;

use crate::resources::ResourceType;

/// One field error of a 422 Invalid, as in `metav1.StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueDuplicate`,
    /// `FieldValueNotSupported`, `FieldValueForbidden`, `FieldValueTooLong`...
    pub reason: String,
    /// The message, e.g. `Required value` or
    /// `Invalid value: "A": a lowercase RFC 1123 subdomain must consist of ...`.
    pub message: String,
    /// The field path, e.g. `metadata.name` or `spec.containers[0].image`.
    pub field: String,
}

/// Fills in defaults on an object about to be created or updated (pod spec
/// defaults, service defaults, deployment strategy...), as upstream's
/// defaulting functions do.
pub fn default_object(resource: &ResourceType, object: &mut Value) {
    let _ = (resource, object);
}

/// Validates an object for create; an empty list means valid.
pub fn validate_create(resource: &ResourceType, object: &Value) -> Vec<Cause> {
    let _ = (resource, object);
    Vec::new()
}

/// Validates an update of `old` into `new` (immutable fields included).
pub fn validate_update(resource: &ResourceType, new: &Value, old: &Value) -> Vec<Cause> {
    let _ = (resource, new, old);
    Vec::new()
}
