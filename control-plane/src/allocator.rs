//! Service ClusterIP and NodePort allocation: scans the existing Services and
//! hands out the next free address of --service-cluster-ip-range and port of
//! --service-node-port-range, or checks the ones a Service asks for.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::config::Ipv4Cidr;
use crate::registry::Cause;

/// What the existing Services already hold.
#[derive(Debug, Default)]
pub struct Allocated {
    pub ips: HashSet<Ipv4Addr>,
    pub node_ports: HashSet<(u16, String)>,
}

impl Allocated {
    /// Collects the allocations of `services`, skipping the one named `skip`
    /// (`(namespace, name)`, the Service being updated).
    pub fn scan(services: &[Value], skip: Option<(&str, &str)>) -> Self {
        let mut out = Self::default();
        for svc in services {
            let ns = svc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            let name = svc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if skip == Some((ns, name)) {
                continue;
            }
            for ip in cluster_ips(svc) {
                out.ips.insert(ip);
            }
            for (port, proto) in node_ports(svc) {
                out.node_ports.insert((port, proto));
            }
        }
        out
    }
}

fn cluster_ips(svc: &Value) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if let Some(ip) = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    ips
}

fn node_ports(svc: &Value) -> Vec<(u16, String)> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let n = u16::try_from(p.get("nodePort")?.as_u64()?).ok()?;
                    let proto = p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string();
                    (n != 0).then_some((n, proto))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn cause(field: &str, message: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message,
        field: field.into(),
    }
}

/// Fills in `spec.clusterIP(s)` and node ports of a Service being created or
/// updated (`old` is the stored Service on update), checking requested values.
pub fn allocate(
    svc: &mut Value,
    old: Option<&Value>,
    taken: &Allocated,
    range: Ipv4Cidr,
    ports: (u16, u16),
) -> Result<(), Vec<Cause>> {
    let mut causes = Vec::new();
    let svc_type = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if svc_type != "ExternalName" {
        let mut requested = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if requested.is_empty()
            && let Some(first) = spec
                .get("clusterIPs")
                .and_then(|v| v.get(0))
                .and_then(Value::as_str)
        {
            requested = first.to_string();
        }
        let old_ip = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str);
        if requested.is_empty()
            && let Some(old_ip) = old_ip
        {
            requested = old_ip.to_string();
        }
        let ip = if requested == "None" {
            Some("None".to_string())
        } else if requested.is_empty() {
            // .0 is the network and .1 the `kubernetes` service, as upstream reserves.
            let found = (2..range.size().saturating_sub(1))
                .filter_map(|n| range.nth(n))
                .find(|ip| !taken.ips.contains(ip));
            match found {
                Some(ip) => Some(ip.to_string()),
                None => {
                    causes.push(cause(
                        "spec.clusterIPs",
                        "Internal error: failed to allocate a serviceIP: range is full".to_string(),
                    ));
                    None
                }
            }
        } else if Some(requested.as_str()) == old_ip {
            Some(requested)
        } else {
            match requested.parse::<Ipv4Addr>() {
                Ok(ip) if !range.contains(ip) => {
                    causes.push(cause("spec.clusterIPs", format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {range}"
                    )));
                    None
                }
                Ok(ip) if taken.ips.contains(&ip) => {
                    causes.push(cause("spec.clusterIPs", format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                    )));
                    None
                }
                Ok(ip) => Some(ip.to_string()),
                Err(_) => {
                    causes.push(cause("spec.clusterIPs[0]", format!(
                        "Invalid value: \"{requested}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                    )));
                    None
                }
            }
        };
        if let Some(ip) = ip {
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
            spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
            spec.entry("ipFamilyPolicy")
                .or_insert_with(|| json!("SingleStack"));
        }
    }
    let wants_node_ports = matches!(svc_type.as_str(), "NodePort" | "LoadBalancer");
    let old_ports = old.map(node_ports_by_port).unwrap_or_default();
    let mut used_now: HashSet<(u16, String)> = HashSet::new();
    if let Some(list) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in list.iter_mut().enumerate() {
            let proto = p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string();
            let requested = p.get("nodePort").and_then(Value::as_u64).unwrap_or(0);
            if !wants_node_ports {
                if requested != 0
                    && let Some(m) = p.as_object_mut()
                {
                    m.remove("nodePort");
                }
                continue;
            }
            let port_num = p.get("port").and_then(Value::as_u64).unwrap_or(0);
            let field = format!("spec.ports[{i}].nodePort");
            let chosen = if requested == 0 {
                let reuse = old_ports
                    .iter()
                    .find(|(pn, pr, _)| *pn == port_num && *pr == proto)
                    .map(|(_, _, n)| *n);
                reuse.or_else(|| {
                    (ports.0..=ports.1).find(|n| {
                        let key = (*n, proto.clone());
                        !taken.node_ports.contains(&key) && !used_now.contains(&key)
                    })
                })
            } else {
                match u16::try_from(requested) {
                    Ok(n) if n < ports.0 || n > ports.1 => {
                        causes.push(cause(&field, format!(
                            "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                            ports.0, ports.1
                        )));
                        None
                    }
                    Ok(n)
                        if taken.node_ports.contains(&(n, proto.clone()))
                            || used_now.contains(&(n, proto.clone())) =>
                    {
                        causes.push(cause(
                            &field,
                            format!("Invalid value: {n}: provided port is already allocated"),
                        ));
                        None
                    }
                    Ok(n) => Some(n),
                    Err(_) => {
                        causes.push(cause(&field, format!("Invalid value: {requested}: provided port is not in the valid range. The range of valid ports is {}-{}", ports.0, ports.1)));
                        None
                    }
                }
            };
            if let Some(n) = chosen {
                used_now.insert((n, proto));
                p["nodePort"] = json!(n);
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

fn node_ports_by_port(svc: &Value) -> Vec<(u64, String, u16)> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let n = u16::try_from(p.get("nodePort")?.as_u64()?).ok()?;
                    let port = p.get("port")?.as_u64()?;
                    let proto = p
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string();
                    Some((port, proto, n))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Ipv4Cidr {
        Ipv4Cidr::parse("10.43.0.0/16").unwrap()
    }

    #[test]
    fn allocates_the_next_free_ip_and_node_port() {
        let existing = vec![
            json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"clusterIP": "10.43.0.2", "ports": [{"port": 80, "nodePort": 30000}]}}),
        ];
        let taken = Allocated::scan(&existing, None);
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        allocate(&mut svc, None, &taken, range(), (30000, 32767)).unwrap();
        assert_eq!(svc["spec"]["clusterIP"], "10.43.0.3");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30001);
    }

    #[test]
    fn rejects_taken_and_out_of_range_requests() {
        let existing = vec![
            json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"clusterIP": "10.43.0.5"}}),
        ];
        let taken = Allocated::scan(&existing, None);
        let mut svc = json!({"spec": {"clusterIP": "10.43.0.5"}});
        let causes = allocate(&mut svc, None, &taken, range(), (30000, 32767)).unwrap_err();
        assert!(
            causes[0]
                .message
                .contains("provided IP is already allocated")
        );
        let mut svc = json!({"spec": {"clusterIP": "10.0.0.1", "type": "NodePort", "ports": [{"port": 1, "nodePort": 80}]}});
        let causes = allocate(&mut svc, None, &taken, range(), (30000, 32767)).unwrap_err();
        assert_eq!(causes.len(), 2);
        assert!(causes[1].message.contains("not in the valid range"));
    }

    #[test]
    fn update_keeps_the_old_allocation() {
        let old = json!({"metadata": {"name": "a", "namespace": "d"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31000}]}});
        let taken = Allocated::scan(std::slice::from_ref(&old), Some(("d", "a")));
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        allocate(&mut new, Some(&old), &taken, range(), (30000, 32767)).unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.9");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 31000);
    }
}
