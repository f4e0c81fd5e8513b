//! User impersonation (`kubectl --as`, `--as-group`): the `Impersonate-User`
//! and `Impersonate-Group` headers replace the authenticated user after the
//! authorizer allows `impersonate` on each (`users`, `groups`, or the
//! `serviceaccounts` object for `system:serviceaccount:<ns>:<name>`), as
//! kube-apiserver's impersonation filter.

use http::HeaderMap;

use super::{Attributes, Auth, ResourceAttributes, UserInfo};

pub const USER_HEADER: &str = "impersonate-user";
pub const GROUP_HEADER: &str = "impersonate-group";

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Why an impersonation request is refused.
#[derive(Debug, thiserror::Error)]
pub enum ImpersonationError {
    #[error("requested {0:?} without impersonating a user")]
    GroupsWithoutUser(Vec<String>),
    #[error("invalid impersonation header value")]
    BadHeader,
    /// 403: the message is upstream's forbidden message.
    #[error("{message}")]
    Forbidden {
        message: String,
        attrs: Box<Attributes>,
    },
}

/// What `user` is allowed to act as: `user` itself without impersonation
/// headers, else the impersonated user.
pub fn impersonate(
    auth: &Auth,
    headers: &HeaderMap,
    user: UserInfo,
) -> Result<UserInfo, ImpersonationError> {
    let values = |name: &str| -> Result<Vec<String>, ImpersonationError> {
        headers
            .get_all(name)
            .iter()
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| ImpersonationError::BadHeader)
            })
            .collect()
    };
    let users = values(USER_HEADER)?;
    let groups = values(GROUP_HEADER)?;
    let Some(target) = users.into_iter().next() else {
        if groups.is_empty() {
            return Ok(user);
        }
        return Err(ImpersonationError::GroupsWithoutUser(groups));
    };
    let mut checks = vec![target_attributes(&target)];
    checks.extend(groups.iter().map(|g| resource("groups", "", g)));
    for attrs in checks {
        let decision = auth.authorize(&user, &attrs);
        if !decision.allowed {
            return Err(ImpersonationError::Forbidden {
                message: attrs.forbidden_message(&user.username, &decision.reason),
                attrs: Box::new(attrs),
            });
        }
    }
    Ok(impersonated(target, groups))
}

/// The check for impersonating `target`: its ServiceAccount object or the
/// user name.
fn target_attributes(target: &str) -> Attributes {
    match service_account(target) {
        Some((ns, name)) => resource("serviceaccounts", ns, name),
        None => resource("users", "", target),
    }
}

fn service_account(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')
}

fn resource(resource: &str, namespace: &str, name: &str) -> Attributes {
    Attributes::Resource(ResourceAttributes {
        verb: "impersonate".into(),
        api_group: String::new(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    })
}

/// The impersonated user: the requested groups, a ServiceAccount's own
/// groups, and `system:authenticated` unless it is the anonymous user.
fn impersonated(username: String, mut groups: Vec<String>) -> UserInfo {
    if let Some((ns, _)) = service_account(&username) {
        for g in [
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
        ] {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    if username != super::ANONYMOUS && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    UserInfo { username, groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_accounts_are_checked_as_their_object_and_get_their_groups() {
        assert_eq!(
            target_attributes("system:serviceaccount:ci:bot"),
            resource("serviceaccounts", "ci", "bot")
        );
        assert_eq!(target_attributes("jane"), resource("users", "", "jane"));
        let u = impersonated("system:serviceaccount:ci:bot".into(), vec![]);
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ci",
                "system:authenticated"
            ]
        );
        let anon = impersonated(super::super::ANONYMOUS.into(), vec![]);
        assert!(anon.groups.is_empty());
    }

    #[test]
    fn the_forbidden_message_is_upstreams() {
        let attrs = resource("users", "", "jane");
        assert_eq!(
            attrs.forbidden_message("bob", ""),
            "users \"jane\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
    }
}
