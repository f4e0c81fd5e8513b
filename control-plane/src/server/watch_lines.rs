//! Watch lines encoded once and shared by every watch that would send the
//! same bytes: the same store event of the same resource in the same
//! output (plain JSON, or PartialObjectMetadata of one version), with no
//! label or field selector. A pod update is seen by a dozen
//! informers (the scheduler's, each controller's, the agents'); without
//! this each of them decoded the stored object, converted it and encoded
//! the line again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use crate::resources::ResourceType;
use crate::storage::Revision;

/// Lines kept at most; a watch further behind than this encodes its own.
const MAX_LINES: usize = 1024;
/// Bytes kept at most, so a burst of large objects does not stay resident.
const MAX_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LineKey {
    revision: Revision,
    /// The served resource (its version decides the conversion).
    resource: (&'static str, &'static str, &'static str),
    /// "" for the whole object, else the PartialObjectMetadata apiVersion.
    output: &'static str,
    key: Box<str>,
}

#[derive(Default)]
struct Lines {
    by_key: HashMap<LineKey, Bytes>,
    order: VecDeque<LineKey>,
    bytes: usize,
}

/// The shared lines, oldest evicted first.
#[derive(Default)]
pub struct WatchLines {
    lines: Mutex<Lines>,
}

impl WatchLines {
    /// The line for event (`revision`, `key`) of `resource` in `output`,
    /// encoding it with `encode` only when no watch has yet; `Ok(None)`
    /// lines (nothing to send) are not kept.
    pub fn get_or_encode<E>(
        &self,
        resource: &'static ResourceType,
        output: &'static str,
        revision: Revision,
        key: &str,
        encode: impl FnOnce() -> Result<Option<Bytes>, E>,
    ) -> Result<Option<Bytes>, E> {
        let id = LineKey {
            revision,
            resource: (resource.group, resource.version, resource.plural),
            output,
            key: key.into(),
        };
        if let Some(line) = self.lock().by_key.get(&id) {
            return Ok(Some(line.clone()));
        }
        let line = encode()?;
        if let Some(line) = &line {
            self.insert(id, line.clone());
        }
        Ok(line)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, id: LineKey, line: Bytes) {
        let mut lines = self.lock();
        let Lines {
            by_key,
            order,
            bytes,
        } = &mut *lines;
        if by_key.contains_key(&id) {
            return;
        }
        *bytes += line.len();
        order.push_back(id.clone());
        by_key.insert(id, line);
        while order.len() > MAX_LINES || (*bytes > MAX_BYTES && order.len() > 1) {
            let Some(old) = order.pop_front() else { break };
            if let Some(l) = by_key.remove(&old) {
                *bytes -= l.len();
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceType {
        crate::resources::catalog()
            .iter()
            .find(|r| r.plural == "pods" && r.group.is_empty())
            .unwrap()
    }

    fn encoded(s: &str) -> Result<Option<Bytes>, ()> {
        Ok(Some(Bytes::from(s.to_string())))
    }

    #[test]
    fn encodes_each_event_once() {
        let lines = WatchLines::default();
        let mut calls = 0;
        for _ in 0..3 {
            let line = lines
                .get_or_encode(pods(), "", 7, "/registry/pods/default/a", || {
                    calls += 1;
                    encoded("a@7")
                })
                .unwrap();
            assert_eq!(line.as_deref(), Some(&b"a@7"[..]));
        }
        assert_eq!(calls, 1);
        let other = lines
            .get_or_encode(pods(), "", 8, "/registry/pods/default/a", || encoded("a@8"))
            .unwrap();
        assert_eq!(other.as_deref(), Some(&b"a@8"[..]));
    }

    #[test]
    fn outputs_are_kept_apart() {
        let lines = WatchLines::default();
        let key = "/registry/pods/default/a";
        lines
            .get_or_encode(pods(), "", 7, key, || encoded("full"))
            .unwrap();
        let meta = lines
            .get_or_encode(pods(), "meta.k8s.io/v1", 7, key, || encoded("meta"))
            .unwrap();
        assert_eq!(meta.as_deref(), Some(&b"meta"[..]));
    }

    #[test]
    fn nothing_to_send_is_not_kept() {
        let lines = WatchLines::default();
        let none: Result<Option<Bytes>, ()> = lines.get_or_encode(pods(), "", 1, "k", || Ok(None));
        assert_eq!(none, Ok(None));
        assert_eq!(lines.len(), 0);
    }

    #[test]
    fn keeps_at_most_max_lines() {
        let lines = WatchLines::default();
        for rev in 0..(MAX_LINES as u64 + 10) {
            lines
                .get_or_encode(pods(), "", rev, "k", || encoded("x"))
                .unwrap();
        }
        assert_eq!(lines.len(), MAX_LINES);
        let mut again = false;
        lines
            .get_or_encode(pods(), "", 0, "k", || {
                again = true;
                encoded("x")
            })
            .unwrap();
        assert!(again, "the oldest line was evicted");
    }
}
