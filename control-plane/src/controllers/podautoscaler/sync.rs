//! One sync of one HPA (upstream `reconcileAutoscaler`): read the target's
//! scale subresource, get a proposal from the metrics, stabilize and limit
//! it, write the new size to `/scale`, then the status and events.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus, MetricStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::json;

use super::Settings;
use super::compute;
use super::events::Events;
use super::metrics::api_message;
use super::normalize::{Behavior, History};
use super::status::{self, ABLE_TO_SCALE, SCALING_ACTIVE, SCALING_LIMITED};
use crate::controllers::util::{self, Key};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("failed to query scale subresource for {reference}: {message}")]
    GetScale { reference: String, message: String },
    #[error(
        "failed to compute desired number of replicas based on listed metrics for {reference}: {message}"
    )]
    Compute { reference: String, message: String },
    #[error("failed to rescale {reference}: {message}")]
    Rescale { reference: String, message: String },
    #[error("failed to update status for {name}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The controller's state across syncs.
pub struct Autoscaler {
    pub client: kube::Client,
    pub events: Events,
    pub settings: Settings,
    histories: Mutex<HashMap<Key, History>>,
}

/// The scale of a target and where to write it.
struct Target {
    api: Api<DynamicObject>,
    scale: Scale,
}

impl Autoscaler {
    pub fn new(client: kube::Client, settings: Settings) -> Self {
        Self {
            events: Events::new(client.clone()),
            client,
            settings,
            histories: Mutex::default(),
        }
    }

    /// Forgets HPAs that are gone.
    pub fn retain(&self, keys: &[Key]) {
        if let Ok(mut h) = self.histories.lock() {
            h.retain(|k, _| keys.contains(k));
        }
    }

    fn with_history<T>(&self, key: &Key, f: impl FnOnce(&mut History) -> T) -> T {
        match self.histories.lock() {
            Ok(mut h) => f(h.entry(key.clone()).or_default()),
            // A poisoned map only loses the stabilization history.
            Err(_) => f(&mut History::default()),
        }
    }

    async fn target(&self, ns: &str, hpa: &HorizontalPodAutoscaler) -> Result<Target, String> {
        let r = hpa
            .spec
            .as_ref()
            .map(|s| s.scale_target_ref.clone())
            .unwrap_or_default();
        let (group, version) = match r.api_version.as_deref().unwrap_or("").split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), r.api_version.clone().unwrap_or_default()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &r.kind);
        let ar: ApiResource = match crate::resources::catalog()
            .iter()
            .find(|t| t.group == group && t.version == version && t.kind == r.kind)
        {
            Some(t) => util::api_resource(t),
            None => kube::discovery::pinned_kind(&self.client, &gvk)
                .await
                .map(|(ar, _)| ar)
                .map_err(|e| api_message(&e))?,
        };
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar);
        let scale = api.get_scale(&r.name).await.map_err(|e| api_message(&e))?;
        Ok(Target { api, scale })
    }

    /// Syncs one HPA.
    pub async fn sync(&self, hpa: &HorizontalPodAutoscaler) -> Result<(), SyncError> {
        let ns = hpa.metadata.namespace.clone().unwrap_or_default();
        let name = hpa.metadata.name.clone().unwrap_or_default();
        let key = (ns.clone(), name.clone());
        let Some(spec) = hpa.spec.as_ref() else {
            return Ok(());
        };
        let reference = format!(
            "{}/{}/{}",
            spec.scale_target_ref.kind, ns, spec.scale_target_ref.name
        );
        let original = hpa.status.clone().unwrap_or_default();
        let mut st = original.clone();
        let mut conditions = st.conditions.take().unwrap_or_default();
        let now = util::now();
        let target = match self.target(&ns, hpa).await {
            Ok(t) => t,
            Err(message) => {
                self.events.warning(hpa, "FailedGetScale", message.clone());
                status::set_condition(
                    &mut conditions,
                    ABLE_TO_SCALE,
                    false,
                    "FailedGetScale",
                    format!(
                        "the HPA controller was unable to get the target's current scale: {message}"
                    ),
                    &now,
                );
                st.conditions = Some(conditions);
                self.write_status(hpa, &original, st).await?;
                return Err(SyncError::GetScale { reference, message });
            }
        };
        status::set_condition(
            &mut conditions,
            ABLE_TO_SCALE,
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
            &now,
        );
        let current = target
            .scale
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        self.with_history(&key, |h| h.record_initial(current, now.0));
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let mut metric_statuses: Option<Vec<MetricStatus>> = None;
        let mut reason = String::new();
        let (desired, rescale) = if current == 0 && min != 0 {
            status::set_condition(
                &mut conditions,
                SCALING_ACTIVE,
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
                &now,
            );
            (0, false)
        } else if current > max {
            reason = "Current number of replicas above Spec.MaxReplicas".into();
            (max, true)
        } else if current < min {
            reason = "Current number of replicas below Spec.MinReplicas".into();
            (min, true)
        } else {
            let selector = target
                .scale
                .status
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            let outcome =
                compute::compute(&self.client, &self.events, hpa, &selector, current).await;
            status::set_condition(
                &mut conditions,
                SCALING_ACTIVE,
                outcome.active.0,
                &outcome.active.1,
                outcome.active.2.clone(),
                &now,
            );
            let Some(proposal) = outcome.replicas else {
                let message = outcome.error.unwrap_or_default();
                st.current_replicas = Some(current);
                st.current_metrics = Some(outcome.statuses).filter(|s| !s.is_empty());
                st.conditions = Some(conditions);
                self.write_status(hpa, &original, st).await?;
                self.events
                    .warning(hpa, "FailedComputeMetricsReplicas", message.clone());
                return Err(SyncError::Compute { reference, message });
            };
            metric_statuses = Some(outcome.statuses).filter(|s| !s.is_empty());
            let desired = proposal.max(0);
            if desired > current {
                reason = format!("{} above target", outcome.metric);
            } else if desired < current {
                reason = "All metrics below target".into();
            }
            let n = self.normalize(hpa, &key, current, desired, min, max, &now);
            status::set_condition(
                &mut conditions,
                ABLE_TO_SCALE,
                true,
                n.able.0,
                n.able.1.into(),
                &now,
            );
            status::set_condition(
                &mut conditions,
                SCALING_LIMITED,
                n.limited.0,
                n.limited.1,
                n.limited.2.into(),
                &now,
            );
            (n.replicas, n.replicas != current)
        };
        let desired = if rescale {
            let patch = json!({"spec": {"replicas": desired}});
            let name_of_target = &spec.scale_target_ref.name;
            if let Err(e) = target
                .api
                .patch_scale(
                    name_of_target,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                let message = api_message(&e);
                self.events.warning(
                    hpa,
                    "FailedRescale",
                    format!("New size: {desired}; reason: {reason}; error: {message}"),
                );
                status::set_condition(
                    &mut conditions,
                    ABLE_TO_SCALE,
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {message}"),
                    &now,
                );
                st.current_replicas = Some(current);
                st.current_metrics = metric_statuses;
                st.conditions = Some(conditions);
                self.write_status(hpa, &original, st).await?;
                return Err(SyncError::Rescale { reference, message });
            }
            status::set_condition(
                &mut conditions,
                ABLE_TO_SCALE,
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
                &now,
            );
            self.events.normal(
                hpa,
                "SuccessfulRescale",
                format!("New size: {desired}; reason: {reason}"),
            );
            if let Some(b) = spec.behavior.as_ref() {
                let behavior = Behavior::from_spec(b, self.downscale_window());
                self.with_history(&key, |h| h.record_scale(&behavior, current, desired, now.0));
            }
            tracing::info!(hpa = %name, namespace = %ns, from = current, to = desired, %reason, "rescaled");
            st.last_scale_time = Some(now.clone());
            desired
        } else {
            current
        };
        st.current_replicas = Some(current);
        st.desired_replicas = desired;
        st.current_metrics = metric_statuses;
        st.conditions = Some(conditions);
        self.write_status(hpa, &original, st).await
    }

    fn downscale_window(&self) -> SignedDuration {
        SignedDuration::try_from(self.settings.downscale_stabilization)
            .unwrap_or(SignedDuration::from_secs(300))
    }

    #[allow(clippy::too_many_arguments)]
    fn normalize(
        &self,
        hpa: &HorizontalPodAutoscaler,
        key: &Key,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: &Time,
    ) -> super::normalize::Normalized {
        let window = self.downscale_window();
        let behavior = hpa
            .spec
            .as_ref()
            .and_then(|s| s.behavior.as_ref())
            .map(|b| Behavior::from_spec(b, window));
        self.with_history(key, |h| match behavior {
            Some(b) => h.normalize_with_behavior(&b, current, desired, min, max, now.0),
            None => h.normalize(current, desired, min, max, window, now.0),
        })
    }

    /// Writes the status if it changed (`updateStatusIfNeeded`).
    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        original: &HorizontalPodAutoscalerStatus,
        new: HorizontalPodAutoscalerStatus,
    ) -> Result<(), SyncError> {
        if &new == original {
            return Ok(());
        }
        let ns = hpa.metadata.namespace.clone().unwrap_or_default();
        let name = hpa.metadata.name.clone().unwrap_or_default();
        let mut updated = hpa.clone();
        updated.status = Some(new);
        Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), &ns)
            .replace_status(&name, &PostParams::default(), &updated)
            .await
            .map_err(|source| SyncError::Status { name, source })?;
        Ok(())
    }
}
