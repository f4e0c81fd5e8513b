//! Ingresses: upstream's `ValidateIngressSpec` (rules, hosts, paths,
//! backends). No I/O.

use std::net::IpAddr;

use serde_json::Value;

use super::Cause;
use super::field::{self, FieldPath};
use super::json::{get_array, get_str};
use super::meta::{is_dns1123_subdomain, is_valid_port_name, is_valid_port_num};

const PATH_TYPES: [&str; 3] = ["Exact", "ImplementationSpecific", "Prefix"];

fn validate_backend(backend: &Value, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    let service = backend.get("service").filter(|v| !v.is_null());
    let resource = backend.get("resource").filter(|v| !v.is_null());
    match (service, resource) {
        (Some(_), Some(_)) => errs.push(field::invalid(
            path,
            "",
            "cannot set both resource and service backends",
        )),
        (None, None) => errs.push(field::invalid(
            path,
            "",
            "resource or service backend is required",
        )),
        (Some(svc), None) => {
            let sp = path.child("service");
            let name = get_str(svc, &["name"]);
            if name.is_empty() {
                errs.push(field::required(&sp.child("name"), ""));
            } else {
                for m in super::meta::is_dns1035_label(name) {
                    errs.push(field::invalid(&sp.child("name"), name, &m));
                }
            }
            let pp = sp.child("port");
            let port_name = get_str(svc, &["port", "name"]);
            let number = svc.pointer("/port/number").and_then(Value::as_i64);
            match (port_name.is_empty(), number) {
                (false, Some(_)) => errs.push(field::invalid(
                    &pp,
                    "",
                    "cannot set both port name & port number",
                )),
                (false, None) => {
                    for m in is_valid_port_name(port_name) {
                        errs.push(field::invalid(&pp.child("name"), port_name, &m));
                    }
                }
                (true, Some(n)) => {
                    for m in is_valid_port_num(n) {
                        errs.push(field::invalid(&pp.child("number"), n, &m));
                    }
                }
                (true, None) => {
                    errs.push(field::required(&pp, "port name or number is required"));
                }
            }
        }
        (None, Some(res)) => {
            if get_str(res, &["kind"]).is_empty() {
                errs.push(field::required(&path.child("resource").child("kind"), ""));
            }
            if get_str(res, &["name"]).is_empty() {
                errs.push(field::required(&path.child("resource").child("name"), ""));
            }
        }
    }
    errs
}

fn validate_host(host: &str, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    if host.parse::<IpAddr>().is_ok() {
        errs.push(field::invalid(
            path,
            host,
            "must be a DNS name, not an IP address",
        ));
        return errs;
    }
    let (checked, wildcard) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host, false),
    };
    for m in is_dns1123_subdomain(checked) {
        let m = if wildcard {
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
        } else {
            m
        };
        errs.push(field::invalid(path, host, &m));
    }
    errs
}

fn validate_http_path(p: &Value, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    let path_type = get_str(p, &["pathType"]);
    let value = get_str(p, &["path"]);
    match path_type {
        "" => errs.push(field::required(
            &path.child("pathType"),
            "pathType must be specified",
        )),
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.push(field::invalid(
                    &path.child("path"),
                    value,
                    "must be an absolute path",
                ));
            }
            for bad in ["//", "/./", "/../", "%2f", "%2F"] {
                if value.contains(bad) {
                    errs.push(field::invalid(
                        &path.child("path"),
                        value,
                        &format!("must not contain '{bad}'"),
                    ));
                }
            }
            for bad in ["/..", "/."] {
                if value.ends_with(bad) {
                    errs.push(field::invalid(
                        &path.child("path"),
                        value,
                        &format!("cannot end with '{bad}'"),
                    ));
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(field::invalid(
                    &path.child("path"),
                    value,
                    "must be an absolute path",
                ));
            }
        }
        other => errs.push(field::not_supported(
            &path.child("pathType"),
            other,
            &PATH_TYPES,
        )),
    }
    let backend = p.get("backend").cloned().unwrap_or(Value::Null);
    errs.extend(validate_backend(&backend, &path.child("backend")));
    errs
}

/// Upstream `ValidateIngressSpec` (networking.k8s.io/v1).
pub fn validate_ingress(ing: &Value) -> Vec<Cause> {
    let spec_path = FieldPath::new("spec");
    let mut errs = Vec::new();
    let rules = get_array(ing, &["spec", "rules"]);
    let default_backend = ing.pointer("/spec/defaultBackend").filter(|v| !v.is_null());
    if rules.is_empty() && default_backend.is_none() {
        errs.push(field::invalid(
            &spec_path,
            super::field::BadValue::Raw("[]networking.IngressRule(nil)".into()),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = default_backend {
        errs.extend(validate_backend(b, &spec_path.child("defaultBackend")));
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = spec_path.child("rules").index(i);
        let host = get_str(rule, &["host"]);
        if !host.is_empty() {
            errs.extend(validate_host(host, &rp.child("host")));
        }
        if let Some(http) = rule.get("http").filter(|v| !v.is_null()) {
            let hp = rp.child("http");
            let paths = get_array(http, &["paths"]);
            if paths.is_empty() {
                errs.push(field::required(&hp.child("paths"), ""));
            }
            for (j, p) in paths.iter().enumerate() {
                errs.extend(validate_http_path(p, &hp.child("paths").index(j)));
            }
        }
    }
    for (i, tls) in get_array(ing, &["spec", "tls"]).iter().enumerate() {
        for (j, host) in get_array(tls, &["hosts"]).iter().enumerate() {
            let host = host.as_str().unwrap_or_default();
            let hp = spec_path.child("tls").index(i).child("hosts").index(j);
            errs.extend(validate_host(host, &hp));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn valid_ingress_passes() {
        let ing = json!({"spec": {"rules": [{"host": "example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        assert!(
            validate_ingress(&ing).is_empty(),
            "{:?}",
            validate_ingress(&ing)
        );
    }

    #[test]
    fn path_type_is_required() {
        let ing = json!({"spec": {"rules": [{"http": {"paths": [
            {"path": "/", "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}});
        let errs = validate_ingress(&ing);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"
        );
    }

    #[test]
    fn backend_port_and_host_errors() {
        let ing = json!({"spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "x", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {}}}}]}}]}});
        let text: Vec<String> = validate_ingress(&ing)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            vec![
                "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
                "spec.rules[0].http.paths[0].path: Invalid value: \"x\": must be an absolute path",
                "spec.rules[0].http.paths[0].backend.service.port: Required value: port name or number is required",
            ]
        );
    }
}
