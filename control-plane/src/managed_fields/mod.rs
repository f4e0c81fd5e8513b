//! Field ownership (`metadata.managedFields`) and server-side apply, as
//! kube-apiserver's fieldmanager with structured-merge-diff semantics. The
//! write handlers call [`record_update`] for creates, updates and patches
//! and [`apply`] for `application/apply-patch+yaml`; pure functions, no I/O.
//!
//! Flow of an update: decode the entries of the incoming (or live) object,
//! compare old and new, hand the changed fields to the writing manager
//! (taking them from others), drop removed fields from every owner, and
//! encode the entries back. An apply merges the configuration into the live
//! object, removes what the manager stopped applying, and refuses to change
//! fields other managers own unless forced.

mod cap;
mod entries;
pub mod last_applied;
mod merge;
mod path;
mod schema;
mod set;
mod walk;

use serde_json::{Value, json};

pub use entries::{Entry, Operation};
pub use path::PathElement;
pub use schema::Shape;
pub use set::FieldSet;

/// The manager of `before-first-apply`: the owner of everything an object
/// held when it was first applied without any managedFields.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Metadata fields the server owns, never tracked (upstream's strip set).
const STRIPPED_META: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

/// Who writes, through which endpoint, and when.
#[derive(Debug, Clone)]
pub struct Manager<'a> {
    pub name: &'a str,
    /// The apiVersion of the object (of the parent for `scale`).
    pub api_version: &'a str,
    /// `status`, `scale` or empty.
    pub subresource: &'a str,
    /// RFC 3339, seconds.
    pub time: &'a str,
}

/// Which part of the object a write may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The object; `status` is left out when it is a subresource of its own.
    Main { ignore_status: bool },
    /// Only `status`.
    Status,
}

/// A field another manager owns and the write would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `"kubectl" with subresource "scale" using apps/v1`.
    pub manager: String,
    /// `.spec.replicas`.
    pub field: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
}

/// Upstream's message of an apply conflict.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager, c.field
        );
    }
    let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    managers.sort_unstable();
    managers.dedup();
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| c.manager == m) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Whether ownership is tracked on the top-level member `key`.
fn tracks(scope: Scope, key: &str) -> bool {
    match (scope, key) {
        (_, "apiVersion" | "kind") => false,
        (Scope::Status, key) => key == "status",
        (Scope::Main { ignore_status }, "status") => !ignore_status,
        _ => true,
    }
}

/// `f` of the part of `obj` ownership is tracked on, as [`tracked`] gives
/// it, without copying the object: the other members are set aside for the
/// call and put back (maps keep their keys sorted, so the object is as it
/// was).
fn with_tracked<R>(obj: &mut Value, scope: Scope, f: impl FnOnce(&Value) -> R) -> R {
    let Value::Object(map) = obj else {
        return f(&Value::Null);
    };
    let untracked: Vec<String> = map.keys().filter(|k| !tracks(scope, k)).cloned().collect();
    let top: Vec<(String, Value)> = untracked
        .iter()
        .filter_map(|k| map.remove_entry(k))
        .collect();
    let meta: Vec<(&str, Value)> = match map.get_mut("metadata") {
        Some(Value::Object(m)) => STRIPPED_META
            .iter()
            .filter_map(|k| m.remove(*k).map(|v| (*k, v)))
            .collect(),
        _ => Vec::new(),
    };
    let out = f(obj);
    if let Value::Object(map) = obj {
        if let Some(Value::Object(m)) = map.get_mut("metadata") {
            m.extend(meta.into_iter().map(|(k, v)| (k.to_string(), v)));
        }
        map.extend(top);
    }
    out
}

/// The part of an object ownership is tracked on.
fn tracked(obj: &Value, scope: Scope) -> Value {
    let Value::Object(map) = obj else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        if !tracks(scope, k) {
            continue;
        }
        let mut v = v.clone();
        if k == "metadata"
            && let Some(m) = v.as_object_mut()
        {
            for f in STRIPPED_META {
                m.remove(*f);
            }
        }
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

/// The `metadata` member itself is the server's (upstream strips it too).
fn without_metadata_member(set: &mut FieldSet) {
    let mut meta = FieldSet::new();
    meta.insert(&[PathElement::Field("metadata".into())]);
    set.subtract(&meta);
}

fn entries_of(obj: Option<&Value>) -> Option<Vec<Entry>> {
    let list = obj?.pointer("/metadata/managedFields")?;
    if list.as_array().is_some_and(Vec::is_empty) {
        return None;
    }
    match entries::decode(list) {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::debug!(%err, "ignoring invalid managedFields");
            None
        }
    }
}

fn store_entries(obj: &mut Value, list: &[Entry]) {
    let encoded = entries::encode(list);
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        if encoded.as_array().is_some_and(|a| !a.is_empty()) {
            obj["metadata"] = json!({"managedFields": encoded});
        }
        return;
    };
    if encoded.as_array().is_some_and(Vec::is_empty) {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), encoded);
    }
}

/// Records a create (`old` is `None`), update or non-apply patch by
/// `manager` in `new`'s managedFields. managedFields sent with `new` are
/// kept when valid (else the live ones are); `[{}]` clears them.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    shape: Shape,
    scope: Scope,
    manager: &Manager<'_>,
) {
    if new
        .pointer("/metadata/managedFields")
        .is_some_and(entries::is_reset)
    {
        store_entries(new, &[]);
        return;
    }
    let mut list = entries_of(Some(new))
        .or_else(|| entries_of(old))
        .unwrap_or_default();
    let old = old.map(|o| tracked(o, scope));
    let cmp = with_tracked(new, scope, |new| {
        walk::compare(old.as_ref(), Some(new), shape)
    });
    let walk::Comparison {
        added: mut changed,
        modified,
        removed,
    } = cmp;
    changed.union(&modified);
    without_metadata_member(&mut changed);
    let me = Entry {
        manager: manager.name.to_string(),
        operation: Operation::Update,
        api_version: manager.api_version.to_string(),
        time: Some(manager.time.to_string()),
        subresource: manager.subresource.to_string(),
        fields: FieldSet::new(),
    };
    for e in &mut list {
        if !e.same_manager(&me) {
            e.fields.subtract(&changed);
        }
        e.fields.subtract(&removed);
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| e.same_manager(&me)) {
            Some(e) => {
                e.fields.union(&changed);
                e.time = me.time.clone();
            }
            None => list.push(Entry {
                fields: changed,
                ..me
            }),
        }
    }
    cap::cap_update_managers(&mut list, cap::MAX_UPDATE_MANAGERS);
    store_entries(new, &list);
}

/// Server-side apply of `config` by `manager` onto `live` (`None` creates):
/// the merged object with its managedFields, or the conflicts when
/// `force` is off and the apply would change fields others own.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    shape: Shape,
    scope: Scope,
    manager: &Manager<'_>,
    force: bool,
) -> Result<Value, ApplyError> {
    let mut list = entries_of(live).unwrap_or_default();
    if list.is_empty()
        && let Some(live) = live
    {
        let mut owned = walk::compare(None, Some(&tracked(live, scope)), shape).changed();
        without_metadata_member(&mut owned);
        list.push(Entry {
            manager: BEFORE_FIRST_APPLY.into(),
            operation: Operation::Update,
            api_version: manager.api_version.to_string(),
            time: Some(manager.time.to_string()),
            subresource: String::new(),
            fields: owned,
        });
    }
    let mut config = config.clone();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    if scope
        == (Scope::Main {
            ignore_status: true,
        })
        && let Some(obj) = config.as_object_mut()
    {
        obj.remove("status");
    }
    let applied = walk::to_set(&tracked(&config, scope), shape);
    let me = Entry {
        manager: manager.name.to_string(),
        operation: Operation::Apply,
        api_version: manager.api_version.to_string(),
        time: Some(manager.time.to_string()),
        subresource: manager.subresource.to_string(),
        fields: applied.clone(),
    };
    let previous = list.iter().position(|e| e.same_manager(&me));
    let last = previous.map(|i| list.remove(i));

    let mut merged = merge::merge(live, &config, shape);
    if let Some(last) = &last {
        let mut stale = last.fields.clone();
        stale.subtract(&applied);
        let mut keep = applied.clone();
        for e in &list {
            keep.union(&e.fields);
        }
        merge::prune(&mut merged, &stale, &keep, shape);
    }

    let cmp = walk::compare(
        live.map(|l| tracked(l, scope)).as_ref(),
        Some(&tracked(&merged, scope)),
        shape,
    );
    let changed = cmp.changed();
    let mut conflicts = Vec::new();
    for e in &mut list {
        let clash = e.fields.intersection(&changed);
        if clash.is_empty() {
            continue;
        }
        for p in clash.paths() {
            conflicts.push(Conflict {
                manager: e.describe(),
                field: path::display(&p),
            });
        }
        if force {
            e.fields.subtract(&clash);
        }
    }
    if !force && !conflicts.is_empty() {
        conflicts.sort_by(|a, b| a.manager.cmp(&b.manager));
        return Err(ApplyError::Conflicts(conflicts));
    }
    for e in &mut list {
        e.fields.subtract(&cmp.removed);
    }
    let unchanged = cmp.is_empty()
        && last
            .as_ref()
            .is_some_and(|l| l.fields == applied && l.api_version == me.api_version);
    let time = match (&last, unchanged) {
        (Some(l), true) => l.time.clone(),
        _ => me.time.clone(),
    };
    list.push(Entry { time, ..me });
    cap::cap_update_managers(&mut list, cap::MAX_UPDATE_MANAGERS);
    store_entries(&mut merged, &list);
    Ok(merged)
}

#[cfg(test)]
mod tests;
