//! `ContainerConfig` from a pod's container, as kubelet's
//! `generateContainerConfig`: command, env, mounts, log path, resources
//! (`cm::resources` conversions) and the effective security context.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cri::proto;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::env::{Env, expand_command};
use super::labels;
use crate::cm::resources::{QUOTA_PERIOD, milli_cpu_to_quota, milli_cpu_to_shares};
use crate::qos::{QosClass, get_pod_qos};
use crate::quantity::ParsedQuantity;

/// Kubernetes' default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// Why a container config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ContainerConfigError {
    #[error("unable to find volume {0:?} to mount into container")]
    MissingVolume(String),
    #[error("invalid subPath {0:?}")]
    SubPath(String),
}

/// `<root-dir>/pods/<uid>/containers/<name>/<attempt>`: the host file behind
/// the termination message path of one container run.
pub fn termination_message_file(
    root_dir: &Path,
    pod_uid: &str,
    name: &str,
    attempt: u32,
) -> PathBuf {
    crate::volume::pod_dir(root_dir, pod_uid)
        .join("containers")
        .join(name)
        .join(format!("{attempt:08x}"))
}

fn milli(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<i64> {
    q.and_then(|q| ParsedQuantity::from_quantity(q).ok())
        .map(|p| p.milli_value())
}

fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<i64> {
    q.and_then(|q| ParsedQuantity::from_quantity(q).ok())
        .map(|p| p.value())
}

/// Linux resources of one container (kubelet's
/// `calculateLinuxResources`): shares from the cpu request, CFS quota from
/// the cpu limit, the memory limit, and the QoS class's OOM score.
pub fn linux_resources(pod: &Pod, container: &Container) -> proto::LinuxContainerResources {
    let res = container.resources.clone().unwrap_or_default();
    let requests = res.requests.unwrap_or_default();
    let limits = res.limits.unwrap_or_default();
    let cpu_request = milli(requests.get("cpu")).or_else(|| milli(limits.get("cpu")));
    let cpu_limit = milli(limits.get("cpu"));
    let memory_limit = bytes(limits.get("memory")).unwrap_or(0);
    let mut out = proto::LinuxContainerResources {
        cpu_shares: i64::try_from(milli_cpu_to_shares(cpu_request.unwrap_or(0))).unwrap_or(2),
        memory_limit_in_bytes: memory_limit,
        oom_score_adj: match get_pod_qos(pod) {
            QosClass::Guaranteed => -997,
            QosClass::BestEffort => 1000,
            QosClass::Burstable => 0,
        },
        ..proto::LinuxContainerResources::default()
    };
    if let Some(limit) = cpu_limit {
        out.cpu_quota = milli_cpu_to_quota(limit, QUOTA_PERIOD);
        out.cpu_period = i64::try_from(QUOTA_PERIOD).unwrap_or(100_000);
    }
    out
}

/// The container's security context over the pod's (kubelet's
/// `DetermineEffectiveSecurityContext`), in CRI form.
pub fn security_context(pod: &Pod, container: &Container) -> proto::LinuxContainerSecurityContext {
    let spec = pod.spec.clone().unwrap_or_default();
    let psc = spec.security_context.clone().unwrap_or_default();
    let sc = container.security_context.clone().unwrap_or_default();
    let seccomp = sc
        .seccomp_profile
        .clone()
        .or(psc.seccomp_profile.clone())
        .map(|p| proto::SecurityProfile {
            profile_type: match p.type_.as_str() {
                "RuntimeDefault" => proto::security_profile::ProfileType::RuntimeDefault as i32,
                "Localhost" => proto::security_profile::ProfileType::Localhost as i32,
                _ => proto::security_profile::ProfileType::Unconfined as i32,
            },
            localhost_ref: p.localhost_profile.unwrap_or_default(),
        });
    let caps = sc.capabilities.clone().unwrap_or_default();
    proto::LinuxContainerSecurityContext {
        capabilities: Some(proto::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..proto::Capability::default()
        }),
        privileged: sc.privileged == Some(true),
        namespace_options: Some(super::sandbox::namespace_options(pod)),
        run_as_user: sc
            .run_as_user
            .or(psc.run_as_user)
            .map(|value| proto::Int64Value { value }),
        run_as_group: sc
            .run_as_group
            .or(psc.run_as_group)
            .map(|value| proto::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem == Some(true),
        supplemental_groups: psc.supplemental_groups.unwrap_or_default(),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        seccomp,
        ..proto::LinuxContainerSecurityContext::default()
    }
}

/// Everything a container config is built from besides the pod.
pub struct ContainerInputs<'a> {
    pub attempt: u32,
    pub env: &'a Env,
    /// Host paths of the pod's volumes by name.
    pub volumes: &'a HashMap<String, PathBuf>,
    /// Host file mounted at the termination message path.
    pub termination_message_file: &'a Path,
    /// The image reference as resolved by the pull.
    pub image: &'a str,
}

fn mounts(
    container: &Container,
    inputs: &ContainerInputs<'_>,
) -> Result<Vec<proto::Mount>, ContainerConfigError> {
    let mut out = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let base = inputs
            .volumes
            .get(&vm.name)
            .ok_or_else(|| ContainerConfigError::MissingVolume(vm.name.clone()))?;
        let host = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let p = Path::new(sub);
                if p.is_absolute()
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(ContainerConfigError::SubPath(sub.to_owned()));
                }
                base.join(p)
            }
            None => base.clone(),
        };
        let propagation = match vm.mount_propagation.as_deref() {
            Some("Bidirectional") => proto::MountPropagation::PropagationBidirectional,
            Some("HostToContainer") => proto::MountPropagation::PropagationHostToContainer,
            _ => proto::MountPropagation::PropagationPrivate,
        };
        out.push(proto::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: vm.read_only == Some(true),
            propagation: propagation as i32,
            ..proto::Mount::default()
        });
    }
    let tmp = container
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_owned());
    if !out.iter().any(|m| m.container_path == tmp) {
        out.push(proto::Mount {
            container_path: tmp,
            host_path: inputs.termination_message_file.display().to_string(),
            ..proto::Mount::default()
        });
    }
    Ok(out)
}

/// kubelet's `generateContainerConfig`.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    inputs: &ContainerInputs<'_>,
) -> Result<proto::ContainerConfig, ContainerConfigError> {
    let (command, args) = expand_command(container, inputs.env);
    let mut annotations = HashMap::from([
        (
            labels::CONTAINER_HASH.to_owned(),
            labels::container_hash(container),
        ),
        (
            labels::CONTAINER_RESTART_COUNT.to_owned(),
            inputs.attempt.to_string(),
        ),
        (
            labels::TERMINATION_MESSAGE_PATH.to_owned(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_owned()),
        ),
        (
            labels::TERMINATION_MESSAGE_POLICY.to_owned(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".to_owned()),
        ),
        (
            labels::TERMINATION_MESSAGE_HOST_PATH.to_owned(),
            inputs.termination_message_file.display().to_string(),
        ),
    ]);
    if let Some(grace) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        annotations.insert(
            labels::POD_TERMINATION_GRACE_PERIOD.to_owned(),
            grace.to_string(),
        );
    }
    Ok(proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: container.name.clone(),
            attempt: inputs.attempt,
        }),
        image: Some(proto::ImageSpec {
            image: inputs.image.to_owned(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..proto::ImageSpec::default()
        }),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: inputs
            .env
            .0
            .iter()
            .map(|(key, value)| proto::KeyValue {
                key: key.clone(),
                value: value.clone().into_bytes(),
            })
            .collect(),
        mounts: mounts(container, inputs)?,
        labels: labels::container_labels(pod, container),
        annotations,
        log_path: format!("{}/{}.log", container.name, inputs.attempt),
        stdin: container.stdin == Some(true),
        stdin_once: container.stdin_once == Some(true),
        tty: container.tty == Some(true),
        linux: Some(proto::LinuxContainerConfig {
            resources: Some(linux_resources(pod, container)),
            security_context: Some(security_context(pod, container)),
        }),
        ..proto::ContainerConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements, VolumeMount};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn pod(container: Container) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some("u1".to_owned());
        p.metadata.name = Some("web".to_owned());
        p.spec = Some(PodSpec {
            containers: vec![container],
            ..PodSpec::default()
        });
        p
    }

    #[test]
    fn resources_follow_kubelet_conversions() {
        let c = Container {
            name: "app".to_owned(),
            resources: Some(ResourceRequirements {
                requests: Some([("cpu".to_owned(), Quantity("250m".to_owned()))].into()),
                limits: Some(
                    [
                        ("cpu".to_owned(), Quantity("500m".to_owned())),
                        ("memory".to_owned(), Quantity("64Mi".to_owned())),
                    ]
                    .into(),
                ),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let r = linux_resources(&pod(c.clone()), &c);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn config_has_log_path_mounts_and_restart_annotation() {
        let c = Container {
            name: "app".to_owned(),
            image: Some("busybox".to_owned()),
            command: Some(vec!["echo".to_owned(), "$(X)".to_owned()]),
            volume_mounts: Some(vec![VolumeMount {
                name: "data".to_owned(),
                mount_path: "/data".to_owned(),
                sub_path: Some("sub".to_owned()),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        };
        let p = pod(c.clone());
        let env = Env(vec![("X".to_owned(), "1".to_owned())]);
        let volumes = HashMap::from([("data".to_owned(), PathBuf::from("/v/data"))]);
        let cfg = container_config(
            &p,
            &c,
            &ContainerInputs {
                attempt: 3,
                env: &env,
                volumes: &volumes,
                termination_message_file: Path::new("/t/msg"),
                image: "busybox:latest",
            },
        )
        .unwrap();
        assert_eq!(cfg.log_path, "app/3.log");
        assert_eq!(cfg.command, ["echo", "1"]);
        assert_eq!(cfg.annotations[labels::CONTAINER_RESTART_COUNT], "3");
        assert_eq!(cfg.mounts[0].host_path, "/v/data/sub");
        assert_eq!(cfg.mounts[1].container_path, "/dev/termination-log");
        let empty = HashMap::new();
        assert!(
            container_config(
                &p,
                &c,
                &ContainerInputs {
                    attempt: 0,
                    env: &env,
                    volumes: &empty,
                    termination_message_file: Path::new("/t/msg"),
                    image: "busybox",
                },
            )
            .is_err()
        );
    }
}
