//! Paths and operations of the OpenAPI documents: one set of REST
//! operations per served resource, rendered for Swagger 2.0 or OpenAPI 3.0.

use serde_json::{Map, Value, json};

use super::schemas::{Flavor, STATUS};
use crate::resources::ResourceType;

/// One operation (HTTP method on a path).
struct Operation {
    method: &'static str,
    action: &'static str,
    operation_id: String,
    description: String,
    query: &'static [&'static str],
    /// Definition name of the request body (create/replace).
    request: Option<String>,
    /// Definition name of the `200` response.
    response: Option<String>,
}

/// One path with its path parameters and operations.
struct PathItem {
    path: String,
    namespaced: bool,
    named: bool,
    operations: Vec<Operation>,
}

const LIST_QUERY: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const WRITE_QUERY: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
/// PATCH carries `fieldValidation`: kubectl then leaves validation to the
/// server instead of validating against the schema itself.
const PATCH_QUERY: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_QUERY: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "orphanDependents",
    "propagationPolicy",
];
const DELETE_COLLECTION_QUERY: &[&str] = &[
    "continue",
    "dryRun",
    "fieldSelector",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "labelSelector",
    "limit",
    "orphanDependents",
    "propagationPolicy",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];

/// The type and description of a query parameter, worded as upstream.
fn query_param(name: &str) -> (&'static str, &'static str) {
    match name {
        "allowWatchBookmarks" => (
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.",
        ),
        "continue" => (
            "string",
            "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize.",
        ),
        "fieldSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        ),
        "labelSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        ),
        "limit" => (
            "integer",
            "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.",
        ),
        "resourceVersion" => (
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        "resourceVersionMatch" => (
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        "sendInitialEvents" => (
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event  will be sent.",
        ),
        "timeoutSeconds" => (
            "integer",
            "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
        ),
        "watch" => (
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
        ),
        "dryRun" => (
            "string",
            "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
        ),
        "fieldManager" => (
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
        ),
        "fieldValidation" => (
            "string",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
        ),
        "force" => (
            "boolean",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        ),
        "gracePeriodSeconds" => (
            "integer",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.",
        ),
        "ignoreStoreReadErrorWithClusterBreakingPotential" => (
            "boolean",
            "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer constraints, skips precondition checks, and removes the object from the storage. WARNING: This may potentially break the cluster if the workload associated with the resource being unsafe-deleted relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is false, and the user must opt in to enable it",
        ),
        "orphanDependents" => (
            "boolean",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.",
        ),
        "propagationPolicy" => (
            "string",
            "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.",
        ),
        "pretty" => (
            "string",
            "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line tool.",
        ),
        _ => ("string", ""),
    }
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`: the group-version part of
/// upstream operation IDs.
fn operation_prefix(r: &ResourceType) -> String {
    let mut out = String::new();
    if r.group.is_empty() {
        out.push_str("Core");
    } else {
        let parts = r.group.trim_end_matches(".k8s.io").split('.');
        for part in parts {
            out.push_str(&capitalize(part));
        }
    }
    out.push_str(&capitalize(r.version));
    out
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// `core_v1`, `apps_v1`, `rbacAuthorization_v1`: upstream operation tags.
fn tag(r: &ResourceType) -> String {
    let prefix = operation_prefix(r);
    let group = prefix.trim_end_matches(&capitalize(r.version));
    let mut chars = group.chars();
    let lower = chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default();
    format!("{lower}_{}", r.version)
}

fn base_path(r: &ResourceType) -> String {
    if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    }
}

/// The path items of one resource type, `def` being its definition name.
fn path_items(r: &ResourceType, def: &str) -> Vec<PathItem> {
    let prefix = operation_prefix(r);
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let collection = if r.namespaced {
        format!("{}/namespaces/{{namespace}}/{}", base_path(r), r.plural)
    } else {
        format!("{}/{}", base_path(r), r.plural)
    };
    let op = |method: &'static str,
              action: &'static str,
              id: String,
              description: String,
              query: &'static [&'static str],
              request: bool,
              response: Option<&str>| Operation {
        method,
        action,
        operation_id: id,
        description,
        query,
        request: request.then(|| def.to_owned()),
        response: response.map(str::to_owned),
    };
    let mut items = Vec::new();

    let mut ops = Vec::new();
    if r.has_verb("list") {
        ops.push(op(
            "get",
            "list",
            format!("list{prefix}{scope}{kind}"),
            format!("list or watch objects of kind {kind}"),
            LIST_QUERY,
            false,
            None,
        ));
    }
    if r.has_verb("create") {
        ops.push(op(
            "post",
            "post",
            format!("create{prefix}{scope}{kind}"),
            format!("create a {kind}"),
            WRITE_QUERY,
            true,
            Some(def),
        ));
    }
    if r.has_verb("deletecollection") {
        ops.push(op(
            "delete",
            "deletecollection",
            format!("delete{prefix}Collection{scope}{kind}"),
            format!("delete collection of {kind}"),
            DELETE_COLLECTION_QUERY,
            false,
            Some(STATUS),
        ));
    }
    if !ops.is_empty() {
        items.push(PathItem {
            path: collection.clone(),
            namespaced: r.namespaced,
            named: false,
            operations: ops,
        });
    }

    let mut ops = Vec::new();
    if r.has_verb("get") {
        ops.push(op(
            "get",
            "get",
            format!("read{prefix}{scope}{kind}"),
            format!("read the specified {kind}"),
            &[],
            false,
            Some(def),
        ));
    }
    if r.has_verb("update") {
        ops.push(op(
            "put",
            "put",
            format!("replace{prefix}{scope}{kind}"),
            format!("replace the specified {kind}"),
            WRITE_QUERY,
            true,
            Some(def),
        ));
    }
    if r.has_verb("patch") {
        ops.push(op(
            "patch",
            "patch",
            format!("patch{prefix}{scope}{kind}"),
            format!("partially update the specified {kind}"),
            PATCH_QUERY,
            false,
            Some(def),
        ));
    }
    if r.has_verb("delete") {
        ops.push(op(
            "delete",
            "delete",
            format!("delete{prefix}{scope}{kind}"),
            format!("delete a {kind}"),
            DELETE_QUERY,
            false,
            Some(STATUS),
        ));
    }
    if !ops.is_empty() {
        items.push(PathItem {
            path: format!("{collection}/{{name}}"),
            namespaced: r.namespaced,
            named: true,
            operations: ops,
        });
    }

    if r.has_subresource("status") && r.has_verb("get") {
        let mut ops = vec![op(
            "get",
            "get",
            format!("read{prefix}{scope}{kind}Status"),
            format!("read status of the specified {kind}"),
            &[],
            false,
            Some(def),
        )];
        if r.has_verb("update") {
            ops.push(op(
                "put",
                "put",
                format!("replace{prefix}{scope}{kind}Status"),
                format!("replace status of the specified {kind}"),
                WRITE_QUERY,
                true,
                Some(def),
            ));
        }
        if r.has_verb("patch") {
            ops.push(op(
                "patch",
                "patch",
                format!("patch{prefix}{scope}{kind}Status"),
                format!("partially update status of the specified {kind}"),
                PATCH_QUERY,
                false,
                Some(def),
            ));
        }
        items.push(PathItem {
            path: format!("{collection}/{{name}}/status"),
            namespaced: r.namespaced,
            named: true,
            operations: ops,
        });
    }

    if r.namespaced && r.has_verb("list") {
        items.push(PathItem {
            path: format!("{}/{}", base_path(r), r.plural),
            namespaced: false,
            named: false,
            operations: vec![op(
                "get",
                "list",
                format!("list{prefix}{kind}ForAllNamespaces"),
                format!("list or watch objects of kind {kind}"),
                LIST_QUERY,
                false,
                None,
            )],
        });
    }
    items
}

fn parameter(
    name: &str,
    location: &str,
    description: &str,
    ty: &str,
    required: bool,
    flavor: Flavor,
) -> Value {
    let mut p = Map::new();
    p.insert("name".into(), name.into());
    p.insert("in".into(), location.into());
    p.insert("description".into(), description.into());
    if required {
        p.insert("required".into(), true.into());
    }
    match flavor {
        Flavor::V2 => {
            p.insert("type".into(), ty.into());
            p.insert("uniqueItems".into(), true.into());
        }
        Flavor::V3 => {
            p.insert("schema".into(), json!({"type": ty, "uniqueItems": true}));
        }
    }
    Value::Object(p)
}

fn path_parameters(item: &PathItem, kind: &str, flavor: Flavor) -> Vec<Value> {
    let mut params = Vec::new();
    if item.named {
        params.push(parameter(
            "name",
            "path",
            &format!("name of the {kind}"),
            "string",
            true,
            flavor,
        ));
    }
    if item.namespaced {
        params.push(parameter(
            "namespace",
            "path",
            "object name and auth scope, such as for teams and projects",
            "string",
            true,
            flavor,
        ));
    }
    let (ty, description) = query_param("pretty");
    params.push(parameter("pretty", "query", description, ty, false, flavor));
    params
}

const MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

fn render_operation(r: &ResourceType, op: &Operation, flavor: Flavor) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), op.description.clone().into());
    out.insert("operationId".into(), op.operation_id.clone().into());
    out.insert("tags".into(), json!([tag(r)]));
    let mut params: Vec<Value> = op
        .query
        .iter()
        .map(|name| {
            let (ty, description) = query_param(name);
            parameter(name, "query", description, ty, false, flavor)
        })
        .collect();
    let response_schema = op
        .response
        .as_deref()
        .map(|name| flavor.reference(name))
        .unwrap_or_else(|| json!({"type": "object"}));
    match flavor {
        Flavor::V2 => {
            // PATCH lists no `consumes`: kubectl would otherwise compute
            // strategic merge patches from these schemas, which lack the
            // patch strategy extensions; without it kubectl uses its
            // compiled-in types.
            if op.method != "patch" {
                out.insert("consumes".into(), json!(["*/*"]));
            }
            out.insert("produces".into(), json!(MEDIA_TYPES));
            out.insert("schemes".into(), json!(["https"]));
            if let Some(request) = &op.request {
                params.push(json!({"in": "body", "name": "body", "required": true, "schema": flavor.reference(request)}));
            } else if op.method == "patch" {
                params.push(json!({"in": "body", "name": "body", "required": true, "schema": {"type": "object"}}));
            }
            out.insert(
                "responses".into(),
                json!({"200": {"description": "OK", "schema": response_schema}, "401": {"description": "Unauthorized"}}),
            );
        }
        Flavor::V3 => {
            // PATCH has no requestBody: listing strategic merge patch there
            // makes kubectl apply compute patches from these schemas (see
            // the V2 note above).
            if let Some(request) = &op.request {
                out.insert(
                    "requestBody".into(),
                    json!({"content": {"*/*": {"schema": flavor.reference(request)}}, "required": true}),
                );
            }
            let content: Map<String, Value> = MEDIA_TYPES
                .iter()
                .map(|m| (m.to_string(), json!({"schema": response_schema})))
                .collect();
            out.insert(
                "responses".into(),
                json!({"200": {"description": "OK", "content": content}, "401": {"description": "Unauthorized"}}),
            );
        }
    }
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    out.insert("x-kubernetes-action".into(), op.action.into());
    out.insert(
        "x-kubernetes-group-version-kind".into(),
        json!({"group": r.group, "kind": r.kind, "version": r.version}),
    );
    Value::Object(out)
}

/// Adds the paths of resource `r` (whose definition is `def`) to `paths`.
pub(crate) fn add_paths(
    paths: &mut Map<String, Value>,
    r: &ResourceType,
    def: &str,
    flavor: Flavor,
) {
    for item in path_items(r, def) {
        let mut rendered = Map::new();
        for op in &item.operations {
            rendered.insert(op.method.into(), render_operation(r, op, flavor));
        }
        rendered.insert(
            "parameters".into(),
            Value::Array(path_parameters(&item, r.kind, flavor)),
        );
        paths.insert(item.path, Value::Object(rendered));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn operation_ids_follow_upstream_naming() {
        let rbac = find("rbac.authorization.k8s.io", "v1", "roles").unwrap();
        assert_eq!(operation_prefix(rbac), "RbacAuthorizationV1");
        assert_eq!(tag(rbac), "rbacAuthorization_v1");
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(tag(pods), "core_v1");
        let mut paths = Map::new();
        add_paths(&mut paths, pods, "io.k8s.api.core.v1.Pod", Flavor::V3);
        let named = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(named["get"]["operationId"], "readCoreV1NamespacedPod");
        assert_eq!(
            paths["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
    }

    #[test]
    fn patch_has_field_validation_and_no_request_body() {
        let deployments = find("apps", "v1", "deployments").unwrap();
        for flavor in [Flavor::V2, Flavor::V3] {
            let mut paths = Map::new();
            add_paths(
                &mut paths,
                deployments,
                "io.k8s.api.apps.v1.Deployment",
                flavor,
            );
            let patch = &paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
            let params = patch["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
            );
            assert!(patch.get("requestBody").is_none());
            assert!(patch.get("consumes").is_none());
            assert_eq!(
                patch["x-kubernetes-group-version-kind"],
                json!({"group": "apps", "kind": "Deployment", "version": "v1"})
            );
        }
    }

    #[test]
    fn cluster_scoped_paths_have_no_namespace() {
        let nodes = find("", "v1", "nodes").unwrap();
        let mut paths = Map::new();
        add_paths(&mut paths, nodes, "io.k8s.api.core.v1.Node", Flavor::V2);
        assert!(paths.contains_key("/api/v1/nodes/{name}"));
        assert!(paths.keys().all(|p| !p.contains("namespaces")));
    }
}
