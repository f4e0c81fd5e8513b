//! Bootstrap tokens as kubeadm defines them (`<token-id>.<token-secret>`),
//! the detached JWS that signs the `cluster-info` kubeconfig with one, and
//! the CA public-key pin (`sha256:<hex>` of the CA's SubjectPublicKeyInfo).
//! Shared by r8s-server (authenticator, bootstrapsigner, `token` command)
//! and the agent's join (discovery).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;

/// Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Bootstrap token Secrets are named `bootstrap-token-<id>`.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// Namespace of bootstrap token Secrets.
pub const SECRET_NAMESPACE: &str = "kube-system";
/// User name prefix of token-authenticated requests.
pub const USER_PREFIX: &str = "system:bootstrap:";
/// The group every bootstrap token user is in.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// Namespace and name of the discovery ConfigMap.
pub const CLUSTER_INFO_NAMESPACE: &str = "kube-public";
pub const CLUSTER_INFO_NAME: &str = "cluster-info";
/// Key of the kubeconfig in `cluster-info`.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// Keys of the signatures in `cluster-info`: `jws-kubeconfig-<id>`.
pub const JWS_KEY_PREFIX: &str = "jws-kubeconfig-";

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a token or a pin is not well formed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bootstrap token {0:?} was not of the form \"[a-z0-9]{{6}}.[a-z0-9]{{16}}\"")]
    Format(String),
    #[error(
        "invalid CA cert hash {0:?}: expected the format \"sha256:<hex-encoded SHA-256 of the CA's Subject Public Key Info>\""
    )]
    CaCertHash(String),
    #[error("failed to parse the CA certificate")]
    CaCert,
}

/// A bootstrap token: `<id>.<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

/// Whether `id` is a valid token id (`[a-z0-9]{6}`).
pub fn is_token_id(id: &str) -> bool {
    is_token_part(id, 6)
}

impl BootstrapToken {
    /// A new random token, as `kubeadm token generate`.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut part = |len: usize| -> String {
            (0..len)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect()
        };
        let id = part(6);
        let secret = part(16);
        Self { id, secret }
    }

    /// The Secret holding this token.
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }

    /// The user a request with this token runs as.
    pub fn user_name(&self) -> String {
        format!("{USER_PREFIX}{}", self.id)
    }
}

impl FromStr for BootstrapToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        match s.split_once('.') {
            Some((id, secret)) if is_token_part(id, 6) && is_token_part(secret, 16) => Ok(Self {
                id: id.to_owned(),
                secret: secret.to_owned(),
            }),
            _ => Err(TokenError::Format(s.to_owned())),
        }
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for BootstrapToken {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

/// The detached JWS (`<header>..<signature>`, HS256 keyed by the token
/// secret, `kid` the token id) of `content`, as kubeadm's
/// `jws.ComputeDetachedSignature`.
pub fn compute_detached_signature(content: &str, token: &BootstrapToken) -> String {
    // go-jose serializes the protected header with sorted keys.
    let header = format!(r#"{{"alg":"HS256","kid":"{}"}}"#, token.id);
    let header = URL_SAFE_NO_PAD.encode(header);
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(content));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.secret.as_bytes());
    let sig = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{header}..{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Whether `detached` is the signature of `content` with `token`, compared
/// in constant time.
pub fn detached_signature_is_valid(detached: &str, content: &str, token: &BootstrapToken) -> bool {
    let want = compute_detached_signature(content, token);
    secrets_equal(&want, detached)
}

/// Constant-time comparison of two token secrets.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `sha256:<hex>` of the SubjectPublicKeyInfo of a DER certificate, as
/// kubeadm's `--discovery-token-ca-cert-hash`.
pub fn ca_cert_hash(cert_der: &[u8]) -> Result<String, TokenError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|_| TokenError::CaCert)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Ok(format!("sha256:{}", hex(digest.as_ref())))
}

/// Normalizes a `sha256:<hex>` pin (lowercase); rejects other forms.
pub fn parse_ca_cert_hash(pin: &str) -> Result<String, TokenError> {
    let pin = pin.trim();
    let lower = pin.to_ascii_lowercase();
    match lower.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(lower),
        _ => Err(TokenError::CaCertHash(pin.to_owned())),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_kubeadm_format() {
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        assert_eq!(t.id, "abcdef");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        assert_eq!(t.user_name(), "system:bootstrap:abcdef");
        assert_eq!(t.to_string(), "abcdef.0123456789abcdef");
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef.x",
        ] {
            assert!(bad.parse::<BootstrapToken>().is_err(), "{bad}");
        }
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn generated_tokens_parse_back() {
        let t = BootstrapToken::generate();
        assert_eq!(t.to_string().parse::<BootstrapToken>().unwrap(), t);
    }

    #[test]
    fn detached_signature_matches_the_kubeadm_vector() {
        // From kubernetes cluster-bootstrap/token/jws/jws_test.go.
        let token = BootstrapToken {
            id: "joshua".into(),
            secret: "my voice is my passcode".into(),
        };
        let content = "Hello from the other side. I must have called a thousand times.";
        let sig = compute_detached_signature(content, &token);
        assert_eq!(
            sig,
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
        );
        assert!(detached_signature_is_valid(&sig, content, &token));
        assert!(!detached_signature_is_valid(&sig, "other", &token));
        let other = BootstrapToken {
            secret: "my voice is not my passcode".into(),
            ..token.clone()
        };
        assert!(!detached_signature_is_valid(&sig, content, &other));
    }

    #[test]
    fn ca_cert_hash_pins_parse_and_normalize() {
        let h = format!("SHA256:{}", "AB".repeat(32));
        assert_eq!(
            parse_ca_cert_hash(&h).unwrap(),
            format!("sha256:{}", "ab".repeat(32))
        );
        assert!(parse_ca_cert_hash("md5:abcd").is_err());
        assert!(parse_ca_cert_hash("sha256:abcd").is_err());
    }

    #[test]
    fn ca_cert_hash_is_the_spki_digest() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let want = ring::digest::digest(&ring::digest::SHA256, &spki);
        assert_eq!(
            ca_cert_hash(cert.der()).unwrap(),
            format!("sha256:{}", hex(want.as_ref()))
        );
    }
}
