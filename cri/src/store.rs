//! Small JSON record files written atomically (temp file + rename), used for persisted state.
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors of reading or writing a record file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to access {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to decode {path}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let data = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Decode {
        path: path.display().to_string(),
        source,
    })?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Reads a JSON record.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&data).map_err(|source| StoreError::Decode {
        path: path.display().to_string(),
        source,
    })
}

/// Reads every `*.json` record in `dir` (missing dir = none); undecodable files are skipped with a warning.
pub fn read_dir_json<T: DeserializeOwned>(dir: &Path) -> Vec<T> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            match read_json(&path) {
                Ok(v) => out.push(v),
                Err(err) => {
                    tracing::warn!(path = %path.display(), ?err, "skipping unreadable record")
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_record_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        let v: Vec<i32> = read_json(&p).unwrap();
        assert_eq!(v, vec![1, 2, 3]);
        let all: Vec<Vec<i32>> = read_dir_json(&dir.path().join("a"));
        assert_eq!(all.len(), 1);
    }
}
