//! The ServiceAccount token signing key pair: an ECDSA P-256 key created on
//! first start as `<data-dir>/sa.key` (PKCS#8) and `sa.pub` (like kubeadm's
//! sa.key/sa.pub), compact JWS (ES256) signing and verification, and the
//! public key as a JWK (`/openid/v1/jwks`).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to generate or parse the service account key")]
    Key(#[from] rcgen::Error),
    #[error("the service account key is not an ECDSA P-256 key: {0}")]
    Unsupported(String),
    #[error("failed to sign a token")]
    Sign,
}

/// Why a token's signature part is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token uses an unsupported algorithm")]
    Algorithm,
}

/// The key pair that signs and verifies ServiceAccount tokens.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl SigningKey {
    /// Loads `<data_dir>/sa.key`, creating it (and `sa.pub`) when missing.
    pub fn ensure(data_dir: &Path) -> Result<Self, KeyError> {
        let key_path = data_dir.join("sa.key");
        let pem = match std::fs::read_to_string(&key_path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let pem = key.serialize_pem();
                write_file(&key_path, &pem, 0o600)?;
                write_file(&data_dir.join("sa.pub"), &key.public_key_pem(), 0o644)?;
                tracing::info!(path = %key_path.display(), "created the service account signing key");
                pem
            }
            Err(e) => return Err(io(&key_path)(e)),
        };
        Self::from_pem(&pem)
    }

    /// A key from a PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = rcgen::KeyPair::from_pem(pem)?;
        if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(KeyError::Unsupported(format!("{:?}", key.algorithm())));
        }
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .map_err(|e| KeyError::Unsupported(e.to_string()))?;
        // Upstream's key id: the URL-safe SHA-256 of the PKIX public key.
        let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&key),
        ));
        Ok(Self { pair, rng, kid })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact JWS of `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, KeyError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| KeyError::Sign)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The claims of `token` once its signature checks out.
    pub fn verify(&self, token: &str) -> Result<Value, JwsError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed);
        };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| JwsError::Malformed);
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| JwsError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(JwsError::Algorithm);
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.pair.public_key().as_ref(),
        );
        let input_len = h.len() + 1 + c.len();
        public
            .verify(&token.as_bytes()[..input_len], &decode(s)?)
            .map_err(|_| JwsError::BadSignature)?;
        serde_json::from_slice(&decode(c)?).map_err(|_| JwsError::Malformed)
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        // The uncompressed point: 0x04 || x || y.
        let point = self.pair.public_key().as_ref();
        let (x, y) = point
            .get(1..)
            .map(|xy| xy.split_at(xy.len() / 2))
            .unwrap_or((&[], &[]));
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = SigningKey::ensure(dir.path()).unwrap();
        let b = SigningKey::ensure(dir.path()).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert!(dir.path().join("sa.pub").exists());
        let token = a.sign(&json!({"sub": "x"})).unwrap();
        assert_eq!(b.verify(&token).unwrap()["sub"], "x");
    }

    #[test]
    fn tampered_or_foreign_tokens_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::ensure(dir.path()).unwrap();
        let other = SigningKey::ensure(&dir.path().join("other")).unwrap();
        let token = key.sign(&json!({"sub": "a"})).unwrap();
        assert_eq!(other.verify(&token), Err(JwsError::BadSignature));
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(json!({"sub": "admin"}).to_string()),
            parts[2]
        );
        assert_eq!(key.verify(&forged), Err(JwsError::BadSignature));
        assert_eq!(key.verify("a.b"), Err(JwsError::Malformed));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(key.verify(&none), Err(JwsError::Algorithm));
        let jwk = key.jwk();
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }
}
