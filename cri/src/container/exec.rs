//! Execs in a running container as libcontainer tenants: ExecSync (captured
//! output, optional timeout) and the streaming Exec behind the CRI streaming
//! server (our ends of stdio pipes, or the master of a pty made in the container).
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::exec_spec::{ExecSpec, ExecSpecError};
use super::{exit, libct};

/// Errors of ExecSync.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("failed to create pipe")]
    Pipe(#[source] nix::Error),
    #[error("failed to start exec")]
    Start(#[source] libct::LibctError),
    #[error("exec task failed")]
    Join(#[source] tokio::task::JoinError),
    #[error("command {cmd:?} timed out after {seconds}s")]
    Timeout { cmd: Vec<String>, seconds: i64 },
    #[error("failed to prepare the terminal of the exec")]
    Console(#[source] std::io::Error),
    #[error("failed to build the exec's process")]
    Spec(#[from] ExecSpecError),
    #[error("failed to prepare the exec's scratch directory")]
    Scratch(#[source] std::io::Error),
}

/// Where an exec runs: the container, libcontainer's state root, the
/// container's bundle, and a short scratch directory for the exec's process
/// spec and console socket (unix socket paths must be short).
#[derive(Debug, Clone)]
pub struct ExecTarget {
    pub id: String,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub scratch: PathBuf,
}

/// Starts `cmd` in `target` with `stdio`; returns its pid. Blocking.
fn start(
    target: &ExecTarget,
    cmd: &[String],
    stdio: libct::ExecStdio,
    tty: bool,
) -> Result<i32, ExecError> {
    let spec = ExecSpec::load(&target.bundle, cmd, tty)?;
    std::fs::create_dir_all(&target.scratch).map_err(ExecError::Scratch)?;
    let path = target
        .scratch
        .join(format!("{:016x}.json", rand::random::<u64>()));
    spec.write(&path)?;
    let pid = libct::exec(&target.id, &target.root, &path, stdio, spec.seccomp);
    let _ = std::fs::remove_file(&path);
    pid.map_err(ExecError::Start)
}

/// Output of a finished exec.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

async fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(mut rx) => {
            if let Err(err) = rx.read_to_end(&mut out).await {
                tracing::debug!(?err, "exec output read failed");
            }
        }
        Err(err) => tracing::warn!(?err, "cannot read exec output"),
    }
    out
}

/// Runs `cmd` in `target`; `timeout_secs` 0 means no timeout.
pub async fn exec_sync(
    target: ExecTarget,
    cmd: Vec<String>,
    timeout_secs: i64,
) -> Result<ExecOutput, ExecError> {
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecError::Pipe)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecError::Pipe)?;
    let args = cmd.clone();
    let stdio = libct::ExecStdio::Pipes {
        stdin: None,
        stdout: out_w,
        stderr: err_w,
    };
    let pid = tokio::task::spawn_blocking(move || start(&target, &args, stdio, false))
        .await
        .map_err(ExecError::Join)??;
    let exited = exit::watch(pid);
    let run = async {
        let (stdout, stderr, code) = tokio::join!(read_all(out_r), read_all(err_r), exited);
        ExecOutput {
            stdout,
            stderr,
            exit_code: code.ok().flatten().unwrap_or(255),
        }
    };
    if timeout_secs > 0 {
        let limit = Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0));
        match tokio::time::timeout(limit, run).await {
            Ok(out) => Ok(out),
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                Err(ExecError::Timeout {
                    cmd,
                    seconds: timeout_secs,
                })
            }
        }
    } else {
        Ok(run.await)
    }
}

/// Which standard streams a streaming exec gets.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamOptions {
    pub stdin: bool,
    pub tty: bool,
}

/// The master side of a pty made inside the container.
pub struct Pty {
    fd: AsyncFd<OwnedFd>,
}

impl Pty {
    /// Takes a pty master (made non-blocking here).
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Self {
            fd: crate::sys::async_fd(fd)?,
        })
    }

    /// Reads output; 0 once every slave is closed (EIO on a pty master).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(Into::into)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as terminal input.
    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(Into::into)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Sets the terminal size (TIOCSWINSZ).
    pub fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        crate::sys::set_window_size(self.fd.get_ref().as_fd(), width, height)
    }
}

/// Our side of a streaming exec's stdio.
pub enum ExecIo {
    Pipes {
        stdin: Option<tokio::net::unix::pipe::Sender>,
        stdout: tokio::net::unix::pipe::Receiver,
        stderr: tokio::net::unix::pipe::Receiver,
    },
    Tty(Pty),
}

/// A started streaming exec.
pub struct ExecProcess {
    pub pid: i32,
    pub io: ExecIo,
    /// Resolves with the exit code (None if it cannot be known).
    pub exited: oneshot::Receiver<Option<i32>>,
}

/// Starts `cmd` in `target` for the streaming server.
pub async fn exec_streaming(
    target: ExecTarget,
    cmd: Vec<String>,
    opts: StreamOptions,
) -> Result<ExecProcess, ExecError> {
    if opts.tty {
        return exec_tty(target, cmd).await;
    }
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecError::Pipe)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecError::Pipe)?;
    let (stdin_ours, stdin_theirs) = if opts.stdin {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecError::Pipe)?;
        (Some(w), Some(r))
    } else {
        (None, None)
    };
    let stdio = libct::ExecStdio::Pipes {
        stdin: stdin_theirs,
        stdout: out_w,
        stderr: err_w,
    };
    let pid = tokio::task::spawn_blocking(move || start(&target, &cmd, stdio, false))
        .await
        .map_err(ExecError::Join)??;
    let exited = exit::watch(pid);
    let pipe_err = |e: std::io::Error| {
        ExecError::Pipe(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    };
    let io = ExecIo::Pipes {
        stdin: stdin_ours
            .map(tokio::net::unix::pipe::Sender::from_owned_fd)
            .transpose()
            .map_err(pipe_err)?,
        stdout: tokio::net::unix::pipe::Receiver::from_owned_fd(out_r).map_err(pipe_err)?,
        stderr: tokio::net::unix::pipe::Receiver::from_owned_fd(err_r).map_err(pipe_err)?,
    };
    Ok(ExecProcess { pid, io, exited })
}

async fn exec_tty(target: ExecTarget, cmd: Vec<String>) -> Result<ExecProcess, ExecError> {
    let started = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&target.scratch).map_err(ExecError::Scratch)?;
        let socket = target
            .scratch
            .join(format!("{:016x}.sock", rand::random::<u64>()));
        let result = start_with_console(&target, &cmd, &socket);
        let _ = std::fs::remove_file(&socket);
        remove_console_links(&target.root.join(&target.id), &socket);
        result
    })
    .await
    .map_err(ExecError::Join)?;
    let (pid, master) = started?;
    let exited = exit::watch(pid);
    Ok(ExecProcess {
        pid,
        io: ExecIo::Tty(Pty::new(master).map_err(ExecError::Console)?),
        exited,
    })
}

fn start_with_console(
    target: &ExecTarget,
    cmd: &[String],
    socket: &Path,
) -> Result<(i32, OwnedFd), ExecError> {
    let listener = std::os::unix::net::UnixListener::bind(socket).map_err(ExecError::Console)?;
    let pid = start(
        target,
        cmd,
        libct::ExecStdio::Console(socket.to_path_buf()),
        true,
    )?;
    Ok((pid, accept_console(&listener)?))
}

/// Creates container `id` (its spec has `terminal`): the init sends its pty
/// master to a socket at `socket`; returns the init pid and the master.
pub fn create_with_console(
    held: &libct::Guard,
    id: &str,
    root: &Path,
    bundle: &Path,
    socket: &Path,
) -> Result<(i32, OwnedFd), ExecError> {
    let listener = std::os::unix::net::UnixListener::bind(socket).map_err(ExecError::Console)?;
    let created = libct::create(
        held,
        id,
        root,
        bundle,
        libct::InitStdio::Console(socket.to_path_buf()),
    )
    .map_err(ExecError::Start)
    .and_then(|pid| Ok((pid, accept_console(&listener)?)));
    let _ = std::fs::remove_file(socket);
    created
}

/// libcontainer connected during build(); the init sends the master over it.
fn accept_console(listener: &std::os::unix::net::UnixListener) -> Result<OwnedFd, ExecError> {
    let (conn, _) = listener.accept().map_err(ExecError::Console)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(ExecError::Console)?;
    crate::sys::receive_fd(conn.as_fd()).map_err(ExecError::Console)
}

/// libcontainer leaves a `tenant-tty-*` symlink to our socket in the container dir.
fn remove_console_links(container_dir: &Path, socket: &Path) {
    let Ok(entries) = std::fs::read_dir(container_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("tenant-tty-")
            && std::fs::read_link(e.path()).is_ok_and(|t| t == socket)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
