//! Fetches what a pod's volumes and environment reference from the API:
//! ConfigMaps, Secrets, Services (for service links), service account tokens
//! and image pull secrets. Missing objects are simply absent; the consumers
//! decide whether that is an error (optional references).

use std::collections::BTreeSet;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use super::env::EnvSources;
use crate::volume::PayloadSources;

/// Names of the ConfigMaps and Secrets a pod refers to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// Audiences of projected service account tokens (`""`: the API server).
    pub token_audiences: BTreeSet<String>,
}

/// Every ConfigMap/Secret/token a pod's volumes and containers use.
pub fn references(pod: &Pod) -> References {
    let mut r = References::default();
    let spec = pod.spec.clone().unwrap_or_default();
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            r.config_maps.insert(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            r.secrets.insert(s);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                r.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &src.secret {
                r.secrets.insert(s.name.clone());
            }
            if let Some(t) = &src.service_account_token {
                r.token_audiences
                    .insert(t.audience.clone().unwrap_or_default());
            }
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in containers {
        for from in c.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref {
                r.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &from.secret_ref {
                r.secrets.insert(s.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(cm) = &from.config_map_key_ref {
                r.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &from.secret_key_ref {
                r.secrets.insert(s.name.clone());
            }
        }
    }
    r
}

/// Why fetching a pod's sources failed (other than not found).
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("failed to get {kind} {name:?}")]
    Get {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

async fn get_opt<K>(api: &Api<K>, kind: &'static str, name: &str) -> Result<Option<K>, SourcesError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|source| SourcesError::Get {
        kind,
        name: name.to_owned(),
        source,
    })
}

/// Everything the pod's volumes and environment need, fetched once per sync.
pub async fn fetch(
    client: &Client,
    pod: &Pod,
) -> Result<(PayloadSources, EnvSources), SourcesError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let refs = references(pod);
    let mut payload = PayloadSources::default();
    let mut env = EnvSources::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for name in &refs.config_maps {
        if let Some(cm) = get_opt(&cms, "configmap", name).await? {
            payload.config_maps.insert(name.clone(), cm.clone());
            env.config_maps.insert(name.clone(), cm);
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for name in &refs.secrets {
        if let Some(s) = get_opt(&secrets, "secret", name).await? {
            payload.secrets.insert(name.clone(), s.clone());
            env.secrets.insert(name.clone(), s);
        }
    }
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    for audience in &refs.token_audiences {
        match request_token(client, &ns, &sa, audience, pod).await {
            Ok(token) => {
                payload.tokens.insert(audience.clone(), token);
            }
            Err(err) => {
                tracing::warn!(error = %err, serviceaccount = %sa, "failed to request a service account token")
            }
        }
    }
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.enable_service_links != Some(false) {
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        match services.list(&ListParams::default()).await {
            Ok(list) => env.services = list.items,
            Err(err) => tracing::warn!(error = %err, "failed to list services for env vars"),
        }
    }
    if ns != "default" || spec.enable_service_links == Some(false) {
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        env.master_service = services.get_opt("kubernetes").await.ok().flatten();
    }
    Ok((payload, env))
}

async fn request_token(
    client: &Client,
    ns: &str,
    sa: &str,
    audience: &str,
    pod: &Pod,
) -> Result<String, kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if audience.is_empty() {
                Vec::new()
            } else {
                vec![audience.to_owned()]
            },
            expiration_seconds: Some(3607),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let out: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await?;
    Ok(out.status.map(|s| s.token).unwrap_or_default())
}

/// The pod's image pull secrets that exist.
pub async fn pull_secrets(client: &Client, pod: &Pod) -> Vec<Secret> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut out = Vec::new();
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    for r in names {
        match api.get_opt(&r.name).await {
            Ok(Some(s)) => out.push(s),
            Ok(None) => tracing::warn!(secret = %r.name, "image pull secret not found"),
            Err(err) => {
                tracing::warn!(secret = %r.name, error = %err, "failed to get image pull secret")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, Container, EnvFromSource, PodSpec, SecretEnvSource, Volume,
    };

    use super::*;

    #[test]
    fn references_cover_volumes_and_env() {
        let p = Pod {
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "v".to_owned(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: "cm".to_owned(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                }]),
                containers: vec![Container {
                    env_from: Some(vec![EnvFromSource {
                        secret_ref: Some(SecretEnvSource {
                            name: "s".to_owned(),
                            optional: None,
                        }),
                        ..EnvFromSource::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let r = references(&p);
        assert!(r.config_maps.contains("cm"));
        assert!(r.secrets.contains("s"));
    }
}
