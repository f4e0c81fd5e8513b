//! The transport-neutral half of exec/attach (k8s.io/kubelet/pkg/cri/streaming/
//! remotecommand): copies a process's stdio to and from channels that the
//! WebSocket or SPDY side fills, applies resizes, and ends with the Status
//! that tells the client the exit code.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::container::exec::{ExecIo, ExecProcess, Pty};

/// How long output may still drain after the process exited (a daemonised
/// grandchild may hold the pipes open forever).
const DRAIN: Duration = Duration::from_secs(2);
const CHUNK: usize = 32 * 1024;

/// Output channel of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutChannel {
    Stdout,
    Stderr,
}

/// What a session sends to the client, in order; `Status` is last.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Data(OutChannel, Bytes),
    Status(ExitStatus),
}

/// How the command ended, as the client will be told.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitStatus {
    Success,
    NonZero { code: i32, message: String },
    Internal(String),
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Cause<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    message: String,
}

#[derive(Serialize)]
struct Details<'a> {
    causes: Vec<Cause<'a>>,
}

/// metav1.Status, with Go's field order and omitempty.
#[derive(Serialize)]
struct Status<'a> {
    metadata: Empty,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

impl ExitStatus {
    /// The status of an exit code of `cmd`, worded as containerd and kubelet do.
    pub fn from_exit(cmd: &[String], code: Option<i32>) -> Self {
        match code {
            Some(0) => Self::Success,
            Some(code) => Self::NonZero {
                code,
                message: format!(
                    "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                    cmd.join(" ")
                ),
            },
            None => {
                Self::Internal("error executing command in container: exit code unknown".into())
            }
        }
    }

    /// The v4/v5 form: a JSON metav1.Status.
    pub fn to_json(&self) -> Vec<u8> {
        let status = match self {
            Self::Success => Status {
                metadata: Empty {},
                status: "Success",
                message: None,
                reason: None,
                details: None,
                code: None,
            },
            Self::NonZero { code, message } => Status {
                metadata: Empty {},
                status: "Failure",
                message: Some(message.clone()),
                reason: Some("NonZeroExitCode"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: Some("ExitCode"),
                        message: code.to_string(),
                    }],
                }),
                code: None,
            },
            Self::Internal(err) => Status {
                metadata: Empty {},
                status: "Failure",
                message: Some(format!("Internal error occurred: {err}")),
                reason: Some("InternalError"),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: None,
                        message: err.clone(),
                    }],
                }),
                code: Some(500),
            },
        };
        // Serialising plain structs of strings cannot fail.
        serde_json::to_vec(&status).unwrap_or_default()
    }

    /// The pre-v4 form: only a failure's message, as plain text.
    pub fn to_text(&self) -> Option<Vec<u8>> {
        match self {
            Self::Success => None,
            Self::NonZero { message, .. } => Some(message.clone().into_bytes()),
            Self::Internal(err) => Some(format!("Internal error occurred: {err}").into_bytes()),
        }
    }
}

/// remotecommand.TerminalSize as the client sends it on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits a byte stream of concatenated JSON sizes into values, across chunk boundaries.
#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    pub fn push(&mut self, data: &[u8]) -> Vec<TerminalSize> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut iter = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
        let mut consumed = 0;
        loop {
            match iter.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    consumed = iter.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // Garbage: drop it all rather than wedge the stream.
                    consumed = self.buf.len();
                    break;
                }
                None => {
                    consumed = iter.byte_offset();
                    break;
                }
            }
        }
        self.buf.drain(..consumed);
        sizes
    }
}

/// Channels between a transport and a session.
pub struct SessionIo {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    pub out: mpsc::Sender<Outgoing>,
}

async fn copy_out<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    channel: OutChannel,
    out: mpsc::Sender<Outgoing>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out
                    .send(Outgoing::Data(channel, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn copy_pty_out(pty: Arc<Pty>, out: mpsc::Sender<Outgoing>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pty.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                if out
                    .send(Outgoing::Data(OutChannel::Stdout, data))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Waits for the exit code, then lets output drain (bounded) before the status.
async fn wait_exit(
    exited: tokio::sync::oneshot::Receiver<Option<i32>>,
    outputs: impl Future<Output = ()>,
) -> Option<i32> {
    tokio::pin!(outputs);
    tokio::pin!(exited);
    tokio::select! {
        code = &mut exited => {
            let _ = tokio::time::timeout(DRAIN, &mut outputs).await;
            code.ok().flatten()
        }
        () = &mut outputs => exited.await.ok().flatten(),
    }
}

/// Kills the exec if the session is dropped before the process exited (the
/// client went away), as containerd does when the stream's context ends.
struct KillOnDrop {
    pid: i32,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!(pid = self.pid, "client gone; killing exec");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs a started exec to its end and sends its status; `cmd` words the status.
pub async fn run_exec(process: ExecProcess, cmd: &[String], io: SessionIo) {
    let SessionIo { stdin, resize, out } = io;
    let mut guard = KillOnDrop {
        pid: process.pid,
        armed: true,
    };
    let mut helpers = tokio::task::JoinSet::new();
    let code = match process.io {
        ExecIo::Pipes {
            stdin: pipe,
            stdout,
            stderr,
        } => {
            if let (Some(mut pipe), Some(mut rx)) = (pipe, stdin) {
                helpers.spawn(async move {
                    while let Some(data) = rx.recv().await {
                        if pipe.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    // Dropping the pipe gives the process EOF.
                });
            }
            let o = copy_out(stdout, OutChannel::Stdout, out.clone());
            let e = copy_out(stderr, OutChannel::Stderr, out.clone());
            wait_exit(process.exited, async {
                tokio::join!(o, e);
            })
            .await
        }
        ExecIo::Tty(pty) => {
            let pty = Arc::new(pty);
            if let Some(mut rx) = stdin {
                let pty = pty.clone();
                helpers.spawn(async move {
                    while let Some(data) = rx.recv().await {
                        if pty.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                });
            }
            if let Some(mut rx) = resize {
                let pty = pty.clone();
                helpers.spawn(async move {
                    while let Some(size) = rx.recv().await {
                        if let Err(err) = pty.resize(size.width, size.height) {
                            tracing::debug!(?err, "terminal resize failed");
                        }
                    }
                });
            }
            wait_exit(process.exited, copy_pty_out(pty, out.clone())).await
        }
    };
    guard.armed = false;
    helpers.abort_all();
    tracing::debug!(pid = process.pid, ?code, "streaming exec finished");
    let _ = out
        .send(Outgoing::Status(ExitStatus::from_exit(cmd, code)))
        .await;
}

/// Runs `start`, then the exec it started; a start failure becomes an internal-error status.
pub async fn exec_session<F, E>(start: F, cmd: Vec<String>, io: SessionIo)
where
    F: Future<Output = Result<ExecProcess, E>>,
    E: std::error::Error,
{
    match start.await {
        Ok(process) => run_exec(process, &cmd, io).await,
        Err(err) => {
            tracing::warn!(error = %crate::streaming::chain(&err), "streaming exec failed to start");
            let _ = io
                .out
                .send(Outgoing::Status(ExitStatus::Internal(format!(
                    "error executing command in container: {}",
                    crate::streaming::chain(&err)
                ))))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_status_is_the_bare_go_form() {
        assert_eq!(
            String::from_utf8(ExitStatus::Success.to_json()).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(ExitStatus::Success.to_text(), None);
    }

    #[test]
    fn non_zero_exit_status_matches_kubelet() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let s = ExitStatus::from_exit(&cmd, Some(3));
        assert_eq!(
            String::from_utf8(s.to_json()).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
    }

    #[test]
    fn internal_error_has_code_500() {
        let json = String::from_utf8(ExitStatus::Internal("boom".into()).to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}"#
        );
    }

    #[test]
    fn resize_values_split_across_chunks_are_decoded() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.push(br#"{"Width":80,"Hei"#), vec![]);
        assert_eq!(
            d.push(br#"ght":24}{"Width":100,"Height":50}"#),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
    }
}
