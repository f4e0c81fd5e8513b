//! Reading a pod back from the runtime (kubelet's `GetPodStatus`): the
//! observed containers with termination messages and the waiting reasons the
//! last sync decided.

use cri::proto;

use super::*;

impl CriRuntime {
    /// Reads a termination message the container wrote to its file (or the
    /// tail of its log for `FallbackToLogsOnError`).
    pub(super) fn termination_message(status: &proto::ContainerStatus) -> Option<String> {
        if !observe::is_exited(status) {
            return None;
        }
        let path = status
            .annotations
            .get(labels::TERMINATION_MESSAGE_HOST_PATH)?;
        let data = std::fs::read(path).ok()?;
        let mut msg =
            String::from_utf8_lossy(&data[..data.len().min(observe::MAX_TERMINATION_MESSAGE)])
                .into_owned();
        let fallback = status
            .annotations
            .get(labels::TERMINATION_MESSAGE_POLICY)
            .is_some_and(|p| p == "FallbackToLogsOnError");
        if msg.is_empty() && fallback && status.exit_code != 0 && !status.log_path.is_empty() {
            msg = log_tail(&status.log_path);
        }
        Some(msg)
    }

    pub(super) async fn observe(&self, uid: &str) -> Result<ObservedPod, RuntimeError> {
        let sandboxes = self.sandboxes(uid).await?;
        let Some(sandbox) = sandboxes.first() else {
            return Ok(self.waiting_only(uid));
        };
        let sandbox_ready = sandbox.state == proto::PodSandboxState::SandboxReady as i32;
        let pod_ips: Vec<IpAddr> = self
            .pod_ips(&sandbox.id)
            .await
            .iter()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .collect();
        let statuses = self.container_statuses(uid, Some(&sandbox.id)).await?;
        let groups = observe::group_by_name(statuses);
        let (pod, waiting) = {
            let state = self.lock();
            let waiting: HashMap<String, Waiting> = state
                .waiting
                .iter()
                .filter(|((u, _), _)| u == uid)
                .map(|((_, n), w)| (n.clone(), w.clone()))
                .collect();
            (state.pods.get(uid).cloned().unwrap_or_default(), waiting)
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let mut containers = Vec::new();
        let names = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .map(|c| c.name.clone());
        for name in names {
            let runs = groups.get(&name).and_then(|runs| {
                let newest = runs.first()?;
                Some(Runs {
                    newest,
                    newest_message: Self::termination_message(newest),
                    previous: runs.get(1).map(|p| (p, Self::termination_message(p))),
                })
            });
            if let Some(o) = observe::observed_container(
                &pod,
                &name,
                runs.as_ref(),
                waiting.get(&name),
                &self.runtime_name,
            ) {
                containers.push(o);
            }
        }
        self.apply_probes(&pod, &groups, &pod_ips, &mut containers);
        Ok(ObservedPod {
            sandbox_ready,
            pod_ips,
            containers,
        })
    }

    /// Containers that never ran but wait on something (image pull...).
    pub(super) fn waiting_only(&self, uid: &str) -> ObservedPod {
        let state = self.lock();
        let Some(pod) = state.pods.get(uid) else {
            return ObservedPod::default();
        };
        let containers = state
            .waiting
            .iter()
            .filter(|((u, _), _)| u == uid)
            .filter_map(|((_, name), w)| {
                observe::observed_container(pod, name, None, Some(w), &self.runtime_name)
            })
            .collect();
        ObservedPod {
            sandbox_ready: false,
            pod_ips: Vec::new(),
            containers,
        }
    }
}

/// The last lines of a CRI log file (`<ts> <stream> <tag> <msg>` lines),
/// at most 80 lines or 2 KiB as kubelet's fallback message.
pub(super) fn log_tail(path: &str) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default())
        .collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    tail.get(start..).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn log_tail_strips_cri_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("0.log");
        std::fs::write(
            &f,
            "2024-01-01T00:00:00Z stdout F hello\n2024-01-01T00:00:01Z stderr F boom\n",
        )
        .unwrap();
        assert_eq!(log_tail(&f.display().to_string()), "hello\nboom");
    }
}
