//! The legacy tokens controller (upstream `serviceaccounts/tokens_controller`):
//! a Secret of type `kubernetes.io/service-account-token` annotated with
//! `kubernetes.io/service-account.name` gets a signed, non-expiring token,
//! the cluster CA and the namespace filled in, and the ServiceAccount's uid
//! annotation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::auth::sa_keys::SigningKey;
use crate::auth::sa_token;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("failed to {action} for secret {ns}/{name}")]
    Api {
        action: &'static str,
        ns: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to sign a token")]
    Sign(#[from] crate::auth::sa_keys::KeyError),
}

struct Ctx {
    client: kube::Client,
    secrets: Store<Secret>,
    key: SigningKey,
    ca: String,
}

/// Starts the controller (not at all without the signing key).
pub fn spawn(ctx: &ControllerContext) {
    let key = match SigningKey::ensure(&ctx.config.data_dir) {
        Ok(k) => k,
        Err(err) => {
            tracing::error!(%err, "no service account signing key; legacy token secrets are not filled");
            return;
        }
    };
    let ca =
        std::fs::read_to_string(ctx.config.data_dir.join("tls").join("ca.crt")).unwrap_or_default();
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let secrets = ctx.informers.informer(
        Api::<Secret>::all(ctx.client.clone()),
        watcher::Config::default().fields(&format!("type={TOKEN_TYPE}")),
        move |s: &Secret| q.add_key(util::key_of(s)),
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        secrets,
        key,
        ca,
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.secrets.wait_until_ready().await;
        util::run_workers("serviceaccount-tokens", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

/// Whether `secret` already holds what the controller fills in.
fn is_complete(secret: &Secret) -> bool {
    let data = secret.data.as_ref();
    let has = |k: &str| data.and_then(|d| d.get(k)).is_some_and(|v| !v.0.is_empty());
    has("token") && has("namespace")
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, TokensError> {
    let Some(secret) = c.secrets.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(None);
    };
    if secret.type_.as_deref() != Some(TOKEN_TYPE)
        || secret.metadata.deletion_timestamp.is_some()
        || is_complete(&secret)
    {
        return Ok(None);
    }
    let Some(sa_name) = secret.annotations().get(NAME_ANNOTATION).cloned() else {
        return Ok(None);
    };
    let err = |action: &'static str| {
        let (ns, name) = (ns.clone(), name.clone());
        move |source| TokensError::Api {
            action,
            ns,
            name,
            source,
        }
    };
    let sa = Api::<ServiceAccount>::namespaced(c.client.clone(), &ns)
        .get_opt(&sa_name)
        .await
        .map_err(err("read the service account"))?;
    let Some(sa) = sa else {
        // The ServiceAccount may be created after its Secret.
        return Ok(Some(Duration::from_secs(10)));
    };
    let sa_uid = sa.uid().unwrap_or_default();
    if let Some(uid) = secret.annotations().get(UID_ANNOTATION)
        && !uid.is_empty()
        && *uid != sa_uid
    {
        tracing::info!(namespace = %ns, secret = %name, "token secret refers to an older service account; not filled");
        return Ok(None);
    }
    let claims = sa_token::legacy_claims(
        &ns,
        &name,
        &sa_token::ObjectRef {
            name: sa_name,
            uid: sa_uid.clone(),
        },
    );
    let token = c.key.sign(&claims)?;
    let mut updated = (*secret).clone();
    updated
        .annotations_mut()
        .insert(UID_ANNOTATION.into(), sa_uid);
    let data: &mut BTreeMap<String, ByteString> = updated.data.get_or_insert_with(BTreeMap::new);
    data.insert("token".into(), ByteString(token.into_bytes()));
    data.insert("namespace".into(), ByteString(ns.clone().into_bytes()));
    if !c.ca.is_empty() {
        data.insert("ca.crt".into(), ByteString(c.ca.clone().into_bytes()));
    }
    Api::<Secret>::namespaced(c.client.clone(), &ns)
        .replace(&name, &PostParams::default(), &updated)
        .await
        .map_err(err("fill the token"))?;
    tracing::info!(namespace = %ns, secret = %name, "filled a service account token secret");
    Ok(None)
}
