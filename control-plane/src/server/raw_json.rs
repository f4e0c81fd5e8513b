//! The served JSON of a stored object written straight from its stored
//! bytes: the same object `objects::decode_at` gives once serialized, but
//! without building a `serde_json::Value` of it. Watch lines are most of
//! what a busy server encodes (every pod binding is a line for each
//! informer), and decoding the stored object into a tree only to write it
//! out again was most of their cost.
//!
//! Only the top level and `metadata` are parsed (as raw slices); the rest is
//! copied. Keys keep their stored order, except that `resourceVersion`
//! comes first in `metadata`.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::registry::convert;
use crate::resources::ResourceType;
use crate::storage::Revision;

/// A JSON object's entries as raw slices, in key order.
pub(super) type RawObject<'a> = BTreeMap<&'a str, &'a RawValue>;

/// The object at `revision` in `resource`'s served version, or `None` when
/// its conversion changes more than `apiVersion` and `kind` or the stored
/// bytes are not a plain object (the caller then decodes it).
pub fn object_at(resource: &ResourceType, stored: &[u8], revision: Revision) -> Option<Vec<u8>> {
    if !convert::keeps_body(resource) {
        return None;
    }
    let top: RawObject = serde_json::from_slice(stored).ok()?;
    let mut out = Vec::with_capacity(stored.len() + 64);
    out.push(b'{');
    write_entry(&mut out, "apiVersion", resource.api_version);
    out.push(b',');
    write_entry(&mut out, "kind", resource.kind);
    let mut has_metadata = false;
    for (key, value) in &top {
        match *key {
            "apiVersion" | "kind" => continue,
            "metadata" => {
                has_metadata = true;
                out.push(b',');
                write_key(&mut out, "metadata");
                write_metadata(&mut out, value, revision)?;
            }
            _ => {
                out.push(b',');
                write_key(&mut out, key);
                out.extend_from_slice(value.get().as_bytes());
            }
        }
    }
    if !has_metadata {
        out.extend_from_slice(b",\"metadata\":");
        write_metadata(&mut out, RawValue::NULL, revision)?;
    }
    out.push(b'}');
    Some(out)
}

/// `PartialObjectMetadata` of `api_version` for the object at `revision`,
/// as `meta::partial_metadata` of the decoded object gives it.
pub fn partial_metadata_at(
    resource: &ResourceType,
    api_version: &str,
    stored: &[u8],
    revision: Revision,
) -> Option<Vec<u8>> {
    if !convert::keeps_metadata(resource) {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Stored<'a> {
        #[serde(borrow)]
        metadata: Option<&'a RawValue>,
    }
    let stored: Stored = serde_json::from_slice(stored).ok()?;
    let mut out = Vec::with_capacity(512);
    out.push(b'{');
    write_entry(&mut out, "apiVersion", api_version);
    out.extend_from_slice(b",\"kind\":\"PartialObjectMetadata\",\"metadata\":");
    write_metadata(
        &mut out,
        stored.metadata.unwrap_or(RawValue::NULL),
        revision,
    )?;
    out.push(b'}');
    Some(out)
}

/// `metadata` with `resourceVersion` set to `revision`.
fn write_metadata(out: &mut Vec<u8>, metadata: &RawValue, revision: Revision) -> Option<()> {
    let fields: RawObject = match metadata.get() {
        "null" => RawObject::new(),
        raw => serde_json::from_str(raw).ok()?,
    };
    out.push(b'{');
    write_entry(out, "resourceVersion", &revision.to_string());
    for (key, value) in fields {
        if key != "resourceVersion" {
            out.push(b',');
            write_key(out, key);
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    out.push(b'}');
    Some(())
}

/// Writes `fields` as a JSON object.
pub(super) fn write_object(out: &mut Vec<u8>, fields: &RawObject) {
    out.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(out, key);
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
}

fn write_entry(out: &mut Vec<u8>, key: &str, value: &str) {
    write_key(out, key);
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::server::{meta, objects};

    fn stored(obj: &Value) -> Vec<u8> {
        serde_json::to_vec(obj).unwrap()
    }

    #[test]
    fn the_served_object_is_the_decoded_one() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        for obj in [
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "default", "labels": {"a": "b\"c"},
                    "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "n1"},
                "status": {"phase": "Pending"}}),
            json!({"metadata": {}, "spec": {}}),
            json!({"spec": {"x": [1, 2.5, null, true]}}),
        ] {
            let bytes = stored(&obj);
            let raw = object_at(pods, &bytes, 42).expect("a plain object");
            let raw: Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(raw, objects::decode_at(pods, &bytes, 42).unwrap());
            assert_eq!(raw["metadata"]["resourceVersion"], "42");
        }
    }

    #[test]
    fn partial_metadata_is_the_decoded_objects() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        let obj = json!({"metadata": {"name": "p", "ownerReferences": [{"uid": "u"}]}, "spec": {}});
        let bytes = stored(&obj);
        let raw = partial_metadata_at(pods, "meta.k8s.io/v1", &bytes, 7).unwrap();
        let decoded = objects::decode_at(pods, &bytes, 7).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&raw).unwrap(),
            meta::partial_metadata(&decoded, "meta.k8s.io/v1")
        );
    }

    #[test]
    fn converted_resources_and_odd_bytes_are_left_to_the_decoder() {
        let hpa_v1 =
            crate::resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        assert!(object_at(hpa_v1, b"{}", 1).is_none());
        assert!(partial_metadata_at(hpa_v1, "meta.k8s.io/v1", b"{}", 1).is_none());
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        assert!(object_at(pods, b"[1]", 1).is_none());
        assert!(object_at(pods, b"{\"metadata\": 3}", 1).is_none());
    }
}
