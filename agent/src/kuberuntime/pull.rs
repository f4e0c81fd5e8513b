//! Image pulls for a container start (kubelet's `EnsureImageExists`), with
//! pull-policy checks, pull back-off and the Pulling/Pulled/Failed events.

use cri::proto;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::*;

impl CriRuntime {
    /// Makes sure the image of `c` is present (kubelet's `EnsureImageExists`);
    /// on failure the container waits with ErrImagePull/ImagePullBackOff.
    pub(super) async fn ensure_image(&self, pod: &Pod, c: &Container) -> Result<String, Blocked> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let image = c.image.clone().unwrap_or_default();
        let spec = proto::ImageSpec {
            image: image.clone(),
            ..proto::ImageSpec::default()
        };
        let present = self
            .cri
            .image
            .clone()
            .image_status(proto::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().image)
            .is_some();
        let policy = images::pull_policy(c);
        match policy {
            images::PullPolicy::Never if !present => {
                let msg =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.recorder.record(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "ErrImageNeverPull",
                    &msg,
                );
                self.set_waiting(&uid, &c.name, "ErrImageNeverPull", Some(msg));
                return Err(Blocked);
            }
            images::PullPolicy::Never | images::PullPolicy::IfNotPresent if present => {
                let msg = format!("Container image \"{image}\" already present on machine");
                self.recorder
                    .record(pod, Some(&c.name), EventType::Normal, "Pulled", &msg);
                return Ok(image);
            }
            _ => {}
        }
        let backoff_key = format!("image:{image}");
        let backing_off = self
            .lock()
            .image_backoff
            .in_backoff_since(&uid, &backoff_key, Instant::now())
            .is_some();
        if backing_off {
            let msg = format!("Back-off pulling image \"{image}\"");
            self.recorder
                .record(pod, Some(&c.name), EventType::Normal, "BackOff", &msg);
            self.set_waiting(&uid, &c.name, "ImagePullBackOff", Some(msg));
            return Err(Blocked);
        }
        self.recorder.record(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        let secrets = sources::pull_secrets(&self.client, pod).await;
        let started = Instant::now();
        let sandbox_config = self.sandbox_config(pod, 0).ok();
        let result = self
            .cri
            .image
            .clone()
            .pull_image(proto::PullImageRequest {
                image: Some(spec),
                auth: images::auth_for(&image, &secrets),
                sandbox_config,
            })
            .await;
        match result {
            Ok(_) => {
                let took = started.elapsed();
                self.recorder.record(
                    pod,
                    Some(&c.name),
                    EventType::Normal,
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        took.as_secs_f64()
                    ),
                );
                Ok(image)
            }
            Err(s) => {
                let msg = format!("Failed to pull image \"{image}\": {}", s.message());
                tracing::warn!(pod = %uid, container = %c.name, error = %s.message(), "image pull failed");
                self.recorder
                    .record(pod, Some(&c.name), EventType::Warning, "Failed", &msg);
                self.recorder.record(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull",
                );
                self.lock()
                    .image_backoff
                    .next(&uid, &backoff_key, Instant::now());
                self.set_waiting(&uid, &c.name, "ErrImagePull", Some(msg));
                Err(Blocked)
            }
        }
    }
}
