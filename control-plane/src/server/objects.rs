//! The verbs on stored objects, between the HTTP layer and the store: admit
//! (decode, strict field check, defaults, validation), stamp metadata, write
//! with optimistic concurrency, and read back in the served version.

use serde_json::{Value, json};

use crate::admission;
use crate::managed_fields::{self, Manager, Scope, Shape};
use crate::patch::{self, PatchType};
use crate::registry::{self, allocator, convert};
use crate::resources::{self, ResourceType};
use crate::selectors;
use crate::storage::{KeyValue, Revision, StoreError};

use super::meta::{self, remove_meta, set_meta, str_at};
use super::pod_binding::{self, Binding};
use super::status::{ApiError, qualified};
use super::{Api, ServiceAllocators};

/// `fieldValidation` of writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Strict,
    #[default]
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}"
            ))),
        }
    }
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub validation: FieldValidation,
    /// The field manager: `fieldManager`, else the User-Agent's product;
    /// `None` for the server's own writes.
    pub field_manager: Option<String>,
    /// `force` of server-side apply: take fields other managers own.
    pub force: bool,
}

impl WriteOptions {
    /// The manager recorded in managedFields; the server's own writes are
    /// kube-apiserver's, as its loopback client's User-Agent says upstream.
    pub fn manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or("kube-apiserver")
    }
}

/// How a write is recorded in managedFields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    /// An `Update` by the write's manager through a subresource (or "").
    Update(&'static str),
    /// Already recorded (server-side apply).
    Recorded,
}

/// The ownership scope of a write in `mode`.
fn scope_of(r: &ResourceType, mode: UpdateMode) -> Scope {
    match mode {
        UpdateMode::Status => Scope::Status,
        _ => Scope::Main {
            ignore_status: r.has_subresource("status"),
        },
    }
}

/// Records a non-apply write of `opts`' manager in `new`'s managedFields.
fn record(
    r: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    mode: UpdateMode,
    subresource: &str,
    opts: &WriteOptions,
) {
    let time = meta::now();
    let manager = Manager {
        name: opts.manager(),
        api_version: r.api_version,
        subresource,
        time: &time,
    };
    let shape = Shape::root(r.api_version, r.kind);
    managed_fields::record_update(old, new, shape, scope_of(r, mode), &manager);
}

/// The 409 of an apply that would change fields other managers own.
fn apply_conflict(err: managed_fields::ApplyError) -> ApiError {
    let managed_fields::ApplyError::Conflicts(conflicts) = &err;
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "type": "FieldManagerConflict",
                "message": format!("conflict with {}", c.manager),
                "field": c.field,
            })
        })
        .collect();
    ApiError {
        details: Some(json!({"causes": causes})),
        ..ApiError::new(409, "Conflict", err.to_string())
    }
}

/// The outcome of a write: the object as stored and warnings for the client.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

/// `DeleteOptions`, from the body or the query.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a DeleteOptions body (fields left unset keep `self`'s values).
    pub fn merge_body(mut self, body: &Value) -> Self {
        if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            self.grace_period_seconds = Some(g);
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation_policy = Some(p.to_string());
        }
        if self.propagation_policy.is_none()
            && let Some(o) = body.get("orphanDependents").and_then(Value::as_bool)
        {
            self.propagation_policy = Some(if o { "Orphan" } else { "Background" }.to_string());
        }
        if let Some(u) = body.pointer("/preconditions/uid").and_then(Value::as_str) {
            self.precondition_uid = Some(u.to_string());
        }
        if let Some(rv) = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            self.precondition_resource_version = Some(rv.to_string());
        }
        if body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|d| d == "All"))
        {
            self.dry_run = true;
        }
        self
    }
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// The object; `.status` is kept for types with a status subresource.
    Main,
    /// Only `.status` (the `status` subresource).
    Status,
    /// Only `spec.finalizers` of a Namespace (`namespaces/finalize`).
    Finalize,
}

/// Options of list (and the initial state of a watch).
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// Compiled selectors of a list or watch.
pub struct Filter {
    labels: Option<selectors::LabelSelector>,
    fields: Option<selectors::FieldSelector>,
}

impl Filter {
    pub fn new(
        resource: &ResourceType,
        label: Option<&str>,
        field: Option<&str>,
    ) -> Result<Self, ApiError> {
        let labels = label
            .filter(|s| !s.is_empty())
            .map(selectors::parse_label_selector)
            .transpose()
            .map_err(ApiError::bad_request)?;
        let fields = field
            .filter(|s| !s.is_empty())
            .map(|s| selectors::parse_field_selector(resource, s))
            .transpose()
            .map_err(ApiError::bad_request)?;
        Ok(Self { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    /// No label or field selector: every object matches.
    pub fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    /// Whether `matches` reads only `metadata.labels` (no field selector).
    pub fn reads_only_labels(&self) -> bool {
        self.fields.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches(obj))
            && self.fields.as_ref().is_none_or(|f| f.matches(obj))
    }

    /// Whether the object under `key` matches, when that is decided by its
    /// name and namespace alone (no label selector, field selectors only on
    /// `metadata.name` / `metadata.namespace`); None when the object is needed.
    pub fn matches_key(&self, resource: &ResourceType, key: &str) -> Option<bool> {
        if self.labels.is_some() {
            return None;
        }
        let Some(fields) = &self.fields else {
            return Some(true);
        };
        let (ns, name) = meta::split_key(resource, key)?;
        fields.matches_name(ns, name)
    }
}

/// Resources whose create resets `.status` (set only by controllers), as
/// their upstream strategies' PrepareForCreate do.
const STATUS_RESET_ON_CREATE: &[&str] = &[
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "replicationcontrollers",
    "jobs",
    "cronjobs",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "services",
    "ingresses",
];

/// Namespaces that cannot be deleted, as upstream's NamespaceLifecycle.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// The revision-less body of an object in its storage version.
pub fn encode(resource: &ResourceType, obj: &Value) -> Result<Vec<u8>, ApiError> {
    if convert::keeps_body(resource) {
        return serde_json::to_vec(&Storable(obj)).map_err(|e| ApiError::internal(e.to_string()));
    }
    let mut obj = obj.clone();
    for field in UNSTORED_METADATA {
        remove_meta(&mut obj, field);
    }
    let obj = convert::to_storage(resource, obj);
    serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))
}

/// An object serialized as stored, without copying it: its metadata leaves
/// out `resourceVersion` (the store's revision) and `selfLink`.
struct Storable<'a>(&'a Value);

/// Metadata fields never stored.
const UNSTORED_METADATA: [&str; 2] = ["resourceVersion", "selfLink"];

impl serde::Serialize for Storable<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(obj) = self.0.as_object() else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(obj.len()))?;
        for (key, value) in obj {
            match value.as_object() {
                Some(metadata) if key == "metadata" => {
                    map.serialize_entry(key, &StorableMetadata(metadata))?;
                }
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

struct StorableMetadata<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for StorableMetadata<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .filter(|(k, _)| !UNSTORED_METADATA.contains(&k.as_str())),
        )
    }
}

/// A stored object's bytes decoded as `T` (all of it, or only what `T` names).
fn stored_json<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))
}

/// A stored value, in `resource`'s served version with its resourceVersion.
pub fn decode_at(
    resource: &ResourceType,
    value: &[u8],
    revision: Revision,
) -> Result<Value, ApiError> {
    let mut obj = convert::from_storage(resource, stored_json(value)?);
    set_meta(&mut obj, "resourceVersion", json!(revision.to_string()));
    Ok(obj)
}

pub fn decode(resource: &ResourceType, kv: &KeyValue) -> Result<Value, ApiError> {
    decode_at(resource, &kv.value, kv.mod_revision)
}

/// `{"metadata": ...}` of a stored object at `revision`, as `decode_at` gives
/// the metadata, decoding nothing else (PartialObjectMetadata output: the
/// garbage collector watches every resource so).
pub fn decode_metadata_at(
    resource: &ResourceType,
    value: &[u8],
    revision: Revision,
) -> Result<Value, ApiError> {
    if !convert::keeps_metadata(resource) {
        let obj = decode_at(resource, value, revision)?;
        return Ok(json!({"metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({}))}));
    }
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(default)]
        metadata: Value,
    }
    let stored: Stored = stored_json(value)?;
    let mut obj = json!({"metadata": stored.metadata});
    set_meta(&mut obj, "resourceVersion", json!(revision.to_string()));
    Ok(obj)
}

/// Only the labels of a stored value, as `{"metadata": {"labels": …}}`: what
/// a label selector reads. A pod's metadata is mostly its managedFields, so
/// matching a watch's label selector on the whole metadata decoded them for
/// every event.
pub fn decode_labels_at(
    resource: &ResourceType,
    value: &[u8],
    revision: Revision,
) -> Result<Value, ApiError> {
    if !convert::keeps_metadata(resource) {
        return decode_metadata_at(resource, value, revision);
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default)]
        labels: Option<serde_json::Map<String, Value>>,
    }
    #[derive(serde::Deserialize)]
    struct Stored {
        metadata: Option<Meta>,
    }
    let stored: Stored = stored_json(value)?;
    let labels = stored.metadata.and_then(|m| m.labels);
    Ok(json!({"metadata": {"labels": labels}}))
}

/// Whether a stored object has a deletionTimestamp, decoding nothing else.
fn stored_is_deleting(value: &[u8]) -> Result<bool, ApiError> {
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(rename = "deletionTimestamp", default)]
        deletion_timestamp: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Stored {
        metadata: Option<Meta>,
    }
    let stored: Stored = stored_json(value)?;
    Ok(stored
        .metadata
        .is_some_and(|m| m.deletion_timestamp.is_some()))
}

fn is_service(r: &ResourceType) -> bool {
    r.plural == "services" && r.group.is_empty()
}

fn resource_named(plural: &str) -> Option<&'static ResourceType> {
    resources::catalog()
        .iter()
        .find(|r| r.plural == plural && r.group.is_empty())
}

impl Api {
    /// Reads one object and its revision.
    pub async fn read(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<(Value, Revision)>, ApiError> {
        let kv = self
            .cache
            .get(&meta::key(r, ns, name))
            .await
            .map_err(|e| ApiError::from_store(e, r, name))?;
        kv.map(|kv| Ok((decode(r, &kv)?, kv.mod_revision)))
            .transpose()
    }

    /// Reads one object or answers 404.
    pub async fn get(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        Ok(self
            .read(r, ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found(r, name))?
            .0)
    }

    /// Checks the body of a write against the URL and the typed schema;
    /// returns the normalized object and unknown-field warnings.
    fn admit_input(
        &self,
        r: &ResourceType,
        mut body: Value,
        url_ns: Option<&str>,
        validation: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let Some(map) = body.as_object_mut() else {
            return Err(ApiError::bad_request(format!(
                "the body of the request must be a JSON object of kind {}",
                r.kind
            )));
        };
        match map.get("apiVersion").and_then(Value::as_str) {
            Some(av) if !av.is_empty() && av != r.api_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    r.api_version
                )));
            }
            _ => {}
        }
        match map.get("kind").and_then(Value::as_str) {
            Some(kind) if !kind.is_empty() && kind != r.kind => {
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{}\" cannot be handled as a {}: the kind of the object does not match the resource of the request",
                    r.version, r.kind
                )));
            }
            _ => {}
        }
        map.insert("apiVersion".into(), json!(r.api_version));
        map.insert("kind".into(), json!(r.kind));
        if r.namespaced {
            match (
                str_at(&body, "/metadata/namespace").filter(|s| !s.is_empty()),
                url_ns,
            ) {
                (Some(b), Some(u)) if b != u => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (_, Some(u)) => set_meta(&mut body, "namespace", json!(u)),
                _ => {}
            }
        } else {
            remove_meta(&mut body, "namespace");
        }
        let typed = (r.roundtrip)(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                r.kind, r.version, r.kind
            ))
        })?;
        let unknown = meta::unknown_fields(&body, &typed);
        let mut warnings = Vec::new();
        if !unknown.is_empty() {
            let msgs: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            match validation {
                FieldValidation::Strict => {
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        msgs.join(", ")
                    )));
                }
                FieldValidation::Warn => warnings = msgs,
                FieldValidation::Ignore => {}
            }
        }
        let mut typed = typed;
        if r.plural == "secrets" && r.group.is_empty() {
            merge_string_data(&mut typed);
        }
        Ok((typed, warnings))
    }

    /// Checks that `ns` exists and, for creates, is not terminating.
    async fn check_namespace(
        &self,
        r: &ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let Some(nsr) = resource_named("namespaces") else {
            return Ok(());
        };
        let kv = self
            .cache
            .get(&meta::key(nsr, None, ns))
            .await
            .map_err(|e| ApiError::from_store(e, nsr, ns))?;
        let Some(kv) = kv else {
            return Err(ApiError::namespace_not_found(ns));
        };
        if stored_is_deleting(&kv.value)? {
            return Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                qualified(r),
                name
            )));
        }
        Ok(())
    }

    fn validate(&self, r: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
        let mut causes = match old {
            None => registry::validate_create(r, obj),
            Some(old) => registry::validate_update(r, obj, old),
        };
        if old.is_none()
            && !causes.iter().any(|c| c.field == "metadata.name")
            && let Some(c) = meta::validate_name(r, meta::name(obj))
        {
            causes.insert(0, c);
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(r.kind, r.group, meta::name(obj), &causes))
        }
    }

    /// Creates an object (POST).
    pub async fn create(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.create_tracked(r, ns, body, opts, Track::Update(""))
            .await
    }

    async fn create_tracked(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOptions,
        track: Track,
    ) -> Result<Written, ApiError> {
        let (mut obj, warnings) = self.admit_input(r, body, ns, opts.validation)?;
        let mut name = meta::name(&obj).to_string();
        if name.is_empty()
            && let Some(prefix) = str_at(&obj, "/metadata/generateName").filter(|s| !s.is_empty())
        {
            name = format!("{prefix}{}", meta::name_suffix());
            set_meta(&mut obj, "name", json!(name));
        }
        if name.is_empty() {
            let cause = registry::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            };
            return Err(ApiError::invalid(r.kind, r.group, "", &[cause]));
        }
        let ns = if r.namespaced {
            let ns = ns.ok_or_else(|| {
                ApiError::bad_request("a namespace is required for namespaced resources")
            })?;
            self.check_namespace(r, ns, &name).await?;
            Some(ns)
        } else {
            None
        };
        set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut obj, "creationTimestamp", json!(meta::now()));
        set_meta(&mut obj, "generation", json!(1));
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            remove_meta(&mut obj, f);
        }
        if STATUS_RESET_ON_CREATE.contains(&r.plural)
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        match (r.group, r.plural) {
            ("", "namespaces") => {
                if obj.pointer("/spec/finalizers").is_none() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                }
                obj["status"] = json!({"phase": "Active"});
            }
            ("", "pods") if str_at(&obj, "/status/phase").is_none() => {
                obj["status"]["phase"] = json!("Pending");
            }
            _ => {}
        }
        registry::default_object(r, &mut obj);
        if let Track::Update(sub) = track {
            record(r, None, &mut obj, UpdateMode::Main, sub, opts);
        }
        admission::mutate(self, r, ns, &mut obj).await?;
        self.validate(r, &obj, None)?;
        let mut services = if is_service(r) {
            let mut alloc = self.services.lock().await;
            // An existing name is AlreadyExists, not a clash of its allocations.
            if self.read(r, ns, &name).await?.is_some() {
                return Err(ApiError::already_exists(r, &name));
            }
            let ServiceAllocators { ips, ports } = &mut *alloc;
            allocator::allocate_service(ips, ports, &mut obj)
                .map_err(|causes| ApiError::invalid(r.kind, r.group, &name, &causes))?;
            Some(alloc)
        } else {
            None
        };
        // Quota is charged last, once nothing else can refuse the object.
        let admitted = admission::validate(self, r, ns, &obj, opts.dry_run).await;
        let stored = if let Err(e) = &admitted {
            Err(e.clone())
        } else if opts.dry_run {
            Ok(None)
        } else {
            let key = meta::key(r, ns, &name);
            match encode(r, &obj) {
                Ok(body) => self
                    .store
                    .create(&key, body)
                    .await
                    .map(Some)
                    .map_err(|e| ApiError::from_store(e, r, &name)),
                Err(e) => Err(e),
            }
        };
        // Nothing stored (dry run, failure): give the allocations back.
        if let Some(alloc) = services.as_mut()
            && !matches!(stored, Ok(Some(_)))
        {
            let ServiceAllocators { ips, ports } = &mut **alloc;
            allocator::release_service(ips, ports, &obj);
        }
        drop(services);
        if stored.is_err()
            && let Ok(charge) = admitted
        {
            admission::release(self, charge).await;
        }
        let Some(rev) = stored? else {
            return Ok(Written {
                object: obj,
                created: true,
                warnings,
            });
        };
        set_meta(&mut obj, "resourceVersion", json!(rev.to_string()));
        tracing::debug!(resource = r.plural, namespace = ns.unwrap_or(""), name = %name, rev, "created");
        Ok(Written {
            object: obj,
            created: true,
            warnings,
        })
    }

    /// Replaces an object (PUT) or one of its parts (`mode`).
    pub async fn update(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        body: Value,
        mode: UpdateMode,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (new, warnings) = self.admit_input(r, body, ns, opts.validation)?;
        let body_name = meta::name(&new);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let Some((old, old_rev)) = self.read(r, ns, name).await? else {
            // Upstream allows create-on-update for these.
            if mode == UpdateMode::Main && matches!(r.plural, "endpoints" | "leases" | "events") {
                let mut w = self.create(r, ns, new, opts).await?;
                w.warnings.extend(warnings);
                return Ok(w);
            }
            return Err(ApiError::not_found(r, name));
        };
        let track = Track::Update(subresource_of(mode));
        let object = self
            .replace(r, ns, name, old, old_rev, new, mode, opts, track)
            .await?;
        Ok(Written {
            object,
            created: false,
            warnings,
        })
    }

    /// The shared path of update and patch: `new` replaces `old` (read at `old_rev`).
    #[allow(clippy::too_many_arguments)]
    async fn replace(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        old: Value,
        old_rev: Revision,
        mut new: Value,
        mode: UpdateMode,
        opts: &WriteOptions,
        track: Track,
    ) -> Result<Value, ApiError> {
        let dry_run = opts.dry_run;
        if let Some(rv) = str_at(&new, "/metadata/resourceVersion").filter(|s| !s.is_empty()) {
            let rv: Revision = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("metadata.resourceVersion: Invalid value: \"{rv}\": must be a valid resource version"))
            })?;
            if rv != old_rev {
                return Err(ApiError::modified(r, name));
            }
        }
        let finalize_to = new
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or_else(|| json!([]));
        match mode {
            UpdateMode::Main => {
                if r.has_subresource("status") {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                if r.plural == "namespaces" && r.group.is_empty() {
                    new["spec"] = old.get("spec").cloned().unwrap_or_else(|| json!({}));
                }
            }
            UpdateMode::Status => {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            UpdateMode::Finalize => {
                new = old.clone();
                new["spec"]["finalizers"] = finalize_to.clone();
            }
        }
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old.pointer(&format!("/metadata/{f}")) {
                Some(v) => set_meta(&mut new, f, v.clone()),
                None => remove_meta(&mut new, f),
            }
        }
        registry::default_object(r, &mut new);
        if mode == UpdateMode::Finalize {
            // Namespace defaulting adds `kubernetes` to empty finalizers, which
            // only a create may do; finalize writes exactly what it was given.
            new["spec"]["finalizers"] = finalize_to.clone();
        }
        if mode != UpdateMode::Finalize {
            registry::prepare_update(r, &mut new, &old);
            self.validate(r, &new, Some(&old))?;
        }
        let charge =
            admission::validate_update(self, r, ns, name, mode, &old, &new, dry_run).await?;
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = if meta::spec_changed(&old, &new) {
            generation + 1
        } else {
            generation
        };
        set_meta(&mut new, "generation", json!(generation));
        if let Track::Update(sub) = track {
            record(r, Some(&old), &mut new, mode, sub, opts);
        }
        let key = meta::key(r, ns, name);
        if !is_service(r) {
            let result = self
                .commit_update(r, &key, &old, old_rev, new, dry_run)
                .await;
            if result.is_err() {
                admission::release(self, charge).await;
            }
            return Ok(result?.0);
        }
        let mut alloc = self.services.lock().await;
        let ServiceAllocators { ips, ports } = &mut *alloc;
        if mode == UpdateMode::Main
            && let Err(causes) =
                allocator::update_service_allocations(ips, ports, &mut new, Some(&old))
        {
            admission::release(self, charge).await;
            return Err(ApiError::invalid(r.kind, r.group, name, &causes));
        }
        let result = self
            .commit_update(r, &key, &old, old_rev, new.clone(), dry_run)
            .await;
        if result.is_err() {
            admission::release(self, charge).await;
        }
        match &result {
            Ok((_, true)) if !dry_run => allocator::release_service(ips, ports, &new),
            Ok(_) if !dry_run => {}
            _ if mode == UpdateMode::Main => {
                // Not stored: undo the transition, under the same lock.
                let mut back = old.clone();
                if let Err(causes) =
                    allocator::update_service_allocations(ips, ports, &mut back, Some(&new))
                {
                    tracing::warn!(
                        service = name,
                        ?causes,
                        "could not undo a service allocation"
                    );
                }
            }
            _ => {}
        }
        Ok(result?.0)
    }

    /// Writes `new` over `old`; completes a pending delete once the last
    /// finalizer is gone (then `true`); skips the write when nothing changed.
    async fn commit_update(
        &self,
        r: &ResourceType,
        key: &str,
        old: &Value,
        old_rev: Revision,
        mut new: Value,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        let name = meta::name(old).to_string();
        let spec_finalizers_left = new
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
            && r.plural == "namespaces";
        // A graceful pod is finished by its node's delete, not by an update.
        let graceful_pod = r.plural == "pods"
            && new
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0;
        if meta::is_deleting(old)
            && meta::finalizers(&new).is_empty()
            && !spec_finalizers_left
            && !graceful_pod
        {
            if dry_run {
                return Ok((new, true));
            }
            let (rev, _) = self
                .store
                .delete(key, Some(old_rev))
                .await
                .map_err(|e| ApiError::from_store(e, r, &name))?;
            set_meta(&mut new, "resourceVersion", json!(rev.to_string()));
            tracing::debug!(key, rev, "deleted after its last finalizer");
            return Ok((new, true));
        }
        if meta::same_object(old, &new) || dry_run {
            return Ok((if dry_run { new } else { old.clone() }, false));
        }
        let rev = self
            .store
            .update(key, encode(r, &new)?, old_rev)
            .await
            .map_err(|e| ApiError::from_store(e, r, &name))?;
        set_meta(&mut new, "resourceVersion", json!(rev.to_string()));
        Ok((new, false))
    }

    /// Patches an object or its `status`; server-side apply upserts.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mode: UpdateMode,
        patch_type: PatchType,
        patch_body: &Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let shape = Shape::root(r.api_version, r.kind);
        let scope = scope_of(r, mode);
        for attempt in 0..5 {
            let time = meta::now();
            let manager = Manager {
                name: opts.manager(),
                api_version: r.api_version,
                subresource: subresource_of(mode),
                time: &time,
            };
            let Some((old, old_rev)) = self.read(r, ns, name).await? else {
                if patch_type == PatchType::Apply && mode == UpdateMode::Main {
                    let mut body = check_applied(patch_body)?.clone();
                    if meta::name(&body).is_empty() {
                        set_meta(&mut body, "name", json!(name));
                    }
                    let mut created =
                        managed_fields::apply(None, &body, shape, scope, &manager, true)
                            .map_err(apply_conflict)?;
                    managed_fields::last_applied::sync(&mut created, &body, manager.name);
                    let body = created;
                    return self
                        .create_tracked(r, ns, body, opts, Track::Recorded)
                        .await;
                }
                return Err(ApiError::not_found(r, name));
            };
            let (patched, track) = if patch_type == PatchType::Apply {
                let applied = check_applied(patch_body)?;
                let mut merged = match managed_fields::apply(
                    Some(&old),
                    applied,
                    shape,
                    scope,
                    &manager,
                    opts.force,
                ) {
                    // Moving from client-side apply: what it applied moves over.
                    Err(managed_fields::ApplyError::Conflicts(c)) => {
                        let left = managed_fields::last_applied::remaining_conflicts(
                            &old,
                            c,
                            shape,
                            scope,
                            manager.name,
                        );
                        if left.is_empty() {
                            managed_fields::apply(Some(&old), applied, shape, scope, &manager, true)
                        } else {
                            Err(managed_fields::ApplyError::Conflicts(left))
                        }
                    }
                    result => result,
                }
                .map_err(apply_conflict)?;
                managed_fields::last_applied::sync(&mut merged, applied, manager.name);
                (merged, Track::Recorded)
            } else {
                let patched = apply_patch(r, &old, patch_type, patch_body)?;
                (patched, Track::Update(subresource_of(mode)))
            };
            let (new, warnings) = self.admit_input(r, patched, ns, opts.validation)?;
            match self
                .replace(r, ns, name, old, old_rev, new, mode, opts, track)
                .await
            {
                Err(e)
                    if e.code == 409
                        && e.reason == "Conflict"
                        && !patch_sets_rv(patch_body)
                        && attempt < 4 =>
                {
                    continue;
                }
                Err(e) => return Err(e),
                Ok(object) => {
                    return Ok(Written {
                        object,
                        created: false,
                        warnings,
                    });
                }
            }
        }
        Err(ApiError::modified(r, name))
    }

    /// Deletes an object: at once, or by marking it (finalizers, graceful pods,
    /// namespaces). Returns the object and whether it is gone now.
    pub async fn delete(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let key = meta::key(r, ns, name);
        for _ in 0..5 {
            let (obj, rev) = self
                .read(r, ns, name)
                .await?
                .ok_or_else(|| ApiError::not_found(r, name))?;
            let uid = str_at(&obj, "/metadata/uid").unwrap_or("");
            if let Some(p) = opts.precondition_uid.as_deref().filter(|p| *p != uid) {
                return Err(ApiError::conflict(
                    r,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {p}, UID in object meta: {uid}"
                    ),
                ));
            }
            if let Some(p) = opts
                .precondition_resource_version
                .as_deref()
                .filter(|p| *p != rev.to_string())
            {
                return Err(ApiError::conflict(
                    r,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {p}, ResourceVersion in object meta: {rev}"
                    ),
                ));
            }
            admission::validate_delete(self, r, ns, name, &obj).await?;
            let is_ns = r.plural == "namespaces" && r.group.is_empty();
            if is_ns && PROTECTED_NAMESPACES.contains(&name) {
                return Err(ApiError::forbidden(format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                )));
            }
            // Foreground and Orphan deletion hand the object to the garbage
            // collector through a finalizer, as kube-apiserver does.
            let gc_finalizer = match opts.propagation_policy.as_deref() {
                Some("Foreground") => Some("foregroundDeletion"),
                Some("Orphan") => Some("orphan"),
                _ => None,
            };
            let mut obj = obj;
            let mut added_finalizer = false;
            if let Some(f) = gc_finalizer
                && !meta::finalizers(&obj).iter().any(|x| x == f)
            {
                let mut list: Vec<Value> = meta::finalizers(&obj)
                    .iter()
                    .filter(|x| !matches!(x.as_str(), "foregroundDeletion" | "orphan"))
                    .map(|x| json!(x))
                    .collect();
                list.push(json!(f));
                set_meta(&mut obj, "finalizers", json!(list));
                added_finalizer = true;
            }
            let has_finalizers = !meta::finalizers(&obj).is_empty();
            let is_pod = r.plural == "pods" && r.group.is_empty();
            let pod_grace = if is_pod {
                pod_grace_period(&obj, opts)
            } else {
                0
            };
            let deleting = meta::is_deleting(&obj);
            let ns_finalizers = is_ns
                && obj
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
            let immediate = !has_finalizers
                && !ns_finalizers
                && (pod_grace == 0 || (deleting && opts.grace_period_seconds == Some(0)));
            // A shorter grace period on a pod already being deleted shortens
            // it (upstream `BeforeDelete`), so a pod held by finalizers goes
            // as soon as they are removed after its node's final delete.
            let current_grace = obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            let shorten = is_pod
                && deleting
                && opts
                    .grace_period_seconds
                    .is_some_and(|g| current_grace.is_some_and(|c| g < c));
            if !immediate {
                if deleting && !added_finalizer && !shorten {
                    return Ok((obj, false));
                }
                let mut obj = obj;
                if shorten && let Some(g) = opts.grace_period_seconds {
                    let at = chrono::Utc::now() + chrono::Duration::seconds(g);
                    set_meta(
                        &mut obj,
                        "deletionTimestamp",
                        json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    );
                    set_meta(&mut obj, "deletionGracePeriodSeconds", json!(g));
                }
                let mut new = obj.clone();
                if deleting {
                    // Only the propagation finalizer changes on a second delete.
                    if opts.dry_run {
                        return Ok((new, false));
                    }
                    match self.store.update(&key, encode(r, &new)?, rev).await {
                        Ok(rev) => {
                            set_meta(&mut new, "resourceVersion", json!(rev.to_string()));
                            return Ok((new, false));
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(ApiError::from_store(e, r, name)),
                    }
                }
                let at = chrono::Utc::now() + chrono::Duration::seconds(pod_grace);
                set_meta(
                    &mut new,
                    "deletionTimestamp",
                    json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                );
                set_meta(&mut new, "deletionGracePeriodSeconds", json!(pod_grace));
                let generation = obj
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                set_meta(&mut new, "generation", json!(generation + 1));
                if is_ns {
                    new["status"]["phase"] = json!("Terminating");
                }
                if opts.dry_run {
                    return Ok((new, false));
                }
                match self.store.update(&key, encode(r, &new)?, rev).await {
                    Ok(rev) => {
                        set_meta(&mut new, "resourceVersion", json!(rev.to_string()));
                        return Ok((new, false));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, r, name)),
                }
            }
            if opts.dry_run {
                return Ok((obj, true));
            }
            let mut services = if is_service(r) {
                Some(self.services.lock().await)
            } else {
                None
            };
            match self.store.delete(&key, Some(rev)).await {
                Ok(_) => {
                    tracing::debug!(key = %key, "deleted");
                    if let Some(alloc) = services.as_mut() {
                        let ServiceAllocators { ips, ports } = &mut **alloc;
                        allocator::release_service(ips, ports, &obj);
                    }
                    return Ok((obj, true));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, r, name)),
            }
        }
        Err(ApiError::modified(r, name))
    }

    /// Lists objects: selectors, paging with continue tokens, exact revisions.
    pub async fn list(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let filter = Filter::new(
            r,
            opts.label_selector.as_deref(),
            opts.field_selector.as_deref(),
        )?;
        let prefix = meta::prefix(r, ns);
        let limit = opts.limit.filter(|l| *l > 0);
        let continued = opts
            .continue_token
            .as_deref()
            .is_some_and(|t| !t.is_empty());
        let compacted = |e: StoreError| match e {
            StoreError::Compacted { .. } if continued => ApiError::gone(CONTINUE_EXPIRED),
            other => ApiError::from(other),
        };
        // Where the items come from: the watch cache's newest state, or the
        // store at a revision, starting after a key.
        let (revision, start_after) = match opts.continue_token.as_deref().filter(|t| !t.is_empty())
        {
            Some(token) => {
                let (rev, start) = parse_continue(token, &prefix)?;
                (Some(rev), Some(start))
            }
            None => {
                let exact = opts.resource_version_match.as_deref() == Some("Exact");
                let rv = opts
                    .resource_version
                    .as_deref()
                    .filter(|s| !s.is_empty() && *s != "0");
                let rv = rv
                    .map(|s| {
                        s.parse::<Revision>().map_err(|_| {
                            ApiError::bad_request(format!("invalid resource version: {s:?}"))
                        })
                    })
                    .transpose()?;
                match (exact, rv) {
                    (true, Some(rev)) => (Some(rev), None),
                    (true, None) => {
                        return Err(ApiError::bad_request(
                            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                        ));
                    }
                    _ => (None, None),
                }
            }
        };
        let mut page = PageFill {
            r,
            nested_ok: ns.is_none() && r.namespaced,
            prefix_len: prefix.len(),
            filter: &filter,
            limit,
            items: Vec::new(),
            last_key: None,
        };
        let mut remaining = 0u64;
        let revision = match (revision, limit) {
            // A page of a past revision: read from the store from its start
            // key on, in chunks, until the page is full (a selector may skip
            // items), rather than the whole list for every page.
            (Some(rev), Some(limit)) => {
                let chunk = limit.clamp(MIN_LIST_CHUNK, MAX_LIST_CHUNK);
                let mut after = start_after;
                loop {
                    let got = self
                        .store
                        .list_page(&prefix, after.as_deref(), rev, chunk)
                        .await
                        .map_err(compacted)?;
                    if let Some(i) = page.fill(got.items.iter())? {
                        remaining = (got.items.len() - i) as u64 + got.remaining;
                        break;
                    }
                    if got.items.len() < chunk {
                        break;
                    }
                    after = got.items.last().map(|kv| kv.key.clone());
                }
                rev
            }
            (revision, limit) => 'listed: {
                // The first page of a list without a selector: only the
                // items up to one past the page are copied out of the cache.
                if let (None, Some(limit), None) = (revision, limit, &start_after)
                    && filter.is_empty()
                {
                    let (head, rest) = self
                        .cache
                        .list_head(&prefix, limit.saturating_add(1))
                        .await?;
                    if let Some(i) = page.fill(head.items.iter())? {
                        remaining = (head.items.len() - i) as u64 + rest;
                        break 'listed head.revision;
                    }
                    if rest == 0 {
                        break 'listed head.revision;
                    }
                    // Keys the page skips (nested ones) left it short.
                    page.items.clear();
                    page.last_key = None;
                }
                let result = match revision {
                    Some(rev) => self
                        .store
                        .list(&prefix, Some(rev))
                        .await
                        .map_err(compacted)?,
                    None => self.cache.list(&prefix).await?,
                };
                let from = start_after.as_deref();
                let items: Vec<&KeyValue> = result
                    .items
                    .iter()
                    .filter(|kv| from.is_none_or(|s| kv.key.as_str() > s))
                    .collect();
                if let Some(i) = page.fill(items.iter().copied())? {
                    remaining = (items.len() - i) as u64;
                }
                result.revision
            }
        };
        let more = remaining > 0;
        let continue_token = match (more, &page.last_key) {
            (true, Some(k)) => Some(make_continue(revision, k)),
            _ => None,
        };
        let remaining = (more && filter.is_empty()).then_some(remaining);
        let items = page.items;
        Ok(ListPage {
            items,
            revision,
            continue_token,
            remaining,
        })
    }

    /// Deletes every object a list would return (deletecollection).
    pub async fn delete_collection(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<ListPage, ApiError> {
        let mut page = self
            .list(
                r,
                ns,
                &ListOptions {
                    limit: None,
                    continue_token: None,
                    ..list.clone()
                },
            )
            .await?;
        let mut deleted = Vec::new();
        for obj in &page.items {
            let obj_ns = str_at(obj, "/metadata/namespace");
            match self.delete(r, obj_ns, meta::name(obj), opts).await {
                Ok((o, _)) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        page.items = deleted;
        Ok(page)
    }

    /// The autoscaling/v1 Scale of an object.
    pub async fn get_scale(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        Ok(scale_of(&self.get(r, ns, name).await?))
    }

    /// Sets `spec.replicas` from a Scale (PUT or PATCH of `/scale`).
    pub async fn update_scale(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        patch: Option<(PatchType, &Value)>,
        body: Option<Value>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let (old, old_rev) = self
            .read(r, ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found(r, name))?;
        let scale = match (patch, body) {
            (Some((pt, p)), _) => {
                let current = scale_of(&old);
                match pt {
                    PatchType::Json => patch::json_patch(&current, p).map_err(patch_error)?,
                    _ => patch::merge_patch(&current, p),
                }
            }
            (None, Some(b)) => b,
            (None, None) => return Err(ApiError::bad_request("a Scale body is required")),
        };
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            let cause = registry::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                field: "spec.replicas".into(),
            };
            return Err(ApiError::invalid("Scale", "autoscaling", name, &[cause]));
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        if let Some(rv) = str_at(&scale, "/metadata/resourceVersion") {
            set_meta(&mut new, "resourceVersion", json!(rv));
        }
        let obj = self
            .replace(
                r,
                ns,
                name,
                old,
                old_rev,
                new,
                UpdateMode::Main,
                opts,
                Track::Update("scale"),
            )
            .await?;
        Ok(scale_of(&obj))
    }

    /// Binds a pod to a node (`pods/binding`, `bindings`).
    pub async fn bind(&self, ns: &str, pod_name: &str, node: &str) -> Result<(), ApiError> {
        let Some(pods) = resource_named("pods") else {
            return Err(ApiError::path_not_found());
        };
        if node.is_empty() {
            let cause = registry::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "target.name".into(),
            };
            return Err(ApiError::invalid("Binding", "", pod_name, &[cause]));
        }
        let key = meta::key(pods, Some(ns), pod_name);
        let old = self
            .cache
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(e, pods, pod_name))?
            .ok_or_else(|| ApiError::not_found(pods, pod_name))?;
        let bound = pod_binding::bind(&old.value, node, &meta::now())
            .map_err(|e| ApiError::internal(format!("stored object is not a pod: {e}")))?;
        let new = match bound {
            Binding::Deleting => {
                return Err(ApiError::conflict(
                    pods,
                    pod_name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            Binding::Assigned(current) => {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on pods/binding \"{pod_name}\": pod {pod_name} is already assigned to node \"{current}\""
                    ),
                ));
            }
            Binding::Bound(new) => new,
        };
        self.store
            .update(&key, new, old.mod_revision)
            .await
            .map_err(|e| ApiError::from_store(e, pods, pod_name))?;
        Ok(())
    }
}

/// Moves a Secret's write-only `stringData` into `data`, base64-encoded, as
/// upstream's conversion does.
fn merge_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(string_data) = secret.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let Some(entries) = string_data.as_object() else {
        return;
    };
    if !secret.get("data").is_some_and(Value::is_object) {
        secret["data"] = json!({});
    }
    for (k, v) in entries {
        if let Some(v) = v.as_str() {
            secret["data"][k] =
                json!(base64::engine::general_purpose::STANDARD.encode(v.as_bytes()));
        }
    }
}

/// The subresource name recorded for writes in `mode`.
fn subresource_of(mode: UpdateMode) -> &'static str {
    match mode {
        UpdateMode::Main => "",
        UpdateMode::Status => "status",
        UpdateMode::Finalize => "finalize",
    }
}

/// An applied configuration must be an object.
fn check_applied(body: &Value) -> Result<&Value, ApiError> {
    if body.is_object() {
        Ok(body)
    } else {
        Err(ApiError::bad_request(format!(
            "error decoding YAML: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(body)
        )))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn patch_sets_rv(patch: &Value) -> bool {
    patch.pointer("/metadata/resourceVersion").is_some()
        || patch.as_array().is_some_and(|ops| {
            ops.iter().any(|op| {
                op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
            })
        })
}

fn patch_error(e: patch::PatchError) -> ApiError {
    match e {
        patch::PatchError::BadPatch(m) => ApiError::bad_request(m),
        patch::PatchError::Failed(m) => ApiError::new(422, "Invalid", m),
    }
}

/// Applies a patch of any type to `old`.
pub fn apply_patch(
    r: &ResourceType,
    old: &Value,
    patch_type: PatchType,
    body: &Value,
) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Json => patch::json_patch(old, body).map_err(patch_error),
        PatchType::Merge => {
            if !body.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            Ok(patch::merge_patch(old, body))
        }
        PatchType::Strategic | PatchType::Apply => {
            if !body.is_object() {
                return Err(ApiError::bad_request("patch must be a JSON object"));
            }
            let mut body = body.clone();
            if patch_type == PatchType::Apply {
                // The applied configuration carries no resourceVersion semantics.
                remove_meta(&mut body, "resourceVersion");
            }
            patch::strategic_merge_patch(old, &body, r.api_version, r.kind).map_err(patch_error)
        }
    }
}

fn pod_grace_period(pod: &Value, opts: &DeleteOptions) -> i64 {
    let scheduled = str_at(pod, "/spec/nodeName").is_some_and(|n| !n.is_empty());
    let terminal = matches!(str_at(pod, "/status/phase"), Some("Succeeded" | "Failed"));
    if !scheduled || terminal {
        return 0;
    }
    opts.grace_period_seconds
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

/// The autoscaling/v1 Scale of a scalable object.
pub fn scale_of(obj: &Value) -> Value {
    let m = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = m.get(f) {
            metadata[f] = v.clone();
        }
    }
    let selector = obj
        .pointer("/spec/selector")
        .map(meta::selector_string)
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Chunk sizes a paginated list reads from the store with.
const MIN_LIST_CHUNK: usize = 100;
const MAX_LIST_CHUNK: usize = 10_000;

/// One page of a list, filled from stored items in key order.
struct PageFill<'a> {
    r: &'a ResourceType,
    /// A cluster-wide list of a namespaced resource takes keys below the
    /// prefix's next level (`<namespace>/<name>`).
    nested_ok: bool,
    prefix_len: usize,
    filter: &'a Filter,
    limit: Option<usize>,
    items: Vec<Value>,
    last_key: Option<String>,
}

impl PageFill<'_> {
    /// Takes the matching ones of `kvs` until the page is full; then the
    /// position in `kvs` of the first matching item that did not fit.
    fn fill<'k>(
        &mut self,
        kvs: impl Iterator<Item = &'k KeyValue>,
    ) -> Result<Option<usize>, ApiError> {
        for (i, kv) in kvs.enumerate() {
            // Nested keys under a namespaced prefix are other resources' (none today), skip them.
            if kv.key[self.prefix_len..].contains('/') && !self.nested_ok {
                continue;
            }
            let obj = decode(self.r, kv)?;
            if !self.filter.matches(&obj) {
                continue;
            }
            if self.limit.is_some_and(|l| self.items.len() >= l) {
                return Ok(Some(i));
            }
            self.last_key = Some(kv.key.clone());
            self.items.push(obj);
        }
        Ok(None)
    }
}

fn make_continue(revision: Revision, last_key: &str) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": last_key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn parse_continue(token: &str, prefix: &str) -> Result<(Revision, String), ApiError> {
    use base64::Engine;
    let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| bad(&e.to_string()))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| bad(&e.to_string()))?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let rev = v
        .get("rv")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("missing resource version"))?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing start key"))?;
    if !start.starts_with(prefix) {
        return Err(bad("the continue key belongs to another list"));
    }
    Ok((rev, start.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(plural: &str) -> &'static ResourceType {
        resources::find("", "v1", plural).unwrap()
    }

    #[test]
    fn an_object_is_stored_without_its_resource_version_and_self_link() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "resourceVersion": "9", "selfLink": "/x", "uid": "u"},
            "spec": {"containers": [{"name": "c"}]}});
        let stored: Value = serde_json::from_slice(&encode(core("pods"), &obj).unwrap()).unwrap();
        assert_eq!(
            stored,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "uid": "u"},
                "spec": {"containers": [{"name": "c"}]}})
        );
        assert_eq!(encode(core("pods"), &json!(3)).unwrap(), b"3");
    }

    #[test]
    fn metadata_only_decoding_gives_the_metadata_of_a_full_decode() {
        let stored = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"n","labels":{"x":"y"},"ownerReferences":[{"uid":"u"}]},"spec":{"containers":[{"name":"c"}]},"status":{"phase":"Running"}}"#;
        let full = decode_at(core("pods"), stored, 7).unwrap();
        let meta = decode_metadata_at(core("pods"), stored, 7).unwrap();
        assert_eq!(meta, json!({"metadata": full["metadata"].clone()}));
        assert_eq!(meta["metadata"]["resourceVersion"], "7");
        // The HPA v1 conversion changes annotations: those are decoded in full.
        let hpa = resources::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let stored = br#"{"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"h"},"spec":{"metrics":[{"type":"Resource","resource":{"name":"memory","target":{"type":"Utilization","averageUtilization":50}}}]}}"#;
        let full = decode_at(hpa, stored, 3).unwrap();
        assert!(full["metadata"]["annotations"].is_object(), "{full}");
        assert_eq!(
            decode_metadata_at(hpa, stored, 3).unwrap(),
            json!({"metadata": full["metadata"].clone()})
        );
    }

    #[test]
    fn label_selectors_match_the_labels_decoded_alone_as_the_whole_object() {
        let pods = core("pods");
        let with = br#"{"metadata":{"name":"a","labels":{"app":"web","tier":"x"},"managedFields":[{"manager":"m"}]},"spec":{}}"#;
        let without = br#"{"metadata":{"name":"b"},"spec":{}}"#;
        let no_metadata = br#"{"spec":{}}"#;
        for selector in ["app=web", "app!=web", "tier", "!tier", "app in (db)"] {
            let filter = Filter::new(pods, Some(selector), None).unwrap();
            assert!(filter.reads_only_labels());
            for stored in [&with[..], without, no_metadata] {
                let full = decode_at(pods, stored, 4).unwrap();
                let labels = decode_labels_at(pods, stored, 4).unwrap();
                assert_eq!(filter.matches(&labels), filter.matches(&full), "{selector}");
            }
        }
        assert_eq!(
            decode_labels_at(pods, with, 4).unwrap(),
            json!({"metadata": {"labels": {"app": "web", "tier": "x"}}})
        );
        assert!(
            !Filter::new(pods, Some("app"), Some("metadata.name=a"))
                .unwrap()
                .reads_only_labels()
        );
    }

    #[test]
    fn a_deletion_timestamp_is_found_without_decoding_the_object() {
        assert!(stored_is_deleting(br#"{"metadata":{"name":"n","deletionTimestamp":"2026-01-01T00:00:00Z"},"spec":{}}"#).unwrap());
        assert!(
            !stored_is_deleting(br#"{"metadata":{"name":"n","deletionTimestamp":null}}"#).unwrap()
        );
        assert!(
            !stored_is_deleting(br#"{"metadata":{"name":"n"},"status":{"phase":"Active"}}"#)
                .unwrap()
        );
        assert!(stored_is_deleting(b"not json").is_err());
    }

    #[test]
    fn name_and_namespace_selectors_are_decided_by_the_key() {
        let f = |field: &str| Filter::new(core("configmaps"), None, Some(field)).unwrap();
        let key = "/registry/configmaps/kube-system/kube-root-ca.crt";
        assert_eq!(
            f("metadata.name=kube-root-ca.crt").matches_key(core("configmaps"), key),
            Some(true)
        );
        assert_eq!(
            f("metadata.name=other").matches_key(core("configmaps"), key),
            Some(false)
        );
        assert_eq!(
            f("metadata.namespace=kube-system,metadata.name!=x")
                .matches_key(core("configmaps"), key),
            Some(true)
        );
        assert_eq!(
            f("metadata.namespace=default").matches_key(core("configmaps"), key),
            Some(false)
        );
        // Other fields and label selectors need the object.
        let pods = Filter::new(core("pods"), None, Some("spec.nodeName=n1")).unwrap();
        assert_eq!(
            pods.matches_key(core("pods"), "/registry/pods/default/a"),
            None
        );
        let labels = Filter::new(core("pods"), Some("app=web"), None).unwrap();
        assert_eq!(
            labels.matches_key(core("pods"), "/registry/pods/default/a"),
            None
        );
        let everything = Filter::new(core("pods"), None, None).unwrap();
        assert_eq!(
            everything.matches_key(core("pods"), "/registry/pods/default/a"),
            Some(true)
        );
        // Cluster-scoped keys have no namespace.
        let nodes = Filter::new(core("nodes"), None, Some("metadata.name=n1")).unwrap();
        assert_eq!(
            nodes.matches_key(core("nodes"), &meta::key(core("nodes"), None, "n1")),
            Some(true)
        );
        assert_eq!(
            nodes.matches_key(core("nodes"), &meta::key(core("nodes"), None, "n2")),
            Some(false)
        );
    }

    #[test]
    fn secret_string_data_becomes_data() {
        let mut s = json!({"stringData": {"password": "s3cret"}, "data": {"x": "eQ=="}});
        merge_string_data(&mut s);
        assert_eq!(s, json!({"data": {"x": "eQ==", "password": "czNjcmV0"}}));
    }

    #[test]
    fn continue_tokens_roundtrip_and_reject_garbage() {
        let t = make_continue(42, "/registry/pods/default/b");
        assert_eq!(
            parse_continue(&t, "/registry/pods/").unwrap(),
            (42, "/registry/pods/default/b".to_string())
        );
        assert_eq!(
            parse_continue("!!!", "/registry/pods/").unwrap_err().code,
            400
        );
        assert_eq!(
            parse_continue(&t, "/registry/configmaps/")
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn scale_reads_replicas_and_selector() {
        let d = json!({"metadata": {"name": "d", "namespace": "n", "resourceVersion": "7"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 2}});
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn pods_on_nodes_get_a_grace_period() {
        let pod = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}, "status": {"phase": "Running"}});
        assert_eq!(pod_grace_period(&pod, &DeleteOptions::default()), 10);
        let forced = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(pod_grace_period(&pod, &forced), 0);
        assert_eq!(
            pod_grace_period(&json!({"spec": {}}), &DeleteOptions::default()),
            0
        );
    }
}
