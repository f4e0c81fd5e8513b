//! The bootstrap signer (kube-controller-manager's bootstrapsigner): keeps
//! one `jws-kubeconfig-<id>` detached signature in the kube-public
//! `cluster-info` ConfigMap for every unexpired bootstrap token with
//! `usage-bootstrap-signing`, so joiners can check the CA they discover.

use std::collections::BTreeMap;
use std::sync::Arc;

use agent::bootstrap::token;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};
use crate::auth::bootstrap_token::TokenSecret;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapSignerError {
    #[error("failed to update the cluster-info config map")]
    Api(#[source] kube::Error),
}

/// The data `cluster-info` should hold: its data without stale
/// signatures, plus one signature of the kubeconfig per signing token.
pub fn signed_data(
    data: &BTreeMap<String, String>,
    tokens: &[TokenSecret],
    now: chrono::DateTime<chrono::Utc>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = data
        .iter()
        .filter(|(k, _)| !k.starts_with(token::JWS_KEY_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let Some(kubeconfig) = data.get(token::KUBECONFIG_KEY) else {
        return out;
    };
    for t in tokens {
        if t.has_usage("signing") && !t.is_expired(now) {
            out.insert(
                format!("{}{}", token::JWS_KEY_PREFIX, t.token.id),
                token::compute_detached_signature(kubeconfig, &t.token),
            );
        }
    }
    out
}

struct Ctx {
    client: kube::Client,
    configmaps: Store<ConfigMap>,
    secrets: Store<Secret>,
}

pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let configmaps = ctx.informers.informer(
        Api::<ConfigMap>::namespaced(ctx.client.clone(), token::CLUSTER_INFO_NAMESPACE),
        watcher::Config::default().fields(&format!("metadata.name={}", token::CLUSTER_INFO_NAME)),
        move |_: &ConfigMap| q.add("", token::CLUSTER_INFO_NAME),
    );
    let q = queue.clone();
    let secrets = ctx.informers.informer(
        Api::<Secret>::namespaced(ctx.client.clone(), token::SECRET_NAMESPACE),
        watcher::Config::default().fields(&format!("type={}", token::SECRET_TYPE)),
        move |_: &Secret| q.add("", token::CLUSTER_INFO_NAME),
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        configmaps,
        secrets,
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.configmaps.wait_until_ready().await;
        c.secrets.wait_until_ready().await;
        util::run_workers("bootstrapsigner", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

async fn sync(c: &Ctx, _: Key) -> Result<Requeue, BootstrapSignerError> {
    let Some(cm) = c
        .configmaps
        .get(&ObjectRef::new(token::CLUSTER_INFO_NAME).within(token::CLUSTER_INFO_NAMESPACE))
    else {
        return Ok(None);
    };
    let tokens: Vec<TokenSecret> = c
        .secrets
        .state()
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| TokenSecret::from_secret(s))
        .collect();
    let data = cm.data.clone().unwrap_or_default();
    let want = signed_data(&data, &tokens, chrono::Utc::now());
    if want == data {
        return Ok(None);
    }
    let mut cm = (*cm).clone();
    cm.data = Some(want);
    Api::<ConfigMap>::namespaced(c.client.clone(), token::CLUSTER_INFO_NAMESPACE)
        .replace(token::CLUSTER_INFO_NAME, &PostParams::default(), &cm)
        .await
        .map_err(BootstrapSignerError::Api)?;
    tracing::info!(tokens = tokens.len(), "signed cluster-info");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id_secret: &str, usages: &[&str], expired: bool) -> TokenSecret {
        let now = chrono::Utc::now();
        TokenSecret {
            token: id_secret.parse().unwrap(),
            expiration: expired.then(|| now - chrono::Duration::hours(1)),
            description: String::new(),
            usages: usages.iter().map(|u| u.to_string()).collect(),
            extra_groups: vec![],
        }
    }

    #[test]
    fn signs_for_unexpired_signing_tokens_and_drops_stale_signatures() {
        let data: BTreeMap<String, String> = [
            ("kubeconfig".to_string(), "kc".to_string()),
            ("jws-kubeconfig-gone00".to_string(), "x".to_string()),
        ]
        .into();
        let good = token("abcdef.0123456789abcdef", &["signing"], false);
        let out = signed_data(
            &data,
            &[
                good.clone(),
                token("bbbbbb.0123456789abcdef", &["authentication"], false),
                token("cccccc.0123456789abcdef", &["signing"], true),
            ],
            chrono::Utc::now(),
        );
        assert_eq!(out.len(), 2);
        assert!(token::detached_signature_is_valid(
            &out["jws-kubeconfig-abcdef"],
            "kc",
            &good.token
        ));
    }
}
