//! The ServiceAccount token authenticator of the bearer-token chain: checks
//! the signature, the claims (`sa_token::validate`) and that the objects the
//! token names still exist with the same uid (ServiceAccount, bound Pod or
//! Secret; a legacy token's Secret must still hold it), from the watch cache.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use serde_json::Value;

use crate::watch_cache::WatchCache;

use super::sa_keys::SigningKey;
use super::sa_token::{self, ISSUER, ObjectRef, TokenSubject};
use super::{AuthnError, TokenAuthenticator, UserInfo};

pub struct ServiceAccountTokens {
    cache: Arc<WatchCache>,
    key: Arc<OnceLock<Arc<SigningKey>>>,
}

impl ServiceAccountTokens {
    pub fn new(cache: Arc<WatchCache>, key: Arc<OnceLock<Arc<SigningKey>>>) -> Self {
        Self { cache, key }
    }

    async fn object(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        super::cached_object(&self.cache, plural, ns, name).await
    }

    /// The object exists, is not being deleted, and has `r.uid` (if set).
    async fn live(&self, plural: &str, ns: &str, r: &ObjectRef) -> Result<Value, String> {
        let obj = self
            .object(plural, ns, &r.name)
            .await
            .ok_or_else(|| format!("{plural} {ns}/{} not found", r.name))?;
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !r.uid.is_empty() && uid != r.uid {
            return Err(format!(
                "{plural} {ns}/{} uid {uid} does not match the token's {}",
                r.name, r.uid
            ));
        }
        if plural == "serviceaccounts" && obj.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(format!("serviceaccounts {ns}/{} is being deleted", r.name));
        }
        Ok(obj)
    }

    async fn check_objects(&self, s: &TokenSubject, token: &str) -> Result<(), String> {
        let ns = &s.namespace;
        self.live("serviceaccounts", ns, &s.service_account).await?;
        if let Some(pod) = &s.pod {
            self.live("pods", ns, pod).await?;
        }
        if let Some(secret) = &s.secret {
            let obj = self.live("secrets", ns, secret).await?;
            if s.legacy {
                let stored = obj
                    .pointer("/data/token")
                    .and_then(Value::as_str)
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
                if stored.as_deref() != Some(token.as_bytes()) {
                    return Err(format!(
                        "secrets {ns}/{} no longer holds this token",
                        secret.name
                    ));
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl TokenAuthenticator for ServiceAccountTokens {
    async fn authenticate_token(&self, token: &str) -> Result<Option<UserInfo>, AuthnError> {
        let Some(key) = self.key.get() else {
            return Ok(None);
        };
        // Not a JWT we signed: maybe another authenticator's token.
        let Ok(claims) = key.verify(token) else {
            return Ok(None);
        };
        let now = chrono::Utc::now().timestamp();
        let subject = match sa_token::validate(&claims, now, &[ISSUER]) {
            Ok(s) => s,
            Err(sa_token::TokenError::NotServiceAccount) => return Ok(None),
            Err(err) => {
                tracing::debug!(%err, "service account token rejected");
                return Err(AuthnError::InvalidToken);
            }
        };
        if let Err(why) = self.check_objects(&subject, token).await {
            tracing::debug!(reason = %why, "service account token rejected");
            return Err(AuthnError::InvalidToken);
        }
        Ok(Some(UserInfo {
            username: sa_token::username(&subject.namespace, &subject.service_account.name),
            groups: sa_token::groups(&subject.namespace),
        }))
    }
}
