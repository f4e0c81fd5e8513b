//! Service ClusterIP and NodePort allocation, with upstream's error
//! messages. In-memory bitmaps; the server rebuilds them from the stored
//! services at startup (`mark_used`) and holds them behind one lock. No I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{Value, json};
use thiserror::Error;

use super::Cause;
use super::field::{self, BadValue, FieldPath};
use super::json::{get_array, get_str};
use super::service::{is_headless, service_type};

/// A bad `--service-cluster-ip-range` or `--service-node-port-range`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AllocatorError {
    #[error("invalid CIDR {0:?}: expected an IPv4 a.b.c.d/n with n between 8 and 30")]
    InvalidCidr(String),
    #[error("invalid port range {0:?}: expected a first-last range")]
    InvalidPortRange(String),
}

/// A fixed-size set of offsets.
#[derive(Debug, Clone)]
struct Bitmap {
    bits: Vec<u64>,
    size: u32,
    used: u32,
}

impl Bitmap {
    fn new(size: u32) -> Self {
        Bitmap {
            bits: vec![0; size.div_ceil(64) as usize],
            size,
            used: 0,
        }
    }

    fn has(&self, i: u32) -> bool {
        i < self.size && self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: u32) -> bool {
        if i >= self.size || self.has(i) {
            return false;
        }
        self.bits[(i / 64) as usize] |= 1 << (i % 64);
        self.used += 1;
        true
    }

    fn clear(&mut self, i: u32) {
        if self.has(i) {
            self.bits[(i / 64) as usize] &= !(1 << (i % 64));
            self.used -= 1;
        }
    }

    /// A free offset in `lo..hi`, starting the search at a random place.
    fn random_free(&self, lo: u32, hi: u32) -> Option<u32> {
        if hi <= lo {
            return None;
        }
        let n = hi - lo;
        let start = rand::rng().random_range(0..n);
        (0..n).map(|k| lo + (start + k) % n).find(|&i| !self.has(i))
    }
}

fn internal(field_path: &str, message: String) -> Cause {
    Cause {
        reason: "InternalError".into(),
        message,
        field: field_path.into(),
    }
}

/// Allocates service ClusterIPs from an IPv4 CIDR. The network and
/// broadcast addresses are never handed out; the first host address (`.1`,
/// the `kubernetes` service's) only when asked for by name.
#[derive(Debug, Clone)]
pub struct ServiceIpAllocator {
    base: u32,
    prefix: u8,
    used: Bitmap,
}

impl ServiceIpAllocator {
    /// An allocator over a CIDR such as `10.43.0.0/16`.
    pub fn new(cidr: &str) -> Result<Self, AllocatorError> {
        let bad = || AllocatorError::InvalidCidr(cidr.to_string());
        let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        let base = u32::from(addr) & mask;
        Ok(ServiceIpAllocator {
            base,
            prefix,
            used: Bitmap::new(1 << (32 - prefix)),
        })
    }

    /// The range as a CIDR string.
    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    /// The first host address (`10.43.0.1`), reserved for the `kubernetes` service.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// How many addresses are in use.
    pub fn used(&self) -> u32 {
        self.used.used
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let v = u32::from(ip);
        let off = v.checked_sub(self.base)?;
        // Network and broadcast addresses are outside the usable range.
        (off > 0 && off < self.used.size - 1).then_some(off)
    }

    /// Records an address as in use (rebuilding from stored services);
    /// addresses outside the range are ignored.
    pub fn mark_used(&mut self, ip: &str) {
        if let Some(off) = ip.parse().ok().and_then(|ip| self.offset(ip)) {
            self.used.set(off);
        }
    }

    /// Allocates the requested address, or a random free one.
    pub fn allocate(&mut self, requested: Option<&str>) -> Result<Ipv4Addr, Cause> {
        let path = FieldPath::new("spec").child("clusterIPs");
        match requested {
            Some(req) => {
                let bad = |detail: String| {
                    field::invalid(
                        &path,
                        BadValue::StrList(vec![req.to_string()]),
                        &format!("failed to allocate IP {req}: {detail}"),
                    )
                };
                let ip: Ipv4Addr = req.parse().map_err(|_| {
                    field::invalid(
                        &path.index(0),
                        req,
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )
                })?;
                let Some(off) = self.offset(ip) else {
                    return Err(bad(format!(
                        "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                        self.cidr()
                    )));
                };
                if !self.used.set(off) {
                    return Err(bad("provided IP is already allocated".into()));
                }
                Ok(ip)
            }
            None => {
                // Offsets 2..size-1: skips network, `.1` and broadcast.
                let off = self
                    .used
                    .random_free(2, self.used.size - 1)
                    .ok_or_else(|| {
                        internal(
                            path.as_str(),
                            "failed to allocate a serviceIP: range is full".into(),
                        )
                    })?;
                self.used.set(off);
                Ok(Ipv4Addr::from(self.base + off))
            }
        }
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, ip: &str) {
        if let Some(off) = ip.parse().ok().and_then(|ip| self.offset(ip)) {
            self.used.clear(off);
        }
    }

    /// Whether an address is allocated.
    pub fn is_used(&self, ip: &str) -> bool {
        ip.parse()
            .ok()
            .and_then(|ip| self.offset(ip))
            .is_some_and(|o| self.used.has(o))
    }
}

/// Allocates NodePorts from a port range (default 30000-32767).
#[derive(Debug, Clone)]
pub struct NodePortAllocator {
    first: u16,
    last: u16,
    used: Bitmap,
}

impl Default for NodePortAllocator {
    fn default() -> Self {
        Self::new(30000, 32767)
    }
}

impl NodePortAllocator {
    /// An allocator over `first..=last`.
    pub fn new(first: u16, last: u16) -> Self {
        let (first, last) = if first <= last {
            (first, last)
        } else {
            (last, first)
        };
        NodePortAllocator {
            first,
            last,
            used: Bitmap::new(u32::from(last - first) + 1),
        }
    }

    /// Parses a `--service-node-port-range` such as `30000-32767`.
    pub fn from_range(range: &str) -> Result<Self, AllocatorError> {
        let bad = || AllocatorError::InvalidPortRange(range.to_string());
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a == 0 || b < a {
            return Err(bad());
        }
        Ok(Self::new(a, b))
    }

    /// The range as upstream prints it (`30000-32767`).
    pub fn range(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }

    /// How many ports are in use.
    pub fn used(&self) -> u32 {
        self.used.used
    }

    fn offset(&self, port: i64) -> Option<u32> {
        (i64::from(self.first)..=i64::from(self.last))
            .contains(&port)
            .then(|| u32::try_from(port - i64::from(self.first)).ok())
            .flatten()
    }

    /// Records a port as in use; ports outside the range are ignored.
    pub fn mark_used(&mut self, port: i64) {
        if let Some(off) = self.offset(port) {
            self.used.set(off);
        }
    }

    /// Allocates the requested port, or a random free one. `path` is the
    /// field the error names (`spec.ports[0].nodePort`).
    pub fn allocate_at(&mut self, requested: Option<i64>, path: &FieldPath) -> Result<i64, Cause> {
        match requested {
            Some(port) => {
                let Some(off) = self.offset(port) else {
                    return Err(field::invalid(
                        path,
                        port,
                        &format!(
                            "provided port is not in the valid range. The range of valid ports is {}",
                            self.range()
                        ),
                    ));
                };
                if !self.used.set(off) {
                    return Err(field::invalid(
                        path,
                        port,
                        "provided port is already allocated",
                    ));
                }
                Ok(port)
            }
            None => {
                let off = self.used.random_free(0, self.used.size).ok_or_else(|| {
                    internal(
                        path.as_str(),
                        "failed to allocate a nodePort: range is full".into(),
                    )
                })?;
                self.used.set(off);
                Ok(i64::from(self.first) + i64::from(off))
            }
        }
    }

    /// Allocates with errors naming `spec.ports[0].nodePort`.
    pub fn allocate(&mut self, requested: Option<i64>) -> Result<i64, Cause> {
        self.allocate_at(
            requested,
            &FieldPath::new("spec")
                .child("ports")
                .index(0)
                .child("nodePort"),
        )
    }

    /// Returns a port to the pool.
    pub fn release(&mut self, port: i64) {
        if let Some(off) = self.offset(port) {
            self.used.clear(off);
        }
    }

    /// Whether a port is allocated.
    pub fn is_used(&self, port: i64) -> bool {
        self.offset(port).is_some_and(|o| self.used.has(o))
    }
}

/// What a service holds in the allocators.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceAllocations {
    pub cluster_ips: Vec<String>,
    pub node_ports: Vec<i64>,
}

/// The addresses and ports a stored service holds.
pub fn service_allocations(svc: &Value) -> ServiceAllocations {
    let mut out = ServiceAllocations::default();
    if service_type(svc) != "ExternalName" && !is_headless(svc) {
        let mut ips: Vec<String> = get_array(svc, &["spec", "clusterIPs"])
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let ip = get_str(svc, &["spec", "clusterIP"]);
        if ips.is_empty() && !ip.is_empty() {
            ips.push(ip.to_string());
        }
        out.cluster_ips = ips;
    }
    for p in get_array(svc, &["spec", "ports"]) {
        if let Some(np) = p
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
            && !out.node_ports.contains(&np)
        {
            out.node_ports.push(np);
        }
    }
    if let Some(hc) = svc
        .pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_i64)
        .filter(|n| *n != 0)
    {
        out.node_ports.push(hc);
    }
    out
}

/// Marks what a stored service holds as used (server startup).
pub fn mark_service(ips: &mut ServiceIpAllocator, ports: &mut NodePortAllocator, svc: &Value) {
    let held = service_allocations(svc);
    for ip in &held.cluster_ips {
        ips.mark_used(ip);
    }
    for p in held.node_ports {
        ports.mark_used(p);
    }
}

/// Allocates a new service's clusterIP/clusterIPs (not for headless or
/// ExternalName services) and, for NodePort and LoadBalancer services, its
/// nodePorts (and healthCheckNodePort for `externalTrafficPolicy: Local`
/// load balancers). Requested values are honoured or rejected; nothing is
/// kept allocated on error.
pub fn allocate_service(
    ips: &mut ServiceIpAllocator,
    ports: &mut NodePortAllocator,
    svc: &mut Value,
) -> Result<(), Vec<Cause>> {
    update_service_allocations(ips, ports, svc, None)
}

/// Like `allocate_service` for an update: what `old` already holds and
/// `svc` keeps is not allocated again, and what `old` held that `svc` no
/// longer does is released once the update's allocation succeeded. Call
/// `service::carry_allocated_values` first so a PUT that omits them keeps them.
pub fn update_service_allocations(
    ips: &mut ServiceIpAllocator,
    ports: &mut NodePortAllocator,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<Cause>> {
    let held = old.map(service_allocations).unwrap_or_default();
    let mut new_ips: Vec<String> = Vec::new();
    let mut new_ports: Vec<i64> = Vec::new();
    let mut errs = Vec::new();
    let ty = service_type(svc).to_string();
    let wants_ip = ty != "ExternalName" && !is_headless(svc);
    if wants_ip {
        let requested = get_str(svc, &["spec", "clusterIP"]).to_string();
        let requested = if requested.is_empty() {
            get_array(svc, &["spec", "clusterIPs"])
                .first()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        } else {
            requested
        };
        if !requested.is_empty() && held.cluster_ips.contains(&requested) {
            // Kept from the old object.
        } else {
            match ips.allocate((!requested.is_empty()).then_some(requested.as_str())) {
                Ok(ip) => {
                    let ip = ip.to_string();
                    if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("clusterIP".into(), json!(ip));
                        spec.insert("clusterIPs".into(), json!([ip]));
                    }
                    new_ips.push(ip);
                }
                Err(e) => errs.push(e),
            }
        }
    }
    let lb_ports = svc
        .pointer("/spec/allocateLoadBalancerNodePorts")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let wants_ports = ty == "NodePort" || (ty == "LoadBalancer" && lb_ports);
    if wants_ports || ty == "LoadBalancer" {
        // One nodePort per service port number, shared across protocols.
        let mut by_port: BTreeMap<i64, i64> = BTreeMap::new();
        if let Some(list) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for (i, p) in list.iter_mut().enumerate() {
                let path = FieldPath::new("spec")
                    .child("ports")
                    .index(i)
                    .child("nodePort");
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                let requested = p
                    .get("nodePort")
                    .and_then(Value::as_i64)
                    .filter(|n| *n != 0);
                let result = match requested {
                    Some(np) if held.node_ports.contains(&np) || new_ports.contains(&np) => Ok(np),
                    Some(np) => ports.allocate_at(Some(np), &path),
                    None if !wants_ports => continue,
                    None => match by_port.get(&port) {
                        Some(np) => Ok(*np),
                        None => ports.allocate_at(None, &path),
                    },
                };
                match result {
                    Ok(np) => {
                        if !held.node_ports.contains(&np) && !new_ports.contains(&np) {
                            new_ports.push(np);
                        }
                        by_port.insert(port, np);
                        if let Some(m) = p.as_object_mut() {
                            m.insert("nodePort".into(), json!(np));
                        }
                    }
                    Err(e) => errs.push(e),
                }
            }
        }
    }
    let local_lb =
        ty == "LoadBalancer" && get_str(svc, &["spec", "externalTrafficPolicy"]) == "Local";
    if local_lb {
        let path = FieldPath::new("spec").child("healthCheckNodePort");
        let requested = svc
            .pointer("/spec/healthCheckNodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0);
        let result = match requested {
            Some(np) if held.node_ports.contains(&np) => Ok(np),
            other => ports.allocate_at(other, &path),
        };
        match result {
            Ok(np) => {
                if !held.node_ports.contains(&np) {
                    new_ports.push(np);
                }
                if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("healthCheckNodePort".into(), json!(np));
                }
            }
            Err(e) => errs.push(e),
        }
    }
    if !errs.is_empty() {
        for ip in &new_ips {
            ips.release(ip);
        }
        for p in &new_ports {
            ports.release(*p);
        }
        return Err(errs);
    }
    // Release what the old object held and the new one dropped.
    let now = service_allocations(svc);
    for ip in held
        .cluster_ips
        .iter()
        .filter(|ip| !now.cluster_ips.contains(ip))
    {
        ips.release(ip);
    }
    for p in held
        .node_ports
        .iter()
        .filter(|p| !now.node_ports.contains(p))
    {
        ports.release(*p);
    }
    Ok(())
}

/// Releases everything a deleted service held.
pub fn release_service(ips: &mut ServiceIpAllocator, ports: &mut NodePortAllocator, svc: &Value) {
    let held = service_allocations(svc);
    for ip in &held.cluster_ips {
        ips.release(ip);
    }
    for p in held.node_ports {
        ports.release(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_allocator_skips_network_broadcast_and_first() {
        let mut a = ServiceIpAllocator::new("10.43.0.0/29").unwrap();
        // Hosts .1-.6; automatic allocation uses .2-.6.
        let mut got: Vec<String> = (0..5)
            .map(|_| a.allocate(None).unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                "10.43.0.2",
                "10.43.0.3",
                "10.43.0.4",
                "10.43.0.5",
                "10.43.0.6"
            ]
        );
        let full = a.allocate(None).unwrap_err();
        assert_eq!(
            full.message,
            "failed to allocate a serviceIP: range is full"
        );
        assert_eq!(
            a.allocate(Some("10.43.0.1")).unwrap().to_string(),
            "10.43.0.1"
        );
        a.release("10.43.0.4");
        assert_eq!(a.allocate(None).unwrap().to_string(), "10.43.0.4");
    }

    #[test]
    fn ip_allocator_errors_are_upstream() {
        let mut a = ServiceIpAllocator::new("10.43.0.0/16").unwrap();
        a.allocate(Some("10.43.0.5")).unwrap();
        let e = a.allocate(Some("10.43.0.5")).unwrap_err();
        assert_eq!(e.field, "spec.clusterIPs");
        assert_eq!(
            format!("{}: {}", e.field, e.message),
            "spec.clusterIPs: Invalid value: []string{\"10.43.0.5\"}: failed to allocate IP 10.43.0.5: provided IP is already allocated"
        );
        let e = a.allocate(Some("10.44.0.1")).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid value: []string{\"10.44.0.1\"}: failed to allocate IP 10.44.0.1: the provided IP (10.44.0.1) is not in the valid range. The range of valid IPs is 10.43.0.0/16"
        );
        assert!(a.allocate(Some("10.43.255.255")).is_err());
        assert!(ServiceIpAllocator::new("nonsense").is_err());
    }

    #[test]
    fn node_port_allocator_exhaustion_and_reuse() {
        let mut a = NodePortAllocator::new(30000, 30002);
        let mut got: Vec<i64> = (0..3).map(|_| a.allocate(None).unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![30000, 30001, 30002]);
        assert_eq!(
            a.allocate(None).unwrap_err().message,
            "failed to allocate a nodePort: range is full"
        );
        a.release(30001);
        assert_eq!(a.allocate(None).unwrap(), 30001);
        let e = a.allocate(Some(30001)).unwrap_err();
        assert_eq!(
            format!("{}: {}", e.field, e.message),
            "spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated"
        );
        let e = a.allocate(Some(80)).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-30002"
        );
        assert_eq!(
            NodePortAllocator::from_range("30000-32767")
                .unwrap()
                .range(),
            "30000-32767"
        );
    }

    #[test]
    fn allocate_service_fills_ips_and_node_ports() {
        let mut ips = ServiceIpAllocator::new("10.43.0.0/16").unwrap();
        let mut ports = NodePortAllocator::default();
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}, {"port": 80, "nodePort": 30080}]}});
        allocate_service(&mut ips, &mut ports, &mut svc).unwrap();
        let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip]));
        assert!(ips.is_used(&ip));
        assert_eq!(
            svc["spec"]["ports"][0]["nodePort"],
            svc["spec"]["ports"][1]["nodePort"]
        );
        assert_eq!(svc["spec"]["ports"][2]["nodePort"], 30080);
        assert_eq!(ports.used(), 2);
        // A second service asking for the same port fails and keeps nothing.
        let mut other =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        let errs = allocate_service(&mut ips, &mut ports, &mut other).unwrap_err();
        assert_eq!(errs[0].field, "spec.ports[0].nodePort");
        assert_eq!(ips.used(), 1);
        release_service(&mut ips, &mut ports, &svc);
        assert_eq!((ips.used(), ports.used()), (0, 0));
    }

    #[test]
    fn headless_and_external_name_get_nothing() {
        let mut ips = ServiceIpAllocator::new("10.43.0.0/16").unwrap();
        let mut ports = NodePortAllocator::default();
        let mut h = json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        allocate_service(&mut ips, &mut ports, &mut h).unwrap();
        assert_eq!(h["spec"]["clusterIP"], "None");
        let mut e = json!({"spec": {"type": "ExternalName", "externalName": "x.com"}});
        allocate_service(&mut ips, &mut ports, &mut e).unwrap();
        assert!(e["spec"].get("clusterIP").is_none());
        assert_eq!(ips.used(), 0);
    }

    #[test]
    fn update_keeps_and_releases() {
        let mut ips = ServiceIpAllocator::new("10.43.0.0/16").unwrap();
        let mut ports = NodePortAllocator::default();
        let mut old = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        allocate_service(&mut ips, &mut ports, &mut old).unwrap();
        let mut new = json!({"spec": {"type": "ClusterIP", "clusterIP": old["spec"]["clusterIP"], "ports": [{"port": 80}]}});
        update_service_allocations(&mut ips, &mut ports, &mut new, Some(&old)).unwrap();
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!((ips.used(), ports.used()), (1, 0));
        let mut ips2 = ServiceIpAllocator::new("10.43.0.0/16").unwrap();
        let mut ports2 = NodePortAllocator::default();
        mark_service(&mut ips2, &mut ports2, &old);
        assert_eq!((ips2.used(), ports2.used()), (1, 1));
    }
}
