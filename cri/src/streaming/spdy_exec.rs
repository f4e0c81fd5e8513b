//! exec/attach over SPDY (`X-Stream-Protocol-Version: v4.channel.k8s.io` and
//! older): the client opens one stream per channel, named by its `streamType`
//! header; we reply to each, wait for all expected ones, then run the session.
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::remotecommand::{OutChannel, Outgoing, ResizeDecoder, SessionIo};
use super::spdy::{Connection, IncomingStream, StreamWriter};
use super::ws_exec::Streams;

/// kubelet's default stream creation timeout.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Remote command protocols over SPDY, best first.
pub const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

#[derive(Default)]
struct Opened {
    error: Option<IncomingStream>,
    stdin: Option<IncomingStream>,
    stdout: Option<IncomingStream>,
    stderr: Option<IncomingStream>,
    resize: Option<IncomingStream>,
}

async fn wait_for_streams(
    incoming: &mut mpsc::Receiver<IncomingStream>,
    expected: usize,
) -> Option<Opened> {
    let mut opened = Opened::default();
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while count < expected {
        let stream = tokio::time::timeout_at(deadline, incoming.recv())
            .await
            .ok()??;
        let kind = stream.header("streamtype").unwrap_or_default().to_string();
        let slot = match kind.as_str() {
            "error" => &mut opened.error,
            "stdin" => &mut opened.stdin,
            "stdout" => &mut opened.stdout,
            "stderr" => &mut opened.stderr,
            "resize" => &mut opened.resize,
            other => {
                tracing::debug!(stream_type = other, "unexpected stream type");
                let _ = stream
                    .writer
                    .reset(super::spdy::frame::RST_PROTOCOL_ERROR)
                    .await;
                continue;
            }
        };
        if stream.reply().await.is_err() {
            return None;
        }
        *slot = Some(stream);
        count += 1;
    }
    Some(opened)
}

/// Serves one exec/attach over an upgraded SPDY connection.
pub async fn serve<F, Fut>(
    conn: Connection,
    mut incoming: mpsc::Receiver<IncomingStream>,
    protocol: &str,
    streams: Streams,
    run: F,
) where
    F: FnOnce(SessionIo) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let resizable = matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let expected = 1
        + usize::from(streams.stdin)
        + usize::from(streams.stdout)
        + usize::from(streams.stderr)
        + usize::from(streams.tty && resizable);
    let Some(opened) = wait_for_streams(&mut incoming, expected).await else {
        tracing::warn!("timed out waiting for client to create streams");
        conn.close().await;
        return;
    };
    let mut helpers = tokio::task::JoinSet::new();
    let stdin_rx = opened.stdin.map(|mut s| {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        helpers.spawn(async move {
            while let Some(data) = s.reader.read().await {
                if tx.send(data).await.is_err() {
                    break;
                }
            }
        });
        rx
    });
    let resize_rx = opened.resize.map(|mut s| {
        let (tx, rx) = mpsc::channel(4);
        helpers.spawn(async move {
            let mut sizes = ResizeDecoder::default();
            while let Some(data) = s.reader.read().await {
                for size in sizes.push(&data) {
                    let _ = tx.send(size).await;
                }
            }
        });
        rx
    });
    let stdout = opened.stdout.map(|s| s.writer);
    let stderr = opened.stderr.map(|s| s.writer);
    let error = opened.error.map(|s| s.writer);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let session = tokio::spawn(run(SessionIo {
        stdin: stdin_rx,
        resize: resize_rx,
        out: out_tx,
    }));
    let write = |w: &Option<StreamWriter>, data: Bytes| {
        let w = w.clone();
        async move {
            match w {
                Some(w) => w.write(&data).await.is_ok(),
                None => true,
            }
        }
    };
    loop {
        let o = tokio::select! {
            o = out_rx.recv() => match o {
                Some(o) => o,
                None => break,
            },
            more = incoming.recv() => match more {
                // No further streams belong to a session; refuse them.
                Some(extra) => {
                    let _ = extra.writer.reset(super::spdy::frame::RST_PROTOCOL_ERROR).await;
                    continue;
                }
                // The connection's reader ended: the client is gone.
                None => break,
            },
        };
        match o {
            Outgoing::Data(OutChannel::Stdout, data) => {
                if !write(&stdout, data).await {
                    break;
                }
            }
            Outgoing::Data(OutChannel::Stderr, data) => {
                if !write(&stderr, data).await {
                    break;
                }
            }
            Outgoing::Status(status) => {
                for w in [&stdout, &stderr].into_iter().flatten() {
                    let _ = w.finish().await;
                }
                let body = if protocol == "v4.channel.k8s.io" {
                    Some(status.to_json())
                } else {
                    status.to_text()
                };
                if let (Some(w), Some(body)) = (&error, body) {
                    let _ = w.write(&body).await;
                }
                if let Some(w) = &error {
                    let _ = w.finish().await;
                }
                break;
            }
        }
    }
    session.abort();
    helpers.abort_all();
    conn.close().await;
}
