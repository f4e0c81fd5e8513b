//! One probe worker (kubelet's `prober/worker.go`): a task per (container,
//! probe kind) that probes every period once the container runs past its
//! initial delay, records `Unhealthy`/`ProbeWarning` events, and publishes
//! results through the threshold tracker. Liveness and readiness wait for
//! the startup probe; startup stops once it succeeded.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::manager::{Key, PodTarget, Shared, probed_container};
use super::target::probe_action;
use super::{Outcome, ProbeKind, ProbeResult, ProbeSettings, ProbeTracker, run};

/// The state of one worker between runs.
struct Worker {
    shared: Arc<Shared>,
    key: Key,
    tracker: ProbeTracker,
    container_id: Option<String>,
}

fn current_id(target: &PodTarget, name: &str) -> Option<String> {
    target.containers.get(name).map(|c| c.id.clone())
}

/// Runs until `cancel` (the pod is gone) or the probe is no longer in the spec.
pub(super) async fn run(
    shared: Arc<Shared>,
    key: Key,
    mut targets: watch::Receiver<Arc<PodTarget>>,
    cancel: CancellationToken,
) {
    let first = targets.borrow_and_update().clone();
    let Some(probe) = probed_container(&first.pod, &key.1).and_then(|c| key.2.of(c)) else {
        return;
    };
    let settings = ProbeSettings::from_probe(probe);
    let mut w = Worker {
        shared,
        tracker: ProbeTracker::new(key.2, settings),
        key,
        container_id: None,
    };
    let mut tick = tokio::time::interval(settings.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
                // Only a new container is probed at once; other updates
                // wait for the period.
                let target = targets.borrow_and_update().clone();
                if current_id(&target, &w.key.1) == w.container_id {
                    continue;
                }
            }
        }
        let target = targets.borrow_and_update().clone();
        w.probe_once(&target).await;
    }
}

impl Worker {
    async fn probe_once(&mut self, target: &PodTarget) {
        let (uid, name, kind) = self.key.clone();
        let Some(c) = target.containers.get(&name) else {
            return;
        };
        if self.container_id.as_deref() != Some(c.id.as_str()) {
            if self.container_id.is_some() {
                self.tracker.container_restarted();
            }
            self.shared.forget(&self.key);
            self.container_id = Some(c.id.clone());
        }
        if !c.running {
            return;
        }
        let Some(spec) = probed_container(&target.pod, &name) else {
            return;
        };
        let startup = (uid.clone(), name.clone(), ProbeKind::Startup);
        let started = spec.startup_probe.is_none()
            || self.shared.result(&startup, &c.id) == Some(ProbeResult::Success);
        match kind {
            ProbeKind::Startup if started => return,
            ProbeKind::Liveness | ProbeKind::Readiness if !started => return,
            _ => {}
        }
        let running_for = c
            .started_at
            .and_then(|t| Timestamp::now().duration_since(t).try_into().ok())
            .unwrap_or(Duration::ZERO);
        if !self.tracker.should_probe(running_for) {
            return;
        }
        let Some(probe) = kind.of(spec) else {
            return;
        };
        let events = &self.shared.events;
        let action = match probe_action(probe, spec, target.pod_ip.as_deref()) {
            Ok(a) => a,
            Err(err) => {
                let msg = format!("{} probe errored: {err}", kind.as_str());
                events.warning(&target.pod, &name, "Unhealthy", &msg);
                return;
            }
        };
        let timeout = self.tracker.settings.timeout;
        let outcome = match run::run(&action, timeout, &*self.shared.exec, &c.id).await {
            Ok(o) => o,
            Err(err) => {
                // kubelet discards the result of a probe that could not run.
                tracing::debug!(pod = %uid, container = %name, probe = kind.as_str(), error = %err, "probe errored");
                return;
            }
        };
        let result = match &outcome {
            Outcome::Success(_) => ProbeResult::Success,
            Outcome::Warning(msg) => {
                let msg = format!("{} probe warning: {msg}", kind.as_str());
                events.warning(&target.pod, &name, "ProbeWarning", &msg);
                ProbeResult::Success
            }
            Outcome::Failure(msg) => {
                let msg = format!("{} probe failed: {msg}", kind.as_str());
                events.warning(&target.pod, &name, "Unhealthy", &msg);
                ProbeResult::Failure
            }
        };
        if let Some(published) = self.tracker.observe(result) {
            tracing::info!(pod = %uid, container = %name, probe = kind.as_str(), result = ?published, "probe result changed");
            self.shared.publish(&self.key, &c.id, published);
        }
    }
}
