//! The write of `pods/binding` as an edit of the stored pod's bytes: set
//! `spec.nodeName` and the PodScheduled condition, copy everything else.
//! The scheduler binds thousands of pods a second; decoding each whole pod
//! (its managedFields, containers, volumes) into a `serde_json::Value` and
//! encoding it again was most of a binding's cost.
//!
//! Only the top level and `spec` are parsed as raw slices, and `status` in
//! full (a pending pod's status is a few fields). The bytes written are the
//! ones encoding the decoded and edited object gives: keys stay sorted.

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::meta::set_condition;
use super::negotiate::{BodyFormat, decode_body};
use super::raw_json::{RawObject, write_object};
use super::status::ApiError;

/// What the body of a binding (`pods/binding`, `bindings`) says: the pod,
/// for `bindings`, and the node. Read into this rather than into a whole
/// `Value`: the scheduler posts thousands of bindings a second.
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
pub struct BindingRequest {
    #[serde(default)]
    pub metadata: NameOnly,
    #[serde(default)]
    pub target: NameOnly,
}

/// An object's or a reference's `name`, all of it a binding reads.
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
pub struct NameOnly {
    #[serde(default)]
    pub name: Option<String>,
}

impl BindingRequest {
    /// Reads a binding's body of `format`.
    pub fn decode(format: BodyFormat, body: &[u8]) -> Result<Self, ApiError> {
        let binding = match format {
            BodyFormat::Json => serde_json::from_slice(body),
            other => serde_json::from_value(decode_body(other, body)?),
        };
        binding.map_err(|e| {
            ApiError::bad_request(format!("the request body is not a valid Binding: {e}"))
        })
    }

    /// The node to bind to ("" when the body names none).
    pub fn node(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }
}

/// What a stored pod allows a binding to do.
#[derive(Debug, PartialEq)]
pub enum Binding {
    /// It has a deletionTimestamp.
    Deleting,
    /// It is already assigned to this node.
    Assigned(String),
    /// The pod to store: bound to the node, PodScheduled=True.
    Bound(Vec<u8>),
}

/// Binds the stored pod `stored` to `node` at `now` (RFC 3339); an error
/// when the stored bytes are not a pod object.
pub fn bind(stored: &[u8], node: &str, now: &str) -> Result<Binding, serde_json::Error> {
    let mut top: RawObject = serde_json::from_slice(stored)?;
    if let Some(metadata) = top.get("metadata") {
        #[derive(serde::Deserialize)]
        struct Metadata<'a> {
            #[serde(rename = "deletionTimestamp", default, borrow)]
            deletion_timestamp: Option<&'a RawValue>,
        }
        let metadata: Option<Metadata> = serde_json::from_str(metadata.get())?;
        if metadata.is_some_and(|m| m.deletion_timestamp.is_some()) {
            return Ok(Binding::Deleting);
        }
    }
    let mut spec: RawObject = match top.get("spec") {
        Some(spec) => serde_json::from_str::<Option<RawObject>>(spec.get())?.unwrap_or_default(),
        None => RawObject::new(),
    };
    if let Some(current) = spec.get("nodeName") {
        let current: Option<String> = serde_json::from_str(current.get())?;
        if let Some(current) = current.filter(|n| !n.is_empty()) {
            return Ok(Binding::Assigned(current));
        }
    }
    let node = serde_json::value::to_raw_value(node)?;
    spec.insert("nodeName", &node);
    let mut status: Value = match top.get("status") {
        Some(status) => serde_json::from_str(status.get())?,
        None => Value::Null,
    };
    set_condition(&mut status, scheduled(now));
    let status = serde_json::value::to_raw_value(&status)?;
    top.insert("status", &status);
    let mut spec_bytes = Vec::with_capacity(stored.len());
    write_object(&mut spec_bytes, &spec);
    // Written from raw slices of valid JSON: valid JSON.
    let spec = RawValue::from_string(String::from_utf8(spec_bytes).unwrap_or_default())?;
    top.insert("spec", &spec);
    let mut out = Vec::with_capacity(stored.len() + 128);
    write_object(&mut out, &top);
    Ok(Binding::Bound(out))
}

/// The condition a binding sets.
fn scheduled(now: &str) -> Value {
    json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::objects;

    /// The bytes the decoding path stored: decode, edit as a Value, encode.
    fn bound_by_decoding(stored: &Value, node: &str, now: &str) -> Vec<u8> {
        let mut new = stored.clone();
        new["spec"]["nodeName"] = json!(node);
        set_condition(&mut new["status"], scheduled(now));
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        objects::encode(pods, &new).unwrap()
    }

    #[test]
    fn a_binding_stores_what_editing_the_decoded_pod_stores() {
        let now = "2026-11-28T03:00:00Z";
        for pod in [
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "default", "uid": "u",
                    "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"f:containers": {}}}}]},
                "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}],
                    "schedulerName": "default-scheduler", "tolerations": [{"key": "k", "operator": "Exists"}]},
                "status": {"phase": "Pending", "qosClass": "Burstable",
                    "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"},
                        {"type": "Other", "status": "True"}]}}),
            json!({"metadata": {"name": "p", "deletionTimestamp": null}, "spec": {"nodeName": ""}}),
            json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": null}),
            json!({"metadata": {"name": "p"}}),
        ] {
            let stored = serde_json::to_vec(&pod).unwrap();
            let Binding::Bound(bytes) = bind(&stored, "node-1", now).unwrap() else {
                panic!("{pod} is bindable");
            };
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                String::from_utf8(bound_by_decoding(&pod, "node-1", now)).unwrap()
            );
        }
    }

    #[test]
    fn a_binding_body_gives_its_pod_and_node() {
        let read = |body: &str| BindingRequest::decode(BodyFormat::Json, body.as_bytes());
        let full = read(
            r#"{"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "namespace": "ns",
                "uid": "u"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}"#,
        )
        .unwrap();
        assert_eq!(full.metadata.name.as_deref(), Some("p"));
        assert_eq!(full.node(), "n1");
        assert_eq!(read("{}").unwrap(), BindingRequest::default());
        assert_eq!(read(r#"{"target": {"name": null}}"#).unwrap().node(), "");
        assert!(read(r#"{"target": {"name": 3}}"#).is_err());
        assert!(read("3").is_err());
        let yaml = BindingRequest::decode(
            BodyFormat::Yaml,
            b"metadata: {name: p}\ntarget: {name: n1}\n",
        )
        .unwrap();
        assert_eq!(
            (yaml.metadata.name.as_deref(), yaml.node()),
            (Some("p"), "n1")
        );
    }

    #[test]
    fn deleting_and_assigned_pods_are_not_bound() {
        let deleting =
            br#"{"metadata":{"name":"p","deletionTimestamp":"2026-01-01T00:00:00Z"},"spec":{}}"#;
        assert_eq!(bind(deleting, "n", "t").unwrap(), Binding::Deleting);
        let assigned = br#"{"metadata":{"name":"p"},"spec":{"nodeName":"n0"}}"#;
        assert_eq!(
            bind(assigned, "n", "t").unwrap(),
            Binding::Assigned("n0".into())
        );
        assert!(bind(b"[1]", "n", "t").is_err());
        assert!(bind(br#"{"spec": 3}"#, "n", "t").is_err());
    }
}
