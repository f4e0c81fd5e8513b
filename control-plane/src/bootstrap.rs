//! Objects every cluster has, written on each start: the system namespaces,
//! and the `kubernetes` Service with its Endpoints and EndpointSlice
//! pointing at the advertised API server address.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::patch::PatchType;
use crate::resources::{self, ResourceType};
use crate::server::Api;
use crate::server::objects::{UpdateMode, WriteOptions};
use crate::server::status::ApiError;

/// The namespaces upstream creates.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn res(group: &str, plural: &str) -> Result<&'static ResourceType, ApiError> {
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

/// Creates `obj`, or merges it into the existing object.
async fn upsert(api: &Api, r: &ResourceType, ns: Option<&str>, obj: Value) -> Result<(), ApiError> {
    let opts = WriteOptions::default();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if api.read(r, ns, &name).await?.is_none() {
        match api.create(r, ns, obj.clone(), &opts).await {
            Err(e) if e.code == 409 => {}
            other => return other.map(|_| ()),
        }
    }
    let mut patch = obj;
    if let Some(m) = patch.as_object_mut() {
        m.remove("metadata");
    }
    api.patch(
        r,
        ns,
        &name,
        UpdateMode::Main,
        PatchType::Merge,
        &patch,
        &opts,
    )
    .await
    .map(|_| ())
}

/// Writes the bootstrap objects.
pub async fn run(api: &Api, advertise: IpAddr, port: u16) -> Result<(), ApiError> {
    let namespaces = res("", "namespaces")?;
    for ns in SYSTEM_NAMESPACES {
        match api
            .create(
                namespaces,
                None,
                json!({"metadata": {"name": ns}}),
                &WriteOptions::default(),
            )
            .await
        {
            Ok(_) => tracing::info!(namespace = ns, "created system namespace"),
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    crate::auth::bootstrap_policy::run(api).await?;
    let cluster_ip = api
        .config
        .service_cluster_ip_range
        .nth(1)
        .ok_or_else(|| ApiError::internal("the service cluster IP range is too small"))?;
    let service = json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip.to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "sessionAffinity": "None",
        },
    });
    upsert(api, res("", "services")?, Some("default"), service).await?;
    let endpoints = json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    upsert(api, res("", "endpoints")?, Some("default"), endpoints).await?;
    let slice = json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if advertise.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [advertise.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    upsert(
        api,
        res("discovery.k8s.io", "endpointslices")?,
        Some("default"),
        slice,
    )
    .await?;
    Ok(())
}

/// The address to advertise: the flag, the bind address if specific, or the
/// host's primary address (the source address of its default route).
pub fn advertise_address(flag: Option<IpAddr>, bind: IpAddr) -> IpAddr {
    if let Some(ip) = flag {
        return ip;
    }
    if !bind.is_unspecified() {
        return bind;
    }
    // A connected UDP socket sends nothing; it only asks the kernel for the
    // source address it would route from.
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr());
    match routed {
        Ok(addr) if !addr.ip().is_unspecified() => addr.ip(),
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}
