//! Stale UDP conntrack entries after a sync, deleted over ctnetlink (NETLINK_NETFILTER): UDP has
//! no connection to close, so without this a client keeps talking to a removed endpoint, or to
//! the reject of a Service that has endpoints now (kube-proxy's `conntrack.CleanStaleEntries`).
//!
//! Entries are listed with `IPCTNL_MSG_CT_GET` (dump) and the matching ones deleted one by one
//! with `IPCTNL_MSG_CT_DELETE` by their original tuple, as vishvananda/netlink's
//! `ConntrackDeleteFilters` (which kube-proxy uses) does.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use tracing::debug;

use crate::model::{Protocol, ServiceKey, ServicePort};

/// Errors talking ctnetlink.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The netlink socket could not be opened in the network namespace.
    #[error("failed to open ctnetlink socket in {netns}")]
    Open {
        /// The namespace path, or `current`.
        netns: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error("ctnetlink i/o failed")]
    Io(#[source] std::io::Error),
    /// The kernel answered with an error.
    #[error("ctnetlink {op} failed with errno {errno}")]
    Kernel {
        /// The request.
        op: &'static str,
        /// The (positive) errno.
        errno: i32,
    },
}

/// UDP flows to forget: every field that is set must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowFilter {
    /// Original destination address (the Service IP); any when unset (NodePorts).
    pub orig_dst: Option<Ipv4Addr>,
    /// Original destination port (Service port or NodePort).
    pub orig_dst_port: u16,
    /// Reply source address (the endpoint the flow was DNATed to); any when unset.
    pub reply_src: Option<Ipv4Addr>,
}

/// A flow as conntrack sees it (UDP only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Original destination address.
    pub orig_dst: Ipv4Addr,
    /// Original destination port.
    pub orig_dst_port: u16,
    /// Reply source address.
    pub reply_src: Ipv4Addr,
}

impl FlowFilter {
    /// True when `flow` is one this filter deletes.
    pub fn matches(&self, flow: &Flow) -> bool {
        self.orig_dst.is_none_or(|ip| ip == flow.orig_dst)
            && self.orig_dst_port == flow.orig_dst_port
            && self.reply_src.is_none_or(|ip| ip == flow.reply_src)
    }
}

/// The addresses and ports a Service port is reached on: (address or any, port).
fn frontends(sp: &ServicePort) -> Vec<(Option<Ipv4Addr>, u16)> {
    let mut f = vec![(Some(sp.cluster_ip), sp.port)];
    f.extend(sp.external_ips.iter().map(|ip| (Some(*ip), sp.port)));
    f.extend(sp.node_port.map(|p| (None, p)));
    f
}

/// Which UDP flows the change from `old` to `new` makes stale:
/// - a Service port that had no endpoints and has some now: every flow to it (they met the
///   reject or drop, and conntrack would keep them there);
/// - an endpoint that is gone: every flow to the Service that was DNATed to it.
pub fn stale_flows(
    old: &BTreeMap<ServiceKey, Vec<ServicePort>>,
    new: &BTreeMap<ServiceKey, Vec<ServicePort>>,
) -> BTreeSet<FlowFilter> {
    let udp = |m: &'_ BTreeMap<ServiceKey, Vec<ServicePort>>| -> BTreeMap<String, ServicePort> {
        m.values()
            .flatten()
            .filter(|sp| sp.protocol == Protocol::Udp)
            .map(|sp| (sp.id(), sp.clone()))
            .collect()
    };
    let (old, new) = (udp(old), udp(new));
    let mut out = BTreeSet::new();
    for (id, after) in &new {
        let had = old.get(id).is_some_and(|b| !b.endpoints.is_empty());
        if !had && !after.endpoints.is_empty() {
            for (orig_dst, orig_dst_port) in frontends(after) {
                out.insert(FlowFilter {
                    orig_dst,
                    orig_dst_port,
                    reply_src: None,
                });
            }
        }
    }
    for (id, before) in &old {
        let kept: BTreeSet<Ipv4Addr> = new
            .get(id)
            .map(|a| a.endpoints.iter().map(|e| e.ip).collect())
            .unwrap_or_default();
        for ep in before.endpoints.iter().filter(|e| !kept.contains(&e.ip)) {
            for (orig_dst, orig_dst_port) in frontends(before) {
                out.insert(FlowFilter {
                    orig_dst,
                    orig_dst_port,
                    reply_src: Some(ep.ip),
                });
            }
        }
    }
    out
}

/// Deletes conntrack entries (the real one, or a fake in tests).
pub trait Conntrack: Send + Sync {
    /// Deletes every UDP entry that one of `filters` matches; returns how many.
    fn delete(&self, filters: &BTreeSet<FlowFilter>) -> Result<usize, ConntrackError>;
}

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
const IPPROTO_UDP: u8 = 17;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// ctnetlink over a netlink socket opened in one network namespace.
pub struct NetlinkConntrack {
    socket: Socket,
}

impl NetlinkConntrack {
    /// Opens the socket in the caller's network namespace, or in `netns` (e.g.
    /// `/run/netns/NAME`) from a short-lived thread: a socket stays in the namespace it was
    /// created in.
    pub fn new(netns: Option<&Path>) -> Result<Self, ConntrackError> {
        let name = netns.map_or_else(|| "current".to_string(), |p| p.display().to_string());
        let open_err = |source| ConntrackError::Open {
            netns: name.clone(),
            source,
        };
        let socket = match netns {
            None => open(),
            Some(path) => {
                let path: PathBuf = path.to_path_buf();
                std::thread::scope(|s| {
                    s.spawn(move || {
                        let file = std::fs::File::open(&path)?;
                        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(std::io::Error::from)?;
                        open()
                    })
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
                })
            }
        }
        .map_err(open_err)?;
        Ok(Self { socket })
    }

    fn request(&self, msg_type: u16, flags: u16, payload: &[u8]) -> Result<(), ConntrackError> {
        let len = NLMSG_HDRLEN + NFGENMSG_LEN + payload.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg_type).to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
        // nfgenmsg: AF_INET, NFNETLINK_V0, res_id 0.
        buf.extend_from_slice(&[2, 0, 0, 0]);
        buf.extend_from_slice(payload);
        self.socket.send(&buf, 0).map_err(ConntrackError::Io)?;
        Ok(())
    }

    /// Reads messages until DONE or an ACK/error, handing each ctnetlink payload to `each`.
    fn read_until_done(
        &self,
        op: &'static str,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), ConntrackError> {
        loop {
            let (buf, _) = self.socket.recv_from_full().map_err(ConntrackError::Io)?;
            let mut rest = buf.as_slice();
            while rest.len() >= NLMSG_HDRLEN {
                let len = usize::try_from(u32_ne(rest)).unwrap_or(usize::MAX);
                if len < NLMSG_HDRLEN || len > rest.len() {
                    break;
                }
                let ty = u16_ne(&rest[4..]);
                let body = &rest[NLMSG_HDRLEN..len];
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = body.get(..4).map_or(0, |b| -i32::from_ne_bytes(arr4(b)));
                        return match errno {
                            0 => Ok(()),
                            errno => Err(ConntrackError::Kernel { op, errno }),
                        };
                    }
                    _ => each(body.get(NFGENMSG_LEN..).unwrap_or_default()),
                }
                rest = rest.get(align4(len)..).unwrap_or_default();
            }
        }
    }
}

fn open() -> std::io::Result<Socket> {
    let mut s = Socket::new(NETLINK_NETFILTER)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    Ok(s)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn arr4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    for (d, s) in a.iter_mut().zip(b) {
        *d = *s;
    }
    a
}

fn u32_ne(b: &[u8]) -> u32 {
    u32::from_ne_bytes(arr4(b))
}

fn u16_ne(b: &[u8]) -> u16 {
    u16::from_ne_bytes([
        b.first().copied().unwrap_or(0),
        b.get(1).copied().unwrap_or(0),
    ])
}

/// Netlink attributes of a buffer: (type without flags, whole attribute, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16_ne(b));
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (u16_ne(&b[2..]) & NLA_TYPE_MASK, &b[..len], &b[4..len]);
        b = b.get(align4(len)..).unwrap_or_default();
        Some(item)
    })
}

fn attr(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, _, _)| *t == ty).map(|(_, _, p)| p)
}

/// (src, dst, proto, src port, dst port) of a CTA_TUPLE_* payload.
fn tuple(b: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, u16, u16)> {
    let ip = attr(b, CTA_TUPLE_IP)?;
    let proto = attr(b, CTA_TUPLE_PROTO)?;
    let addr = |t| attr(ip, t).map(|v| Ipv4Addr::from(arr4(v)));
    let port = |t| attr(proto, t).and_then(|v| Some(u16::from_be_bytes([*v.first()?, *v.get(1)?])));
    Some((
        addr(CTA_IP_V4_SRC)?,
        addr(CTA_IP_V4_DST)?,
        *attr(proto, CTA_PROTO_NUM)?.first()?,
        port(CTA_PROTO_SRC_PORT).unwrap_or(0),
        port(CTA_PROTO_DST_PORT).unwrap_or(0),
    ))
}

/// The UDP flow of one ctnetlink entry and its raw CTA_TUPLE_ORIG attribute (to delete it by).
fn parse_entry(payload: &[u8]) -> Option<(Flow, Vec<u8>)> {
    let (orig_raw, orig) = attrs(payload)
        .find(|(t, _, _)| *t == CTA_TUPLE_ORIG)
        .map(|(_, raw, p)| (raw, p))?;
    let (_, dst, proto, _, dport) = tuple(orig)?;
    if proto != IPPROTO_UDP {
        return None;
    }
    let (rsrc, ..) = tuple(attr(payload, CTA_TUPLE_REPLY)?)?;
    Some((
        Flow {
            orig_dst: dst,
            orig_dst_port: dport,
            reply_src: rsrc,
        },
        orig_raw.to_vec(),
    ))
}

impl Conntrack for NetlinkConntrack {
    fn delete(&self, filters: &BTreeSet<FlowFilter>) -> Result<usize, ConntrackError> {
        if filters.is_empty() {
            return Ok(0);
        }
        self.request(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, &[])?;
        let mut doomed = Vec::new();
        self.read_until_done("dump", |payload| {
            if let Some((flow, orig)) = parse_entry(payload)
                && filters.iter().any(|f| f.matches(&flow))
            {
                doomed.push(orig);
            }
        })?;
        let mut deleted = 0;
        for orig in doomed {
            self.request(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, &orig)?;
            match self.read_until_done("delete", |_| {}) {
                Ok(()) => deleted += 1,
                // Gone meanwhile (timed out or deleted by someone else).
                Err(ConntrackError::Kernel { errno, .. }) if errno == libc::ENOENT => {}
                Err(e) => return Err(e),
            }
        }
        debug!(
            filters = filters.len(),
            deleted, "deleted stale udp conntrack entries"
        );
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::service_ports;
    use crate::model::tests::{service, slice};

    fn udp_model(ips: &[&str]) -> BTreeMap<ServiceKey, Vec<ServicePort>> {
        let mut svc = service("default", "dns", "10.43.0.53", &[("dns", 53)]);
        for p in svc.spec.as_mut().unwrap().ports.iter_mut().flatten() {
            p.protocol = Some("UDP".into());
        }
        let eps: Vec<(&str, &str, bool)> = ips.iter().map(|ip| (*ip, "n1", true)).collect();
        let mut sl = slice("default", "dns", ("dns", 5353), &eps);
        for p in sl.ports.iter_mut().flatten() {
            p.protocol = Some("UDP".into());
        }
        service_ports([&svc], [&sl])
    }

    #[test]
    fn removed_udp_endpoint_makes_its_flows_stale() {
        let old = udp_model(&["10.42.0.5", "10.42.0.6"]);
        let new = udp_model(&["10.42.0.6"]);
        let stale = stale_flows(&old, &new);
        assert_eq!(
            stale.into_iter().collect::<Vec<_>>(),
            vec![FlowFilter {
                orig_dst: Some("10.43.0.53".parse().unwrap()),
                orig_dst_port: 53,
                reply_src: Some("10.42.0.5".parse().unwrap()),
            }]
        );
    }

    #[test]
    fn first_endpoint_makes_every_flow_to_the_service_stale() {
        let stale = stale_flows(&udp_model(&[]), &udp_model(&["10.42.0.6"]));
        assert_eq!(
            stale.into_iter().collect::<Vec<_>>(),
            vec![FlowFilter {
                orig_dst: Some("10.43.0.53".parse().unwrap()),
                orig_dst_port: 53,
                reply_src: None,
            }]
        );
    }

    #[test]
    fn unchanged_and_tcp_services_make_nothing_stale() {
        let m = udp_model(&["10.42.0.6"]);
        assert!(stale_flows(&m, &m).is_empty());
        let tcp = service_ports(
            [&service("default", "web", "10.43.0.9", &[("", 80)])],
            [&slice(
                "default",
                "web",
                ("", 80),
                &[("10.42.0.7", "n1", true)],
            )],
        );
        assert!(stale_flows(&tcp, &BTreeMap::new()).is_empty());
    }

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&u16::try_from(4 + payload.len()).unwrap().to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn tuple_attr(ty: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let ip = [nla(CTA_IP_V4_SRC, &src), nla(CTA_IP_V4_DST, &dst)].concat();
        let proto = [
            nla(CTA_PROTO_NUM, &[IPPROTO_UDP]),
            nla(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
            nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
        ]
        .concat();
        nla(
            ty | 0x8000,
            &[
                nla(CTA_TUPLE_IP | 0x8000, &ip),
                nla(CTA_TUPLE_PROTO | 0x8000, &proto),
            ]
            .concat(),
        )
    }

    #[test]
    fn parses_the_flow_and_keeps_the_raw_original_tuple() {
        let orig = tuple_attr(CTA_TUPLE_ORIG, [10, 42, 0, 9], [10, 43, 0, 53], 40000, 53);
        let reply = tuple_attr(CTA_TUPLE_REPLY, [10, 42, 0, 5], [10, 42, 0, 9], 5353, 40000);
        let (flow, raw) = parse_entry(&[orig.clone(), reply].concat()).unwrap();
        assert_eq!(
            flow,
            Flow {
                orig_dst: "10.43.0.53".parse().unwrap(),
                orig_dst_port: 53,
                reply_src: "10.42.0.5".parse().unwrap(),
            }
        );
        assert_eq!(raw, orig);
    }
}
