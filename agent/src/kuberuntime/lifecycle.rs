//! Container lifecycle hooks (kubelet's `lifecycle.handlerRunner`): exec,
//! httpGet, sleep (and the deprecated tcpSocket) handlers of postStart and
//! preStop, with kubelet's failure messages for the FailedPostStartHook and
//! FailedPreStopHook events.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use super::CriRuntime;
use super::events::EventType;
use crate::probe::exec::ContainerExec;
use crate::probe::target::{ProbeAction, hook_action};

/// kubelet's `format.Pod`: `name_namespace(uid)`.
fn format_pod(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// Go's `%q` of a string, close enough for hook output.
fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// The failure message of an exec hook.
fn exec_failure(pod: &Pod, c: &Container, cmd: &[String], error: &str, output: &str) -> String {
    format!(
        "Exec lifecycle hook ([{}]) for Container {} in Pod {} failed - error: {error}, message: {}",
        cmd.join(" "),
        quote(&c.name),
        quote(&format_pod(pod)),
        quote(output)
    )
}

impl CriRuntime {
    /// Runs one hook of container `c` (running as `container_id`); the error
    /// is the event message kubelet writes.
    pub(super) async fn run_hook(
        &self,
        pod: &Pod,
        c: &Container,
        container_id: &str,
        handler: &LifecycleHandler,
        pod_ip: Option<&str>,
    ) -> Result<(), String> {
        let action = hook_action(handler, c, pod_ip).map_err(|e| {
            format!(
                "lifecycle hook for Container {} in Pod {} failed - error: {e}",
                quote(&c.name),
                quote(&format_pod(pod))
            )
        })?;
        match action {
            ProbeAction::Exec { command } => {
                // kubelet passes no timeout to hook commands.
                match self
                    .cri
                    .exec_sync(container_id, command.clone(), Duration::ZERO)
                    .await
                {
                    Ok(out) if out.exit_code == 0 => Ok(()),
                    Ok(out) => {
                        let output = String::from_utf8_lossy(&out.output).into_owned();
                        let error = format!(
                            "command '{}' exited with {}: {output}",
                            command.join(" "),
                            out.exit_code
                        );
                        Err(exec_failure(pod, c, &command, &error, &output))
                    }
                    Err(e) => Err(exec_failure(pod, c, &command, &e.to_string(), "")),
                }
            }
            ProbeAction::Http(target) => crate::probe::http::hook(
                &target,
                &crate::probe::user_agent(),
            )
            .await
            .map_err(|e| {
                format!(
                    "HTTP lifecycle hook ({}) for Container {} in Pod {} failed - error: {e}",
                    target.path,
                    quote(&c.name),
                    quote(&format_pod(pod))
                )
            }),
            ProbeAction::Sleep { seconds } => {
                let secs = u64::try_from(seconds).unwrap_or(0);
                tokio::time::sleep(Duration::from_secs(secs)).await;
                Ok(())
            }
            ProbeAction::Tcp { host, port } => {
                // Deprecated and never executed by kubelet: only a warning.
                tracing::warn!(%host, port, container = %c.name, "tcpSocket lifecycle hooks are not supported");
                Ok(())
            }
            ProbeAction::Grpc { .. } => Ok(()),
        }
    }

    /// The first address of the pod's newest sandbox.
    async fn pod_ip_of(&self, pod: &Pod) -> Option<String> {
        let uid = pod.metadata.uid.as_deref()?;
        let sandbox = self.sandboxes(uid).await.ok()?.into_iter().next()?;
        self.pod_ips(&sandbox.id).await.into_iter().next()
    }

    /// Runs the preStop hook (kubelet's `executePreStopHook`), bounded by
    /// the grace period; a failure is only an event.
    pub(super) async fn run_pre_stop(&self, pod: &Pod, name: &str, id: &str, grace: i64) {
        let Some(c) = pod.spec.as_ref().and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == name)
        }) else {
            return;
        };
        let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
            return;
        };
        let pod_ip = if handler.http_get.is_some() {
            self.pod_ip_of(pod).await
        } else {
            None
        };
        let limit = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let hook = self.run_hook(pod, c, id, handler, pod_ip.as_deref());
        match tokio::time::timeout(limit, hook).await {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => {
                self.recorder.record(
                    pod,
                    Some(name),
                    EventType::Warning,
                    "FailedPreStopHook",
                    &msg,
                );
            }
            Err(_) => {
                tracing::info!(pod = ?pod.metadata.name, container = %name, "preStop hook did not finish within the grace period");
            }
        }
    }

    /// Runs the postStart hook right after the container started (kubelet's
    /// `startContainer` step 4); on failure records FailedPostStartHook and
    /// kills the container, which then restarts per the restart policy.
    pub(super) async fn run_post_start(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        pod_ip: Option<&str>,
    ) -> Result<(), String> {
        let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return Ok(());
        };
        let Err(msg) = self.run_hook(pod, c, id, handler, pod_ip).await else {
            return Ok(());
        };
        self.recorder.record(
            pod,
            Some(&c.name),
            EventType::Warning,
            "FailedPostStartHook",
            &msg,
        );
        let status = cri::proto::ContainerStatus {
            id: id.to_owned(),
            metadata: Some(cri::proto::ContainerMetadata {
                name: c.name.clone(),
                attempt: 0,
            }),
            ..cri::proto::ContainerStatus::default()
        };
        self.stop_container(
            Some(pod),
            &status,
            super::grace_period(Some(pod), None),
            "FailedPostStartHook",
        )
        .await;
        Err(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_hook_failures_read_like_kubelet() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".to_owned());
        pod.metadata.namespace = Some("default".to_owned());
        pod.metadata.uid = Some("u1".to_owned());
        let c = Container {
            name: "app".to_owned(),
            ..Container::default()
        };
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), "exit 1".to_owned()];
        assert_eq!(
            exec_failure(&pod, &c, &cmd, "command 'sh -c exit 1' exited with 1: ", ""),
            "Exec lifecycle hook ([sh -c exit 1]) for Container \"app\" in Pod \"web_default(u1)\" \
             failed - error: command 'sh -c exit 1' exited with 1: , message: \"\""
        );
    }
}
