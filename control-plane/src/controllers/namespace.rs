//! The namespace lifecycle controller: for a namespace being deleted it
//! deletes every namespaced object in it, reports progress in the status
//! conditions, and once nothing is left removes the `kubernetes` finalizer
//! through `namespaces/{name}/finalize` so the server deletes the namespace
//! (upstream pkg/controller/namespace/deletion).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

const FINALIZER: &str = "kubernetes";
/// How often a namespace still holding content is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("failed to {action} namespace {ns}")]
    Api {
        action: &'static str,
        ns: String,
        #[source]
        source: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    namespaces: Store<Namespace>,
}

/// Starts the controller.
pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let namespaces = ctx.informers.informer(
        Api::<Namespace>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |ns: &Namespace| {
            if ns.metadata.deletion_timestamp.is_some() {
                q.add("", &ns.name_any());
            }
        },
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        namespaces,
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.namespaces.wait_until_ready().await;
        util::run_workers("namespace", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

/// What one deletion pass found.
#[derive(Default)]
struct Remaining {
    /// plural -> objects left
    content: BTreeMap<String, usize>,
    /// finalizer -> objects carrying it
    finalizers: BTreeMap<String, usize>,
    delete_errors: Vec<String>,
    list_errors: Vec<String>,
}

async fn sync(c: &Ctx, (_, name): Key) -> Result<Requeue, NamespaceError> {
    let Some(ns) = c.namespaces.get(&ObjectRef::new(&name)) else {
        return Ok(None);
    };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(None);
    }
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    let left = delete_content(c, &name).await;
    let api: Api<Namespace> = Api::all(c.client.clone());
    let err = |action: &'static str| {
        let ns = name.clone();
        move |source| NamespaceError::Api { action, ns, source }
    };
    let conditions = conditions(&left);
    let old = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if !same_conditions(&old, &conditions) {
        let patch = json!({"status": {"phase": "Terminating", "conditions": conditions}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(err("update the status of")(e)),
        }
    }
    if !left.content.is_empty() || !left.list_errors.is_empty() || !left.delete_errors.is_empty() {
        return Ok(Some(RECHECK));
    }
    let mut fresh = api.get(&name).await.map_err(err("read"))?;
    if let Some(spec) = fresh.spec.as_mut() {
        spec.finalizers = Some(
            spec.finalizers
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != FINALIZER)
                .collect(),
        );
    }
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &fresh)
        .await
    {
        Ok(_) => tracing::info!(namespace = %name, "namespace finalized"),
        Err(e) if util::is_not_found(&e) => {}
        Err(e) => return Err(err("finalize")(e)),
    }
    Ok(None)
}

/// Objects listed per request: a namespace with tens of thousands of pods
/// is read a page at a time, metadata only, never as one list.
const PAGE: u32 = 500;

/// Deletes what is left of every namespaced kind and counts what remains.
async fn delete_content(c: &Ctx, ns: &str) -> Remaining {
    let mut left = Remaining::default();
    for r in util::stored_kinds().into_iter().filter(|r| r.namespaced) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(c.client.clone(), ns, &util::api_resource(r));
        let kind = format!("{}.{}", r.plural, r.group)
            .trim_end_matches('.')
            .to_string();
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = match api.list_metadata(&params).await {
                Ok(l) => l,
                Err(e) => {
                    left.list_errors.push(format!("{}: {e}", r.plural));
                    break;
                }
            };
            if !page.items.is_empty() {
                *left.content.entry(kind.clone()).or_insert(0) += page.items.len();
            }
            for obj in &page.items {
                for f in obj.finalizers() {
                    *left.finalizers.entry(f.clone()).or_insert(0) += 1;
                }
                if obj.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match api
                    .delete(&obj.name_any(), &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => {
                        left.delete_errors
                            .push(format!("{}/{}: {e}", r.plural, obj.name_any()))
                    }
                }
            }
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    left
}

fn cond(type_: &str, status: bool, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(util::now()),
    }
}

/// The five deletion conditions with upstream's reasons and messages.
fn conditions(left: &Remaining) -> Vec<NamespaceCondition> {
    let discovery = if left.list_errors.is_empty() {
        cond(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        )
    } else {
        cond(
            "NamespaceDeletionDiscoveryFailure",
            true,
            "DiscoveryFailed",
            format!(
                "Discovery failed for some groups, {} failing: {}",
                left.list_errors.len(),
                left.list_errors.join(", ")
            ),
        )
    };
    let parsing = cond(
        "NamespaceDeletionGroupVersionParsingFailure",
        false,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed".into(),
    );
    let content = if left.delete_errors.is_empty() {
        cond(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        )
    } else {
        cond(
            "NamespaceDeletionContentFailure",
            true,
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                left.delete_errors.len(),
                left.delete_errors.join(", ")
            ),
        )
    };
    let remaining = if left.content.is_empty() {
        cond(
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        let parts: Vec<String> = left
            .content
            .iter()
            .map(|(k, n)| format!("{k} has {n} resource instances"))
            .collect();
        cond(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    };
    let finalizers = if left.finalizers.is_empty() {
        cond(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let parts: Vec<String> = left
            .finalizers
            .iter()
            .map(|(k, n)| format!("{k} in {n} resource instances"))
            .collect();
        cond(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    };
    vec![discovery, parsing, content, remaining, finalizers]
}

fn same_conditions(a: &[NamespaceCondition], b: &[NamespaceCondition]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.type_ == y.type_ && x.status == y.status && x.message == y.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_content_is_reported_like_upstream() {
        let mut left = Remaining::default();
        left.content.insert("pods".into(), 2);
        left.finalizers.insert("foregroundDeletion".into(), 1);
        let cs = conditions(&left);
        let remaining = cs
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining")
            .unwrap();
        assert_eq!(remaining.status, "True");
        assert_eq!(
            remaining.message.as_deref(),
            Some("Some resources are remaining: pods has 2 resource instances")
        );
        let fins = cs
            .iter()
            .find(|c| c.type_ == "NamespaceFinalizersRemaining")
            .unwrap();
        assert_eq!(
            fins.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: foregroundDeletion in 1 resource instances"
            )
        );
    }
}
