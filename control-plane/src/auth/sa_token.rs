//! ServiceAccount tokens: the claims of bound tokens (TokenRequest) and of
//! legacy Secret tokens, as upstream's `pkg/serviceaccount/claims.go` and
//! `legacy.go`, and their validation short of the object lookups (which
//! `auth::Authenticator` does against the watch cache). No I/O.

use serde_json::{Value, json};

/// The issuer and default audience of bound tokens (kube-apiserver's
/// `--service-account-issuer` as kubeadm sets it).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer of legacy Secret tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// `system:serviceaccount:<ns>:<name>`.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The groups of a ServiceAccount user.
pub fn groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]
}

/// A name and uid in the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

impl ObjectRef {
    fn json(&self) -> Value {
        json!({"name": self.name, "uid": self.uid})
    }

    fn from_json(v: Option<&Value>) -> Option<Self> {
        let v = v?;
        Some(Self {
            name: v.get("name")?.as_str()?.to_string(),
            uid: v
                .get("uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
    }
}

/// What a bound token is issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundToken {
    pub namespace: String,
    pub service_account: ObjectRef,
    pub pod: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
    pub audiences: Vec<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub id: String,
}

impl BoundToken {
    /// The JWT claims.
    pub fn claims(&self) -> Value {
        let mut k8s = json!({
            "namespace": self.namespace,
            "serviceaccount": self.service_account.json(),
        });
        for (key, r) in [
            ("pod", &self.pod),
            ("secret", &self.secret),
            ("node", &self.node),
        ] {
            if let Some(r) = r {
                k8s[key] = r.json();
            }
        }
        json!({
            "aud": self.audiences,
            "exp": self.expires_at,
            "iat": self.issued_at,
            "iss": ISSUER,
            "jti": self.id,
            "kubernetes.io": k8s,
            "nbf": self.issued_at,
            "sub": username(&self.namespace, &self.service_account.name),
        })
    }
}

/// The claims of a legacy token for `secret` of ServiceAccount `sa`.
pub fn legacy_claims(namespace: &str, secret: &str, sa: &ObjectRef) -> Value {
    json!({
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": secret,
        "kubernetes.io/serviceaccount/service-account.name": sa.name,
        "kubernetes.io/serviceaccount/service-account.uid": sa.uid,
        "sub": username(namespace, &sa.name),
    })
}

/// Why a signed token is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not a service account token")]
    NotServiceAccount,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audiences do not match")]
    Audience,
    #[error("token claims are malformed")]
    Malformed,
}

/// What a valid token says, for the object checks that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSubject {
    pub namespace: String,
    pub service_account: ObjectRef,
    /// Bound tokens: the pod that must still exist (same uid).
    pub pod: Option<ObjectRef>,
    /// Legacy tokens: the Secret that must still hold this token; bound
    /// tokens: a bound Secret that must still exist.
    pub secret: Option<ObjectRef>,
    pub legacy: bool,
}

/// Checks issuer, times (with upstream's 60 s leeway) and audiences.
pub fn validate(claims: &Value, now: i64, audiences: &[&str]) -> Result<TokenSubject, TokenError> {
    const LEEWAY: i64 = 60;
    let iss = claims.get("iss").and_then(Value::as_str);
    if iss == Some(LEGACY_ISSUER) {
        let s = |k: &str| {
            claims
                .get(format!("kubernetes.io/serviceaccount/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or(TokenError::Malformed)
        };
        return Ok(TokenSubject {
            namespace: s("namespace")?,
            service_account: ObjectRef {
                name: s("service-account.name")?,
                uid: s("service-account.uid")?,
            },
            pod: None,
            secret: Some(ObjectRef {
                name: s("secret.name")?,
                uid: String::new(),
            }),
            legacy: true,
        });
    }
    if iss != Some(ISSUER) {
        return Err(TokenError::NotServiceAccount);
    }
    let int = |k: &str| claims.get(k).and_then(Value::as_i64);
    let exp = int("exp").ok_or(TokenError::Malformed)?;
    if now > exp + LEEWAY {
        return Err(TokenError::Expired);
    }
    if int("nbf").is_some_and(|nbf| now + LEEWAY < nbf) {
        return Err(TokenError::NotYetValid);
    }
    let token_aud: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !token_aud.iter().any(|a| audiences.contains(a)) {
        return Err(TokenError::Audience);
    }
    let k8s = claims.get("kubernetes.io").ok_or(TokenError::Malformed)?;
    let namespace = k8s
        .get("namespace")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed)?
        .to_string();
    let service_account =
        ObjectRef::from_json(k8s.get("serviceaccount")).ok_or(TokenError::Malformed)?;
    Ok(TokenSubject {
        namespace,
        service_account,
        pod: ObjectRef::from_json(k8s.get("pod")),
        secret: ObjectRef::from_json(k8s.get("secret")),
        legacy: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(pod: bool) -> BoundToken {
        BoundToken {
            namespace: "default".into(),
            service_account: ObjectRef {
                name: "default".into(),
                uid: "u1".into(),
            },
            pod: pod.then(|| ObjectRef {
                name: "web".into(),
                uid: "p1".into(),
            }),
            secret: None,
            node: None,
            audiences: vec![ISSUER.into()],
            issued_at: 1000,
            expires_at: 4600,
            id: "j".into(),
        }
    }

    #[test]
    fn bound_claims_carry_upstreams_fields() {
        let c = token(true).claims();
        assert_eq!(c["iss"], ISSUER);
        assert_eq!(c["sub"], "system:serviceaccount:default:default");
        assert_eq!(c["aud"][0], ISSUER);
        assert_eq!(c["kubernetes.io"]["serviceaccount"]["uid"], "u1");
        assert_eq!(c["kubernetes.io"]["pod"]["name"], "web");
        assert_eq!(c["nbf"], 1000);
        assert!(token(false).claims()["kubernetes.io"].get("pod").is_none());
    }

    #[test]
    fn validation_checks_expiry_audience_and_issuer() {
        let c = token(true).claims();
        let s = validate(&c, 2000, &[ISSUER]).unwrap();
        assert_eq!(s.service_account.uid, "u1");
        assert_eq!(s.pod.unwrap().uid, "p1");
        assert_eq!(validate(&c, 4600 + 61, &[ISSUER]), Err(TokenError::Expired));
        assert!(validate(&c, 4600 + 30, &[ISSUER]).is_ok());
        assert_eq!(validate(&c, 100, &[ISSUER]), Err(TokenError::NotYetValid));
        assert_eq!(validate(&c, 2000, &["other"]), Err(TokenError::Audience));
        let mut foreign = c.clone();
        foreign["iss"] = "https://elsewhere".into();
        assert_eq!(
            validate(&foreign, 2000, &[ISSUER]),
            Err(TokenError::NotServiceAccount)
        );
    }

    #[test]
    fn legacy_claims_round_trip() {
        let sa = ObjectRef {
            name: "bot".into(),
            uid: "u".into(),
        };
        let c = legacy_claims("ci", "bot-token", &sa);
        let s = validate(&c, 0, &[ISSUER]).unwrap();
        assert!(s.legacy);
        assert_eq!(s.secret.unwrap().name, "bot-token");
        assert_eq!(s.service_account, sa);
    }
}
