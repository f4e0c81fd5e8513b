//! Per-namespace defaults: the `default` ServiceAccount (upstream
//! serviceaccounts-controller) and the `kube-root-ca.crt` ConfigMap with the
//! cluster CA (upstream root-ca-cert-publisher), recreated when deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

pub const ROOT_CA: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    #[error("failed to {action} in namespace {ns}")]
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
    accounts: Store<ServiceAccount>,
    configmaps: Store<ConfigMap>,
    ca: String,
}

/// Starts the controller; without a readable CA only the ServiceAccounts
/// are kept.
pub fn spawn(ctx: &ControllerContext) {
    let ca_path = ctx.config.data_dir.join("tls").join("ca.crt");
    let ca = match std::fs::read_to_string(&ca_path) {
        Ok(ca) => ca,
        Err(err) => {
            tracing::warn!(path = %ca_path.display(), %err, "cannot read the cluster CA; kube-root-ca.crt is not published");
            String::new()
        }
    };
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let namespaces = ctx.informers.informer(
        Api::<Namespace>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |ns: &Namespace| q.add("", &ns.name_any()),
    );
    let q = queue.clone();
    let accounts = ctx.informers.informer(
        Api::<ServiceAccount>::all(ctx.client.clone()),
        watcher::Config::default().fields("metadata.name=default"),
        move |sa: &ServiceAccount| q.add("", &sa.namespace().unwrap_or_default()),
    );
    let q = queue.clone();
    let configmaps = ctx.informers.informer(
        Api::<ConfigMap>::all(ctx.client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CA}")),
        move |cm: &ConfigMap| q.add("", &cm.namespace().unwrap_or_default()),
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        namespaces,
        accounts,
        configmaps,
        ca,
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.namespaces.wait_until_ready().await;
        c.accounts.wait_until_ready().await;
        c.configmaps.wait_until_ready().await;
        util::run_workers("serviceaccount", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

async fn sync(c: &Ctx, (_, ns): Key) -> Result<Requeue, ServiceAccountError> {
    let Some(namespace) = c.namespaces.get(&ObjectRef::new(&ns)) else {
        return Ok(None);
    };
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let err = |action: &'static str| {
        let ns = ns.clone();
        move |source| ServiceAccountError::Api { action, ns, source }
    };
    if c.accounts
        .get(&ObjectRef::new("default").within(&ns))
        .is_none()
    {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        ignore_exists(
            Api::<ServiceAccount>::namespaced(c.client.clone(), &ns)
                .create(&PostParams::default(), &sa)
                .await,
        )
        .map_err(err("create the default service account"))?;
    }
    if c.ca.is_empty() {
        return Ok(None);
    }
    let data: BTreeMap<String, String> = [("ca.crt".to_string(), c.ca.clone())].into();
    let api = Api::<ConfigMap>::namespaced(c.client.clone(), &ns);
    match c.configmaps.get(&ObjectRef::new(ROOT_CA).within(&ns)) {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA.into()),
                    annotations: Some(
                        [(
                            "kubernetes.io/description".to_string(),
                            DESCRIPTION.to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            ignore_exists(api.create(&PostParams::default(), &cm).await)
                .map_err(err("create the root CA config map"))?;
        }
        Some(cm) if cm.data.as_ref() != Some(&data) => {
            let mut cm = (*cm).clone();
            cm.data = Some(data);
            api.replace(ROOT_CA, &PostParams::default(), &cm)
                .await
                .map_err(err("update the root CA config map"))?;
        }
        Some(_) => {}
    }
    Ok(None)
}

/// Treats AlreadyExists (a lagging store) and Forbidden (the namespace
/// began terminating) as done.
fn ignore_exists<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(()),
        Err(e) => Err(e),
    }
}
