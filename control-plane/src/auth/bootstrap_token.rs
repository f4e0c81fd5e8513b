//! The bootstrap-token authenticator (kube-apiserver
//! `--enable-bootstrap-token-auth`): `Authorization: Bearer <id>.<secret>`
//! names user `system:bootstrap:<id>` in `system:bootstrappers` when the
//! `bootstrap-token-<id>` Secret in kube-system holds that secret, allows
//! authentication and has not expired. Also reads token Secrets for the
//! bootstrapsigner and tokencleaner controllers and `r8s-server token`.

use std::collections::BTreeMap;

use agent::bootstrap::token::{self, BootstrapToken};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::Value;

use std::sync::Arc;

use super::{AuthnError, TokenAuthenticator, UserInfo};
use crate::watch_cache::WatchCache;

/// Data keys of a bootstrap token Secret (kubeadm's `bootstrapapi`).
pub const KEY_TOKEN_ID: &str = "token-id";
pub const KEY_TOKEN_SECRET: &str = "token-secret";
pub const KEY_EXPIRATION: &str = "expiration";
pub const KEY_DESCRIPTION: &str = "description";
pub const KEY_EXTRA_GROUPS: &str = "auth-extra-groups";
pub const USAGE_AUTHENTICATION: &str = "usage-bootstrap-authentication";
pub const USAGE_SIGNING: &str = "usage-bootstrap-signing";

/// Why a bearer token was not accepted (logged, never shown to the client).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapTokenError {
    #[error("secret {0} is not a bootstrap token secret")]
    NotATokenSecret(String),
    #[error("secret {0} is being deleted")]
    Deleting(String),
    #[error("token {0} does not match its secret")]
    Mismatch(String),
    #[error("token {0} has expired")]
    Expired(String),
    #[error("token {0} may not be used for authentication")]
    NotForAuthentication(String),
    #[error("token {id} has an invalid extra group {group:?}")]
    ExtraGroup { id: String, group: String },
}

/// A bootstrap token Secret, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSecret {
    pub token: BootstrapToken,
    pub expiration: Option<DateTime<Utc>>,
    pub description: String,
    /// `usage-bootstrap-*` keys set to "true", without the prefix.
    pub usages: Vec<String>,
    pub extra_groups: Vec<String>,
}

impl TokenSecret {
    /// Decodes a Secret's `type`, name and decoded `data`; `None` when it is
    /// not a well-formed bootstrap token Secret.
    pub fn from_parts(
        name: &str,
        secret_type: &str,
        data: &BTreeMap<String, String>,
    ) -> Option<Self> {
        if secret_type != token::SECRET_TYPE {
            return None;
        }
        let id = data.get(KEY_TOKEN_ID)?;
        if name != format!("{}{id}", token::SECRET_PREFIX) {
            return None;
        }
        let token: BootstrapToken = format!("{id}.{}", data.get(KEY_TOKEN_SECRET)?)
            .parse()
            .ok()?;
        let expiration = match data.get(KEY_EXPIRATION) {
            Some(e) => Some(DateTime::parse_from_rfc3339(e).ok()?.with_timezone(&Utc)),
            None => None,
        };
        let usages = data
            .iter()
            .filter(|(_, v)| v.as_str() == "true")
            .filter_map(|(k, _)| k.strip_prefix("usage-bootstrap-").map(str::to_owned))
            .collect();
        let extra_groups = data
            .get(KEY_EXTRA_GROUPS)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            token,
            expiration,
            description: data.get(KEY_DESCRIPTION).cloned().unwrap_or_default(),
            usages,
            extra_groups,
        })
    }

    /// Decodes a Secret as JSON (base64 `data`).
    pub fn from_json(secret: &Value) -> Option<Self> {
        let name = secret.pointer("/metadata/name")?.as_str()?;
        let secret_type = secret.get("type")?.as_str()?;
        let data = secret
            .get("data")?
            .as_object()?
            .iter()
            .filter_map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str()?)
                    .ok()?;
                Some((k.clone(), String::from_utf8(bytes).ok()?))
            })
            .collect();
        Self::from_parts(name, secret_type, &data)
    }

    /// Decodes a typed Secret.
    pub fn from_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Option<Self> {
        let data = secret
            .data
            .as_ref()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
            .collect();
        Self::from_parts(
            secret.metadata.name.as_deref()?,
            secret.type_.as_deref()?,
            &data,
        )
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expiration.is_some_and(|e| e <= now)
    }

    pub fn has_usage(&self, usage: &str) -> bool {
        self.usages.iter().any(|u| u == usage)
    }

    /// The Secret data (string values) of this token, as `kubeadm token
    /// create` writes it.
    pub fn to_string_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::from([
            (KEY_TOKEN_ID.to_owned(), self.token.id.clone()),
            (KEY_TOKEN_SECRET.to_owned(), self.token.secret.clone()),
        ]);
        if let Some(e) = self.expiration {
            data.insert(
                KEY_EXPIRATION.to_owned(),
                e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        }
        if !self.description.is_empty() {
            data.insert(KEY_DESCRIPTION.to_owned(), self.description.clone());
        }
        for u in &self.usages {
            data.insert(format!("usage-bootstrap-{u}"), "true".to_owned());
        }
        if !self.extra_groups.is_empty() {
            data.insert(KEY_EXTRA_GROUPS.to_owned(), self.extra_groups.join(","));
        }
        data
    }
}

/// Whether `group` may be an extra group of a token, as upstream's
/// `^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$`.
pub fn is_valid_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The bootstrap-token authenticator of the bearer-token chain, reading the
/// token Secrets from the watch cache.
pub struct BootstrapTokens {
    cache: Arc<WatchCache>,
}

impl BootstrapTokens {
    pub fn new(cache: Arc<WatchCache>) -> Self {
        Self { cache }
    }
}

#[async_trait::async_trait]
impl TokenAuthenticator for BootstrapTokens {
    async fn authenticate_token(&self, bearer: &str) -> Result<Option<UserInfo>, AuthnError> {
        // Not of the `<id>.<secret>` shape: another authenticator's token.
        let Ok(presented) = bearer.parse::<BootstrapToken>() else {
            return Ok(None);
        };
        let secret = super::cached_object(
            &self.cache,
            "secrets",
            token::SECRET_NAMESPACE,
            &presented.secret_name(),
        )
        .await
        .ok_or(AuthnError::InvalidToken)?;
        authenticate(&presented, &secret, Utc::now())
            .map(Some)
            .map_err(|err| {
                tracing::debug!(%err, "bootstrap token rejected");
                AuthnError::InvalidToken
            })
    }
}

/// The user of `presented` given its stored Secret, as upstream's
/// `TokenAuthenticator.AuthenticateToken`.
pub fn authenticate(
    presented: &BootstrapToken,
    secret: &Value,
    now: DateTime<Utc>,
) -> Result<UserInfo, BootstrapTokenError> {
    let name = presented.secret_name();
    if secret.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(BootstrapTokenError::Deleting(name));
    }
    let stored =
        TokenSecret::from_json(secret).ok_or(BootstrapTokenError::NotATokenSecret(name))?;
    let id = presented.id.clone();
    if stored.token.id != presented.id
        || !token::secrets_equal(&stored.token.secret, &presented.secret)
    {
        return Err(BootstrapTokenError::Mismatch(id));
    }
    if stored.is_expired(now) {
        return Err(BootstrapTokenError::Expired(id));
    }
    if !stored.has_usage("authentication") {
        return Err(BootstrapTokenError::NotForAuthentication(id));
    }
    let mut groups = vec![token::BOOTSTRAPPERS_GROUP.to_owned()];
    for g in stored.extra_groups {
        if !is_valid_extra_group(&g) {
            return Err(BootstrapTokenError::ExtraGroup { id, group: g });
        }
        groups.push(g);
    }
    groups.push("system:authenticated".to_owned());
    Ok(UserInfo {
        username: presented.user_name(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secret(extra: &[(&str, &str)]) -> Value {
        let mut data: BTreeMap<String, String> = [
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
            ("usage-bootstrap-signing", "true"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        data.retain(|_, v| !v.is_empty());
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.clone(), json!(b64(v))))
            .collect();
        json!({
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "data": data,
        })
    }

    fn token(s: &str) -> BootstrapToken {
        s.parse().unwrap()
    }

    #[test]
    fn a_valid_token_names_a_bootstrapper() {
        let user = authenticate(
            &token("abcdef.0123456789abcdef"),
            &secret(&[("auth-extra-groups", "system:bootstrappers:worker")]),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(user.username, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:worker",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn wrong_expired_or_unusable_tokens_are_rejected() {
        let now = Utc::now();
        let t = token("abcdef.0123456789abcdef");
        assert!(matches!(
            authenticate(&token("abcdef.0123456789abcdee"), &secret(&[]), now),
            Err(BootstrapTokenError::Mismatch(_))
        ));
        assert!(matches!(
            authenticate(&t, &secret(&[("expiration", "2020-01-01T00:00:00Z")]), now),
            Err(BootstrapTokenError::Expired(_))
        ));
        assert!(authenticate(&t, &secret(&[("expiration", "2999-01-01T00:00:00Z")]), now).is_ok());
        assert!(matches!(
            authenticate(&t, &secret(&[("usage-bootstrap-authentication", "")]), now),
            Err(BootstrapTokenError::NotForAuthentication(_))
        ));
        assert!(matches!(
            authenticate(&t, &secret(&[("auth-extra-groups", "system:masters")]), now),
            Err(BootstrapTokenError::ExtraGroup { .. })
        ));
        let mut s = secret(&[]);
        s["type"] = json!("Opaque");
        assert!(matches!(
            authenticate(&t, &s, now),
            Err(BootstrapTokenError::NotATokenSecret(_))
        ));
    }

    #[test]
    fn token_secrets_round_trip_through_string_data() {
        let ts = TokenSecret {
            token: token("abcdef.0123456789abcdef"),
            expiration: Some(Utc::now() + chrono::Duration::hours(24)),
            description: "d".into(),
            usages: vec!["authentication".into(), "signing".into()],
            extra_groups: vec!["system:bootstrappers:x".into()],
        };
        let data = ts.to_string_data();
        let back =
            TokenSecret::from_parts("bootstrap-token-abcdef", token::SECRET_TYPE, &data).unwrap();
        assert_eq!(back.token, ts.token);
        assert_eq!(back.usages, ts.usages);
        assert_eq!(back.extra_groups, ts.extra_groups);
        assert_eq!(
            back.expiration.map(|e| e.timestamp()),
            ts.expiration.map(|e| e.timestamp())
        );
    }
}
