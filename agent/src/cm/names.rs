//! Cgroup names of the kubepods hierarchy under `--cgroup-root`: `kubepods`,
//! `kubepods/burstable`, `kubepods/besteffort`, and `pod<uid>` leaves.

use crate::qos::QosClass;

/// The top of the pods hierarchy.
pub const KUBEPODS: &str = "kubepods";

/// A cgroup as a list of components (upstream `CgroupName`), printable in the
/// cgroupfs or systemd driver's spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupName(pub Vec<String>);

impl CgroupName {
    /// The name of a cgroupfs path such as `--cgroup-root` (`/` is the root).
    pub fn from_cgroupfs(path: &str) -> Self {
        Self(
            path.split('/')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// The child named `component`.
    pub fn child(&self, component: impl Into<String>) -> Self {
        let mut parts = self.0.clone();
        parts.push(component.into());
        Self(parts)
    }

    /// The cgroupfs path, e.g. `/kubepods/burstable/pod<uid>`.
    pub fn to_cgroupfs(&self) -> String {
        format!("/{}", self.0.join("/"))
    }

    /// The systemd slice path, e.g.
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`
    /// (dashes inside components become underscores, as upstream).
    pub fn to_systemd(&self) -> String {
        if self.0.is_empty() {
            return "/".to_owned();
        }
        let mut path = String::new();
        let mut prefix = String::new();
        for component in &self.0 {
            let escaped = component.replace('-', "_");
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(&escaped);
            path.push('/');
            path.push_str(&prefix);
            path.push_str(".slice");
        }
        path
    }
}

/// The cgroup of a QoS class: guaranteed pods sit directly in `kubepods`.
pub fn qos_cgroup_name(cgroup_root: &str, qos: QosClass) -> CgroupName {
    let kubepods = CgroupName::from_cgroupfs(cgroup_root).child(KUBEPODS);
    match qos {
        QosClass::Guaranteed => kubepods,
        QosClass::Burstable => kubepods.child("burstable"),
        QosClass::BestEffort => kubepods.child("besteffort"),
    }
}

/// The cgroup of a pod: `pod<uid>` under its QoS cgroup.
pub fn pod_cgroup_name(cgroup_root: &str, qos: QosClass, pod_uid: &str) -> CgroupName {
    qos_cgroup_name(cgroup_root, qos).child(format!("pod{pod_uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroups_follow_the_qos_hierarchy() {
        let uid = "1234-abcd";
        assert_eq!(
            pod_cgroup_name("/", QosClass::Guaranteed, uid).to_cgroupfs(),
            "/kubepods/pod1234-abcd"
        );
        assert_eq!(
            pod_cgroup_name("/", QosClass::Burstable, uid).to_cgroupfs(),
            "/kubepods/burstable/pod1234-abcd"
        );
        assert_eq!(
            pod_cgroup_name("/", QosClass::BestEffort, uid).to_cgroupfs(),
            "/kubepods/besteffort/pod1234-abcd"
        );
    }

    #[test]
    fn cgroup_root_prefixes_every_name() {
        assert_eq!(
            pod_cgroup_name("/r8s/node1/", QosClass::Burstable, "u").to_cgroupfs(),
            "/r8s/node1/kubepods/burstable/podu"
        );
        assert_eq!(
            qos_cgroup_name("/", QosClass::Guaranteed).to_cgroupfs(),
            "/kubepods"
        );
    }

    #[test]
    fn systemd_names_nest_slices_and_escape_dashes() {
        assert_eq!(
            pod_cgroup_name("/", QosClass::Burstable, "12-34").to_systemd(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice"
        );
        assert_eq!(CgroupName::from_cgroupfs("/").to_systemd(), "/");
    }
}
