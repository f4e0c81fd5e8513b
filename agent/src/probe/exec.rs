//! Exec probes and hooks (kubelet's `pkg/probe/exec`): a command run in the
//! container through CRI `ExecSync`; exit 0 is success, the combined output
//! is the message. `ContainerExec` is the seam tests fake.

use std::time::Duration;

use cri::client::CriClient;
use cri::proto;

use super::Outcome;

/// The result of a finished command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// stdout followed by stderr.
    pub output: Vec<u8>,
}

/// Why a command did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("command timed out")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

/// Runs commands in containers.
#[async_trait::async_trait]
pub trait ContainerExec: Send + Sync {
    /// Runs `cmd` in `container_id`; `timeout` zero means none.
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError>;
}

#[async_trait::async_trait]
impl ContainerExec for CriClient {
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        let request = proto::ExecSyncRequest {
            container_id: container_id.to_owned(),
            cmd,
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        let mut runtime = self.runtime.clone();
        let call = runtime.exec_sync(request);
        // The runtime enforces the timeout; the margin only guards against a
        // runtime that does not answer at all.
        let answer = if timeout.is_zero() {
            call.await
        } else {
            tokio::time::timeout(timeout + Duration::from_secs(2), call)
                .await
                .map_err(|_| ExecError::Timeout)?
        };
        match answer {
            Ok(r) => {
                let r = r.into_inner();
                let mut output = r.stdout;
                output.extend_from_slice(&r.stderr);
                Ok(ExecOutput {
                    exit_code: r.exit_code,
                    output,
                })
            }
            Err(s)
                if s.code() == tonic::Code::DeadlineExceeded
                    || s.message().contains("timeout")
                    || s.message().contains("timed out") =>
            {
                Err(ExecError::Timeout)
            }
            Err(s) => Err(ExecError::Failed(s.message().to_owned())),
        }
    }
}

/// Runs an exec probe: success on exit 0, the output as the message; a
/// timeout is a failure (`ExecProbeTimeout`); other errors are `Err`.
pub async fn probe(
    exec: &dyn ContainerExec,
    container_id: &str,
    command: &[String],
    timeout: Duration,
) -> Result<Outcome, ExecError> {
    match exec
        .exec_sync(container_id, command.to_vec(), timeout)
        .await
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.output).into_owned();
            if out.exit_code == 0 {
                Ok(Outcome::Success(text))
            } else {
                Ok(Outcome::Failure(text))
            }
        }
        Err(ExecError::Timeout) => Ok(Outcome::Failure(format!(
            "command '{}' timed out",
            command.join(" ")
        ))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
pub mod fake {
    //! A scripted `ContainerExec` for tests.

    use std::sync::Mutex;

    use super::*;

    /// Answers every call with the next scripted result (the last repeats)
    /// and records the commands.
    #[derive(Default)]
    pub struct FakeExec {
        pub answers: Mutex<Vec<Result<ExecOutput, ExecError>>>,
        pub calls: Mutex<Vec<(String, Vec<String>)>>,
    }

    impl FakeExec {
        pub fn new(answers: Vec<Result<ExecOutput, ExecError>>) -> Self {
            Self {
                answers: Mutex::new(answers),
                calls: Mutex::default(),
            }
        }
    }

    pub fn exited(code: i32, output: &str) -> Result<ExecOutput, ExecError> {
        Ok(ExecOutput {
            exit_code: code,
            output: output.as_bytes().to_vec(),
        })
    }

    #[async_trait::async_trait]
    impl ContainerExec for FakeExec {
        async fn exec_sync(
            &self,
            container_id: &str,
            cmd: Vec<String>,
            _timeout: Duration,
        ) -> Result<ExecOutput, ExecError> {
            self.calls
                .lock()
                .unwrap()
                .push((container_id.to_owned(), cmd));
            let mut answers = self.answers.lock().unwrap();
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers
                    .first()
                    .cloned()
                    .unwrap_or(Ok(ExecOutput::default()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeExec, exited};
    use super::*;

    fn cmd() -> Vec<String> {
        vec!["cat".to_owned(), "/tmp/ready".to_owned()]
    }

    #[tokio::test]
    async fn exit_zero_succeeds_and_other_codes_fail_with_the_output() {
        let exec = FakeExec::new(vec![
            exited(1, "cat: can't open '/tmp/ready'"),
            exited(0, "ok"),
        ]);
        let secs = Duration::from_secs(1);
        assert_eq!(
            probe(&exec, "c1", &cmd(), secs).await.unwrap(),
            Outcome::Failure("cat: can't open '/tmp/ready'".to_owned())
        );
        assert_eq!(
            probe(&exec, "c1", &cmd(), secs).await.unwrap(),
            Outcome::Success("ok".to_owned())
        );
        assert_eq!(exec.calls.lock().unwrap()[0], ("c1".to_owned(), cmd()));
    }

    #[tokio::test]
    async fn a_timeout_is_a_failure_and_runtime_errors_are_errors() {
        let exec = FakeExec::new(vec![
            Err(ExecError::Timeout),
            Err(ExecError::Failed("container is not running".to_owned())),
        ]);
        let secs = Duration::from_secs(1);
        assert_eq!(
            probe(&exec, "c1", &cmd(), secs).await.unwrap(),
            Outcome::Failure("command 'cat /tmp/ready' timed out".to_owned())
        );
        assert!(probe(&exec, "c1", &cmd(), secs).await.is_err());
    }
}
