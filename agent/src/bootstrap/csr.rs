//! Certificates by CertificateSigningRequest, as kubelet's certificate
//! manager: a new key, a PKCS#10 request for a [`Subject`] (the node's
//! `system:node:<name>` in `system:nodes`, or the in-process kube-proxy's
//! `system:kube-proxy`), a CSR object for a signer, then the wait for the
//! signed certificate (or a Denied/Failed condition).

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const KUBE_APISERVER_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The user the agent's service proxy and pod network act as (kube-proxy's
/// user, bound to `system:node-proxier`).
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";

/// How long to wait for a CSR to be approved and signed.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("failed to build the certificate request")]
    Build(#[from] rcgen::Error),
    #[error("invalid hostname {0:?} for a certificate")]
    Name(String),
    #[error("failed to create the certificate signing request")]
    Create(#[source] kube::Error),
    #[error("failed to watch certificate signing request {0}")]
    Wait(String, #[source] kube::runtime::wait::Error),
    #[error("certificate signing request {name} was {state}: {message}")]
    Refused {
        name: String,
        state: String,
        message: String,
    },
    #[error("timed out waiting for certificate signing request {0} to be signed")]
    Timeout(String),
    #[error("stopped while waiting for certificate signing request {0}")]
    Cancelled(String),
}

/// Whom a certificate names: its user (CN) and groups (O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub organizations: Vec<String>,
}

impl Subject {
    /// Node `name`: `system:node:<name>` in `system:nodes`.
    pub fn node(name: &str) -> Self {
        Self {
            common_name: format!("system:node:{name}"),
            organizations: vec!["system:nodes".into()],
        }
    }

    /// The in-process kube-proxy (and flannel): `system:kube-proxy`.
    pub fn kube_proxy() -> Self {
        Self {
            common_name: KUBE_PROXY_USER.into(),
            organizations: Vec::new(),
        }
    }
}

/// A new key and the PEM request for `subject`, with `sans` (IPs or DNS
/// names; empty for a client certificate).
pub fn build_request(
    subject: &Subject,
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<(KeyPair, String), CsrError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in &subject.organizations {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, subject.common_name.as_str());
    params.distinguished_name = dn;
    for d in dns_names {
        let name = d
            .clone()
            .try_into()
            .map_err(|_| CsrError::Name(d.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    params
        .subject_alt_names
        .extend(ips.iter().copied().map(SanType::IpAddress));
    let pem = params.serialize_request(&key)?.pem()?;
    Ok((key, pem))
}

/// Usages kubelet asks for with an ECDSA key.
pub fn usages(signer: &str) -> Vec<String> {
    let last = if signer == KUBELET_SERVING_SIGNER {
        "server auth"
    } else {
        "client auth"
    };
    vec!["digital signature".into(), last.into()]
}

fn refused(csr: &CertificateSigningRequest) -> Option<(String, String)> {
    csr.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| matches!(c.type_.as_str(), "Denied" | "Failed") && c.status == "True")
        .map(|c| (c.type_.clone(), c.message.clone().unwrap_or_default()))
}

/// Creates a CSR for `request_pem` with `signer` and waits for its
/// certificate (PEM).
pub async fn request_certificate(
    client: &kube::Client,
    signer: &str,
    request_pem: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<String, CsrError> {
    let api = Api::<CertificateSigningRequest>::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: signer.into(),
            usages: Some(usages(signer)),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(CsrError::Create)?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, signer, "waiting for the certificate signing request to be signed");
    let done = |c: Option<&CertificateSigningRequest>| {
        c.is_some_and(|c| {
            refused(c).is_some()
                || c.status
                    .as_ref()
                    .and_then(|s| s.certificate.as_ref())
                    .is_some_and(|b| !b.0.is_empty())
        })
    };
    let waited = tokio::select! {
        _ = shutdown.cancelled() => return Err(CsrError::Cancelled(name)),
        w = tokio::time::timeout(ISSUE_TIMEOUT, kube::runtime::wait::await_condition(api, &name, done)) => w,
    };
    let obj = waited
        .map_err(|_| CsrError::Timeout(name.clone()))?
        .map_err(|e| CsrError::Wait(name.clone(), e))?;
    let Some(obj) = obj else {
        return Err(CsrError::Refused {
            name,
            state: "deleted".into(),
            message: "the object is gone".into(),
        });
    };
    if let Some((state, message)) = refused(&obj) {
        return Err(CsrError::Refused {
            name,
            state: state.to_lowercase(),
            message,
        });
    }
    let cert = obj
        .status
        .and_then(|s| s.certificate)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    tracing::info!(csr = %name, "certificate signing request was signed");
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::FromDer;

    use super::*;

    #[test]
    fn requests_name_the_node_in_system_nodes() {
        let (_, pem) = build_request(
            &Subject::node("n1"),
            &["n1".into()],
            &["10.0.0.1".parse::<IpAddr>().unwrap()],
        )
        .unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(p.label, "CERTIFICATE REQUEST");
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&p.contents)
                .unwrap();
        let subject = &req.certification_request_info.subject;
        let cn = subject.iter_common_name().next().unwrap().as_str().unwrap();
        let o = subject
            .iter_organization()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!((cn, o), ("system:node:n1", "system:nodes"));
        assert!(req.requested_extensions().is_some());
        let (_, client) = build_request(&Subject::node("n1"), &[], &[]).unwrap();
        assert!(client.contains("CERTIFICATE REQUEST"));
        let (_, proxy) = build_request(&Subject::kube_proxy(), &[], &[]).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(proxy.as_bytes()).unwrap();
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&p.contents)
                .unwrap();
        let subject = &req.certification_request_info.subject;
        let cn = subject.iter_common_name().next().unwrap().as_str().unwrap();
        assert_eq!(cn, "system:kube-proxy");
        assert_eq!(subject.iter_organization().count(), 0);
        assert_eq!(usages(KUBE_APISERVER_CLIENT_SIGNER)[1], "client auth");
        assert_eq!(usages(KUBELET_SERVING_SIGNER)[1], "server auth");
        assert_eq!(usages(KUBELET_CLIENT_SIGNER)[1], "client auth");
    }
}
