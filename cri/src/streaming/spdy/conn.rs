//! A SPDY/3.1 connection over any byte transport (an upgraded HTTP connection
//! or binary WebSocket messages): a reader task that routes frames to streams,
//! and a writer task that owns the compression context and the wire order.
//!
//! Flow control: we acknowledge what the application consumed with
//! WINDOW_UPDATE, but do not hold our own sends to the peer's window, because
//! the only peers (Go's moby/spdystream in kubectl and kubelet) never send
//! WINDOW_UPDATE and would stall after 64 KiB.
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use bytes::{Bytes, BytesMut};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::frame::{Codec, Frame, FrameError, RST_PROTOCOL_ERROR};
use super::header::Headers;

/// Largest DATA payload we send in one frame.
const MAX_DATA: usize = 32 * 1024;
/// Consumed bytes after which we send WINDOW_UPDATE.
const WINDOW_ACK: u32 = 32 * 1024;

/// Errors of a SPDY connection.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy connection closed")]
    Closed,
    #[error("stream {0} was reset by the peer")]
    Reset(u32),
    #[error("spdy framing failed")]
    Frame(#[source] FrameError),
}

/// Which end of the connection we are (decides stream id parity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

enum Cmd {
    Frame(Frame),
    Close,
}

struct Slot {
    data: Option<mpsc::UnboundedSender<Bytes>>,
    reply: Option<oneshot::Sender<Result<Headers, SpdyError>>>,
}

#[derive(Default)]
struct Shared {
    streams: StdMutex<HashMap<u32, Slot>>,
    last_peer_stream: AtomicU32,
}

impl Shared {
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Slot>> {
        // No code path panics with the lock held; recover rather than poison.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to a running connection; cheap to clone.
#[derive(Clone)]
pub struct Connection {
    cmds: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    next_id: Arc<AtomicU32>,
    reader: Arc<StdMutex<Option<JoinHandle<()>>>>,
    writer: Arc<StdMutex<Option<JoinHandle<()>>>>,
}

/// A stream the peer opened; reply (or reset) it, then read and write.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

impl IncomingStream {
    /// Accepts the stream with an empty SYN_REPLY, as spdystream servers do.
    pub async fn reply(&self) -> Result<(), SpdyError> {
        self.writer
            .send(Frame::SynReply {
                stream_id: self.id,
                fin: false,
                headers: Vec::new(),
            })
            .await
    }

    /// Looks a header up by name.
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header::get(&self.headers, name)
    }
}

/// The receiving half of a stream.
pub struct StreamReader {
    id: u32,
    rx: mpsc::UnboundedReceiver<Bytes>,
    cmds: mpsc::Sender<Cmd>,
    unacked: u32,
}

impl StreamReader {
    /// Next chunk of data; `None` once the peer finished or reset the stream.
    pub async fn read(&mut self) -> Option<Bytes> {
        let data = self.rx.recv().await?;
        self.unacked = self
            .unacked
            .saturating_add(u32::try_from(data.len()).unwrap_or(u32::MAX));
        if self.unacked >= WINDOW_ACK {
            let delta = std::mem::take(&mut self.unacked);
            for stream_id in [self.id, 0] {
                let _ = self
                    .cmds
                    .send(Cmd::Frame(Frame::WindowUpdate { stream_id, delta }))
                    .await;
            }
        }
        Some(data)
    }
}

/// The sending half of a stream; clones share the stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    cmds: mpsc::Sender<Cmd>,
}

impl StreamWriter {
    async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.cmds
            .send(Cmd::Frame(frame))
            .await
            .map_err(|_| SpdyError::Closed)
    }

    /// Sends `data` in DATA frames.
    pub async fn write(&self, data: &[u8]) -> Result<(), SpdyError> {
        for chunk in data.chunks(MAX_DATA) {
            self.send(Frame::Data {
                stream_id: self.id,
                fin: false,
                data: Bytes::copy_from_slice(chunk),
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream (an empty DATA frame with FIN).
    pub async fn finish(&self) -> Result<(), SpdyError> {
        self.send(Frame::Data {
            stream_id: self.id,
            fin: true,
            data: Bytes::new(),
        })
        .await
    }

    /// Aborts the stream with RST_STREAM.
    pub async fn reset(&self, status: u32) -> Result<(), SpdyError> {
        self.send(Frame::RstStream {
            stream_id: self.id,
            status,
        })
        .await
    }
}

/// A stream we opened (client side) once the peer replied.
pub struct OpenedStream {
    pub id: u32,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

impl Connection {
    /// Starts the reader and writer tasks over `input`/`output`; returns the
    /// handle and the streams the peer opens.
    pub fn start<I, O>(input: I, output: O, role: Role) -> (Self, mpsc::Receiver<IncomingStream>)
    where
        I: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
        O: Sink<Bytes, Error = io::Error> + Send + Unpin + 'static,
    {
        let (cmds, cmd_rx) = mpsc::channel(256);
        let (incoming_tx, incoming) = mpsc::channel(64);
        let shared = Arc::new(Shared::default());
        let writer = tokio::spawn(write_loop(output, cmd_rx));
        let reader = tokio::spawn(read_loop(input, cmds.clone(), shared.clone(), incoming_tx));
        let first = match role {
            Role::Client => 1,
            Role::Server => 2,
        };
        (
            Self {
                cmds,
                shared,
                next_id: Arc::new(AtomicU32::new(first)),
                reader: Arc::new(StdMutex::new(Some(reader))),
                writer: Arc::new(StdMutex::new(Some(writer))),
            },
            incoming,
        )
    }

    /// Opens a stream with `headers` and waits for the peer's SYN_REPLY.
    pub async fn open_stream(&self, headers: Headers) -> Result<OpenedStream, SpdyError> {
        let id = self.next_id.fetch_add(2, Ordering::SeqCst);
        let (data_tx, data_rx) = mpsc::unbounded_channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        self.shared.streams().insert(
            id,
            Slot {
                data: Some(data_tx),
                reply: Some(reply_tx),
            },
        );
        self.cmds
            .send(Cmd::Frame(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers,
            }))
            .await
            .map_err(|_| SpdyError::Closed)?;
        reply_rx.await.map_err(|_| SpdyError::Closed)??;
        Ok(OpenedStream {
            id,
            reader: StreamReader {
                id,
                rx: data_rx,
                cmds: self.cmds.clone(),
                unacked: 0,
            },
            writer: StreamWriter {
                id,
                cmds: self.cmds.clone(),
            },
        })
    }

    /// Sends GOAWAY, flushes everything queued before it, and shuts the transport down.
    pub async fn close(&self) {
        let last = self.shared.last_peer_stream.load(Ordering::SeqCst);
        let _ = self
            .cmds
            .send(Cmd::Frame(Frame::GoAway {
                last_good_stream_id: last,
                status: 0,
            }))
            .await;
        let _ = self.cmds.send(Cmd::Close).await;
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(r) = reader {
            r.abort();
        }
    }
}

async fn write_loop<O>(mut output: O, mut cmds: mpsc::Receiver<Cmd>)
where
    O: Sink<Bytes, Error = io::Error> + Unpin,
{
    let mut codec = match Codec::new() {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(?err, "cannot set up spdy header compression");
            return;
        }
    };
    let mut buf = BytesMut::new();
    while let Some(cmd) = cmds.recv().await {
        let mut close = false;
        let mut next = Some(cmd);
        // Batch whatever is already queued into one transport write.
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Frame(f) => {
                    if let Err(err) = codec.encode(&f, &mut buf) {
                        tracing::warn!(?err, "dropping unencodable spdy frame");
                    }
                }
                Cmd::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() >= 64 * 1024 {
                break;
            }
            next = cmds.try_recv().ok();
        }
        if !buf.is_empty() && output.send(buf.split().freeze()).await.is_err() {
            break;
        }
        if close {
            break;
        }
    }
    let _ = output.close().await;
}

async fn read_loop<I>(
    mut input: I,
    cmds: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<IncomingStream>,
) where
    I: Stream<Item = io::Result<Bytes>> + Unpin,
{
    let mut codec = match Codec::new() {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(?err, "cannot set up spdy header decompression");
            return;
        }
    };
    let mut buf = BytesMut::new();
    'outer: while let Some(chunk) = input.next().await {
        let Ok(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(?err, "bad spdy frame; closing connection");
                    break 'outer;
                }
            };
            if !handle_frame(frame, &cmds, &shared, &incoming).await {
                break 'outer;
            }
        }
    }
    // Peer gone: every reader sees EOF, every waiting opener an error.
    shared.streams().clear();
}

/// Routes one frame; false ends the connection (GOAWAY).
async fn handle_frame(
    frame: Frame,
    cmds: &mpsc::Sender<Cmd>,
    shared: &Shared,
    incoming: &mpsc::Sender<IncomingStream>,
) -> bool {
    match frame {
        Frame::SynStream {
            stream_id,
            headers,
            fin,
            ..
        } => {
            shared.last_peer_stream.store(stream_id, Ordering::SeqCst);
            let (data_tx, data_rx) = mpsc::unbounded_channel();
            let duplicate = shared.streams().contains_key(&stream_id);
            if duplicate {
                let _ = cmds
                    .send(Cmd::Frame(Frame::RstStream {
                        stream_id,
                        status: RST_PROTOCOL_ERROR,
                    }))
                    .await;
                return true;
            }
            shared.streams().insert(
                stream_id,
                Slot {
                    data: (!fin).then_some(data_tx),
                    reply: None,
                },
            );
            let stream = IncomingStream {
                id: stream_id,
                headers,
                reader: StreamReader {
                    id: stream_id,
                    rx: data_rx,
                    cmds: cmds.clone(),
                    unacked: 0,
                },
                writer: StreamWriter {
                    id: stream_id,
                    cmds: cmds.clone(),
                },
            };
            if incoming.send(stream).await.is_err() {
                let _ = cmds
                    .send(Cmd::Frame(Frame::RstStream {
                        stream_id,
                        status: super::frame::RST_REFUSED_STREAM,
                    }))
                    .await;
            }
        }
        Frame::SynReply {
            stream_id,
            fin,
            headers,
        } => {
            let mut streams = shared.streams();
            if let Some(slot) = streams.get_mut(&stream_id) {
                if let Some(reply) = slot.reply.take() {
                    let _ = reply.send(Ok(headers));
                }
                if fin {
                    slot.data = None;
                }
            }
        }
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            let mut streams = shared.streams();
            if let Some(slot) = streams.get_mut(&stream_id) {
                if let Some(tx) = &slot.data
                    && !data.is_empty()
                {
                    let _ = tx.send(data);
                }
                if fin {
                    slot.data = None;
                }
            }
        }
        Frame::Headers {
            stream_id,
            fin: true,
            ..
        } => {
            if let Some(slot) = shared.streams().get_mut(&stream_id) {
                slot.data = None;
            }
        }
        Frame::RstStream { stream_id, .. } => {
            if let Some(slot) = shared.streams().remove(&stream_id)
                && let Some(reply) = slot.reply
            {
                let _ = reply.send(Err(SpdyError::Reset(stream_id)));
            }
        }
        Frame::Ping { id } => {
            // We never ping, so every PING is the peer's: echo it.
            let _ = cmds.send(Cmd::Frame(Frame::Ping { id })).await;
        }
        Frame::GoAway { .. } => return false,
        Frame::Settings { .. }
        | Frame::WindowUpdate { .. }
        | Frame::Headers { .. }
        | Frame::Unknown { .. } => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio_util::codec::{BytesCodec, FramedRead, FramedWrite};

    fn pair() -> (
        (Connection, mpsc::Receiver<IncomingStream>),
        (Connection, mpsc::Receiver<IncomingStream>),
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let side = |r, w, role| {
            Connection::start(
                FramedRead::new(r, BytesCodec::new()).map(|r| r.map(BytesMut::freeze)),
                FramedWrite::new(w, BytesCodec::new()),
                role,
            )
        };
        (side(ar, aw, Role::Client), side(br, bw, Role::Server))
    }

    #[tokio::test]
    async fn client_stream_is_replied_and_carries_data_both_ways() {
        let ((client, _), (_server, mut incoming)) = pair();
        let server_side = tokio::spawn(async move {
            let mut s = incoming.recv().await.unwrap();
            assert_eq!(s.header("streamtype"), Some("data"));
            s.reply().await.unwrap();
            let mut got = Vec::new();
            while let Some(b) = s.reader.read().await {
                got.extend_from_slice(&b);
            }
            s.writer.write(&got).await.unwrap();
            s.writer.finish().await.unwrap();
        });
        let mut s = client
            .open_stream(vec![("streamtype".into(), "data".into())])
            .await
            .unwrap();
        let big = vec![7u8; 100_000];
        s.writer.write(&big).await.unwrap();
        s.writer.finish().await.unwrap();
        let mut echoed = Vec::new();
        while let Some(b) = s.reader.read().await {
            echoed.extend_from_slice(&b);
        }
        assert_eq!(echoed, big);
        server_side.await.unwrap();
    }

    #[tokio::test]
    async fn reset_stream_fails_the_opener() {
        let ((client, _), (_server, mut incoming)) = pair();
        tokio::spawn(async move {
            let s = incoming.recv().await.unwrap();
            s.writer.reset(RST_PROTOCOL_ERROR).await.unwrap();
        });
        let err = client.open_stream(vec![]).await.err().unwrap();
        assert!(matches!(err, SpdyError::Reset(1)));
    }
}
