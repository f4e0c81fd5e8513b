//! The peer figure for api_bench: N raw puts to a local etcd with C requests
//! in flight (hack/bench starts Debian's etcd on loopback and runs it).
//!
//! usage: etcd_bench ENDPOINT N CONCURRENCY

mod harness;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, total, concurrency) = match args.as_slice() {
        [_, e, n, c, ..] => (e.clone(), n.parse::<usize>()?, c.parse::<usize>()?),
        _ => anyhow::bail!("usage: etcd_bench ENDPOINT N CONCURRENCY"),
    };
    let client = etcd_client::Client::connect([endpoint], None).await?;
    let value = "v".repeat(300);
    let result = harness::run_load(total, concurrency, move |i| {
        let mut client = client.clone();
        let value = value.clone();
        async move {
            client
                .put(
                    format!("/registry/configmaps/default/bench-{i}"),
                    value,
                    None,
                )
                .await?;
            Ok(())
        }
    })
    .await?;
    println!("etcd puts: {}", result.summary(concurrency));
    Ok(())
}
