//! The token cleaner (kube-controller-manager's tokencleaner): deletes
//! bootstrap token Secrets once their `expiration` has passed.

use std::sync::Arc;
use std::time::Duration;

use agent::bootstrap::token;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};
use crate::auth::bootstrap_token::TokenSecret;

#[derive(Debug, thiserror::Error)]
pub enum TokenCleanerError {
    #[error("failed to delete expired bootstrap token secret {name}")]
    Delete {
        name: String,
        #[source]
        source: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    secrets: Store<Secret>,
}

pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let secrets = ctx.informers.informer(
        Api::<Secret>::namespaced(ctx.client.clone(), token::SECRET_NAMESPACE),
        watcher::Config::default().fields(&format!("type={}", token::SECRET_TYPE)),
        move |s: &Secret| q.add(token::SECRET_NAMESPACE, &s.name_any()),
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        secrets,
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.secrets.wait_until_ready().await;
        util::run_workers("tokencleaner", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, TokenCleanerError> {
    let Some(secret) = c.secrets.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(None);
    };
    let Some(ts) = TokenSecret::from_secret(&secret) else {
        return Ok(None);
    };
    let Some(expiration) = ts.expiration else {
        return Ok(None);
    };
    let now = chrono::Utc::now();
    if !ts.is_expired(now) {
        let left = (expiration - now).to_std().unwrap_or_default();
        return Ok(Some(left + Duration::from_secs(1)));
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<Secret>::namespaced(c.client.clone(), &ns)
        .delete(&name, &params)
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %name, "deleted expired bootstrap token");
            Ok(None)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(source) => Err(TokenCleanerError::Delete { name, source }),
    }
}
