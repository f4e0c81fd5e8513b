//! Byte transports under SPDY: an upgraded HTTP/1.1 connection, or binary
//! WebSocket messages (kubectl's `SPDY/3.1+portforward.k8s.io` tunnel).
use std::io;

use bytes::{Bytes, BytesMut};
use futures::{Sink, SinkExt, Stream, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::{BytesCodec, FramedRead, FramedWrite};

/// Input and output halves of a transport.
pub type Input = std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;
pub type Output = std::pin::Pin<Box<dyn Sink<Bytes, Error = io::Error> + Send>>;

/// Splits any async byte stream into chunk input and output.
pub fn raw<T>(io: T) -> (Input, Output)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    (
        Box::pin(FramedRead::new(r, BytesCodec::new()).map(|r| r.map(BytesMut::freeze))),
        Box::pin(FramedWrite::new(w, BytesCodec::new())),
    )
}

/// An upgraded HTTP connection as a transport.
pub fn upgraded(io: Upgraded) -> (Input, Output) {
    raw(TokioIo::new(io))
}

/// Binary WebSocket messages as a byte transport: each message carries bytes of
/// the tunnelled stream; a close ends the input.
pub fn websocket<S>(ws: WebSocketStream<S>) -> (Input, Output)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sink, stream) = ws.split();
    let input = stream
        .take_while(|m| futures::future::ready(!matches!(m, Ok(Message::Close(_)) | Err(_))))
        .filter_map(|m| {
            futures::future::ready(match m {
                Ok(Message::Binary(b)) => Some(Ok(b)),
                _ => None,
            })
        });
    let output = sink
        .sink_map_err(io::Error::other)
        .with(|b: Bytes| futures::future::ready(Ok::<_, io::Error>(Message::Binary(b))));
    (Box::pin(input), Box::pin(output))
}
