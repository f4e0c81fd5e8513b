//! What the image GC manager knows about each image between rounds
//! (kubelet's `imageRecords`: first detected, last used, size, pinned) and
//! the pure choices of a round: which images may go and in what order
//! (`imagesInEvictionOrder`), how much to free (`GarbageCollect`), which
//! are too young (`freeSpace`) or unused for too long (`freeOldImages`).
//! No I/O: `manager` runs the round.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// One image as the runtime lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    /// Pinned images (a runtime's sandbox image) are never removed.
    pub pinned: bool,
}

impl ImageInfo {
    /// Whether a container referring to the image by any of `refs` (its id,
    /// a tag or a digest) uses it.
    pub fn is_used(&self, refs: &HashSet<String>) -> bool {
        refs.contains(&self.id)
            || self
                .repo_tags
                .iter()
                .chain(&self.repo_digests)
                .any(|r| refs.contains(r))
    }
}

/// The manager's memory of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub image: ImageInfo,
    pub first_detected: Instant,
    /// `None`: never seen in use since the agent started (kubelet's zero
    /// time, so such images go first).
    pub last_used: Option<Instant>,
}

/// An image that may be removed, in eviction order.
pub type Candidate = ImageRecord;

/// Every image the runtime has, by id.
#[derive(Debug, Default)]
pub struct ImageRecords {
    records: HashMap<String, ImageRecord>,
}

impl ImageRecords {
    /// Kubelet's `detectImages`: new images are first detected `now`,
    /// images in use (by any container, running or not: `in_use` holds the
    /// references of them all) were last used `now`, and images gone from
    /// the runtime are forgotten.
    pub fn detect(&mut self, now: Instant, images: &[ImageInfo], in_use: &HashSet<String>) {
        let current: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.records.retain(|id, _| current.contains(id.as_str()));
        for image in images {
            let record = self
                .records
                .entry(image.id.clone())
                .or_insert_with(|| ImageRecord {
                    image: image.clone(),
                    first_detected: now,
                    last_used: None,
                });
            record.image = image.clone();
            if image.is_used(in_use) {
                record.last_used = Some(now);
            }
        }
    }

    /// Kubelet's `imagesInEvictionOrder`: the images no container uses and
    /// that are not pinned, least recently used first, then first detected
    /// first.
    pub fn eviction_order(&self, in_use: &HashSet<String>) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = self
            .records
            .values()
            .filter(|r| !r.image.pinned && !r.image.is_used(in_use))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (a.last_used, a.first_detected, &a.image.id).cmp(&(
                b.last_used,
                b.first_detected,
                &b.image.id,
            ))
        });
        out
    }

    /// Drops the record of a removed image.
    pub fn forget(&mut self, id: &str) {
        self.records.remove(id);
    }

    pub fn get(&self, id: &str) -> Option<&ImageRecord> {
        self.records.get(id)
    }
}

/// Bytes to free to get the image filesystem's usage down to the low
/// threshold, when usage is at or above the high one (kubelet's
/// `GarbageCollect`, in whole percents as kubelet computes them).
pub fn amount_to_free(capacity: i64, available: i64, high: i32, low: i32) -> Option<i64> {
    if capacity <= 0 {
        return None;
    }
    let available = available.min(capacity);
    let usage_percent = 100 - available.saturating_mul(100) / capacity;
    (usage_percent >= i64::from(high))
        .then(|| capacity.saturating_mul(i64::from(100 - low)) / 100 - available)
}

/// The disk usage in percent (for logs).
pub fn usage_percent(capacity: i64, available: i64) -> i64 {
    if capacity <= 0 {
        return 0;
    }
    100 - available.min(capacity).saturating_mul(100) / capacity
}

/// Kubelet's `freeSpace` filter: candidates old enough to be removed for
/// space (detected at least `min_age` before `free_time`, not used since
/// `free_time`), in eviction order.
pub fn eligible_for_space(
    candidates: &[Candidate],
    free_time: Instant,
    min_age: Duration,
) -> Vec<Candidate> {
    candidates
        .iter()
        .filter(|c| c.last_used.is_none_or(|u| u < free_time))
        .filter(|c| free_time.saturating_duration_since(c.first_detected) >= min_age)
        .cloned()
        .collect()
}

/// Kubelet's `freeOldImages` split: candidates unused for longer than
/// `max_age` (to remove) and the rest. Nothing is old until the manager
/// has run for `max_age` itself (records start empty at every start).
pub fn split_old(
    candidates: Vec<Candidate>,
    free_time: Instant,
    began: Instant,
    max_age: Duration,
) -> (Vec<Candidate>, Vec<Candidate>) {
    if max_age.is_zero() || free_time.saturating_duration_since(began) <= max_age {
        return (Vec::new(), candidates);
    }
    candidates.into_iter().partition(|c| {
        c.last_used
            .is_none_or(|u| free_time.saturating_duration_since(u) > max_age)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, size: u64) -> ImageInfo {
        ImageInfo {
            id: id.to_owned(),
            repo_tags: vec![format!("reg/{id}:latest")],
            repo_digests: Vec::new(),
            size,
            pinned: false,
        }
    }

    fn refs(r: &[&str]) -> HashSet<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    fn ids(c: &[Candidate]) -> Vec<&str> {
        c.iter().map(|c| c.image.id.as_str()).collect()
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn eviction_order_is_least_recently_used_then_first_detected() {
        let t0 = Instant::now();
        let mut r = ImageRecords::default();
        r.detect(t0, &[image("a", 1), image("b", 1)], &refs(&["a"]));
        r.detect(
            t0 + S,
            &[image("a", 1), image("b", 1), image("c", 1)],
            &refs(&["b"]),
        );
        r.detect(
            t0 + 2 * S,
            &[image("a", 1), image("b", 1), image("c", 1), image("d", 1)],
            &refs(&[]),
        );
        // Never used (c then d by detection), then a (used at t0), then b (t0+1).
        assert_eq!(ids(&r.eviction_order(&refs(&[]))), ["c", "d", "a", "b"]);
        assert_eq!(r.get("a").unwrap().first_detected, t0);
        assert_eq!(r.get("b").unwrap().last_used, Some(t0 + S));
    }

    #[test]
    fn images_in_use_by_id_tag_or_digest_and_pinned_ones_are_never_candidates() {
        let t0 = Instant::now();
        let mut pinned = image("pause", 1);
        pinned.pinned = true;
        let mut digested = image("d", 1);
        digested.repo_digests = vec!["reg/d@sha256:1".to_owned()];
        let all = [
            image("id", 1),
            image("tag", 1),
            digested,
            pinned,
            image("free", 1),
        ];
        let in_use = refs(&["id", "reg/tag:latest", "reg/d@sha256:1"]);
        let mut r = ImageRecords::default();
        r.detect(t0, &all, &in_use);
        assert_eq!(ids(&r.eviction_order(&in_use)), ["free"]);
    }

    #[test]
    fn images_gone_from_the_runtime_are_forgotten() {
        let t0 = Instant::now();
        let mut r = ImageRecords::default();
        r.detect(t0, &[image("a", 1), image("b", 1)], &refs(&[]));
        r.detect(t0 + S, &[image("b", 1)], &refs(&[]));
        assert!(r.get("a").is_none());
        // Seen again later: detected anew.
        r.detect(t0 + 2 * S, &[image("a", 1), image("b", 1)], &refs(&[]));
        assert_eq!(r.get("a").unwrap().first_detected, t0 + 2 * S);
    }

    #[test]
    fn amount_to_free_reaches_the_low_threshold_from_at_or_above_the_high_one() {
        // 100 bytes, 10 free: 90% used, over 85: free down to 80% used.
        assert_eq!(amount_to_free(100, 10, 85, 80), Some(10));
        assert_eq!(amount_to_free(100, 15, 85, 80), Some(5));
        assert_eq!(amount_to_free(100, 16, 85, 80), None);
        assert_eq!(amount_to_free(1000, 990, 1, 0), Some(10));
        assert_eq!(amount_to_free(0, 0, 85, 80), None);
        // More available than capacity counts as all free.
        assert_eq!(amount_to_free(100, 200, 0, 0), Some(0));
        assert_eq!(usage_percent(100, 10), 90);
    }

    #[test]
    fn images_younger_than_the_minimum_age_are_not_removed_for_space() {
        let t0 = Instant::now();
        let mut r = ImageRecords::default();
        r.detect(t0, &[image("old", 1)], &refs(&[]));
        r.detect(t0 + 60 * S, &[image("old", 1), image("new", 1)], &refs(&[]));
        let c = r.eviction_order(&refs(&[]));
        let now = t0 + 120 * S;
        assert_eq!(ids(&eligible_for_space(&c, now, 120 * S)), ["old"]);
        assert_eq!(
            ids(&eligible_for_space(&c, now, Duration::ZERO)),
            ["old", "new"]
        );
    }

    #[test]
    fn images_unused_past_the_maximum_age_are_split_off_once_the_manager_ran_that_long() {
        let t0 = Instant::now();
        let mut r = ImageRecords::default();
        r.detect(t0, &[image("never", 1), image("used", 1)], &refs(&["used"]));
        r.detect(
            t0 + 50 * S,
            &[image("never", 1), image("used", 1), image("recent", 1)],
            &refs(&[]),
        );
        r.detect(
            t0 + 90 * S,
            &[image("never", 1), image("used", 1), image("recent", 1)],
            &refs(&["recent"]),
        );
        let c = r.eviction_order(&refs(&[]));
        let max = 60 * S;
        let (old, rest) = split_old(c.clone(), t0 + 30 * S, t0, max);
        assert!(old.is_empty());
        assert_eq!(rest.len(), 3);
        let (old, rest) = split_old(c.clone(), t0 + 100 * S, t0, max);
        assert_eq!(ids(&old), ["never", "used"]);
        assert_eq!(ids(&rest), ["recent"]);
        let (old, _) = split_old(c, t0 + 100 * S, t0, Duration::ZERO);
        assert!(old.is_empty());
    }
}
