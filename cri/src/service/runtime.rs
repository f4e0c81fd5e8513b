//! RuntimeService handlers.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::BoxStream;
use crate::proto;
use crate::proto::runtime_service_server::RuntimeService;
use crate::runtime::Runtime;
use crate::streaming::{StreamRequest, Streaming, TokenError};

/// Serves `runtime.v1.RuntimeService`.
pub struct RuntimeHandler {
    rt: Arc<Runtime>,
    streaming: Arc<Streaming>,
}

impl RuntimeHandler {
    pub fn new(rt: Arc<Runtime>, streaming: Arc<Streaming>) -> Self {
        Self { rt, streaming }
    }

    fn stream_url(&self, request: StreamRequest) -> Result<String, Status> {
        self.streaming.url(request).map_err(|e| match e {
            TokenError::TooManyInFlight => Status::resource_exhausted(e.to_string()),
        })
    }
}

/// The checks of upstream's validateExecRequest / validateAttachRequest.
fn validate_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), Status> {
    if tty && stderr {
        // With a TTY, stderr cannot be multiplexed.
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

fn unimplemented<T>(rpc: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!("{rpc} is not implemented")))
}

fn condition(kind: &str) -> proto::RuntimeCondition {
    proto::RuntimeCondition {
        r#type: kind.to_string(),
        status: true,
        reason: String::new(),
        message: String::new(),
    }
}

#[tonic::async_trait]
impl RuntimeService for RuntimeHandler {
    type StreamPodSandboxesStream = BoxStream<proto::StreamPodSandboxesResponse>;
    type StreamContainersStream = BoxStream<proto::StreamContainersResponse>;
    type StreamContainerStatsStream = BoxStream<proto::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = BoxStream<proto::StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = BoxStream<proto::ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = BoxStream<proto::StreamPodSandboxMetricsResponse>;

    async fn version(
        &self,
        _request: Request<proto::VersionRequest>,
    ) -> Result<Response<proto::VersionResponse>, Status> {
        Ok(Response::new(proto::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: crate::RUNTIME_NAME.into(),
            runtime_version: crate::RUNTIME_VERSION.into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<proto::RunPodSandboxRequest>,
    ) -> Result<Response<proto::RunPodSandboxResponse>, Status> {
        let req = request.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("sandbox config is required"))?;
        let pod_sandbox_id = self.rt.run_pod_sandbox(config, req.runtime_handler).await?;
        Ok(Response::new(proto::RunPodSandboxResponse {
            pod_sandbox_id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<proto::StopPodSandboxRequest>,
    ) -> Result<Response<proto::StopPodSandboxResponse>, Status> {
        self.rt
            .stop_pod_sandbox(&request.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(proto::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<proto::RemovePodSandboxRequest>,
    ) -> Result<Response<proto::RemovePodSandboxResponse>, Status> {
        self.rt
            .remove_pod_sandbox(&request.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(proto::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<proto::PodSandboxStatusRequest>,
    ) -> Result<Response<proto::PodSandboxStatusResponse>, Status> {
        let req = request.into_inner();
        let status = self.rt.pod_sandbox_status(&req.pod_sandbox_id).await?;
        let containers_statuses = self
            .rt
            .list_containers(Some(proto::ContainerFilter {
                pod_sandbox_id: status.id.clone(),
                ..Default::default()
            }))
            .await;
        let mut statuses = Vec::new();
        for c in containers_statuses {
            if let Ok(s) = self.rt.container_status(&c.id).await {
                statuses.push(s);
            }
        }
        Ok(Response::new(proto::PodSandboxStatusResponse {
            status: Some(status),
            info: Default::default(),
            containers_statuses: statuses,
            timestamp: crate::container::now_nanos(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<proto::ListPodSandboxRequest>,
    ) -> Result<Response<proto::ListPodSandboxResponse>, Status> {
        let items = self.rt.list_pod_sandbox(request.into_inner().filter).await;
        Ok(Response::new(proto::ListPodSandboxResponse { items }))
    }

    async fn stream_pod_sandboxes(
        &self,
        _request: Request<proto::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        unimplemented("StreamPodSandboxes")
    }

    async fn create_container(
        &self,
        request: Request<proto::CreateContainerRequest>,
    ) -> Result<Response<proto::CreateContainerResponse>, Status> {
        let req = request.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("container config is required"))?;
        let container_id = self
            .rt
            .create_container(&req.pod_sandbox_id, config)
            .await?;
        Ok(Response::new(proto::CreateContainerResponse {
            container_id,
        }))
    }

    async fn start_container(
        &self,
        request: Request<proto::StartContainerRequest>,
    ) -> Result<Response<proto::StartContainerResponse>, Status> {
        self.rt
            .start_container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(proto::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<proto::StopContainerRequest>,
    ) -> Result<Response<proto::StopContainerResponse>, Status> {
        let req = request.into_inner();
        self.rt
            .stop_container(&req.container_id, req.timeout)
            .await?;
        Ok(Response::new(proto::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<proto::RemoveContainerRequest>,
    ) -> Result<Response<proto::RemoveContainerResponse>, Status> {
        self.rt
            .remove_container(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(proto::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<proto::ListContainersRequest>,
    ) -> Result<Response<proto::ListContainersResponse>, Status> {
        let containers = self.rt.list_containers(request.into_inner().filter).await;
        Ok(Response::new(proto::ListContainersResponse { containers }))
    }

    async fn stream_containers(
        &self,
        _request: Request<proto::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        unimplemented("StreamContainers")
    }

    async fn container_status(
        &self,
        request: Request<proto::ContainerStatusRequest>,
    ) -> Result<Response<proto::ContainerStatusResponse>, Status> {
        let status = self
            .rt
            .container_status(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(proto::ContainerStatusResponse {
            status: Some(status),
            info: Default::default(),
        }))
    }

    async fn update_container_resources(
        &self,
        _request: Request<proto::UpdateContainerResourcesRequest>,
    ) -> Result<Response<proto::UpdateContainerResourcesResponse>, Status> {
        unimplemented("UpdateContainerResources")
    }

    async fn reopen_container_log(
        &self,
        request: Request<proto::ReopenContainerLogRequest>,
    ) -> Result<Response<proto::ReopenContainerLogResponse>, Status> {
        self.rt
            .reopen_container_log(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(proto::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<proto::ExecSyncRequest>,
    ) -> Result<Response<proto::ExecSyncResponse>, Status> {
        let req = request.into_inner();
        let out = self
            .rt
            .exec_sync(&req.container_id, req.cmd, req.timeout)
            .await?;
        Ok(Response::new(proto::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(
        &self,
        request: Request<proto::ExecRequest>,
    ) -> Result<Response<proto::ExecResponse>, Status> {
        let mut req = request.into_inner();
        if req.container_id.is_empty() {
            return Err(Status::invalid_argument("missing required container_id"));
        }
        validate_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("command is required"));
        }
        req.container_id = self.rt.running_container(&req.container_id).await?;
        let url = self.stream_url(StreamRequest::Exec(req))?;
        Ok(Response::new(proto::ExecResponse { url }))
    }

    async fn attach(
        &self,
        request: Request<proto::AttachRequest>,
    ) -> Result<Response<proto::AttachResponse>, Status> {
        let mut req = request.into_inner();
        if req.container_id.is_empty() {
            return Err(Status::invalid_argument("missing required container_id"));
        }
        validate_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        req.container_id = self.rt.running_container(&req.container_id).await?;
        let url = self.stream_url(StreamRequest::Attach(req))?;
        Ok(Response::new(proto::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<proto::PortForwardRequest>,
    ) -> Result<Response<proto::PortForwardResponse>, Status> {
        let mut req = request.into_inner();
        if req.pod_sandbox_id.is_empty() {
            return Err(Status::invalid_argument("missing required pod_sandbox_id"));
        }
        req.pod_sandbox_id = self.rt.ready_sandbox(&req.pod_sandbox_id).await?;
        let url = self.stream_url(StreamRequest::PortForward(req))?;
        Ok(Response::new(proto::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        request: Request<proto::ContainerStatsRequest>,
    ) -> Result<Response<proto::ContainerStatsResponse>, Status> {
        let stats = self
            .rt
            .container_stats(&request.into_inner().container_id)
            .await?;
        Ok(Response::new(proto::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<proto::ListContainerStatsRequest>,
    ) -> Result<Response<proto::ListContainerStatsResponse>, Status> {
        let stats = self
            .rt
            .list_container_stats(request.into_inner().filter)
            .await;
        Ok(Response::new(proto::ListContainerStatsResponse { stats }))
    }

    async fn stream_container_stats(
        &self,
        _request: Request<proto::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        unimplemented("StreamContainerStats")
    }

    async fn pod_sandbox_stats(
        &self,
        _request: Request<proto::PodSandboxStatsRequest>,
    ) -> Result<Response<proto::PodSandboxStatsResponse>, Status> {
        unimplemented("PodSandboxStats")
    }

    async fn list_pod_sandbox_stats(
        &self,
        _request: Request<proto::ListPodSandboxStatsRequest>,
    ) -> Result<Response<proto::ListPodSandboxStatsResponse>, Status> {
        unimplemented("ListPodSandboxStats")
    }

    async fn stream_pod_sandbox_stats(
        &self,
        _request: Request<proto::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        unimplemented("StreamPodSandboxStats")
    }

    async fn update_runtime_config(
        &self,
        _request: Request<proto::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<proto::UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR is a flag of r8s-cri; kubelet's update is accepted and ignored.
        Ok(Response::new(proto::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        Ok(Response::new(proto::StatusResponse {
            status: Some(proto::RuntimeStatus {
                conditions: vec![condition("RuntimeReady"), condition("NetworkReady")],
            }),
            info: Default::default(),
            runtime_handlers: vec![proto::RuntimeHandler {
                name: String::new(),
                features: Some(proto::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(proto::RuntimeFeatures {
                supplemental_groups_policy: false,
                user_namespaces_host_network: false,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _request: Request<proto::CheckpointContainerRequest>,
    ) -> Result<Response<proto::CheckpointContainerResponse>, Status> {
        unimplemented("CheckpointContainer")
    }

    async fn get_container_events(
        &self,
        _request: Request<proto::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        unimplemented("GetContainerEvents")
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<proto::ListMetricDescriptorsRequest>,
    ) -> Result<Response<proto::ListMetricDescriptorsResponse>, Status> {
        unimplemented("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<proto::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<proto::ListPodSandboxMetricsResponse>, Status> {
        unimplemented("ListPodSandboxMetrics")
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<proto::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        unimplemented("StreamPodSandboxMetrics")
    }

    async fn runtime_config(
        &self,
        _request: Request<proto::RuntimeConfigRequest>,
    ) -> Result<Response<proto::RuntimeConfigResponse>, Status> {
        Ok(Response::new(proto::RuntimeConfigResponse {
            linux: Some(proto::LinuxRuntimeConfiguration {
                cgroup_driver: proto::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        _request: Request<proto::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<proto::UpdatePodSandboxResourcesResponse>, Status> {
        unimplemented("UpdatePodSandboxResources")
    }
}
