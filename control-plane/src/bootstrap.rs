//! Objects every cluster has, written on each start: the system namespaces,
//! the `kubernetes` Service with its Endpoints and EndpointSlice pointing at
//! the advertised API server address, the cluster DNS Service
//! `kube-system/kube-dns` (whose endpoints each node's proxy registers), the
//! `cluster-info` discovery ConfigMap, and, on first start, a join token
//! (kubeadm's bootstrap token, kept in `<data-dir>/token` like k3s's
//! node-token).

use std::net::{IpAddr, Ipv4Addr};

use agent::bootstrap::token::{self, BootstrapToken};
use serde_json::{Value, json};

use crate::auth::bootstrap_token::TokenSecret;
use crate::config::Ipv4Cidr;
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
    ensure_kube_dns(api).await;
    let server = format!("https://{}", std::net::SocketAddr::new(advertise, port));
    cluster_info(api, &server).await?;
    first_token(api, &server).await?;
    Ok(())
}

/// The cluster DNS ClusterIP: the 10th address of the service range
/// (`10.43.0.10` in `10.43.0.0/16`), as k3s's default `--cluster-dns`.
pub fn cluster_dns_ip(service_range: &Ipv4Cidr) -> Option<Ipv4Addr> {
    service_range.nth(10)
}

/// The `kube-dns` Service k3s ships with CoreDNS: no selector (each node's
/// proxy adds its DNS server as an endpoint), DNS on 53/UDP and 53/TCP, and
/// `internalTrafficPolicy: Local` so pods ask their own node.
fn kube_dns_service(cluster_ip: Ipv4Addr) -> Value {
    json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {
            "k8s-app": "kube-dns",
            "kubernetes.io/cluster-service": "true",
            "kubernetes.io/name": "CoreDNS",
        }},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "internalTrafficPolicy": "Local",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// Creates `kube-system/kube-dns` when missing, so that its ClusterIP is
/// taken before any other Service can get it. An existing Service is left as
/// the administrator made it; a failure is logged and never blocks readiness.
async fn ensure_kube_dns(api: &Api) {
    let Some(ip) = cluster_dns_ip(&api.config.service_cluster_ip_range) else {
        tracing::warn!(range = %api.config.service_cluster_ip_range, "service range too small for the cluster DNS address; kube-dns not created");
        return;
    };
    let services = match res("", "services") {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(%err, "kube-dns not created");
            return;
        }
    };
    match api.read(services, Some("kube-system"), "kube-dns").await {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(err) => {
            tracing::warn!(%err, "kube-dns not created");
            return;
        }
    }
    match api
        .create(
            services,
            Some("kube-system"),
            kube_dns_service(ip),
            &WriteOptions::default(),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(cluster_ip = %ip, "created the cluster DNS service kube-system/kube-dns")
        }
        Err(e) if e.code == 409 => {}
        Err(err) => tracing::warn!(%err, cluster_ip = %ip, "kube-dns not created"),
    }
}

/// The `cluster-info` ConfigMap in kube-public: a kubeconfig with the
/// server URL and CA, which anonymous joiners read (kubeadm's discovery).
async fn cluster_info(api: &Api, server: &str) -> Result<(), ApiError> {
    let ca_path = api.config.data_dir.join("tls").join("ca.crt");
    let ca = std::fs::read(&ca_path).map_err(|err| {
        ApiError::internal(format!("failed to read {}: {err}", ca_path.display()))
    })?;
    let kubeconfig = cluster_info_kubeconfig(server, &ca);
    let cm = json!({
        "metadata": {"name": token::CLUSTER_INFO_NAME, "namespace": token::CLUSTER_INFO_NAMESPACE},
        "data": {token::KUBECONFIG_KEY: kubeconfig},
    });
    upsert(
        api,
        res("", "configmaps")?,
        Some(token::CLUSTER_INFO_NAMESPACE),
        cm,
    )
    .await
}

/// The kubeconfig of `cluster-info`: one unnamed cluster, as kubeadm writes.
pub fn cluster_info_kubeconfig(server: &str, ca_pem: &[u8]) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
    )
}

/// Where the first join token is kept.
pub fn token_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("token")
}

/// On first start (no `<data-dir>/token`), creates a join token that does
/// not expire, stores it as a Secret and in the token file (0600), and logs
/// the join command. A token deleted later is not recreated.
async fn first_token(api: &Api, server: &str) -> Result<(), ApiError> {
    let path = token_file(&api.config.data_dir);
    if path.exists() {
        return Ok(());
    }
    let secret = TokenSecret {
        token: BootstrapToken::generate(),
        expiration: None,
        description: format!(
            "The default bootstrap token generated by r8s-server, kept in {}.",
            path.display()
        ),
        usages: vec!["authentication".into(), "signing".into()],
        extra_groups: Vec::new(),
    };
    let joined = secret.token.to_string();
    api.create(
        res("", "secrets")?,
        Some(token::SECRET_NAMESPACE),
        token_secret_object(&secret),
        &WriteOptions::default(),
    )
    .await?;
    agent::private_file::write_private(&path, format!("{joined}\n").as_bytes())
        .map_err(|err| ApiError::internal(format!("failed to write {}: {err}", path.display())))?;
    let ca_path = api.config.data_dir.join("tls").join("ca.crt");
    let hash = std::fs::read_to_string(&ca_path)
        .ok()
        .and_then(|pem| {
            x509_parser::pem::parse_x509_pem(pem.as_bytes())
                .ok()
                .map(|(_, p)| p.contents)
        })
        .and_then(|der| token::ca_cert_hash(&der).ok())
        .unwrap_or_default();
    tracing::info!(
        token = %joined,
        path = %path.display(),
        join = %format!("r8s-agent --server {server} --token {joined} --ca-cert-hash {hash}"),
        "created the first join token"
    );
    Ok(())
}

/// The Secret object of a bootstrap token.
pub fn token_secret_object(secret: &TokenSecret) -> Value {
    json!({
        "metadata": {"name": secret.token.secret_name(), "namespace": token::SECRET_NAMESPACE},
        "type": token::SECRET_TYPE,
        "stringData": secret.to_string_data(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_dns_is_the_tenth_address_of_the_service_range() {
        let range = |s| Ipv4Cidr::parse(s).unwrap();
        assert_eq!(
            cluster_dns_ip(&range("10.43.0.0/16")),
            Some(Ipv4Addr::new(10, 43, 0, 10))
        );
        assert_eq!(
            cluster_dns_ip(&range("10.100.7.0/24")),
            Some(Ipv4Addr::new(10, 100, 7, 10))
        );
        assert_eq!(cluster_dns_ip(&range("10.43.0.0/29")), None);
    }

    #[test]
    fn kube_dns_has_no_selector_and_serves_udp_and_tcp_53() {
        let svc = kube_dns_service(Ipv4Addr::new(10, 43, 0, 10));
        assert_eq!(svc["spec"]["clusterIP"], "10.43.0.10");
        assert!(svc["spec"].get("selector").is_none());
        let ports = svc["spec"]["ports"].as_array().unwrap();
        assert_eq!(ports[0]["protocol"], "UDP");
        assert_eq!(ports[1]["protocol"], "TCP");
    }
}
