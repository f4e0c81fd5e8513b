//! API discovery: `/api`, `/apis`, `/apis/{g}`, the per-version resource
//! lists, and the aggregated (apidiscovery.k8s.io v2/v2beta1) documents kubectl
//! asks for first. Built from the resource catalog plus the virtual APIs.

use serde_json::{Value, json};

use crate::resources::{self, ResourceType};

use super::reviews::{self, VirtualResource};

/// A resource as discovery shows it.
struct Entry {
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    group: &'static str,
    version: &'static str,
}

impl From<&ResourceType> for Entry {
    fn from(r: &ResourceType) -> Self {
        Self {
            plural: r.plural,
            singular: r.singular,
            kind: r.kind,
            namespaced: r.namespaced,
            verbs: r.verbs,
            short_names: r.short_names,
            categories: r.categories,
            subresources: r.subresources,
            group: r.group,
            version: r.version,
        }
    }
}

impl From<&VirtualResource> for Entry {
    fn from(r: &VirtualResource) -> Self {
        Self {
            plural: r.plural,
            singular: r.singular,
            kind: r.kind,
            namespaced: r.namespaced,
            verbs: &["create"],
            short_names: &[],
            categories: &[],
            subresources: &[],
            group: r.group,
            version: r.version,
        }
    }
}

/// The response kind `(group, version, kind)` and verbs of a subresource.
fn subresource_info(
    e: &Entry,
    sub: &str,
) -> (
    (&'static str, &'static str, &'static str),
    &'static [&'static str],
) {
    const GPU: &[&str] = &["get", "patch", "update"];
    const CG: &[&str] = &["create", "get"];
    let own = (e.group, e.version, e.kind);
    match sub {
        "scale" => (("autoscaling", "v1", "Scale"), GPU),
        "binding" => (("", "v1", "Binding"), &["create"]),
        "eviction" => (("policy", "v1", "Eviction"), &["create"]),
        "log" => (own, &["get"]),
        "exec" => (("", "v1", "PodExecOptions"), CG),
        "attach" => (("", "v1", "PodAttachOptions"), CG),
        "portforward" => (("", "v1", "PodPortForwardOptions"), CG),
        "proxy" => {
            let kind = match e.kind {
                "Node" => "NodeProxyOptions",
                "Service" => "ServiceProxyOptions",
                _ => "PodProxyOptions",
            };
            (
                ("", "v1", kind),
                &["create", "delete", "get", "patch", "update"],
            )
        }
        "finalize" => (own, &["update"]),
        "token" => (("authentication.k8s.io", "v1", "TokenRequest"), &["create"]),
        _ => (own, GPU),
    }
}

fn entries(group: &str, version: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = resources::catalog()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(Entry::from)
        .collect();
    out.extend(
        reviews::VIRTUAL
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(Entry::from),
    );
    if (group, version) == (super::metrics_api::GROUP, super::metrics_api::VERSION) {
        out.extend(super::metrics_api::RESOURCES.iter().map(
            |&(plural, singular, kind, namespaced)| Entry {
                plural,
                singular,
                kind,
                namespaced,
                verbs: &["get", "list"],
                short_names: &[],
                categories: &[],
                subresources: &[],
                group: super::metrics_api::GROUP,
                version: super::metrics_api::VERSION,
            },
        ));
    }
    out
}

/// Every served `(group, version)`: the catalog's and the virtual APIs'.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs = resources::group_versions();
    gvs.push((super::metrics_api::GROUP, super::metrics_api::VERSION));
    for v in reviews::VIRTUAL {
        if !gvs.contains(&(v.group, v.version)) {
            gvs.push((v.group, v.version));
        }
    }
    gvs
}

fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v) in group_versions() {
        if g.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) => versions.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}

fn gv_string(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// `/api`: APIVersions.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn api_group(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": gv_string(name, v), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

/// `/apis`: APIGroupList.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups().iter().map(|(g, vs)| api_group(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`: APIGroup, if served.
pub fn group(name: &str) -> Option<Value> {
    let groups = groups();
    let (_, versions) = groups.iter().find(|(g, _)| *g == name)?;
    let mut g = api_group(name, versions);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `/api/v1`, `/apis/{g}/{v}`: APIResourceList, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !group_versions().contains(&(group, version)) {
        return None;
    }
    let mut resources = Vec::new();
    for e in entries(group, version) {
        let mut r = json!({
            "name": e.plural,
            "singularName": e.singular,
            "namespaced": e.namespaced,
            "kind": e.kind,
            "verbs": e.verbs,
        });
        if !e.short_names.is_empty() {
            r["shortNames"] = json!(e.short_names);
        }
        if !e.categories.is_empty() {
            r["categories"] = json!(e.categories);
        }
        resources.push(r);
        for sub in e.subresources {
            let ((g, v, k), verbs) = subresource_info(&e, sub);
            let mut r = json!({
                "name": format!("{}/{}", e.plural, sub),
                "singularName": "",
                "namespaced": e.namespaced,
                "kind": k,
                "verbs": verbs,
            });
            if (g, v) != (e.group, e.version) {
                r["group"] = json!(g);
                r["version"] = json!(v);
            }
            resources.push(r);
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv_string(group, version),
        "resources": resources,
    }))
}

fn aggregated_resources(group: &str, version: &str) -> Vec<Value> {
    entries(group, version)
        .iter()
        .map(|e| {
            let mut r = json!({
                "resource": e.plural,
                "responseKind": {"group": e.group, "version": e.version, "kind": e.kind},
                "scope": if e.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": e.singular,
                "verbs": e.verbs,
            });
            if !e.short_names.is_empty() {
                r["shortNames"] = json!(e.short_names);
            }
            if !e.categories.is_empty() {
                r["categories"] = json!(e.categories);
            }
            if !e.subresources.is_empty() {
                let subs: Vec<Value> = e
                    .subresources
                    .iter()
                    .map(|s| {
                        let ((g, v, k), verbs) = subresource_info(e, s);
                        json!({"subresource": s, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": verbs})
                    })
                    .collect();
                r["subresources"] = json!(subs);
            }
            r
        })
        .collect()
}

/// The aggregated discovery document of `/api` (`core == true`) or `/apis`,
/// in apidiscovery.k8s.io `version` (`v2` or `v2beta1`).
pub fn aggregated(core: bool, version: &str) -> Value {
    let items: Vec<Value> = if core {
        vec![json!({
            "metadata": {"creationTimestamp": null},
            "versions": [{"version": "v1", "resources": aggregated_resources("", "v1"), "freshness": "Current"}],
        })]
    } else {
        groups()
            .iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| json!({"version": v, "resources": aggregated_resources(g, v), "freshness": "Current"}))
                    .collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
            })
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// The Content-Type of an aggregated discovery answer.
pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_pods_with_subresources_and_short_names() {
        let list = resource_list("", "v1").unwrap();
        let res = list["resources"].as_array().unwrap();
        let pods = res.iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(res.iter().any(|r| r["name"] == "pods/status"));
        assert!(res.iter().any(|r| r["name"] == "bindings"));
        let scale = resource_list("apps", "v1").unwrap()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .cloned()
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
    }

    #[test]
    fn aggregated_lists_groups_with_preferred_version_first() {
        let doc = aggregated(false, "v2");
        let items = doc["items"].as_array().unwrap();
        let autoscaling = items
            .iter()
            .find(|i| i["metadata"]["name"] == "autoscaling")
            .unwrap();
        assert_eq!(autoscaling["versions"][0]["version"], "v2");
        assert!(
            items
                .iter()
                .any(|i| i["metadata"]["name"] == "authentication.k8s.io")
        );
        let core = aggregated(true, "v2");
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .cloned()
            .unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["responseKind"]["kind"], "Pod");
    }

    #[test]
    fn unknown_group_version_is_not_served() {
        assert!(resource_list("nope", "v1").is_none());
        assert!(group("nope").is_none());
    }
}
