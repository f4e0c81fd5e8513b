//! The object side of server-side apply: merging an applied configuration
//! into the live object (maps field by field, keyed lists item by item,
//! sets by value, atomic values replaced) and removing the fields a
//! manager stopped applying.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::path::PathElement;
use super::schema::Shape;
use super::set::FieldSet;
use super::walk::index_items;

/// `live` with `config` merged in; `null`s in `config` are ignored.
pub fn merge(live: Option<&Value>, config: &Value, shape: Shape) -> Value {
    match (live, config) {
        (Some(Value::Object(l)), Value::Object(c)) if !shape.atomic => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    continue;
                }
                let merged = merge(l.get(k), cv, shape.field(k));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(l @ Value::Array(_)), Value::Array(c)) if shape.granular_list() => {
            merge_list(l, c, shape)
        }
        _ => without_nulls(config),
    }
}

/// Live items keep their order; applied items are placed before the next
/// live item they share, new ones at the end, as structured-merge-diff.
fn merge_list(live: &Value, config: &[Value], shape: Shape) -> Value {
    let item_shape = shape.item();
    let live_items: Vec<(PathElement, &Value)> = live
        .as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, v)| (shape.item_element(i, v), v))
                .collect()
        })
        .unwrap_or_default();
    let live_by_pe = index_items(Some(live), shape);
    let config_items: Vec<(PathElement, &Value)> = config
        .iter()
        .enumerate()
        .map(|(i, v)| (shape.item_element(i, v), v))
        .collect();
    let config_pes: BTreeSet<&PathElement> = config_items.iter().map(|(pe, _)| pe).collect();
    let mut emitted: BTreeSet<PathElement> = BTreeSet::new();
    let mut out = Vec::with_capacity(live_items.len() + config_items.len());
    let mut next = 0;
    for (pe, item) in &live_items {
        if !config_pes.contains(pe) {
            out.push((*item).clone());
            continue;
        }
        if emitted.contains(pe) {
            continue;
        }
        while let Some((cpe, citem)) = config_items.get(next) {
            next += 1;
            if !emitted.insert(cpe.clone()) {
                continue;
            }
            out.push(merge(live_by_pe.get(cpe).copied(), citem, item_shape));
            if cpe == pe {
                break;
            }
        }
    }
    for (cpe, citem) in &config_items[next.min(config_items.len())..] {
        if emitted.insert(cpe.clone()) {
            out.push(merge(live_by_pe.get(cpe).copied(), citem, item_shape));
        }
    }
    Value::Array(out)
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Removes from `obj` the fields of `stale` (those a manager applied
/// before and no longer applies) that no one else owns: `keep` holds the
/// fields of the new applied set and of every other manager.
pub fn prune(obj: &mut Value, stale: &FieldSet, keep: &FieldSet, shape: Shape) {
    for path in stale.paths() {
        if keep.contains_prefix(&path) {
            continue;
        }
        remove_path(obj, &path, shape);
    }
}

/// Removes the value at `path` (a no-op when it is not there).
pub fn remove_path(obj: &mut Value, path: &[PathElement], shape: Shape) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match (first, obj) {
        (PathElement::Field(name), Value::Object(map)) => {
            if rest.is_empty() {
                map.remove(name);
            } else if let Some(child) = map.get_mut(name) {
                remove_path(child, rest, shape.field(name));
            }
        }
        (pe, Value::Array(items)) => {
            let found = items
                .iter()
                .enumerate()
                .position(|(i, item)| shape.item_element(i, item) == *pe);
            let Some(i) = found else {
                return;
            };
            if rest.is_empty() {
                items.remove(i);
            } else {
                remove_path(&mut items[i], rest, shape.item());
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::managed_fields::walk::to_set;

    fn shape() -> Shape {
        Shape::root("apps/v1", "Deployment")
    }

    #[test]
    fn keyed_lists_merge_by_key_and_atomic_lists_are_replaced() {
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x", "args": ["1", "2"]},
            {"name": "b", "image": "y"}
        ]}}}});
        let config = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "z"},
            {"name": "a", "args": ["3"]}
        ]}}}});
        let out = merge(Some(&live), &config, shape());
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "c", "image": "z"},
                {"name": "a", "image": "x", "args": ["3"]},
                {"name": "b", "image": "y"}
            ])
        );
    }

    #[test]
    fn maps_merge_and_nulls_are_ignored() {
        let live = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 2}});
        let config =
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": null, "paused": true}});
        let out = merge(Some(&live), &config, shape());
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 2, "paused": true}})
        );
        assert_eq!(
            merge(None, &config, shape())["spec"],
            json!({"paused": true})
        );
    }

    #[test]
    fn prune_removes_stale_fields_nobody_else_owns() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "x"}, {"name": "y"}]}}}});
        let last = to_set(&obj, shape());
        let applied = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}});
        let mut keep = to_set(&applied, shape());
        let mut other = FieldSet::new();
        other.insert(&[
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into()),
        ]);
        keep.union(&other);
        let mut stale = last.clone();
        stale.subtract(&to_set(&applied, shape()));
        prune(&mut obj, &stale, &keep, shape());
        assert_eq!(
            obj,
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "x"}]}}}})
        );
    }
}
