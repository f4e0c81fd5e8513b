//! TCP socket probes (kubelet's `pkg/probe/tcp`): success when a connection
//! opens within the timeout; the failure message reads like Go's dial error.

use std::time::Duration;

use tokio::net::TcpStream;

use super::Outcome;
use super::target::join_host_port;

/// Go's wording of a connect error (`connect: connection refused`).
pub fn dial_error(addr: &str, err: &std::io::Error) -> String {
    let what = match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
        std::io::ErrorKind::TimedOut => "i/o timeout".to_owned(),
        std::io::ErrorKind::HostUnreachable => "connect: no route to host".to_owned(),
        std::io::ErrorKind::NetworkUnreachable => "connect: network is unreachable".to_owned(),
        _ => err.to_string(),
    };
    format!("dial tcp {addr}: {what}")
}

/// Opens a TCP connection to `host:port` within `timeout`.
pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(dial_error(&addr, &e)),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Runs a TCP probe.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    match connect(host, port, timeout).await {
        Ok(_) => Outcome::Success(String::new()),
        Err(msg) => Outcome::Failure(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_port_succeeds_and_closed_port_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let secs = Duration::from_secs(2);
        assert!(matches!(
            probe("127.0.0.1", port, secs).await,
            Outcome::Success(_)
        ));
        drop(listener);
        assert_eq!(
            probe("127.0.0.1", port, secs).await,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }
}
