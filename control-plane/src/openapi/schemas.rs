//! Definitions: the k8s-openapi JSON schemas of every served type, collected
//! from the catalog when needed and rewritten into OpenAPI 2 or 3.0 form.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::resources::{ResourceType, catalog};

/// Where schemars puts definitions (draft 2020-12 settings).
const DEFS_PREFIX: &str = "#/$defs/";

pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// The flavour of OpenAPI a schema is rendered for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Flavor {
    /// Swagger 2.0: refs to `#/definitions/`, `$ref` siblings kept.
    V2,
    /// OpenAPI 3.0: refs to `#/components/schemas/`, `$ref` with siblings
    /// wrapped in `allOf` as upstream does.
    V3,
}

impl Flavor {
    pub(crate) fn ref_prefix(self) -> &'static str {
        match self {
            Flavor::V2 => "#/definitions/",
            Flavor::V3 => "#/components/schemas/",
        }
    }

    /// A `$ref` to a definition in this flavour.
    pub(crate) fn reference(self, name: &str) -> Value {
        json!({ "$ref": format!("{}{name}", self.ref_prefix()) })
    }
}

/// Every definition, keyed by its upstream name (`io.k8s.api.core.v1.Pod`),
/// in neutral form (refs still point at `#/$defs/`).
pub(crate) struct Definitions {
    pub(crate) defs: Map<String, Value>,
    /// The definition name of each catalog entry, parallel to `catalog()`.
    pub(crate) roots: Vec<Option<String>>,
}

impl Definitions {
    /// The definition name of a served resource type.
    pub(crate) fn root_of(&self, resource: &ResourceType) -> Option<&str> {
        catalog()
            .iter()
            .position(|r| r.api_version == resource.api_version && r.plural == resource.plural)
            .and_then(|i| self.roots.get(i))
            .and_then(|n| n.as_deref())
    }
}

/// The definitions of all served types. They are only an input (of the
/// serialized OpenAPI documents, of the protobuf field table): generated
/// when first asked for and shared while some caller holds them, then
/// dropped, as the trees take tens of MB.
pub(crate) fn definitions() -> Arc<Definitions> {
    static DEFS: Mutex<Weak<Definitions>> = Mutex::new(Weak::new());
    let mut cached = DEFS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(defs) = cached.upgrade() {
        return defs;
    }
    let defs = Arc::new(build());
    *cached = Arc::downgrade(&defs);
    defs
}

fn subschema<T: JsonSchema>(generator: &mut SchemaGenerator) {
    let _ = generator.subschema_for::<T>();
}

fn build() -> Definitions {
    use k8s_openapi::api::{authentication::v1 as authn, authorization::v1 as authz};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let roots: Vec<Option<String>> = catalog()
        .iter()
        .map(|r| {
            let reference = (r.schema)(&mut generator);
            let name = reference
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|s| s.strip_prefix(DEFS_PREFIX))
                .map(str::to_owned);
            if name.is_none() {
                tracing::warn!(resource = ?r, "schema of resource is not a named definition");
            }
            name
        })
        .collect();
    // Types that operations refer to or that clients send without a stored
    // resource behind them (reviews, token requests).
    subschema::<meta::Status>(&mut generator);
    subschema::<meta::DeleteOptions>(&mut generator);
    subschema::<authn::SelfSubjectReview>(&mut generator);
    subschema::<authn::TokenRequest>(&mut generator);
    subschema::<authn::TokenReview>(&mut generator);
    subschema::<authz::SelfSubjectAccessReview>(&mut generator);
    subschema::<authz::SelfSubjectRulesReview>(&mut generator);
    subschema::<authz::SubjectAccessReview>(&mut generator);
    subschema::<authz::LocalSubjectAccessReview>(&mut generator);
    subschema::<k8s_openapi::api::autoscaling::v1::Scale>(&mut generator);
    subschema::<k8s_openapi::api::policy::v1::Eviction>(&mut generator);
    subschema::<k8s_openapi::api::core::v1::Binding>(&mut generator);

    let mut defs = generator.take_definitions(true);
    fix_special_types(&mut defs);
    defs.values_mut().for_each(metadata_not_required);
    for (resource, root) in catalog().iter().zip(&roots) {
        let Some(Value::Object(def)) = root.as_ref().and_then(|n| defs.get_mut(n)) else {
            continue;
        };
        def.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{ "group": resource.group, "kind": resource.kind, "version": resource.version }]),
        );
    }
    for (name, gvk) in [
        (
            "io.k8s.api.authentication.v1.SelfSubjectReview",
            ("authentication.k8s.io", "SelfSubjectReview"),
        ),
        (
            "io.k8s.api.authentication.v1.TokenRequest",
            ("authentication.k8s.io", "TokenRequest"),
        ),
        (
            "io.k8s.api.authentication.v1.TokenReview",
            ("authentication.k8s.io", "TokenReview"),
        ),
        (
            "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
            ("authorization.k8s.io", "SelfSubjectAccessReview"),
        ),
        (
            "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
            ("authorization.k8s.io", "SelfSubjectRulesReview"),
        ),
        (
            "io.k8s.api.authorization.v1.SubjectAccessReview",
            ("authorization.k8s.io", "SubjectAccessReview"),
        ),
        (
            "io.k8s.api.authorization.v1.LocalSubjectAccessReview",
            ("authorization.k8s.io", "LocalSubjectAccessReview"),
        ),
        ("io.k8s.api.autoscaling.v1.Scale", ("autoscaling", "Scale")),
        ("io.k8s.api.policy.v1.Eviction", ("policy", "Eviction")),
        ("io.k8s.api.core.v1.Binding", ("", "Binding")),
        (STATUS, ("", "Status")),
    ] {
        if let Some(Value::Object(def)) = defs.get_mut(name) {
            def.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{ "group": gvk.0, "kind": gvk.1, "version": "v1" }]),
            );
        }
    }
    Definitions { defs, roots }
}

/// Gives IntOrString and Quantity the schemas of upstream's v3 documents
/// (k8s-openapi marks both `x-kubernetes-int-or-string`). Having no `type`,
/// `kubectl explain` prints them as `<IntOrString>` and `<Quantity>`.
fn fix_special_types(defs: &mut Map<String, Value>) {
    let description = |v: Option<&Value>| v.and_then(|d| d.get("description")).cloned();
    if let Some(d) = description(defs.get(INT_OR_STRING)) {
        defs.insert(
            INT_OR_STRING.into(),
            json!({"description": d, "format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]}),
        );
    }
    if let Some(d) = description(defs.get(QUANTITY)) {
        defs.insert(
            QUANTITY.into(),
            json!({"description": d, "oneOf": [{"type": "string"}, {"type": "number"}]}),
        );
    }
}

/// k8s-openapi lists `metadata` as required in every object type (its Rust
/// field is not optional); upstream's documents do not, and `kubectl explain`
/// would print it `-required-`.
fn metadata_not_required(def: &mut Value) {
    let is_object_type = def
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| {
            p.contains_key("apiVersion") && p.contains_key("kind") && p.contains_key("metadata")
        });
    let Some(Value::Array(required)) = def.get_mut("required").filter(|_| is_object_type) else {
        return;
    };
    required.retain(|r| r != "metadata");
    if required.is_empty()
        && let Some(obj) = def.as_object_mut()
    {
        obj.remove("required");
    }
}

/// Upstream's Swagger 2.0 form of the types above: plain strings.
fn v2_special_type(name: &str, converted: Value) -> Value {
    let description = converted.get("description").cloned().unwrap_or_default();
    match name {
        INT_OR_STRING => {
            json!({"description": description, "type": "string", "format": "int-or-string"})
        }
        QUANTITY => json!({"description": description, "type": "string"}),
        _ => converted,
    }
}

/// The names of all definitions reachable from `roots` (roots included).
pub(crate) fn reachable<'a>(
    defs: &Map<String, Value>,
    roots: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = roots.into_iter().map(str::to_owned).collect();
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = defs.get(&name) {
            collect_refs(schema, &mut stack);
        }
    }
    seen.retain(|n| defs.contains_key(n));
    seen
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    if let Some(name) = v.as_str().and_then(|s| s.strip_prefix(DEFS_PREFIX)) {
                        out.push(name.to_owned());
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Renders the named definitions in one flavour.
pub(crate) fn render<'a>(
    defs: &Map<String, Value>,
    names: impl IntoIterator<Item = &'a String>,
    flavor: Flavor,
) -> Map<String, Value> {
    names
        .into_iter()
        .filter_map(|n| {
            let converted = convert(defs.get(n)?, flavor);
            let converted = match flavor {
                Flavor::V2 => v2_special_type(n, converted),
                Flavor::V3 => converted,
            };
            Some((n.clone(), converted))
        })
        .collect()
}

/// Schema keywords whose value is one schema.
const SCHEMA_KEYS: &[&str] = &["items", "not", "additionalProperties"];
/// Schema keywords whose value is a list of schemas.
const SCHEMA_LIST_KEYS: &[&str] = &["allOf", "anyOf", "oneOf"];

/// Converts one JSON Schema (draft 2020-12, as schemars writes it) into the
/// OpenAPI dialect of `flavor`.
pub(crate) fn convert(schema: &Value, flavor: Flavor) -> Value {
    let map = match schema {
        Value::Bool(true) => return json!({}),
        Value::Bool(false) => return json!({"not": {}}),
        Value::Object(map) => map,
        other => return other.clone(),
    };
    let mut out = Map::new();
    let mut nullable = false;
    for (key, value) in map {
        match key.as_str() {
            "$schema" | "$defs" | "$id" | "definitions" | "examples" => {}
            "$ref" => {
                let target = value.as_str().unwrap_or_default();
                let name = target.strip_prefix(DEFS_PREFIX).unwrap_or(target);
                out.insert(
                    key.clone(),
                    Value::String(format!("{}{name}", flavor.ref_prefix())),
                );
            }
            "type" => match value {
                Value::Array(types) => {
                    nullable = types.iter().any(|t| t == "null");
                    if let Some(t) = types.iter().find(|t| *t != "null") {
                        out.insert(key.clone(), t.clone());
                    }
                }
                other => {
                    out.insert(key.clone(), other.clone());
                }
            },
            "const" => {
                out.insert("enum".into(), json!([value]));
            }
            "properties" | "patternProperties" => {
                let props = value
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(k, v)| (k.clone(), convert(v, flavor)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Object(props));
            }
            k if SCHEMA_LIST_KEYS.contains(&k) => {
                if flavor == Flavor::V2 && k != "allOf" {
                    // Swagger 2.0 has no oneOf/anyOf; upstream leaves such
                    // types (JSONSchemaPropsOrArray...) without a type.
                    continue;
                }
                let items = value
                    .as_array()
                    .map(|a| a.iter().map(|v| convert(v, flavor)).collect())
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Array(items));
            }
            "additionalProperties" if value.is_boolean() => {
                out.insert(key.clone(), value.clone());
            }
            k if SCHEMA_KEYS.contains(&k) => {
                out.insert(key.clone(), convert(value, flavor));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if nullable && flavor == Flavor::V3 {
        out.insert("nullable".into(), Value::Bool(true));
    }
    if flavor == Flavor::V3 && out.contains_key("$ref") && out.len() > 1 {
        // OpenAPI 3.0 ignores siblings of `$ref`; upstream wraps the
        // reference in `allOf` so descriptions and defaults survive.
        if let Some(reference) = out.remove("$ref") {
            out.insert("allOf".into(), json!([{ "$ref": reference }]));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_with_description_is_wrapped_in_all_of_for_v3_only() {
        let schema = json!({"$ref": "#/$defs/a.B", "description": "d"});
        assert_eq!(
            convert(&schema, Flavor::V3),
            json!({"allOf": [{"$ref": "#/components/schemas/a.B"}], "description": "d"})
        );
        assert_eq!(
            convert(&schema, Flavor::V2),
            json!({"$ref": "#/definitions/a.B", "description": "d"})
        );
    }

    #[test]
    fn nullable_type_arrays_become_a_single_type() {
        let schema = json!({"type": "object", "properties": {"a": {"type": ["string", "null"]}}});
        assert_eq!(
            convert(&schema, Flavor::V3),
            json!({"type": "object", "properties": {"a": {"type": "string", "nullable": true}}})
        );
        assert_eq!(
            convert(&schema, Flavor::V2),
            json!({"type": "object", "properties": {"a": {"type": "string"}}})
        );
    }

    #[test]
    fn definitions_have_upstream_names_and_group_version_kinds() {
        let defs = definitions();
        let defs = &defs.defs;
        let pod = defs.get("io.k8s.api.core.v1.Pod").expect("pod definition");
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert!(pod.get("required").is_none(), "{pod}");
        let binding = &defs["io.k8s.api.rbac.v1.RoleBinding"];
        assert_eq!(binding["required"], json!(["roleRef"]));
        assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert_eq!(defs[INT_OR_STRING]["format"], "int-or-string");
        assert!(defs[QUANTITY].get("type").is_none());
        let v2 = render(defs, [&QUANTITY.to_owned()], Flavor::V2);
        assert_eq!(v2[QUANTITY]["type"], "string");
        let time = &defs["io.k8s.apimachinery.pkg.apis.meta.v1.Time"];
        assert_eq!(
            (&time["type"], &time["format"]),
            (&json!("string"), &json!("date-time"))
        );
    }

    #[test]
    fn every_catalog_entry_has_a_definition() {
        let defs = definitions();
        for r in catalog() {
            let name = defs
                .root_of(r)
                .unwrap_or_else(|| panic!("{r:?} has no definition"));
            assert!(defs.defs.contains_key(name), "{name}");
        }
    }

    #[test]
    fn reachable_follows_references() {
        let defs = definitions();
        let defs = &defs.defs;
        let names = reachable(defs, ["io.k8s.api.apps.v1.Deployment"]);
        assert!(names.contains("io.k8s.api.core.v1.Container"));
        assert!(names.contains(INT_OR_STRING));
        assert!(!names.contains("io.k8s.api.core.v1.Node"));
    }
}
