//! Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`): the
//! `k8s\0` envelope around a `runtime.Unknown` holding the typed message.
//! Decodes request bodies of built-in types into their JSON form.
//!
//! Decoding is generic: `descriptors.txt` (generated from the k8s-pb crate)
//! gives each message's field numbers and kinds, the OpenAPI definitions give
//! the JSON field names, and `json` handles the few apimachinery types whose
//! JSON form differs from their message structure.

mod descriptors;
mod json;
mod wire;

use serde_json::Value;

use wire::{Reader, WireValue};

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body is not a kubernetes protobuf message: {0}")]
    Envelope(String),
    #[error("protobuf bodies of {0} are not supported")]
    Unsupported(String),
    #[error("the protobuf message of {kind} could not be decoded: {reason}")]
    Decode { kind: String, reason: String },
    #[error("malformed protobuf: {0}")]
    Wire(String),
}

/// The `runtime.Unknown` envelope.
struct Unknown<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

fn string(bytes: &[u8], what: &str) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ProtobufError::Envelope(format!("{what} is not UTF-8")))
}

fn parse_unknown(bytes: &[u8]) -> Result<Unknown<'_>, ProtobufError> {
    let mut unknown = Unknown {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
    };
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.next_field()? {
        let WireValue::Bytes(b) = wire else { continue };
        match tag {
            1 => {
                let mut type_meta = Reader::new(b);
                while let Some((tag, wire)) = type_meta.next_field()? {
                    match (tag, wire) {
                        (1, WireValue::Bytes(v)) => unknown.api_version = string(v, "apiVersion")?,
                        (2, WireValue::Bytes(v)) => unknown.kind = string(v, "kind")?,
                        _ => {}
                    }
                }
            }
            2 => unknown.raw = b,
            3 => unknown.content_encoding = string(b, "contentEncoding")?,
            _ => {}
        }
    }
    Ok(unknown)
}

/// Whether a value holds nothing but zero values.
fn all_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.iter().all(all_zero),
        Value::Object(map) => map.values().all(all_zero),
    }
}

/// Decodes a protobuf request body into the JSON object it stands for
/// (with `apiVersion` and `kind` set).
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| ProtobufError::Envelope("missing the k8s magic prefix".into()))?;
    let unknown = parse_unknown(envelope)?;
    if unknown.kind.is_empty() || unknown.api_version.is_empty() {
        return Err(ProtobufError::Envelope(
            "the apiVersion or kind is missing".into(),
        ));
    }
    if !unknown.content_encoding.is_empty() {
        return Err(ProtobufError::Envelope(format!(
            "content encoding {:?} is not supported",
            unknown.content_encoding
        )));
    }
    let table = descriptors::table();
    let message = table
        .message_for(&unknown.api_version, &unknown.kind)
        .ok_or_else(|| {
            ProtobufError::Unsupported(format!("{}, Kind={}", unknown.api_version, unknown.kind))
        })?;
    let mut object = json::message_to_json(table, message, unknown.raw)?;
    if let Value::Object(map) = &mut object {
        // Go writes a zero status in full (`{"token": "", "expirationTimestamp":
        // null}`); the typed k8s-openapi decoding needs it absent instead.
        if map.get("status").is_some_and(all_zero) {
            map.remove("status");
        }
        map.insert("apiVersion".into(), Value::String(unknown.api_version));
        map.insert("kind".into(), Value::String(unknown.kind));
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown as PbUnknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use prost::Message;
    use serde_json::json;

    /// A body as kubectl sends it: magic, then `runtime.Unknown`.
    fn envelope(api_version: &str, kind: &str, message: &impl Message) -> Vec<u8> {
        let unknown = PbUnknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(message.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn s(v: &str) -> Option<String> {
        Some(v.into())
    }

    /// ObjectMeta as Go's generated marshaller writes it: non-pointer
    /// fields always present, the zero creationTimestamp an empty message.
    fn go_meta(name: &str, labels: &[(&str, &str)]) -> meta::ObjectMeta {
        meta::ObjectMeta {
            name: s(name),
            generate_name: s(""),
            namespace: s(""),
            self_link: s(""),
            uid: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_a_namespace_as_kubectl_create_namespace_sends_it() {
        let ns = core::Namespace {
            metadata: Some(go_meta("foo", &[])),
            spec: Some(core::NamespaceSpec::default()),
            status: Some(core::NamespaceStatus {
                phase: s(""),
                ..Default::default()
            }),
        };
        let decoded = decode(&envelope("v1", "Namespace", &ns)).unwrap();
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}, "spec": {}})
        );
    }

    #[test]
    fn decodes_a_configmap_with_data_and_binary_data() {
        let cm = core::ConfigMap {
            metadata: Some(go_meta("cfg", &[])),
            immutable: None,
            data: [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), String::new()),
            ]
            .into(),
            binary_data: [("bin".to_string(), vec![0u8, 1, 2])].into(),
        };
        let decoded = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(
            decoded,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg"},
                "data": {"a": "1", "b": ""},
                "binaryData": {"bin": "AAEC"},
            })
        );
    }

    #[test]
    fn decodes_a_deployment_with_its_pod_template() {
        let labels = [("app", "web")];
        let container = core::Container {
            name: s("nginx"),
            image: s("nginx:1.27"),
            command: vec!["sleep".into(), "1".into()],
            ports: vec![core::ContainerPort {
                container_port: Some(80),
                protocol: s(""),
                name: s(""),
                host_ip: s(""),
                host_port: Some(0),
            }],
            resources: Some(core::ResourceRequirements {
                limits: [("cpu".to_string(), Quantity { string: s("500m") })].into(),
                ..Default::default()
            }),
            termination_message_path: s(""),
            image_pull_policy: s(""),
            stdin: Some(false),
            tty: Some(false),
            ..Default::default()
        };
        let deployment = apps::Deployment {
            metadata: Some(go_meta("web", &labels)),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                selector: Some(meta::LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(go_meta("", &labels)),
                    spec: Some(core::PodSpec {
                        containers: vec![container],
                        restart_policy: s(""),
                        dns_policy: s(""),
                        host_network: Some(false),
                        ..Default::default()
                    }),
                }),
                strategy: Some(apps::DeploymentStrategy {
                    r#type: s("RollingUpdate"),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_unavailable: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(0),
                            str_val: s(""),
                        }),
                        max_surge: Some(IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: s("25%"),
                        }),
                    }),
                }),
                min_ready_seconds: Some(0),
                paused: Some(false),
                ..Default::default()
            }),
            status: Some(apps::DeploymentStatus {
                observed_generation: Some(0),
                replicas: Some(0),
                ..Default::default()
            }),
        };
        let decoded = decode(&envelope("apps/v1", "Deployment", &deployment)).unwrap();
        assert_eq!(
            decoded,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "command": ["sleep", "1"],
                            "ports": [{"containerPort": 80}],
                            "resources": {"limits": {"cpu": "500m"}},
                        }]},
                    },
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                },
            })
        );
        // The result is a valid object of its type.
        let typed: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(decoded).unwrap();
        assert_eq!(
            typed.spec.unwrap().template.spec.unwrap().containers[0].name,
            "nginx"
        );
    }

    #[test]
    fn decodes_a_self_subject_review_and_times() {
        let mut metadata = go_meta("", &[]);
        metadata.creation_timestamp = Some(meta::Time {
            seconds: Some(1_700_000_000),
            nanos: Some(0),
        });
        let review = authn::SelfSubjectReview {
            metadata: Some(metadata),
            status: Some(authn::SelfSubjectReviewStatus::default()),
        };
        let decoded = decode(&envelope(
            "authentication.k8s.io/v1",
            "SelfSubjectReview",
            &review,
        ))
        .unwrap();
        assert_eq!(
            decoded,
            json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                "metadata": {"creationTimestamp": "2023-11-14T22:13:20Z"},
            })
        );
    }

    #[test]
    fn secrets_keep_bytes_as_base64() {
        let secret = core::Secret {
            metadata: Some(go_meta("s", &[])),
            data: [("k".to_string(), b"hello".to_vec())].into(),
            r#type: s("Opaque"),
            ..Default::default()
        };
        let decoded = decode(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(decoded["data"], json!({"k": "aGVsbG8="}));
        assert_eq!(decoded["type"], "Opaque");
    }

    #[test]
    fn unknown_kinds_are_unsupported_and_garbage_is_rejected() {
        let ns = core::Namespace::default();
        assert!(matches!(
            decode(&envelope("v1", "Frobnicator", &ns)),
            Err(ProtobufError::Unsupported(_))
        ));
        assert!(matches!(
            decode(b"{\"kind\":\"Namespace\"}"),
            Err(ProtobufError::Envelope(_))
        ));
        let mut truncated = envelope(
            "v1",
            "Namespace",
            &core::Namespace {
                metadata: Some(go_meta("x", &[])),
                ..Default::default()
            },
        );
        truncated.truncate(truncated.len() - 3);
        assert!(decode(&truncated).is_err());
    }
}
