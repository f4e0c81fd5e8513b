//! Volume payloads as kubelet builds them: configMap and secret
//! (`MakePayload`), downwardAPI (`CollectData`) and projected volumes, from
//! objects the caller already fetched. No I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIVolumeFile, KeyToPath, Pod,
    ProjectedVolumeSource, ResourceFieldSelector, Secret, SecretProjection, SecretVolumeSource,
};

use super::atomic_writer::{FileProjection, Payload};
use crate::quantity::ParsedQuantity;

/// The API's default file mode for these volumes.
pub const DEFAULT_MODE: i32 = 0o644;

/// Why a payload could not be built; messages are kubelet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("configmaps {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secrets {0:?} not found")]
    SecretNotFound(String),
    #[error("configmap references non-existent config key: {0}")]
    MissingConfigKey(String),
    #[error("references non-existent secret key: {0}")]
    MissingSecretKey(String),
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("failed to get a service account token for audience {0:?}")]
    NoToken(String),
    #[error("invalid quantity {0:?}")]
    Quantity(String),
    /// Several sources failed (upstream's aggregate: `[e1, e2]`).
    #[error("[{}]", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Aggregate(Vec<PayloadError>),
}

/// Objects and values a payload may draw from, fetched by the caller.
#[derive(Debug, Clone, Default)]
pub struct PayloadSources {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// Service account tokens by audience (`""` for the API server's).
    pub tokens: BTreeMap<String, String>,
    /// Node allocatable, the fallback of unset container limits.
    pub node_allocatable: BTreeMap<String, ParsedQuantity>,
}

fn mode_bits(mode: i32) -> u32 {
    mode.unsigned_abs() & 0o7777
}

fn file(data: Vec<u8>, mode: i32) -> FileProjection {
    FileProjection {
        data,
        mode: mode_bits(mode),
    }
}

/// kubelet's `configmap.MakePayload`.
pub fn config_map_payload(
    items: Option<&[KeyToPath]>,
    cm: &ConfigMap,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, PayloadError> {
    let mut payload = Payload::new();
    let data = cm.data.clone().unwrap_or_default();
    let binary = cm.binary_data.clone().unwrap_or_default();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                payload.insert(k, file(v.into_bytes(), default_mode));
            }
            for (k, v) in binary {
                payload.insert(k, file(v.0, default_mode));
            }
        }
        Some(items) => {
            for item in items {
                let bytes = if let Some(v) = data.get(&item.key) {
                    v.clone().into_bytes()
                } else if let Some(v) = binary.get(&item.key) {
                    v.0.clone()
                } else if optional {
                    continue;
                } else {
                    return Err(PayloadError::MissingConfigKey(item.key.clone()));
                };
                payload.insert(
                    item.path.clone(),
                    file(bytes, item.mode.unwrap_or(default_mode)),
                );
            }
        }
    }
    Ok(payload)
}

/// kubelet's `secret.MakePayload`.
pub fn secret_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, PayloadError> {
    let mut payload = Payload::new();
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    // stringData is merged into data by the API server; accept it unmerged too.
    for (k, v) in secret.string_data.clone().unwrap_or_default() {
        data.entry(k).or_insert_with(|| v.into_bytes());
    }
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                payload.insert(k, file(v, default_mode));
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(PayloadError::MissingSecretKey(item.key.clone()));
                };
                payload.insert(
                    item.path.clone(),
                    file(v.clone(), item.mode.unwrap_or(default_mode)),
                );
            }
        }
    }
    Ok(payload)
}

fn lookup_config_map(
    sources: &PayloadSources,
    name: &str,
    optional: bool,
) -> Result<ConfigMap, PayloadError> {
    match sources.config_maps.get(name) {
        Some(cm) => Ok(cm.clone()),
        None if optional => Ok(ConfigMap::default()),
        None => Err(PayloadError::ConfigMapNotFound(name.to_owned())),
    }
}

fn lookup_secret(
    sources: &PayloadSources,
    name: &str,
    optional: bool,
) -> Result<Secret, PayloadError> {
    match sources.secrets.get(name) {
        Some(s) => Ok(s.clone()),
        None if optional => Ok(Secret::default()),
        None => Err(PayloadError::SecretNotFound(name.to_owned())),
    }
}

/// The payload of a configMap volume.
pub fn config_map_volume_payload(
    source: &ConfigMapVolumeSource,
    sources: &PayloadSources,
) -> Result<Payload, PayloadError> {
    let optional = source.optional == Some(true);
    let cm = lookup_config_map(sources, &source.name, optional)?;
    config_map_payload(
        source.items.as_deref(),
        &cm,
        source.default_mode.unwrap_or(DEFAULT_MODE),
        optional,
    )
}

/// The payload of a secret volume.
pub fn secret_volume_payload(
    source: &SecretVolumeSource,
    sources: &PayloadSources,
) -> Result<Payload, PayloadError> {
    let optional = source.optional == Some(true);
    let name = source.secret_name.clone().unwrap_or_default();
    let secret = lookup_secret(sources, &name, optional)?;
    secret_payload(
        source.items.as_deref(),
        &secret,
        source.default_mode.unwrap_or(DEFAULT_MODE),
        optional,
    )
}

/// Go's `%q` for the strings labels and annotations hold.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// kubelet's `fieldpath.FormatMap`: sorted `key="value"` lines.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// kubelet's `fieldpath.ExtractFieldPathAsString` (the metadata fields a
/// downwardAPI volume may use).
pub fn extract_field_path(pod: &Pod, path: &str) -> Result<String, PayloadError> {
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
    };
    if let Some(key) = subscript("metadata.annotations") {
        return Ok(meta
            .annotations
            .as_ref()
            .unwrap_or(&empty)
            .get(key)
            .cloned()
            .unwrap_or_default());
    }
    if let Some(key) = subscript("metadata.labels") {
        return Ok(meta
            .labels
            .as_ref()
            .unwrap_or(&empty)
            .get(key)
            .cloned()
            .unwrap_or_default());
    }
    match path {
        "metadata.annotations" => Ok(format_map(meta.annotations.as_ref().unwrap_or(&empty))),
        "metadata.labels" => Ok(format_map(meta.labels.as_ref().unwrap_or(&empty))),
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        _ => Err(PayloadError::UnsupportedFieldPath(path.to_owned())),
    }
}

fn parse_q(
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<ParsedQuantity, PayloadError> {
    ParsedQuantity::from_quantity(q).map_err(|_| PayloadError::Quantity(q.0.clone()))
}

/// kubelet's `ExtractResourceValueByContainerNameAndNodeAllocatable`: the
/// container's request or limit (limits fall back to node allocatable),
/// divided by the divisor and rounded up.
pub fn extract_resource_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    container_name: &str,
    node_allocatable: &BTreeMap<String, ParsedQuantity>,
) -> Result<String, PayloadError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container_name)
        .ok_or_else(|| PayloadError::ContainerNotFound(container_name.to_owned()))?;
    let divisor = match &selector.divisor {
        Some(d) => parse_q(d)?,
        None => ParsedQuantity::from_i64(1, crate::quantity::Format::DecimalSI),
    };
    let divisor = if divisor.is_zero() {
        ParsedQuantity::from_i64(1, crate::quantity::Format::DecimalSI)
    } else {
        divisor
    };
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| PayloadError::UnsupportedResource(selector.resource.clone()))?;
    if !matches!(resource, "cpu" | "memory" | "ephemeral-storage")
        && !resource.starts_with("hugepages-")
    {
        return Err(PayloadError::UnsupportedResource(selector.resource.clone()));
    }
    let res = container.resources.clone().unwrap_or_default();
    let value = match kind {
        "limits" => match res.limits.as_ref().and_then(|l| l.get(resource)) {
            Some(q) => parse_q(q)?,
            None => node_allocatable
                .get(resource)
                .copied()
                .unwrap_or_else(|| ParsedQuantity::zero(crate::quantity::Format::DecimalSI)),
        },
        "requests" => match res.requests.as_ref().and_then(|l| l.get(resource)) {
            Some(q) => parse_q(q)?,
            None => ParsedQuantity::zero(crate::quantity::Format::DecimalSI),
        },
        _ => return Err(PayloadError::UnsupportedResource(selector.resource.clone())),
    };
    let out = if resource == "cpu" {
        let d = divisor.milli_value().max(1);
        ceil_div(value.milli_value(), d)
    } else {
        let d = divisor.value().max(1);
        ceil_div(value.value(), d)
    };
    Ok(out.to_string())
}

fn ceil_div(n: i64, d: i64) -> i64 {
    let q = n / d;
    if n % d != 0 && n > 0 { q + 1 } else { q }
}

/// kubelet's `downwardapi.CollectData`: every item is tried; errors are aggregated.
pub fn downward_api_payload(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    default_mode: i32,
    sources: &PayloadSources,
) -> Result<Payload, PayloadError> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let mode = item.mode.unwrap_or(default_mode);
        let value = if let Some(field) = &item.field_ref {
            extract_field_path(pod, &field.field_path)
        } else if let Some(res) = &item.resource_field_ref {
            extract_resource_value(
                res,
                pod,
                res.container_name.as_deref().unwrap_or_default(),
                &sources.node_allocatable,
            )
        } else {
            Ok(String::new())
        };
        match value {
            Ok(v) => {
                payload.insert(item.path.clone(), file(v.into_bytes(), mode));
            }
            Err(e) => errors.push(e),
        }
    }
    aggregate(errors).map(|()| payload)
}

fn aggregate(mut errors: Vec<PayloadError>) -> Result<(), PayloadError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(PayloadError::Aggregate(errors)),
    }
}

fn projected_config_map(
    p: &ConfigMapProjection,
    sources: &PayloadSources,
    default_mode: i32,
) -> Result<Payload, PayloadError> {
    let optional = p.optional == Some(true);
    let name = p.name.clone();
    let cm = lookup_config_map(sources, &name, optional)?;
    config_map_payload(p.items.as_deref(), &cm, default_mode, optional)
}

fn projected_secret(
    p: &SecretProjection,
    sources: &PayloadSources,
    default_mode: i32,
) -> Result<Payload, PayloadError> {
    let optional = p.optional == Some(true);
    let name = p.name.clone();
    let secret = lookup_secret(sources, &name, optional)?;
    secret_payload(p.items.as_deref(), &secret, default_mode, optional)
}

/// The payload of a projected volume: each source merged in order.
pub fn projected_payload(
    source: &ProjectedVolumeSource,
    pod: &Pod,
    sources: &PayloadSources,
) -> Result<Payload, PayloadError> {
    let default_mode = source.default_mode.unwrap_or(DEFAULT_MODE);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for s in source.sources.iter().flatten() {
        let part = if let Some(cm) = &s.config_map {
            projected_config_map(cm, sources, default_mode)
        } else if let Some(secret) = &s.secret {
            projected_secret(secret, sources, default_mode)
        } else if let Some(d) = &s.downward_api {
            downward_api_payload(
                d.items.as_deref().unwrap_or_default(),
                pod,
                default_mode,
                sources,
            )
        } else if let Some(t) = &s.service_account_token {
            let audience = t.audience.clone().unwrap_or_default();
            match sources.tokens.get(&audience) {
                Some(token) => Ok(Payload::from([(
                    t.path.clone(),
                    file(token.clone().into_bytes(), default_mode),
                )])),
                None => Err(PayloadError::NoToken(audience)),
            }
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(p) => payload.extend(p),
            Err(e) => errors.push(e),
        }
    }
    aggregate(errors).map(|()| payload)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        Container, DownwardAPIProjection, ObjectFieldSelector, PodSpec, ResourceRequirements,
        ServiceAccountTokenProjection, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn cm() -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([
                ("game.properties".to_owned(), "lives=3".to_owned()),
                ("ui".to_owned(), "dark".to_owned()),
            ])),
            binary_data: Some(BTreeMap::from([("bin".to_owned(), ByteString(vec![0, 1]))])),
            ..ConfigMap::default()
        }
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.to_owned(),
            path: path.to_owned(),
            mode,
        }
    }

    #[test]
    fn config_map_without_items_projects_every_key_with_default_mode() {
        let p = config_map_payload(None, &cm(), DEFAULT_MODE, false).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p["game.properties"].data, b"lives=3");
        assert_eq!(p["game.properties"].mode, 0o644);
        assert_eq!(p["bin"].data, vec![0, 1]);
    }

    #[test]
    fn config_map_items_choose_paths_and_modes() {
        let items = [
            item("ui", "conf/ui.txt", Some(0o400)),
            item("bin", "b", None),
        ];
        let p = config_map_payload(Some(&items), &cm(), 0o600, false).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["conf/ui.txt"].mode, 0o400);
        assert_eq!(p["b"].mode, 0o600);
    }

    #[test]
    fn missing_keys_fail_unless_optional() {
        let items = [item("x", "x", None)];
        assert_eq!(
            config_map_payload(Some(&items), &cm(), DEFAULT_MODE, false)
                .unwrap_err()
                .to_string(),
            "configmap references non-existent config key: x"
        );
        assert!(
            config_map_payload(Some(&items), &cm(), DEFAULT_MODE, true)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            secret_payload(Some(&items), &Secret::default(), DEFAULT_MODE, false)
                .unwrap_err()
                .to_string(),
            "references non-existent secret key: x"
        );
    }

    #[test]
    fn missing_objects_fail_unless_optional() {
        let mut src = ConfigMapVolumeSource {
            name: "absent".to_owned(),
            ..ConfigMapVolumeSource::default()
        };
        let sources = PayloadSources::default();
        assert_eq!(
            config_map_volume_payload(&src, &sources)
                .unwrap_err()
                .to_string(),
            "configmaps \"absent\" not found"
        );
        src.optional = Some(true);
        assert!(
            config_map_volume_payload(&src, &sources)
                .unwrap()
                .is_empty()
        );
        let secret = SecretVolumeSource {
            secret_name: Some("s".to_owned()),
            ..SecretVolumeSource::default()
        };
        assert_eq!(
            secret_volume_payload(&secret, &sources)
                .unwrap_err()
                .to_string(),
            "secrets \"s\" not found"
        );
    }

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-0".to_owned());
        p.metadata.namespace = Some("default".to_owned());
        p.metadata.uid = Some("u-1".to_owned());
        p.metadata.labels = Some(BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "a \"b\"".to_owned()),
        ]));
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "c".to_owned(),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([(
                        "memory".to_owned(),
                        Quantity("64Mi".to_owned()),
                    )])),
                    requests: Some(BTreeMap::from([(
                        "cpu".to_owned(),
                        Quantity("250m".to_owned()),
                    )])),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        p
    }

    fn field_item(path: &str, field: &str) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.to_owned(),
            field_ref: Some(ObjectFieldSelector {
                field_path: field.to_owned(),
                api_version: None,
            }),
            ..DownwardAPIVolumeFile::default()
        }
    }

    fn resource_item(path: &str, resource: &str, divisor: Option<&str>) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.to_owned(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("c".to_owned()),
                resource: resource.to_owned(),
                divisor: divisor.map(|d| Quantity(d.to_owned())),
            }),
            ..DownwardAPIVolumeFile::default()
        }
    }

    #[test]
    fn downward_api_renders_metadata_like_kubelet() {
        let items = [
            field_item("labels", "metadata.labels"),
            field_item("name", "metadata.name"),
            field_item("app", "metadata.labels['app']"),
        ];
        let p =
            downward_api_payload(&items, &pod(), DEFAULT_MODE, &PayloadSources::default()).unwrap();
        assert_eq!(
            String::from_utf8(p["labels"].data.clone()).unwrap(),
            "app=\"web\"\ntier=\"a \\\"b\\\"\""
        );
        assert_eq!(p["name"].data, b"web-0");
        assert_eq!(p["app"].data, b"web");
        let bad = [field_item("x", "spec.nodeName")];
        assert_eq!(
            downward_api_payload(&bad, &pod(), DEFAULT_MODE, &PayloadSources::default())
                .unwrap_err()
                .to_string(),
            "unsupported fieldPath: spec.nodeName"
        );
    }

    #[test]
    fn downward_api_resources_divide_and_round_up() {
        let mut sources = PayloadSources::default();
        sources
            .node_allocatable
            .insert("cpu".to_owned(), ParsedQuantity::parse("2").unwrap());
        let items = [
            resource_item("mem", "limits.memory", Some("1Mi")),
            resource_item("cpu_req", "requests.cpu", Some("1m")),
            resource_item("cpu_req_cores", "requests.cpu", None),
            resource_item("cpu_lim", "limits.cpu", None),
        ];
        let p = downward_api_payload(&items, &pod(), DEFAULT_MODE, &sources).unwrap();
        assert_eq!(p["mem"].data, b"64");
        assert_eq!(p["cpu_req"].data, b"250");
        assert_eq!(p["cpu_req_cores"].data, b"1");
        assert_eq!(p["cpu_lim"].data, b"2");
    }

    #[test]
    fn projected_volume_merges_sources_like_kube_api_access() {
        let mut sources = PayloadSources::default();
        sources.config_maps.insert(
            "kube-root-ca.crt".to_owned(),
            ConfigMap {
                data: Some(BTreeMap::from([("ca.crt".to_owned(), "PEM".to_owned())])),
                ..ConfigMap::default()
            },
        );
        sources.tokens.insert(String::new(), "tok".to_owned());
        let source = ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_owned(),
                        expiration_seconds: Some(3607),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![item("ca.crt", "ca.crt", None)]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![field_item("namespace", "metadata.namespace")]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        };
        let p = projected_payload(&source, &pod(), &sources).unwrap();
        let keys: Vec<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(keys, ["ca.crt", "namespace", "token"]);
        assert_eq!(p["token"].data, b"tok");
        assert_eq!(p["namespace"].data, b"default");
    }

    #[test]
    fn projected_errors_are_aggregated() {
        let source = ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "a".to_owned(),
                        ..ConfigMapProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: "b".to_owned(),
                        ..SecretProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        };
        assert_eq!(
            projected_payload(&source, &pod(), &PayloadSources::default())
                .unwrap_err()
                .to_string(),
            "[configmaps \"a\" not found, secrets \"b\" not found]"
        );
    }
}
