//! Cluster DNS over UDP: answers the cluster zone from the current [`DnsIndex`] and relays every
//! other question unchanged to the host's resolvers (read from /etc/resolv.conf, never written).
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::dns::{Answer, DnsIndex, QueryType, RecordData, TTL};

/// How long to wait for an upstream resolver before trying the next one.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Binding the socket failed.
    #[error("failed to bind dns socket {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Receiving failed.
    #[error("failed to receive dns query")]
    Recv(#[source] std::io::Error),
}

/// The index the server answers from; the proxier replaces it on every sync.
#[derive(Clone, Default)]
pub struct DnsCache(Arc<RwLock<Arc<DnsIndex>>>);

impl DnsCache {
    /// Replaces the index.
    pub fn update(&self, index: DnsIndex) {
        if let Ok(mut g) = self.0.write() {
            *g = Arc::new(index);
        }
    }

    /// The current index.
    pub fn get(&self) -> Arc<DnsIndex> {
        self.0.read().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Nameservers of a resolv.conf text, on port 53.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some("nameserver")).then(|| parts.next())?
        })
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Serves cluster DNS on `addr` (UDP) until `shutdown`.
pub async fn serve_dns(
    addr: SocketAddr,
    cache: DnsCache,
    upstreams: Vec<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let socket = UdpSocket::bind(addr)
        .await
        .map_err(|source| DnsError::Bind { addr, source })?;
    info!(%addr, "serving cluster dns");
    serve_dns_on(socket, cache, upstreams, shutdown).await
}

/// Serves cluster DNS on an already bound socket.
pub async fn serve_dns_on(
    socket: UdpSocket,
    cache: DnsCache,
    upstreams: Vec<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let socket = Arc::new(socket);
    let upstreams = Arc::new(upstreams);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => r.map_err(DnsError::Recv)?,
        };
        let request = buf.get(..n).unwrap_or_default().to_vec();
        match respond(&cache.get(), &request) {
            Some(reply) => {
                if let Err(err) = socket.send_to(&reply, peer).await {
                    debug!(%peer, %err, "failed to send dns reply");
                }
            }
            None => {
                tokio::spawn(forward(socket.clone(), request, peer, upstreams.clone()));
            }
        }
    }
}

async fn forward(
    socket: Arc<UdpSocket>,
    request: Vec<u8>,
    peer: SocketAddr,
    upstreams: Arc<Vec<SocketAddr>>,
) {
    for upstream in upstreams.iter() {
        let local: SocketAddr = if upstream.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let Ok(sock) = UdpSocket::bind(local).await else {
            continue;
        };
        if sock.send_to(&request, upstream).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        match tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                let _ = socket.send_to(buf.get(..n).unwrap_or_default(), peer).await;
                return;
            }
            _ => warn!(%upstream, "upstream dns did not answer"),
        }
    }
    // No upstream answered: tell the client instead of letting it time out.
    if let Ok(req) = Message::from_vec(&request) {
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.response_code = ResponseCode::ServFail;
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.add_queries(req.queries);
        if let Ok(bytes) = resp.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

fn qtype(t: RecordType) -> QueryType {
    match t {
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        RecordType::SRV => QueryType::Srv,
        RecordType::PTR => QueryType::Ptr,
        RecordType::CNAME => QueryType::Cname,
        _ => QueryType::Other,
    }
}

fn rdata(d: &RecordData) -> Option<RData> {
    Some(match d {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(
            *priority,
            *weight,
            *port,
            Name::from_ascii(target).ok()?,
        )),
        RecordData::Ptr(n) => RData::PTR(PTR(Name::from_ascii(n).ok()?)),
        RecordData::Cname(n) => RData::CNAME(CNAME(Name::from_ascii(n).ok()?)),
    })
}

fn soa(index: &DnsIndex) -> Option<Record> {
    let zone = Name::from_ascii(format!("{}.", index.zone())).ok()?;
    let mname = Name::from_ascii(format!("ns.dns.{}.", index.zone())).ok()?;
    let rname = Name::from_ascii(format!("hostmaster.{}.", index.zone())).ok()?;
    let data = SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL);
    Some(Record::from_rdata(zone, TTL, RData::SOA(data)))
}

/// The reply to a raw query, or `None` when it must be forwarded upstream.
pub fn respond(index: &DnsIndex, request: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(request).ok()?;
    if req.metadata.message_type != MessageType::Query || req.metadata.op_code != OpCode::Query {
        return None;
    }
    let [query] = req.queries.as_slice() else {
        return None;
    };
    let answer = index.answer(&query.name().to_ascii(), qtype(query.query_type()));
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(Query::query(query.name().clone(), query.query_type()));
    match answer {
        Answer::NotOurs => return None,
        Answer::Records(records) => {
            for r in &records {
                if let Some(data) = rdata(r) {
                    resp.add_answer(Record::from_rdata(query.name().clone(), TTL, data));
                }
            }
        }
        Answer::NoData => {
            resp.add_authorities(soa(index));
        }
        Answer::NxDomain => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.add_authorities(soa(index));
        }
    }
    resp.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::service;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn index() -> DnsIndex {
        let web = service("default", "web", "10.43.0.10", &[("http", 80)]);
        DnsIndex::build("cluster.local", [&web], [])
    }

    #[test]
    fn answers_a_for_a_service_authoritatively() {
        let reply = respond(
            &index(),
            &query("web.default.svc.cluster.local.", RecordType::A),
        )
        .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            m.answers[0].data,
            RData::A(A("10.43.0.10".parse().unwrap()))
        );
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa() {
        let reply = respond(
            &index(),
            &query("nope.default.svc.cluster.local.", RecordType::A),
        )
        .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        let reply = respond(
            &index(),
            &query("web.default.svc.cluster.local.", RecordType::AAAA),
        )
        .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
    }

    #[test]
    fn other_names_are_forwarded() {
        assert!(respond(&index(), &query("example.com.", RecordType::A)).is_none());
    }

    #[test]
    fn resolv_conf_nameservers_are_read() {
        let text = "search x\nnameserver 10.0.0.2\n# c\nnameserver ::1\noptions ndots:5\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec!["10.0.0.2:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn serves_over_udp_and_relays_other_names_upstream() {
        // A fake upstream on loopback that answers every query with NOERROR and id echoed.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = upstream.recv_from(&mut buf).await {
                let req = Message::from_vec(&buf[..n]).unwrap();
                let mut resp = Message::response(req.metadata.id, OpCode::Query);
                resp.add_answer(Record::from_rdata(
                    req.queries[0].name().clone(),
                    60,
                    RData::A(A("192.0.2.1".parse().unwrap())),
                ));
                upstream
                    .send_to(&resp.to_vec().unwrap(), peer)
                    .await
                    .unwrap();
            }
        });
        let cache = DnsCache::default();
        cache.update(index());
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_dns_on(
            server,
            cache,
            vec![upstream_addr],
            shutdown.clone(),
        ));
        let _stop = scopeguard::guard((), |_| shutdown.cancel());

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 4096];
        for (name, want) in [
            ("web.default.svc.cluster.local.", "10.43.0.10"),
            ("example.com.", "192.0.2.1"),
        ] {
            client
                .send_to(&query(name, RecordType::A), server_addr)
                .await
                .unwrap();
            let (n, _) = client.recv_from(&mut buf).await.unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(
                m.answers[0].data,
                RData::A(A(want.parse().unwrap())),
                "{name}"
            );
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
