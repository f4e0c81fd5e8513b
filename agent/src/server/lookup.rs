//! Finding pods and containers for the kubelet API through CRI alone: a
//! lazily connected client, sandboxes by the `io.kubernetes.pod.*` labels
//! and containers by `io.kubernetes.container.name`, as kubelet's runtime
//! labels them (pkg/kubelet/types/labels.go).

use std::collections::HashMap;

use cri::client::CriClient;
use cri::proto;
use tokio::sync::OnceCell;

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Why a lookup failed; `NotFound` carries kubelet's message.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("failed to connect to the container runtime")]
    Connect(#[source] cri::client::ConnectError),
    #[error("container runtime call {call} failed")]
    Cri {
        call: &'static str,
        #[source]
        source: tonic::Status,
    },
    #[error("{0}")]
    NotFound(String),
}

pub type Result<T, E = LookupError> = std::result::Result<T, E>;

/// A CRI client connected on first use, so the API works whether or not
/// the runtime is up when the server starts.
#[derive(Debug)]
pub struct LazyCri {
    endpoint: String,
    client: OnceCell<CriClient>,
}

impl LazyCri {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            client: OnceCell::new(),
        }
    }

    /// The connected client (connecting now if needed).
    pub async fn get(&self) -> Result<CriClient> {
        self.client
            .get_or_try_init(|| cri::client::connect(&self.endpoint))
            .await
            .cloned()
            .map_err(LookupError::Connect)
    }
}

fn cri_err(call: &'static str) -> impl FnOnce(tonic::Status) -> LookupError {
    move |source| LookupError::Cri { call, source }
}

/// The newest sandbox of pod `ns/name` (a ready one first), optionally of
/// one uid.
pub async fn find_sandbox(
    cri: &CriClient,
    ns: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<Option<proto::PodSandbox>> {
    let mut labels = HashMap::from([
        (POD_NAMESPACE.to_owned(), ns.to_owned()),
        (POD_NAME.to_owned(), name.to_owned()),
    ]);
    if let Some(uid) = uid {
        labels.insert(POD_UID.to_owned(), uid.to_owned());
    }
    let mut items = cri
        .runtime
        .clone()
        .list_pod_sandbox(proto::ListPodSandboxRequest {
            filter: Some(proto::PodSandboxFilter {
                label_selector: labels,
                ..Default::default()
            }),
        })
        .await
        .map_err(cri_err("ListPodSandbox"))?
        .into_inner()
        .items;
    let ready = proto::PodSandboxState::SandboxReady as i32;
    items.sort_by_key(|s| (s.state == ready, s.created_at));
    Ok(items.pop())
}

/// The containers named `container` of the pod with `uid`, newest first.
pub async fn containers_of(
    cri: &CriClient,
    uid: &str,
    container: &str,
) -> Result<Vec<proto::Container>> {
    let labels = HashMap::from([
        (POD_UID.to_owned(), uid.to_owned()),
        (CONTAINER_NAME.to_owned(), container.to_owned()),
    ]);
    let mut items = cri
        .runtime
        .clone()
        .list_containers(proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter {
                label_selector: labels,
                ..Default::default()
            }),
        })
        .await
        .map_err(cri_err("ListContainers"))?
        .into_inner()
        .containers;
    items.sort_by_key(|c| {
        std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
    });
    Ok(items)
}

/// The pod's uid from its sandbox labels (or the sandbox metadata).
pub fn sandbox_uid(sandbox: &proto::PodSandbox) -> String {
    sandbox
        .labels
        .get(POD_UID)
        .cloned()
        .or_else(|| sandbox.metadata.as_ref().map(|m| m.uid.clone()))
        .unwrap_or_default()
}

/// The current (or, with `previous`, the one before) container `container`
/// of pod `ns/pod`, with kubelet's messages when there is none.
pub async fn find_container(
    cri: &CriClient,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
    container: &str,
    previous: bool,
) -> Result<proto::Container> {
    let sandbox = find_sandbox(cri, ns, pod, uid)
        .await?
        .ok_or_else(|| LookupError::NotFound(format!("pod {pod:?} does not exist")))?;
    let uid = sandbox_uid(&sandbox);
    let mut containers = containers_of(cri, &uid, container).await?.into_iter();
    let current = containers.next();
    let found = if previous { containers.next() } else { current };
    found.ok_or_else(|| {
        LookupError::NotFound(if previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} is waiting to start: ContainerCreating")
        })
    })
}

/// The status of one container (log path, state).
pub async fn container_status(cri: &CriClient, id: &str) -> Result<proto::ContainerStatus> {
    cri.runtime
        .clone()
        .container_status(proto::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        })
        .await
        .map_err(cri_err("ContainerStatus"))?
        .into_inner()
        .status
        .ok_or_else(|| LookupError::NotFound(format!("container {id:?} has no status")))
}

/// Whether a container may still write to its log.
pub fn is_live(status: &proto::ContainerStatus) -> bool {
    status.state == proto::ContainerState::ContainerRunning as i32
        || status.state == proto::ContainerState::ContainerCreated as i32
}

/// Every sandbox of this node.
pub async fn list_sandboxes(cri: &CriClient) -> Result<Vec<proto::PodSandbox>> {
    Ok(cri
        .runtime
        .clone()
        .list_pod_sandbox(proto::ListPodSandboxRequest { filter: None })
        .await
        .map_err(cri_err("ListPodSandbox"))?
        .into_inner()
        .items)
}

/// Every container of this node.
pub async fn list_containers(cri: &CriClient) -> Result<Vec<proto::Container>> {
    Ok(cri
        .runtime
        .clone()
        .list_containers(proto::ListContainersRequest { filter: None })
        .await
        .map_err(cri_err("ListContainers"))?
        .into_inner()
        .containers)
}

/// Calls a CRI streaming verb and returns its URL.
pub async fn streaming_url(cri: &CriClient, req: StreamingRequest) -> Result<String> {
    let mut rt = cri.runtime.clone();
    let url = match req {
        StreamingRequest::Exec(r) => rt.exec(r).await.map_err(cri_err("Exec"))?.into_inner().url,
        StreamingRequest::Attach(r) => {
            rt.attach(r)
                .await
                .map_err(cri_err("Attach"))?
                .into_inner()
                .url
        }
        StreamingRequest::PortForward(r) => {
            rt.port_forward(r)
                .await
                .map_err(cri_err("PortForward"))?
                .into_inner()
                .url
        }
    };
    Ok(url)
}

/// One of the CRI verbs that hand out a streaming URL.
#[derive(Debug, Clone)]
pub enum StreamingRequest {
    Exec(proto::ExecRequest),
    Attach(proto::AttachRequest),
    PortForward(proto::PortForwardRequest),
}
