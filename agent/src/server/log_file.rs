//! Reading a container's CRI log file for `/containerLogs`: the initial
//! snapshot (tail, since) and, with `follow`, tailing the file until the
//! container has exited and the file is drained. Chunks go to a channel
//! that feeds the HTTP response body.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::logs::{ByteLimit, Joiner, Line, LogOptions, complete_lines, initial_lines};

/// How often a followed file is polled for new lines.
const POLL: Duration = Duration::from_millis(200);
/// Idle polls between checks of whether the container still runs.
const STATUS_EVERY: u32 = 5;

/// Whether the container may still write (asked of CRI while following).
#[async_trait::async_trait]
pub trait Liveness: Send + Sync {
    async fn is_live(&self) -> bool;
}

/// Where a followed read is in the file.
struct Reader {
    path: PathBuf,
    offset: u64,
    joiner: Joiner,
}

impl Reader {
    /// The complete raw lines written since the last read.
    async fn read_new(&mut self) -> std::io::Result<Vec<String>> {
        let mut file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata().await?.len();
        if len < self.offset {
            // Truncated or rotated: start over on the new file.
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset)).await?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).await?;
        let (lines, used) = complete_lines(&buf);
        self.offset += used as u64;
        Ok(lines)
    }
}

/// Sends `lines` through the byte limit; false when the client is gone or
/// the limit is reached.
async fn send(
    tx: &mpsc::Sender<Bytes>,
    opts: &LogOptions,
    limit: &mut ByteLimit,
    lines: impl IntoIterator<Item = Line>,
) -> bool {
    for line in lines {
        if !opts.wanted(&line) {
            continue;
        }
        let chunk = limit.take(opts.render(&line));
        if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
            return false;
        }
        if limit.exhausted() {
            return false;
        }
    }
    true
}

/// Writes the log at `path` to `tx` as `opts` asks; returns when done, when
/// the receiver is dropped, or on a read error.
pub async fn stream(
    path: PathBuf,
    opts: LogOptions,
    live: Box<dyn Liveness>,
    tx: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let mut reader = Reader {
        path,
        offset: 0,
        joiner: Joiner::default(),
    };
    let mut limit = ByteLimit::new(opts.limit_bytes);
    let raw = reader.read_new().await?;
    let first = initial_lines(&raw, &opts, &mut reader.joiner);
    if !send(&tx, &opts, &mut limit, first).await {
        return Ok(());
    }
    if !opts.follow {
        if !live.is_live().await {
            let rest = reader.joiner.flush();
            send(&tx, &opts, &mut limit, rest).await;
        }
        return Ok(());
    }
    let mut idle = 0u32;
    loop {
        let raw = reader.read_new().await?;
        if raw.is_empty() {
            idle += 1;
            if idle.is_multiple_of(STATUS_EVERY) && !live.is_live().await {
                // Exited: drain what was written last, then stop.
                let raw = reader.read_new().await?;
                let mut lines: Vec<Line> =
                    raw.iter().filter_map(|r| reader.joiner.push(r)).collect();
                lines.extend(reader.joiner.flush());
                send(&tx, &opts, &mut limit, lines).await;
                return Ok(());
            }
            tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        idle = 0;
        let lines: Vec<Line> = raw.iter().filter_map(|r| reader.joiner.push(r)).collect();
        if !send(&tx, &opts, &mut limit, lines).await {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Flag(Arc<AtomicBool>);

    #[async_trait::async_trait]
    impl Liveness for Flag {
        async fn is_live(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> String {
        let mut out = String::new();
        while let Some(b) = rx.recv().await {
            out.push_str(&String::from_utf8_lossy(&b));
        }
        out
    }

    #[tokio::test]
    async fn follow_sees_new_lines_and_stops_after_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2024-01-02T03:04:05Z stdout F a\n").unwrap();
        let live = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(16);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let task = tokio::spawn(stream(path.clone(), opts, Box::new(Flag(live.clone())), tx));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("a\n"));
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2024-01-02T03:04:06Z stdout P b\n2024-01-02T03:04:06Z stdout F c\n")
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("bc\n"));
        f.write_all(b"2024-01-02T03:04:07Z stderr P tail").unwrap();
        f.write_all(b"\n").unwrap();
        live.store(false, Ordering::SeqCst);
        assert_eq!(collect(rx).await, "tail\n");
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn snapshot_honours_tail_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2024-01-02T03:04:05Z stdout F a\n2024-01-02T03:04:06Z stdout F bb\n2024-01-02T03:04:07Z stdout F cc\n",
        )
        .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let opts = LogOptions {
            tail_lines: Some(2),
            limit_bytes: Some(4),
            ..Default::default()
        };
        let live = Arc::new(AtomicBool::new(false));
        stream(path, opts, Box::new(Flag(live)), tx).await.unwrap();
        assert_eq!(collect(rx).await, "bb\nc");
    }
}
