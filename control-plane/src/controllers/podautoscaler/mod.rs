//! The HorizontalPodAutoscaler controller (upstream
//! pkg/controller/podautoscaler): every
//! `--horizontal-pod-autoscaler-sync-period` each autoscaling/v2 HPA is
//! synced against its target's `/scale` and the pods' samples from
//! `metrics.k8s.io` (`sync`), the proposal coming from `compute` and
//! `replicas`, stabilized and rate-limited by `normalize`, and written back
//! with the status of `status`.

mod compute;
mod events;
mod metrics;
mod normalize;
mod replicas;
mod status;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::Api;
use kube::runtime::watcher;

use super::ControllerContext;
use super::util;

/// The controller's flags.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How often every HPA is synced.
    pub sync_period: Duration,
    /// How long scale-down recommendations are remembered.
    pub downscale_stabilization: Duration,
}

/// Starts the controller.
pub fn spawn(ctx: &ControllerContext) {
    let settings = Settings {
        sync_period: ctx.config.horizontal_pod_autoscaler_sync_period,
        downscale_stabilization: ctx.config.horizontal_pod_autoscaler_downscale_stabilization,
    };
    let hpas = ctx.informers.informer(
        Api::<HorizontalPodAutoscaler>::all(ctx.client.clone()),
        watcher::Config::default(),
        |_: &HorizontalPodAutoscaler| {},
    );
    let autoscaler = Arc::new(sync::Autoscaler::new(ctx.client.clone(), settings));
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        hpas.wait_until_ready().await;
        let mut tick = tokio::time::interval(settings.sync_period.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let all = hpas.state();
            autoscaler.retain(
                &all.iter()
                    .map(|h| util::key_of(h.as_ref()))
                    .collect::<Vec<_>>(),
            );
            for hpa in all {
                if shutdown.is_cancelled() {
                    return;
                }
                if let Err(err) = autoscaler.sync(&hpa).await {
                    tracing::info!(
                        namespace = hpa.metadata.namespace.as_deref().unwrap_or(""),
                        hpa = hpa.metadata.name.as_deref().unwrap_or(""),
                        %err,
                        "horizontal pod autoscaler sync failed"
                    );
                }
            }
        }
    });
}
