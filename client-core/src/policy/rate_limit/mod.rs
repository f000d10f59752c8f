//! The client-side rate limiter: at most `per_second` attempts a second,
//! `burst` of them at once after a quiet spell; an attempt that finds no
//! permit waits for its turn up to `max_wait` (and never past the call's
//! deadline), or, when its turn would come later, fails at once with
//! [`ErrorKind::RateLimited`].
//!
//! Resilience4j's `RateLimiter`, for the case it is used for in service
//! calls: a third-party API that allows 100 calls a second, or a fair share
//! of a dependency's capacity. The algorithm is GCRA with reservations
//! (`gcra.rs`): one atomic word, no lock, no timer of its own, no task.
//!
//! Where it sits: in the guard of every attempt, after the circuit breaker
//! (an open breaker refuses before a permit is spent) and before the
//! bulkhead. Retries and hedges are attempts, so they take permits too: a
//! retry waits for one like a first attempt, a hedge takes one only if it
//! is free (a hedge is optional and never waits). What happens inside one
//! attempt takes no further permit: a redirect followed, or the one resend
//! after a 401 that refreshed a token; a partner that counts those against
//! its limit needs a `per_second` with room for them. A refusal is a local
//! protection, like a full bulkhead: the refused attempt is not sent, the
//! breaker ignores it, the retry loop does not retry it, and a fallback may
//! answer for it.
//!
//! Waiting is queueing: a waiter reserves the next permit when it asks, and
//! sleeps until that permit falls due. So waiters are served in the order
//! they asked, a new call cannot take a permit someone is already waiting
//! for, each waiter wakes once, and one whose turn would come after its
//! `max_wait` (or its deadline) is refused at once instead of waiting to
//! find out. A call dropped while it waits leaves its permit unused (the
//! rate is only ever lower, never higher). A permit that falls due at or
//! after the call's deadline is refused; so is one the timer delivers late,
//! past the deadline (tokio's timer rounds up to the millisecond), since an
//! attempt started then would be cut at once and counted by the breaker as
//! the dependency's timeout.
//!
//! Which limiter: a rate limit on the trait (or the client's config
//! section) is one limiter per built client, shared by its methods and by
//! every clone of the client. A method that names its own `per_second` or
//! `burst` gets a limiter of its own; one that only sets `max_wait` (or
//! nothing) waits on the client's, and has none if the client's is
//! switched off. `#[rate_limit(disabled)]` exempts a method.
//!
//! ## Why not the `governor` crate
//!
//! governor is the well-kept GCRA crate, and courier used it at first (on
//! courier's clock). It has no reservation: a caller can only ask "is a
//! permit free now, and if not, when is the next one?". Waiters then poll:
//! all of them sleep until the next permit, one gets it, the rest wake for
//! nothing and sleep again (N waiters, N² wake-ups), a new call can take
//! the permit a waiter slept for, and a waiter whose turn is the fifth
//! permit from now cannot be told at once that it will not come within its
//! `max_wait`. Reservation is a different update of the same one word, so
//! the state is written here (with a loom model, as courier's other
//! lock-free state is) and governor is not a dependency.
//!
//! Time is tokio's (through courier's `clock` module), so paused-clock
//! tests drive it like every other stage.

pub(crate) mod gcra;

use std::time::Duration;

use crate::clock;
use crate::{Error, ErrorKind};
use gcra::Gcra;

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

/// One rate limiter: a method's own, or the one a client's methods share.
pub(crate) struct RateLimiter {
    gcra: Gcra,
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

/// Why a permit was refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Not free, and the attempt may not wait (a hedge, or `max_wait` 0).
    NotFree,
    /// Due after the attempt's `max_wait`.
    MaxWait(Duration),
    /// Due at or after the call's deadline (or delivered after it).
    Deadline,
}

impl RateLimiter {
    /// A limiter of `per_second` permits a second, `burst` at once (each
    /// raised to 1 if 0), starting full. The interval between permits is
    /// rounded up to the nanosecond, so the rate is never exceeded.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let per_second = per_second.max(1);
        let burst = burst.max(1);
        let interval = clock::of(Duration::from_secs(1)).div_ceil(u64::from(per_second));
        RateLimiter {
            gcra: Gcra::new(interval, burst),
            per_second,
            burst,
        }
    }

    /// Takes a permit if one is free now: the fast path, no future.
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        let now = clock::now();
        self.gcra.reserve(now, now).is_ok()
    }

    /// Waits for a permit: reserves the next one if it falls due within
    /// `max_wait` from now and before `deadline` (ticks), and sleeps until
    /// it does; refuses at once if it would fall due later.
    ///
    /// # Errors
    /// [`ErrorKind::RateLimited`] when no permit is due in time, or the
    /// timer delivered it past the deadline.
    pub(crate) async fn take(&self, max_wait: Duration, deadline: u64) -> Result<(), Error> {
        let now = clock::now();
        let by_wait = now.saturating_add(clock::of(max_wait));
        // A permit due at the deadline leaves no time to use it.
        let latest = by_wait.min(deadline.saturating_sub(1));
        match self.gcra.reserve(now, latest) {
            Ok(due) if due <= now => Ok(()),
            Ok(due) => {
                tokio::time::sleep_until(clock::instant(due)).await;
                if clock::now() >= deadline {
                    return Err(self.refused(Refusal::Deadline, due.saturating_sub(now)));
                }
                Ok(())
            }
            Err(due) => {
                let why = if due > by_wait {
                    Refusal::MaxWait(max_wait)
                } else {
                    Refusal::Deadline
                };
                Err(self.refused(why, due.saturating_sub(now)))
            }
        }
    }

    /// The error of an attempt refused because no permit was free and it
    /// could not wait (a hedge).
    #[cold]
    pub(crate) fn not_free(&self) -> Error {
        self.refused(Refusal::NotFree, 0)
    }

    #[cold]
    fn refused(&self, why: Refusal, due_in: u64) -> Error {
        let (per_second, burst) = (self.per_second, self.burst);
        let due_in = Duration::from_nanos(due_in);
        let message = match why {
            Refusal::NotFree => {
                format!("{per_second}/s (burst {burst}): no permit free")
            }
            Refusal::MaxWait(max_wait) => format!(
                "{per_second}/s (burst {burst}): the next permit is due in {due_in:.1?}, \
                 beyond max_wait ({max_wait:?})"
            ),
            Refusal::Deadline => format!(
                "{per_second}/s (burst {burst}): the next permit is due in {due_in:.1?}, too \
                 late for the call's deadline"
            ),
        };
        Error::new(ErrorKind::RateLimited, message)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("1/s") && text.contains("max_wait (500ms)"),
            "{text}"
        );
        assert_eq!(start.elapsed(), Duration::ZERO, "no wait for nothing");
        // max_wait long enough, but the deadline is nearer.
        let deadline = clock::now() + clock::of(Duration::from_millis(300));
        let e = limiter.take(Duration::from_secs(5), deadline).await.err();
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("deadline"), "{text}");
        assert_eq!(start.elapsed(), Duration::ZERO);
        // A refusal reserved nothing: the permit is still due at 1 s.
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!limiter.try_take());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.try_take());
    }

    /// A permit due exactly at the deadline is of no use: refused.
    #[tokio::test(start_paused = true)]
    async fn a_permit_due_at_the_deadline_is_refused() {
        let limiter = RateLimiter::new(10, 1);
        assert!(limiter.try_take());
        let deadline = clock::now() + clock::of(Duration::from_millis(100));
        let e = limiter.take(Duration::from_secs(5), deadline).await.err();
        assert!(e.is_some_and(|e| e.is_rate_limited()));
        let deadline = clock::now() + clock::of(Duration::from_millis(101));
        assert!(limiter.take(Duration::from_secs(5), deadline).await.is_ok());
    }

    /// tokio's timer rounds a wake-up up to the millisecond: a permit due
    /// 0.5 ms before the deadline is delivered after it, and refused then
    /// rather than start an attempt with no time left.
    #[tokio::test(start_paused = true)]
    async fn a_permit_delivered_after_the_deadline_is_refused() {
        let limiter = RateLimiter::new(10, 1);
        tokio::time::advance(Duration::from_micros(300)).await;
        assert!(limiter.try_take());
        let deadline = clock::now() + clock::of(Duration::from_micros(100_500));
        let e = limiter.take(Duration::from_secs(5), deadline).await.err();
        assert!(
            clock::now() >= deadline,
            "the wake-up came after the deadline"
        );
        assert!(e.is_some_and(|e| e.to_string().contains("deadline")));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_turn_at_the_rate() {
        let limiter = Arc::new(RateLimiter::new(10, 1));
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
        let mut ms = Vec::new();
        for task in tasks {
            match task.await {
                Ok(Ok(at)) => ms.push(at.as_millis()),
                other => panic!("a waiter failed: {other:?}"),
            }
        }
        ms.sort_unstable();
        assert_eq!(ms, [0, 100, 200, 300, 400], "one permit per 100 ms");
    }

    /// A waiter whose turn comes after its `max_wait` knows at once: the
    /// queue ahead of it is reserved.
    #[tokio::test(start_paused = true)]
    async fn waiters_whose_turn_is_too_late_fail_at_once() {
        let limiter = Arc::new(RateLimiter::new(1, 1));
        assert!(limiter.try_take());
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    let taken = limiter.take(Duration::from_millis(2500), far()).await;
                    (taken.is_ok(), start.elapsed().as_millis())
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap_or((false, u128::MAX)));
        }
        outcomes.sort_unstable();
        // Two turns (1 s, 2 s) fit in 2.5 s; the other three are refused
        // without waiting.
        assert_eq!(
            outcomes,
            [
                (false, 0),
                (false, 0),
                (false, 0),
                (true, 1000),
                (true, 2000)
            ]
        );
        // A new call does not jump the queue it found.
        assert!(!limiter.try_take());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_raised_to_one_and_the_interval_rounds_up() {
        let limiter = RateLimiter::new(0, 0);
        assert_eq!((limiter.per_second, limiter.burst), (1, 1));
        assert!(limiter.try_take() && !limiter.try_take());
        // 3/s: 333,333,334 ns apart, never 333,333,333 (a hair above 3/s).
        let limiter = RateLimiter::new(3, 1);
        assert!(limiter.try_take());
        tokio::time::advance(Duration::from_nanos(333_333_333)).await;
        assert!(!limiter.try_take());
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert!(limiter.try_take());
    }
}
