//! The CSR signer (kube-controller-manager's csrsigning controller): signs
//! approved CertificateSigningRequests of the built-in signers
//! `kubernetes.io/kube-apiserver-client-kubelet`, `kube-apiserver-client`
//! and `kubelet-serving` with the cluster CA, for `spec.expirationSeconds`
//! (default one year, never past the CA), and writes `status.certificate`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateSigningRequestDer;

use super::ControllerContext;
use super::csr::{self, CsrInfo};
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

/// kube-controller-manager's `--cluster-signing-duration` default.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest `spec.expirationSeconds` honoured, as upstream.
const MIN_DURATION: Duration = Duration::from_secs(600);
/// Certificates start this long before now, for clocks slightly behind.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum CsrSigningError {
    #[error("failed to read the cluster CA {path}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to sign the certificate")]
    Sign(#[from] rcgen::Error),
    #[error("failed to update certificate signing request {name}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Issues a certificate for `info` with the given usages and lifetime,
/// signed by the CA (PEM cert and key); returns the certificate PEM.
pub fn sign(
    info: &CsrInfo,
    usages: &[String],
    lifetime: Duration,
    ca_cert_pem: &str,
    ca_key_pem: &str,
) -> Result<String, rcgen::Error> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let ca_not_after = x509_parser::pem::parse_x509_pem(ca_cert_pem.as_bytes())
        .ok()
        .and_then(|(_, p)| {
            p.parse_x509()
                .ok()
                .map(|c| c.validity().not_after.to_datetime())
        });
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let requested = CertificateSigningRequestParams::from_der(
        &CertificateSigningRequestDer::from(info.der.as_slice()),
    )?;
    let now = time::OffsetDateTime::now_utc();
    let mut not_after = now + lifetime;
    if let Some(ca_end) = ca_not_after {
        not_after = not_after.min(ca_end);
    }
    // Only the subject, SANs and key come from the request; what the
    // certificate may do comes from spec.usages, as upstream's signer.
    let mut params = CertificateParams::default();
    params.distinguished_name = requested.params.distinguished_name.clone();
    params.subject_alt_names = requested.params.subject_alt_names.clone();
    params.is_ca = IsCa::ExplicitNoCa;
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    for u in usages {
        match u.as_str() {
            "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            "client auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth),
            _ => {}
        }
    }
    let signed = CertificateSigningRequestParams {
        params,
        public_key: requested.public_key,
    }
    .signed_by(&issuer)?;
    Ok(signed.pem())
}

/// The lifetime of a CSR's certificate: `expirationSeconds` (at least 10
/// minutes) capped by `--cluster-signing-duration` (`max`), else `max`.
pub fn lifetime(csr: &CertificateSigningRequest, max: Duration) -> Duration {
    match csr.spec.expiration_seconds {
        Some(s) => Duration::from_secs(u64::try_from(s).unwrap_or(0))
            .max(MIN_DURATION)
            .min(max),
        None => max,
    }
}

/// Whether the request's shape is allowed for its signer; the message of
/// the Failed condition otherwise.
fn check_signer(csr: &CertificateSigningRequest, info: &CsrInfo) -> Option<Result<(), String>> {
    let usages = csr.spec.usages.clone().unwrap_or_default();
    match csr.spec.signer_name.as_str() {
        csr::KUBELET_CLIENT_SIGNER => Some(csr::check_kubelet_client(info, &usages)),
        csr::KUBELET_SERVING_SIGNER => Some(csr::check_kubelet_serving(info, &usages)),
        csr::KUBE_APISERVER_CLIENT_SIGNER => Some(
            if usages.iter().any(|u| u == "client auth")
                && !usages.iter().any(|u| u == "server auth")
            {
                Ok(())
            } else {
                Err(format!("usages {usages:?} are not allowed"))
            },
        ),
        _ => None,
    }
}

struct Ctx {
    client: kube::Client,
    csrs: Store<CertificateSigningRequest>,
    ca_dir: PathBuf,
    max_duration: Duration,
}

pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let csrs = ctx.informers.informer(
        Api::<CertificateSigningRequest>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |c: &CertificateSigningRequest| q.add("", &c.name_any()),
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        csrs,
        ca_dir: ctx.config.data_dir.join("tls"),
        max_duration: ctx.config.cluster_signing_duration,
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.csrs.wait_until_ready().await;
        util::run_workers("csrsigning", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

fn read(path: &Path) -> Result<String, CsrSigningError> {
    std::fs::read_to_string(path).map_err(|source| CsrSigningError::ReadCa {
        path: path.to_path_buf(),
        source,
    })
}

async fn sync(c: &Ctx, (_, name): Key) -> Result<Requeue, CsrSigningError> {
    let Some(obj) = c.csrs.get(&ObjectRef::new(&name)) else {
        return Ok(None);
    };
    if !csr::is_approved(&obj)
        || csr::is_denied(&obj)
        || csr::is_failed(&obj)
        || csr::is_issued(&obj)
    {
        return Ok(None);
    }
    let info = csr::request_of(&obj);
    let verdict = match &info {
        Ok(info) => check_signer(&obj, info),
        Err(err) => Some(Err(err.to_string())),
    };
    let api = Api::<CertificateSigningRequest>::all(c.client.clone());
    let status = match (verdict, info) {
        // Another signer's request: not ours to touch.
        (None, _) => return Ok(None),
        (Some(Err(message)), _) => {
            tracing::info!(csr = %name, %message, "certificate signing request failed validation");
            let mut conditions = obj
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            conditions.push(CertificateSigningRequestCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("SignerValidationFailure".into()),
                message: Some(message),
                last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            });
            serde_json::json!({"status": {"conditions": conditions}})
        }
        (Some(Ok(())), Ok(info)) => {
            let ca_cert = read(&c.ca_dir.join("ca.crt"))?;
            let ca_key = read(&c.ca_dir.join("ca.key"))?;
            let usages = obj.spec.usages.clone().unwrap_or_default();
            let pem = sign(
                &info,
                &usages,
                lifetime(&obj, c.max_duration),
                &ca_cert,
                &ca_key,
            )?;
            tracing::info!(csr = %name, signer = %obj.spec.signer_name, subject = %info.common_name, "signed a certificate");
            serde_json::json!({"status": {"certificate": ByteString(pem.into_bytes())}})
        }
        (Some(Ok(())), Err(_)) => return Ok(None),
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|source| CsrSigningError::Api { name, source })?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::csr::tests::request;

    #[test]
    fn signed_certificates_carry_the_request_subject_and_usages() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::ensure(dir.path(), &["localhost".into()]).unwrap();
        let info = csr::parse_request(
            request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.1"]).as_bytes(),
        )
        .unwrap();
        let usages = vec!["digital signature".to_string(), "server auth".to_string()];
        let pem = sign(
            &info,
            &usages,
            Duration::from_secs(3600),
            &pki.ca_cert_pem,
            &pki.ca_key_pem,
        )
        .unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = p.parse_x509().unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "system:node:n1");
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 300);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let sans = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(sans.general_names.len(), 2);
    }
}
