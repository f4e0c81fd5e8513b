//! Objects decoded without `metadata.managedFields`, for the watches of the
//! controllers and the scheduler. They drop managedFields anyway (as
//! client-go's informers do with their transform); skipping them while
//! decoding saves building and freeing them: a pod's managedFields were
//! about half of what decoding each watch event cost.
//!
//! `Lean<K>` is a `kube::Resource` with `K`'s URL, so `Api<Lean<K>>` watches
//! what `Api<K>` watches; [`watcher`] is kube's, decoding `Lean<K>`. A watch
//! that drops more (the scheduler's pods) names its own [`Rules`] with
//! [`watcher_with`].

use std::borrow::Cow;
use std::fmt::{self, Debug};
use std::marker::PhantomData;

use futures::{Stream, TryStreamExt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::core::{DynamicResourceScope, Resource};
use kube::runtime::watcher as kube_watcher;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess,
    Visitor,
};

/// The members a decoding skips at one place in an object.
#[derive(Debug)]
pub struct Skip {
    /// Members skipped here.
    pub skip: &'static [&'static str],
    /// When set, every member but these is skipped.
    pub keep_only: Option<&'static [&'static str]>,
    /// Members decoded with rules of their own (every item, for a list).
    pub nested: &'static [(&'static str, &'static Skip)],
}

impl Skip {
    fn skips(&self, key: &str) -> bool {
        self.skip.contains(&key) || self.keep_only.is_some_and(|keep| !keep.contains(&key))
    }

    fn nested(&self, key: &str) -> Option<&'static Skip> {
        self.nested.iter().find(|(k, _)| *k == key).map(|(_, s)| *s)
    }
}

/// What a decoding skips, from the object's top level.
pub trait Rules: Send + Sync + 'static {
    const ROOT: &'static Skip;
}

/// `metadata.managedFields`, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct WithoutManagedFields;

impl Rules for WithoutManagedFields {
    const ROOT: &'static Skip = &Skip {
        skip: &[],
        keep_only: None,
        nested: &[(
            "metadata",
            &Skip {
                skip: &["managedFields"],
                keep_only: None,
                nested: &[],
            },
        )],
    };
}

/// `K` as decoded without what `R` skips (by default its
/// `metadata.managedFields`).
#[derive(Clone, Debug)]
pub struct Lean<K, R = WithoutManagedFields>(pub K, PhantomData<R>);

impl<K: Resource, R: Rules> Resource for Lean<K, R> {
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

/// The `Api` of `Lean<K, R>` for the URL (and namespace) of `api`.
fn api<K: Resource, R: Rules>(api: Api<K>, dt: &K::DynamicType) -> Api<Lean<K, R>> {
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
    watcher_with::<K, WithoutManagedFields>(api, dt, config)
}

/// `kube::runtime::watcher` of `api`'s objects, decoded without what `R`
/// skips.
pub fn watcher_with<K, R>(
    api: Api<K>,
    dt: &K::DynamicType,
    config: kube_watcher::Config,
) -> impl Stream<Item = kube_watcher::Result<kube_watcher::Event<K>>> + Send + use<K, R>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    R: Rules + Clone + Debug,
{
    kube_watcher::watcher(self::api::<K, R>(api, dt), config).map_ok(unwrap_event)
}

/// A watch event of `Lean<K, R>` as the event of its `K`.
fn unwrap_event<K, R>(event: kube_watcher::Event<Lean<K, R>>) -> kube_watcher::Event<K> {
    match event {
        kube_watcher::Event::Apply(o) => kube_watcher::Event::Apply(o.0),
        kube_watcher::Event::Delete(o) => kube_watcher::Event::Delete(o.0),
        kube_watcher::Event::Init => kube_watcher::Event::Init,
        kube_watcher::Event::InitApply(o) => kube_watcher::Event::InitApply(o.0),
        kube_watcher::Event::InitDone => kube_watcher::Event::InitDone,
    }
}

impl<'de, K: de::Deserialize<'de>, R: Rules> de::Deserialize<'de> for Lean<K, R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::deserialize(Skipping {
            inner: d,
            rules: R::ROOT,
        })
        .map(|k| Lean(k, PhantomData))
    }
}

/// A deserializer whose maps and lists go through `SkippingMap` and
/// `SkippingSeq`.
struct Skipping<D> {
    inner: D,
    rules: &'static Skip,
}

/// A visitor whose maps and lists go through `SkippingMap` and
/// `SkippingSeq`.
struct SkippingVisitor<V> {
    inner: V,
    rules: &'static Skip,
}

/// A map whose members `rules` skips are skipped, and whose members with
/// rules of their own are decoded with them.
struct SkippingMap<A> {
    inner: A,
    rules: &'static Skip,
    /// The rules of the member whose key was read last, if it has some.
    next: Option<&'static Skip>,
}

/// A list whose items are decoded with `rules`.
struct SkippingSeq<A> {
    inner: A,
    rules: &'static Skip,
}

/// A seed that decodes its value with `rules`.
struct RulesSeed<S> {
    seed: S,
    rules: &'static Skip,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for RulesSeed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Skipping {
            inner: d,
            rules: self.rules,
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
            if self.rules.skips(&key) {
                self.inner.next_value::<IgnoredAny>()?;
                continue;
            }
            self.next = self.rules.nested(&key);
            let key: de::value::CowStrDeserializer<'_, A::Error> =
                de::IntoDeserializer::into_deserializer(key);
            return seed.deserialize(key).map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        match self.next.take() {
            Some(rules) => self.inner.next_value_seed(RulesSeed { seed, rules }),
            None => self.inner.next_value_seed(seed),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for SkippingSeq<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.inner.next_element_seed(RulesSeed {
            seed,
            rules: self.rules,
        })
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
            rules: self.rules,
            next: None,
        })
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Skipping {
            inner: d,
            rules: self.rules,
        })
    }
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(SkippingSeq {
            inner: seq,
            rules: self.rules,
        })
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
            self.inner.$method($($arg,)* SkippingVisitor { inner: visitor, rules: self.rules })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Skipping<D> {
    type Error = D::Error;

    skipping! {
        deserialize_any(),
        deserialize_map(),
        deserialize_option(),
        deserialize_seq(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct tuple
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
        let all = api::<_, WithoutManagedFields>(Api::<Pod>::all(client()), &());
        assert_eq!(all.resource_url(), "/api/v1/pods");
        let ns =
            api::<_, WithoutManagedFields>(Api::<Pod>::namespaced(client(), "kube-system"), &());
        assert_eq!(ns.resource_url(), "/api/v1/namespaces/kube-system/pods");
        let nodes = api::<_, WithoutManagedFields>(Api::<Node>::all(client()), &());
        assert_eq!(nodes.resource_url(), "/api/v1/nodes");
    }
}
