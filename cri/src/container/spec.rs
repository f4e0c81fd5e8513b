//! Builds the OCI runtime spec of a container from the CRI request, the sandbox
//! and the image config, with containerd/runc defaults (mounts, masked paths,
//! Docker's default capability set).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    RootBuilder, Spec, UserBuilder, get_default_maskedpaths, get_default_mounts,
    get_default_readonly_paths,
};

use super::{seccomp, user};
use crate::proto;
use crate::sandbox::SandboxRecord;

/// Errors of building a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid runtime spec")]
    Oci(#[from] OciSpecError),
    #[error("no command specified")]
    NoCommand,
    #[error("unknown capability {0:?}")]
    Capability(String),
    #[error("cannot resolve user {0:?}")]
    User(String),
    #[error("failed to generate seccomp spec opts")]
    Seccomp(#[from] super::seccomp::SeccompError),
}

/// What the spec is built from.
pub struct SpecInput<'a> {
    pub config: &'a proto::ContainerConfig,
    pub sandbox: &'a SandboxRecord,
    pub sandbox_config: &'a proto::PodSandboxConfig,
    pub image: &'a ImageConfiguration,
    /// The mounted overlay (merged) directory.
    pub rootfs: &'a Path,
    pub cgroups_path: &'a str,
    /// The host has only the unified hierarchy (cgroup v2): the container gets
    /// a cgroup namespace and its own cgroup mounted at /sys/fs/cgroup, as
    /// containerd does there.
    pub unified_cgroups: bool,
}

/// Docker's (and containerd's) default capabilities.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn parse_cap(name: &str) -> Result<Capability, SpecError> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| SpecError::Capability(name.to_string()))
}

/// The process arguments: the request's command replaces the image entrypoint,
/// its args replace the image cmd (kubelet semantics).
pub fn process_args(config: &proto::ContainerConfig, image: &ImageConfiguration) -> Vec<String> {
    let ic = image.config().clone().unwrap_or_default();
    let (entrypoint, cmd) = if !config.command.is_empty() {
        (config.command.clone(), config.args.clone())
    } else {
        let cmd = if config.args.is_empty() {
            ic.cmd().clone().unwrap_or_default()
        } else {
            config.args.clone()
        };
        (ic.entrypoint().clone().unwrap_or_default(), cmd)
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// Image env overridden by the request's env, keeping first-seen order.
pub fn process_env(config: &proto::ContainerConfig, image: &ImageConfiguration) -> Vec<String> {
    let ic = image.config().clone().unwrap_or_default();
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    {
        let mut set = |k: String, v: String| {
            if !values.contains_key(&k) {
                order.push(k.clone());
            }
            values.insert(k, v);
        };
        for e in ic.env().clone().unwrap_or_default() {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            set(k.to_string(), v.to_string());
        }
        for kv in &config.envs {
            set(
                kv.key.clone(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            );
        }
    }
    let (pk, pv) = DEFAULT_PATH.split_once('=').unwrap_or(("PATH", ""));
    if !order.iter().any(|k| k == pk) {
        order.push(pk.to_string());
        values.insert(pk.to_string(), pv.to_string());
    }
    order
        .into_iter()
        .map(|k| {
            let v = values.get(&k).cloned().unwrap_or_default();
            format!("{k}={v}")
        })
        .collect()
}

fn bind(dest: &str, src: &Path, readonly: bool, propagation: &str) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ("bind")
        .source(src.to_path_buf())
        .options(vec![
            "rbind".to_string(),
            propagation.to_string(),
            if readonly { "ro" } else { "rw" }.to_string(),
        ])
        .build()?)
}

fn ns(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, SpecError> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p.to_path_buf());
    }
    Ok(b.build()?)
}

/// Builds the full spec.
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let c = input.config;
    let sc = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let ic = input.image.config().clone().unwrap_or_default();

    let args = process_args(c, input.image);
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let cwd = if !c.working_dir.is_empty() {
        c.working_dir.clone()
    } else {
        ic.working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };

    // User: the request's runAsUser/runAsUsername wins over the image's USER.
    let image_user = ic.user().clone().unwrap_or_default();
    let (uid, mut gid) = if let Some(u) = &sc.run_as_user {
        let uid = u32::try_from(u.value).map_err(|_| SpecError::User(u.value.to_string()))?;
        (uid, user::primary_gid(input.rootfs, uid).unwrap_or(0))
    } else if !sc.run_as_username.is_empty() {
        user::resolve(input.rootfs, &sc.run_as_username)
            .ok_or_else(|| SpecError::User(sc.run_as_username.clone()))?
    } else if !image_user.is_empty() {
        user::resolve(input.rootfs, &image_user).ok_or(SpecError::User(image_user))?
    } else {
        (0, 0)
    };
    if let Some(g) = &sc.run_as_group {
        gid = u32::try_from(g.value).map_err(|_| SpecError::User(g.value.to_string()))?;
    }
    let mut additional: Vec<u32> = user::supplementary_gids(input.rootfs, uid);
    for g in &sc.supplemental_groups {
        if let Ok(g) = u32::try_from(*g)
            && !additional.contains(&g)
        {
            additional.push(g);
        }
    }

    // Capabilities.
    let mut caps: Vec<Capability> = Vec::new();
    let drop_all = sc.capabilities.as_ref().is_some_and(|cp| {
        cp.drop_capabilities
            .iter()
            .any(|d| d.eq_ignore_ascii_case("ALL"))
    });
    if !drop_all {
        for name in DEFAULT_CAPABILITIES {
            caps.push(parse_cap(name)?);
        }
    }
    if let Some(cp) = &sc.capabilities {
        for a in &cp.add_capabilities {
            if a.eq_ignore_ascii_case("ALL") {
                continue;
            }
            let cap = parse_cap(a)?;
            if !caps.contains(&cap) {
                caps.push(cap);
            }
        }
        for d in &cp.drop_capabilities {
            if d.eq_ignore_ascii_case("ALL") {
                continue;
            }
            let cap = parse_cap(d)?;
            caps.retain(|x| *x != cap);
        }
    }
    // The deprecated path is still what older kubelets send, as containerd reads it.
    #[allow(deprecated)]
    let legacy_seccomp = &sc.seccomp_profile_path;
    let seccomp_profile = seccomp::requested(sc.seccomp.as_ref(), legacy_seccomp)?;
    let seccomp = seccomp::for_container(&seccomp_profile, sc.privileged, &caps)?;
    let capset: oci_spec::runtime::Capabilities = caps.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capset.clone())
        .effective(capset.clone())
        .permitted(capset)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()?;

    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(c.tty));
    process.set_args(Some(args));
    let mut env = process_env(c, input.image);
    // containerd's oci.WithTTY.
    if c.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(
        UserBuilder::default()
            .uid(uid)
            .gid(gid)
            .additional_gids(additional)
            .build()?,
    );
    process.set_capabilities(Some(capabilities));
    // libcontainer loads seccomp before dropping capabilities only when this is
    // unset; `Some(false)` would load it after, without the privilege to.
    process.set_no_new_privileges(sc.no_new_privs.then_some(true));
    process.set_oom_score_adj(None);
    if let Some(res) = c.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        // A negative oom_score_adj needs CAP_SYS_RESOURCE, which this host's root lacks.
        if res.oom_score_adj < 0 {
            tracing::warn!(value = res.oom_score_adj, "negative oom_score_adj ignored");
        } else if res.oom_score_adj > 0 {
            process.set_oom_score_adj(i32::try_from(res.oom_score_adj).ok());
        }
    }
    spec.set_process(Some(process));
    spec.set_hostname(None);
    spec.set_root(Some(
        RootBuilder::default()
            .path(input.rootfs.to_path_buf())
            .readonly(sc.readonly_rootfs)
            .build()?,
    ));

    // Mounts: runc defaults (the cgroup mount only on cgroup v2 hosts, read-only
    // unless privileged), pod files, then request binds.
    let mut mounts: Vec<Mount> = get_default_mounts()
        .into_iter()
        .filter(|m| input.unified_cgroups || m.destination() != Path::new("/sys/fs/cgroup"))
        .map(|mut m| {
            if sc.privileged && m.destination() == Path::new("/sys/fs/cgroup") {
                let options = m.options().clone().unwrap_or_default();
                m.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
            }
            m
        })
        .collect();
    let requested: Vec<&str> = c.mounts.iter().map(|m| m.container_path.as_str()).collect();
    for (dest, file) in [
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
        ("/etc/hostname", "hostname"),
    ] {
        if !requested.contains(&dest) {
            mounts.push(bind(
                dest,
                &input.sandbox.files_dir.join(file),
                sc.readonly_rootfs,
                "rprivate",
            )?);
        }
    }
    for m in &c.mounts {
        let propagation = match proto::MountPropagation::try_from(m.propagation) {
            Ok(proto::MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(proto::MountPropagation::PropagationBidirectional) => "rshared",
            _ => "rprivate",
        };
        mounts.push(bind(
            &m.container_path,
            Path::new(&m.host_path),
            m.readonly,
            propagation,
        )?);
    }
    spec.set_mounts(Some(mounts));

    // Namespaces: join the pod's by path; new mount and pid namespaces.
    let nso = sc.namespace_options.clone().unwrap_or_default();
    let mut namespaces = vec![ns(LinuxNamespaceType::Mount, None)?];
    if input.unified_cgroups {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    if nso.pid != proto::NamespaceMode::Node as i32 {
        namespaces.push(ns(LinuxNamespaceType::Pid, None)?);
    }
    if let Some(p) = &input.sandbox.netns {
        namespaces.push(ns(LinuxNamespaceType::Network, Some(p))?);
    }
    if let Some(p) = &input.sandbox.ipc {
        namespaces.push(ns(LinuxNamespaceType::Ipc, Some(p))?);
    }
    if let Some(p) = &input.sandbox.uts {
        namespaces.push(ns(LinuxNamespaceType::Uts, Some(p))?);
    }

    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(PathBuf::from(input.cgroups_path)));
    linux.set_seccomp(seccomp);
    if sc.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        linux.set_masked_paths(Some(if sc.masked_paths.is_empty() {
            get_default_maskedpaths()
        } else {
            sc.masked_paths.clone()
        }));
        linux.set_readonly_paths(Some(if sc.readonly_paths.is_empty() {
            get_default_readonly_paths()
        } else {
            sc.readonly_paths.clone()
        }));
    }
    let sysctls = input
        .sandbox_config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    if !sysctls.is_empty() {
        linux.set_sysctl(Some(sysctls));
    }
    let mut resources = linux
        .resources()
        .clone()
        .unwrap_or_else(|| LinuxResourcesBuilder::default().build().unwrap_or_default());
    if let Some(r) = c.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        let mut cpu = LinuxCpuBuilder::default();
        if r.cpu_shares > 0 {
            cpu = cpu.shares(u64::try_from(r.cpu_shares).unwrap_or(1024));
        }
        if r.cpu_quota > 0 {
            cpu = cpu.quota(r.cpu_quota);
        }
        if r.cpu_period > 0 {
            cpu = cpu.period(u64::try_from(r.cpu_period).unwrap_or(100_000));
        }
        if !r.cpuset_cpus.is_empty() {
            cpu = cpu.cpus(r.cpuset_cpus.clone());
        }
        if !r.cpuset_mems.is_empty() {
            cpu = cpu.mems(r.cpuset_mems.clone());
        }
        resources.set_cpu(Some(cpu.build()?));
        if r.memory_limit_in_bytes > 0 {
            resources.set_memory(Some(
                LinuxMemoryBuilder::default()
                    .limit(r.memory_limit_in_bytes)
                    .build()?,
            ));
        }
    }
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    let annotations = c.annotations.clone().into_iter().collect();
    spec.set_annotations(Some(annotations));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfiguration {
        let v = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "Entrypoint": entrypoint, "Cmd": cmd,
                "Env": ["PATH=/bin", "A=1"],
            },
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn command_replaces_entrypoint_and_args_replace_cmd() {
        let img = image(&["/entry"], &["default"]);
        let mut c = proto::ContainerConfig::default();
        assert_eq!(process_args(&c, &img), vec!["/entry", "default"]);
        c.args = vec!["x".into()];
        assert_eq!(process_args(&c, &img), vec!["/entry", "x"]);
        c.command = vec!["/bin/sh".into()];
        c.args = vec![];
        assert_eq!(process_args(&c, &img), vec!["/bin/sh"]);
    }

    #[test]
    fn request_env_overrides_image_env() {
        let img = image(&[], &["sh"]);
        let c = proto::ContainerConfig {
            envs: vec![proto::KeyValue {
                key: "A".into(),
                value: "2".into(),
            }],
            ..Default::default()
        };
        assert_eq!(process_env(&c, &img), vec!["PATH=/bin", "A=2"]);
    }

    fn spec_with(unified_cgroups: bool) -> Spec {
        let rootfs = tempfile::tempdir().unwrap();
        let sandbox = SandboxRecord {
            id: "s".into(),
            config: String::new(),
            runtime_handler: String::new(),
            state: crate::sandbox::SandboxState::Ready,
            created_at: 0,
            ip: None,
            host_veth: None,
            netns: None,
            ipc: None,
            uts: None,
            files_dir: rootfs.path().join("files"),
            cgroup_parent: "/kubepods/podx".into(),
            cgroup_owned: false,
        };
        let config = proto::ContainerConfig {
            command: vec!["/bin/sh".into()],
            ..Default::default()
        };
        build(&SpecInput {
            config: &config,
            sandbox: &sandbox,
            sandbox_config: &proto::PodSandboxConfig::default(),
            image: &image(&[], &["sh"]),
            rootfs: rootfs.path(),
            cgroups_path: "/kubepods/podx/c",
            unified_cgroups,
        })
        .unwrap()
    }

    fn cgroup_mount(spec: &Spec) -> Option<Mount> {
        spec.mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/sys/fs/cgroup"))
            .cloned()
    }

    fn has_cgroup_namespace(spec: &Spec) -> bool {
        spec.linux()
            .iter()
            .filter_map(|l| l.namespaces().as_ref())
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
    }

    #[test]
    fn cgroup_v2_hosts_give_containers_their_own_read_only_cgroup_mount() {
        let spec = spec_with(true);
        let mount = cgroup_mount(&spec).expect("a /sys/fs/cgroup mount");
        assert_eq!(mount.typ().as_deref(), Some("cgroup"));
        assert!(mount.options().iter().flatten().any(|o| o == "ro"));
        assert!(has_cgroup_namespace(&spec));
    }

    #[test]
    fn hybrid_hosts_get_no_cgroup_mount_or_namespace() {
        let spec = spec_with(false);
        assert!(cgroup_mount(&spec).is_none());
        assert!(!has_cgroup_namespace(&spec));
    }

    #[test]
    fn capabilities_parse_without_prefix() {
        assert_eq!(parse_cap("NET_ADMIN").unwrap(), Capability::NetAdmin);
        assert!(parse_cap("NOPE").is_err());
    }
}
