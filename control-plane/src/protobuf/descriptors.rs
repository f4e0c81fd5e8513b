//! The message descriptors of the built-in types, read from
//! `descriptors.txt` (generated from the k8s-pb crate by `descriptors.py`)
//! and joined with the OpenAPI definitions for JSON field names.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::openapi::schemas::definitions;

const TABLE: &str = include_str!("descriptors.txt");

/// The wire kind of a field's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Int32,
    Int64,
    Bool,
    Bytes,
    Double,
    /// An embedded message, by full name (`io.k8s.api.core.v1.PodSpec`).
    Message(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Label {
    One,
    Repeated,
    /// `map<string, kind>`: entries with key 1 and value 2.
    Map,
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) json_name: String,
    pub(crate) label: Label,
    pub(crate) kind: Kind,
    /// Listed as required in the OpenAPI definition: kept even when zero.
    pub(crate) required: bool,
    /// An embedded Go struct whose fields are inlined into the parent.
    pub(crate) inline: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Message {
    pub(crate) fields: HashMap<u32, Field>,
}

pub(crate) struct Table {
    pub(crate) messages: HashMap<String, Message>,
    /// `(apiVersion, kind)` → message name.
    by_kind: HashMap<(String, String), String>,
}

impl Table {
    /// The message of a top-level type, by its `apiVersion` and `kind`.
    pub(crate) fn message_for(&self, api_version: &str, kind: &str) -> Option<&str> {
        self.by_kind
            .get(&(api_version.to_owned(), kind.to_owned()))
            .map(String::as_str)
    }
}

/// The descriptor table, built once.
pub(crate) fn table() -> &'static Table {
    static TABLE_CELL: OnceLock<Table> = OnceLock::new();
    TABLE_CELL.get_or_init(build)
}

struct RawField<'a> {
    tag: u32,
    name: &'a str,
    label: Label,
    kind: Kind,
}

fn parse_field(line: &str) -> Option<RawField<'_>> {
    let mut parts = line.split(' ');
    let tag = parts.next()?.parse().ok()?;
    let name = parts.next()?;
    let label = match parts.next()? {
        "one" => Label::One,
        "repeated" => Label::Repeated,
        "map" => Label::Map,
        _ => return None,
    };
    let kind = match parts.next()? {
        "string" => Kind::String,
        "int32" => Kind::Int32,
        "int64" => Kind::Int64,
        "bool" => Kind::Bool,
        "bytes" => Kind::Bytes,
        "double" => Kind::Double,
        "message" => Kind::Message(parts.next()?.to_owned()),
        _ => return None,
    };
    Some(RawField {
        tag,
        name,
        label,
        kind,
    })
}

/// `pod_ip` → `podIp`: the JSON name of a field without a definition.
fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The property of `def` a prost field name stands for (`pod_ip` → `podIP`).
fn property<'a>(def: Option<&'a Value>, snake: &str) -> Option<&'a String> {
    // JSONSchemaProps has `$ref` and `x-kubernetes-*` properties.
    let normalize = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | '$'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = normalize(snake);
    def.and_then(|d| d.get("properties"))
        .and_then(Value::as_object)
        .and_then(|props| props.keys().find(|p| normalize(p) == wanted))
}

/// The `(apiVersion, kind)` pairs a definition is the schema of.
fn group_version_kinds(def: &Value) -> Vec<(String, String)> {
    let gvks = def
        .get("x-kubernetes-group-version-kind")
        .and_then(Value::as_array);
    gvks.into_iter()
        .flatten()
        .map(|gvk| {
            let group = gvk["group"].as_str().unwrap_or_default();
            let version = gvk["version"].as_str().unwrap_or_default();
            let api_version = if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            };
            (
                api_version,
                gvk["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn build() -> Table {
    let defs = definitions();
    let defs = &defs.defs;
    // prost renames messages (`APIService` → `ApiService`): match
    // definitions case-insensitively.
    let def_by_lower: HashMap<String, &str> = defs
        .keys()
        .map(|k| (k.to_lowercase(), k.as_str()))
        .collect();
    let def_of = |message: &str| {
        def_by_lower
            .get(&message.to_lowercase())
            .and_then(|d| defs.get(*d))
    };

    let mut raw: Vec<(&str, Vec<RawField<'_>>)> = Vec::new();
    for line in TABLE.lines() {
        if let Some(name) = line.strip_prefix("message ") {
            raw.push((name, Vec::new()));
        } else if let (Some(field), Some((_, fields))) = (parse_field(line), raw.last_mut()) {
            fields.push(field);
        } else {
            tracing::warn!(line, "malformed protobuf descriptor line");
        }
    }

    // Go structs embedded with `json:",inline"` (Volume's VolumeSource,
    // IngressRule's IngressRuleValue...) are message fields on the wire but
    // have no property of their own: their fields belong to the parent, and
    // take their JSON names from the parent's definition.
    let mut name_source: HashMap<String, &Value> = HashMap::new();
    for (name, fields) in &raw {
        let Some(def) = def_of(name) else { continue };
        for field in fields {
            if let Kind::Message(target) = &field.kind
                && property(Some(def), field.name).is_none()
                && def_of(target).is_none()
            {
                name_source.insert(target.clone(), def);
            }
        }
    }

    let mut messages = HashMap::new();
    let mut by_kind = HashMap::new();
    for (name, fields) in raw {
        let own = def_of(name);
        for gvk in own.map(group_version_kinds).unwrap_or_default() {
            by_kind.insert(gvk, name.to_owned());
        }
        let def = own.or_else(|| name_source.get(name).copied());
        let mut message = Message::default();
        for field in fields {
            let property = property(def, field.name);
            let inline =
                def.is_some() && property.is_none() && matches!(field.kind, Kind::Message(_));
            let json_name = property.cloned().unwrap_or_else(|| lower_camel(field.name));
            let required = def
                .and_then(|d| d.get("required"))
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(|n| *n == *json_name));
            message.fields.insert(
                field.tag,
                Field {
                    json_name,
                    label: field.label,
                    kind: field.kind,
                    required,
                    inline,
                },
            );
        }
        messages.insert(name.to_owned(), message);
    }
    Table { messages, by_kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_table_parses() {
        for line in TABLE.lines().filter(|l| !l.starts_with("message ")) {
            assert!(parse_field(line).is_some(), "{line}");
        }
    }

    #[test]
    fn every_referenced_message_is_in_the_table() {
        let t = table();
        for message in t.messages.values() {
            for field in message.fields.values() {
                if let Kind::Message(name) = &field.kind {
                    assert!(t.messages.contains_key(name), "{name}");
                }
            }
        }
    }

    #[test]
    fn json_names_come_from_the_definitions() {
        let t = table();
        let status = &t.messages["io.k8s.api.core.v1.PodStatus"];
        let names: Vec<&str> = status
            .fields
            .values()
            .map(|f| f.json_name.as_str())
            .collect();
        assert!(names.contains(&"podIP"), "{names:?}");
        assert!(names.contains(&"hostIPs"), "{names:?}");
        let container = &t.messages["io.k8s.api.core.v1.Container"];
        let name = container
            .fields
            .values()
            .find(|f| f.json_name == "name")
            .unwrap();
        assert!(name.required);
        assert_eq!(lower_camel("generate_name"), "generateName");
        let volume = &t.messages["io.k8s.api.core.v1.Volume"];
        assert!(volume.fields.values().any(|f| f.inline));
        let source = &t.messages["io.k8s.api.core.v1.VolumeSource"];
        assert!(source.fields.values().any(|f| f.json_name == "scaleIO"));
    }

    #[test]
    fn kinds_map_to_their_messages() {
        let t = table();
        assert_eq!(
            t.message_for("apps/v1", "Deployment"),
            Some("io.k8s.api.apps.v1.Deployment")
        );
        assert_eq!(
            t.message_for("v1", "Namespace"),
            Some("io.k8s.api.core.v1.Namespace")
        );
        assert_eq!(
            t.message_for("authentication.k8s.io/v1", "SelfSubjectReview"),
            Some("io.k8s.api.authentication.v1.SelfSubjectReview")
        );
        assert_eq!(
            t.message_for("apiregistration.k8s.io/v1", "APIService"),
            Some("io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService")
        );
        assert_eq!(t.message_for("v1", "Nope"), None);
    }
}
