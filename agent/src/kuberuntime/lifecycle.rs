//! Container lifecycle hooks (kubelet's `lifecycle.handlerRunner`).

use cri::proto;
use k8s_openapi::api::core::v1::Pod;

use super::*;

impl CriRuntime {
    /// Runs an exec preStop hook (kubelet's `executePreStopHook`), bounded by
    /// the grace period.
    pub(super) async fn run_pre_stop(&self, pod: &Pod, name: &str, id: &str, grace: i64) {
        let hook = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone());
        let Some(cmd) = hook else { return };
        let result = self
            .cri
            .runtime
            .clone()
            .exec_sync(proto::ExecSyncRequest {
                container_id: id.to_owned(),
                cmd,
                timeout: grace,
            })
            .await;
        match result {
            Ok(r) if r.get_ref().exit_code == 0 => {}
            Ok(r) => {
                let msg = format!(
                    "PreStopHook failed: command exited with {}",
                    r.get_ref().exit_code
                );
                self.recorder.record(
                    pod,
                    Some(name),
                    EventType::Warning,
                    "FailedPreStopHook",
                    &msg,
                );
            }
            Err(s) => {
                let msg = format!("PreStopHook failed: {}", s.message());
                self.recorder.record(
                    pod,
                    Some(name),
                    EventType::Warning,
                    "FailedPreStopHook",
                    &msg,
                );
            }
        }
    }
}
