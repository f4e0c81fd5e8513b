//! The proxier: reflectors on Services and EndpointSlices feed a change tracker and a debounced
//! sync that recomputes the model of the Services that changed, rebuilds their rules and applies
//! the smallest transaction (kube-proxy's `syncProxyRules`).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::changes::{ChangeTracker, Pending};
use crate::conntrack::{Conntrack, stale_flows};
use crate::dns::DnsIndex;
use crate::dns_server::DnsCache;
use crate::metrics::Metrics;
use crate::model::{ServiceKey, ServicePort, service_model, service_ports};
use crate::nft::{Applier, NftError};
use crate::rules::{Leftovers, RulesConfig, Ruleset, ServiceRules, build, service_rules};

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

/// What one sync did and where its time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// The table was replaced as a whole.
    pub full: bool,
    /// Services whose model was recomputed.
    pub recomputed: usize,
    /// Services whose rules were rebuilt and rewritten.
    pub rewritten: usize,
    /// nft commands in the transaction.
    pub commands: usize,
    /// Reading the changed objects and computing their model.
    pub model: Duration,
    /// Building the rules of the changed Services.
    pub build: Duration,
    /// Turning them into the transaction text.
    pub render: Duration,
    /// libnftables: parsing and the kernel's commit.
    pub apply: Duration,
}

/// The new model of the Services a sync recomputed.
enum ModelUpdate {
    /// The model of every Service (a Service that is not in it has no rules).
    All(BTreeMap<ServiceKey, Vec<ServicePort>>),
    /// The model of these Services only (empty: the Service has no rules any more).
    Some(BTreeMap<ServiceKey, Vec<ServicePort>>),
}

/// Holds the last applied ruleset and turns changes into a transaction.
pub struct Syncer {
    config: RulesConfig,
    applier: Arc<dyn Applier>,
    metrics: Arc<Metrics>,
    last: Option<Ruleset>,
    /// Stale chains and sets of incremental syncs, not deleted yet.
    leftovers: Leftovers,
    /// The model the last successful sync programmed, to find stale UDP flows and what changed.
    last_model: BTreeMap<ServiceKey, Vec<ServicePort>>,
    dns: Option<(String, DnsCache)>,
    /// The DNS index was built from a full snapshot once.
    dns_built: bool,
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
            dns_built: false,
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

    /// Recomputes the model of every Service from this snapshot and applies what changed (or
    /// the whole table when `force_full` or after a failure).
    pub async fn sync(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        force_full: bool,
    ) -> Result<SyncStats, SyncError> {
        let start = Instant::now();
        let model = service_ports(
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
        );
        let recomputed = model.len();
        let result = self
            .apply_model(ModelUpdate::All(model), force_full, start, recomputed)
            .await;
        self.refresh_dns(services, slices);
        result
    }

    /// The proxier's sync: recomputes the model of the Services `tracker` recorded as changed
    /// (of every one when it says so), reading them from the reflector stores, and applies
    /// what changed (or the whole table when `force_full` or after a failure).
    pub async fn sync_changes(
        &mut self,
        tracker: &ChangeTracker,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
        force_full: bool,
    ) -> Result<SyncStats, SyncError> {
        let start = Instant::now();
        let pending = tracker.take(|| slices.state());
        if pending.is_empty() && !force_full && self.last.is_some() {
            return Ok(SyncStats::default());
        }
        // DNS: rebuilt on a full sync (or before its first build), else
        // changed for the changed Services only.
        let full_dns = self.dns.is_some()
            && (force_full || !self.dns_built || matches!(pending, Pending::All));
        let (update, recomputed) = match pending {
            Pending::All => {
                let model = service_ports(
                    services.state().iter().map(|s| s.as_ref()),
                    slices.state().iter().map(|s| s.as_ref()),
                );
                let n = model.len();
                (ModelUpdate::All(model), n)
            }
            Pending::Services(changed) => {
                let changed: Vec<ChangedService> = changed
                    .into_iter()
                    .map(|(key, names)| read_changed(key, &names, services, slices))
                    .collect();
                if !full_dns {
                    self.change_dns(&changed);
                }
                let n = changed.len();
                let model = changed
                    .into_iter()
                    .map(|c| {
                        let ports = c
                            .svc
                            .as_ref()
                            .map(|svc| service_model(svc, c.slices.iter().map(|s| s.as_ref())))
                            .unwrap_or_default();
                        (c.key, ports)
                    })
                    .collect();
                (ModelUpdate::Some(model), n)
            }
        };
        let result = self
            .apply_model(update, force_full, start, recomputed)
            .await;
        if result.is_err() {
            // The consumed changes are not in the kernel: recompute everything next time.
            tracker.resync_all();
        }
        if full_dns {
            self.refresh_dns(&services.state(), &slices.state());
        }
        result
    }

    /// Changes the DNS entries of the `changed` Services only.
    fn change_dns(&self, changed: &[ChangedService]) {
        let Some((_, cache)) = &self.dns else {
            return;
        };
        cache.modify(|index| {
            for c in changed {
                let (ns, name) = c.key.split_once('/').unwrap_or(("", &c.key));
                index.set_service(
                    (ns.to_owned(), name.to_owned()),
                    c.svc.as_deref(),
                    c.slices.iter().map(|s| s.as_ref()),
                );
            }
        });
    }

    fn refresh_dns(&mut self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) {
        if let Some((domain, cache)) = &self.dns {
            self.dns_built = true;
            cache.update(DnsIndex::build(
                domain,
                services.iter().map(|s| s.as_ref()),
                slices.iter().map(|s| s.as_ref()),
            ));
        }
    }

    async fn apply_model(
        &mut self,
        update: ModelUpdate,
        force_full: bool,
        start: Instant,
        recomputed: usize,
    ) -> Result<SyncStats, SyncError> {
        let mut stats = SyncStats {
            recomputed,
            model: start.elapsed(),
            ..SyncStats::default()
        };
        let result = if force_full || self.last.is_none() {
            stats.full = true;
            self.apply_full(update, &mut stats).await
        } else {
            self.apply_changes(update, &mut stats).await
        };
        if let Err(err) = result {
            // The kernel state is unknown to us now: the next sync replaces the whole table.
            self.last = None;
            self.leftovers = Leftovers::default();
            self.metrics.failed();
            return Err(err);
        }
        let elapsed = start.elapsed();
        if let Some(last) = &self.last {
            self.metrics
                .synced(elapsed, stats.full, last.rule_count(), last.chain_count());
        }
        debug!(
            full = stats.full,
            recomputed = stats.recomputed,
            rewritten = stats.rewritten,
            commands = stats.commands,
            ?elapsed,
            "synced proxy rules"
        );
        Ok(stats)
    }

    async fn apply_full(
        &mut self,
        update: ModelUpdate,
        stats: &mut SyncStats,
    ) -> Result<(), SyncError> {
        let model = match update {
            ModelUpdate::All(model) => model,
            ModelUpdate::Some(changed) => {
                let mut model = self.last_model.clone();
                merge(&mut model, changed);
                model
            }
        };
        // The new table is built under a name no live table has, its map elements sent over
        // netlink once its chains are in; the table it replaces keeps routing until then and is
        // deleted afterwards (`twin_table`).
        let (target, replaced) = self.full_sync_tables().await?;
        let t = Instant::now();
        let mut new = build(&self.config, &model);
        new.table = target;
        stats.build = t.elapsed();
        stats.rewritten = model.len();
        let t = Instant::now();
        let tx = new.initial_transaction();
        stats.render = t.elapsed();
        self.leftovers = Leftovers::default();
        stats.commands = tx.commands().len();
        let t = Instant::now();
        self.apply(tx).await?;
        for table in replaced {
            self.apply(Ruleset::delete_one_table_transaction(&table))
                .await?;
        }
        stats.apply = t.elapsed();
        self.last = Some(new);
        let old = std::mem::replace(&mut self.last_model, model);
        self.flush_stale_flows(&old, &self.last_model).await;
        Ok(())
    }

    async fn apply_changes(
        &mut self,
        update: ModelUpdate,
        stats: &mut SyncStats,
    ) -> Result<(), SyncError> {
        let changed = self.changed_services(update);
        if changed.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let rules: BTreeMap<&ServiceKey, Option<Arc<ServiceRules>>> = changed
            .iter()
            .map(|(key, ports)| {
                let rules =
                    (!ports.is_empty()).then(|| Arc::new(service_rules(&self.config, ports)));
                (key, rules)
            })
            .collect();
        stats.build = t.elapsed();
        stats.rewritten = rules.len();
        let Some(last) = self.last.as_mut() else {
            return Ok(());
        };
        let t = Instant::now();
        let empty = ServiceRules::default();
        let pairs: Vec<(&ServiceRules, &ServiceRules)> = rules
            .iter()
            .map(|(key, after)| {
                let before = last.services.get(*key).map_or(&empty, |r| r.as_ref());
                (before, after.as_deref().unwrap_or(&empty))
            })
            .collect();
        let tx = last.update_transaction(&pairs, &mut self.leftovers);
        let new_picks = Ruleset::new_picks(&last.picks, pairs.iter().map(|(_, after)| *after));
        drop(pairs);
        stats.render = t.elapsed();
        stats.commands = tx.commands().len();
        let t = Instant::now();
        self.apply(tx).await?;
        stats.apply = t.elapsed();
        if let Some(last) = self.last.as_mut() {
            last.picks.extend(new_picks);
            for (key, rules) in rules {
                match rules {
                    Some(r) => last.services.insert(key.clone(), r),
                    None => last.services.remove(key),
                };
            }
        }
        let old: BTreeMap<ServiceKey, Vec<ServicePort>> = changed
            .keys()
            .filter_map(|k| Some((k.clone(), self.last_model.get(k)?.clone())))
            .collect();
        let new: BTreeMap<ServiceKey, Vec<ServicePort>> = changed
            .iter()
            .filter(|(_, ports)| !ports.is_empty())
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        self.flush_stale_flows(&old, &new).await;
        merge(&mut self.last_model, changed);
        Ok(())
    }

    /// The Services whose model differs from the applied one, with their new model (empty when
    /// they have no rules any more).
    fn changed_services(&self, update: ModelUpdate) -> BTreeMap<ServiceKey, Vec<ServicePort>> {
        let differs = |key: &ServiceKey, ports: &Vec<ServicePort>| match self.last_model.get(key) {
            Some(old) => old != ports,
            None => !ports.is_empty(),
        };
        match update {
            ModelUpdate::Some(changed) => changed
                .into_iter()
                .filter(|(key, ports)| differs(key, ports))
                .collect(),
            ModelUpdate::All(mut model) => {
                let gone: Vec<ServiceKey> = self
                    .last_model
                    .keys()
                    .filter(|k| !model.contains_key(*k))
                    .cloned()
                    .collect();
                model.retain(|key, ports| differs(key, ports));
                model.extend(gone.into_iter().map(|k| (k, Vec::new())));
                model
            }
        }
    }

    /// The name to build a full sync's table under, and the tables it replaces: the first of
    /// our two names that no table has; if both exist (a resync was interrupted), the one the
    /// last sync did not apply to.
    async fn full_sync_tables(&self) -> Result<(String, Vec<String>), SyncError> {
        let names = [
            self.config.table.clone(),
            crate::rules::twin_table(&self.config.table),
        ];
        let lookup = names.clone();
        let exists = self
            .on_applier(move |applier| {
                lookup
                    .iter()
                    .map(|t| applier.table_exists(t))
                    .collect::<Result<Vec<bool>, _>>()
            })
            .await?;
        let live = self.last.as_ref().map(|l| l.table.as_str());
        let target = names
            .iter()
            .zip(&exists)
            .find(|(_, e)| !**e)
            .map(|(n, _)| n)
            .or_else(|| names.iter().find(|n| Some(n.as_str()) != live))
            .unwrap_or(&names[1])
            .clone();
        let replaced = names
            .iter()
            .zip(&exists)
            .filter(|(n, e)| **e && **n != target)
            .map(|(n, _)| n.clone())
            .collect();
        Ok((target, replaced))
    }

    async fn apply(&self, tx: crate::rules::Transaction) -> Result<(), SyncError> {
        self.on_applier(move |applier| applier.apply(&tx)).await
    }

    /// Runs `f` with the applier on a blocking thread (libnftables and netlink block).
    async fn on_applier<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Applier) -> Result<T, NftError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let applier = self.applier.clone();
        tokio::task::spawn_blocking(move || f(applier.as_ref()))
            .await
            .map_err(SyncError::Join)?
            .map_err(SyncError::Apply)
    }

    /// Deletes conntrack entries of UDP flows the new rules no longer route (after the rules
    /// are in, so that no new entry to a removed endpoint can appear meanwhile).
    async fn flush_stale_flows(
        &self,
        old: &BTreeMap<ServiceKey, Vec<ServicePort>>,
        new: &BTreeMap<ServiceKey, Vec<ServicePort>>,
    ) {
        let Some(conntrack) = self.conntrack.clone() else {
            return;
        };
        let filters = stale_flows(old, new);
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

/// Applies per-Service model changes (empty: gone) to a whole model.
fn merge(
    model: &mut BTreeMap<ServiceKey, Vec<ServicePort>>,
    changed: BTreeMap<ServiceKey, Vec<ServicePort>>,
) {
    for (key, ports) in changed {
        if ports.is_empty() {
            model.remove(&key);
        } else {
            model.insert(key, ports);
        }
    }
}

/// A changed Service as the stores have it now (`None`: deleted), with its
/// EndpointSlices: read once for both the rules and cluster DNS.
struct ChangedService {
    key: ServiceKey,
    svc: Option<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
}

/// Reads changed Service `key` and its EndpointSlices (named `slice_names`) from the stores.
fn read_changed(
    key: ServiceKey,
    slice_names: &[String],
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> ChangedService {
    let (ns, name) = key.split_once('/').unwrap_or(("", &key));
    let svc = services.get(&ObjectRef::new(name).within(ns));
    let slices = match svc {
        Some(_) => service_slices(&key, slice_names, slices),
        None => Vec::new(),
    };
    ChangedService { key, svc, slices }
}

/// The EndpointSlices named `slice_names` that belong to Service `key`.
fn service_slices(
    key: &ServiceKey,
    slice_names: &[String],
    slices: &Store<EndpointSlice>,
) -> Vec<Arc<EndpointSlice>> {
    let ns = key.split_once('/').map_or("", |(ns, _)| ns);
    slice_names
        .iter()
        .filter_map(|n| slices.get(&ObjectRef::new(n).within(ns)))
        // The index may lag behind a slice that moved to another Service.
        .filter(|s| crate::model::slice_service(s).as_ref() == Some(key))
        .collect()
}

/// Drives the watch stream (the reflector has applied each event to its store when it comes
/// out), records what changed and wakes the sync loop.
async fn pump<S, K>(
    stream: S,
    notify: Arc<Notify>,
    kind: &'static str,
    record: impl Fn(&watcher::Event<K>),
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => {
                record(&ev);
                notify.notify_one();
            }
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
    let tracker = Arc::new(ChangeTracker::new());
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
        let (t1, t2) = (tracker.clone(), tracker.clone());
        let (a, b) = (
            pump(svc_stream, notify.clone(), "Service", move |ev| {
                t1.service_event(ev)
            }),
            pump(eps_stream, notify.clone(), "EndpointSlice", move |ev| {
                t2.slice_event(ev)
            }),
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
    let stores = (&svc_store, &eps_store);
    sync_loop(&mut syncer, &tracker, stores, &notify, periods, &shutdown).await;
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
    tracker: &ChangeTracker,
    (svcs, eps): (&Store<Service>, &Store<EndpointSlice>),
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
        let result = syncer.sync_changes(tracker, svcs, eps, force_full).await;
        let retry = match result {
            Ok(_) => {
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
        fn table_exists(&self, table: &str) -> Result<bool, NftError> {
            let mut exists = false;
            for tx in self.applied.lock().unwrap().iter() {
                for c in tx.commands() {
                    if c == &format!("add table ip {table}") {
                        exists = true;
                    } else if c == &format!("delete table ip {table}") {
                        exists = false;
                    }
                }
            }
            Ok(exists)
        }
        fn run(&self, _cmd: &str) -> Result<String, NftError> {
            Ok(String::new())
        }
    }

    /// A syncer with default rules applying to a fake.
    fn fake_syncer() -> (Arc<FakeApplier>, Syncer) {
        let fake = Arc::new(FakeApplier::default());
        let s = Syncer::new(
            RulesConfig::default(),
            fake.clone(),
            Arc::new(Metrics::new()),
        );
        (fake, s)
    }

    fn is_full(tx: &Transaction) -> bool {
        tx.commands()
            .get(1)
            .is_some_and(|c| c.starts_with("delete table "))
    }

    #[tokio::test]
    async fn first_sync_is_full_then_changes_are_partial() {
        let (fake, mut s) = fake_syncer();
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
        assert_eq!(applied.len(), 2, "nothing changed, nothing applied");
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
        let mut s = fake_syncer().1.with_conntrack(ct.clone());
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

    /// Reflector stores fed like the watch tasks feed them, and the tracker with them.
    struct Cluster {
        tracker: ChangeTracker,
        services: Store<Service>,
        slices: Store<EndpointSlice>,
        svc_writer: reflector::store::Writer<Service>,
        eps_writer: reflector::store::Writer<EndpointSlice>,
    }

    impl Cluster {
        fn new() -> Self {
            let (services, svc_writer) = reflector::store::<Service>();
            let (slices, eps_writer) = reflector::store::<EndpointSlice>();
            Self {
                tracker: ChangeTracker::new(),
                services,
                slices,
                svc_writer,
                eps_writer,
            }
        }
        fn service(&mut self, ev: watcher::Event<Service>) {
            self.svc_writer.apply_watcher_event(&ev);
            self.tracker.service_event(&ev);
        }
        fn slice(&mut self, ev: watcher::Event<EndpointSlice>) {
            self.eps_writer.apply_watcher_event(&ev);
            self.tracker.slice_event(&ev);
        }
        async fn sync(&self, s: &mut Syncer) -> Result<SyncStats, SyncError> {
            s.sync_changes(&self.tracker, &self.services, &self.slices, false)
                .await
        }
    }

    #[tokio::test]
    async fn tracked_changes_rebuild_only_the_changed_service() {
        let (fake, mut s) = fake_syncer();
        let mut c = Cluster::new();
        for (name, ip) in [("web", "10.43.0.10"), ("db", "10.43.0.20")] {
            c.service(watcher::Event::Apply(service(
                "default",
                name,
                ip,
                &[("", 80)],
            )));
            c.slice(watcher::Event::Apply(slice(
                "default",
                name,
                ("", 8080),
                &[("10.42.0.5", "n1", true)],
            )));
        }
        let first = c.sync(&mut s).await.unwrap();
        assert!(first.full);
        assert_eq!(first.recomputed, 2);

        c.slice(watcher::Event::Apply(slice(
            "default",
            "web",
            ("", 8080),
            &[("10.42.0.6", "n1", true)],
        )));
        let stats = c.sync(&mut s).await.unwrap();
        assert!(!stats.full);
        assert_eq!((stats.recomputed, stats.rewritten), (1, 1));
        let text = fake.applied.lock().unwrap().last().unwrap().to_text();
        assert!(
            text.contains("10.43.0.10 . tcp . 80 . 0 : 10.42.0.6 . 8080"),
            "{text}"
        );
        assert!(!text.contains("10.43.0.20"), "{text}");
        assert_eq!(
            s.last().unwrap().services.len(),
            2,
            "the other Service is still in the ruleset"
        );

        // Nothing recorded: nothing recomputed, nothing applied.
        let applied = fake.applied.lock().unwrap().len();
        assert_eq!(c.sync(&mut s).await.unwrap(), SyncStats::default());
        assert_eq!(fake.applied.lock().unwrap().len(), applied);

        // The Service is deleted: its rules and map entries go.
        c.service(watcher::Event::Delete(service(
            "default",
            "web",
            "10.43.0.10",
            &[("", 80)],
        )));
        let stats = c.sync(&mut s).await.unwrap();
        assert_eq!((stats.recomputed, stats.rewritten), (1, 1));
        assert!(!s.last().unwrap().services.contains_key("default/web"));
        let text = fake.applied.lock().unwrap().last().unwrap().to_text();
        assert!(text.contains("delete element"), "{text}");
    }

    #[tokio::test]
    async fn a_failed_tracked_sync_recomputes_everything_next() {
        let (fake, mut s) = fake_syncer();
        let mut c = Cluster::new();
        c.service(watcher::Event::Apply(service(
            "default",
            "web",
            "10.43.0.10",
            &[("", 80)],
        )));
        c.sync(&mut s).await.unwrap();
        fake.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        c.service(watcher::Event::Apply(service(
            "default",
            "db",
            "10.43.0.20",
            &[("", 80)],
        )));
        assert!(c.sync(&mut s).await.is_err());
        fake.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        let stats = c.sync(&mut s).await.unwrap();
        assert!(stats.full);
        assert_eq!(stats.recomputed, 2, "db's lost change is not lost");
        assert!(s.last().unwrap().services.contains_key("default/db"));
    }
}
