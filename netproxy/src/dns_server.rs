//! Cluster DNS over UDP and TCP (RFC 1035 4.2.2 length-prefixed): answers the cluster zone from
//! the current [`DnsIndex`] and relays every other question unchanged to the host's resolvers
//! (read from /etc/resolv.conf, never written), over the transport the client used. UDP answers
//! larger than the client's limit (512 bytes, or its EDNS payload size) come back truncated (TC)
//! so that the client retries over TCP.
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::dns::{Answer, DnsIndex, QueryType, RecordData, TTL};

/// How long to wait for an upstream resolver before trying the next one.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle TCP client may keep its connection (CoreDNS's default read timeout).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The EDNS payload size we advertise (the DNS flag day 2020 recommendation).
const EDNS_PAYLOAD: u16 = 1232;
/// How long the server waits for the first full index before it answers anyway (CoreDNS's
/// kubernetes plugin waits 5 s for its informers).
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// The transport a query came over: it decides the size limit of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: answers are limited to 512 bytes or the client's EDNS payload size.
    Udp,
    /// TCP: answers up to 65535 bytes.
    Tcp,
}

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
    /// Accepting a TCP connection failed.
    #[error("failed to accept dns connection")]
    Accept(#[source] std::io::Error),
}

/// The index the server answers from; the proxier replaces it on a full
/// sync and changes the Services that changed on the others. Until the first
/// full sync it is not synced, and the server does not answer yet.
#[derive(Clone)]
pub struct DnsCache {
    index: Arc<RwLock<Arc<DnsIndex>>>,
    synced: Arc<watch::Sender<bool>>,
}

impl Default for DnsCache {
    fn default() -> Self {
        Self::new("")
    }
}

impl DnsCache {
    /// An empty, not yet synced index of zone `domain`.
    pub fn new(domain: &str) -> Self {
        Self {
            index: Arc::new(RwLock::new(Arc::new(DnsIndex::new(domain)))),
            synced: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Replaces the index with one built from a full snapshot: the cache is synced.
    pub fn update(&self, index: DnsIndex) {
        if let Ok(mut g) = self.index.write() {
            *g = Arc::new(index);
        }
        self.synced.send_replace(true);
    }

    /// Changes the index in place (a copy only if a query still holds it).
    pub fn modify(&self, change: impl FnOnce(&mut DnsIndex)) {
        if let Ok(mut g) = self.index.write() {
            change(Arc::make_mut(&mut g));
        }
    }

    /// The current index.
    pub fn get(&self) -> Arc<DnsIndex> {
        self.index.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Waits until the first full index is in, at most `timeout`; whether it is.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|synced| *synced))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Waits for `cache`'s first full index (CoreDNS's kubernetes plugin waits for its informers
/// the same way): an index from before the proxier's first sync has no Service, so every
/// cluster name would be NXDOMAIN. The socket is bound meanwhile, so queries wait in it
/// rather than being refused. `false` at shutdown.
async fn wait_synced(cache: &DnsCache, transport: Transport, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        synced = cache.wait_synced(SYNC_TIMEOUT) => {
            if !synced {
                warn!(?transport, timeout = ?SYNC_TIMEOUT, "serving cluster dns before the service caches synced");
            }
            true
        }
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

/// Serves cluster DNS on `addr`, UDP and TCP, until `shutdown`.
pub async fn serve_dns(
    addr: SocketAddr,
    cache: DnsCache,
    upstreams: Vec<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let bind_err = |source| DnsError::Bind { addr, source };
    let socket = UdpSocket::bind(addr).await.map_err(bind_err)?;
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    info!(%addr, "serving cluster dns over udp and tcp");
    let udp = serve_dns_on(socket, cache.clone(), upstreams.clone(), shutdown.clone());
    let tcp = serve_dns_tcp_on(listener, cache, upstreams, shutdown);
    tokio::try_join!(udp, tcp).map(|_| ())
}

/// Serves cluster DNS over TCP on an already bound listener.
pub async fn serve_dns_tcp_on(
    listener: TcpListener,
    cache: DnsCache,
    upstreams: Vec<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    if !wait_synced(&cache, Transport::Tcp, &shutdown).await {
        return Ok(());
    }
    let upstreams = Arc::new(upstreams);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                // Per-connection failures (e.g. the client reset) must not stop the server.
                Err(err) if is_transient(&err) => {
                    debug!(%err, "dns accept failed");
                    continue;
                }
                Err(err) => return Err(DnsError::Accept(err)),
            },
        };
        let (cache, upstreams, shutdown) = (cache.clone(), upstreams.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = serve_tcp_client(stream, &cache, &upstreams) => {
                    if let Err(err) = r {
                        debug!(%peer, %err, "dns tcp connection ended");
                    }
                }
            }
        });
    }
}

fn is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || err.raw_os_error() == Some(libc::EMFILE)
        || err.raw_os_error() == Some(libc::ENFILE)
}

/// Reads one length-prefixed message; `None` at a clean end of stream.
async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "dns message too long")
    })?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

/// Answers the queries of one TCP client, in order, until it closes or idles out.
async fn serve_tcp_client(
    mut stream: TcpStream,
    cache: &DnsCache,
    upstreams: &[SocketAddr],
) -> std::io::Result<()> {
    loop {
        let Ok(read) = tokio::time::timeout(TCP_IDLE_TIMEOUT, read_framed(&mut stream)).await
        else {
            return Ok(());
        };
        let Some(request) = read? else {
            return Ok(());
        };
        let reply = match respond(&cache.get(), &request, Transport::Tcp) {
            Some(reply) => reply,
            None => forward_tcp(&request, upstreams).await,
        };
        if !reply.is_empty() {
            write_framed(&mut stream, &reply).await?;
        }
    }
}

/// Relays a query to the first upstream that answers over TCP; SERVFAIL when none does.
async fn forward_tcp(request: &[u8], upstreams: &[SocketAddr]) -> Vec<u8> {
    for upstream in upstreams {
        let attempt = async {
            let mut conn = TcpStream::connect(upstream).await?;
            write_framed(&mut conn, request).await?;
            read_framed(&mut conn).await
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            Ok(Ok(Some(reply))) => return reply,
            _ => warn!(%upstream, "upstream dns did not answer over tcp"),
        }
    }
    servfail(request).unwrap_or_default()
}

fn servfail(request: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(request).ok()?;
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.response_code = ResponseCode::ServFail;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.add_queries(req.queries);
    resp.to_vec().ok()
}

/// Serves cluster DNS over UDP on an already bound socket.
pub async fn serve_dns_on(
    socket: UdpSocket,
    cache: DnsCache,
    upstreams: Vec<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    if !wait_synced(&cache, Transport::Udp, &shutdown).await {
        return Ok(());
    }
    let socket = Arc::new(socket);
    let upstreams = Arc::new(upstreams);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => r.map_err(DnsError::Recv)?,
        };
        let request = buf.get(..n).unwrap_or_default().to_vec();
        match respond(&cache.get(), &request, Transport::Udp) {
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
    if let Some(bytes) = servfail(&request) {
        let _ = socket.send_to(&bytes, peer).await;
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

/// The reply to a raw query that arrived over `transport`, or `None` when it must be forwarded
/// upstream.
pub fn respond(index: &DnsIndex, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
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
    if let Some(edns) = &req.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(EDNS_PAYLOAD);
        ours.set_dnssec_ok(edns.flags().dnssec_ok);
        resp.set_edns(ours);
    }
    let bytes = resp.to_vec().ok()?;
    let limit = match transport {
        Transport::Udp => usize::from(req.max_payload().min(EDNS_PAYLOAD)),
        Transport::Tcp => usize::from(u16::MAX),
    };
    if bytes.len() > limit {
        return resp.truncate().to_vec().ok();
    }
    Some(bytes)
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
            Transport::Udp,
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
            Transport::Udp,
        )
        .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        let reply = respond(
            &index(),
            &query("web.default.svc.cluster.local.", RecordType::AAAA),
            Transport::Udp,
        )
        .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
    }

    #[test]
    fn other_names_are_forwarded() {
        assert!(
            respond(
                &index(),
                &query("example.com.", RecordType::A),
                Transport::Udp
            )
            .is_none()
        );
    }

    fn big_headless_index() -> DnsIndex {
        let mut svc = service("default", "many", "None", &[("p", 80)]);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let ips: Vec<String> = (1..=60).map(|i| format!("10.42.1.{i}")).collect();
        let eps: Vec<(&str, &str, bool)> = ips.iter().map(|ip| (ip.as_str(), "n1", true)).collect();
        let sl = crate::model::tests::slice("default", "many", ("p", 80), &eps);
        DnsIndex::build("cluster.local", [&svc], [&sl])
    }

    #[test]
    fn large_udp_answers_are_truncated_and_complete_over_tcp() {
        let idx = big_headless_index();
        let q = query("many.default.svc.cluster.local.", RecordType::A);
        let udp = Message::from_vec(&respond(&idx, &q, Transport::Udp).unwrap()).unwrap();
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        assert_eq!(udp.metadata.id, 7);
        let tcp = Message::from_vec(&respond(&idx, &q, Transport::Tcp).unwrap()).unwrap();
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 60);
    }

    #[test]
    fn edns_clients_get_answers_up_to_their_payload_size() {
        let idx = big_headless_index();
        let mut m = Message::query();
        m.metadata.id = 9;
        m.add_query(Query::query(
            Name::from_ascii("many.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        m.set_edns(edns);
        let reply = respond(&idx, &m.to_vec().unwrap(), Transport::Udp).unwrap();
        assert!(reply.len() > 512);
        let r = Message::from_vec(&reply).unwrap();
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
        assert_eq!(r.edns.as_ref().map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
    }

    async fn tcp_ask(addr: SocketAddr, name: &str) -> Message {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        write_framed(&mut conn, &query(name, RecordType::A))
            .await
            .unwrap();
        let reply = read_framed(&mut conn).await.unwrap().unwrap();
        Message::from_vec(&reply).unwrap()
    }

    #[tokio::test]
    async fn serves_over_tcp_and_relays_other_names_upstream_over_tcp() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = upstream.accept().await {
                let req = read_framed(&mut conn).await.unwrap().unwrap();
                let req = Message::from_vec(&req).unwrap();
                let mut resp = Message::response(req.metadata.id, OpCode::Query);
                resp.add_answer(Record::from_rdata(
                    req.queries[0].name().clone(),
                    60,
                    RData::A(A("192.0.2.7".parse().unwrap())),
                ));
                write_framed(&mut conn, &resp.to_vec().unwrap())
                    .await
                    .unwrap();
            }
        });
        let cache = DnsCache::default();
        cache.update(big_headless_index());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let _stop = scopeguard::guard(shutdown.clone(), |s| s.cancel());
        let task = tokio::spawn(serve_dns_tcp_on(
            listener,
            cache,
            vec![upstream_addr],
            shutdown.clone(),
        ));
        let m = tcp_ask(addr, "many.default.svc.cluster.local.").await;
        assert_eq!(m.answers.len(), 60);
        let m = tcp_ask(addr, "example.org.").await;
        assert_eq!(m.answers[0].data, RData::A(A("192.0.2.7".parse().unwrap())));
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    /// A resolver on loopback that says NXDOMAIN to everything, as the host's does to
    /// cluster names.
    async fn nxdomain_upstream() -> SocketAddr {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = upstream.recv_from(&mut buf).await {
                let req = Message::from_vec(&buf[..n]).unwrap();
                let mut resp = Message::response(req.metadata.id, OpCode::Query);
                resp.metadata.response_code = ResponseCode::NXDomain;
                let _ = upstream.send_to(&resp.to_vec().unwrap(), peer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn answers_only_once_the_first_index_is_in() {
        let cache = DnsCache::default();
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let _stop = scopeguard::guard(shutdown.clone(), |s| s.cancel());
        let upstreams = vec![nxdomain_upstream().await];
        tokio::spawn(serve_dns_on(server, cache.clone(), upstreams, shutdown));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let q = query("web.default.svc.cluster.local.", RecordType::A);
        client.send_to(&q, server_addr).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let early =
            tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await;
        assert!(early.is_err(), "answered before the first sync");

        cache.update(index());
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            m.answers[0].data,
            RData::A(A("10.43.0.10".parse().unwrap()))
        );
    }

    #[tokio::test]
    async fn an_unsynced_cache_is_served_after_the_timeout() {
        let cache = DnsCache::new("cluster.local");
        assert!(!cache.wait_synced(Duration::from_millis(10)).await);
        cache.update(index());
        assert!(cache.wait_synced(Duration::from_millis(10)).await);
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
