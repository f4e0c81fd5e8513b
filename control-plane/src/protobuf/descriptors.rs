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

fn build() -> Table {
    let defs = &definitions().defs;
    // prost renames messages (`APIService` → `ApiService`): match
    // definitions case-insensitively.
    let def_by_lower: HashMap<String, &str> = defs
        .keys()
        .map(|k| (k.to_lowercase(), k.as_str()))
        .collect();
    let mut messages = HashMap::new();
    let mut by_kind = HashMap::new();
    let mut current: Option<(String, Option<&Value>, Message)> = None;
    for line in TABLE.lines() {
        if let Some(name) = line.strip_prefix("message ") {
            if let Some((name, _, message)) = current.take() {
                messages.insert(name, message);
            }
            let def_name = def_by_lower.get(&name.to_lowercase()).copied();
            let def = def_name.and_then(|d| defs.get(d));
            if let Some(gvks) = def
                .and_then(|d| d.get("x-kubernetes-group-version-kind"))
                .and_then(Value::as_array)
            {
                for gvk in gvks {
                    let group = gvk["group"].as_str().unwrap_or_default();
                    let version = gvk["version"].as_str().unwrap_or_default();
                    let api_version = if group.is_empty() {
                        version.to_owned()
                    } else {
                        format!("{group}/{version}")
                    };
                    let kind = gvk["kind"].as_str().unwrap_or_default().to_owned();
                    by_kind.insert((api_version, kind), name.to_owned());
                }
            }
            current = Some((name.to_owned(), def, Message::default()));
            continue;
        }
        let (Some(raw), Some((_, def, message))) = (parse_field(line), current.as_mut()) else {
            tracing::warn!(line, "malformed protobuf descriptor line");
            continue;
        };
        let def = *def;
        let normalized = raw.name.replace('_', "");
        let property = def
            .and_then(|d| d.get("properties"))
            .and_then(Value::as_object)
            .and_then(|props| props.keys().find(|p| p.to_lowercase() == normalized));
        let json_name = property.cloned().unwrap_or_else(|| lower_camel(raw.name));
        let required = def
            .and_then(|d| d.get("required"))
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|n| *n == *json_name));
        message.fields.insert(
            raw.tag,
            Field {
                json_name,
                label: raw.label,
                kind: raw.kind,
                required,
            },
        );
    }
    if let Some((name, _, message)) = current.take() {
        messages.insert(name, message);
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
