//! Admission plugins between defaulting/validation and the store, as
//! kube-apiserver runs them: the mutating LimitRanger defaults before
//! validation; LimitRanger's checks and ResourceQuota's charge after it.
//! `server::objects` calls `mutate` and `validate` on creates,
//! `validate_update` on updates, and `release` when the store refuses what
//! was admitted.

pub mod limitranger;
pub mod resourcequota;
pub mod usage;

use serde_json::Value;

use crate::resources::ResourceType;
use crate::server::Api;
use crate::server::status::ApiError;

pub use resourcequota::Charge;

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
    let Some(ns) = ns else {
        return Ok(Charge::default());
    };
    limitranger::validate(api, r, ns, obj).await?;
    resourcequota::admit(api, r, ns, obj, dry_run).await
}

/// Validating admission of an update of an object itself (subresources
/// are not admitted, as upstream): LimitRanger checks claims again (pod
/// containers cannot change), ResourceQuota charges added usage.
pub async fn validate_update(
    api: &Api,
    r: &ResourceType,
    ns: Option<&str>,
    old: &Value,
    new: &Value,
    dry_run: bool,
) -> Result<Charge, ApiError> {
    let Some(ns) = ns else {
        return Ok(Charge::default());
    };
    if !(r.group.is_empty() && r.plural == "pods") {
        limitranger::validate(api, r, ns, new).await?;
    }
    resourcequota::admit_update(api, r, ns, old, new, dry_run).await
}

/// Gives back a charge whose object was not stored.
pub async fn release(api: &Api, charge: Charge) {
    if !charge.is_empty() {
        resourcequota::refund(api, charge).await;
    }
}
