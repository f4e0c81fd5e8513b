//! exec/attach over WebSocket (the `channel.k8s.io` family that kubectl 1.29+
//! tries first): every message starts with a channel byte (0 stdin, 1 stdout,
//! 2 stderr, 3 status, 4 resize); v5 adds 255 for "close this channel".
use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::remotecommand::{OutChannel, Outgoing, ResizeDecoder, SessionIo};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// A negotiated channel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelProtocol {
    /// The `Sec-WebSocket-Protocol` to echo; empty when the client offered none.
    pub name: &'static str,
    pub base64: bool,
    /// 1 (plain-text status), 4 (JSON status), 5 (JSON status + close signal).
    pub version: u8,
}

/// What we accept, as upstream's wsstream does.
const PROTOCOLS: &[ChannelProtocol] = &[
    ChannelProtocol {
        name: "v5.channel.k8s.io",
        base64: false,
        version: 5,
    },
    ChannelProtocol {
        name: "v5.base64.channel.k8s.io",
        base64: true,
        version: 5,
    },
    ChannelProtocol {
        name: "v4.channel.k8s.io",
        base64: false,
        version: 4,
    },
    ChannelProtocol {
        name: "v4.base64.channel.k8s.io",
        base64: true,
        version: 4,
    },
    ChannelProtocol {
        name: "channel.k8s.io",
        base64: false,
        version: 1,
    },
    ChannelProtocol {
        name: "base64.channel.k8s.io",
        base64: true,
        version: 1,
    },
];

/// Picks the first protocol the client offered that we support; a client
/// that offered none gets the original binary protocol.
pub fn negotiate(offered: &[String]) -> Option<ChannelProtocol> {
    if offered.is_empty() {
        return Some(ChannelProtocol {
            name: "",
            base64: false,
            version: 1,
        });
    }
    offered
        .iter()
        .find_map(|o| PROTOCOLS.iter().find(|p| p.name == o.as_str()).copied())
}

/// Which streams the request asked for.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn encode(p: ChannelProtocol, channel: u8, data: &[u8]) -> Message {
    if p.base64 {
        let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        text.push(char::from(b'0' + channel));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::text(text)
    } else {
        let mut frame = Vec::with_capacity(1 + data.len());
        frame.push(channel);
        frame.extend_from_slice(data);
        Message::binary(frame)
    }
}

fn decode(p: ChannelProtocol, msg: Message) -> Option<(u8, Vec<u8>)> {
    match msg {
        Message::Binary(b) if !p.base64 => {
            let (&channel, data) = b.split_first()?;
            Some((channel, data.to_vec()))
        }
        Message::Text(t) if p.base64 => {
            let (first, rest) = t.as_bytes().split_first()?;
            let channel = first.checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((channel, data))
        }
        _ => None,
    }
}

async fn read_loop<S>(
    mut stream: S,
    p: ChannelProtocol,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    mut resize: Option<mpsc::Sender<super::remotecommand::TerminalSize>>,
) where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut sizes = ResizeDecoder::default();
    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_close() {
            break;
        }
        let Some((channel, data)) = decode(p, msg) else {
            continue;
        };
        match channel {
            STDIN => {
                if let Some(tx) = &stdin
                    && !data.is_empty()
                    && tx.send(Bytes::from(data)).await.is_err()
                {
                    stdin = None;
                }
            }
            RESIZE => {
                if let Some(tx) = &resize {
                    for size in sizes.push(&data) {
                        let _ = tx.send(size).await;
                    }
                }
            }
            CLOSE if p.version >= 5 => match data.first() {
                Some(&STDIN) => stdin = None,
                Some(&RESIZE) => resize = None,
                _ => {}
            },
            _ => {}
        }
    }
}

/// Serves one exec/attach over an accepted WebSocket: `run` gets the session
/// channels and must end by sending the status.
pub async fn serve<S, F, Fut>(ws: WebSocketStream<S>, p: ChannelProtocol, streams: Streams, run: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    F: FnOnce(SessionIo) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (mut sink, stream) = ws.split();
    let (stdin_tx, stdin_rx) = if streams.stdin {
        let (tx, rx) = mpsc::channel(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (resize_tx, resize_rx) = if streams.tty {
        let (tx, rx) = mpsc::channel(4);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (out_tx, mut out_rx) = mpsc::channel(16);
    // Tell the client the streams are up: an empty message on the first writable channel.
    let first = if streams.stdout {
        STDOUT
    } else if streams.stderr {
        STDERR
    } else {
        ERROR
    };
    if sink.send(encode(p, first, &[])).await.is_err() {
        return;
    }
    let mut reader = tokio::spawn(read_loop(stream, p, stdin_tx, resize_tx));
    let session = tokio::spawn(run(SessionIo {
        stdin: stdin_rx,
        resize: resize_rx,
        out: out_tx,
    }));
    loop {
        let o = tokio::select! {
            o = out_rx.recv() => match o {
                Some(o) => o,
                None => break,
            },
            // Clients keep the socket open until they have the status: the
            // reader ending first means the client is gone.
            _ = &mut reader => {
                session.abort();
                return;
            }
        };
        let msg = match o {
            Outgoing::Data(OutChannel::Stdout, data) => encode(p, STDOUT, &data),
            Outgoing::Data(OutChannel::Stderr, data) => encode(p, STDERR, &data),
            Outgoing::Status(status) => {
                let body = if p.version >= 4 {
                    Some(status.to_json())
                } else {
                    status.to_text()
                };
                if let Some(body) = body {
                    let _ = sink.send(encode(p, ERROR, &body)).await;
                }
                break;
            }
        };
        if sink.send(msg).await.is_err() {
            break;
        }
    }
    session.abort();
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    // Give the client a moment to answer the close, then drop the connection.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_offered_supported_protocol_wins() {
        let offered = vec!["v9.channel.k8s.io".to_string(), "v4.channel.k8s.io".into()];
        assert_eq!(negotiate(&offered).unwrap().name, "v4.channel.k8s.io");
        assert_eq!(negotiate(&["bogus".to_string()]), None);
        assert_eq!(negotiate(&[]).unwrap().version, 1);
    }

    #[test]
    fn base64_frames_carry_the_channel_as_a_digit() {
        let p = negotiate(&["v4.base64.channel.k8s.io".to_string()]).unwrap();
        let msg = encode(p, STDOUT, b"hi\n");
        assert_eq!(msg.to_text().unwrap(), "1aGkK");
        assert_eq!(
            decode(p, Message::text("0aGkK")),
            Some((0, b"hi\n".to_vec()))
        );
    }

    #[test]
    fn binary_frames_start_with_the_channel_byte() {
        let p = negotiate(&["v5.channel.k8s.io".to_string()]).unwrap();
        assert_eq!(encode(p, STDERR, b"x").into_data().to_vec(), vec![2, b'x']);
        assert_eq!(
            decode(p, Message::binary(vec![255u8, 0])),
            Some((255, vec![0]))
        );
    }
}
