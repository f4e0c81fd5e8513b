//! The image GC round and loop, as kubelet's `realImageGCManager`
//! (pkg/kubelet/images/image_gc_manager.go) driven by
//! `StartGarbageCollection`: every period detect the images and the ones
//! containers use (`records`), remove those unused past the maximum age,
//! then, when the image filesystem is used at or above the high
//! threshold, remove unused images least recently used first until usage
//! is down to the low threshold. The runtime is reached through
//! `ImageRuntime` (CRI in `cri`); failures become Node events (`events`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::events::{
    FREE_DISK_SPACE_FAILED, GcCounts, GcReason, IMAGE_GC_FAILED, INVALID_DISK_CAPACITY, NodeEvents,
};
use super::records::{
    Candidate, ImageInfo, ImageRecords, amount_to_free, eligible_for_space, split_old,
    usage_percent,
};
use crate::config::ImageGcPolicy;

/// Size and free space of the image filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsCapacity {
    pub capacity: i64,
    pub available: i64,
}

/// What the manager needs from the container runtime.
#[async_trait::async_trait]
pub trait ImageRuntime: Send + Sync {
    async fn list_images(&self) -> Result<Vec<ImageInfo>, ImageGcError>;
    /// The image references (ids, tags, digests) of every container the
    /// runtime has, running or exited.
    async fn images_in_use(&self) -> Result<HashSet<String>, ImageGcError>;
    /// Capacity and free space of the file system images are stored on.
    async fn image_fs(&self) -> Result<FsCapacity, ImageGcError>;
    async fn remove_image(&self, id: &str) -> Result<(), ImageGcError>;
}

/// Why a GC round failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    #[error("failed to list images")]
    ListImages(#[source] tonic::Status),
    #[error("failed to list containers")]
    ListContainers(#[source] tonic::Status),
    #[error("failed to get image filesystem info")]
    ImageFsInfo(#[source] tonic::Status),
    #[error("the runtime reported no image filesystem")]
    NoImageFilesystem,
    #[error("get filesystem info: failed to statfs {0}")]
    Statfs(PathBuf),
    #[error("failed to remove image {id}")]
    RemoveImage {
        id: String,
        #[source]
        source: tonic::Status,
    },
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
    /// Kubelet's words exactly (capitalised, with a period): users read
    /// them as the `FreeDiskSpaceFailed` event's message.
    #[error(
        "Failed to garbage collect required amount of images. Attempted to free {to_free} bytes, but only found {freed} bytes eligible to free."
    )]
    FreeDiskSpace { to_free: i64, freed: i64 },
    #[error(
        "wanted to free {to_free} bytes, but freed {freed} bytes space with errors in image deletion: {errors}"
    )]
    RemoveErrors {
        to_free: i64,
        freed: i64,
        errors: String,
    },
}

/// An error and its causes, `: `-joined as Go's wrapped errors print.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out += ": ";
        out += &s.to_string();
        source = s.source();
    }
    out
}

/// Errors as apimachinery's `NewAggregate` prints them.
fn aggregate(errors: &[ImageGcError]) -> String {
    let all: Vec<String> = errors.iter().map(|e| error_chain(e)).collect();
    match all.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", all.join(", ")),
    }
}

/// The manager's state between rounds.
pub struct Manager<R> {
    runtime: R,
    policy: ImageGcPolicy,
    records: ImageRecords,
    /// When GC began (kubelet's `beganGC`): the maximum age counts from it.
    began: Instant,
    counts: Arc<GcCounts>,
}

impl<R: ImageRuntime> Manager<R> {
    pub fn new(runtime: R, policy: ImageGcPolicy, counts: Arc<GcCounts>, began: Instant) -> Self {
        Self {
            runtime,
            policy,
            records: ImageRecords::default(),
            began,
            counts,
        }
    }

    pub fn policy(&self) -> &ImageGcPolicy {
        &self.policy
    }

    /// The runtime the images are on.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// One round at `now` (kubelet's `GarbageCollect`); Warning events go
    /// to `events`.
    pub async fn garbage_collect(
        &mut self,
        now: Instant,
        events: &dyn NodeEvents,
    ) -> Result<(), ImageGcError> {
        let images = self.runtime.list_images().await?;
        let in_use = self.runtime.images_in_use().await?;
        self.records.detect(now, &images, &in_use);
        let candidates = self.records.eviction_order(&in_use);
        let candidates = self.free_old_images(candidates, now).await;

        let fs = self.runtime.image_fs().await?;
        if fs.available > fs.capacity {
            tracing::info!(
                available = fs.available,
                capacity = fs.capacity,
                "availability is larger than capacity"
            );
        }
        if fs.capacity <= 0 {
            let err = ImageGcError::InvalidCapacity;
            events.warning(INVALID_DISK_CAPACITY, &err.to_string());
            return Err(err);
        }
        let high = self.policy.high_threshold_percent;
        let low = self.policy.low_threshold_percent;
        let Some(to_free) = amount_to_free(fs.capacity, fs.available, high, low) else {
            return Ok(());
        };
        tracing::info!(
            usage = usage_percent(fs.capacity, fs.available),
            high_threshold = high,
            amount_to_free = to_free,
            low_threshold = low,
            "disk usage on image filesystem is over the high threshold, trying to free bytes down to the low threshold"
        );
        let freed = self.free_space(to_free, now, &candidates).await?;
        if freed < to_free {
            let err = ImageGcError::FreeDiskSpace { to_free, freed };
            events.warning(FREE_DISK_SPACE_FAILED, &err.to_string());
            return Err(err);
        }
        Ok(())
    }

    /// Removes every unused image old enough, whatever the usage (kubelet's
    /// `DeleteUnusedImages`, the eviction manager's way to reclaim disk
    /// before evicting pods).
    pub async fn delete_unused_images(&mut self, now: Instant) -> Result<i64, ImageGcError> {
        tracing::info!("attempting to delete unused images");
        let images = self.runtime.list_images().await?;
        let in_use = self.runtime.images_in_use().await?;
        self.records.detect(now, &images, &in_use);
        let candidates = self.records.eviction_order(&in_use);
        self.free_space(i64::MAX, now, &candidates).await
    }

    /// Removes the images unused past the maximum age; returns the others
    /// (and those that failed to go).
    async fn free_old_images(
        &mut self,
        candidates: Vec<Candidate>,
        now: Instant,
    ) -> Vec<Candidate> {
        let (old, mut remaining) = split_old(candidates, now, self.began, self.policy.max_age);
        let mut errors = Vec::new();
        for image in old {
            match self.free_image(&image, GcReason::Age).await {
                Ok(()) => {}
                Err(err) => {
                    errors.push(err);
                    remaining.push(image);
                }
            }
        }
        if !errors.is_empty() {
            tracing::info!(error = %aggregate(&errors), "failed to garbage collect images");
        }
        remaining
    }

    /// Removes eligible images in order until `to_free` bytes are freed;
    /// returns the bytes freed.
    async fn free_space(
        &mut self,
        to_free: i64,
        now: Instant,
        candidates: &[Candidate],
    ) -> Result<i64, ImageGcError> {
        let mut freed = 0i64;
        let mut errors = Vec::new();
        for image in eligible_for_space(candidates, now, self.policy.min_age) {
            if let Err(err) = self.free_image(&image, GcReason::Space).await {
                errors.push(err);
                continue;
            }
            freed = freed.saturating_add(i64::try_from(image.image.size).unwrap_or(i64::MAX));
            if freed >= to_free {
                break;
            }
        }
        if !errors.is_empty() {
            return Err(ImageGcError::RemoveErrors {
                to_free,
                freed,
                errors: aggregate(&errors),
            });
        }
        Ok(freed)
    }

    async fn free_image(
        &mut self,
        image: &Candidate,
        reason: GcReason,
    ) -> Result<(), ImageGcError> {
        let i = &image.image;
        tracing::info!(
            image_id = %i.id,
            tags = ?i.repo_tags,
            size = i.size,
            reason = reason.as_str(),
            "removing image to free bytes"
        );
        self.runtime.remove_image(&i.id).await?;
        self.records.forget(&i.id);
        self.counts.count(reason);
        Ok(())
    }
}

/// Runs a GC round every period until `shutdown` (none at all when the
/// high threshold is 100). A failure is logged; repeated ones also become
/// an `ImageGCFailed` event, as kubelet reports them.
pub async fn run<R: ImageRuntime>(
    manager: Arc<tokio::sync::Mutex<Manager<R>>>,
    events: Arc<dyn NodeEvents>,
    shutdown: CancellationToken,
) {
    let policy = *manager.lock().await.policy();
    if !policy.enabled() {
        tracing::info!("image garbage collection disabled: --image-gc-high-threshold is 100");
        return;
    }
    let mut tick = tokio::time::interval(policy.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev_failed = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let round = manager
            .lock()
            .await
            .garbage_collect(Instant::now(), events.as_ref())
            .await;
        match round {
            Ok(()) => {
                if prev_failed {
                    tracing::info!("image garbage collection succeeded");
                } else {
                    tracing::debug!("image garbage collection succeeded");
                }
                prev_failed = false;
            }
            Err(err) => {
                let message = error_chain(&err);
                if prev_failed {
                    tracing::error!(error = %message, "image garbage collection failed multiple times in a row");
                    events.warning(IMAGE_GC_FAILED, &message);
                } else {
                    tracing::error!(error = %message, "image garbage collection failed once, stats initialization may not have completed yet");
                }
                prev_failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// A runtime with a fixed image list, containers' image references and
    /// file system; removals free the image's size.
    #[derive(Default)]
    struct FakeRuntime {
        images: Mutex<Vec<ImageInfo>>,
        in_use: Mutex<HashSet<String>>,
        capacity: i64,
        available: Mutex<i64>,
        fail_remove: HashSet<String>,
        removed: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl ImageRuntime for &FakeRuntime {
        async fn list_images(&self) -> Result<Vec<ImageInfo>, ImageGcError> {
            Ok(self.images.lock().unwrap().clone())
        }
        async fn images_in_use(&self) -> Result<HashSet<String>, ImageGcError> {
            Ok(self.in_use.lock().unwrap().clone())
        }
        async fn image_fs(&self) -> Result<FsCapacity, ImageGcError> {
            Ok(FsCapacity {
                capacity: self.capacity,
                available: *self.available.lock().unwrap(),
            })
        }
        async fn remove_image(&self, id: &str) -> Result<(), ImageGcError> {
            if self.fail_remove.contains(id) {
                return Err(ImageGcError::RemoveImage {
                    id: id.to_owned(),
                    source: tonic::Status::internal("busy"),
                });
            }
            let mut images = self.images.lock().unwrap();
            let size = images.iter().find(|i| i.id == id).map_or(0, |i| i.size);
            images.retain(|i| i.id != id);
            *self.available.lock().unwrap() += i64::try_from(size).unwrap();
            self.removed.lock().unwrap().push(id.to_owned());
            Ok(())
        }
    }

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, String)>>);

    impl NodeEvents for Recorded {
        fn warning(&self, reason: &str, message: &str) {
            self.0
                .lock()
                .unwrap()
                .push((reason.to_owned(), message.to_owned()));
        }
    }

    fn image(id: &str, size: u64) -> ImageInfo {
        ImageInfo {
            id: id.to_owned(),
            size,
            ..ImageInfo::default()
        }
    }

    fn runtime(images: Vec<ImageInfo>, capacity: i64, available: i64) -> FakeRuntime {
        FakeRuntime {
            images: Mutex::new(images),
            capacity,
            available: Mutex::new(available),
            ..FakeRuntime::default()
        }
    }

    fn policy(min_age: Duration, max_age: Duration) -> ImageGcPolicy {
        ImageGcPolicy {
            min_age,
            max_age,
            ..ImageGcPolicy::default()
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn over_the_high_threshold_unused_images_go_lru_first_until_the_low_one() {
        // 1000 bytes, 100 free: 90% used; down to 80% frees 100 bytes.
        let rt = runtime(
            vec![
                image("used", 500),
                image("a", 60),
                image("b", 60),
                image("c", 60),
            ],
            1000,
            100,
        );
        *rt.in_use.lock().unwrap() = HashSet::from(["used".to_owned(), "b".to_owned()]);
        let t0 = Instant::now();
        let mut m = Manager::new(
            &rt,
            policy(Duration::ZERO, Duration::ZERO),
            Arc::default(),
            t0,
        );
        let events = Recorded::default();
        m.garbage_collect(t0, &events).await.unwrap();
        assert_eq!(*rt.removed.lock().unwrap(), ["a", "c"]);
        assert_eq!(*rt.available.lock().unwrap(), 220);
        assert!(events.0.lock().unwrap().is_empty());
        assert_eq!(m.counts.get(GcReason::Space), 2);
    }

    #[tokio::test]
    async fn least_recently_used_images_go_before_more_recent_ones() {
        let rt = runtime(
            vec![image("a", 60), image("b", 60), image("c", 60)],
            1000,
            900,
        );
        let t0 = Instant::now();
        let mut m = Manager::new(
            &rt,
            policy(Duration::ZERO, Duration::ZERO),
            Arc::default(),
            t0,
        );
        let events = Recorded::default();
        // Under the threshold: rounds only note which images are in use.
        *rt.in_use.lock().unwrap() = HashSet::from(["b".to_owned()]);
        m.garbage_collect(t0, &events).await.unwrap();
        *rt.in_use.lock().unwrap() = HashSet::from(["a".to_owned()]);
        m.garbage_collect(t0 + S, &events).await.unwrap();
        // Over it with nothing in use: c (never used), then b (used before a).
        rt.in_use.lock().unwrap().clear();
        *rt.available.lock().unwrap() = 100;
        m.garbage_collect(t0 + 2 * S, &events).await.unwrap();
        assert_eq!(*rt.removed.lock().unwrap(), ["c", "b"]);
    }

    #[tokio::test]
    async fn young_and_pinned_images_stay_and_the_shortfall_is_an_event() {
        let mut pinned = image("pause", 100);
        pinned.pinned = true;
        let rt = runtime(
            vec![image("old", 30), image("young", 100), pinned],
            1000,
            100,
        );
        let t0 = Instant::now();
        let mut m = Manager::new(&rt, policy(120 * S, Duration::ZERO), Arc::default(), t0);
        let events = Recorded::default();
        // Detected at t0; "young" appears later.
        rt.images.lock().unwrap().retain(|i| i.id != "young");
        m.garbage_collect(t0, &events).await.unwrap_err();
        assert!(
            rt.removed.lock().unwrap().is_empty(),
            "nothing is old enough yet"
        );
        rt.images.lock().unwrap().push(image("young", 100));
        let err = m.garbage_collect(t0 + 150 * S, &events).await.unwrap_err();
        assert_eq!(*rt.removed.lock().unwrap(), ["old"]);
        let message = "Failed to garbage collect required amount of images. Attempted to free 100 bytes, but only found 30 bytes eligible to free.";
        assert_eq!(err.to_string(), message);
        let recorded = events.0.lock().unwrap();
        assert_eq!(
            recorded.last().unwrap(),
            &(FREE_DISK_SPACE_FAILED.to_owned(), message.to_owned())
        );
    }

    #[tokio::test]
    async fn under_the_high_threshold_nothing_is_removed() {
        let rt = runtime(vec![image("a", 60)], 1000, 200);
        let t0 = Instant::now();
        let mut m = Manager::new(
            &rt,
            policy(Duration::ZERO, Duration::ZERO),
            Arc::default(),
            t0,
        );
        m.garbage_collect(t0, &Recorded::default()).await.unwrap();
        assert!(rt.removed.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn images_unused_past_the_maximum_age_go_whatever_the_usage() {
        let rt = runtime(vec![image("a", 60), image("b", 60)], 1000, 900);
        *rt.in_use.lock().unwrap() = HashSet::from(["b".to_owned()]);
        let t0 = Instant::now();
        let counts = Arc::new(GcCounts::default());
        let mut m = Manager::new(&rt, policy(S, 60 * S), counts.clone(), t0);
        let events = Recorded::default();
        m.garbage_collect(t0, &events).await.unwrap();
        m.garbage_collect(t0 + 30 * S, &events).await.unwrap();
        rt.in_use.lock().unwrap().clear();
        assert!(rt.removed.lock().unwrap().is_empty());
        m.garbage_collect(t0 + 61 * S, &events).await.unwrap();
        assert_eq!(*rt.removed.lock().unwrap(), ["a"]);
        m.garbage_collect(t0 + 91 * S, &events).await.unwrap();
        assert_eq!(*rt.removed.lock().unwrap(), ["a", "b"]);
        assert_eq!(counts.get(GcReason::Age), 2);
    }

    #[tokio::test]
    async fn removal_errors_are_reported_after_trying_the_others() {
        let mut rt = runtime(vec![image("a", 60), image("b", 60)], 1000, 100);
        rt.fail_remove.insert("a".to_owned());
        let t0 = Instant::now();
        let mut m = Manager::new(
            &rt,
            policy(Duration::ZERO, Duration::ZERO),
            Arc::default(),
            t0,
        );
        let err = m
            .garbage_collect(t0, &Recorded::default())
            .await
            .unwrap_err();
        assert_eq!(*rt.removed.lock().unwrap(), ["b"]);
        let message = err.to_string();
        assert!(
            message.starts_with("wanted to free 100 bytes, but freed 60 bytes space with errors in image deletion: failed to remove image a: "),
            "{message}"
        );
    }

    #[tokio::test]
    async fn deleting_unused_images_removes_all_old_enough_ones_whatever_the_usage() {
        let rt = runtime(
            vec![image("a", 60), image("b", 60), image("used", 60)],
            1000,
            900,
        );
        *rt.in_use.lock().unwrap() = HashSet::from(["used".to_owned()]);
        let t0 = Instant::now();
        let mut m = Manager::new(&rt, policy(10 * S, Duration::ZERO), Arc::default(), t0);
        assert_eq!(m.delete_unused_images(t0).await.unwrap(), 0);
        assert_eq!(m.delete_unused_images(t0 + 10 * S).await.unwrap(), 120);
        assert_eq!(*rt.removed.lock().unwrap(), ["a", "b"]);
    }

    #[tokio::test]
    async fn zero_capacity_is_an_invalid_disk_capacity_event() {
        let rt = runtime(vec![image("a", 60)], 0, 0);
        let t0 = Instant::now();
        let mut m = Manager::new(
            &rt,
            policy(Duration::ZERO, Duration::ZERO),
            Arc::default(),
            t0,
        );
        let events = Recorded::default();
        let err = m.garbage_collect(t0, &events).await.unwrap_err();
        assert!(matches!(err, ImageGcError::InvalidCapacity));
        assert_eq!(events.0.lock().unwrap()[0].0, INVALID_DISK_CAPACITY);
    }
}
