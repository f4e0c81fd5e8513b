//! Retry pacing for the node loops: one periodic driver that ticks on a tokio
//! interval, retries failures with exponential back-off, and stops on cancel.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Exponential back-off (kubelet's lease controller: 200ms doubling to 7s).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next retry; doubles up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(7))
    }
}

/// Runs `step` every `period` until `shutdown`; a failed step is retried
/// after a back-off delay instead of waiting for the next tick.
pub async fn run_periodic<F, Fut, E>(
    name: &'static str,
    shutdown: CancellationToken,
    period: Duration,
    mut backoff: Backoff,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                r = step() => r,
            };
            match result {
                Ok(()) => {
                    backoff.reset();
                    break;
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(loop_name = name, error = %err, retry_in = ?delay, "sync failed, backing off");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep_until(Instant::now() + delay) => {}
                    }
                }
            }
        }
        interval.reset();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let seq: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, [200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn failures_are_retried_and_cancel_stops_the_loop() {
        let calls = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let task = {
            let calls = calls.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(run_periodic(
                "test",
                shutdown.clone(),
                Duration::from_millis(1),
                Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
                move || {
                    let calls = calls.clone();
                    let shutdown = shutdown.clone();
                    async move {
                        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        if n == 4 {
                            shutdown.cancel();
                        }
                        if n < 3 { Err("api down") } else { Ok(()) }
                    }
                },
            ))
        };
        task.await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
