//! What a request asks to do, in authorization terms (upstream's
//! `RequestInfo`: verb, API group, resource, subresource, namespace, name,
//! or a non-resource path), and the 403 message when it is denied.

use http::Method;

use crate::server::route::{self, Route};

/// A request on an API resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The raw `fieldSelector` of a list or watch ("" when none).
    pub field_selector: String,
}

/// What is authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource(ResourceAttributes),
    NonResource { verb: String, path: String },
}

impl Attributes {
    /// The request's namespace ("" when cluster-scoped or non-resource).
    pub fn namespace(&self) -> &str {
        match self {
            Self::Resource(r) => &r.namespace,
            Self::NonResource { .. } => "",
        }
    }

    pub fn verb(&self) -> &str {
        match self {
            Self::Resource(r) => &r.verb,
            Self::NonResource { verb, .. } => verb,
        }
    }

    /// The attributes of a request: `watch` is the `watch` query flag and
    /// `field_selector` the `fieldSelector` parameter (a list or watch of
    /// `metadata.name=x` names `x`, as upstream).
    pub fn from_request(
        method: &Method,
        path: &str,
        watch: bool,
        field_selector: Option<&str>,
    ) -> Self {
        let Route::Resource(p) = route::parse(path) else {
            return Self::NonResource {
                verb: method.as_str().to_ascii_lowercase(),
                path: path.to_string(),
            };
        };
        let has_name = p.name.is_some();
        let verb = match *method {
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if has_name => "delete",
            Method::DELETE => "deletecollection",
            _ if p.watch_path || (watch && p.subresource.is_none()) => "watch",
            _ if has_name => "get",
            _ => "list",
        };
        let mut name = p.name.unwrap_or_default();
        if matches!(verb, "list" | "watch")
            && name.is_empty()
            && let Some(n) = field_selector
                .and_then(|s| s.strip_prefix("metadata.name="))
                .filter(|n| !n.contains(','))
        {
            name = n.to_string();
        }
        // A namespace's own requests are in that namespace.
        let namespace = match p.namespace {
            Some(ns) => ns,
            None if p.plural == "namespaces" => name.clone(),
            None => String::new(),
        };
        Self::Resource(ResourceAttributes {
            verb: verb.into(),
            api_group: p.group,
            resource: p.plural,
            subresource: p.subresource.unwrap_or_default(),
            namespace,
            name,
            field_selector: if matches!(verb, "list" | "watch") {
                field_selector.unwrap_or_default().to_string()
            } else {
                String::new()
            },
        })
    }

    /// Whether a list/watch is scoped by the field selector requirement
    /// `field=value` (`=` or `==`), as upstream's `GetFieldSelector`.
    pub fn selects_field(&self, field: &str, value: &str) -> bool {
        let Self::Resource(r) = self else {
            return false;
        };
        r.field_selector.split(',').any(|req| {
            req.split_once("==")
                .or_else(|| req.split_once('='))
                .filter(|(f, _)| !f.ends_with('!'))
                .is_some_and(|(f, v)| f.trim() == field && v.trim() == value)
        })
    }

    /// Upstream's `ForbiddenStatusError` message for `username`, with the
    /// authorizer's `reason` appended when there is one.
    pub fn forbidden_message(&self, username: &str, reason: &str) -> String {
        let mut msg = match self {
            Self::Resource(r) => {
                let resource = if r.subresource.is_empty() {
                    r.resource.clone()
                } else {
                    format!("{}/{}", r.resource, r.subresource)
                };
                let scope = if r.namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace \"{}\"", r.namespace)
                };
                let what = format!(
                    "User \"{username}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                    r.verb, r.api_group
                );
                let qualified = if r.api_group.is_empty() {
                    r.resource.clone()
                } else {
                    format!("{}.{}", r.resource, r.api_group)
                };
                if r.resource.is_empty() {
                    format!("forbidden: {what}")
                } else if r.name.is_empty() {
                    format!("{qualified} is forbidden: {what}")
                } else {
                    format!("{qualified} \"{}\" is forbidden: {what}", r.name)
                }
            }
            Self::NonResource { verb, path } => {
                format!("forbidden: User \"{username}\" cannot {verb} path \"{path}\"")
            }
        };
        if !reason.is_empty() {
            msg.push_str(": ");
            msg.push_str(reason);
        }
        msg
    }

    /// The `details` of the 403 Status.
    pub fn forbidden_details(&self) -> serde_json::Value {
        match self {
            Self::Resource(r) => {
                let mut d = serde_json::json!({"group": r.api_group, "kind": r.resource});
                if !r.name.is_empty() {
                    d["name"] = r.name.clone().into();
                }
                d
            }
            Self::NonResource { .. } => serde_json::json!({}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_method_name_and_watch() {
        let a = |m: Method, p: &str, w: bool| Attributes::from_request(&m, p, w, None);
        assert_eq!(
            a(Method::GET, "/api/v1/namespaces/d/pods", false).verb(),
            "list"
        );
        assert_eq!(
            a(Method::GET, "/api/v1/namespaces/d/pods", true).verb(),
            "watch"
        );
        assert_eq!(
            a(Method::GET, "/api/v1/watch/namespaces/d/pods", false).verb(),
            "watch"
        );
        assert_eq!(
            a(Method::GET, "/api/v1/namespaces/d/pods/x", false).verb(),
            "get"
        );
        assert_eq!(
            a(Method::POST, "/api/v1/namespaces/d/pods", false).verb(),
            "create"
        );
        assert_eq!(
            a(Method::DELETE, "/api/v1/namespaces/d/pods", false).verb(),
            "deletecollection"
        );
        assert_eq!(
            a(Method::DELETE, "/api/v1/namespaces/d/pods/x", false).verb(),
            "delete"
        );
        assert_eq!(
            a(
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/x/scale",
                false
            )
            .verb(),
            "patch"
        );
        assert_eq!(
            a(Method::GET, "/healthz", false),
            Attributes::NonResource {
                verb: "get".into(),
                path: "/healthz".into()
            }
        );
    }

    #[test]
    fn forbidden_messages_match_kube_apiserver() {
        let list =
            Attributes::from_request(&Method::GET, "/api/v1/namespaces/default/pods", false, None);
        assert_eq!(
            list.forbidden_message("jane", ""),
            "pods is forbidden: User \"jane\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let nodes = Attributes::from_request(&Method::GET, "/api/v1/nodes", false, None);
        assert_eq!(
            nodes.forbidden_message("jane", ""),
            "nodes is forbidden: User \"jane\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let log = Attributes::from_request(
            &Method::GET,
            "/apis/apps/v1/namespaces/d/deployments/web/scale",
            false,
            None,
        );
        assert_eq!(
            log.forbidden_message("jane", ""),
            "deployments.apps \"web\" is forbidden: User \"jane\" cannot get resource \"deployments/scale\" in API group \"apps\" in the namespace \"d\""
        );
        let ns = Attributes::from_request(&Method::GET, "/api/v1/namespaces/dev", false, None);
        assert_eq!(
            ns.forbidden_message("jane", ""),
            "namespaces \"dev\" is forbidden: User \"jane\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"dev\""
        );
        let path = Attributes::from_request(&Method::GET, "/foo", false, None);
        assert_eq!(
            path.forbidden_message("x", ""),
            "forbidden: User \"x\" cannot get path \"/foo\""
        );
    }

    #[test]
    fn name_field_selector_names_the_watched_object() {
        let a = Attributes::from_request(
            &Method::GET,
            "/api/v1/namespaces/d/pods",
            true,
            Some("metadata.name=web"),
        );
        let Attributes::Resource(r) = a else { panic!() };
        assert_eq!(r.name, "web");
    }
}
