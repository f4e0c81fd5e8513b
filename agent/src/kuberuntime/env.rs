//! Container environment as kubelet's `makeEnvironmentVariables`: service
//! link variables, `envFrom`, then `env` with `$(VAR)` expansion and
//! `valueFrom` (fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef).
//! No I/O: the caller fetches the referenced objects into `EnvSources`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

use crate::quantity::ParsedQuantity;
use crate::volume::payload;

/// Why a container's environment could not be built (kubelet's
/// `CreateContainerConfigError` messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        key: String,
        namespace: String,
        name: String,
    },
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
}

/// Objects the environment may draw from, fetched by the caller.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// Services of the pod's namespace.
    pub services: Vec<Service>,
    /// The `kubernetes` service of the default namespace.
    pub master_service: Option<Service>,
    pub node_allocatable: BTreeMap<String, ParsedQuantity>,
    pub node_name: String,
    pub host_ip: String,
    pub pod_ips: Vec<String>,
}

/// Expands `$(VAR)` references as Kubernetes' `expansion.Expand`: `$$`
/// escapes a `$`; unknown references stay as written.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// An ordered environment where a later definition replaces an earlier one
/// in place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Env(pub Vec<(String, String)>);

impl Env {
    pub fn set(&mut self, key: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

fn service_env(env: &mut Env, svc: &Service) {
    let spec = svc.spec.clone().unwrap_or_default();
    let Some(ip) = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None") else {
        return;
    };
    let name = svc
        .metadata
        .name
        .clone()
        .unwrap_or_default()
        .to_uppercase()
        .replace('-', "_");
    let ports = spec.ports.unwrap_or_default();
    let Some(first) = ports.first() else {
        return;
    };
    env.set(format!("{name}_SERVICE_HOST"), ip.clone());
    env.set(format!("{name}_SERVICE_PORT"), first.port.to_string());
    for p in &ports {
        if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
            env.set(
                format!(
                    "{name}_SERVICE_PORT_{}",
                    pn.to_uppercase().replace('-', "_")
                ),
                p.port.to_string(),
            );
        }
    }
    let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
        p.protocol.clone().unwrap_or_else(|| "TCP".to_owned())
    };
    env.set(
        format!("{name}_PORT"),
        format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
    );
    for p in &ports {
        let pr = proto(p);
        let prefix = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
        env.set(
            prefix.clone(),
            format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
        );
        env.set(format!("{prefix}_PROTO"), pr.to_lowercase());
        env.set(format!("{prefix}_PORT"), p.port.to_string());
        env.set(format!("{prefix}_ADDR"), ip.clone());
    }
}

fn config_map<'a>(
    sources: &'a EnvSources,
    name: &str,
    optional: bool,
) -> Result<Option<&'a ConfigMap>, EnvError> {
    match sources.config_maps.get(name) {
        Some(cm) => Ok(Some(cm)),
        None if optional => Ok(None),
        None => Err(EnvError::ConfigMapNotFound(name.to_owned())),
    }
}

fn secret<'a>(
    sources: &'a EnvSources,
    name: &str,
    optional: bool,
) -> Result<Option<&'a Secret>, EnvError> {
    match sources.secrets.get(name) {
        Some(s) => Ok(Some(s)),
        None if optional => Ok(None),
        None => Err(EnvError::SecretNotFound(name.to_owned())),
    }
}

fn field_ref(pod: &Pod, path: &str, sources: &EnvSources) -> Result<String, EnvError> {
    Ok(match path {
        "spec.nodeName" => sources.node_name.clone(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => sources.host_ip.clone(),
        "status.podIP" => sources.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => sources.pod_ips.join(","),
        other => payload::extract_field_path(pod, other)?,
    })
}

/// The environment of `container` in `pod` (kubelet's
/// `makeEnvironmentVariables`).
pub fn make_environment(
    pod: &Pod,
    container: &Container,
    sources: &EnvSources,
) -> Result<Env, EnvError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut env = Env::default();
    if spec.enable_service_links != Some(false) {
        for svc in &sources.services {
            service_env(&mut env, svc);
        }
    }
    if let Some(master) = &sources.master_service {
        service_env(&mut env, master);
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref
            && let Some(cm) = config_map(sources, &r.name, r.optional == Some(true))?
        {
            for (k, v) in cm.data.iter().flatten() {
                env.set(format!("{prefix}{k}"), v.clone());
            }
        }
        if let Some(r) = &from.secret_ref
            && let Some(s) = secret(sources, &r.name, r.optional == Some(true))?
        {
            for (k, v) in s.data.iter().flatten() {
                env.set(
                    format!("{prefix}{k}"),
                    String::from_utf8_lossy(&v.0).into_owned(),
                );
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            let snapshot = env.clone();
            expand(v, &|name| snapshot.get(name))
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, &f.field_path, sources)?
            } else if let Some(r) = &from.resource_field_ref {
                let c = r
                    .container_name
                    .clone()
                    .unwrap_or_else(|| container.name.clone());
                payload::extract_resource_value(r, pod, &c, &sources.node_allocatable)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match config_map(sources, &r.name, optional)? {
                    None => continue,
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::ConfigMapKey {
                                key: r.key.clone(),
                                namespace: ns,
                                name: r.name.clone(),
                            });
                        }
                    },
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match secret(sources, &r.name, optional)? {
                    None => continue,
                    Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::SecretKey {
                                key: r.key.clone(),
                                namespace: ns,
                                name: r.name.clone(),
                            });
                        }
                    },
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }
    Ok(env)
}

/// Command and args with `$(VAR)` expanded against the environment
/// (kubelet's `ExpandContainerCommandAndArgs`).
pub fn expand_command(container: &Container, env: &Env) -> (Vec<String>, Vec<String>) {
    let lookup = |name: &str| env.get(name);
    let map = |v: &Option<Vec<String>>| {
        v.iter()
            .flatten()
            .map(|s| expand(s, &lookup))
            .collect::<Vec<_>>()
    };
    (map(&container.command), map(&container.args))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, SecretKeySelector, ServicePort,
        ServiceSpec,
    };

    use super::*;

    #[test]
    fn expansion_matches_kubernetes() {
        let lookup = |n: &str| (n == "A").then(|| "x".to_owned());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &lookup), "x-$(B)-$(A)-$");
        assert_eq!(expand("$(A", &lookup), "$(A");
    }

    #[test]
    fn env_from_values_refs_and_services() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".to_owned());
        pod.metadata.namespace = Some("ns".to_owned());
        let container = Container {
            name: "c".to_owned(),
            env_from: Some(vec![EnvFromSource {
                prefix: Some("P_".to_owned()),
                config_map_ref: Some(k8s_openapi::api::core::v1::ConfigMapEnvSource {
                    name: "cm".to_owned(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            env: Some(vec![
                EnvVar {
                    name: "NAME".to_owned(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".to_owned(),
                            ..ObjectFieldSelector::default()
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "GREETING".to_owned(),
                    value: Some("hi $(NAME) $(P_k)".to_owned()),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "PW".to_owned(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "s".to_owned(),
                            key: "pw".to_owned(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                },
            ]),
            ..Container::default()
        };
        let mut sources = EnvSources::default();
        sources.config_maps.insert(
            "cm".to_owned(),
            ConfigMap {
                data: Some([("k".to_owned(), "v".to_owned())].into()),
                ..ConfigMap::default()
            },
        );
        sources.secrets.insert(
            "s".to_owned(),
            Secret {
                data: Some([("pw".to_owned(), ByteString(b"pass".to_vec()))].into()),
                ..Secret::default()
            },
        );
        let mut svc = Service::default();
        svc.metadata.name = Some("my-db".to_owned());
        svc.spec = Some(ServiceSpec {
            cluster_ip: Some("10.43.0.5".to_owned()),
            ports: Some(vec![ServicePort {
                port: 5432,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        });
        sources.services.push(svc);
        let env = make_environment(&pod, &container, &sources).unwrap();
        assert_eq!(env.get("GREETING").unwrap(), "hi web v");
        assert_eq!(env.get("PW").unwrap(), "pass");
        assert_eq!(env.get("MY_DB_SERVICE_HOST").unwrap(), "10.43.0.5");
        assert_eq!(
            env.get("MY_DB_PORT_5432_TCP").unwrap(),
            "tcp://10.43.0.5:5432"
        );
        sources.secrets.clear();
        assert_eq!(
            make_environment(&pod, &container, &sources)
                .unwrap_err()
                .to_string(),
            "secret \"s\" not found"
        );
    }
}
