//! Certificate rotation as kubelet's certificate manager: when 70–90%
//! (jittered) of a certificate's lifetime has passed, request a new one by
//! CSR, authenticated with the current client certificate, and replace the
//! `*-current.pem` file. The agent's API client (`client`) notices the new
//! file and moves to it; the kubelet API keeps serving the certificate it
//! started with until the agent restarts.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{csr, files};

/// What one rotated certificate is.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The `*-current.pem` file (certificate + key).
    pub file: PathBuf,
    pub signer: &'static str,
    pub subject: csr::Subject,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// The kubeconfig to authenticate with (kubelet.conf: the node asks for
    /// every certificate it holds).
    pub kubeconfig: PathBuf,
}

/// When a certificate valid from `not_before` to `not_after` (Unix
/// seconds) is renewed, with `jitter` in [0, 1): between 70% and 90% of
/// its lifetime, as kubelet's `nextRotationDeadline`.
pub fn renewal_deadline(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let total = (not_after - not_before).max(0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let offset = (total as f64 * (0.7 + 0.2 * jitter.clamp(0.0, 1.0))).round() as i64;
    not_before + offset
}

fn time_until_renewal(file: &Path) -> Option<Duration> {
    let pem = std::fs::read(file).ok()?;
    let (nb, na) = files::cert_validity(&pem)?;
    // Signers backdate notBefore (5 minutes for the cluster signer): for a
    // short-lived certificate that would put the deadline before it was
    // even received, so the lifetime counts from when it was written.
    let received = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(nb);
    let deadline = renewal_deadline(nb.max(received.min(na)), na, rand::rng().random::<f64>());
    let left = deadline - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
}

async fn renew(r: &Rotated, shutdown: &CancellationToken) -> Result<(), String> {
    let client = super::client_for(&r.kubeconfig)
        .await
        .map_err(|e| with_source(&e))?;
    let (key, request) =
        csr::build_request(&r.subject, &r.dns_names, &r.ips).map_err(|e| e.to_string())?;
    let cert = csr::request_certificate(&client, r.signer, &request, shutdown)
        .await
        .map_err(|e| with_source(&e))?;
    files::write_private(&r.file, format!("{cert}{}", key.serialize_pem()).as_bytes())
        .map_err(|e| e.to_string())
}

fn with_source(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// Renews the certificate in `r.file` whenever it is due, until shutdown.
pub async fn run(r: Rotated, shutdown: CancellationToken) {
    loop {
        let wait = time_until_renewal(&r.file).unwrap_or(Duration::ZERO);
        tracing::info!(file = %r.file.display(), signer = r.signer, wait_secs = wait.as_secs(), "certificate rotation scheduled");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew(&r, &shutdown).await {
            Ok(()) => {
                tracing::info!(file = %r.file.display(), signer = r.signer, "rotated the certificate")
            }
            Err(err) => {
                tracing::warn!(file = %r.file.display(), signer = r.signer, %err, "certificate rotation failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_70_and_90_percent_of_the_lifetime() {
        assert_eq!(renewal_deadline(0, 1000, 0.0), 700);
        assert_eq!(renewal_deadline(0, 1000, 0.5), 800);
        assert_eq!(renewal_deadline(100, 1100, 0.999_999), 1000);
        assert_eq!(renewal_deadline(100, 50, 0.5), 100);
    }
}
