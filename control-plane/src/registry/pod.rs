//! Pods and pod templates: upstream's `SetDefaults_Pod*`/`SetDefaults_Container`
//! and `ValidatePodSpec`/`ValidatePodUpdate`. Every workload's template goes
//! through the same spec functions. No I/O.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::Cause;
use super::field::{self, BadValue, FieldPath};
use super::json::{
    default_nonzero, default_str, default_value, existing_obj_mut, for_each_obj, get_array, get_str,
};
use super::meta::{
    inclusive_range_error, is_dns1123_label, is_dns1123_subdomain, is_valid_port_name,
    is_valid_port_num, validate_annotations, validate_labels,
};
use agent::quantity::ParsedQuantity;

const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];
const SUPPORTED_PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

/// Upstream's `ParseImageName` tag: `latest` when neither a tag nor a digest
/// is given.
fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag,
        None if digest => "",
        None => "latest",
    }
}

fn default_http_get(handler: &mut Map<String, Value>) {
    if let Some(http) = existing_obj_mut(handler, "httpGet") {
        default_str(http, "path", "/");
        default_str(http, "scheme", "HTTP");
    }
}

fn default_probe(probe: &mut Map<String, Value>) {
    default_nonzero(probe, "timeoutSeconds", 1);
    default_nonzero(probe, "periodSeconds", 10);
    default_nonzero(probe, "successThreshold", 1);
    default_nonzero(probe, "failureThreshold", 3);
    default_http_get(probe);
    if let Some(grpc) = existing_obj_mut(probe, "grpc") {
        default_value(grpc, "service", json!(""));
    }
}

fn default_field_ref(item: &mut Map<String, Value>) {
    if let Some(fr) = existing_obj_mut(item, "fieldRef") {
        default_str(fr, "apiVersion", "v1");
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_tag(image) == "latest" {
        "Always"
    } else {
        "IfNotPresent"
    };
    default_str(c, "imagePullPolicy", policy);
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    default_value(c, "resources", json!({}));
    for_each_obj(c, "ports", |p| default_str(p, "protocol", "TCP"));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing_obj_mut(c, probe) {
            default_probe(p);
        }
    }
    if let Some(lc) = existing_obj_mut(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = existing_obj_mut(lc, hook) {
                default_http_get(h);
            }
        }
    }
    for_each_obj(c, "env", |e| {
        if let Some(vf) = existing_obj_mut(e, "valueFrom") {
            default_field_ref(vf);
        }
    });
}

fn default_volume(v: &mut Map<String, Value>) {
    if v.keys().all(|k| k == "name") {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(s) = existing_obj_mut(v, source) {
            default_value(s, "defaultMode", json!(420));
            for_each_obj(s, "items", default_field_ref);
            for_each_obj(s, "sources", |src| {
                if let Some(t) = existing_obj_mut(src, "serviceAccountToken") {
                    default_value(t, "expirationSeconds", json!(3600));
                }
                if let Some(d) = existing_obj_mut(src, "downwardAPI") {
                    for_each_obj(d, "items", default_field_ref);
                }
            });
        }
    }
    if let Some(hp) = existing_obj_mut(v, "hostPath") {
        default_value(hp, "type", json!(""));
    }
    if let Some(pvc) = existing_obj_mut(v, "ephemeral")
        .and_then(|e| existing_obj_mut(e, "volumeClaimTemplate"))
        .and_then(|t| existing_obj_mut(t, "spec"))
    {
        default_str(pvc, "volumeMode", "Filesystem");
    }
}

/// `SetDefaults_PodSpec` and what it reaches: containers, probes, volumes.
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_value(spec, "securityContext", json!({}));
    default_value(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");
    // v1 conversion keeps the deprecated serviceAccount equal to serviceAccountName.
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let deprecated = spec
        .get("serviceAccount")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if sa.is_empty() && !deprecated.is_empty() {
        spec.insert("serviceAccountName".into(), json!(deprecated));
    } else if !sa.is_empty() {
        spec.insert("serviceAccount".into(), json!(sa));
    }
    for list in CONTAINER_LISTS {
        for_each_obj(spec, list, default_container);
    }
    for_each_obj(spec, "volumes", default_volume);
}

/// Defaults a `PodTemplateSpec` (`{metadata, spec}`) of a workload.
pub fn default_template(template: &mut Map<String, Value>) {
    if let Some(spec) = super::json::obj_mut(template, "spec") {
        default_pod_spec(spec);
    }
}

fn has_quantities(c: &Value, kind: &str) -> bool {
    c.get("resources")
        .and_then(|r| r.get(kind))
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
}

/// Upstream `GetPodQOS`, simplified to what the stored JSON allows without
/// quantity arithmetic: equal cpu and memory requests and limits on every
/// container make Guaranteed.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| get_array(spec, &[l]))
        .collect();
    if containers
        .iter()
        .all(|c| !has_quantities(c, "requests") && !has_quantities(c, "limits"))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = c.pointer(&format!("/resources/limits/{r}"));
            let request = c.pointer(&format!("/resources/requests/{r}"));
            limit.is_some() && limit == request
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// `SetDefaults_Pod` plus what upstream admission and `PrepareForCreate`
/// add to every pod (service account, priority, default tolerations,
/// Pending status).
pub fn default_pod(pod: &mut Value) {
    let Some(obj) = pod.as_object_mut() else {
        return;
    };
    let Some(spec) = super::json::obj_mut(obj, "spec") else {
        return;
    };
    // Requests default to limits, per resource.
    for list in ["initContainers", "containers"] {
        for_each_obj(spec, list, |c| {
            let limits = c
                .get("resources")
                .and_then(|r| r.get("limits"))
                .and_then(Value::as_object)
                .cloned();
            if let Some(limits) = limits
                && let Some(res) = super::json::obj_mut(c, "resources")
                && let Some(req) = super::json::obj_mut(res, "requests")
            {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        });
    }
    // InPlacePodVerticalScaling: resizable resources default to NotRequired.
    for_each_obj(spec, "containers", |c| {
        let requested: Vec<&str> = ["cpu", "memory"]
            .into_iter()
            .filter(|r| {
                c.get("resources")
                    .and_then(|res| res.get("requests"))
                    .and_then(|q| q.get(*r))
                    .is_some()
            })
            .collect();
        if requested.is_empty() {
            return;
        }
        let policies = c.entry("resizePolicy").or_insert_with(|| json!([]));
        if let Some(list) = policies.as_array_mut() {
            for r in requested {
                if !list
                    .iter()
                    .any(|p| p.get("resourceName").and_then(Value::as_str) == Some(r))
                {
                    list.push(json!({"resourceName": r, "restartPolicy": "NotRequired"}));
                }
            }
        }
    });
    default_pod_spec(spec);
    default_value(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for list in ["initContainers", "containers"] {
            for_each_obj(spec, list, |c| {
                for_each_obj(c, "ports", |p| {
                    let cp = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                    default_nonzero(p, "hostPort", cp);
                });
            });
        }
    }
    default_str(spec, "preemptionPolicy", "PreemptLowerPriority");
    default_value(spec, "priority", json!(0));
    default_str(spec, "serviceAccountName", "default");
    default_str(spec, "serviceAccount", "default");
    // DefaultTolerationSeconds admission.
    let tolerations = spec
        .entry("tolerations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if tolerations.is_null() {
        *tolerations = Value::Array(Vec::new());
    }
    if let Some(list) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let tolerated = list.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str).unwrap_or("");
                let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                (k == key || (k.is_empty() && op == "Exists"))
                    && (effect.is_empty() || effect == "NoExecute")
            });
            if !tolerated {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    let qos = qos_class(&Value::Object(spec.clone()));
    if let Some(status) = super::json::obj_mut(obj, "status") {
        default_str(status, "phase", "Pending");
        default_str(status, "qosClass", qos);
    }
}

/// What a template's caller restricts beyond `ValidatePodSpec`.
#[derive(Debug, Clone, Copy)]
pub struct SpecRules<'a> {
    /// The restart policies allowed, e.g. `["Always"]` for ReplicaSets.
    pub restart_policies: Option<&'a [&'a str]>,
    /// Who forbids `activeDeadlineSeconds` (`ReplicaSet`, `StatefulSet`...).
    pub forbid_active_deadline: Option<&'a str>,
}

impl SpecRules<'_> {
    /// No extra rule (a Pod, a PodTemplate).
    pub const POD: SpecRules<'static> = SpecRules {
        restart_policies: None,
        forbid_active_deadline: None,
    };
}

fn validate_restart_policy(spec: &Value, path: &FieldPath) -> Vec<Cause> {
    let p = path.child("restartPolicy");
    match get_str(spec, &["restartPolicy"]) {
        "Always" | "OnFailure" | "Never" => Vec::new(),
        "" => vec![field::required(&p, "")],
        other => vec![field::not_supported(
            &p,
            other,
            &["Always", "OnFailure", "Never"],
        )],
    }
}

fn validate_volumes(spec: &Value, path: &FieldPath) -> (Vec<Cause>, BTreeSet<String>) {
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, v) in get_array(spec, &["volumes"]).iter().enumerate() {
        let vp = path.child("volumes").index(i);
        let name = get_str(v, &["name"]);
        if name.is_empty() {
            errs.push(field::required(&vp.child("name"), ""));
        } else {
            for msg in is_dns1123_label(name) {
                errs.push(field::invalid(&vp.child("name"), name, &msg));
            }
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            errs.push(field::duplicate(&vp.child("name"), name));
        }
        let sources: Vec<&String> = v
            .as_object()
            .map(|m| m.keys().filter(|k| k.as_str() != "name").collect())
            .unwrap_or_default();
        if sources.is_empty() {
            errs.push(field::required(&vp, "must specify a volume type"));
        } else if sources.len() > 1 {
            errs.push(field::forbidden(
                &vp.child(sources[1]),
                "may not specify more than 1 volume type",
            ));
        }
        if let Some(cm) = v.get("configMap") {
            let n = get_str(cm, &["name"]);
            if n.is_empty() {
                errs.push(field::required(&vp.child("configMap").child("name"), ""));
            }
        }
        if let Some(s) = v.get("secret") {
            let n = get_str(s, &["secretName"]);
            if n.is_empty() {
                errs.push(field::required(&vp.child("secret").child("secretName"), ""));
            }
        }
        if let Some(pvc) = v.get("persistentVolumeClaim")
            && get_str(pvc, &["claimName"]).is_empty()
        {
            errs.push(field::required(
                &vp.child("persistentVolumeClaim").child("claimName"),
                "",
            ));
        }
        if let Some(hp) = v.get("hostPath") {
            let p = get_str(hp, &["path"]);
            if p.is_empty() {
                errs.push(field::required(&vp.child("hostPath").child("path"), ""));
            }
        }
    }
    (errs, names)
}

fn validate_ports(c: &Value, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, p) in get_array(c, &["ports"]).iter().enumerate() {
        let pp = path.child("ports").index(i);
        let name = get_str(p, &["name"]);
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(field::invalid(&pp.child("name"), name, &m));
                }
            } else if !names.insert(name) {
                errs.push(field::duplicate(&pp.child("name"), name));
            }
        }
        match p.get("containerPort").and_then(Value::as_i64).unwrap_or(0) {
            0 => errs.push(field::required(&pp.child("containerPort"), "")),
            n => {
                for m in is_valid_port_num(n) {
                    errs.push(field::invalid(&pp.child("containerPort"), n, &m));
                }
            }
        }
        let host = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
        if host != 0 {
            for m in is_valid_port_num(host) {
                errs.push(field::invalid(&pp.child("hostPort"), host, &m));
            }
        }
        match get_str(p, &["protocol"]) {
            "" => errs.push(field::required(&pp.child("protocol"), "")),
            proto if !SUPPORTED_PROTOCOLS.contains(&proto) => {
                errs.push(field::not_supported(
                    &pp.child("protocol"),
                    proto,
                    &SUPPORTED_PROTOCOLS,
                ));
            }
            _ => {}
        }
    }
    errs
}

fn validate_env(c: &Value, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, e) in get_array(c, &["env"]).iter().enumerate() {
        let ep = path.child("env").index(i).child("name");
        let name = get_str(e, &["name"]);
        if name.is_empty() {
            errs.push(field::required(&ep, ""));
        } else if name.contains('=') || !name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            errs.push(field::invalid(
                &ep,
                name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
    }
    errs
}

fn validate_probe(probe: &Value, path: &FieldPath, liveness_like: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    let handlers = ["exec", "httpGet", "tcpSocket", "grpc"];
    let count = handlers.iter().filter(|h| probe.get(**h).is_some()).count();
    if count == 0 {
        errs.push(field::required(path, "must specify a handler type"));
    } else if count > 1 {
        errs.push(field::forbidden(
            path,
            "may not specify more than 1 handler type",
        ));
    }
    if liveness_like
        && let Some(st) = probe.get("successThreshold").and_then(Value::as_i64)
        && st != 1
    {
        errs.push(field::invalid(
            &path.child("successThreshold"),
            st,
            "must be 1",
        ));
    }
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        if let Some(n) = probe.get(key).and_then(Value::as_i64)
            && n < 0
        {
            errs.push(field::invalid(
                &path.child(key),
                n,
                "must be greater than or equal to 0",
            ));
        }
    }
    errs
}

fn validate_resources(c: &Value, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    let res = path.child("resources");
    let empty = Map::new();
    let limits = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let requests = c
        .pointer("/resources/requests")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut check =
        |kind: &str, map: &Map<String, Value>| -> Vec<(String, ParsedQuantity, String)> {
            let mut out = Vec::new();
            for (name, q) in map {
                let p = res.child(kind).key(name);
                let raw = match q {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match ParsedQuantity::parse(&raw) {
                    Err(err) => errs.push(field::invalid(&p, raw.as_str(), &err.to_string())),
                    Ok(v) if v.is_negative() => errs.push(field::invalid(
                        &p,
                        raw.as_str(),
                        "must be greater than or equal to 0",
                    )),
                    Ok(v) => out.push((name.clone(), v, raw)),
                }
            }
            out
        };
    let limits = check("limits", limits);
    let requests = check("requests", requests);
    for (name, req, raw) in &requests {
        if let Some((_, lim, lim_raw)) = limits.iter().find(|(n, _, _)| n == name) {
            // Upstream `IsOvercommitAllowed`: native resources but hugepages.
            let native = !name.contains('/') || name.contains("kubernetes.io/");
            let overcommit = native && !name.starts_with("hugepages-");
            if !overcommit && req != lim {
                errs.push(field::invalid(
                    &res.child("requests"),
                    raw.as_str(),
                    &format!("must be equal to {name} limit of {lim_raw}"),
                ));
            } else if req > lim {
                errs.push(field::invalid(
                    &res.child("requests"),
                    raw.as_str(),
                    &format!("must be less than or equal to {name} limit of {lim_raw}"),
                ));
            }
        }
    }
    errs
}

fn validate_container(
    c: &Value,
    path: &FieldPath,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    regular: bool,
) -> Vec<Cause> {
    let mut errs = Vec::new();
    let name = get_str(c, &["name"]);
    if name.is_empty() {
        errs.push(field::required(&path.child("name"), ""));
    } else {
        for m in is_dns1123_label(name) {
            errs.push(field::invalid(&path.child("name"), name, &m));
        }
        if !names.insert(name.to_string()) {
            errs.push(field::duplicate(&path.child("name"), name));
        }
    }
    let image = get_str(c, &["image"]);
    if image.is_empty() {
        errs.push(field::required(&path.child("image"), ""));
    } else if image.trim() != image {
        errs.push(field::invalid(
            &path.child("image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    match get_str(c, &["imagePullPolicy"]) {
        "" | "Always" | "IfNotPresent" | "Never" => {}
        other => errs.push(field::not_supported(
            &path.child("imagePullPolicy"),
            other,
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    match get_str(c, &["terminationMessagePolicy"]) {
        "" | "File" | "FallbackToLogsOnError" => {}
        other => errs.push(field::not_supported(
            &path.child("terminationMessagePolicy"),
            other,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    errs.extend(validate_ports(c, path));
    errs.extend(validate_env(c, path));
    errs.extend(validate_resources(c, path));
    let mut mount_paths = BTreeSet::new();
    for (i, m) in get_array(c, &["volumeMounts"]).iter().enumerate() {
        let mp = path.child("volumeMounts").index(i);
        let vname = get_str(m, &["name"]);
        if vname.is_empty() {
            errs.push(field::required(&mp.child("name"), ""));
        }
        if !volumes.contains(vname) {
            errs.push(field::not_found(&mp.child("name"), vname));
        }
        let mount_path = get_str(m, &["mountPath"]);
        if mount_path.is_empty() {
            errs.push(field::required(&mp.child("mountPath"), ""));
        } else if !mount_paths.insert(mount_path) {
            errs.push(field::invalid(
                &mp.child("mountPath"),
                mount_path,
                "must be unique",
            ));
        }
    }
    if regular {
        for (probe, liveness_like) in [
            ("livenessProbe", true),
            ("readinessProbe", false),
            ("startupProbe", true),
        ] {
            if let Some(p) = c.get(probe).filter(|p| !p.is_null()) {
                errs.extend(validate_probe(p, &path.child(probe), liveness_like));
            }
        }
    }
    errs
}

/// Upstream `ValidatePodSpec` over a JSON pod spec at `path`.
pub fn validate_pod_spec(spec: &Value, path: &FieldPath, rules: SpecRules<'_>) -> Vec<Cause> {
    let mut errs = Vec::new();
    let (verrs, volumes) = validate_volumes(spec, path);
    errs.extend(verrs);
    let mut names = BTreeSet::new();
    for (i, c) in get_array(spec, &["initContainers"]).iter().enumerate() {
        let cp = path.child("initContainers").index(i);
        errs.extend(validate_container(c, &cp, &volumes, &mut names, false));
    }
    let containers = get_array(spec, &["containers"]);
    if containers.is_empty() {
        errs.push(field::required(&path.child("containers"), ""));
    }
    for (i, c) in containers.iter().enumerate() {
        let cp = path.child("containers").index(i);
        errs.extend(validate_container(c, &cp, &volumes, &mut names, true));
    }
    errs.extend(validate_restart_policy(spec, path));
    if let Some(allowed) = rules.restart_policies {
        let rp = get_str(spec, &["restartPolicy"]);
        if !allowed.contains(&rp) {
            errs.push(field::not_supported(
                &path.child("restartPolicy"),
                rp,
                allowed,
            ));
        }
    }
    match get_str(spec, &["dnsPolicy"]) {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(field::required(&path.child("dnsPolicy"), "")),
        other => errs.push(field::not_supported(
            &path.child("dnsPolicy"),
            other,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    if let Some(ads) = spec.get("activeDeadlineSeconds").filter(|v| !v.is_null()) {
        let n = ads.as_i64().unwrap_or(0);
        if let Some(who) = rules.forbid_active_deadline {
            errs.push(field::forbidden(
                &path.child("activeDeadlineSeconds"),
                &format!("activeDeadlineSeconds in {who} is not Supported"),
            ));
        } else if !(1..=i64::from(i32::MAX)).contains(&n) {
            errs.push(field::invalid(
                &path.child("activeDeadlineSeconds"),
                n,
                &inclusive_range_error(1, i64::from(i32::MAX)),
            ));
        }
    }
    errs.extend(validate_labels(
        spec.get("nodeSelector"),
        &path.child("nodeSelector"),
    ));
    let sa = get_str(spec, &["serviceAccountName"]);
    if !sa.is_empty() {
        for m in is_dns1123_subdomain(sa) {
            errs.push(field::invalid(&path.child("serviceAccountName"), sa, &m));
        }
    }
    for key in ["hostname", "subdomain"] {
        let v = get_str(spec, &[key]);
        if !v.is_empty() {
            for m in is_dns1123_label(v) {
                errs.push(field::invalid(&path.child(key), v, &m));
            }
        }
    }
    for (i, t) in get_array(spec, &["tolerations"]).iter().enumerate() {
        let tp = path.child("tolerations").index(i);
        match get_str(t, &["operator"]) {
            "" | "Equal" | "Exists" => {}
            other => errs.push(field::not_supported(
                &tp.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        match get_str(t, &["effect"]) {
            "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errs.push(field::not_supported(
                &tp.child("effect"),
                other,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            )),
        }
    }
    errs
}

/// Validates the labels and annotations of a `PodTemplateSpec`.
pub fn validate_template_metadata(template: &Value, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    let meta = path.child("metadata");
    errs.extend(validate_labels(
        template.pointer("/metadata/labels"),
        &meta.child("labels"),
    ));
    errs.extend(validate_annotations(
        template.pointer("/metadata/annotations"),
        &meta.child("annotations"),
    ));
    errs
}

/// Validates a `PodTemplateSpec` at `path` (`spec.template`).
pub fn validate_template(template: &Value, path: &FieldPath, rules: SpecRules<'_>) -> Vec<Cause> {
    let mut errs = validate_template_metadata(template, path);
    let spec = template.get("spec").cloned().unwrap_or(Value::Null);
    errs.extend(validate_pod_spec(&spec, &path.child("spec"), rules));
    errs
}

/// Validates a Pod on create.
pub fn validate_pod(pod: &Value) -> Vec<Cause> {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    validate_pod_spec(&spec, &FieldPath::new("spec"), SpecRules::POD)
}

/// Removes nulls, empty lists and empty maps, as upstream's semantic
/// equality treats nil and empty alike.
pub fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !is_empty_value(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

const POD_UPDATE_MESSAGE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Upstream `ValidatePodUpdate`: the spec is immutable except images,
/// `activeDeadlineSeconds` (set or lowered), added tolerations and a grace
/// period fix-up.
pub fn validate_pod_update(new: &Value, old: &Value) -> Vec<Cause> {
    let spec_path = FieldPath::new("spec");
    let mut errs = validate_pod(new);
    let new_spec = new.get("spec").cloned().unwrap_or(Value::Null);
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let new_ads = new_spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64);
    let old_ads = old_spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64);
    match (new_ads, old_ads) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(field::invalid(
                &spec_path.child("activeDeadlineSeconds"),
                n,
                &inclusive_range_error(0, i64::from(i32::MAX)),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(field::invalid(
                &spec_path.child("activeDeadlineSeconds"),
                n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => errs.push(field::invalid(
            &spec_path.child("activeDeadlineSeconds"),
            BadValue::Raw("null".into()),
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    let mut munged = new_spec.clone();
    if let Some(m) = munged.as_object_mut() {
        // Images may change: take the old containers' images as the new ones.
        for list in ["containers", "initContainers"] {
            let old_list = get_array(&old_spec, &[list]);
            if let Some(items) = m.get_mut(list).and_then(Value::as_array_mut) {
                for (i, c) in items.iter_mut().enumerate() {
                    if let (Some(c), Some(o)) = (c.as_object_mut(), old_list.get(i))
                        && let Some(img) = o.get("image")
                    {
                        c.insert("image".into(), img.clone());
                    }
                }
            }
        }
        match old_spec.get("activeDeadlineSeconds") {
            Some(v) => m.insert("activeDeadlineSeconds".into(), v.clone()),
            None => m.remove("activeDeadlineSeconds"),
        };
        // Tolerations may only be added.
        let old_tol = get_array(&old_spec, &["tolerations"]);
        let new_tol = get_array(&new_spec, &["tolerations"]);
        if old_tol.iter().all(|t| new_tol.contains(t)) {
            match old_spec.get("tolerations") {
                Some(v) => m.insert("tolerations".into(), v.clone()),
                None => m.remove("tolerations"),
            };
        }
        let old_grace = old_spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        let new_grace = new_spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        if old_grace.is_some_and(|g| g < 0) && new_grace == Some(1) {
            m.insert("terminationGracePeriodSeconds".into(), json!(old_grace));
        }
        // The scheduler binds through the binding subresource; a PUT that
        // leaves nodeName out keeps the old one.
        if !m.contains_key("nodeName")
            && let Some(n) = old_spec.get("nodeName")
        {
            m.insert("nodeName".into(), n.clone());
        }
    }
    if normalized(&munged) != normalized(&old_spec) {
        errs.push(field::forbidden(
            &spec_path,
            &format!("{POD_UPDATE_MESSAGE}\n{}", spec_diff(&old_spec, &munged)),
        ));
    }
    errs
}

/// A short description of what differs between two specs: the top-level
/// fields that changed, as `-`/`+` lines (upstream prints a Go cmp diff).
fn spec_diff(old: &Value, new: &Value) -> String {
    let old = normalized(old);
    let new = normalized(new);
    let empty = Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let mut out = String::from("  core.PodSpec{\n");
    for k in keys {
        let (a, b) = (o.get(k), n.get(k));
        if a != b {
            if let Some(a) = a {
                out.push_str(&format!("- \t{k}: {a},\n"));
            }
            if let Some(b) = b {
                out.push_str(&format!("+ \t{k}: {b},\n"));
            }
        }
    }
    out.push_str("  }\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(image_tag("nginx:1.25"), "1.25");
        assert_eq!(image_tag("localhost:5000/app"), "latest");
        assert_eq!(image_tag("localhost:5000/app:v1"), "v1");
        assert_eq!(image_tag("app@sha256:abc"), "");
    }

    #[test]
    fn bare_pod_gets_upstream_defaults() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
                "livenessProbe": {"httpGet": {"port": 80}}}],
                "volumes": [{"name": "v"}, {"name": "cm", "configMap": {"name": "x"}}]}});
        default_pod(&mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        let probe = &c["livenessProbe"];
        assert_eq!(probe["timeoutSeconds"], 1);
        assert_eq!(probe["periodSeconds"], 10);
        assert_eq!(probe["successThreshold"], 1);
        assert_eq!(probe["failureThreshold"], 3);
        assert_eq!(probe["httpGet"]["scheme"], "HTTP");
        assert_eq!(probe["httpGet"]["path"], "/");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
        assert!(validate_pod(&pod).is_empty(), "{:?}", validate_pod(&pod));
    }

    #[test]
    fn limits_default_requests_and_make_guaranteed() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "i:1",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        default_pod(&mut pod);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["status"]["qosClass"], "Guaranteed");
    }

    #[test]
    fn container_errors_are_upstream() {
        let pod = json!({"spec": {"restartPolicy": "Sometimes", "dnsPolicy": "ClusterFirst",
            "containers": [
                {"name": "c", "image": "", "ports": [{"containerPort": 70000, "protocol": "TCP", "name": "80"}],
                 "volumeMounts": [{"name": "missing", "mountPath": "/x"}]},
                {"name": "c", "image": "i"},
                {"name": "Bad_Name", "image": "i"}]}});
        let errs = validate_pod(&pod);
        let text: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert!(
            text.contains(&"spec.containers[0].image: Required value".to_string()),
            "{text:#?}"
        );
        assert!(text.contains(&"spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string()));
        assert!(text.contains(&"spec.containers[0].ports[0].name: Invalid value: \"80\": must contain at least one letter (a-z)".to_string()));
        assert!(text.contains(
            &"spec.containers[0].volumeMounts[0].name: Not found: \"missing\"".to_string()
        ));
        assert!(text.contains(&"spec.containers[1].name: Duplicate value: \"c\"".to_string()));
        assert!(text.iter().any(|t| t.starts_with(
            "spec.containers[2].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"
        )));
        assert!(text.contains(&"spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".to_string()));
    }

    #[test]
    fn requests_may_not_exceed_limits() {
        let pod = json!({"spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "containers": [{"name": "c", "image": "i", "resources": {
                "limits": {"cpu": "500m", "memory": "1Gi"},
                "requests": {"cpu": "1", "memory": "512Mi"}}}]}});
        let errs = validate_pod(&pod);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].to_string(),
            "spec.containers[0].resources.requests: Invalid value: \"1\": must be less than or equal to cpu limit of 500m"
        );
        let bad = json!({"spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "lots"}}}]}});
        assert_eq!(
            validate_pod(&bad)[0].field,
            "spec.containers[0].resources.limits[cpu]"
        );
    }

    #[test]
    fn pod_without_containers_is_invalid() {
        let errs = validate_pod(
            &json!({"spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}}),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.containers");
        assert_eq!(errs[0].message, "Required value");
    }

    #[test]
    fn duplicate_volume_names() {
        let pod = json!({"spec": {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}});
        let errs = validate_pod(&pod);
        assert_eq!(errs[0].field, "spec.volumes[1].name");
        assert_eq!(errs[0].message, "Duplicate value: \"v\"");
    }

    fn running_pod() -> Value {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx:1", "ports": [{"containerPort": 80}]}]}});
        default_pod(&mut pod);
        pod
    }

    #[test]
    fn pod_update_allows_images_and_tolerations() {
        let old = running_pod();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "k", "operator": "Exists"}));
        new["spec"]["activeDeadlineSeconds"] = json!(100);
        assert!(validate_pod_update(&new, &old).is_empty());
    }

    #[test]
    fn pod_update_forbids_other_changes() {
        let old = running_pod();
        let mut new = old.clone();
        new["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(81);
        let errs = validate_pod_update(&new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert_eq!(errs[0].reason, "FieldValueForbidden");
        assert!(errs[0].message.starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"), "{}", errs[0].message);
        let mut new = old.clone();
        new["spec"]["tolerations"] = json!([]);
        assert_eq!(validate_pod_update(&new, &old).len(), 1);
    }
}
