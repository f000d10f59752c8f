//! The deadline: `timeout` bounds the whole call, retries, back-off and
//! waits for a bulkhead slot included.
//!
//! It is not a timer around the call but an instant passed down to every
//! stage: each wait in the pipeline ends by it (an attempt is bounded by
//! `min(deadline, now + attempt_timeout)`, a back-off that would outlast it
//! is not started, a bulkhead wait stops at it). So the caller never waits
//! longer than `timeout`, and the error still says which attempt was cut
//! short and how many were made.
//!
//! Every sum of an instant and a duration here is checked: durations from
//! config are at most a day, but a `Retry-After` comes from the network and
//! can be anything (`Retry-After: 9999999999999999999` once panicked a
//! caller's task with "overflow when adding duration to instant"). A sum
//! that does not fit is "later than any deadline".

use std::time::Duration;

use tokio::time::Instant;

use crate::{Error, ErrorKind};

/// The deadline of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    start: Instant,
    at: Instant,
    timeout: Duration,
}

/// `now + d`, or `None` when it does not fit in an instant.
#[inline]
pub(crate) fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

impl Deadline {
    /// A call started at `start` with `timeout` (a `timeout` too long to add
    /// is clamped to the longest that fits).
    #[inline]
    pub(crate) fn new(start: Instant, timeout: Duration) -> Deadline {
        let at = after(start, timeout)
            .or_else(|| after(start, crate::spec::MAX_DURATION))
            .unwrap_or(start);
        Deadline { start, at, timeout }
    }

    /// When the call started.
    #[inline]
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// When the call must end.
    #[inline]
    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// Whether waiting `wait` from `now` would end before the deadline.
    #[inline]
    pub(crate) fn fits(&self, now: Instant, wait: Duration) -> bool {
        after(now, wait).is_some_and(|end| end < self.at)
    }

    /// The limit of an attempt started at `now`: the deadline, or sooner
    /// with an attempt timeout.
    #[inline]
    pub(crate) fn limit(&self, now: Instant, attempt_timeout: Option<Duration>) -> Instant {
        match attempt_timeout.and_then(|t| after(now, t)) {
            Some(end) => end.min(self.at),
            None => self.at,
        }
    }

    /// The error of an attempt cut at `limit` (by the attempt timeout or by
    /// the whole call's).
    #[cold]
    pub(crate) fn elapsed(&self, limit: Instant, attempt_timeout: Option<Duration>) -> Error {
        let message = match attempt_timeout {
            Some(t) if limit < self.at => format!("no answer within the attempt timeout of {t:?}"),
            _ => format!("the call's timeout of {:?} elapsed", self.timeout),
        };
        Error::new(ErrorKind::Timeout, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sums_that_do_not_fit_are_later_than_the_deadline() {
        let now = Instant::now();
        let d = Deadline::new(now, Duration::from_secs(1));
        assert!(d.fits(now, Duration::from_millis(999)));
        assert!(!d.fits(now, Duration::from_secs(1)));
        // A Retry-After of 9999999999999999999 seconds.
        assert!(!d.fits(now, Duration::from_secs(9_999_999_999_999_999_999)));
        assert!(!d.fits(now, Duration::MAX));
        assert_eq!(d.limit(now, Some(Duration::MAX)), d.at());
        assert_eq!(
            d.limit(now, Some(Duration::from_millis(10))),
            now + Duration::from_millis(10)
        );
        let huge = Deadline::new(now, Duration::MAX);
        assert!(huge.at() > now, "clamped, not wrapped or panicked");
    }

    #[tokio::test(start_paused = true)]
    async fn the_error_says_which_limit_cut_the_attempt() {
        let now = Instant::now();
        let d = Deadline::new(now, Duration::from_secs(1));
        let t = Some(Duration::from_millis(100));
        let attempt = d.elapsed(d.limit(now, t), t).to_string();
        assert!(attempt.contains("attempt timeout of 100ms"), "{attempt}");
        let whole = d.elapsed(d.at(), t).to_string();
        assert!(whole.contains("call's timeout of 1s"), "{whole}");
    }
}
