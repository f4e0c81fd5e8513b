//! The field sets of objects: the set an applied configuration claims
//! (upstream's `ToFieldSet`) and what a write added, modified and removed
//! (upstream's `Compare`). One pass over the values, O(size of the object).

use std::collections::BTreeMap;

use serde_json::Value;

use super::path::{Path, PathElement};
use super::schema::Shape;
use super::set::FieldSet;

/// The fields of `value`: leaves (scalars, atomic lists and maps) and the
/// items of granular lists; maps themselves are not members.
pub fn to_set(value: &Value, shape: Shape) -> FieldSet {
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    to_set_at(value, shape, &mut path, &mut out);
    out
}

fn to_set_at(value: &Value, shape: Shape, path: &mut Path, out: &mut FieldSet) {
    match value {
        Value::Null => {}
        Value::Object(map) if !shape.atomic => {
            for (k, child) in map {
                if child.is_null() {
                    continue;
                }
                path.push(PathElement::Field(k.clone()));
                to_set_at(child, shape.field(k), path, out);
                path.pop();
            }
        }
        Value::Array(items) if shape.granular_list() => {
            let item_shape = shape.item();
            for (i, item) in items.iter().enumerate() {
                path.push(shape.item_element(i, item));
                out.insert(path);
                to_set_at(item, item_shape, path, out);
                path.pop();
            }
        }
        _ => out.insert(path),
    }
}

/// What changed between two versions of an object.
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Added or modified: the fields a write set.
    pub fn changed(&self) -> FieldSet {
        let mut set = self.added.clone();
        set.union(&self.modified);
        set
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compares `old` (absent for a create) with `new`. A map or list item
/// that appears is itself added (the `.` of `fieldsV1`), as are its fields.
pub fn compare(old: Option<&Value>, new: Option<&Value>, shape: Shape) -> Comparison {
    let mut out = Comparison::default();
    let mut path = Vec::new();
    compare_at(old, new, shape, &mut path, &mut out);
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Leaf,
    Map,
    List,
}

fn kind(v: &Value, shape: Shape) -> Kind {
    match v {
        Value::Object(_) if !shape.atomic => Kind::Map,
        Value::Array(_) if shape.granular_list() => Kind::List,
        _ => Kind::Leaf,
    }
}

fn compare_at(
    old: Option<&Value>,
    new: Option<&Value>,
    shape: Shape,
    path: &mut Path,
    out: &mut Comparison,
) {
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    let (k_old, k_new) = (old.map(|v| kind(v, shape)), new.map(|v| kind(v, shape)));
    let k = match (k_old, k_new) {
        (None, None) => return,
        // A value that changed between a map, a list and a scalar is replaced.
        (Some(a), Some(b)) if a != b => Kind::Leaf,
        (Some(a), _) | (None, Some(a)) => a,
    };
    match k {
        Kind::Leaf => {
            match (old, new) {
                (None, Some(_)) => out.added.insert(path),
                (Some(_), None) => out.removed.insert(path),
                (Some(a), Some(b)) if a != b => out.modified.insert(path),
                _ => {}
            }
            return;
        }
        Kind::Map => {
            let empty = serde_json::Map::new();
            let a = old.and_then(Value::as_object).unwrap_or(&empty);
            let b = new.and_then(Value::as_object).unwrap_or(&empty);
            for (key, bv) in b {
                path.push(PathElement::Field(key.clone()));
                compare_at(a.get(key), Some(bv), shape.field(key), path, out);
                path.pop();
            }
            for (key, av) in a {
                if !b.contains_key(key) {
                    path.push(PathElement::Field(key.clone()));
                    compare_at(Some(av), None, shape.field(key), path, out);
                    path.pop();
                }
            }
        }
        Kind::List => {
            let a = index_items(old, shape);
            let b = index_items(new, shape);
            let item_shape = shape.item();
            for (pe, bv) in &b {
                path.push(pe.clone());
                compare_at(a.get(pe).copied(), Some(bv), item_shape, path, out);
                path.pop();
            }
            for (pe, av) in &a {
                if !b.contains_key(pe) {
                    path.push(pe.clone());
                    compare_at(Some(av), None, item_shape, path, out);
                    path.pop();
                }
            }
        }
    }
    match (old, new) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        _ => {}
    }
}

/// The items of a granular list by path element (the first of duplicates).
pub fn index_items(list: Option<&Value>, shape: Shape) -> BTreeMap<PathElement, &Value> {
    let mut out = BTreeMap::new();
    if let Some(items) = list.and_then(Value::as_array) {
        for (i, item) in items.iter().enumerate() {
            out.entry(shape.item_element(i, item)).or_insert(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deploy() -> Value {
        json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [
                    {"name": "app", "image": "nginx", "ports": [{"containerPort": 80}], "args": ["a"]}
                ]}}
            }
        })
    }

    #[test]
    fn applied_sets_own_leaves_and_keyed_items() {
        let set = to_set(&deploy(), Shape::root("apps/v1", "Deployment"));
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                        ".": {},
                        "f:args": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}}
                }
            })
        );
    }

    #[test]
    fn creates_add_new_maps_with_a_dot() {
        let c = compare(None, Some(&deploy()), Shape::root("apps/v1", "Deployment"));
        let v1 = c.added.to_fields_v1();
        assert_eq!(v1["f:metadata"]["f:labels"], json!({".": {}, "f:app": {}}));
        assert!(c.modified.is_empty() && c.removed.is_empty());
    }

    #[test]
    fn updates_report_modified_and_removed_fields() {
        let shape = Shape::root("apps/v1", "Deployment");
        let old = deploy();
        let mut new = deploy();
        new["spec"]["replicas"] = json!(3);
        new["metadata"]["labels"] = json!({"tier": "x"});
        new["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["b"]);
        let c = compare(Some(&old), Some(&new), shape);
        assert_eq!(
            c.modified.to_fields_v1(),
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:args": {}}}}}}})
        );
        assert_eq!(
            c.added.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
        );
        assert_eq!(
            c.removed.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:app": {}}}})
        );
        assert!(compare(Some(&old), Some(&old), shape).is_empty());
    }

    #[test]
    fn set_lists_own_values() {
        let shape = Shape::root("v1", "ConfigMap");
        let cm = json!({"metadata": {"finalizers": ["a", "b"]}});
        let set = to_set(&cm, shape);
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}}})
        );
    }
}
