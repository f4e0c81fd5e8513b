//! Token discovery as kubeadm's: read the `cluster-info` ConfigMap
//! anonymously without verifying TLS, check its `jws-kubeconfig-<id>`
//! signature with the token secret (and the CA's public key against the
//! `--ca-cert-hash` pin when given), then trust the CA it carries.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

use super::token::{self, BootstrapToken};

/// How long discovery waits for the signature of a new token to appear.
const SIGNATURE_WAIT: Duration = Duration::from_secs(20);
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("failed to build a client for {0}")]
    Client(String, #[source] kube::Error),
    #[error("failed to build a client for {0}")]
    Kubeconfig(String, #[source] kube::config::KubeconfigError),
    #[error("failed to request the cluster-info ConfigMap from {0}")]
    Fetch(String, #[source] kube::Error),
    #[error("the cluster-info ConfigMap does not hold a kubeconfig")]
    NoKubeconfig,
    #[error(
        "token id {0:?} is invalid for this cluster or it has expired. Use \"r8s-server token create\" on the control-plane node to create a new valid token"
    )]
    NoSignature(String),
    #[error(
        "failed to verify JWS signature of received cluster info object, can't trust this API Server"
    )]
    BadSignature,
    #[error("the cluster-info kubeconfig has no certificate-authority-data")]
    NoCa,
    #[error(
        "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{actual}\" are pinned (--ca-cert-hash {pinned})"
    )]
    PinMismatch { actual: String, pinned: String },
    #[error(transparent)]
    Token(#[from] token::TokenError),
}

/// What discovery learned: the CA to trust (PEM).
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub ca_pem: Vec<u8>,
}

/// A kubeconfig for `server` with `cluster` settings and one user.
pub fn kubeconfig_yaml(
    server: &str,
    cluster: serde_json::Value,
    user: serde_json::Value,
) -> String {
    let mut c = serde_json::json!({"server": server});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), cluster.as_object()) {
        c.extend(extra.clone());
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": c}],
        "contexts": [{"name": "default-context", "context": {"cluster": "default-cluster", "namespace": "default", "user": "default-auth"}}],
        "current-context": "default-context",
        "users": [{"name": "default-auth", "user": user}],
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// A client from kubeconfig YAML.
pub async fn client_from_yaml(server: &str, yaml: &str) -> Result<kube::Client, DiscoveryError> {
    let kc = kube::config::Kubeconfig::from_yaml(yaml)
        .map_err(|e| DiscoveryError::Kubeconfig(server.to_owned(), e))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| DiscoveryError::Kubeconfig(server.to_owned(), e))?;
    kube::Client::try_from(config).map_err(|e| DiscoveryError::Client(server.to_owned(), e))
}

/// Checks a fetched `cluster-info` data map; returns the CA (PEM).
pub fn verify(
    data: &std::collections::BTreeMap<String, String>,
    token: &BootstrapToken,
    ca_cert_hash: Option<&str>,
) -> Result<ClusterInfo, DiscoveryError> {
    let kubeconfig = data
        .get(token::KUBECONFIG_KEY)
        .ok_or(DiscoveryError::NoKubeconfig)?;
    let sig = data
        .get(&format!("{}{}", token::JWS_KEY_PREFIX, token.id))
        .ok_or_else(|| DiscoveryError::NoSignature(token.id.clone()))?;
    if !token::detached_signature_is_valid(sig, kubeconfig, token) {
        return Err(DiscoveryError::BadSignature);
    }
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .map_err(|_| DiscoveryError::NoKubeconfig)?;
    let ca_b64 = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .ok_or(DiscoveryError::NoCa)?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|_| DiscoveryError::NoCa)?;
    if let Some(pinned) = ca_cert_hash {
        let pinned = token::parse_ca_cert_hash(pinned)?;
        let der = x509_parser::pem::parse_x509_pem(&ca_pem)
            .map_err(|_| DiscoveryError::NoCa)?
            .1
            .contents;
        let actual = token::ca_cert_hash(&der)?;
        if actual != pinned {
            return Err(DiscoveryError::PinMismatch { actual, pinned });
        }
    }
    Ok(ClusterInfo { ca_pem })
}

/// Fetches and verifies `cluster-info` from `server`.
pub async fn discover(
    server: &str,
    token: &BootstrapToken,
    ca_cert_hash: Option<&str>,
) -> Result<ClusterInfo, DiscoveryError> {
    if ca_cert_hash.is_none() {
        tracing::warn!(
            "joining without --ca-cert-hash: the cluster CA is trusted on the token's signature alone"
        );
    }
    // A throwaway root keeps kube-rs off the platform verifier, which the
    // skip-verify flag then replaces.
    let placeholder = rcgen::KeyPair::generate()
        .and_then(|key| rcgen::CertificateParams::default().self_signed(&key))
        .map(|c| base64::engine::general_purpose::STANDARD.encode(c.pem()))
        .map_err(|_| DiscoveryError::NoCa)?;
    let yaml = kubeconfig_yaml(
        server,
        serde_json::json!({"insecure-skip-tls-verify": true, "certificate-authority-data": placeholder}),
        serde_json::json!({}),
    );
    let client = client_from_yaml(server, &yaml).await?;
    let api = Api::<ConfigMap>::namespaced(client, token::CLUSTER_INFO_NAMESPACE);
    let deadline = tokio::time::Instant::now() + SIGNATURE_WAIT;
    loop {
        let cm = api
            .get(token::CLUSTER_INFO_NAME)
            .await
            .map_err(|e| DiscoveryError::Fetch(server.to_owned(), e))?;
        match verify(&cm.data.unwrap_or_default(), token, ca_cert_hash) {
            // The bootstrapsigner may not have signed for a new token yet.
            Err(DiscoveryError::NoSignature(_)) if tokio::time::Instant::now() < deadline => {
                tracing::info!(token_id = %token.id, "waiting for cluster-info to be signed for the token");
                tokio::time::sleep(RETRY).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cluster_info(token: &BootstrapToken) -> (BTreeMap<String, String>, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap();
        let kc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(ca.pem())
        );
        let sig = token::compute_detached_signature(&kc, token);
        let data = [
            ("kubeconfig".to_string(), kc),
            (format!("jws-kubeconfig-{}", token.id), sig),
        ]
        .into();
        (data, token::ca_cert_hash(ca.der()).unwrap())
    }

    #[test]
    fn a_signed_cluster_info_yields_its_ca() {
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let (data, hash) = cluster_info(&t);
        assert!(verify(&data, &t, None).is_ok());
        assert!(verify(&data, &t, Some(&hash)).is_ok());
    }

    #[test]
    fn wrong_tokens_and_pins_are_refused() {
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let (data, _) = cluster_info(&t);
        let wrong_secret: BootstrapToken = "abcdef.0123456789abcdee".parse().unwrap();
        assert!(matches!(
            verify(&data, &wrong_secret, None),
            Err(DiscoveryError::BadSignature)
        ));
        let wrong_id: BootstrapToken = "zzzzzz.0123456789abcdef".parse().unwrap();
        assert!(matches!(
            verify(&data, &wrong_id, None),
            Err(DiscoveryError::NoSignature(_))
        ));
        let pin = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            verify(&data, &t, Some(&pin)),
            Err(DiscoveryError::PinMismatch { .. })
        ));
    }
}
