//! Starting one container run (kubelet's `startContainer`): environment,
//! termination message file, CreateContainer and StartContainer with events.

use cri::proto;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::*;

impl CriRuntime {
    /// Pulls, creates and starts one run of `c` (kubelet's `startContainer`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_container(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        sandbox_id: &str,
        sandbox_config: &proto::PodSandboxConfig,
        volumes: &HashMap<String, PathBuf>,
        env_sources: &env::EnvSources,
        pod_ips: &[String],
    ) -> Result<(), Blocked> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let image = self.ensure_image(pod, c).await?;
        let mut env_sources = env_sources.clone();
        env_sources.pod_ips = pod_ips.to_vec();
        let config_error = |msg: String| {
            self.recorder.record(
                pod,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                &format!("Error: {msg}"),
            );
            self.set_waiting(&uid, &c.name, "CreateContainerConfigError", Some(msg));
            Blocked
        };
        let env =
            env::make_environment(pod, c, &env_sources).map_err(|e| config_error(e.to_string()))?;
        let tm_file =
            container::termination_message_file(&self.config.root_dir, &uid, &c.name, attempt);
        let tm = tm_file.clone();
        let created = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            if let Some(dir) = tm.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&tm, b"")?;
            std::fs::set_permissions(&tm, std::fs::Permissions::from_mode(0o666))
        })
        .await;
        if let Ok(Err(err)) | Err(err) = created.map_err(std::io::Error::other) {
            return Err(config_error(format!(
                "failed to create the termination message file: {err}"
            )));
        }
        let config = container::container_config(
            pod,
            c,
            &container::ContainerInputs {
                attempt,
                env: &env,
                volumes,
                termination_message_file: &tm_file,
                image: &image,
            },
        )
        .map_err(|e| config_error(e.to_string()))?;
        let mut rt = self.cri.runtime.clone();
        let create_failed = |msg: String| {
            self.recorder.record(
                pod,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                &format!("Error: {msg}"),
            );
            Blocked
        };
        let id = match rt
            .create_container(proto::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_owned(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
        {
            Ok(r) => r.into_inner().container_id,
            Err(s) => {
                self.set_waiting(
                    &uid,
                    &c.name,
                    "CreateContainerError",
                    Some(s.message().to_owned()),
                );
                return Err(create_failed(s.message().to_owned()));
            }
        };
        self.recorder.record(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Created",
            &format!("Created container: {}", c.name),
        );
        if let Err(s) = rt
            .start_container(proto::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            self.set_waiting(
                &uid,
                &c.name,
                "RunContainerError",
                Some(s.message().to_owned()),
            );
            return Err(create_failed(s.message().to_owned()));
        }
        self.clear_waiting(&uid, &c.name);
        self.recorder.record(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Started",
            &format!("Started container {}", c.name),
        );
        tracing::info!(pod = %uid, container = %c.name, attempt, id = %id, "container started");
        let pod_ip = pod_ips.first().map(String::as_str);
        if let Err(msg) = self.run_post_start(pod, c, &id, pod_ip).await {
            tracing::info!(pod = %uid, container = %c.name, %msg, "postStart hook failed");
            return Err(Blocked);
        }
        Ok(())
    }
}
