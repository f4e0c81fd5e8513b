//! rtnetlink operations: the node bridge (host netns) and a pod's veth, addresses,
//! loopback and default route (pod netns, through a socket opened inside it).
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

/// Errors of configuring pod networking.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("failed to open netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("failed to enter network namespace {path}")]
    Setns {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink request {step} failed")]
    Netlink {
        step: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {0} not found")]
    NoLink(String),
    #[error("failed to enable ip forwarding")]
    Forwarding(#[source] std::io::Error),
}

fn nl(step: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    move |source| NetworkError::Netlink { step, source }
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.raw_code() == -libc::ENODEV || m.raw_code() == -libc::ENOENT)
}

/// Opens a netlink connection in the current netns and drives it on tokio.
pub fn host_handle() -> Result<Handle, NetworkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Opens a netlink connection inside the netns bind-mounted at `path`: the socket
/// is created by a short thread that entered the netns, and keeps that netns.
pub fn netns_handle(path: &Path) -> Result<Handle, NetworkError> {
    let rt = tokio::runtime::Handle::current();
    let p = path.to_path_buf();
    let res = std::thread::spawn(move || {
        let _enter = rt.enter();
        let f = std::fs::File::open(&p).map_err(|source| NetworkError::Setns {
            path: p.display().to_string(),
            source,
        })?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            NetworkError::Setns {
                path: p.display().to_string(),
                source: e.into(),
            }
        })?;
        rtnetlink::new_connection().map_err(NetworkError::Socket)
    })
    .join()
    .map_err(|_| NetworkError::Socket(std::io::Error::other("netns thread panicked")))?;
    let (conn, handle, _) = res?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(nl("get link")(e)),
    }
}

/// What a sandbox got from the network.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub ip: Ipv4Addr,
    pub host_veth: String,
}

/// Creates the bridge if missing, gives it the gateway address, brings it up, and
/// turns on IPv4 forwarding in the node's netns.
pub async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<u32, NetworkError> {
    let index = match link_index(handle, name).await? {
        Some(i) => i,
        None => {
            if let Err(e) = handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                && !is_exists(&e)
            {
                return Err(nl("add bridge")(e));
            }
            link_index(handle, name)
                .await?
                .ok_or_else(|| NetworkError::NoLink(name.to_string()))?
        }
    };
    if let Err(e) = handle
        .address()
        .add(index, IpAddr::V4(gateway), prefix)
        .execute()
        .await
        && !is_exists(&e)
    {
        return Err(nl("add bridge address")(e));
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("bridge up"))?;
    let fwd = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(fwd)
        .map(|s| s.trim() != "1")
        .unwrap_or(true)
    {
        std::fs::write(fwd, "1").map_err(NetworkError::Forwarding)?;
    }
    Ok(index)
}

/// Attaches the pod netns at `netns` to the bridge: veth `host_veth` on the bridge
/// (hairpin on), peer `eth0` created directly in the pod netns with `ip/prefix`,
/// loopback up, default route via `gateway`.
pub async fn attach_pod(
    host: &Handle,
    bridge_index: u32,
    netns: &Path,
    host_veth: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    let ns_file = std::fs::File::open(netns).map_err(|source| NetworkError::Setns {
        path: netns.display().to_string(),
        source,
    })?;
    let peer = LinkMessageBuilder::<LinkUnspec>::default()
        .name("eth0".to_string())
        .setns_by_fd(ns_file.as_raw_fd())
        .build();
    let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_veth.to_string())
        .controller(bridge_index)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.link()
        .add(veth)
        .execute()
        .await
        .map_err(nl("add veth"))?;
    drop(ns_file);
    let host_index = link_index(host, host_veth)
        .await?
        .ok_or_else(|| NetworkError::NoLink(host_veth.to_string()))?;
    host.link()
        .set_port(LinkBridgePort::new(host_index).hairpin(true).build())
        .execute()
        .await
        .map_err(nl("hairpin"))?;

    let pod = netns_handle(netns)?;
    let lo = link_index(&pod, "lo")
        .await?
        .ok_or_else(|| NetworkError::NoLink("lo".into()))?;
    pod.link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .map_err(nl("loopback up"))?;
    let eth0 = link_index(&pod, "eth0")
        .await?
        .ok_or_else(|| NetworkError::NoLink("eth0".into()))?;
    pod.address()
        .add(eth0, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(nl("add pod address"))?;
    pod.link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .map_err(nl("eth0 up"))?;
    pod.route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(eth0)
                .build(),
        )
        .execute()
        .await
        .map_err(nl("default route"))?;
    Ok(())
}

/// Deletes a pod's host veth (its peer goes with it); absent is fine.
pub async fn detach_pod(host: &Handle, host_veth: &str) -> Result<(), NetworkError> {
    let Some(index) = link_index(host, host_veth).await? else {
        return Ok(());
    };
    match host.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(nl("delete veth")(e)),
    }
}

/// Name of a sandbox's host-side veth (at most 15 bytes, the kernel's limit).
pub fn host_veth_name(sandbox_id: &str) -> String {
    format!("veth{}", &sandbox_id[..sandbox_id.len().min(11)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_ifnamsiz() {
        let n = host_veth_name("0123456789abcdef0123456789abcdef");
        assert!(n.len() <= 15);
        assert!(n.starts_with("veth0123"));
    }
}
