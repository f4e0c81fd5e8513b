//! The proxier: reflectors on Services and EndpointSlices feed a debounced sync that rebuilds
//! the ruleset and applies the smallest transaction (kube-proxy's `syncProxyRules`).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::conntrack::{Conntrack, stale_flows};
use crate::dns::DnsIndex;
use crate::dns_server::DnsCache;
use crate::metrics::Metrics;
use crate::model::{ServiceKey, ServicePort, service_ports};
use crate::nft::{Applier, NftError};
use crate::rules::{Leftovers, RulesConfig, Ruleset, build, build_reusing};

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Applying the transaction failed.
    #[error("failed to sync proxy rules")]
    Apply(#[source] NftError),
    /// The blocking apply task panicked or was cancelled.
    #[error("nftables apply task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// Holds the last applied ruleset and turns a new snapshot into a transaction.
pub struct Syncer {
    config: RulesConfig,
    applier: Arc<dyn Applier>,
    metrics: Arc<Metrics>,
    last: Option<Ruleset>,
    /// Stale chains and sets of incremental syncs, not deleted yet.
    leftovers: Leftovers,
    /// The model the last successful sync programmed, to find stale UDP flows and reuse the
    /// rules of unchanged Services.
    last_model: BTreeMap<ServiceKey, Vec<ServicePort>>,
    dns: Option<(String, DnsCache)>,
    conntrack: Option<Arc<dyn Conntrack>>,
}

impl Syncer {
    /// A syncer that has applied nothing yet (its first sync is a full one).
    pub fn new(config: RulesConfig, applier: Arc<dyn Applier>, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            applier,
            metrics,
            last: None,
            leftovers: Leftovers::default(),
            last_model: BTreeMap::new(),
            dns: None,
            conntrack: None,
        }
    }

    /// Also deletes stale UDP conntrack entries after each sync.
    pub fn with_conntrack(mut self, conntrack: Arc<dyn Conntrack>) -> Self {
        self.conntrack = Some(conntrack);
        self
    }

    /// Also refreshes the cluster DNS index for zone `domain` on every sync.
    pub fn with_dns(mut self, domain: String, cache: DnsCache) -> Self {
        self.dns = Some((domain, cache));
        self
    }

    /// The ruleset applied last, if the last sync succeeded.
    pub fn last(&self) -> Option<&Ruleset> {
        self.last.as_ref()
    }

    /// Rebuilds from this snapshot and applies a full or per-Service transaction.
    pub async fn sync(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        force_full: bool,
    ) -> Result<(), SyncError> {
        let start = Instant::now();
        if let Some((domain, cache)) = &self.dns {
            cache.update(DnsIndex::build(
                domain,
                services.iter().map(|s| s.as_ref()),
                slices.iter().map(|s| s.as_ref()),
            ));
        }
        let model = service_ports(
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
        );
        let (tx, full, new) = match (&self.last, force_full) {
            (Some(old), false) => {
                let new = build_reusing(&self.config, &model, &self.last_model, old);
                let tx = new.incremental_transaction(old, &mut self.leftovers);
                (tx, false, new)
            }
            _ => {
                let new = build(&self.config, &model);
                self.leftovers = Leftovers::default();
                (new.full_transaction(), true, new)
            }
        };
        let commands = tx.commands().len();
        let applier = self.applier.clone();
        let result = tokio::task::spawn_blocking(move || applier.apply(&tx))
            .await
            .map_err(SyncError::Join)
            .and_then(|r| r.map_err(SyncError::Apply));
        if let Err(err) = result {
            // The kernel state is unknown to us now: the next sync replaces the whole table.
            self.last = None;
            self.leftovers = Leftovers::default();
            self.metrics.failed();
            return Err(err);
        }
        let elapsed = start.elapsed();
        self.metrics
            .synced(elapsed, full, new.rule_count(), new.chain_count());
        debug!(
            full,
            commands,
            services = model.len(),
            ?elapsed,
            "synced proxy rules"
        );
        self.last = Some(new);
        self.flush_stale_flows(&model).await;
        self.last_model = model;
        Ok(())
    }

    /// Deletes conntrack entries of UDP flows the new rules no longer route (after the rules
    /// are in, so that no new entry to a removed endpoint can appear meanwhile).
    async fn flush_stale_flows(&self, model: &BTreeMap<ServiceKey, Vec<ServicePort>>) {
        let Some(conntrack) = self.conntrack.clone() else {
            return;
        };
        let filters = stale_flows(&self.last_model, model);
        if filters.is_empty() {
            return;
        }
        match tokio::task::spawn_blocking(move || conntrack.delete(&filters)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                warn!(error = %err, source = ?std::error::Error::source(&err), "failed to delete stale conntrack entries")
            }
            Err(err) => warn!(%err, "conntrack task failed"),
        }
    }
}

/// Drives the watch stream, waking the sync loop on every change.
async fn pump<S, T>(stream: S, notify: Arc<Notify>, kind: &'static str)
where
    S: Stream<Item = Result<T, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(_) => notify.notify_one(),
            Err(err) => warn!(kind, %err, "watch failed; retrying"),
        }
    }
}

/// Timing of the sync loop.
#[derive(Debug, Clone, Copy)]
pub struct SyncPeriods {
    /// Minimum time between syncs (`--min-sync-period`).
    pub min: Duration,
    /// Full resync interval (`--sync-period`).
    pub full: Duration,
}

/// Watches the API and keeps the table in sync until `shutdown`.
pub async fn run_proxier(
    client: kube::Client,
    mut syncer: Syncer,
    periods: SyncPeriods,
    shutdown: CancellationToken,
) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (eps_store, eps_writer) = reflector::store::<EndpointSlice>();
    let notify = Arc::new(Notify::new());
    let svc_stream = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    let eps_stream = reflector::reflector(
        eps_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    let watches = tokio::spawn({
        let shutdown = shutdown.clone();
        let (a, b) = (
            pump(svc_stream, notify.clone(), "Service"),
            pump(eps_stream, notify.clone(), "EndpointSlice"),
        );
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = futures::future::join(a, b) => {}
            }
        }
    });

    tokio::select! {
        _ = shutdown.cancelled() => { let _ = watches.await; return; }
        r = wait_ready(&svc_store, &eps_store) => if r.is_err() { warn!("watch stores dropped"); return; }
    }
    info!("caches synced; programming nftables");
    sync_loop(
        &mut syncer,
        &svc_store,
        &eps_store,
        &notify,
        periods,
        &shutdown,
    )
    .await;
    let _ = watches.await;
}

async fn wait_ready(
    svcs: &Store<Service>,
    eps: &Store<EndpointSlice>,
) -> Result<(), reflector::store::WriterDropped> {
    svcs.wait_until_ready().await?;
    eps.wait_until_ready().await
}

async fn sync_loop(
    syncer: &mut Syncer,
    svcs: &Store<Service>,
    eps: &Store<EndpointSlice>,
    notify: &Notify,
    periods: SyncPeriods,
    shutdown: &CancellationToken,
) {
    let mut next_full = tokio::time::Instant::now() + periods.full;
    let mut force_full = true;
    loop {
        let started = tokio::time::Instant::now();
        if started >= next_full {
            force_full = true;
        }
        let result = syncer.sync(&svcs.state(), &eps.state(), force_full).await;
        let retry = match result {
            Ok(()) => {
                if force_full {
                    next_full = tokio::time::Instant::now() + periods.full;
                }
                force_full = false;
                false
            }
            Err(err) => {
                warn!(error = %err, source = ?std::error::Error::source(&err), "sync failed; retrying");
                true
            }
        };
        // Debounce: at most one sync per min-sync-period; changes meanwhile coalesce.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(started + periods.min) => {}
        }
        if retry {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(next_full) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{service, slice};
    use crate::rules::Transaction;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeApplier {
        applied: Mutex<Vec<Transaction>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Applier for FakeApplier {
        fn apply(&self, tx: &Transaction) -> Result<(), NftError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(NftError::WorkerGone);
            }
            self.applied.lock().unwrap().push(tx.clone());
            Ok(())
        }
        fn run(&self, _cmd: &str) -> Result<String, NftError> {
            Ok(String::new())
        }
    }

    fn is_full(tx: &Transaction) -> bool {
        tx.commands()
            .get(1)
            .is_some_and(|c| c.starts_with("delete table "))
    }

    #[tokio::test]
    async fn first_sync_is_full_then_changes_are_partial() {
        let fake = Arc::new(FakeApplier::default());
        let mut s = Syncer::new(
            RulesConfig::default(),
            fake.clone(),
            Arc::new(Metrics::new()),
        );
        let svc = Arc::new(service("default", "web", "10.43.0.10", &[("", 80)]));
        let sl1 = Arc::new(slice(
            "default",
            "web",
            ("", 8080),
            &[("10.42.0.5", "n1", true)],
        ));
        let sl2 = Arc::new(slice(
            "default",
            "web",
            ("", 8080),
            &[("10.42.0.6", "n1", true)],
        ));
        s.sync(std::slice::from_ref(&svc), &[sl1], false)
            .await
            .unwrap();
        s.sync(
            std::slice::from_ref(&svc),
            std::slice::from_ref(&sl2),
            false,
        )
        .await
        .unwrap();
        s.sync(&[svc], &[sl2], false).await.unwrap();
        let applied = fake.applied.lock().unwrap();
        assert!(is_full(&applied[0]));
        assert!(!is_full(&applied[1]) && !applied[1].is_empty());
        assert!(applied[2].is_empty(), "nothing changed, nothing to apply");
    }

    #[derive(Default)]
    struct FakeConntrack(Mutex<Vec<std::collections::BTreeSet<crate::conntrack::FlowFilter>>>);

    impl Conntrack for FakeConntrack {
        fn delete(
            &self,
            filters: &std::collections::BTreeSet<crate::conntrack::FlowFilter>,
        ) -> Result<usize, crate::conntrack::ConntrackError> {
            self.0.lock().unwrap().push(filters.clone());
            Ok(0)
        }
    }

    #[tokio::test]
    async fn removed_udp_endpoint_is_flushed_after_the_rules_change() {
        let ct = Arc::new(FakeConntrack::default());
        let mut s = Syncer::new(
            RulesConfig::default(),
            Arc::new(FakeApplier::default()),
            Arc::new(Metrics::new()),
        )
        .with_conntrack(ct.clone());
        let mut svc = service("default", "dns", "10.43.0.53", &[("dns", 53)]);
        svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
        let svc = Arc::new(svc);
        let with = |ips: &[&str]| {
            let eps: Vec<(&str, &str, bool)> = ips.iter().map(|ip| (*ip, "n1", true)).collect();
            let mut sl = slice("default", "dns", ("dns", 53), &eps);
            sl.ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
            Arc::new(sl)
        };
        s.sync(
            std::slice::from_ref(&svc),
            &[with(&["10.42.0.5", "10.42.0.6"])],
            false,
        )
        .await
        .unwrap();
        s.sync(std::slice::from_ref(&svc), &[with(&["10.42.0.6"])], false)
            .await
            .unwrap();
        let calls = ct.0.lock().unwrap();
        // First sync: the Service got endpoints; second: 10.42.0.5 went away.
        assert_eq!(calls.len(), 2);
        let last: Vec<_> = calls[1].iter().collect();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].reply_src, Some("10.42.0.5".parse().unwrap()));
    }

    #[tokio::test]
    async fn failed_sync_forces_a_full_one_next() {
        let fake = Arc::new(FakeApplier::default());
        let metrics = Arc::new(Metrics::new());
        let mut s = Syncer::new(RulesConfig::default(), fake.clone(), metrics.clone());
        let svc = Arc::new(service("default", "web", "10.43.0.10", &[("", 80)]));
        s.sync(std::slice::from_ref(&svc), &[], false)
            .await
            .unwrap();
        fake.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(s.sync(&[], &[], false).await.is_err());
        assert!(s.last().is_none());
        assert!(!metrics.healthz().0);
        fake.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        s.sync(&[], &[], false).await.unwrap();
        assert!(is_full(fake.applied.lock().unwrap().last().unwrap()));
    }
}
