//! Services: upstream's `SetDefaults_Service`, `ValidateService` and
//! `ValidateServiceUpdate` (immutable clusterIP), and carrying allocated
//! values across updates. Allocation itself is in `allocator`. No I/O.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::Cause;
use super::field::{self, BadValue, FieldPath};
use super::json::{default_str, default_value, for_each_obj, get_array, get_str, obj_mut};
use super::meta::{is_dns1123_label, is_valid_port_name, is_valid_port_num, validate_labels};

const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

/// The service `type`, `ClusterIP` when unset.
pub fn service_type(svc: &Value) -> &str {
    match get_str(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    }
}

/// Whether the service is headless (`clusterIP: None`).
pub fn is_headless(svc: &Value) -> bool {
    get_str(svc, &["spec", "clusterIP"]) == "None"
        || get_array(svc, &["spec", "clusterIPs"])
            .first()
            .and_then(Value::as_str)
            == Some("None")
}

/// `SetDefaults_Service` plus the IP family fields the REST layer fills.
pub fn default_service(svc: &mut Value) {
    let Some(spec) = svc.as_object_mut().and_then(|o| obj_mut(o, "spec")) else {
        return;
    };
    default_str(spec, "type", "ClusterIP");
    default_str(spec, "sessionAffinity", "None");
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("None") {
        spec.remove("sessionAffinityConfig");
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP")
        && let Some(cfg) =
            obj_mut(spec, "sessionAffinityConfig").and_then(|c| obj_mut(c, "clientIP"))
    {
        default_value(cfg, "timeoutSeconds", json!(10800));
    }
    for_each_obj(spec, "ports", |p| {
        default_str(p, "protocol", "TCP");
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset && let Some(port) = p.get("port").cloned() {
            p.insert("targetPort".into(), port);
        }
    });
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "NodePort" || ty == "LoadBalancer" {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if ty == "LoadBalancer" {
        default_value(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        default_str(spec, "internalTrafficPolicy", "Cluster");
        default_str(spec, "ipFamilyPolicy", "SingleStack");
        let no_families = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if no_families {
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
        }
    }
    // clusterIP and clusterIPs[0] mirror each other.
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ips_empty = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if !ip.is_empty() && ips_empty {
        spec.insert("clusterIPs".into(), json!([ip]));
    } else if ip.is_empty()
        && let Some(first) = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned()
    {
        spec.insert("clusterIP".into(), first);
    }
}

fn validate_port_num_or_name(v: Option<&Value>, path: &FieldPath) -> Vec<Cause> {
    match v {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            is_valid_port_num(n)
                .iter()
                .map(|m| field::invalid(path, n, m))
                .collect()
        }
        Some(Value::String(s)) => is_valid_port_name(s)
            .iter()
            .map(|m| field::invalid(path, s.as_str(), m))
            .collect(),
        _ => Vec::new(),
    }
}

/// Upstream `ValidateService` (spec part).
pub fn validate_service(svc: &Value) -> Vec<Cause> {
    let spec_path = FieldPath::new("spec");
    let mut errs = Vec::new();
    let ty = service_type(svc);
    let headless = is_headless(svc);
    if !SERVICE_TYPES.contains(&ty) {
        errs.push(field::not_supported(
            &spec_path.child("type"),
            ty,
            &SERVICE_TYPES,
        ));
    }
    let ports = get_array(svc, &["spec", "ports"]);
    if ty == "ExternalName" {
        let name = get_str(svc, &["spec", "externalName"]);
        if name.is_empty() {
            errs.push(field::required(&spec_path.child("externalName"), ""));
        } else {
            let trimmed = name.strip_suffix('.').unwrap_or(name);
            for m in super::meta::is_dns1123_subdomain(trimmed) {
                errs.push(field::invalid(&spec_path.child("externalName"), name, &m));
            }
        }
        let ip = get_str(svc, &["spec", "clusterIP"]);
        if !ip.is_empty() {
            errs.push(field::forbidden(
                &spec_path.child("clusterIPs"),
                "may not be set for ExternalName services",
            ));
        }
    } else if ports.is_empty() && !headless {
        errs.push(field::required(&spec_path.child("ports"), ""));
    }
    let require_name = ports.len() > 1;
    let mut names = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    let mut port_keys = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = spec_path.child("ports").index(i);
        let name = get_str(p, &["name"]);
        if require_name && name.is_empty() {
            errs.push(field::required(&pp.child("name"), ""));
        } else if !name.is_empty() {
            for m in is_dns1123_label(name) {
                errs.push(field::invalid(&pp.child("name"), name, &m));
            }
            if !names.insert(name) {
                errs.push(field::duplicate(&pp.child("name"), name));
            }
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        for m in is_valid_port_num(port) {
            errs.push(field::invalid(&pp.child("port"), port, &m));
        }
        let proto = get_str(p, &["protocol"]);
        if proto.is_empty() {
            errs.push(field::required(&pp.child("protocol"), ""));
        } else if !PROTOCOLS.contains(&proto) {
            errs.push(field::not_supported(
                &pp.child("protocol"),
                proto,
                &PROTOCOLS,
            ));
        }
        errs.extend(validate_port_num_or_name(
            p.get("targetPort"),
            &pp.child("targetPort"),
        ));
        if !port_keys.insert((port, proto)) {
            errs.push(field::duplicate(
                &pp,
                BadValue::Raw(format!(
                    "core.ServicePort{{Name:{}, Protocol:{}, Port:{port}}}",
                    field::go_quote(name),
                    field::go_quote(proto)
                )),
            ));
        }
        let node_port = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 {
            if ty == "ClusterIP" {
                errs.push(field::forbidden(
                    &pp.child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                for m in is_valid_port_num(node_port) {
                    errs.push(field::invalid(&pp.child("nodePort"), node_port, &m));
                }
                if !node_ports.insert((node_port, proto)) {
                    errs.push(field::duplicate(&pp.child("nodePort"), node_port));
                }
            }
        }
    }
    match get_str(svc, &["spec", "sessionAffinity"]) {
        "" | "None" | "ClientIP" => {}
        other => errs.push(field::not_supported(
            &spec_path.child("sessionAffinity"),
            other,
            &["ClientIP", "None"],
        )),
    }
    let etp = get_str(svc, &["spec", "externalTrafficPolicy"]);
    if !etp.is_empty() {
        if ty != "NodePort" && ty != "LoadBalancer" {
            errs.push(field::invalid(
                &spec_path.child("externalTrafficPolicy"),
                etp,
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        } else if etp != "Cluster" && etp != "Local" {
            errs.push(field::not_supported(
                &spec_path.child("externalTrafficPolicy"),
                etp,
                &["Cluster", "Local"],
            ));
        }
    }
    match get_str(svc, &["spec", "internalTrafficPolicy"]) {
        "" | "Cluster" | "Local" => {}
        other => errs.push(field::not_supported(
            &spec_path.child("internalTrafficPolicy"),
            other,
            &["Cluster", "Local"],
        )),
    }
    for (i, ip) in get_array(svc, &["spec", "clusterIPs"]).iter().enumerate() {
        let ip = ip.as_str().unwrap_or_default();
        if ip != "None" && ip.parse::<IpAddr>().is_err() {
            errs.push(field::invalid(
                &spec_path.child("clusterIPs").index(i),
                ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    for (i, fam) in get_array(svc, &["spec", "ipFamilies"]).iter().enumerate() {
        let fam = fam.as_str().unwrap_or_default();
        if fam != "IPv4" && fam != "IPv6" {
            errs.push(field::not_supported(
                &spec_path.child("ipFamilies").index(i),
                fam,
                &["IPv4", "IPv6"],
            ));
        }
    }
    match get_str(svc, &["spec", "ipFamilyPolicy"]) {
        "" | "SingleStack" | "PreferDualStack" | "RequireDualStack" => {}
        other => errs.push(field::not_supported(
            &spec_path.child("ipFamilyPolicy"),
            other,
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        )),
    }
    errs.extend(validate_labels(
        svc.pointer("/spec/selector"),
        &spec_path.child("selector"),
    ));
    errs
}

/// Upstream `ValidateServiceUpdate`: the new service as on create, and a
/// clusterIP that, once set, may not change (except to/from ExternalName).
pub fn validate_service_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = validate_service(new);
    let old_ips: Vec<&str> = get_array(old, &["spec", "clusterIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let new_ips: Vec<String> = get_array(new, &["spec", "clusterIPs"])
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let to_external = service_type(new) == "ExternalName" || service_type(old) == "ExternalName";
    if !to_external
        && let Some(old_first) = old_ips.first()
        && new_ips.first().map(String::as_str) != Some(old_first)
    {
        errs.push(field::invalid(
            &FieldPath::new("spec").child("clusterIPs").index(0),
            BadValue::StrList(new_ips),
            "may not change once set",
        ));
    }
    errs
}

fn needs_node_ports(ty: &str) -> bool {
    ty == "NodePort" || ty == "LoadBalancer"
}

/// Upstream `dropTypeDependentFields`: on a type change, clears what the
/// old type needed and the new one does not (clusterIPs, IP families,
/// nodePorts, traffic policy, load balancer fields and status), when the
/// update left them as they were.
pub fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let old_ty = service_type(old).to_string();
    let new_ty = service_type(new).to_string();
    let Some(spec) = new.pointer_mut("/spec").and_then(Value::as_object_mut) else {
        return;
    };
    let same = |spec: &serde_json::Map<String, Value>, key: &str| {
        spec.get(key) == old.pointer(&format!("/spec/{key}"))
    };
    if old_ty != "ExternalName" && new_ty == "ExternalName" {
        if same(spec, "clusterIP") && same(spec, "clusterIPs") {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        for key in ["ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"] {
            if same(spec, key) {
                spec.remove(key);
            }
        }
    }
    if needs_node_ports(&old_ty) && !needs_node_ports(&new_ty) {
        let old_ports = get_array(old, &["spec", "ports"]);
        let node_ports_same = spec
            .get("ports")
            .and_then(Value::as_array)
            .is_none_or(|ports| {
                ports.iter().enumerate().all(|(i, p)| {
                    let np = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
                    np == 0
                        || old_ports
                            .get(i)
                            .and_then(|o| o.get("nodePort"))
                            .and_then(Value::as_i64)
                            == Some(np)
                })
            });
        if node_ports_same {
            for_each_obj(spec, "ports", |p| {
                p.remove("nodePort");
            });
        }
        for key in ["healthCheckNodePort", "externalTrafficPolicy"] {
            if same(spec, key) {
                spec.remove(key);
            }
        }
    }
    if old_ty == "LoadBalancer" && new_ty != "LoadBalancer" {
        for key in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
            if same(spec, key) {
                spec.remove(key);
            }
        }
    }
    if new_ty != "LoadBalancer"
        && let Some(status) = new.get_mut("status").and_then(Value::as_object_mut)
    {
        status.insert("loadBalancer".into(), json!({}));
    }
}

/// Carries what the server allocated (clusterIP(s), nodePorts,
/// healthCheckNodePort) from the stored service into an update that left
/// them out, as upstream's `patchAllocatedValues` does.
pub fn carry_allocated_values(new: &mut Value, old: &Value) {
    let same_family = service_type(new) != "ExternalName" && service_type(old) != "ExternalName";
    let Some(spec) = new.as_object_mut().and_then(|o| obj_mut(o, "spec")) else {
        return;
    };
    if same_family {
        let ip_empty = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
        if ip_empty && let Some(ip) = old.pointer("/spec/clusterIP") {
            spec.insert("clusterIP".into(), ip.clone());
        }
        let ips_empty = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if ips_empty && let Some(ips) = old.pointer("/spec/clusterIPs") {
            spec.insert("clusterIPs".into(), ips.clone());
        }
    }
    let needs_node_ports = matches!(
        spec.get("type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    );
    if needs_node_ports {
        let old_ports = get_array(old, &["spec", "ports"]).to_vec();
        for_each_obj(spec, "ports", |p| {
            let unset = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0;
            if !unset {
                return;
            }
            let port = p.get("port").cloned();
            let proto = p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string();
            let matching = old_ports.iter().find(|o| {
                o.get("port") == port.as_ref()
                    && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == proto
            });
            if let Some(np) = matching
                .and_then(|o| o.get("nodePort"))
                .filter(|n| !n.is_null())
            {
                p.insert("nodePort".into(), np.clone());
            }
        });
        let hc_unset = spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0;
        if hc_unset && let Some(hc) = old.pointer("/spec/healthCheckNodePort") {
            spec.insert("healthCheckNodePort".into(), hc.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn service_defaults() {
        let mut s = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        default_service(&mut s);
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert!(validate_service(&s).is_empty());
        let mut np =
            svc(json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}));
        default_service(&mut np);
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(np["spec"]["ports"][0]["targetPort"], "http");
    }

    #[test]
    fn service_port_errors() {
        let mut s =
            svc(json!({"type": "Fancy", "ports": [{"port": 0, "protocol": "ICMP"}, {"port": 81}]}));
        default_service(&mut s);
        let text: Vec<String> = validate_service(&s)
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert!(text.contains(&"spec.type: Unsupported value: \"Fancy\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".to_string()), "{text:#?}");
        assert!(text.contains(&"spec.ports[0].name: Required value".to_string()));
        assert!(
            text.contains(
                &"spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
                    .to_string()
            )
        );
        assert!(text.contains(&"spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".to_string()));
    }

    #[test]
    fn ports_required_unless_headless() {
        let mut s = svc(json!({"selector": {"a": "b"}}));
        default_service(&mut s);
        assert_eq!(validate_service(&s)[0].field, "spec.ports");
        let mut h = svc(json!({"clusterIP": "None"}));
        default_service(&mut h);
        assert!(validate_service(&h).is_empty());
        let mut e = svc(json!({"type": "ExternalName", "externalName": "example.com"}));
        default_service(&mut e);
        assert!(
            validate_service(&e).is_empty(),
            "{:?}",
            validate_service(&e)
        );
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let mut old = svc(json!({"clusterIP": "10.43.0.5", "ports": [{"port": 80}]}));
        default_service(&mut old);
        let mut new = svc(json!({"clusterIP": "10.43.0.6", "ports": [{"port": 80}]}));
        default_service(&mut new);
        let errs = validate_service_update(&new, &old);
        assert_eq!(errs[0].field, "spec.clusterIPs[0]");
        assert_eq!(
            errs[0].message,
            "Invalid value: []string{\"10.43.0.6\"}: may not change once set"
        );
        let mut same = svc(json!({"ports": [{"port": 80}]}));
        carry_allocated_values(&mut same, &old);
        default_service(&mut same);
        assert_eq!(same["spec"]["clusterIP"], "10.43.0.5");
        assert!(validate_service_update(&same, &old).is_empty());
    }

    #[test]
    fn type_change_drops_node_ports() {
        let mut old = svc(
            json!({"type": "NodePort", "clusterIP": "10.43.0.7", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        default_service(&mut old);
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        drop_type_dependent_fields(&mut new, &old);
        default_service(&mut new);
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        assert!(new["spec"].get("externalTrafficPolicy").is_none());
        assert!(
            validate_service_update(&new, &old).is_empty(),
            "{:?}",
            validate_service_update(&new, &old)
        );
    }

    #[test]
    fn node_port_forbidden_on_cluster_ip() {
        let mut s = svc(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        default_service(&mut s);
        let errs = validate_service(&s);
        assert_eq!(
            errs[0].message,
            "Forbidden: may not be used when `type` is 'ClusterIP'"
        );
    }
}
