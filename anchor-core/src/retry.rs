//! Retry policies: how long to wait before the k-th retry and whether another retry is allowed.

use std::time::Duration;

use crate::duration::{parse_duration, DurationError};

/// A retry interval list that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    /// The list, or one of its comma-separated items, is empty.
    #[error(
        "interval item {index} is empty; write durations separated by commas, e.g. `1m,2m,4m`"
    )]
    EmptyItem {
        /// Zero-based position of the empty item.
        index: usize,
    },
    /// One of the items is not a duration.
    #[error("interval item {index}: {source}")]
    BadItem {
        /// Zero-based position of the bad item.
        index: usize,
        /// Why the item was rejected.
        #[source]
        source: DurationError,
    },
}

/// Parses a retry `interval`: one duration (`"30m"`) or a comma list (`"1m,2m,4m,8m"`).
///
/// ```
/// use std::time::Duration;
/// let list = anchor_core::parse_intervals("1m, 2m,4m").unwrap();
/// assert_eq!(list, vec![Duration::from_secs(60), Duration::from_secs(120), Duration::from_secs(240)]);
/// ```
pub fn parse_intervals(input: &str) -> Result<Vec<Duration>, IntervalError> {
    input
        .split(',')
        .enumerate()
        .map(|(index, item)| {
            if item.trim().is_empty() {
                return Err(IntervalError::EmptyItem { index });
            }
            parse_duration(item).map_err(|source| IntervalError::BadItem { index, source })
        })
        .collect()
}

/// When a failed task runs again.
///
/// The rules (the user guide's "Retry policies"): no policy never retries; `max_retries: N` allows at most N retries
/// (N + 1 runs); without `max_retries`, `always_retry_on_failure: true` retries until the
/// task succeeds; a policy that allows neither never retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The waits before the 1st, 2nd, ... retry; the last one repeats. Never empty.
    pub intervals: Vec<Duration>,
    /// Retry every failure (until `max_retries`, when that is set).
    pub always_retry_on_failure: bool,
    /// The most retries allowed, when bounded.
    pub max_retries: Option<u32>,
}

/// How long a task waits before running again when it asks to be retried without an
/// error event and has no retry policy.
pub const DEFAULT_RETRY_WITHOUT_EVENT_DELAY: Duration = Duration::from_secs(30);

impl RetryPolicy {
    /// A policy from a tasks.yaml-style interval list (`"30m"`, `"1m,2m,4m"`) and
    /// `always_retry_on_failure`, without `max_retries`. Parse it once (at start-up, say)
    /// and reuse it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use anchor_core::RetryPolicy;
    /// let policy = RetryPolicy::parse("1m,2m", true).unwrap();
    /// assert_eq!(policy.intervals, [Duration::from_secs(60), Duration::from_secs(120)]);
    /// assert!(RetryPolicy::parse("1m,soon", true).is_err());
    /// ```
    pub fn parse(
        intervals: &str,
        always_retry_on_failure: bool,
    ) -> Result<RetryPolicy, IntervalError> {
        Ok(RetryPolicy {
            intervals: parse_intervals(intervals)?,
            always_retry_on_failure,
            max_retries: None,
        })
    }

    /// The wait before retry number `retry` (1-based: the first retry is 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// use anchor_core::RetryPolicy;
    /// let policy = RetryPolicy {
    ///     intervals: anchor_core::parse_intervals("1m,2m").unwrap(),
    ///     always_retry_on_failure: true,
    ///     max_retries: None,
    /// };
    /// assert_eq!(policy.delay_for(1), Duration::from_secs(60));
    /// assert_eq!(policy.delay_for(2), Duration::from_secs(120));
    /// assert_eq!(policy.delay_for(7), Duration::from_secs(120));
    /// ```
    pub fn delay_for(&self, retry: u32) -> Duration {
        let index = (retry.max(1) as usize - 1).min(self.intervals.len().saturating_sub(1));
        self.intervals
            .get(index)
            .copied()
            .unwrap_or(DEFAULT_RETRY_WITHOUT_EVENT_DELAY)
    }

    /// Whether a task that has already been retried `retries_done` times may be retried again.
    pub fn allows_retry(&self, retries_done: u32) -> bool {
        match self.max_retries {
            Some(max) => retries_done < max,
            None => self.always_retry_on_failure,
        }
    }

    /// Whether this policy can ever retry (a policy that cannot is worth a warning).
    pub fn can_ever_retry(&self) -> bool {
        self.allows_retry(0)
    }
}

/// The wait before a task that returned "retry without an error event" runs again: the
/// policy's next interval, or 30 seconds without a policy.
pub fn delay_without_event(policy: Option<&RetryPolicy>, retry: u32) -> Duration {
    policy.map_or(DEFAULT_RETRY_WITHOUT_EVENT_DELAY, |p| p.delay_for(retry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(intervals: &str, always: bool, max: Option<u32>) -> RetryPolicy {
        RetryPolicy {
            intervals: parse_intervals(intervals).unwrap(),
            always_retry_on_failure: always,
            max_retries: max,
        }
    }

    #[test]
    fn max_retries_bounds_retries() {
        let p = policy("1s", true, Some(3));
        assert!(p.allows_retry(0));
        assert!(p.allows_retry(2));
        assert!(!p.allows_retry(3));
    }

    #[test]
    fn always_without_max_is_unbounded() {
        let p = policy("1s", true, None);
        assert!(p.allows_retry(1_000_000));
    }

    #[test]
    fn neither_never_retries() {
        let p = policy("1s", false, None);
        assert!(!p.can_ever_retry());
        assert!(!policy("1s", true, Some(0)).can_ever_retry());
    }

    #[test]
    fn comma_list_backoff_repeats_the_last() {
        let p = policy("200ms,400ms", true, None);
        assert_eq!(p.delay_for(1), Duration::from_millis(200));
        assert_eq!(p.delay_for(2), Duration::from_millis(400));
        assert_eq!(p.delay_for(3), Duration::from_millis(400));
    }

    #[test]
    fn bad_interval_lists() {
        assert!(matches!(
            parse_intervals("1m,,2m"),
            Err(IntervalError::EmptyItem { index: 1 })
        ));
        assert!(matches!(
            parse_intervals("1m,x"),
            Err(IntervalError::BadItem { index: 1, .. })
        ));
        assert!(parse_intervals("").is_err());
    }

    #[test]
    fn without_event_delay() {
        assert_eq!(delay_without_event(None, 1), Duration::from_secs(30));
        let p = policy("5s", false, None);
        assert_eq!(delay_without_event(Some(&p), 1), Duration::from_secs(5));
    }
}
