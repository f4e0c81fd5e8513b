//! The libcontainer calls. libcontainer `chdir`s process-wide during create/start
//! and delete, so every call here holds one global lock; call from `spawn_blocking`.
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

static LIBCONTAINER: Mutex<()> = Mutex::new(());

/// Errors of libcontainer operations.
#[derive(Debug, thiserror::Error)]
pub enum LibctError {
    #[error("libcontainer failed to {step}")]
    Libcontainer {
        step: &'static str,
        #[source]
        source: libcontainer::error::LibcontainerError,
    },
    #[error("failed to open /dev/null")]
    DevNull(#[source] std::io::Error),
    #[error("created container has no pid")]
    NoPid,
}

fn lc(step: &'static str) -> impl FnOnce(libcontainer::error::LibcontainerError) -> LibctError {
    move |source| LibctError::Libcontainer { step, source }
}

fn dev_null() -> Result<OwnedFd, LibctError> {
    Ok(std::fs::File::open("/dev/null")
        .map_err(LibctError::DevNull)?
        .into())
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    // A panic under the lock leaves no state behind that the lock protects.
    LIBCONTAINER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates (but does not start) container `id` from `bundle` (stdin: /dev/null
/// unless given); returns the init pid.
pub fn create(
    id: &str,
    root: &Path,
    bundle: &Path,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<i32, LibctError> {
    let stdin = match stdin {
        Some(fd) => fd,
        None => dev_null()?,
    };
    let _guard = lock();
    let container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(lc("set root path"))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .validate_id()
        .map_err(lc("validate id"))?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(lc("create container"))?;
    container.pid().map(|p| p.as_raw()).ok_or(LibctError::NoPid)
}

fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Starts a created container.
pub fn start(id: &str, root: &Path) -> Result<(), LibctError> {
    let _guard = lock();
    let mut c = Container::load(container_dir(root, id)).map_err(lc("load container"))?;
    c.start().map_err(lc("start container"))
}

/// Deletes container state (killing what is left); a missing container is fine.
pub fn delete(id: &str, root: &Path) -> Result<(), LibctError> {
    let dir = container_dir(root, id);
    if !dir.exists() {
        return Ok(());
    }
    let _guard = lock();
    let mut c = Container::load(dir).map_err(lc("load container"))?;
    c.delete(true).map_err(lc("delete container"))
}

/// Who an exec runs as, and where: the container's own process settings.
#[derive(Debug, Clone, Default)]
pub struct ExecIdentity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub cwd: Option<PathBuf>,
}

/// How an exec's standard streams are wired.
pub enum ExecStdio {
    /// Our ends of pipes (or files); no stdin means /dev/null.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A pty made inside the container, whose master libcontainer sends to
    /// the unix socket `socket`; `process` is a process.json with `terminal`.
    Console { socket: PathBuf, process: PathBuf },
}

/// Runs `args` inside container `id` (a libcontainer tenant); returns its pid.
pub fn exec(
    id: &str,
    root: &Path,
    args: Vec<String>,
    who: ExecIdentity,
    stdio: ExecStdio,
) -> Result<i32, LibctError> {
    let base = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(lc("set root path"))?;
    let (base, process) = match stdio {
        ExecStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            let stdin = match stdin {
                Some(fd) => fd,
                None => dev_null()?,
            };
            (
                base.with_stdin(stdin)
                    .with_stdout(stdout)
                    .with_stderr(stderr),
                None,
            )
        }
        ExecStdio::Console { socket, process } => {
            (base.with_console_socket(Some(socket)), Some(process))
        }
    };
    let _guard = lock();
    let pid = base
        .as_tenant()
        .with_user(Some(who.uid))
        .with_group(Some(who.gid))
        .with_additional_gids(who.additional_gids)
        .with_cwd(who.cwd)
        .with_detach(true)
        .with_process(process)
        .with_container_args(args)
        .build()
        .map_err(lc("exec in container"))?;
    Ok(pid.as_raw())
}
