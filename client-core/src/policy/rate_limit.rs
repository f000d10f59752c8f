//! The client-side rate limiter: at most `per_second` attempts a second,
//! `burst` of them at once after a quiet spell; an attempt that finds no
//! permit waits up to `max_wait` (never past the call's deadline) or fails
//! at once with [`ErrorKind::RateLimited`].
//!
//! Resilience4j's `RateLimiter`, for the case it is used for in service
//! calls: a third-party API that allows 100 calls a second, or a fair share
//! of a dependency's capacity. The algorithm is GCRA (the generic cell rate
//! algorithm, a leaky bucket kept as one "theoretical arrival time"), from
//! the `governor` crate: one atomic word, no lock, no timer, no task, and a
//! refused permit costs nothing (nothing is reserved, unlike Resilience4j's
//! permission reservation).
//!
//! Where it sits: in the guard of every attempt, after the circuit breaker
//! (an open breaker refuses before a permit is spent) and before the
//! bulkhead. Retries and hedges are attempts, so they take permits too: a
//! retry waits for one like a first attempt, a hedge takes one only if it
//! is free (a hedge is optional and never waits). A refusal is a local
//! protection, like a full bulkhead: the breaker ignores it, the retry loop
//! does not retry it, and a fallback may answer for it.
//!
//! Which limiter: a rate limit on the trait (or the client's config
//! section) is one limiter per built client, shared by its methods and by
//! every clone of the client. A method that names its own `per_second` or
//! `burst` gets a limiter of its own; one that only sets `max_wait` (or
//! nothing) takes permits from the client's. `#[rate_limit(disabled)]`
//! exempts a method.
//!
//! Time is tokio's (through courier's `clock` module), so paused-clock tests drive
//! it like every other stage.

use std::num::NonZeroU32;
use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};

use crate::clock;
use crate::{Error, ErrorKind};

/// The rate limit of a method, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// Permits per second.
    pub per_second: u32,
    /// Permits that may be taken at once after a quiet spell.
    pub burst: u32,
    /// How long an attempt waits for a permit before it fails.
    pub max_wait: Duration,
}

/// A reading of courier's clock, in ticks (nanoseconds since the process's
/// epoch), as governor's clocks hand out instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Tick(u64);

impl Add<Nanos> for Tick {
    type Output = Tick;

    fn add(self, n: Nanos) -> Tick {
        Tick(self.0.saturating_add(n.as_u64()))
    }
}

impl Reference for Tick {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_sub(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Tick(self.0.saturating_sub(duration.as_u64()))
    }
}

/// Tokio's clock for governor: so a paused test clock drives the limiter.
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = Tick;

    #[inline]
    fn now(&self) -> Tick {
        Tick(clock::now())
    }
}

/// One rate limiter: a method's own, or the one a client's methods share.
pub struct RateLimiter {
    gcra: Gcra<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Tick>>,
    per_second: u32,
    burst: u32,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter of `per_second` permits a second, `burst` at once (each
    /// raised to 1 if 0), starting full.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        RateLimiter {
            gcra: Gcra::direct_with_clock(quota, TokioClock),
            per_second: per_second.get(),
            burst: burst.get(),
        }
    }

    /// Takes a permit if one is free now: the fast path, no future.
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        self.gcra.check().is_ok()
    }

    /// Waits for a permit up to `max_wait` from now, and never past
    /// `deadline` (ticks). A permit that cannot come in time fails at once
    /// rather than after the wait: GCRA knows when the next one is due.
    ///
    /// # Errors
    /// [`ErrorKind::RateLimited`] when no permit is due in time.
    pub(crate) async fn take(&self, max_wait: Duration, deadline: u64) -> Result<(), Error> {
        let until = clock::now()
            .saturating_add(clock::of(max_wait))
            .min(deadline);
        loop {
            let due = match self.gcra.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => not_until.earliest_possible().0,
            };
            if due > until {
                return Err(self.refused(max_wait));
            }
            // Another waiter may take the permit first: then check again.
            tokio::time::sleep_until(clock::instant(due)).await;
        }
    }

    /// The error of a refused attempt.
    #[cold]
    pub(crate) fn refused(&self, max_wait: Duration) -> Error {
        Error::new(
            ErrorKind::RateLimited,
            format!(
                "rate limit of {}/s (burst {}) reached: no permit within {max_wait:?}",
                self.per_second, self.burst
            ),
        )
    }

    /// Its rate, permits per second.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Its burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> u64 {
        clock::now() + clock::of(Duration::from_secs(3600))
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_permit_per_interval() {
        let limiter = RateLimiter::new(10, 3);
        let taken = (0..5).filter(|_| limiter.try_take()).count();
        assert_eq!(taken, 3, "the burst, then nothing");
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(!limiter.try_take(), "the next permit is due after 100 ms");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.try_take());
        assert!(!limiter.try_take());
        // A quiet second refills the burst, not more.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!((0..5).filter(|_| limiter.try_take()).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_lasts_until_the_permit_is_due() {
        let limiter = RateLimiter::new(10, 1);
        assert!(limiter.try_take());
        let start = tokio::time::Instant::now();
        let taken = limiter.take(Duration::from_millis(250), far()).await;
        assert!(taken.is_ok());
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_due_after_max_wait_or_the_deadline_fails_at_once() {
        let limiter = RateLimiter::new(1, 1);
        assert!(limiter.try_take());
        let start = tokio::time::Instant::now();
        let e = limiter.take(Duration::from_millis(500), far()).await.err();
        assert!(e.as_ref().is_some_and(Error::is_rate_limited), "{e:?}");
        assert!(e.is_some_and(|e| e.to_string().contains("1/s")));
        assert_eq!(start.elapsed(), Duration::ZERO, "no wait for nothing");
        // max_wait long enough, but the deadline is nearer.
        let deadline = clock::now() + clock::of(Duration::from_millis(300));
        let e = limiter.take(Duration::from_secs(5), deadline).await.err();
        assert!(e.is_some_and(|e| e.is_rate_limited()));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_share_the_rate_they_do_not_multiply_it() {
        let limiter = std::sync::Arc::new(RateLimiter::new(10, 1));
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter
                        .take(Duration::from_secs(1), far())
                        .await
                        .map(|()| start.elapsed())
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            match task.await {
                Ok(Ok(at)) => times.push(at),
                other => panic!("a waiter failed: {other:?}"),
            }
        }
        times.sort();
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 100, 200, 300, 400], "one permit per 100 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_raised_to_one() {
        let limiter = RateLimiter::new(0, 0);
        assert_eq!((limiter.per_second(), limiter.burst()), (1, 1));
        assert!(limiter.try_take() && !limiter.try_take());
    }
}
