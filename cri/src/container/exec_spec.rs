//! The process an exec runs: the container's own process spec with the exec's
//! command (as containerd builds it), and the container's seccomp filter.
//!
//! libcontainer's tenant builder rebuilds `linux` without `seccomp`, so an exec'd
//! process would run unconfined. r8s loads the filter itself, in the exec'd
//! process just before `execve`, through a libcontainer executor. By then
//! libcontainer has dropped the capabilities to the container's; loading a
//! filter needs `no_new_privs` or CAP_SYS_ADMIN. When the container has
//! neither (allowPrivilegeEscalation, the default), the exec borrows
//! CAP_SYS_ADMIN (and CAP_SETPCAP to give it back) and drops both from its
//! bounding set before loading the filter: `execve` then recomputes the
//! process's capabilities without them, so the payload ends with exactly the
//! container's capabilities and without `no_new_privs`, as runc leaves it.
use std::path::Path;

use caps::{CapSet, Capability};
use libcontainer::capabilities::CapabilityExt;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{Capability as SpecCapability, LinuxSeccomp, Process, Spec};

/// Errors of building an exec's process.
#[derive(Debug, thiserror::Error)]
pub enum ExecSpecError {
    #[error("failed to read the container's spec")]
    Spec(#[source] oci_spec::OciSpecError),
    #[error("the container's spec has no process")]
    NoProcess,
    #[error("failed to write the exec's process spec")]
    Write(#[source] std::io::Error),
}

/// What an exec runs: its process spec, and the filter it loads before `execve`.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub process: Process,
    pub seccomp: Option<SeccompExecutor>,
}

impl ExecSpec {
    /// The exec of `cmd` in the container whose bundle is `bundle`.
    pub fn load(bundle: &Path, cmd: &[String], tty: bool) -> Result<Self, ExecSpecError> {
        let spec = Spec::load(bundle.join("config.json")).map_err(ExecSpecError::Spec)?;
        Self::from_spec(&spec, cmd, tty)
    }

    fn from_spec(spec: &Spec, cmd: &[String], tty: bool) -> Result<Self, ExecSpecError> {
        let mut process = spec.process().clone().ok_or(ExecSpecError::NoProcess)?;
        process.set_args(Some(cmd.to_vec()));
        process.set_terminal(Some(tty));
        if tty {
            let mut env = process.env().clone().unwrap_or_default();
            if !env.iter().any(|e| e.starts_with("TERM=")) {
                env.push("TERM=xterm".into());
            }
            process.set_env(Some(env));
        }
        let filter = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let seccomp = filter.map(|filter| {
            let borrowed = borrowed_capabilities(&process);
            lend(&mut process, &borrowed);
            SeccompExecutor { filter, borrowed }
        });
        Ok(ExecSpec { process, seccomp })
    }

    /// Writes the process spec where libcontainer's tenant builder reads it.
    pub fn write(&self, path: &Path) -> Result<(), ExecSpecError> {
        let json = serde_json::to_vec(&self.process)
            .map_err(|e| ExecSpecError::Write(std::io::Error::other(e)))?;
        std::fs::write(path, json).map_err(ExecSpecError::Write)
    }
}

/// The capabilities an exec needs on top of the container's to load a seccomp
/// filter, in the order they are given back (CAP_SETPCAP, which drops the
/// others from the bounding set, last).
fn borrowed_capabilities(process: &Process) -> Vec<Capability> {
    if process.no_new_privileges() == Some(true) {
        return Vec::new();
    }
    let has = |cap: SpecCapability| {
        process
            .capabilities()
            .as_ref()
            .and_then(|c| c.bounding().as_ref())
            .is_some_and(|b| b.contains(&cap))
    };
    if has(SpecCapability::SysAdmin) {
        return Vec::new();
    }
    let mut borrowed = vec![Capability::CAP_SYS_ADMIN];
    if !has(SpecCapability::Setpcap) {
        borrowed.push(Capability::CAP_SETPCAP);
    }
    borrowed
}

/// Adds `borrowed` to the bounding, effective and permitted sets (never to
/// the inheritable or ambient ones, which would survive `execve`).
fn lend(process: &mut Process, borrowed: &[Capability]) {
    if borrowed.is_empty() {
        return;
    }
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let add = |set: &Option<oci_spec::runtime::Capabilities>| {
        let mut set = set.clone().unwrap_or_default();
        set.extend(borrowed.iter().map(|c| SpecCapability::from_cap(*c)));
        Some(set)
    };
    let (bounding, effective, permitted) = (
        add(caps.bounding()),
        add(caps.effective()),
        add(caps.permitted()),
    );
    caps.set_bounding(bounding)
        .set_effective(effective)
        .set_permitted(permitted);
    process.set_capabilities(Some(caps));
}

/// Runs in the exec'd process after libcontainer set it up: gives back the
/// borrowed capabilities, loads the container's seccomp filter, then execs
/// the command as libcontainer's default executor does.
#[derive(Debug, Clone)]
pub struct SeccompExecutor {
    filter: LinuxSeccomp,
    borrowed: Vec<Capability>,
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        for cap in &self.borrowed {
            caps::drop(None, CapSet::Bounding, *cap)
                .map_err(|e| ExecutorError::Other(format!("failed to drop {cap}: {e}")))?;
        }
        let notify = libcontainer::seccomp::initialize_seccomp(&self.filter)
            .map_err(|e| ExecutorError::Other(format!("failed to load seccomp: {e}")))?;
        if let Some(fd) = notify {
            // No listener takes an exec's notifications: such syscalls fail.
            let _ = nix::unistd::close(fd);
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{
        Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxSeccompAction,
        LinuxSeccompBuilder, ProcessBuilder, SpecBuilder,
    };

    use super::*;

    fn spec(caps: &[SpecCapability], no_new_privs: Option<bool>, seccomp: bool) -> Spec {
        let set: Capabilities = caps.iter().copied().collect();
        let mut process = ProcessBuilder::default()
            .args(vec!["sleep".to_string(), "3600".into()])
            .env(vec!["PATH=/bin".to_string()])
            .capabilities(
                LinuxCapabilitiesBuilder::default()
                    .bounding(set.clone())
                    .effective(set.clone())
                    .permitted(set)
                    .inheritable(Capabilities::new())
                    .ambient(Capabilities::new())
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        process.set_no_new_privileges(no_new_privs);
        let mut linux = LinuxBuilder::default().build().unwrap();
        linux.set_seccomp(seccomp.then(|| {
            LinuxSeccompBuilder::default()
                .default_action(LinuxSeccompAction::ScmpActErrno)
                .build()
                .unwrap()
        }));
        SpecBuilder::default()
            .process(process)
            .linux(linux)
            .build()
            .unwrap()
    }

    fn cmd() -> Vec<String> {
        vec!["sh".into(), "-c".into(), "id".into()]
    }

    #[test]
    fn the_exec_runs_its_command_in_the_containers_process_settings() {
        let s = spec(&[SpecCapability::Chown], None, false);
        let exec = ExecSpec::from_spec(&s, &cmd(), false).unwrap();
        assert_eq!(exec.process.args().as_deref(), Some(&cmd()[..]));
        assert_eq!(exec.process.env(), s.process().as_ref().unwrap().env());
        assert_eq!(
            exec.process.capabilities(),
            s.process().as_ref().unwrap().capabilities()
        );
        assert!(
            exec.seccomp.is_none(),
            "unconfined container, unconfined exec"
        );
    }

    #[test]
    fn a_tty_exec_gets_a_terminal_and_term() {
        let exec = ExecSpec::from_spec(&spec(&[], None, false), &cmd(), true).unwrap();
        assert_eq!(exec.process.terminal(), Some(true));
        assert!(
            exec.process
                .env()
                .as_ref()
                .unwrap()
                .contains(&"TERM=xterm".into())
        );
    }

    #[test]
    fn without_no_new_privs_the_exec_borrows_sys_admin_and_setpcap_in_bounding_effective_permitted_only()
     {
        let exec = ExecSpec::from_spec(&spec(&[SpecCapability::Chown], None, true), &cmd(), false)
            .unwrap();
        let seccomp = exec.seccomp.expect("the container's filter");
        assert_eq!(
            seccomp.borrowed,
            vec![Capability::CAP_SYS_ADMIN, Capability::CAP_SETPCAP]
        );
        let caps = exec.process.capabilities().clone().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            let set = set.clone().unwrap();
            assert!(set.contains(&SpecCapability::SysAdmin));
            assert!(set.contains(&SpecCapability::Setpcap));
            assert!(set.contains(&SpecCapability::Chown));
        }
        assert!(caps.inheritable().clone().unwrap().is_empty());
        assert!(caps.ambient().clone().unwrap().is_empty());
    }

    #[test]
    fn a_container_holding_setpcap_lends_only_sys_admin() {
        let s = spec(&[SpecCapability::Setpcap], None, true);
        let exec = ExecSpec::from_spec(&s, &cmd(), false).unwrap();
        assert_eq!(
            exec.seccomp.unwrap().borrowed,
            vec![Capability::CAP_SYS_ADMIN]
        );
    }

    #[test]
    fn no_new_privs_or_sys_admin_need_no_borrowed_capability() {
        for s in [
            spec(&[SpecCapability::Chown], Some(true), true),
            spec(&[SpecCapability::SysAdmin], None, true),
        ] {
            let exec = ExecSpec::from_spec(&s, &cmd(), false).unwrap();
            assert!(exec.seccomp.unwrap().borrowed.is_empty());
            assert_eq!(
                exec.process.capabilities(),
                s.process().as_ref().unwrap().capabilities()
            );
        }
    }
}
