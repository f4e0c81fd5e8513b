//! Image garbage collection settings (kubelet's `ImageGCPolicy`) from
//! `--image-gc-high-threshold`, `--image-gc-low-threshold`,
//! `--minimum-image-ttl-duration` and `--image-maximum-gc-age`, validated
//! as kubelet's `ValidateKubeletConfiguration`; the image GC manager
//! (`crate::image_gc`) acts on them.

use std::time::Duration;

use super::AgentFlags;
use super::parse::parse_go_duration;
use crate::pod_worker::restart_backoff::go_duration;

/// When and how much the image GC manager removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Disk usage percent at or above which images are removed; 100
    /// disables image GC altogether (as kubelet).
    pub high_threshold_percent: i32,
    /// Disk usage percent a GC round frees down to.
    pub low_threshold_percent: i32,
    /// Unused images younger than this are kept.
    pub min_age: Duration,
    /// Images unused for longer are removed whatever the usage; zero: off.
    pub max_age: Duration,
    /// How often a GC round runs (kubelet's `ImageGCPeriod`).
    pub period: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            max_age: Duration::ZERO,
            period: Duration::from_secs(300),
        }
    }
}

impl ImageGcPolicy {
    /// Whether image GC runs at all (kubelet's `StartGarbageCollection`
    /// starts none with a high threshold of 100).
    pub fn enabled(&self) -> bool {
        self.high_threshold_percent != 100
    }
}

/// Why the image GC flags were rejected; messages are kubelet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageGcConfigError {
    #[error(
        "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) {0} must be between 0 and 100, inclusive"
    )]
    HighThreshold(i32),
    #[error(
        "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {0} must be between 0 and 100, inclusive"
    )]
    LowThreshold(i32),
    #[error(
        "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {0} must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) {1}"
    )]
    LowNotBelowHigh(i32, i32),
    #[error(
        "invalid configuration: imageMaximumGCAge {0} must be greater than imageMinimumGCAge {1}"
    )]
    MaxAgeNotAboveMin(String, String),
    #[error("invalid argument {value:?} for \"--{flag}\" flag: {reason}")]
    Duration {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

fn duration(flag: &'static str, value: &str) -> Result<Duration, ImageGcConfigError> {
    parse_go_duration(value).map_err(|reason| ImageGcConfigError::Duration {
        flag,
        value: value.to_owned(),
        reason,
    })
}

/// The validated policy from the flags.
pub fn from_flags(flags: &AgentFlags) -> Result<ImageGcPolicy, ImageGcConfigError> {
    let high = flags.image_gc_high_threshold;
    let low = flags.image_gc_low_threshold;
    if !(0..=100).contains(&high) {
        return Err(ImageGcConfigError::HighThreshold(high));
    }
    if !(0..=100).contains(&low) {
        return Err(ImageGcConfigError::LowThreshold(low));
    }
    if low >= high {
        return Err(ImageGcConfigError::LowNotBelowHigh(low, high));
    }
    let min_age = duration(
        "minimum-image-ttl-duration",
        &flags.minimum_image_ttl_duration,
    )?;
    let max_age = duration("image-maximum-gc-age", &flags.image_maximum_gc_age)?;
    if !max_age.is_zero() && max_age <= min_age {
        return Err(ImageGcConfigError::MaxAgeNotAboveMin(
            go_duration(max_age),
            go_duration(min_age),
        ));
    }
    let period = duration("image-gc-period", &flags.image_gc_period)?;
    if period.is_zero() {
        return Err(ImageGcConfigError::Duration {
            flag: "image-gc-period",
            value: flags.image_gc_period.clone(),
            reason: "must be greater than 0".to_owned(),
        });
    }
    Ok(ImageGcPolicy {
        high_threshold_percent: high,
        low_threshold_percent: low,
        min_age,
        max_age,
        period,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn policy(args: &[&str]) -> Result<ImageGcPolicy, ImageGcConfigError> {
        let mut argv = vec!["r8s-agent"];
        argv.extend_from_slice(args);
        from_flags(&AgentFlags::try_parse_from(argv).unwrap())
    }

    #[test]
    fn defaults_are_kubelets() {
        let p = policy(&[]).unwrap();
        assert_eq!(p, ImageGcPolicy::default());
        assert!(p.enabled());
    }

    #[test]
    fn flags_set_thresholds_and_ages() {
        let p = policy(&[
            "--image-gc-high-threshold=1",
            "--image-gc-low-threshold=0",
            "--minimum-image-ttl-duration=0s",
            "--image-maximum-gc-age=1h",
            "--image-gc-period=1s",
        ])
        .unwrap();
        assert_eq!(p.high_threshold_percent, 1);
        assert_eq!(p.low_threshold_percent, 0);
        assert_eq!(p.min_age, Duration::ZERO);
        assert_eq!(p.max_age, Duration::from_secs(3600));
        assert_eq!(p.period, Duration::from_secs(1));
    }

    #[test]
    fn high_threshold_of_100_disables_gc() {
        let p = policy(&["--image-gc-high-threshold", "100"]).unwrap();
        assert!(!p.enabled());
    }

    #[test]
    fn invalid_values_are_rejected_with_kubelets_words() {
        assert_eq!(
            policy(&["--image-gc-high-threshold=101"])
                .unwrap_err()
                .to_string(),
            "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) 101 must be between 0 and 100, inclusive"
        );
        assert_eq!(
            policy(&["--image-gc-low-threshold=-1"]).unwrap_err(),
            ImageGcConfigError::LowThreshold(-1)
        );
        assert_eq!(
            policy(&[
                "--image-gc-high-threshold=50",
                "--image-gc-low-threshold=50"
            ])
            .unwrap_err()
            .to_string(),
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 50 must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 50"
        );
        assert_eq!(
            policy(&["--image-maximum-gc-age=1m"])
                .unwrap_err()
                .to_string(),
            "invalid configuration: imageMaximumGCAge 1m0s must be greater than imageMinimumGCAge 2m0s"
        );
        assert!(policy(&["--minimum-image-ttl-duration=soon"]).is_err());
        assert!(policy(&["--image-gc-period=0s"]).is_err());
    }
}
