//! One run of a resolved probe or hook action (kubelet's `prober.runProbe`):
//! dispatch to exec, HTTP, TCP or gRPC with the timeout.

use std::time::Duration;

use super::exec::{self, ContainerExec, ExecError};
use super::target::ProbeAction;
use super::{grpc, http, tcp};

/// The outcome of one run and its message (kubelet's `probe.Result` and
/// output); a warning counts as success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success(String),
    Warning(String),
    Failure(String),
}

impl Outcome {
    /// Whether the run passed (success or warning).
    pub fn passed(&self) -> bool {
        !matches!(self, Self::Failure(_))
    }
}

/// Runs `action` against the container `container_id`; `Err` when the
/// probe could not run at all (kubelet then discards the result).
pub async fn run(
    action: &ProbeAction,
    timeout: Duration,
    exec: &dyn ContainerExec,
    container_id: &str,
) -> Result<Outcome, ExecError> {
    match action {
        ProbeAction::Exec { command } => exec::probe(exec, container_id, command, timeout).await,
        ProbeAction::Http(t) => Ok(http::probe(t, timeout, &super::user_agent()).await),
        ProbeAction::Tcp { host, port } => Ok(tcp::probe(host, *port, timeout).await),
        ProbeAction::Grpc {
            host,
            port,
            service,
        } => Ok(grpc::probe(host, *port, service, timeout).await),
        ProbeAction::Sleep { seconds } => {
            let secs = u64::try_from(*seconds).unwrap_or(0);
            tokio::time::sleep(Duration::from_secs(secs)).await;
            Ok(Outcome::Success(String::new()))
        }
    }
}
