//! Admission plugins between defaulting/validation and the store, as
//! kube-apiserver runs them: the mutating LimitRanger defaults before
//! validation; NodeRestriction, RBAC escalation prevention (upstream's
//! policybased RBAC storages, `auth::escalation`), LimitRanger's checks
//! and ResourceQuota's charge after it. `server::objects` calls `mutate` and `validate` on
//! creates, `validate_update` and `validate_delete` on updates and deletes,
//! and `release` when the store refuses what was admitted; the dispatcher
//! calls `validate_subresource_create` for `pods/eviction` and
//! `serviceaccounts/token`.

pub mod limitranger;
pub mod node_restriction;
pub mod resourcequota;
pub mod usage;

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde_json::{Value, json};

use crate::auth::escalation::{self, EscalationError};
use crate::auth::node::node_identity;
use crate::resources::{self, ResourceType};
use crate::server::Api;
use crate::server::objects::UpdateMode;
use crate::server::status::{self, ApiError};

pub use resourcequota::Charge;

use node_restriction::{Facts, Needs, Operation, Refusal, Request};

/// Mutating admission of a create (before validation).
pub async fn mutate(
    api: &Api,
    r: &ResourceType,
    ns: Option<&str>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let Some(ns) = ns else {
        return Ok(());
    };
    limitranger::default(api, r, ns, obj).await
}

/// Validating admission of a create (after validation); what it charged to
/// quotas is returned so a failed store write can give it back.
pub async fn validate(
    api: &Api,
    r: &ResourceType,
    ns: Option<&str>,
    obj: &Value,
    dry_run: bool,
) -> Result<Charge, ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    restrict_node(api, r, "", Operation::Create, ns, name, Some(obj), None).await?;
    // A create's request names no object (upstream's RequestInfo of a POST).
    prevent_escalation(api, r, ns, "", obj, None).await?;
    let Some(ns) = ns else {
        return Ok(Charge::default());
    };
    limitranger::validate(api, r, ns, obj).await?;
    resourcequota::admit(api, r, ns, obj, dry_run).await
}

/// Validating admission of an update (or patch) of `old` into `new`:
/// NodeRestriction for every part; for the object itself (subresources are
/// not admitted, as upstream) LimitRanger checks claims again (pod
/// containers cannot change) and ResourceQuota charges added usage, which
/// is returned so a failed store write can give it back.
#[allow(clippy::too_many_arguments)]
pub async fn validate_update(
    api: &Api,
    r: &ResourceType,
    ns: Option<&str>,
    name: &str,
    mode: UpdateMode,
    old: &Value,
    new: &Value,
    dry_run: bool,
) -> Result<Charge, ApiError> {
    let subresource = match mode {
        UpdateMode::Main => "",
        UpdateMode::Status => "status",
        UpdateMode::Finalize => "finalize",
    };
    restrict_node(
        api,
        r,
        subresource,
        Operation::Update,
        ns,
        name,
        Some(new),
        Some(old),
    )
    .await?;
    if mode != UpdateMode::Main {
        return Ok(Charge::default());
    }
    prevent_escalation(api, r, ns, name, new, Some(old)).await?;
    let Some(ns) = ns else {
        return Ok(Charge::default());
    };
    if !(r.group.is_empty() && r.plural == "pods") {
        limitranger::validate(api, r, ns, new).await?;
    }
    resourcequota::admit_update(api, r, ns, old, new, dry_run).await
}

/// Validating admission of the delete of `old`.
pub async fn validate_delete(
    api: &Api,
    r: &ResourceType,
    ns: Option<&str>,
    name: &str,
    old: &Value,
) -> Result<(), ApiError> {
    restrict_node(api, r, "", Operation::Delete, ns, name, None, Some(old)).await
}

/// Validating admission of a POST to a subresource that creates something
/// other than its parent (`pods/eviction`, `serviceaccounts/token`).
pub async fn validate_subresource_create(
    api: &Api,
    ns: Option<&str>,
    name: &str,
    subresource: &str,
    body: &Value,
) -> Result<(), ApiError> {
    let plural = match subresource {
        "eviction" => "pods",
        "token" => "serviceaccounts",
        _ => return Ok(()),
    };
    let r = core(plural)?;
    restrict_node(
        api,
        r,
        subresource,
        Operation::Create,
        ns,
        name,
        Some(body),
        None,
    )
    .await
}

fn core(plural: &str) -> Result<&'static ResourceType, ApiError> {
    resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

/// NodeRestriction for the request's user, when it is a node.
#[allow(clippy::too_many_arguments)]
async fn restrict_node(
    api: &Api,
    r: &ResourceType,
    subresource: &str,
    operation: Operation,
    ns: Option<&str>,
    name: &str,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(user) = crate::auth::request_user() else {
        return Ok(());
    };
    let Some(node) = node_identity(&user) else {
        return Ok(());
    };
    let req = Request {
        node,
        group: r.group,
        resource: r.plural,
        subresource,
        operation,
        namespace: ns.unwrap_or(""),
        name,
        object,
        old,
    };
    let mut facts = Facts::default();
    match node_restriction::needs(&req) {
        Some(Needs::Pod(pod)) if !pod.is_empty() => {
            facts.pod = api.read(core("pods")?, ns, &pod).await?.map(|(pod, _)| pod);
        }
        Some(Needs::NodeUid) => {
            facts.node_uid = api
                .read(core("nodes")?, None, node)
                .await?
                .and_then(|(n, _)| {
                    n.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
        }
        _ => {}
    }
    match node_restriction::check(&req, &facts) {
        Ok(()) => Ok(()),
        Err(Refusal::PodNotFound(pod)) => Err(ApiError::not_found(core("pods")?, &pod)),
        Err(Refusal::NodeNotFound(n)) => Err(ApiError::not_found(core("nodes")?, &n)),
        Err(Refusal::Forbidden(reason)) => {
            let shown = if name.is_empty() { "Unknown" } else { name };
            tracing::debug!(node, resource = r.plural, subresource, name, %reason, "NodeRestriction refused a request");
            Err(ApiError {
                details: Some(json!({"name": shown, "group": r.group, "kind": r.plural})),
                ..ApiError::forbidden(format!(
                    "{} \"{shown}\" is forbidden: {reason}",
                    status::qualified(r)
                ))
            })
        }
    }
}

/// RBAC escalation prevention for a write of a Role, ClusterRole,
/// RoleBinding or ClusterRoleBinding by the request's user (`old`: the
/// stored object of an update; `request_name`: the URL's name), as
/// upstream's policybased storages: a role's rules, or a binding's
/// referenced role's, must be held by the user unless it may `escalate`
/// roles or `bind` that role.
async fn prevent_escalation(
    api: &Api,
    r: &ResourceType,
    ns: Option<&str>,
    request_name: &str,
    new: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    use escalation::Kind;
    let Some(kind) = Kind::of(r.group, r.plural) else {
        return Ok(());
    };
    // In-process writes (the bootstrap policy) have no user.
    let Some(user) = crate::auth::request_user() else {
        return Ok(());
    };
    if escalation::escalation_allowed(&user) {
        return Ok(());
    }
    let namespace = ns.unwrap_or("");
    let is_role = matches!(kind, Kind::Role | Kind::ClusterRole);
    if is_role
        && escalation::escalate_authorized(&api.auth, &user, r.plural, namespace, request_name)
    {
        return Ok(());
    }
    if old.is_some_and(|old| escalation::is_only_mutating_gc_fields(new, old)) {
        return Ok(());
    }
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let forbidden = |err: EscalationError| {
        tracing::debug!(user = %user.username, resource = r.plural, namespace, name, %err, "RBAC escalation refused");
        let qualified = status::qualified(r);
        let message = if name.is_empty() {
            format!("{qualified} is forbidden: {err}")
        } else {
            format!("{qualified} \"{name}\" is forbidden: {err}")
        };
        ApiError {
            details: Some(json!({"name": name, "group": r.group, "kind": r.plural})),
            ..ApiError::forbidden(message)
        }
    };
    if is_role {
        let rules: Vec<PolicyRule> = parse_at(new, "/rules")?.unwrap_or_default();
        escalation::confirm_no_escalation(&api.auth, &user, namespace, &rules)
            .map_err(forbidden)?;
        // An aggregationRule can gather anything (or, removed, stop
        // tightening): setting or changing one takes `*` on everything.
        if kind == Kind::ClusterRole
            && (escalation::has_aggregation_rule(new)
                || old.is_some_and(escalation::has_aggregation_rule))
        {
            escalation::confirm_full_authority(&api.auth, &user, namespace).map_err(forbidden)?;
        }
        return Ok(());
    }
    let role_ref: RoleRef =
        parse_at(new, "/roleRef")?.ok_or_else(|| ApiError::bad_request("roleRef is required"))?;
    if escalation::bind_authorized(&api.auth, &user, &role_ref, namespace) {
        return Ok(());
    }
    let rules = referenced_rules(api, &role_ref, ns).await?;
    escalation::confirm_no_escalation(&api.auth, &user, namespace, &rules).map_err(forbidden)
}

/// The rules of the role a binding in `ns` refers to, read from the store
/// (upstream's registry-backed resolver: a missing role is its 404).
async fn referenced_rules(
    api: &Api,
    role_ref: &RoleRef,
    ns: Option<&str>,
) -> Result<Vec<PolicyRule>, ApiError> {
    let (plural, ns) = match role_ref.kind.as_str() {
        "Role" => ("roles", ns),
        "ClusterRole" => ("clusterroles", None),
        other => {
            return Err(ApiError::internal(format!(
                "unsupported role reference kind: \"{other}\""
            )));
        }
    };
    let r = resources::find(escalation::RBAC_GROUP, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let Some((role, _)) = api.read(r, ns, &role_ref.name).await? else {
        return Err(ApiError::not_found(r, &role_ref.name));
    };
    Ok(parse_at(&role, "/rules")?.unwrap_or_default())
}

/// The typed value at `pointer` of a validated object (`None`: absent or null).
fn parse_at<T: serde::de::DeserializeOwned>(
    obj: &Value,
    pointer: &str,
) -> Result<Option<T>, ApiError> {
    match obj.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("{}: {e}", &pointer[1..]))),
    }
}

/// Gives back a charge whose object was not stored.
pub async fn release(api: &Api, charge: Charge) {
    if !charge.is_empty() {
        resourcequota::refund(api, charge).await;
    }
}
