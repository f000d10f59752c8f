//! Retry: which failures are tried again, and how long to wait in between.
//!
//! Which failures: [`classify::is_retryable`](super::classify::is_retryable).
//! Connect errors always (nothing was sent); timeouts, transport errors and
//! the statuses in `on` (default 429, 502, 503, 504) only for idempotent
//! methods (GET, HEAD, PUT, DELETE, or `#[idempotent]`), since replaying a
//! POST or PATCH that reached the service may apply it twice. Circuit-open
//! and bulkhead-full errors are never retried: both mean "back off now".
//!
//! How long: exponential back-off with *full jitter* (AWS Architecture Blog,
//! "Exponential Backoff and Jitter"): before retry `n`, sleep a uniformly
//! random time in `[0, min(max, base × 2^(n-1))]`, which spreads the retries
//! of many clients instead of synchronising them. A `Retry-After` header
//! (seconds, or an HTTP date) replaces the back-off when it fits in what is
//! left of the call's deadline; when it does not, the call ends at once with
//! that status error rather than wait for nothing.
//!
//! Every retry also needs a token from the client's
//! [`RetryBudget`](super::budget::RetryBudget).

use std::time::{Duration, SystemTime};

use http::HeaderValue;

use super::RetryPolicy;

/// The back-off before retry number `retry` (1 for the first retry), with
/// full jitter.
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let ceiling = exponential(policy, retry);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// `min(max, base × 2^(retry-1))`, the upper end of the jitter.
pub fn exponential(policy: &RetryPolicy, retry: u32) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    policy
        .backoff_base
        .checked_mul(factor)
        .unwrap_or(policy.backoff_max)
        .min(policy.backoff_max)
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110
/// §10.2.3). A date in the past means "now".
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::StatusSet;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            on: StatusSet::EMPTY,
            attempt_timeout: None,
        }
    }

    #[test]
    fn exponential_doubles_up_to_the_max() {
        let p = policy();
        let ms = |n| exponential(&p, n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(5), ms(6), ms(40)],
            [50, 100, 200, 800, 1000, 1000]
        );
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling_and_varies() {
        let p = policy();
        let samples: Vec<Duration> = (0..200).map(|_| backoff(&p, 3)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(200)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads the waits");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            parse_retry_after(&v("3"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse_retry_after(&v(" 0 "), now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        let later = HeaderValue::from_str(&later).ok();
        assert_eq!(
            later.and_then(|v| parse_retry_after(&v, now)),
            Some(Duration::from_secs(7))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        let past = HeaderValue::from_str(&past).ok();
        assert_eq!(
            past.and_then(|v| parse_retry_after(&v, now)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&v("soon"), now), None);
        assert_eq!(parse_retry_after(&v("-1"), now), None);
    }
}
