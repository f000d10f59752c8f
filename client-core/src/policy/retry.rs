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
//!
//! `run` is the stage: it counts the call in the budget, then makes
//! attempts (each one guarded, or a hedged race) until one succeeds, the
//! failure is not retryable, `max_attempts` are made, the budget is spent,
//! or the next wait would outlast the deadline.

use std::future::Future;
use std::time::{Duration, SystemTime};

use super::classify::is_retryable;
use super::guard::AttemptInfo;
use super::{PolicyCall, RetryPolicy};
use crate::Error;
use crate::clock;
use crate::observe::Event;
use http::HeaderValue;

/// The retry loop around `attempt` (which makes one attempt: in the client,
/// pick, intercept, send, read, decode).
///
/// # Errors
/// The last attempt's error, marked when the budget ran out.
pub(crate) async fn run<T, F, Fut>(call: &PolicyCall<'_>, attempt: &F) -> Result<T, Error>
where
    F: Fn(AttemptInfo) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let policy = call.policy;
    let mut now = call.deadline.start();
    if let Some(budget) = call.budget {
        budget.deposit_at(now);
    }
    loop {
        let result = match &policy.hedge {
            None => call.guarded(now, attempt).await,
            // Boxed so the hedging state (a set of racing attempts, a
            // timer) does not grow every call's future, hedged or not.
            Some(hedge) => Box::pin(super::hedge::race(call, hedge, attempt)).await,
        };
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let Some(retry) = &policy.retry else {
            return Err(error);
        };
        let made = call.started();
        if made >= retry.max_attempts || !is_retryable(&error, policy.idempotent, &retry.on) {
            return Err(error);
        }
        now = clock::now();
        let wait = error.retry_after().unwrap_or_else(|| backoff(retry, made));
        if !call.deadline.fits(now, wait) {
            // The wait would outlast the call (or not fit in an instant at
            // all, for an absurd Retry-After): end now, with the real cause,
            // instead of sleeping into a timeout.
            return Err(error);
        }
        if let Some(budget) = call.budget {
            let granted = budget.withdraw_at(now);
            #[cfg(feature = "metrics")]
            crate::observe::metrics::budget_remaining(call.probe.client, budget.remaining_at(now));
            if !granted {
                call.events.emit(&Event::BudgetExhausted {
                    service: call.probe.client,
                    method: call.probe.method,
                });
                return Err(error.with_budget_exhausted());
            }
        }
        call.events.emit(&Event::Retry {
            service: call.probe.client,
            method: call.probe.method,
            attempts: made,
            cause: error.kind(),
            status: error.status().map(|s| s.as_u16()),
            wait,
            retry_after: error.retry_after().is_some(),
        });
        if !wait.is_zero() {
            // Boxed for the same reason: only retries pay for the timer.
            Box::pin(tokio::time::sleep(wait)).await;
            now = clock::now();
        }
    }
}

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
/// §10.2.3). A date in the past means "now". Any value parses without
/// panicking; a huge one is returned as is and the retry loop, which adds it
/// with checked arithmetic, treats it as longer than the deadline.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds still means "not any time soon".
        return Some(
            text.parse::<u64>()
                .map_or(Duration::MAX, Duration::from_secs),
        );
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixture::{Attempts, Method, status};
    use crate::spec::StatusSet;

    fn retry(max_attempts: u32, backoff: Duration) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff_base: backoff,
            backoff_max: backoff,
            on: StatusSet::from_codes(&[503]),
            attempt_timeout: None,
        }
    }

    /// The loop alone, under the paused clock: failed attempts are retried,
    /// each after its back-off (full jitter: at most the back-off), until
    /// one answers; the attempts are numbered in order.
    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_after_their_backoff_until_one_answers() {
        let m = Method::new(|p| p.retry = Some(retry(3, Duration::from_millis(100))));
        let attempts = Attempts::default();
        let start = tokio::time::Instant::now();
        let result = run(&m.call(), &|info: AttemptInfo| {
            let n = attempts.next();
            assert_eq!(info.number, n);
            async move { if n < 2 { Err(status(503)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.ok(), Some(2));
        assert_eq!(attempts.made(), 3);
        assert!(start.elapsed() <= Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn max_attempts_counts_the_first_and_ends_with_the_last_error() {
        let m = Method::new(|p| p.retry = Some(retry(3, Duration::from_millis(1))));
        let attempts = Attempts::default();
        let result: Result<(), Error> = run(&m.call(), &|_| {
            attempts.next();
            async { Err(status(503)) }
        })
        .await;
        assert_eq!(
            result.err().and_then(|e| e.status()).map(|s| s.as_u16()),
            Some(503)
        );
        assert_eq!(attempts.made(), 3);
    }

    /// A `Retry-After` replaces the back-off exactly; one that would
    /// outlast the deadline ends the call at once, with that answer.
    #[tokio::test(start_paused = true)]
    async fn retry_after_replaces_the_backoff_unless_it_outlasts_the_deadline() {
        let m = Method::new(|p| {
            p.retry = Some(retry(2, Duration::from_millis(1)));
            p.timeout = Duration::from_secs(1);
        });
        let after = |wait: u64| status(503).with_retry_after(Some(Duration::from_millis(wait)));
        let attempts = Attempts::default();
        let start = tokio::time::Instant::now();
        let result = run(&m.call(), &|_| {
            let n = attempts.next();
            async move { if n == 0 { Err(after(300)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.ok(), Some(1));
        assert_eq!(start.elapsed(), Duration::from_millis(300));

        let attempts = Attempts::default();
        let start = tokio::time::Instant::now();
        let result: Result<(), Error> = run(&m.call(), &|_| {
            attempts.next();
            async move { Err(after(5000)) }
        })
        .await;
        assert!(result.is_err_and(|e| e.retry_after() == Some(Duration::from_secs(5))));
        assert_eq!(attempts.made(), 1);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no sleeping into a timeout"
        );
    }

    /// A method that is not idempotent is not retried once an attempt may
    /// have reached the service.
    #[tokio::test(start_paused = true)]
    async fn a_method_that_is_not_idempotent_is_not_replayed() {
        let m = Method::new(|p| {
            p.retry = Some(retry(3, Duration::from_millis(1)));
            p.idempotent = false;
        });
        let attempts = Attempts::default();
        let result: Result<(), Error> = run(&m.call(), &|_| {
            attempts.next();
            async { Err(status(503)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(attempts.made(), 1);
    }

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
        assert_eq!(parse_retry_after(&v("+1"), now), None);
        assert_eq!(
            parse_retry_after(&v("99999999999999999999999"), now),
            Some(Duration::MAX)
        );
    }

    mod properties {
        use super::*;
        use crate::policy::deadline::Deadline;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// No value of Retry-After panics, whether parsed or then added
            /// to a deadline; whole seconds parse as themselves.
            #[test]
            fn any_retry_after_parses_or_is_ignored_without_panic(
                text in any::<String>(),
                secs in any::<u64>(),
            ) {
                let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
                let start = crate::clock::now();
                let deadline = Deadline::new(start, Duration::from_secs(10));
                if let Ok(value) = HeaderValue::from_str(&text)
                    && let Some(wait) = parse_retry_after(&value, now)
                {
                    let _ = deadline.fits(start, wait);
                }
                let value = HeaderValue::from_str(&secs.to_string()).ok();
                let parsed = value.and_then(|v| parse_retry_after(&v, now));
                prop_assert_eq!(parsed, Some(Duration::from_secs(secs)));
                let _ = deadline.fits(start, Duration::from_secs(secs));
            }
        }
    }
}
