//! Objects decoded without `metadata.managedFields`, for the watches of the
//! controllers and the scheduler. They drop managedFields anyway (as
//! client-go's informers do with their transform); skipping them while
//! decoding saves building and freeing them: a pod's managedFields were
//! about half of what decoding each watch event cost.
//!
//! `Lean<K>` is a `kube::Resource` with `K`'s URL, so `Api<Lean<K>>` watches
//! what `Api<K>` watches; [`watcher`] is kube's, decoding `Lean<K>`.

use std::borrow::Cow;
use std::fmt::{self, Debug};

use futures::{Stream, TryStreamExt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::core::{DynamicResourceScope, Resource};
use kube::runtime::watcher as kube_watcher;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor,
};

/// `K` as decoded without `metadata.managedFields`.
#[derive(Clone, Debug)]
pub struct Lean<K>(pub K);

impl<K: Resource> Resource for Lean<K> {
    type DynamicType = K::DynamicType;
    // Any scope: `Api::namespaced_with` then builds both kinds of URL.
    type Scope = DynamicResourceScope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn metadata_api() -> bool {
        K::metadata_api()
    }
    fn url_path(dt: &Self::DynamicType, namespace: Option<&str>) -> String {
        K::url_path(dt, namespace)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// The `Api` of `Lean<K>` for the URL (and namespace) of `api`.
fn api<K: Resource>(api: Api<K>, dt: &K::DynamicType) -> Api<Lean<K>> {
    let ns = api.namespace().map(str::to_string);
    let client = api.into_client();
    match ns {
        Some(ns) => Api::namespaced_with(client, &ns, dt),
        None => Api::all_with(client, dt),
    }
}

/// `kube::runtime::watcher` of `api`'s objects, decoded without their
/// managedFields.
pub fn watcher<K>(
    api: Api<K>,
    dt: &K::DynamicType,
    config: kube_watcher::Config,
) -> impl Stream<Item = kube_watcher::Result<kube_watcher::Event<K>>> + Send + use<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    kube_watcher::watcher(self::api(api, dt), config).map_ok(unwrap_event)
}

/// A watch event of `Lean<K>` as the event of its `K`.
fn unwrap_event<K>(event: kube_watcher::Event<Lean<K>>) -> kube_watcher::Event<K> {
    match event {
        kube_watcher::Event::Apply(o) => kube_watcher::Event::Apply(o.0),
        kube_watcher::Event::Delete(o) => kube_watcher::Event::Delete(o.0),
        kube_watcher::Event::Init => kube_watcher::Event::Init,
        kube_watcher::Event::InitApply(o) => kube_watcher::Event::InitApply(o.0),
        kube_watcher::Event::InitDone => kube_watcher::Event::InitDone,
    }
}

impl<'de, K: de::Deserialize<'de>> de::Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::deserialize(Skipping {
            inner: d,
            level: Level::Object,
        })
        .map(Lean)
    }
}

/// Where a map being decoded sits.
#[derive(Clone, Copy, PartialEq)]
enum Level {
    /// The object: its `metadata` is decoded at `Metadata`.
    Object,
    /// `metadata`: its `managedFields` are skipped.
    Metadata,
}

/// A deserializer whose maps go through `SkippingMap`.
struct Skipping<D> {
    inner: D,
    level: Level,
}

/// A visitor whose maps go through `SkippingMap`.
struct SkippingVisitor<V> {
    inner: V,
    level: Level,
}

/// A map whose `metadata` is decoded at `Level::Metadata`, or whose
/// `managedFields` are skipped.
struct SkippingMap<A> {
    inner: A,
    level: Level,
    /// The last key read was `metadata` (at `Level::Object`).
    metadata_next: bool,
}

/// A seed that decodes its value at `Level::Metadata`.
struct MetadataSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for MetadataSeed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Skipping {
            inner: d,
            level: Level::Metadata,
        })
    }
}

/// A map key, borrowed from the input when it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkippingMap<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        loop {
            let Some(Key(key)) = self.inner.next_key::<Key<'de>>()? else {
                return Ok(None);
            };
            match (self.level, key.as_ref()) {
                (Level::Metadata, "managedFields") => {
                    self.inner.next_value::<IgnoredAny>()?;
                    continue;
                }
                (Level::Object, "metadata") => self.metadata_next = true,
                _ => self.metadata_next = false,
            }
            let key: de::value::CowStrDeserializer<'_, A::Error> =
                de::IntoDeserializer::into_deserializer(key);
            return seed.deserialize(key).map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        if std::mem::take(&mut self.metadata_next) {
            self.inner.next_value_seed(MetadataSeed(seed))
        } else {
            self.inner.next_value_seed(seed)
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for SkippingVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(SkippingMap {
            inner: map,
            level: self.level,
            metadata_next: false,
        })
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Skipping {
            inner: d,
            level: self.level,
        })
    }
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(seq)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.inner.visit_bool(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.inner.visit_i64(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.inner.visit_u64(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.inner.visit_f64(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.inner.visit_str(v)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.inner.visit_borrowed_str(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.inner.visit_string(v)
    }
}

/// Deserializer methods that pass the visitor through `SkippingVisitor`.
macro_rules! skipping {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* SkippingVisitor { inner: visitor, level: self.level })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Skipping<D> {
    type Error = D::Error;

    skipping! {
        deserialize_any(),
        deserialize_map(),
        deserialize_option(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::core::{DynamicObject, PartialObjectMeta};
    use serde_json::json;

    use super::*;

    fn pod_json() -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "web"}, "annotations": {"a": "b"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "o", "controller": true}],
                "finalizers": ["f"], "deletionTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}}}}}}]},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "100m"}}}],
                "nodeName": "n1", "tolerations": [{"key": "k", "operator": "Exists"}],
                "nodeSelector": {"metadata": "x", "managedFields": "y"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    #[test]
    fn objects_decode_as_before_without_their_managed_fields() {
        let text = pod_json().to_string();
        let mut full: Pod = serde_json::from_str(&text).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        full.metadata.managed_fields = None;
        let lean: Lean<Pod> = serde_json::from_str(&text).unwrap();
        // Keys named like the skipped ones deeper down are kept.
        assert_eq!(
            lean.0
                .spec
                .as_ref()
                .unwrap()
                .node_selector
                .as_ref()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(lean.0, full);

        let mut meta: PartialObjectMeta<DynamicObject> = serde_json::from_str(&text).unwrap();
        meta.metadata.managed_fields = None;
        let lean: Lean<PartialObjectMeta<DynamicObject>> = serde_json::from_str(&text).unwrap();
        assert_eq!(lean.0.metadata, meta.metadata);
    }

    #[test]
    fn watch_events_and_odd_objects_decode() {
        let line = json!({"type": "MODIFIED", "object": pod_json()}).to_string();
        let event: kube::core::WatchEvent<Lean<Pod>> = serde_json::from_str(&line).unwrap();
        let kube::core::WatchEvent::Modified(pod) = event else {
            panic!("a modification");
        };
        assert_eq!(pod.0.metadata.name.as_deref(), Some("p"));
        assert!(pod.0.metadata.managed_fields.is_none());
        let node: Lean<Node> =
            serde_json::from_str(r#"{"metadata":{"name":"a\"b","managedFields":null}}"#).unwrap();
        assert_eq!(node.0.metadata.name.as_deref(), Some("a\"b"));
        assert!(serde_json::from_str::<Lean<Pod>>(r#"{"metadata": 3}"#).is_err());
        assert!(serde_json::from_str::<Lean<Pod>>("[]").is_err());
    }

    #[tokio::test]
    async fn the_lean_api_has_the_urls_of_the_api() {
        let client = || {
            let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
            kube::Client::try_from(config).unwrap()
        };
        let all = api(Api::<Pod>::all(client()), &());
        assert_eq!(all.resource_url(), "/api/v1/pods");
        let ns = api(Api::<Pod>::namespaced(client(), "kube-system"), &());
        assert_eq!(ns.resource_url(), "/api/v1/namespaces/kube-system/pods");
        let nodes = api(Api::<Node>::all(client()), &());
        assert_eq!(nodes.resource_url(), "/api/v1/nodes");
    }
}
