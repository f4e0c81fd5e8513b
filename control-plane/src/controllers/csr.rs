//! What the CSR controllers read from a CertificateSigningRequest: its PEM
//! request decoded (subject, SANs), its state (approved, denied, issued),
//! and the checks the kubelet signers make on the request's shape
//! (upstream `certificates/v1` `IsKubeletClientCSR` / `IsKubeletServingCSR`)
//! and on an agent's kube-proxy client request.
//! No I/O.

use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

pub use crate::auth::node::{NODE_USER_PREFIX, NODES_GROUP};
pub use agent::bootstrap::csr::{
    KUBE_APISERVER_CLIENT_SIGNER, KUBE_PROXY_USER, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER,
};

/// Why a CSR's request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("spec.request is not a PEM CERTIFICATE REQUEST")]
    Pem,
    #[error("spec.request is not a valid PKCS#10 request")]
    Der,
    #[error("the request's signature is invalid")]
    Signature,
}

/// The parts of a PKCS#10 request the controllers look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrInfo {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Email and URI SANs, which no kubelet certificate may carry.
    pub other_sans: usize,
    /// The request in DER.
    pub der: Vec<u8>,
}

/// Decodes a PEM `CERTIFICATE REQUEST`, checking its self-signature.
pub fn parse_request(pem: &[u8]) -> Result<CsrInfo, CsrError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| CsrError::Pem)?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(CsrError::Pem);
    }
    let (_, req) = X509CertificationRequest::from_der(&pem.contents).map_err(|_| CsrError::Der)?;
    req.verify_signature().map_err(|_| CsrError::Signature)?;
    let subject = &req.certification_request_info.subject;
    let mut info = CsrInfo {
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned(),
        organizations: subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_owned))
            .collect(),
        der: pem.contents.clone(),
        ..Default::default()
    };
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => info.dns_names.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => info
                            .ip_addresses
                            .extend(<[u8; 4]>::try_from(*b).ok().map(IpAddr::from)),
                        16 => info
                            .ip_addresses
                            .extend(<[u8; 16]>::try_from(*b).ok().map(IpAddr::from)),
                        _ => info.other_sans += 1,
                    },
                    _ => info.other_sans += 1,
                }
            }
        }
    }
    Ok(info)
}

/// The request of a CSR object, decoded.
pub fn request_of(csr: &CertificateSigningRequest) -> Result<CsrInfo, CsrError> {
    parse_request(&csr.spec.request.0)
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

pub fn is_approved(csr: &CertificateSigningRequest) -> bool {
    has_condition(csr, "Approved")
}

pub fn is_denied(csr: &CertificateSigningRequest) -> bool {
    has_condition(csr, "Denied")
}

pub fn is_failed(csr: &CertificateSigningRequest) -> bool {
    has_condition(csr, "Failed")
}

pub fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

fn usages_within(usages: &[String], allowed: &[&str], required: &str) -> bool {
    usages.iter().all(|u| allowed.contains(&u.as_str())) && usages.iter().any(|u| u == required)
}

fn is_node_subject(info: &CsrInfo) -> bool {
    info.organizations == [NODES_GROUP]
        && info
            .common_name
            .strip_prefix(NODE_USER_PREFIX)
            .is_some_and(|n| !n.is_empty())
}

/// A kubelet client certificate request: `system:node:<name>` in
/// `system:nodes`, no SANs, client auth usages only.
pub fn check_kubelet_client(info: &CsrInfo, usages: &[String]) -> Result<(), String> {
    if !is_node_subject(info) {
        return Err(format!(
            "subject must be CN=system:node:<name>, O=system:nodes, not CN={:?} O={:?}",
            info.common_name, info.organizations
        ));
    }
    check_client_shape(info, usages)
}

/// An agent's kube-proxy client certificate request: `system:kube-proxy`
/// in no group, no SANs, client auth usages only.
pub fn check_kube_proxy_client(info: &CsrInfo, usages: &[String]) -> Result<(), String> {
    if info.common_name != KUBE_PROXY_USER || !info.organizations.is_empty() {
        return Err(format!(
            "subject must be CN={KUBE_PROXY_USER} and no O, not CN={:?} O={:?}",
            info.common_name, info.organizations
        ));
    }
    check_client_shape(info, usages)
}

/// No SANs, client auth usages only.
fn check_client_shape(info: &CsrInfo, usages: &[String]) -> Result<(), String> {
    if !info.dns_names.is_empty() || !info.ip_addresses.is_empty() || info.other_sans > 0 {
        return Err("subjectAltNames are not allowed".into());
    }
    if !usages_within(
        usages,
        &["digital signature", "key encipherment", "client auth"],
        "client auth",
    ) {
        return Err(format!("usages {usages:?} are not allowed"));
    }
    Ok(())
}

/// A kubelet serving certificate request: `system:node:<name>` in
/// `system:nodes`, DNS/IP SANs only (at least one), server auth usages.
pub fn check_kubelet_serving(info: &CsrInfo, usages: &[String]) -> Result<(), String> {
    if !is_node_subject(info) {
        return Err(format!(
            "subject must be CN=system:node:<name>, O=system:nodes, not CN={:?} O={:?}",
            info.common_name, info.organizations
        ));
    }
    if info.other_sans > 0 {
        return Err("email and URI subjectAltNames are not allowed".into());
    }
    if info.dns_names.is_empty() && info.ip_addresses.is_empty() {
        return Err("at least one DNS or IP subjectAltName is required".into());
    }
    if !usages_within(
        usages,
        &["digital signature", "key encipherment", "server auth"],
        "server auth",
    ) {
        return Err(format!("usages {usages:?} are not allowed"));
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    use super::*;

    /// A PEM request for `cn` in `orgs` with `sans` (IPs or DNS names).
    pub fn request(cn: &str, orgs: &[&str], sans: &[&str]) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for o in orgs {
            dn.push(DnType::OrganizationName, *o);
        }
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*s).try_into().unwrap()),
            })
            .collect();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn requests_decode_subject_and_sans() {
        let pem = request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.1"]);
        let info = parse_request(pem.as_bytes()).unwrap();
        assert_eq!(info.common_name, "system:node:n1");
        assert_eq!(info.organizations, ["system:nodes"]);
        assert_eq!(info.dns_names, ["n1"]);
        assert_eq!(info.ip_addresses, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(parse_request(b"not pem").is_err());
    }

    #[test]
    fn kubelet_client_requests_must_look_like_a_node() {
        let client = usages(&["digital signature", "key encipherment", "client auth"]);
        let ok =
            parse_request(request("system:node:n1", &["system:nodes"], &[]).as_bytes()).unwrap();
        assert!(check_kubelet_client(&ok, &client).is_ok());
        assert!(check_kubelet_client(&ok, &usages(&["server auth"])).is_err());
        let admin = parse_request(request("admin", &["system:masters"], &[]).as_bytes()).unwrap();
        assert!(check_kubelet_client(&admin, &client).is_err());
        let with_san =
            parse_request(request("system:node:n1", &["system:nodes"], &["n1"]).as_bytes())
                .unwrap();
        assert!(check_kubelet_client(&with_san, &client).is_err());
        let serving = usages(&["digital signature", "key encipherment", "server auth"]);
        assert!(check_kubelet_serving(&with_san, &serving).is_ok());
        assert!(check_kubelet_serving(&ok, &serving).is_err());
    }
}
