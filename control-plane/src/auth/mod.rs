//! Authentication of API requests: the verified client certificate names the
//! user (CN) and groups (O); no certificate is `system:anonymous`. Then the
//! (pre-RBAC) authorization rule: every authenticated user may do anything.
//! Bearer tokens are tried by `authenticate_bearer` (bootstrap tokens).

pub mod bootstrap_token;

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
        Some(Self { username, groups })
    }
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

/// The user of `Authorization: Bearer <token>`, or `None` (401) when no
/// token authenticator accepts it.
pub async fn authenticate_bearer(api: &crate::server::Api, bearer: &str) -> Option<UserInfo> {
    let token: agent::bootstrap::token::BootstrapToken = bearer.parse().ok()?;
    let secrets = crate::resources::find("", "v1", "secrets")?;
    let secret = api
        .get(
            secrets,
            Some(agent::bootstrap::token::SECRET_NAMESPACE),
            &token.secret_name(),
        )
        .await
        .ok()?;
    match bootstrap_token::authenticate(&token, &secret, chrono::Utc::now()) {
        Ok(user) => Some(user),
        Err(err) => {
            tracing::debug!(%err, "bootstrap token rejected");
            None
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Anonymous discovery as kubeadm's `system:bootstrap-signer` role binding
/// allows: GET of the `cluster-info` ConfigMap in kube-public.
pub fn is_cluster_info_read(method: &http::Method, path: &str) -> bool {
    method == http::Method::GET && path == "/api/v1/namespaces/kube-public/configmaps/cluster-info"
}

/// Whether `user` may make the request (no RBAC yet: authenticated users may).
pub fn authorize(user: &UserInfo, path: &str) -> bool {
    is_public_path(path) || !user.is_anonymous()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_may_only_read_health_and_version() {
        let anon = UserInfo::anonymous();
        assert!(authorize(&anon, "/readyz"));
        assert!(authorize(&anon, "/version"));
        assert!(!authorize(&anon, "/api/v1/pods"));
        let admin = UserInfo {
            username: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        assert!(admin.is_master());
        assert!(authorize(&admin, "/api/v1/pods"));
    }
}
