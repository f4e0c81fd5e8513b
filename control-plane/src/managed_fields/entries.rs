//! `metadata.managedFields`: decoding the stored entries into field sets
//! and encoding them back in upstream's order (Apply entries first, then
//! by time, manager, apiVersion and subresource).

use serde_json::{Map, Value, json};

use super::set::{FieldSet, FieldsV1Error};

/// `operation` of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// One `ManagedFieldsEntry`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    /// Whether two entries are the same manager as upstream's manager
    /// identifier: appliers are one manager across apiVersions.
    pub fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// The manager as conflict messages name it:
    /// `"kubectl" with subresource "scale" using apps/v1`.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EntriesError {
    #[error("managedFields must be a list")]
    NotAList,
    #[error("managedFields[{0}] must be an object")]
    NotAnObject(usize),
    #[error("managedFields[{0}]: operation must be Apply or Update")]
    Operation(usize),
    #[error("managedFields[{0}]: fieldsType must be FieldsV1")]
    FieldsType(usize),
    #[error("managedFields[{index}]: invalid fieldsV1")]
    Fields {
        index: usize,
        #[source]
        source: FieldsV1Error,
    },
}

/// The `[{}]` a client sends to clear managedFields.
pub fn is_reset(list: &Value) -> bool {
    list.as_array()
        .is_some_and(|a| a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty))
}

/// Decodes a managedFields list; entries of the same manager are merged.
pub fn decode(list: &Value) -> Result<Vec<Entry>, EntriesError> {
    let items = list.as_array().ok_or(EntriesError::NotAList)?;
    let mut out: Vec<Entry> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let obj = item.as_object().ok_or(EntriesError::NotAnObject(index))?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let operation = match s("operation").as_str() {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return Err(EntriesError::Operation(index)),
        };
        if !matches!(s("fieldsType").as_str(), "" | "FieldsV1") {
            return Err(EntriesError::FieldsType(index));
        }
        let fields = match obj.get("fieldsV1") {
            Some(v) => FieldSet::from_fields_v1(v)
                .map_err(|source| EntriesError::Fields { index, source })?,
            None => FieldSet::new(),
        };
        let entry = Entry {
            manager: s("manager"),
            operation,
            api_version: s("apiVersion"),
            time: obj.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource"),
            fields,
        };
        match out.iter_mut().find(|e| e.same_manager(&entry)) {
            Some(e) => e.fields.union(&entry.fields),
            None => out.push(entry),
        }
    }
    Ok(out)
}

/// Encodes entries in upstream's order, dropping those that own nothing.
pub fn encode(entries: &[Entry]) -> Value {
    let mut sorted: Vec<&Entry> = entries.iter().filter(|e| !e.fields.is_empty()).collect();
    sorted.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| seconds(a).cmp(&seconds(b)))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    Value::Array(sorted.into_iter().map(encode_entry).collect())
}

pub(super) fn seconds(e: &Entry) -> i64 {
    e.time
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp())
}

fn encode_entry(e: &Entry) -> Value {
    let mut obj = Map::new();
    if !e.manager.is_empty() {
        obj.insert("manager".into(), json!(e.manager));
    }
    obj.insert("operation".into(), json!(e.operation.as_str()));
    obj.insert("apiVersion".into(), json!(e.api_version));
    if let Some(t) = &e.time {
        obj.insert("time".into(), json!(t));
    }
    obj.insert("fieldsType".into(), json!("FieldsV1"));
    obj.insert("fieldsV1".into(), e.fields.to_fields_v1());
    if !e.subresource.is_empty() {
        obj.insert("subresource".into(), json!(e.subresource));
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_roundtrip_and_sort_apply_first() {
        let list = json!([
            {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:02Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:b": {}}}},
            {"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": "2026-01-01T00:00:05Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}},
            {"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:01Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:c": {}}}, "subresource": "status"}
        ]);
        let entries = decode(&list).unwrap();
        let out = encode(&entries);
        let managers: Vec<&str> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["kubectl", "kubectl-create", "kubectl-edit"]);
        assert_eq!(out[1]["subresource"], "status");
        assert_eq!(decode(&out).unwrap().len(), 3);
    }

    #[test]
    fn describe_matches_upstream_conflict_wording() {
        let mut e = decode(&json!([{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1", "subresource": "scale", "fieldsV1": {}}])).unwrap().remove(0);
        assert_eq!(
            e.describe(),
            r#""kubectl" with subresource "scale" using apps/v1"#
        );
        e.operation = Operation::Apply;
        e.subresource.clear();
        assert_eq!(e.describe(), r#""kubectl""#);
    }

    #[test]
    fn invalid_lists_and_reset_are_recognised() {
        assert!(decode(&json!({})).is_err());
        assert!(decode(&json!([{"operation": "Patch"}])).is_err());
        assert!(is_reset(&json!([{}])));
        assert!(!is_reset(&json!([])));
    }
}
