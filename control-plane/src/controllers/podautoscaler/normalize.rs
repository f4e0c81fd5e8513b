//! From the metrics' proposal to the replica count applied (upstream
//! `normalizeDesiredReplicas` and `normalizeDesiredReplicasWithBehaviors`
//! in pkg/controller/podautoscaler/horizontal.go): the stabilization window
//! over recent recommendations, then the scale-rate limits (the fixed
//! doubling rule, or the `behavior` policies) and min/maxReplicas, with the
//! AbleToScale and ScalingLimited reasons they produce. No I/O.

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// How the proposal was adjusted, and the condition reasons saying so.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub replicas: i32,
    /// The AbleToScale reason and message (always status True).
    pub able: (&'static str, &'static str),
    /// Whether ScalingLimited is True, its reason and message.
    pub limited: (bool, &'static str, &'static str),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PolicyType {
    Pods,
    Percent,
}

/// One direction's rules with upstream's defaults filled in
/// (`GenerateHPAScaleUpRules` / `GenerateHPAScaleDownRules`).
#[derive(Debug, Clone, PartialEq)]
struct Rules {
    window: SignedDuration,
    select: Select,
    /// `(type, value, periodSeconds)`.
    policies: Vec<(PolicyType, i32, i32)>,
}

impl Rules {
    fn from_spec(
        spec: Option<&HPAScalingRules>,
        default_window: SignedDuration,
        default_policies: &[(PolicyType, i32, i32)],
    ) -> Self {
        let window = spec
            .and_then(|s| s.stabilization_window_seconds)
            .map_or(default_window, |s| SignedDuration::from_secs(i64::from(s)));
        let select = match spec.and_then(|s| s.select_policy.as_deref()) {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        };
        let policies: Vec<(PolicyType, i32, i32)> = spec
            .and_then(|s| s.policies.as_ref())
            .into_iter()
            .flatten()
            .map(|p| {
                let ty = if p.type_ == "Pods" {
                    PolicyType::Pods
                } else {
                    PolicyType::Percent
                };
                (ty, p.value, p.period_seconds)
            })
            .collect();
        Self {
            window,
            select,
            policies: if policies.is_empty() {
                default_policies.to_vec()
            } else {
                policies
            },
        }
    }
}

/// Both directions of a `behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    up: Rules,
    down: Rules,
}

impl Behavior {
    /// `downscale_window` is the controller's
    /// `--horizontal-pod-autoscaler-downscale-stabilization`, used when
    /// the scale-down rules leave the window unset.
    pub fn from_spec(
        spec: &HorizontalPodAutoscalerBehavior,
        downscale_window: SignedDuration,
    ) -> Self {
        Self {
            up: Rules::from_spec(
                spec.scale_up.as_ref(),
                SignedDuration::ZERO,
                &[(PolicyType::Pods, 4, 15), (PolicyType::Percent, 100, 15)],
            ),
            down: Rules::from_spec(
                spec.scale_down.as_ref(),
                downscale_window,
                &[(PolicyType::Percent, 100, 15)],
            ),
        }
    }

    /// The longest policy period: older scale events no longer matter.
    fn longest_period(&self) -> SignedDuration {
        let secs = self
            .up
            .policies
            .iter()
            .chain(&self.down.policies)
            .map(|p| p.2)
            .max()
            .unwrap_or(0);
        SignedDuration::from_secs(i64::from(secs))
    }
}

#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    change: i32,
    at: Timestamp,
}

/// What the controller remembers of one HPA between syncs: recent
/// unstabilized recommendations and recent scale events.
#[derive(Debug, Default, Clone)]
pub struct History {
    recommendations: Vec<(i32, Timestamp)>,
    scale_up: Vec<ScaleEvent>,
    scale_down: Vec<ScaleEvent>,
}

const ABLE_READY: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const DOWN_STABILIZED: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const UP_STABILIZED: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const WITHIN_RANGE: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

impl History {
    /// The first sight of an HPA counts its current size as a
    /// recommendation (`recordInitialRecommendation`).
    pub fn record_initial(&mut self, current: i32, now: Timestamp) {
        if self.recommendations.is_empty() {
            self.recommendations.push((current, now));
        }
    }

    /// Records `value`, reusing the slot of a sample older than `cutoff`.
    fn record(&mut self, value: i32, cutoff: Timestamp, now: Timestamp) {
        match self.recommendations.iter_mut().find(|(_, at)| *at < cutoff) {
            Some(slot) => *slot = (value, now),
            None => self.recommendations.push((value, now)),
        }
    }

    /// Without `behavior`: the highest recommendation of the downscale
    /// window, then at most doubling (at least 4) and min/max.
    pub fn normalize(
        &mut self,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        window: SignedDuration,
        now: Timestamp,
    ) -> Normalized {
        let cutoff = now - window;
        let stabilized = self
            .recommendations
            .iter()
            .filter(|(_, at)| *at >= cutoff)
            .map(|(r, _)| *r)
            .fold(desired, i32::max);
        self.record(desired, cutoff, now);
        let able = if stabilized == desired {
            ABLE_READY
        } else {
            DOWN_STABILIZED
        };
        let scale_up_limit = current.saturating_mul(2).max(4);
        let (upper, upper_reason) = if max > scale_up_limit {
            (scale_up_limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        let (replicas, reason) = if stabilized < min {
            (min, TOO_FEW)
        } else if stabilized > upper {
            (upper, upper_reason)
        } else {
            (stabilized, WITHIN_RANGE)
        };
        Normalized {
            replicas,
            able,
            limited: (replicas != stabilized, reason.0, reason.1),
        }
    }

    /// With `behavior`: both stabilization windows, then the policies'
    /// rate limits and min/max.
    pub fn normalize_with_behavior(
        &mut self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: Timestamp,
    ) -> Normalized {
        let up_cutoff = now - behavior.up.window;
        let down_cutoff = now - behavior.down.window;
        let (mut up, mut down) = (desired, desired);
        for (r, at) in &self.recommendations {
            if *at > up_cutoff {
                up = up.min(*r);
            }
            if *at > down_cutoff {
                down = down.max(*r);
            }
        }
        let stabilized = current.max(up).min(down);
        let oldest = if up_cutoff < down_cutoff {
            up_cutoff
        } else {
            down_cutoff
        };
        self.record(desired, oldest, now);
        let able = if stabilized == desired {
            ABLE_READY
        } else if desired >= current {
            UP_STABILIZED
        } else {
            DOWN_STABILIZED
        };
        let (replicas, reason) = self.rate_limit(behavior, current, stabilized, min, max, now);
        Normalized {
            replicas,
            able,
            limited: (replicas != stabilized, reason.0, reason.1),
        }
    }

    /// `convertDesiredReplicasWithBehaviorRate`.
    fn rate_limit(
        &self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: Timestamp,
    ) -> (i32, (&'static str, &'static str)) {
        if desired > current {
            let limit = self
                .scale_limit(&behavior.up, current, true, now)
                .max(current);
            let (upper, reason) = if max > limit {
                (limit, UP_LIMIT)
            } else {
                (max, TOO_MANY)
            };
            if desired > upper {
                return (upper, reason);
            }
        } else if desired < current {
            let limit = self
                .scale_limit(&behavior.down, current, false, now)
                .min(current);
            let (lower, reason) = if min < limit {
                (limit, DOWN_LIMIT)
            } else {
                (min, TOO_FEW)
            };
            if desired < lower {
                return (lower, reason);
            }
        }
        (desired, WITHIN_RANGE)
    }

    /// The furthest the policies allow from the size at each policy
    /// period's start (`calculateScaleUpLimitWithScalingRules`,
    /// `calculateScaleDownLimitWithBehaviors`).
    fn scale_limit(&self, rules: &Rules, current: i32, up: bool, now: Timestamp) -> i32 {
        if rules.select == Select::Disabled {
            return current;
        }
        let changed = |events: &[ScaleEvent], period: i32| -> i32 {
            let cutoff = now - SignedDuration::from_secs(i64::from(period));
            events
                .iter()
                .filter(|e| e.at > cutoff)
                .map(|e| e.change)
                .sum()
        };
        let proposals = rules.policies.iter().map(|&(ty, value, period)| {
            let start =
                current - changed(&self.scale_up, period) + changed(&self.scale_down, period);
            #[allow(clippy::cast_possible_truncation)] // bounded by i32 inputs
            match (ty, up) {
                (PolicyType::Pods, true) => start.saturating_add(value),
                (PolicyType::Pods, false) => start.saturating_sub(value),
                (PolicyType::Percent, true) => {
                    (f64::from(start) * (1.0 + f64::from(value) / 100.0)).ceil() as i32
                }
                (PolicyType::Percent, false) => {
                    (f64::from(start) * (1.0 - f64::from(value) / 100.0)) as i32
                }
            }
        });
        // Max picks the biggest change: the highest limit up, the lowest down.
        match (rules.select, up) {
            (Select::Max, true) | (Select::Min, false) => proposals.max().unwrap_or(current),
            _ => proposals.min().unwrap_or(current),
        }
    }

    /// Remembers a rescale for the policies' periods (`storeScaleEvent`).
    pub fn record_scale(&mut self, behavior: &Behavior, from: i32, to: i32, now: Timestamp) {
        let cutoff = now - behavior.longest_period();
        self.scale_up.retain(|e| e.at > cutoff);
        self.scale_down.retain(|e| e.at > cutoff);
        let event = ScaleEvent {
            change: (to - from).abs(),
            at: now,
        };
        if to > from {
            self.scale_up.push(event);
        } else if to < from {
            self.scale_down.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + secs).unwrap()
    }

    const WINDOW: SignedDuration = SignedDuration::from_secs(300);

    #[test]
    fn min_and_max_bound_the_proposal() {
        let mut h = History::default();
        let n = h.normalize(3, 10, 1, 5, WINDOW, t(0));
        assert_eq!(n.replicas, 5);
        assert!(n.limited.0);
        assert_eq!(n.limited.1, "TooManyReplicas");
        let mut h = History::default();
        let n = h.normalize(3, 0, 2, 5, WINDOW, t(0));
        assert_eq!((n.replicas, n.limited.1), (2, "TooFewReplicas"));
        let mut h = History::default();
        let n = h.normalize(3, 4, 1, 5, WINDOW, t(0));
        assert_eq!(
            (n.replicas, n.limited, n.able.0),
            (
                4,
                (
                    false,
                    "DesiredWithinRange",
                    "the desired count is within the acceptable range"
                ),
                "ReadyForNewScale"
            )
        );
    }

    #[test]
    fn scale_up_is_at_most_doubling_without_behavior() {
        let mut h = History::default();
        let n = h.normalize(3, 20, 1, 50, WINDOW, t(0));
        assert_eq!((n.replicas, n.limited.1), (6, "ScaleUpLimit"));
        let n = h.normalize(1, 20, 1, 50, WINDOW, t(0));
        assert_eq!(n.replicas, 4);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let mut h = History::default();
        h.record_initial(4, t(0));
        let n = h.normalize(4, 1, 1, 10, WINDOW, t(15));
        assert_eq!(n.replicas, 4);
        assert_eq!(n.able.0, "ScaleDownStabilized");
        let n = h.normalize(4, 1, 1, 10, WINDOW, t(301));
        assert_eq!((n.replicas, n.able.0), (1, "ReadyForNewScale"));
    }

    fn behavior(up: Option<HPAScalingRules>, down: Option<HPAScalingRules>) -> Behavior {
        Behavior::from_spec(
            &HorizontalPodAutoscalerBehavior {
                scale_up: up,
                scale_down: down,
            },
            WINDOW,
        )
    }

    fn rules(window: i32, select: &str, policies: &[(&str, i32, i32)]) -> HPAScalingRules {
        HPAScalingRules {
            stabilization_window_seconds: Some(window),
            select_policy: Some(select.into()),
            policies: Some(
                policies
                    .iter()
                    .map(|(ty, v, p)| HPAScalingPolicy {
                        type_: (*ty).into(),
                        value: *v,
                        period_seconds: *p,
                    })
                    .collect(),
            ),
            tolerance: None,
        }
    }

    #[test]
    fn default_behavior_adds_four_pods_or_doubles_whichever_is_more() {
        let b = behavior(None, None);
        let mut h = History::default();
        let n = h.normalize_with_behavior(&b, 2, 20, 1, 100, t(0));
        assert_eq!((n.replicas, n.limited.1), (6, "ScaleUpLimit"));
        let n = h.normalize_with_behavior(&b, 10, 40, 1, 100, t(0));
        assert_eq!(n.replicas, 20);
    }

    #[test]
    fn scale_events_in_the_period_count_against_the_policy() {
        let b = behavior(Some(rules(0, "Max", &[("Pods", 2, 60)])), None);
        let mut h = History::default();
        let n = h.normalize_with_behavior(&b, 2, 10, 1, 100, t(0));
        assert_eq!(n.replicas, 4);
        h.record_scale(&b, 2, 4, t(0));
        // Still in the 60 s period: the period started at 2, so 4 is the limit.
        let n = h.normalize_with_behavior(&b, 4, 10, 1, 100, t(30));
        assert_eq!((n.replicas, n.limited.1), (4, "ScaleUpLimit"));
        let n = h.normalize_with_behavior(&b, 4, 10, 1, 100, t(61));
        assert_eq!(n.replicas, 6);
    }

    #[test]
    fn min_select_policy_takes_the_smallest_change() {
        let b = behavior(
            None,
            Some(rules(0, "Min", &[("Pods", 1, 60), ("Percent", 50, 60)])),
        );
        let mut h = History::default();
        let n = h.normalize_with_behavior(&b, 10, 1, 1, 100, t(0));
        assert_eq!((n.replicas, n.limited.1), (9, "ScaleDownLimit"));
        let b = behavior(
            None,
            Some(rules(0, "Max", &[("Pods", 1, 60), ("Percent", 50, 60)])),
        );
        let n = History::default().normalize_with_behavior(&b, 10, 1, 1, 100, t(0));
        assert_eq!(n.replicas, 5);
    }

    #[test]
    fn disabled_select_policy_keeps_the_size() {
        let b = behavior(Some(rules(0, "Disabled", &[])), None);
        let n = History::default().normalize_with_behavior(&b, 3, 8, 1, 100, t(0));
        assert_eq!(n.replicas, 3);
    }

    #[test]
    fn scale_up_stabilization_applies_the_lowest_recent_recommendation() {
        let b = behavior(Some(rules(60, "Max", &[("Percent", 100, 15)])), None);
        let mut h = History::default();
        h.record_initial(2, t(0));
        let n = h.normalize_with_behavior(&b, 2, 4, 1, 100, t(10));
        assert_eq!((n.replicas, n.able.0), (2, "ScaleUpStabilized"));
        let n = h.normalize_with_behavior(&b, 2, 4, 1, 100, t(71));
        assert_eq!(n.replicas, 4);
    }

    #[test]
    fn behavior_scale_down_uses_the_controller_window_when_unset() {
        let b = behavior(None, None);
        let mut h = History::default();
        h.record_initial(5, t(0));
        let n = h.normalize_with_behavior(&b, 5, 1, 1, 10, t(100));
        assert_eq!((n.replicas, n.able.0), (5, "ScaleDownStabilized"));
        let n = h.normalize_with_behavior(&b, 5, 1, 1, 10, t(400));
        assert_eq!(n.replicas, 1);
    }
}
