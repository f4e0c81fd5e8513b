//! The libcontainer calls. libcontainer `chdir`s process-wide during create/start
//! and delete, so every call here holds one global lock; call from `spawn_blocking`.
//! The lock is taken with a deadline: a container init stuck while being created
//! holds it, and the caller then kills the init (`stats::kill_all`) to free it.
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

use super::exec_spec::SeccompExecutor;

/// `true` while some thread is inside libcontainer.
static BUSY: Mutex<bool> = Mutex::new(false);
static RELEASED: Condvar = Condvar::new();

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
    #[error("another container operation did not finish within {0:?}")]
    Busy(Duration),
}

fn lc(step: &'static str) -> impl FnOnce(libcontainer::error::LibcontainerError) -> LibctError {
    move |source| LibctError::Libcontainer { step, source }
}

fn dev_null() -> Result<OwnedFd, LibctError> {
    Ok(std::fs::File::open("/dev/null")
        .map_err(LibctError::DevNull)?
        .into())
}

/// Default of `deadline`: kubelet's `--runtime-request-timeout` (2m); by then
/// the caller has given up anyway.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

static DEADLINE_MS: AtomicU64 = AtomicU64::new(120_000);

/// Sets how long creating or starting a container (and waiting for another
/// libcontainer call to finish) may take.
pub fn set_deadline(d: Duration) {
    DEADLINE_MS.store(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// How long creating or starting a container may take.
pub fn deadline() -> Duration {
    Duration::from_millis(DEADLINE_MS.load(Ordering::Relaxed))
}

/// Held while inside libcontainer; released on drop. `create` and `start` take
/// it from the caller, so that a caller can time the call itself apart from
/// the wait for the lock.
pub struct Guard {
    _private: (),
}

impl Drop for Guard {
    fn drop(&mut self) {
        *BUSY.lock().unwrap_or_else(|p| p.into_inner()) = false;
        RELEASED.notify_one();
    }
}

fn lock_within(wait: Duration) -> Result<Guard, LibctError> {
    let deadline = Instant::now() + wait;
    // A panic under the lock leaves no state behind that the lock protects.
    let mut busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
    while *busy {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LibctError::Busy(wait));
        }
        busy = RELEASED
            .wait_timeout(busy, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    *busy = true;
    Ok(Guard { _private: () })
}

/// Takes libcontainer's lock, waiting at most `deadline()` plus a grace period
/// (enough for a stuck holder to be killed and let go).
pub fn lock() -> Result<Guard, LibctError> {
    lock_within(deadline() + Duration::from_secs(15))
}

/// How a container's init gets its standard streams.
pub enum InitStdio {
    /// Files (stdin: /dev/null unless given).
    Files {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A terminal (the spec has `terminal`): the init sends the pty master to
    /// the unix socket at this path.
    Console(PathBuf),
}

/// Creates (but does not start) container `id` from `bundle`; returns the init pid.
pub fn create(
    _held: &Guard,
    id: &str,
    root: &Path,
    bundle: &Path,
    stdio: InitStdio,
) -> Result<i32, LibctError> {
    let base = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(lc("set root path"))?;
    let base = match stdio {
        InitStdio::Files {
            stdin,
            stdout,
            stderr,
        } => {
            let stdin = match stdin {
                Some(fd) => fd,
                None => dev_null()?,
            };
            base.with_stdin(stdin)
                .with_stdout(stdout)
                .with_stderr(stderr)
        }
        InitStdio::Console(socket) => base.with_console_socket(Some(socket)),
    };
    let container = base
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
pub fn start(_held: &Guard, id: &str, root: &Path) -> Result<(), LibctError> {
    let mut c = Container::load(container_dir(root, id)).map_err(lc("load container"))?;
    c.start().map_err(lc("start container"))
}

/// Deletes container state (killing what is left); a missing container is fine.
pub fn delete(id: &str, root: &Path) -> Result<(), LibctError> {
    let dir = container_dir(root, id);
    if !dir.exists() {
        return Ok(());
    }
    let _guard = lock()?;
    let mut c = Container::load(dir).map_err(lc("load container"))?;
    c.delete(true).map_err(lc("delete container"))
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
    /// the unix socket at this path (the process spec has `terminal`).
    Console(PathBuf),
}

/// Runs the process spec at `process` inside container `id` (a libcontainer
/// tenant), with `executor` doing its last step; returns its pid.
pub fn exec(
    id: &str,
    root: &Path,
    process: &Path,
    stdio: ExecStdio,
    executor: Option<SeccompExecutor>,
) -> Result<i32, LibctError> {
    let base = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(lc("set root path"))?;
    let base = match stdio {
        ExecStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            let stdin = match stdin {
                Some(fd) => fd,
                None => dev_null()?,
            };
            base.with_stdin(stdin)
                .with_stdout(stdout)
                .with_stderr(stderr)
        }
        ExecStdio::Console(socket) => base.with_console_socket(Some(socket)),
    };
    let base = match executor {
        Some(executor) => base.with_executor(executor),
        None => base,
    };
    let _guard = lock()?;
    let pid = base
        .as_tenant()
        .with_detach(true)
        .with_process(Some(process))
        .build()
        .map_err(lc("exec in container"))?;
    Ok(pid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_times_out_and_is_free_again_once_released() {
        let held = lock_within(Duration::ZERO).unwrap();
        assert!(matches!(
            lock_within(Duration::from_millis(10)),
            Err(LibctError::Busy(_))
        ));
        let waiter = std::thread::spawn(|| lock_within(Duration::from_secs(30)).map(drop));
        drop(held);
        waiter.join().unwrap().unwrap();
        drop(lock_within(Duration::ZERO).unwrap());
    }
}
