//! Authentication and authorization of API requests, the first steps of
//! every request after TLS:
//!
//! 1. `Auth::authenticate`: the verified client certificate names the user
//!    (CN) and groups (O); else an `Authorization: Bearer` token is offered
//!    to each `TokenAuthenticator` of the chain in turn (bootstrap and
//!    ServiceAccount tokens); a token nobody accepts is 401; no credentials at all is
//!    `system:anonymous`.
//! 2. `Auth::authorize`: `system:masters` may do anything; else the
//!    authorizers of `--authorization-mode` in order (default `Node,RBAC`):
//!    the first to allow wins, and a denial carries their reasons. `node`
//!    uses the pod graph of `node_graph`, `rbac` the `Policy` index, both
//!    fed from the watch cache by `policy_cache`.
//!
//! The user of the request being served is also kept in a task-local
//! (`scope_request_user`), for admission plugins that restrict by user
//! (NodeRestriction, RBAC escalation prevention in `escalation`).

pub mod attributes;
pub mod bootstrap_policy;
pub mod bootstrap_token;
pub mod escalation;
pub mod impersonation;
pub mod node;
pub mod node_graph;
pub mod policy_cache;
pub mod rbac;
pub mod sa_keys;
pub mod sa_token;
mod serviceaccount_authn;

use std::sync::{Arc, OnceLock, RwLock};

use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::storage::StoreError;
use crate::watch_cache::WatchCache;

pub use attributes::{Attributes, ResourceAttributes};
pub use rbac::Decision;

/// The user a request runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
}

pub const ANONYMOUS: &str = "system:anonymous";

impl UserInfo {
    pub fn anonymous() -> Self {
        Self {
            username: ANONYMOUS.into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.username == ANONYMOUS
    }

    /// Members of `system:masters` bypass authorization, as upstream.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    /// The user from a client certificate already verified against the CA.
    pub fn from_client_cert(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let username = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        groups.push("system:authenticated".into());
        // One line per connection: shows which certificate a client uses
        // (a node's rotated one, for instance).
        tracing::debug!(user = %username, serial = %cert.raw_serial_as_string(), not_after = %cert.validity().not_after, "client certificate");
        Some(Self { username, groups })
    }
}

/// Why a request could not be authenticated (answered 401 Unauthorized).
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("invalid bearer token")]
    InvalidToken,
    #[error("the Authorization header is malformed")]
    MalformedHeader,
}

/// One authenticator of bearer tokens in the chain.
#[async_trait::async_trait]
pub trait TokenAuthenticator: Send + Sync {
    /// The user `token` names; `Ok(None)` when the token is not this
    /// authenticator's kind (the next one is asked); `Err` when it is but
    /// is not valid.
    async fn authenticate_token(&self, token: &str) -> Result<Option<UserInfo>, AuthnError>;
}

/// One authorizer of `--authorization-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    Node,
    Rbac,
    AlwaysAllow,
}

impl AuthorizationMode {
    /// kube-apiserver's default for r8s: `Node,RBAC`.
    pub const DEFAULT: &'static [Self] = &[Self::Node, Self::Rbac];

    /// A mode by its kube-apiserver name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "Node" => Some(Self::Node),
            "RBAC" => Some(Self::Rbac),
            "AlwaysAllow" => Some(Self::AlwaysAllow),
            _ => None,
        }
    }
}

/// The authenticators and the authorizers of the API server.
pub struct Auth {
    policy: Arc<RwLock<Policy>>,
    graph: Arc<RwLock<node_graph::Graph>>,
    node: node::NodeAuthorizer,
    modes: Vec<AuthorizationMode>,
    cache: Arc<WatchCache>,
    signing_key: Arc<OnceLock<Arc<sa_keys::SigningKey>>>,
    tokens: Vec<Box<dyn TokenAuthenticator>>,
}

use rbac::Policy;

tokio::task_local! {
    static REQUEST_USER: UserInfo;
}

/// Runs `fut` (one request) with `user` as the request's user.
pub async fn scope_request_user<F: std::future::Future>(user: UserInfo, fut: F) -> F::Output {
    REQUEST_USER.scope(user, fut).await
}

/// The user of the request being served, if any (in-process callers such
/// as the controllers have none).
pub fn request_user() -> Option<UserInfo> {
    REQUEST_USER.try_with(Clone::clone).ok()
}

impl Auth {
    /// An empty policy and the token authenticator chain, authorizing with
    /// the default modes; `start` fills the policy and the node graph,
    /// `set_signing_key` enables ServiceAccount tokens.
    pub fn new(cache: Arc<WatchCache>) -> Self {
        Self::with_modes(cache, AuthorizationMode::DEFAULT)
    }

    /// `new` authorizing with `modes` in order.
    pub fn with_modes(cache: Arc<WatchCache>, modes: &[AuthorizationMode]) -> Self {
        let signing_key = Arc::new(OnceLock::new());
        // The bearer-token chain, asked in order.
        let tokens: Vec<Box<dyn TokenAuthenticator>> = vec![
            Box::new(bootstrap_token::BootstrapTokens::new(Arc::clone(&cache))),
            Box::new(serviceaccount_authn::ServiceAccountTokens::new(
                Arc::clone(&cache),
                Arc::clone(&signing_key),
            )),
        ];
        let graph = Arc::new(RwLock::new(node_graph::Graph::default()));
        Self {
            policy: Arc::new(RwLock::new(Policy::default())),
            node: node::NodeAuthorizer::new(Arc::clone(&graph)),
            graph,
            modes: modes.to_vec(),
            cache,
            signing_key,
            tokens,
        }
    }

    /// Loads the RBAC objects and the node graph and follows their changes
    /// until `shutdown`.
    pub async fn start(&self, shutdown: CancellationToken) -> Result<(), StoreError> {
        policy_cache::start(
            Arc::clone(&self.cache),
            Arc::clone(&self.policy),
            policy_cache::RBAC_PREFIXES,
            shutdown.clone(),
        )
        .await?;
        if self.modes.contains(&AuthorizationMode::Node) {
            policy_cache::start(
                Arc::clone(&self.cache),
                Arc::clone(&self.graph),
                node_graph::PREFIXES,
                shutdown,
            )
            .await?;
        }
        Ok(())
    }

    /// Sets the ServiceAccount token key (once; later calls are ignored).
    pub fn set_signing_key(&self, key: sa_keys::SigningKey) {
        let _ = self.signing_key.set(Arc::new(key));
    }

    pub fn signing_key(&self) -> Option<&Arc<sa_keys::SigningKey>> {
        self.signing_key.get()
    }

    /// The user of a request: the client certificate's, else the bearer
    /// token's, else anonymous.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        cert_user: Option<UserInfo>,
    ) -> Result<UserInfo, AuthnError> {
        if let Some(user) = cert_user {
            return Ok(user);
        }
        let Some(token) = bearer_token(headers)? else {
            return Ok(UserInfo::anonymous());
        };
        self.authenticate_token(token).await
    }

    /// The user of a bearer token (also TokenReview): the first
    /// authenticator of the chain that knows the token decides.
    pub async fn authenticate_token(&self, token: &str) -> Result<UserInfo, AuthnError> {
        for authenticator in &self.tokens {
            if let Some(user) = authenticator.authenticate_token(token).await? {
                return Ok(user);
            }
        }
        Err(AuthnError::InvalidToken)
    }

    /// Whether `user` may do what `attrs` say.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        if user.is_master() {
            return Decision::allow("");
        }
        // Health and version stay readable even before the bootstrap policy
        // (system:public-info-viewer) is in place.
        if let Attributes::NonResource { verb, path } = attrs
            && verb == "get"
            && is_public_path(path)
        {
            return Decision::allow("");
        }
        // Upstream's union authorizer: the first to allow wins; the
        // reasons of those without an opinion make the denial's.
        let mut reasons = Vec::new();
        for mode in &self.modes {
            let decision = match mode {
                AuthorizationMode::AlwaysAllow => return Decision::allow(""),
                AuthorizationMode::Node => match self.node.authorize(user, attrs) {
                    Some(d) => d,
                    None => continue,
                },
                AuthorizationMode::Rbac => self
                    .policy
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .authorize(user, attrs),
            };
            if decision.allowed {
                return decision;
            }
            if !decision.reason.is_empty() {
                reasons.push(decision.reason);
            }
        }
        Decision::deny(reasons.join("\n"))
    }

    /// The rules that apply to `user` in `namespace` and the errors met.
    pub fn rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> (Vec<k8s_openapi::api::rbac::v1::PolicyRule>, Vec<String>) {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .rules_for(user, namespace)
    }
}

/// A namespaced object from the watch cache as JSON, for the token
/// authenticators; a read error is logged and counts as missing.
async fn cached_object(
    cache: &WatchCache,
    plural: &str,
    ns: &str,
    name: &str,
) -> Option<serde_json::Value> {
    let key = format!("/registry/{plural}/{ns}/{name}");
    match cache.get(&key).await {
        Ok(Some(kv)) => serde_json::from_slice(&kv.value).ok(),
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(%key, %err, "cannot read an object a token refers to");
            None
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthnError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthnError::MalformedHeader)?;
    let Some((scheme, token)) = value.trim_start().split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthnError::MalformedHeader);
    }
    Ok(Some(token))
}

/// Paths anyone may read, as kube-apiserver's `system:public-info-viewer`.
pub fn is_public_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert!(bearer_token(&h).unwrap().is_none());
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer abc.def".parse().unwrap(),
        );
        assert_eq!(bearer_token(&h).unwrap(), Some("abc.def"));
        h.insert(http::header::AUTHORIZATION, "Basic eDp5".parse().unwrap());
        assert!(bearer_token(&h).unwrap().is_none());
        h.insert(http::header::AUTHORIZATION, "Bearer  ".parse().unwrap());
        assert!(bearer_token(&h).is_err());
    }
}
