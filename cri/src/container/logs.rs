//! Container stdout/stderr: each stream is a FIFO the container holds open
//! read-write (so it never gets SIGPIPE while r8s-cri restarts); a copier task
//! reads it and appends CRI-format lines (`<RFC3339Nano> <stream> <F|P> <text>`).
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Longest line written as one record; longer ones are split into `P` records.
const MAX_LINE: usize = 16 * 1024;

/// Errors of setting up log streams.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("failed to create fifo {path}")]
    Fifo {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Creates the FIFO at `path` if missing.
pub fn make_fifo(path: &Path) -> Result<(), LogError> {
    match nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(source) => Err(LogError::Fifo {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Opens the container's end of a FIFO (read-write: never blocks, never EPIPE).
pub fn open_container_end(path: &Path) -> Result<OwnedFd, LogError> {
    nix::fcntl::open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
        LogError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        }
    })
}

/// The CRI log file shared by a container's two streams; reopenable.
pub struct LogFile {
    /// `None`: output only goes to attached clients (a tty container without a log path).
    path: Option<PathBuf>,
    file: Mutex<Option<tokio::fs::File>>,
    /// Raw output chunks (stream name, bytes) for attached clients.
    taps: tokio::sync::broadcast::Sender<(&'static str, bytes::Bytes)>,
}

impl LogFile {
    pub fn new(path: PathBuf) -> Arc<Self> {
        Self::with_path(Some(path))
    }

    /// Output that is only streamed to attached clients, never written.
    pub fn discard() -> Arc<Self> {
        Self::with_path(None)
    }

    fn with_path(path: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            path,
            file: Mutex::new(None),
            taps: tokio::sync::broadcast::channel(256).0,
        })
    }

    /// Follows the container's output from now on (what Attach streams).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(&'static str, bytes::Bytes)> {
        self.taps.subscribe()
    }

    async fn open(path: &Path) -> std::io::Result<tokio::fs::File> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
    }

    /// Closes and reopens the file (after a log rotation).
    pub async fn reopen(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let f = Self::open(path).await?;
        *self.file.lock().await = Some(f);
        Ok(())
    }

    async fn write_record(&self, stream: &str, tag: char, line: &[u8]) {
        let Some(path) = &self.path else {
            return;
        };
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut rec = Vec::with_capacity(line.len() + 48);
        rec.extend_from_slice(format!("{ts} {stream} {tag} ").as_bytes());
        rec.extend_from_slice(line);
        rec.push(b'\n');
        let mut guard = self.file.lock().await;
        if guard.is_none() {
            match Self::open(path).await {
                Ok(f) => *guard = Some(f),
                Err(err) => {
                    tracing::warn!(path = %path.display(), ?err, "cannot open log file");
                    return;
                }
            }
        }
        // tokio's File completes writes in the background: flush makes each record land.
        if let Some(f) = guard.as_mut()
            && let Err(err) = async {
                f.write_all(&rec).await?;
                f.flush().await
            }
            .await
        {
            tracing::warn!(path = %path.display(), ?err, "cannot write log file");
        }
    }
}

/// Creates the log file at `path` (and its directory) unless it exists.
pub fn create_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
}

/// Opens the reading end of `fifo` now (so the data is not lost), then copies
/// it into `log` until every writer has closed it.
pub fn spawn_copier(
    fifo: &Path,
    stream: &'static str,
    log: Arc<LogFile>,
) -> Result<tokio::task::JoinHandle<()>, LogError> {
    let mut rx = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(fifo)
        .map_err(|source| LogError::Open {
            path: fifo.to_path_buf(),
            source,
        })?;
    Ok(tokio::spawn(async move {
        let mut records = Records::new(stream, log);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => records.push(&buf[..n]).await,
                Err(err) => {
                    tracing::warn!(?err, stream, "log stream read failed");
                    break;
                }
            }
        }
        records.finish().await;
    }))
}

/// Copies the console (pty master) of a tty container into `log` as stdout,
/// as containerd logs tty output, until the terminal is hung up.
pub fn spawn_console_copier(
    console: Arc<super::exec::Pty>,
    log: Arc<LogFile>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut records = Records::new("stdout", log);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match console.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => records.push(&buf[..n]).await,
                Err(err) => {
                    tracing::warn!(?err, "console read failed");
                    break;
                }
            }
        }
        records.finish().await;
    })
}

/// Splits one stream's output into CRI records and feeds attached clients.
struct Records {
    stream: &'static str,
    log: Arc<LogFile>,
    pending: Vec<u8>,
}

impl Records {
    fn new(stream: &'static str, log: Arc<LogFile>) -> Self {
        Self {
            stream,
            log,
            pending: Vec::new(),
        }
    }

    async fn push(&mut self, data: &[u8]) {
        if self.log.taps.receiver_count() > 0 {
            let _ = self
                .log
                .taps
                .send((self.stream, bytes::Bytes::copy_from_slice(data)));
        }
        self.pending.extend_from_slice(data);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            self.log
                .write_record(self.stream, 'F', &line[..line.len() - 1])
                .await;
        }
        while self.pending.len() >= MAX_LINE {
            let part: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            self.log.write_record(self.stream, 'P', &part).await;
        }
    }

    async fn finish(self) {
        if !self.pending.is_empty() {
            self.log.write_record(self.stream, 'F', &self.pending).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn lines_are_written_in_cri_format() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out");
        make_fifo(&fifo).unwrap();
        let writer = open_container_end(&fifo).unwrap();
        let log = LogFile::new(dir.path().join("logs/0.log"));
        let task = spawn_copier(&fifo, "stdout", log).unwrap();
        let mut w = std::fs::File::from(writer);
        w.write_all(b"hello\nwor").unwrap();
        w.write_all(b"ld\ntail").unwrap();
        drop(w);
        task.await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("logs/0.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with(" stdout F hello"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout F world"));
        assert!(lines[2].ends_with(" stdout F tail"));
        assert!(lines[0].contains('T') && lines[0].split(' ').next().unwrap().ends_with('Z'));
    }
}
