//! Strategic merge patch (apimachinery `strategicpatch.StrategicMergeMapPatch`
//! with `MergeParallelList` and `IgnoreUnmatchedNulls`): maps merge, `null`
//! deletes, lists merge by their patch merge key or are replaced, and the
//! `$patch`, `$retainKeys`, `$setElementOrder/` and
//! `$deleteFromPrimitiveList/` directives apply. Directive keys never reach
//! the result.

use serde_json::{Map, Value};

use super::PatchError;
use super::merge_keys::{FieldMeta, Node, lookup};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

// Upstream `mergepatch` error texts; the first group is a 400 upstream.
const ERR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";
const ERR_LIST_OF_LISTS: &str = "lists of lists are not supported";

type Result<T, E = PatchError> = std::result::Result<T, E>;

fn bad(message: &str) -> PatchError {
    PatchError::BadPatch(message.to_string())
}

fn failed(message: String) -> PatchError {
    PatchError::Failed(message)
}

fn no_merge_key(item: &Value, key: &str) -> PatchError {
    failed(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt(item)
    ))
}

/// Go's `%v` rendering of a JSON value, for error messages.
fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_fmt).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_fmt(&map[k])))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
        other => other.to_string(),
    }
}

/// Applies `patch` to `original` for an object at schema `node`.
pub fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    node: Node,
) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                fresh_map(patch, node)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(bad_patch_type(directive, &patch)),
        };
    }

    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order(&mut original, &mut patch, node)?;

    for (key, patch_value) in patch {
        let (field, is_delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some(rest) => match rest.strip_prefix('/') {
                Some(field) if !field.is_empty() => (field.to_string(), true),
                _ => return Err(bad(ERR_PRIMITIVE_LIST)),
            },
            None => (key, false),
        };
        if patch_value.is_null() {
            original.remove(&field);
            continue;
        }
        let meta = lookup(node, &field);
        let Some(slot) = original.get_mut(&field) else {
            if !is_delete_list {
                original.insert(field, fresh(patch_value, meta)?);
            }
            continue;
        };
        // Merged in place so that the field keeps its position.
        *slot = match (std::mem::take(slot), patch_value) {
            (Value::Object(o), Value::Object(p)) => Value::Object(merge_map(o, p, meta.node)?),
            (Value::Array(o), Value::Array(p)) => {
                if meta.merge {
                    Value::Array(merge_list(o, p, meta, is_delete_list)?)
                } else if is_delete_list {
                    // Only merged lists have a deletion list; keep the field.
                    Value::Array(o)
                } else {
                    fresh(Value::Array(p), meta)?
                }
            }
            (_, p) => fresh(p, meta)?,
        };
    }
    Ok(original)
}

fn bad_patch_type(directive: &Value, patch: &Map<String, Value>) -> PatchError {
    failed(format!(
        "unknown patch type: {} in map: {}",
        go_fmt(directive),
        go_fmt(&Value::Object(patch.clone()))
    ))
}

/// A patch value taken as is (no original to merge with), with its
/// directives applied and its `null`s dropped.
fn fresh(value: Value, meta: FieldMeta) -> Result<Value> {
    Ok(match value {
        Value::Object(p) => Value::Object(fresh_map(p, meta.node)?),
        // Upstream takes a new list as is; merging it into nothing applies
        // its directives the same way, unless items lack the merge key.
        Value::Array(items) if meta.merge && all_keyed(&items, meta.merge_key) => {
            Value::Array(merge_list(Vec::new(), items, meta, false)?)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Value::Object(p) => fresh_map(p, meta.node).map(Value::Object),
                    other => Ok(other),
                })
                .collect::<Result<_>>()?,
        ),
        other => other,
    })
}

fn all_keyed(items: &[Value], merge_key: Option<&str>) -> bool {
    merge_key.is_none_or(|key| items.iter().all(|i| !i.is_object() || i.get(key).is_some()))
}

fn fresh_map(patch: Map<String, Value>, node: Node) -> Result<Map<String, Value>> {
    merge_map(Map::new(), patch, node)
}

/// `applyRetainKeysDirective`: drops the original keys missing from the list.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(bad(ERR_RETAIN_KEYS));
    };
    let keep = |k: &str| retain.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !keep(k) {
            return Err(bad(ERR_RETAIN_KEYS));
        }
    }
    original.retain(|k, _| keep(k));
    Ok(())
}

/// `mergePatchIntoOriginal`: merges each list named by a
/// `$setElementOrder/<field>` directive and orders it as the directive says.
fn merge_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    node: Node,
) -> Result<()> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let order = patch.remove(&key).unwrap_or(Value::Null);
        let Value::Array(order) = order else {
            return Err(bad(ERR_SET_ELEMENT_ORDER));
        };
        let field = match key[SET_ELEMENT_ORDER.len()..].strip_prefix('/') {
            Some(f) if !f.is_empty() => f.to_string(),
            _ => return Err(bad(ERR_SET_ELEMENT_ORDER)),
        };
        let original_list = match original.get(&field) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(_) => return Err(bad(ERR_SET_ELEMENT_ORDER)),
        };
        let patch_list = match patch.remove(&field) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(_) => return Err(bad(ERR_SET_ELEMENT_ORDER)),
        };
        let meta = lookup(node, &field);
        let merge_key = meta.merge_key.filter(|_| meta.merge);
        if let Some(list) = &patch_list {
            validate_order(list, &order, merge_key)?;
        }
        let merged = match (original_list.clone(), patch_list) {
            (Some(o), None) => o,
            (None, Some(p)) => match fresh(Value::Array(p), meta)? {
                Value::Array(list) => list,
                _ => Vec::new(),
            },
            (Some(o), Some(p)) => {
                if meta.merge {
                    merge_list(o, p, meta, false)?
                } else {
                    match fresh(Value::Array(p), meta)? {
                        Value::Array(list) => list,
                        _ => Vec::new(),
                    }
                }
            }
            (None, None) => continue,
        };
        let (in_order, server_only) = partition(merged, &order, merge_key)?;
        let server_order = original_list.unwrap_or_default();
        let list = normalize_order(in_order, server_only, &order, &server_order, merge_key)?;
        original.insert(field, Value::Array(list));
    }
    Ok(())
}

/// `validatePatchWithSetOrderList`: the patch items must appear in the
/// order of the `$setElementOrder` list (deletions aside).
fn validate_order(patch: &[Value], order: &[Value], merge_key: Option<&str>) -> Result<()> {
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = match merge_key {
        Some(_) => patch.iter().filter(|v| !is_delete_item(v)).collect(),
        None => patch.iter().collect(),
    };
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        if non_delete[pi].get(DIRECTIVE).is_some() {
            pi += 1;
            continue;
        }
        if merge_key_equal(non_delete[pi], &order[oi], merge_key)? {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() && oi >= order.len() {
        return Err(failed(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            go_fmt(&Value::Array(patch.to_vec())),
            go_fmt(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn merge_key_equal(left: &Value, right: &Value, merge_key: Option<&str>) -> Result<bool> {
    let Some(key) = merge_key else {
        return Ok(left == right);
    };
    let l = left.get(key).ok_or_else(|| no_merge_key(left, key))?;
    let r = right.get(key).ok_or_else(|| no_merge_key(right, key))?;
    Ok(l == r)
}

fn is_delete_item(v: &Value) -> bool {
    v.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

/// The kind of list elements; all must agree, and lists of lists are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Map,
    Scalar,
}

fn element_kind(original: &[Value], patch: &[Value]) -> Result<Option<ElementKind>> {
    let mut kind: Option<(ElementKind, u8)> = None;
    for v in original.iter().chain(patch) {
        let (k, tag) = match v {
            Value::Array(_) => return Err(failed(ERR_LIST_OF_LISTS.to_string())),
            Value::Object(_) => (ElementKind::Map, 0),
            Value::String(_) => (ElementKind::Scalar, 1),
            Value::Number(_) => (ElementKind::Scalar, 2),
            Value::Bool(_) => (ElementKind::Scalar, 3),
            Value::Null => (ElementKind::Scalar, 4),
        };
        match kind {
            None => kind = Some((k, tag)),
            Some((_, t)) if t != tag => {
                return Err(failed(format!(
                    "list element types are not identical: [{} {}]",
                    go_fmt(&Value::Array(original.to_vec())),
                    go_fmt(&Value::Array(patch.to_vec()))
                )));
            }
            Some(_) => {}
        }
    }
    Ok(kind.map(|(k, _)| k))
}

/// `mergeSlice`: merges a `patchStrategy:"merge"` list.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    meta: FieldMeta,
    is_delete_list: bool,
) -> Result<Vec<Value>> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let Some(kind) = element_kind(&original, &patch)? else {
        return Ok(original);
    };
    if kind == ElementKind::Scalar {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.contains(v))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (in_patch, server_only) = partition(merged, &patch, None)?;
        return normalize_order(in_patch, server_only, &patch, &original, None);
    }

    let Some(merge_key) = meta.merge_key else {
        return Err(failed(
            "cannot merge lists without merge key for type slice".to_string(),
        ));
    };
    let (original, patch) = apply_list_directives(original, patch, merge_key)?;
    let mut merged = original.clone();
    for item in &patch {
        let value = item
            .get(merge_key)
            .ok_or_else(|| no_merge_key(item, merge_key))?;
        let position = merged.iter().position(|m| m.get(merge_key) == Some(value));
        match (position, item) {
            (Some(idx), Value::Object(p)) => {
                let base = match std::mem::take(&mut merged[idx]) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                merged[idx] = Value::Object(merge_map(base, p.clone(), meta.node)?);
            }
            (None, Value::Object(p)) => {
                merged.push(Value::Object(fresh_map(p.clone(), meta.node)?));
            }
            _ => {}
        }
    }
    let (in_patch, server_only) = partition(merged, &patch, Some(merge_key))?;
    normalize_order(in_patch, server_only, &patch, &original, Some(merge_key))
}

/// `mergeSliceWithSpecialElements`: applies `$patch: delete` items to the
/// original and `$patch: replace` to the whole list; returns the original
/// and the patch items left to merge.
fn apply_list_directives(
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut original = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let value = item
                    .get(merge_key)
                    .ok_or_else(|| no_merge_key(&item, merge_key))?;
                original.retain(|o| o.get(merge_key) != Some(value));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(failed(
                    "merging lists cannot yet be specified in the patch".to_string(),
                ));
            }
            _ => {
                let map = item.as_object().cloned().unwrap_or_default();
                return Err(bad_patch_type(directive, &map));
            }
        }
    }
    if replace {
        let fresh_items = plain
            .into_iter()
            .map(|item| match item {
                Value::Object(mut p) => {
                    p.remove(DIRECTIVE);
                    Value::Object(p)
                }
                other => other,
            })
            .collect();
        return Ok((fresh_items, Vec::new()));
    }
    Ok((original, plain))
}

/// The identity of a list item for ordering: its merge key value, or the
/// item itself for primitives.
fn identity<'a>(item: &'a Value, merge_key: Option<&str>) -> Option<&'a Value> {
    match merge_key {
        Some(key) => item.get(key),
        None => Some(item),
    }
}

fn index_of(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    let id = identity(item, merge_key);
    list.iter().position(|v| identity(v, merge_key) == id)
}

/// Splits `items` into those present in `by` and the others.
fn partition(
    items: Vec<Value>,
    by: &[Value],
    merge_key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for item in items {
        if let Some(key) = merge_key
            && item.get(key).is_none()
        {
            return Err(no_merge_key(&item, key));
        }
        if index_of(by, &item, merge_key).is_some() {
            present.push(item);
        } else {
            absent.push(item);
        }
    }
    Ok((present, absent))
}

/// `normalizeElementOrder`: patch items in patch order, server-only items in
/// server order, then the two interleaved keeping server order where both
/// are known.
fn normalize_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>> {
    let patch_items = sort_by_order(patch_items, patch_order, merge_key)?;
    let server_only = sort_by_order(server_only, server_order, merge_key)?;
    Ok(merge_sorted(
        server_only,
        patch_items,
        server_order,
        merge_key,
    ))
}

fn sort_by_order(
    items: Vec<Value>,
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>> {
    if let Some(key) = merge_key
        && let Some(item) = items.iter().chain(order).find(|v| v.get(key).is_none())
    {
        return Err(no_merge_key(item, key));
    }
    let (to_delete, mut keep): (Vec<Value>, Vec<Value>) = if merge_key.is_some() {
        items.into_iter().partition(is_delete_item)
    } else {
        (Vec::new(), items)
    };
    keep.sort_by_key(|item| index_of(order, item, merge_key).unwrap_or(usize::MAX));
    keep.extend(to_delete);
    Ok(keep)
}

/// `mergeSortedSlice`: inserts the server-only items (`left`) among the
/// patch items (`right`), each before the first patch item that follows it
/// in the server order.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (
                index_of(server_order, l, merge_key),
                index_of(server_order, r, merge_key),
            ) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}
