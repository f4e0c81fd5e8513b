//! CustomResourceDefinitions: upstream's defaults (names, conversion) and
//! the validation users hit first (name = plural.group, one storage
//! version, names, scope). No I/O.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::Cause;
use super::field::{self, BadValue, FieldPath};
use super::json::{default_str, default_value, get_array, get_str, obj_mut};
use super::meta::{is_dns1035_label, is_dns1123_label, is_dns1123_subdomain};

/// `SetDefaults_CustomResourceDefinitionSpec` plus the stored versions the
/// strategy records on create.
pub fn default_crd(crd: &mut Value) {
    let storage: Vec<Value> = get_array(crd, &["spec", "versions"])
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let Some(obj) = crd.as_object_mut() else {
        return;
    };
    if let Some(spec) = obj_mut(obj, "spec") {
        if let Some(names) = obj_mut(spec, "names") {
            let kind = names
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !kind.is_empty() {
                default_str(names, "singular", &kind.to_lowercase());
                default_str(names, "listKind", &format!("{kind}List"));
            }
        }
        default_value(spec, "conversion", json!({"strategy": "None"}));
    }
    if let Some(status) = obj_mut(obj, "status") {
        let empty = status
            .get("storedVersions")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty && !storage.is_empty() {
            status.insert("storedVersions".into(), Value::Array(storage));
        }
    }
}

/// Upstream `ValidateCustomResourceDefinition` (the common checks).
pub fn validate_crd(crd: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let spec = FieldPath::new("spec");
    let group = get_str(crd, &["spec", "group"]);
    let plural = get_str(crd, &["spec", "names", "plural"]);
    let name = get_str(crd, &["metadata", "name"]);
    if name != format!("{plural}.{group}") {
        errs.push(field::invalid(
            &FieldPath::new("metadata").child("name"),
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        errs.push(field::required(&spec.child("group"), ""));
    } else {
        for m in is_dns1123_subdomain(group) {
            errs.push(field::invalid(&spec.child("group"), group, &m));
        }
        if group.split('.').count() < 2 {
            errs.push(field::invalid(
                &spec.child("group"),
                group,
                "should be a domain with at least one dot",
            ));
        }
    }
    match get_str(crd, &["spec", "scope"]) {
        "Cluster" | "Namespaced" => {}
        "" => errs.push(field::required(&spec.child("scope"), "")),
        other => errs.push(field::not_supported(
            &spec.child("scope"),
            other,
            &["Cluster", "Namespaced"],
        )),
    }
    let names = spec.child("names");
    if plural.is_empty() {
        errs.push(field::required(&names.child("plural"), ""));
    } else {
        for m in is_dns1123_label(plural) {
            errs.push(field::invalid(&names.child("plural"), plural, &m));
        }
    }
    let singular = get_str(crd, &["spec", "names", "singular"]);
    if !singular.is_empty() {
        for m in is_dns1123_label(singular) {
            errs.push(field::invalid(&names.child("singular"), singular, &m));
        }
    }
    for key in ["kind", "listKind"] {
        let v = get_str(crd, &["spec", "names", key]);
        if v.is_empty() {
            errs.push(field::required(&names.child(key), ""));
        } else {
            for m in is_dns1035_label(&v.to_lowercase()) {
                errs.push(field::invalid(&names.child(key), v, &m));
            }
        }
    }
    let versions = get_array(crd, &["spec", "versions"]);
    let vp = spec.child("versions");
    let bad = || BadValue::Raw("[]apiextensions.CustomResourceDefinitionVersion{...}".into());
    if versions.is_empty() {
        errs.push(field::invalid(
            &vp,
            bad(),
            "must have exactly one version marked as storage version",
        ));
        return errs;
    }
    let mut seen = BTreeSet::new();
    let mut storage = 0;
    for (i, v) in versions.iter().enumerate() {
        let vname = get_str(v, &["name"]);
        for m in is_dns1035_label(vname) {
            errs.push(field::invalid(&vp.index(i).child("name"), vname, &m));
        }
        if !seen.insert(vname) {
            errs.push(field::invalid(
                &vp,
                bad(),
                "must contain unique version names",
            ));
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage += 1;
        }
    }
    if storage != 1 {
        errs.push(field::invalid(
            &vp,
            bad(),
            "must have exactly one version marked as storage version",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}})
    }

    #[test]
    fn crd_defaults_names_and_conversion() {
        let mut c = crd("widgets.example.com");
        default_crd(&mut c);
        assert_eq!(c["spec"]["names"]["singular"], "widget");
        assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(c["spec"]["conversion"], json!({"strategy": "None"}));
        assert_eq!(c["status"]["storedVersions"], json!(["v1"]));
        assert!(validate_crd(&c).is_empty(), "{:?}", validate_crd(&c));
    }

    #[test]
    fn crd_name_must_be_plural_dot_group() {
        let mut c = crd("widget.example.com");
        default_crd(&mut c);
        assert_eq!(
            validate_crd(&c)[0].to_string(),
            "metadata.name: Invalid value: \"widget.example.com\": must be spec.names.plural+\".\"+spec.group"
        );
    }
}
