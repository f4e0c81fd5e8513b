//! Authentication of API requests: the verified client certificate names the
//! user (CN) and groups (O); no certificate is `system:anonymous`. Then the
//! (pre-RBAC) authorization rule: every authenticated user may do anything.

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
