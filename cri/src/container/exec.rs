//! ExecSync: runs a command in a running container as a libcontainer tenant,
//! capturing stdout/stderr through pipes, with an optional timeout.
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::OFlag;
use tokio::io::AsyncReadExt;

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

/// Runs `cmd` in container `id`; `timeout_secs` 0 means no timeout.
pub async fn exec_sync(
    id: String,
    root: PathBuf,
    cmd: Vec<String>,
    who: libct::ExecIdentity,
    timeout_secs: i64,
) -> Result<ExecOutput, ExecError> {
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecError::Pipe)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecError::Pipe)?;
    let args = cmd.clone();
    let pid = tokio::task::spawn_blocking(move || libct::exec(&id, &root, args, who, out_w, err_w))
        .await
        .map_err(ExecError::Join)?
        .map_err(ExecError::Start)?;
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
