//! Sandbox namespaces without a pause process: a short thread `unshare`s new
//! net/ipc/uts namespaces, sets the hostname, and bind-mounts
//! `/proc/thread-self/ns/*` onto files that keep the namespaces alive.
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// Errors of creating or releasing namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("failed to {step}")]
    Sys {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("namespace thread panicked")]
    Panicked,
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> NamespaceError {
    move |e| NamespaceError::Sys {
        step,
        source: e.into(),
    }
}

/// Paths of the bind-mounted namespaces (None = shared with the node).
#[derive(Debug, Clone, Default)]
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

/// Creates the requested namespaces under `dir` (`net`, `ipc`, `uts` files).
pub fn create(
    dir: &Path,
    hostname: &str,
    net: bool,
    ipc: bool,
    uts: bool,
) -> Result<PodNamespaces, NamespaceError> {
    std::fs::create_dir_all(dir).map_err(|source| NamespaceError::Sys {
        step: "create namespace dir",
        source,
    })?;
    let dir = dir.to_path_buf();
    let hostname = hostname.to_string();
    std::thread::spawn(move || -> Result<PodNamespaces, NamespaceError> {
        let mut flags = CloneFlags::empty();
        let wanted = [
            (net, CloneFlags::CLONE_NEWNET, "net"),
            (ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
            (uts, CloneFlags::CLONE_NEWUTS, "uts"),
        ];
        for (on, f, _) in wanted {
            if on {
                flags |= f;
            }
        }
        if flags.is_empty() {
            return Ok(PodNamespaces::default());
        }
        unshare(flags).map_err(sys("unshare namespaces"))?;
        if uts {
            nix::unistd::sethostname(&hostname).map_err(sys("set hostname"))?;
        }
        let mut out = PodNamespaces::default();
        for (on, _, name) in wanted {
            if !on {
                continue;
            }
            let target = dir.join(name);
            std::fs::File::create(&target).map_err(|source| NamespaceError::Sys {
                step: "create namespace file",
                source,
            })?;
            let src = format!("/proc/thread-self/ns/{name}");
            mount(
                Some(src.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(sys("bind-mount namespace"))?;
            match name {
                "net" => out.net = Some(target),
                "ipc" => out.ipc = Some(target),
                _ => out.uts = Some(target),
            }
        }
        Ok(out)
    })
    .join()
    .map_err(|_| NamespaceError::Panicked)?
}

/// Unmounts and removes a namespace file; absent or unmounted is fine.
pub fn release(path: &Path) {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(err) => tracing::warn!(path = %path.display(), ?err, "failed to unmount namespace"),
    }
    let _ = std::fs::remove_file(path);
}
