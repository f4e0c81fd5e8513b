//! Column definitions (`meta.k8s.io/v1` TableColumnDefinition) and the
//! field descriptions upstream takes from `SwaggerDoc()`, read here from the
//! k8s-openapi schemas (the same Go doc comments).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

/// The description of `field` in the schema of `T` (empty if unknown, as
/// upstream's `SwaggerDoc()[field]` lookups of missing keys).
pub fn doc<T: JsonSchema>(field: &str) -> String {
    let mut generator = SchemaGenerator::default();
    let schema = T::json_schema(&mut generator);
    schema
        .as_value()
        .get("properties")
        .and_then(|p| p.get(field))
        .and_then(|f| f.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// A column shown by plain `kubectl get`.
pub fn col(name: &str, ty: &str, description: impl Into<String>) -> Value {
    column(name, ty, "", 0, description.into())
}

/// A column shown only by `kubectl get -o wide` (`priority: 1`).
pub fn wide(name: &str, ty: &str, description: impl Into<String>) -> Value {
    column(name, ty, "", 1, description.into())
}

/// A column with every attribute given.
pub fn column(name: &str, ty: &str, format: &str, priority: i32, description: String) -> Value {
    json!({
        "name": name,
        "type": ty,
        "format": format,
        "description": description,
        "priority": priority,
    })
}

/// The `Name` column every printer starts with.
pub fn name() -> Value {
    column("Name", "string", "name", 0, doc::<ObjectMeta>("name"))
}

/// The `Age` column.
pub fn age() -> Value {
    col("Age", "string", doc::<ObjectMeta>("creationTimestamp"))
}

/// `Containers` and `Images` wide columns of workload templates.
pub fn containers_images() -> [Value; 2] {
    [
        wide(
            "Containers",
            "string",
            "Names of each container in the template.",
        ),
        wide(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        ),
    ]
}
