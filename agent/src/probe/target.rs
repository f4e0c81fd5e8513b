//! Probe and lifecycle handlers resolved against their pod (kubelet's
//! `probe.ResolveContainerPort` and `NewRequestForHTTPGetAction`): the host
//! defaults to the pod IP, named ports come from the container's ports.
//! Pure functions.

use k8s_openapi::api::core::v1::{
    Container, ExecAction, GRPCAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Why a handler cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("port {0} not found")]
    PortNotFound(String),
    #[error("invalid port number: {0}")]
    InvalidPort(i64),
    #[error("missing probe handler")]
    NoHandler,
    #[error("the pod has no IP address yet")]
    NoPodIp,
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A resolved httpGet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl HttpTarget {
    /// `scheme://host:port/path` as kubelet's `formatURL` (IPv6 in brackets).
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!(
            "{scheme}://{}{}",
            join_host_port(&self.host, self.port),
            self.path
        )
    }
}

/// What one probe or hook run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Exec {
        command: Vec<String>,
    },
    Http(HttpTarget),
    Tcp {
        host: String,
        port: u16,
    },
    Grpc {
        host: String,
        port: u16,
        service: String,
    },
    Sleep {
        seconds: i64,
    },
}

/// `host:port`, with brackets around IPv6 addresses (Go's `JoinHostPort`).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, TargetError> {
    let n = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| i64::from(p.container_port))
            .ok_or_else(|| TargetError::PortNotFound(name.clone()))?,
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(TargetError::InvalidPort(n))
}

fn host_or_pod_ip(host: Option<&String>, pod_ip: Option<&str>) -> Result<String, TargetError> {
    match host.filter(|h| !h.is_empty()) {
        Some(h) => Ok(h.clone()),
        None => pod_ip
            .filter(|ip| !ip.is_empty())
            .map(str::to_owned)
            .ok_or(TargetError::NoPodIp),
    }
}

fn http_target(
    h: &HTTPGetAction,
    c: &Container,
    pod_ip: Option<&str>,
) -> Result<HttpTarget, TargetError> {
    let scheme = if h
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let path = h.path.clone().unwrap_or_default();
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    Ok(HttpTarget {
        scheme,
        host: host_or_pod_ip(h.host.as_ref(), pod_ip)?,
        port: resolve_port(&h.port, c)?,
        path,
        headers: h
            .http_headers
            .iter()
            .flatten()
            .map(|hd| (hd.name.clone(), hd.value.clone()))
            .collect(),
    })
}

fn tcp_target(
    t: &TCPSocketAction,
    c: &Container,
    pod_ip: Option<&str>,
) -> Result<ProbeAction, TargetError> {
    Ok(ProbeAction::Tcp {
        host: host_or_pod_ip(t.host.as_ref(), pod_ip)?,
        port: resolve_port(&t.port, c)?,
    })
}

fn exec_action(e: &ExecAction) -> ProbeAction {
    ProbeAction::Exec {
        command: e.command.clone().unwrap_or_default(),
    }
}

fn grpc_target(g: &GRPCAction, pod_ip: Option<&str>) -> Result<ProbeAction, TargetError> {
    Ok(ProbeAction::Grpc {
        host: host_or_pod_ip(None, pod_ip)?,
        port: resolve_port(&IntOrString::Int(g.port), &Container::default())?,
        service: g.service.clone().unwrap_or_default(),
    })
}

/// The action of a probe of container `c` in a pod with `pod_ip`.
pub fn probe_action(
    probe: &Probe,
    c: &Container,
    pod_ip: Option<&str>,
) -> Result<ProbeAction, TargetError> {
    if let Some(e) = &probe.exec {
        return Ok(exec_action(e));
    }
    if let Some(h) = &probe.http_get {
        return Ok(ProbeAction::Http(http_target(h, c, pod_ip)?));
    }
    if let Some(t) = &probe.tcp_socket {
        return tcp_target(t, c, pod_ip);
    }
    if let Some(g) = &probe.grpc {
        return grpc_target(g, pod_ip);
    }
    Err(TargetError::NoHandler)
}

/// The action of a lifecycle hook (postStart/preStop) of container `c`.
pub fn hook_action(
    handler: &LifecycleHandler,
    c: &Container,
    pod_ip: Option<&str>,
) -> Result<ProbeAction, TargetError> {
    if let Some(e) = &handler.exec {
        return Ok(exec_action(e));
    }
    if let Some(h) = &handler.http_get {
        return Ok(ProbeAction::Http(http_target(h, c, pod_ip)?));
    }
    if let Some(s) = &handler.sleep {
        return Ok(ProbeAction::Sleep { seconds: s.seconds });
    }
    if let Some(t) = &handler.tcp_socket {
        return tcp_target(t, c, pod_ip);
    }
    Err(TargetError::NoHandler)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};

    use super::*;

    fn container() -> Container {
        Container {
            name: "app".to_owned(),
            ports: Some(vec![ContainerPort {
                name: Some("http".to_owned()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        }
    }

    #[test]
    fn http_get_defaults_to_the_pod_ip_and_resolves_named_ports() {
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                path: Some("healthz?x=1".to_owned()),
                port: IntOrString::String("http".to_owned()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-Test".to_owned(),
                    value: "1".to_owned(),
                }]),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        let ProbeAction::Http(t) = probe_action(&probe, &container(), Some("10.42.0.5")).unwrap()
        else {
            panic!("not http");
        };
        assert_eq!(t.url(), "http://10.42.0.5:8080/healthz?x=1");
        assert_eq!(t.headers, vec![("X-Test".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn unknown_port_names_and_bad_numbers_are_errors() {
        let probe = |port| Probe {
            tcp_socket: Some(TCPSocketAction {
                port,
                ..TCPSocketAction::default()
            }),
            ..Probe::default()
        };
        assert_eq!(
            probe_action(
                &probe(IntOrString::String("db".to_owned())),
                &container(),
                Some("1.2.3.4")
            )
            .unwrap_err()
            .to_string(),
            "port db not found"
        );
        assert_eq!(
            probe_action(
                &probe(IntOrString::Int(70000)),
                &container(),
                Some("1.2.3.4")
            )
            .unwrap_err(),
            TargetError::InvalidPort(70000)
        );
        assert_eq!(
            probe_action(&probe(IntOrString::Int(80)), &container(), None).unwrap_err(),
            TargetError::NoPodIp
        );
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(join_host_port("fd00::5", 80), "[fd00::5]:80");
    }
}
