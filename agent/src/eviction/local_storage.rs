//! Local storage limits (kubelet's `localStorageEviction`, checked every round before the
//! node-pressure thresholds): a pod is evicted at once when an emptyDir uses more than its
//! `sizeLimit`, when the pod uses more ephemeral storage than its containers' limits add up
//! to, or when a container (writable layer and logs) uses more than its own limit. No I/O.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use super::rank::PodUsage;
use crate::quantity::ParsedQuantity;

/// A pod over one of its local storage limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    /// kubelet's `eviction_signal` label of the eviction counter.
    pub signal: &'static str,
    /// kubelet's eviction message.
    pub message: String,
}

fn ephemeral_limit(c: &Container) -> Option<ParsedQuantity> {
    let q = c
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("ephemeral-storage")?;
    ParsedQuantity::parse(&q.0).ok()
}

/// The first limit `pod` exceeds with `usage`, in kubelet's order.
pub fn exceeded(pod: &Pod, usage: &PodUsage) -> Option<LimitExceeded> {
    let spec = pod.spec.as_ref()?;
    empty_dir(spec, usage)
        .or_else(|| pod_total(spec, usage))
        .or_else(|| container(spec, usage))
}

/// `emptyDirLimitEviction`.
fn empty_dir(spec: &PodSpec, usage: &PodUsage) -> Option<LimitExceeded> {
    spec.volumes.iter().flatten().find_map(|v| {
        let limit = v.empty_dir.as_ref()?.size_limit.as_ref()?;
        let limit = ParsedQuantity::parse(&limit.0).ok()?;
        let used = *usage.volumes.get(&v.name)?;
        (limit.value() > 0 && used > limit.value()).then(|| LimitExceeded {
            signal: "emptydirfs.limit",
            message: format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                v.name,
                limit.to_string()
            ),
        })
    })
}

/// `podEphemeralStorageLimitEviction`: the limit is upstream's `PodLimits` (the sum over the
/// containers, or the largest init container's when that is more).
fn pod_total(spec: &PodSpec, usage: &PodUsage) -> Option<LimitExceeded> {
    let sum = spec
        .containers
        .iter()
        .filter_map(ephemeral_limit)
        .reduce(|a, b| a.add(&b));
    let init_max = spec
        .init_containers
        .iter()
        .flatten()
        .filter_map(ephemeral_limit)
        .max_by_key(ParsedQuantity::value);
    let limit = match (sum, init_max) {
        (Some(sum), Some(init)) if init.value() > sum.value() => init,
        (Some(sum), _) => sum,
        (None, init) => init.filter(|i| i.value() > 0)?,
    };
    let used = usage.ephemeral_storage?;
    (used > limit.value()).then(|| LimitExceeded {
        signal: "ephemeralpodfs.limit",
        message: format!(
            "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
            limit
        ),
    })
}

/// `containerEphemeralStorageLimitEviction`: a container's logs and writable layer (on the
/// node filesystem: r8s has no separate image filesystem).
fn container(spec: &PodSpec, usage: &PodUsage) -> Option<LimitExceeded> {
    usage.containers.iter().find_map(|u| {
        let c = spec.containers.iter().find(|c| c.name == u.name)?;
        let limit = ephemeral_limit(c).filter(|l| l.value() != 0)?;
        let used = u.logs_bytes.unwrap_or(0) + u.rootfs_bytes.unwrap_or(0);
        (used > limit.value()).then(|| LimitExceeded {
            signal: "ephemeralcontainerfs.limit",
            message: format!(
                "Container {} exceeded its local ephemeral storage limit {:?}. ",
                u.name,
                limit.to_string()
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, ResourceRequirements, Volume};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::eviction::rank::ContainerUsage;

    fn with_limit(name: &str, limit: Option<&str>) -> Container {
        Container {
            name: name.to_owned(),
            resources: limit.map(|l| ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "ephemeral-storage".to_owned(),
                    Quantity(l.to_owned()),
                )])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }
    }

    fn pod(containers: Vec<Container>, volumes: Vec<Volume>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                volumes: Some(volumes),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn scratch(limit: Option<&str>) -> Volume {
        Volume {
            name: "scratch".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: limit.map(|l| Quantity(l.to_owned())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        }
    }

    fn usage(scratch: i64, total: i64, app_rootfs: i64) -> PodUsage {
        PodUsage {
            containers: vec![ContainerUsage {
                name: "app".to_owned(),
                rootfs_bytes: Some(app_rootfs),
                logs_bytes: Some(0),
                ..ContainerUsage::default()
            }],
            volumes: BTreeMap::from([("scratch".to_owned(), scratch)]),
            ephemeral_storage: Some(total),
            ..PodUsage::default()
        }
    }

    #[test]
    fn an_empty_dir_over_its_size_limit_is_named_with_the_limit() {
        let p = pod(vec![with_limit("app", None)], vec![scratch(Some("1Mi"))]);
        assert_eq!(
            exceeded(&p, &usage(1 << 20, 1 << 20, 0)),
            None,
            "at the limit"
        );
        assert_eq!(
            exceeded(&p, &usage((1 << 20) + 1, 2 << 20, 0)),
            Some(LimitExceeded {
                signal: "emptydirfs.limit",
                message: "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ".into(),
            })
        );
        let unlimited = pod(vec![with_limit("app", None)], vec![scratch(None)]);
        assert_eq!(exceeded(&unlimited, &usage(10 << 30, 10 << 30, 0)), None);
    }

    #[test]
    fn the_pod_total_is_checked_against_the_sum_of_container_limits() {
        let p = pod(
            vec![
                with_limit("app", Some("2Mi")),
                with_limit("side", Some("1Mi")),
            ],
            vec![scratch(None)],
        );
        assert_eq!(exceeded(&p, &usage(3 << 20, 3 << 20, 0)), None);
        assert_eq!(
            exceeded(&p, &usage(3 << 20, (3 << 20) + 1, 0)).map(|e| e.message),
            Some(
                "Pod ephemeral local storage usage exceeds the total limit of containers 3Mi. "
                    .into()
            )
        );
    }

    #[test]
    fn a_container_over_its_own_limit_counts_writable_layer_and_logs() {
        let p = pod(
            vec![
                with_limit("app", Some("1Mi")),
                with_limit("side", Some("100Mi")),
            ],
            vec![],
        );
        let mut u = usage(0, 2 << 20, 2 << 20);
        u.volumes.clear();
        assert_eq!(
            exceeded(&p, &u),
            Some(LimitExceeded {
                signal: "ephemeralcontainerfs.limit",
                message: "Container app exceeded its local ephemeral storage limit \"1Mi\". "
                    .into(),
            })
        );
        u.containers[0].rootfs_bytes = Some(512 << 10);
        u.containers[0].logs_bytes = Some(512 << 10);
        assert_eq!(exceeded(&p, &u), None, "exactly at the limit");
    }
}
