//! A set of field paths (structured-merge-diff's `fieldpath.Set`) as a
//! tree, with the set operations ownership needs and the `fieldsV1` JSON
//! form of `metadata.managedFields[].fieldsV1`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::path::{Path, PathElement, PathError};

/// A set of paths. A node is a member when its own path is in the set;
/// its children hold the longer paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` (the empty path is never a member).
    pub fn insert(&mut self, path: &[PathElement]) {
        let mut node = self;
        for pe in path {
            // Most of a path is already there: its elements are copied
            // only where the tree grows.
            if !node.children.contains_key(pe) {
                node.children.insert(pe.clone(), FieldSet::default());
            }
            node = node.children.get_mut(pe).expect("inserted above");
        }
        if !path.is_empty() {
            node.member = true;
        }
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// Whether `path` or anything under it is a member.
    pub fn contains_prefix(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    fn node(&self, path: &[PathElement]) -> Option<&FieldSet> {
        let mut node = self;
        for pe in path {
            node = node.children.get(pe)?;
        }
        Some(node)
    }

    /// The child node under one path element.
    pub fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, child) in &other.children {
            self.children.entry(pe.clone()).or_default().union(child);
        }
    }

    /// Removes the members of `other` (exact paths; longer paths stay).
    pub fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (pe, theirs) in &other.children {
            if let Some(mine) = self.children.get_mut(pe) {
                mine.subtract(theirs);
            }
        }
        self.prune();
    }

    /// Removes the members of `other` and every path under them.
    pub fn subtract_recursive(&mut self, other: &FieldSet) {
        for (pe, theirs) in &other.children {
            if theirs.member {
                self.children.remove(pe);
            } else if let Some(mine) = self.children.get_mut(pe) {
                mine.subtract_recursive(theirs);
            }
        }
        self.prune();
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, mine) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                let both = mine.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// Every member path, in order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    fn prune(&mut self) {
        self.children.retain(|_, c| !c.is_empty());
    }

    /// The `fieldsV1` JSON: `{"f:spec":{"f:replicas":{}}}`, with `".":{}`
    /// for a member that also has children.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            if !child.is_empty() {
                map.insert(pe.to_key(), child.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    /// Parses `fieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, FieldsV1Error> {
        let mut set = FieldSet::new();
        set.read(v)?;
        Ok(set)
    }

    fn read(&mut self, v: &Value) -> Result<(), FieldsV1Error> {
        let Value::Object(map) = v else {
            return Err(FieldsV1Error::NotAnObject);
        };
        for (k, child) in map {
            if k == "." {
                self.member = true;
                continue;
            }
            let pe = PathElement::from_key(k)?;
            let node = self.children.entry(pe).or_default();
            node.read(child)?;
            let leaf = child.as_object().is_some_and(Map::is_empty);
            if leaf {
                node.member = true;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FieldsV1Error {
    #[error("fieldsV1 values must be JSON objects")]
    NotAnObject,
    #[error("invalid fieldsV1 key")]
    Key(#[from] PathError),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    #[test]
    fn fields_v1_roundtrips_with_dot_members() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"a\"}": {".": {}, "f:image": {}}}, "f:replicas": {}}
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert!(set.contains(&[f("metadata"), f("labels")]));
        assert!(!set.contains(&[f("metadata")]));
        assert!(set.contains(&[f("spec"), f("replicas")]));
        assert_eq!(set.to_fields_v1(), v);
        assert_eq!(set.paths().len(), 5);
    }

    #[test]
    fn subtract_removes_exact_paths_and_prunes_empty_nodes() {
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        a.subtract(&b);
        assert_eq!(a.to_fields_v1(), json!({"f:spec": {"f:paused": {}}}));
        a.subtract(&a.clone());
        assert!(a.is_empty());
        assert_eq!(a.to_fields_v1(), json!({}));
    }

    #[test]
    fn recursive_subtract_drops_subtrees() {
        let mut a = FieldSet::new();
        a.insert(&[f("status"), f("phase")]);
        a.insert(&[f("spec"), f("x")]);
        let mut ignored = FieldSet::new();
        ignored.insert(&[f("status")]);
        a.subtract_recursive(&ignored);
        assert_eq!(a.to_fields_v1(), json!({"f:spec": {"f:x": {}}}));
    }

    #[test]
    fn intersection_keeps_common_members() {
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("spec")]);
        let both = a.intersection(&b);
        assert_eq!(both.paths(), vec![vec![f("spec"), f("replicas")]]);
        assert!(a.contains_prefix(&[f("spec")]));
        assert!(!a.contains_prefix(&[f("status")]));
    }

    #[test]
    fn bad_fields_v1_is_an_error() {
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
    }
}
