//! Content negotiation: request bodies (JSON, YAML, protobuf) into JSON
//! values, and the response form an `Accept` header asks for (JSON, YAML,
//! Table, PartialObjectMetadata, aggregated discovery).

use serde_json::Value;

use super::status::ApiError;

/// One media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    pub mime: String,
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an `Accept` header into its media ranges, in order.
pub fn parse_accept(header: &str) -> Vec<MediaRange> {
    header
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let mime = it.next()?.trim().to_ascii_lowercase();
            if mime.is_empty() {
                return None;
            }
            let params = it
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                })
                .collect();
            Some(MediaRange { mime, params })
        })
        .collect()
}

/// `includeObject` of Table requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// The response form of an object or list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// `meta.k8s.io` Table, with that `apiVersion`.
    Table(&'static str),
    /// `meta.k8s.io` PartialObjectMetadata(List), with that `apiVersion`.
    PartialMetadata(&'static str),
}

fn meta_version(range: &MediaRange) -> Option<&'static str> {
    if range.param("g") != Some("meta.k8s.io") {
        return None;
    }
    match range.param("v") {
        Some("v1") => Some("meta.k8s.io/v1"),
        Some("v1beta1") => Some("meta.k8s.io/v1beta1"),
        _ => None,
    }
}

/// The first `Accept` entry this server can produce.
pub fn choose_output(accept: &str) -> Output {
    for range in parse_accept(accept) {
        let json_like = matches!(
            range.mime.as_str(),
            "application/json" | "*/*" | "application/*"
        );
        match range.param("as") {
            Some("Table") if json_like => {
                if let Some(v) = meta_version(&range) {
                    return Output::Table(v);
                }
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") if json_like => {
                if let Some(v) = meta_version(&range) {
                    return Output::PartialMetadata(v);
                }
            }
            Some(_) => {}
            None if json_like => return Output::Json,
            None if range.mime == "application/yaml" => return Output::Yaml,
            None => {}
        }
    }
    Output::Json
}

/// The aggregated discovery version the client accepts first, if any
/// (`v2` or `v2beta1`).
pub fn aggregated_discovery(accept: &str) -> Option<&'static str> {
    for range in parse_accept(accept) {
        if range.param("g") == Some("apidiscovery.k8s.io")
            && range.param("as") == Some("APIGroupDiscoveryList")
        {
            match range.param("v") {
                Some("v2") => return Some("v2"),
                Some("v2beta1") => return Some("v2beta1"),
                _ => {}
            }
        }
        if range.param("as").is_none() && matches!(range.mime.as_str(), "application/json" | "*/*")
        {
            return None;
        }
    }
    None
}

/// The format of a request body, by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    Protobuf,
}

pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, ApiError> {
    let Some(ct) = content_type else {
        return Ok(BodyFormat::Json);
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "" | "application/json" | "text/plain" | "*/*" => Ok(BodyFormat::Json),
        "application/yaml"
        | "application/x-yaml"
        | "text/yaml"
        | "application/apply-patch+yaml" => Ok(BodyFormat::Yaml),
        "application/vnd.kubernetes.protobuf" => Ok(BodyFormat::Protobuf),
        m if m.ends_with("+json") => Ok(BodyFormat::Json),
        _ => Err(ApiError::unsupported_media_type(ct)),
    }
}

/// Decodes a request body into a JSON value.
pub fn decode_body(format: BodyFormat, body: &[u8]) -> Result<Value, ApiError> {
    match format {
        BodyFormat::Json => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        BodyFormat::Yaml => {
            let v: serde_yaml::Value = serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })?;
            serde_json::to_value(v).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })
        }
        BodyFormat::Protobuf => crate::protobuf::decode(body).map_err(|e| match e {
            crate::protobuf::ProtobufError::Unsupported(_) => {
                ApiError::new(415, "UnsupportedMediaType", e.to_string())
            }
            other => ApiError::bad_request(other.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_accept_asks_for_a_table() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(choose_output(accept), Output::Table("meta.k8s.io/v1"));
        assert_eq!(
            choose_output("application/vnd.kubernetes.protobuf,application/json"),
            Output::Json
        );
        assert_eq!(choose_output("application/yaml"), Output::Yaml);
        assert_eq!(choose_output(""), Output::Json);
    }

    #[test]
    fn discovery_accept_selects_aggregated_version() {
        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_discovery(accept), Some("v2"));
        assert_eq!(aggregated_discovery("application/json"), None);
        assert_eq!(
            aggregated_discovery(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            ),
            Some("v2beta1")
        );
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let err = decode_body(BodyFormat::Json, b"{nope").unwrap_err();
        assert_eq!(err.code, 400);
    }
}
