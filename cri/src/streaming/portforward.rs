//! port-forward over SPDY (`portforward.k8s.io`, plain or tunnelled in a
//! WebSocket): the client opens an `error` and a `data` stream per forwarded
//! connection, paired by `requestID`; we connect to the port on localhost
//! inside the pod's network namespace and copy bytes both ways.
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::spdy::frame::RST_PROTOCOL_ERROR;
use super::spdy::{Connection, IncomingStream};

/// The SPDY sub-protocol of port-forward.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket sub-protocol that tunnels it.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// How long the client->pod direction may go on once the pod closed (as containerd).
const LINGER: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to forward to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The sandbox id (the "pod" of upstream's error messages).
    pub pod: String,
    /// The pod's network namespace; `None` for a host-network pod.
    pub netns: Option<PathBuf>,
}

#[derive(Default)]
struct Pair {
    data: Option<IncomingStream>,
    error: Option<IncomingStream>,
}

fn validate(stream: &IncomingStream) -> Result<(u16, bool), String> {
    let port = stream
        .header("port")
        .ok_or_else(|| "\"port\" header is required".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port < 1 {
        return Err(format!("port \"{port}\" must be > 0"));
    }
    match stream.header("streamtype") {
        Some("data") => Ok((port, true)),
        Some("error") => Ok((port, false)),
        Some(other) => Err(format!("invalid stream type {other:?}")),
        None => Err("\"streamType\" header is required".into()),
    }
}

/// Serves port-forward streams until the client goes away.
pub async fn serve(conn: Connection, mut incoming: mpsc::Receiver<IncomingStream>, target: Target) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    while let Some(stream) = incoming.recv().await {
        let (port, is_data) = match validate(&stream) {
            Ok(v) => v,
            Err(err) => {
                tracing::debug!(%err, "rejecting port-forward stream");
                let _ = stream.writer.reset(RST_PROTOCOL_ERROR).await;
                continue;
            }
        };
        if stream.reply().await.is_err() {
            break;
        }
        // Old clients send no requestID: pair by stream id (error = data + 2).
        let request_id = match stream.header("requestid") {
            Some(id) => id.to_string(),
            None if is_data => stream.id.to_string(),
            None => stream.id.saturating_sub(2).to_string(),
        };
        let pair = pairs.entry(request_id.clone()).or_default();
        if is_data {
            pair.data = Some(stream);
        } else {
            pair.error = Some(stream);
        }
        if pair.data.is_some() && pair.error.is_some() {
            let Some(Pair {
                data: Some(data),
                error: Some(error),
            }) = pairs.remove(&request_id)
            else {
                continue;
            };
            let target = target.clone();
            forwards.spawn(async move {
                tracing::debug!(request = %request_id, port, "forwarding");
                forward(data, error, port, &target).await;
            });
        }
    }
    forwards.abort_all();
    conn.close().await;
}

async fn forward(mut data: IncomingStream, error: IncomingStream, port: u16, target: &Target) {
    match connect(target.netns.clone(), port).await {
        Err(err) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid : failed to connect to localhost:{port} inside namespace {:?}: {err}",
                target.pod, target.pod
            );
            tracing::debug!(%msg, "port-forward failed");
            let _ = error.writer.write(msg.as_bytes()).await;
        }
        Ok(tcp) => {
            let (mut rd, mut wr) = tcp.into_split();
            let reader = &mut data.reader;
            let to_pod = async move {
                while let Some(chunk) = reader.read().await {
                    if wr.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                // The client finished sending: pass the half-close on.
                let _ = wr.shutdown().await;
            };
            let writer = data.writer.clone();
            let from_pod = async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if writer.write(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            tokio::pin!(to_pod);
            tokio::pin!(from_pod);
            tokio::select! {
                () = &mut from_pod => {
                    let _ = tokio::time::timeout(LINGER, &mut to_pod).await;
                }
                () = &mut to_pod => from_pod.await,
            }
        }
    }
    let _ = data.writer.finish().await;
    let _ = error.writer.finish().await;
}

/// Connects to localhost:`port` in `netns` (the host's when `None`). The
/// socket is made by a short-lived thread that entered the namespace, and
/// keeps that namespace when tokio drives it from any thread.
async fn connect(netns: Option<PathBuf>, port: u16) -> io::Result<TcpStream> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-connect".into())
        .spawn(move || {
            let _ = tx.send(connect_blocking(netns, port));
        })?;
    let std_stream = rx
        .await
        .map_err(|_| io::Error::other("connect thread died"))??;
    std_stream.set_nonblocking(true)?;
    TcpStream::from_std(std_stream)
}

fn connect_blocking(netns: Option<PathBuf>, port: u16) -> io::Result<StdTcpStream> {
    if let Some(path) = netns {
        let ns = std::fs::File::open(&path)?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match StdTcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            StdTcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
                .map_err(|e6| io::Error::new(e4.kind(), format!("IPv4: {e4} IPv6: {e6}")))
        }
    }
}
