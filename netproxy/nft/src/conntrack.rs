//! ctnetlink (NETLINK_NETFILTER) in-process: UDP conntrack entries listed and deleted by their
//! original tuple, as vishvananda/netlink's `ConntrackDeleteFilters` does for kube-proxy and the
//! CNI portmap plugin. UDP has no connection to close, so after a rule change the flows the
//! old rules routed are deleted: r8s-proxy for Services, r8s-cri for hostPorts.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use netlink_sys::Socket;
use nix::errno::Errno;
use tracing::debug;

use crate::wire::{
    AF_INET, NFGENMSG_LEN, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    Writer, align4, arr4, error_code, messages, open, u16_ne,
};

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
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowFilter {
    /// Original destination address (a Service IP, a hostPort's hostIP); any when unset
    /// (NodePorts, hostPorts on every local address).
    pub orig_dst: Option<Ipv4Addr>,
    /// Original destination port (Service port, NodePort, hostPort).
    pub orig_dst_port: u16,
    /// Reply source address (the endpoint the flow was DNATed to); any when unset.
    pub reply_src: Option<Ipv4Addr>,
    /// Reply source addresses whose flows are kept (a Service's current endpoints).
    pub keep_reply_srcs: BTreeSet<Ipv4Addr>,
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
            && !self.keep_reply_srcs.contains(&flow.reply_src)
    }
}

/// Deletes conntrack entries (the real one, or a fake in tests).
pub trait Conntrack: Send + Sync {
    /// Deletes every UDP entry that one of `filters` matches; returns how many.
    fn delete(&self, filters: &BTreeSet<FlowFilter>) -> Result<usize, ConntrackError>;
}

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_DUMP: u16 = 0x300;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;

/// ctnetlink over a netlink socket opened in one network namespace.
pub struct NetlinkConntrack {
    socket: Socket,
    /// Held for a whole request and its answers, so that concurrent users never read each
    /// other's messages.
    exchange: Mutex<()>,
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
        Ok(Self {
            socket,
            exchange: Mutex::new(()),
        })
    }

    fn request(&self, msg_type: u16, flags: u16, payload: &[u8]) -> Result<(), ConntrackError> {
        let mut w = Writer::default();
        let start = w.start_msg(
            (NFNL_SUBSYS_CTNETLINK << 8) | msg_type,
            flags,
            0,
            AF_INET,
            0,
        );
        w.buf.extend_from_slice(payload);
        w.end_msg(start);
        self.socket.send(&w.buf, 0).map_err(ConntrackError::Io)?;
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
            for (ty, _, body) in messages(&buf) {
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        return match error_code(body) {
                            0 => Ok(()),
                            errno => Err(ConntrackError::Kernel { op, errno }),
                        };
                    }
                    _ => each(body.get(NFGENMSG_LEN..).unwrap_or_default()),
                }
            }
        }
    }
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

impl NetlinkConntrack {
    /// Every UDP entry with the raw original tuple to delete it by; the caller holds
    /// `exchange`.
    fn dump(&self) -> Result<Vec<(Flow, Vec<u8>)>, ConntrackError> {
        self.request(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, &[])?;
        let mut out = Vec::new();
        self.read_until_done("dump", |payload| out.extend(parse_entry(payload)))?;
        Ok(out)
    }

    /// Every UDP entry of the namespace, as conntrack sees it now.
    pub fn flows(&self) -> Result<Vec<Flow>, ConntrackError> {
        let _exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.dump()?.into_iter().map(|(flow, _)| flow).collect())
    }
}

impl Conntrack for NetlinkConntrack {
    fn delete(&self, filters: &BTreeSet<FlowFilter>) -> Result<usize, ConntrackError> {
        if filters.is_empty() {
            return Ok(0);
        }
        let _exchange = self.exchange.lock().unwrap_or_else(|p| p.into_inner());
        let doomed = self
            .dump()?
            .into_iter()
            .filter(|(flow, _)| filters.iter().any(|f| f.matches(flow)));
        let mut deleted = 0;
        for (_, orig) in doomed {
            self.request(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, &orig)?;
            match self.read_until_done("delete", |_| {}) {
                Ok(()) => deleted += 1,
                // Gone meanwhile (timed out or deleted by someone else).
                Err(ConntrackError::Kernel { errno, .. }) if errno == Errno::ENOENT as i32 => {}
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
    fn a_filter_matches_any_value_of_its_unset_fields() {
        let flow = Flow {
            orig_dst: Ipv4Addr::new(10, 0, 0, 1),
            orig_dst_port: 5353,
            reply_src: Ipv4Addr::new(10, 42, 0, 5),
        };
        let port_only = FlowFilter {
            orig_dst: None,
            orig_dst_port: 5353,
            ..FlowFilter::default()
        };
        assert!(port_only.matches(&flow));
        let other_address = FlowFilter {
            orig_dst: Some(Ipv4Addr::new(10, 0, 0, 2)),
            ..port_only.clone()
        };
        assert!(!other_address.matches(&flow));
        let other_port = FlowFilter {
            orig_dst_port: 53,
            ..port_only.clone()
        };
        assert!(!other_port.matches(&flow));
        let other_endpoint = FlowFilter {
            reply_src: Some(Ipv4Addr::new(10, 42, 0, 6)),
            ..port_only.clone()
        };
        assert!(!other_endpoint.matches(&flow));
        let kept_endpoint = FlowFilter {
            keep_reply_srcs: [Ipv4Addr::new(10, 42, 0, 5)].into(),
            ..port_only
        };
        assert!(!kept_endpoint.matches(&flow));
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
