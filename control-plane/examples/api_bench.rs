//! Object creates per second through the HTTP API: N ConfigMaps created by C
//! concurrent requests of one kube-rs client against a running server
//! (hack/bench runs it).
//!
//! usage: api_bench KUBECONFIG N CONCURRENCY [NAMESPACE]

mod harness;

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (kubeconfig, total, concurrency) = match args.as_slice() {
        [_, k, n, c, ..] => (k.clone(), n.parse::<usize>()?, c.parse::<usize>()?),
        _ => anyhow::bail!("usage: api_bench KUBECONFIG N CONCURRENCY [NAMESPACE]"),
    };
    let namespace = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "default".to_string());
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).context("reading the kubeconfig")?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config)?, &namespace);
    let run = format!("bench-{}", std::process::id());

    let result = harness::run_load(total, concurrency, move |i| {
        let api = api.clone();
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{run}-{i}")),
                ..Default::default()
            },
            data: Some([("key".to_string(), "value".repeat(16))].into()),
            ..Default::default()
        };
        async move {
            api.create(&PostParams::default(), &cm).await?;
            Ok(())
        }
    })
    .await?;
    println!("r8s-server creates: {}", result.summary(concurrency));
    Ok(())
}
