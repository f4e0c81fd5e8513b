//! Image pull decisions as kubelet's `images.imageManager`: the effective
//! `imagePullPolicy` and registry credentials from `imagePullSecrets` of type
//! `kubernetes.io/dockerconfigjson` (or the legacy `dockercfg`).

use cri::proto;
use k8s_openapi::api::core::v1::{Container, Secret};

/// What to do about a container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Whether an image reference names a tag or digest other than `latest`.
fn has_explicit_tag(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag != "latest",
        None => false,
    }
}

/// The container's pull policy, defaulted as the API server does: `Always`
/// for `:latest` or untagged images, else `IfNotPresent`.
pub fn pull_policy(container: &Container) -> PullPolicy {
    match container.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        _ if has_explicit_tag(container.image.as_deref().unwrap_or_default()) => {
            PullPolicy::IfNotPresent
        }
        _ => PullPolicy::Always,
    }
}

/// The registry host of an image reference (`docker.io` when none).
pub fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

fn normalize_registry(key: &str) -> &str {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let key = key.split('/').next().unwrap_or(key);
    match key {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// Credentials for `image` from pull secrets, first match wins.
pub fn auth_for(image: &str, secrets: &[Secret]) -> Option<proto::AuthConfig> {
    let host = registry_host(image);
    for secret in secrets {
        let data = secret.data.clone().unwrap_or_default();
        let auths = if let Some(raw) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<serde_json::Value>(&raw.0)
                .ok()
                .and_then(|v| v.get("auths").cloned())
        } else if let Some(raw) = data.get(".dockercfg") {
            serde_json::from_slice::<serde_json::Value>(&raw.0).ok()
        } else {
            None
        };
        let Some(serde_json::Value::Object(auths)) = auths else {
            continue;
        };
        for (key, entry) in auths {
            if normalize_registry(&key) != host {
                continue;
            }
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            return Some(proto::AuthConfig {
                username: field("username"),
                password: field("password"),
                auth: field("auth"),
                server_address: host.to_owned(),
                identity_token: field("identitytoken"),
                registry_token: field("registrytoken"),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn container(image: &str, policy: Option<&str>) -> Container {
        Container {
            image: Some(image.to_owned()),
            image_pull_policy: policy.map(str::to_owned),
            ..Container::default()
        }
    }

    #[test]
    fn policy_defaults_like_the_api_server() {
        assert_eq!(pull_policy(&container("busybox", None)), PullPolicy::Always);
        assert_eq!(
            pull_policy(&container("busybox:latest", None)),
            PullPolicy::Always
        );
        assert_eq!(
            pull_policy(&container("127.0.0.1:5000/busybox", None)),
            PullPolicy::Always
        );
        assert_eq!(
            pull_policy(&container("127.0.0.1:5000/busybox:1.36", None)),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            pull_policy(&container("busybox", Some("Never"))),
            PullPolicy::Never
        );
    }

    #[test]
    fn dockerconfigjson_secrets_give_credentials() {
        let s = Secret {
            data: Some(
            [(
                ".dockerconfigjson".to_owned(),
                ByteString(
                    br#"{"auths":{"https://reg.example:5000/v1/":{"username":"u","password":"p","auth":"dTpw"}}}"#
                        .to_vec(),
                ),
            )]
            .into(),
        ),
            ..Secret::default()
        };
        let a = auth_for("reg.example:5000/app:1", std::slice::from_ref(&s)).unwrap();
        assert_eq!(a.username, "u");
        assert_eq!(a.auth, "dTpw");
        assert!(auth_for("other.example/app", &[s]).is_none());
        assert_eq!(registry_host("busybox"), "docker.io");
    }
}
