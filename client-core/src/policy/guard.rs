//! The guard in front of every attempt: the method's circuit breaker, then
//! its rate limiter, then its bulkhead; after the attempt, its outcome goes
//! to the breaker.
//!
//! The design draws the breaker and the bulkhead as two stages; they share
//! this file because an attempt needs both before it may start, a hedge must
//! be able to ask for both without waiting (a hedge refused locally is simply
//! not sent), and the breaker's clock must start only once the bulkhead let
//! the attempt through: time spent queueing for a slot is local, not the
//! dependency's slowness, and must not count as a slow call.
//!
//! Order matters (Resilience4j's: breaker, rate limiter, bulkhead): an open
//! breaker refuses before a permit or a bulkhead slot is taken or waited
//! for, so a call to a dependency known to be down costs nothing; the rate
//! limiter's wait comes before the bulkhead's, so an attempt waiting for a
//! permit does not hold a slot. (A permit is spent even when the bulkhead
//! then refuses: GCRA cannot give one back; the rate is only lower.) A refused attempt drops its
//! breaker permit unused, which gives a half-open trial slot back.

use std::future::Future;
use std::sync::atomic::Ordering;

use crate::clock;
use tokio::sync::SemaphorePermit;

use super::PolicyCall;
use super::circuit::Permit;
use super::classify::outcome;
use crate::Error;

/// What an attempt is told of itself: which attempt of the call it is (0
/// for the first) and when it is cut (ticks).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttemptInfo {
    pub(crate) number: u32,
    pub(crate) limit: u64,
}

/// Leave to make one attempt: a breaker permit and a bulkhead slot (each
/// when the method has one). Dropping it unused gives both back.
pub(crate) struct Admitted<'a> {
    permit: Option<Permit<'a>>,
    _slot: Option<SemaphorePermit<'a>>,
    /// When the attempt may start (after any wait for a slot), in ticks.
    since: u64,
}

impl<'a> PolicyCall<'a> {
    /// Asks the breaker, then the rate limiter, then the bulkhead (each
    /// wait up to its `max_wait`, never past the deadline).
    ///
    /// # Errors
    /// `CircuitOpen`, `RateLimited` or `BulkheadFull`.
    #[inline]
    pub(crate) async fn admit(&self, now: u64) -> Result<Admitted<'a>, Error> {
        let permit = self.permit(now)?;
        let mut now = now;
        if let Some(limiter) = self.limiter
            && !limiter.try_take()
        {
            // The rare path, boxed like the bulkhead's wait below.
            let max_wait = self.policy.rate_limit.map(|r| r.max_wait);
            let wait = limiter.take(max_wait.unwrap_or_default(), self.deadline.at());
            if let Err(e) = Box::pin(wait).await {
                self.probe.rate_limited();
                return Err(e);
            }
            now = clock::now();
        }
        let (slot, since) = match self.bulkhead {
            None => (None, now),
            Some(bulkhead) => match bulkhead.try_enter() {
                Some(slot) => (Some(slot), now),
                // Waiting is the rare path: boxed, so its timer and semaphore
                // future do not grow every call's future.
                None => {
                    let until = clock::instant(self.deadline.at());
                    let slot = Box::pin(bulkhead.wait(until)).await?;
                    (Some(slot), clock::now())
                }
            },
        };
        Ok(Admitted {
            permit,
            _slot: slot,
            since,
        })
    }

    /// Like [`admit`](Self::admit) but never waits for a permit or a slot:
    /// for hedges, which are optional.
    ///
    /// # Errors
    /// `CircuitOpen`, `RateLimited` or `BulkheadFull`.
    pub(crate) fn try_admit(&self, now: u64) -> Result<Admitted<'a>, Error> {
        let permit = self.permit(now)?;
        // A hedge the limiter skips is not counted as a refusal: it was
        // optional, and counting it would make healthy hedged calls look
        // refused in `courier.ratelimiter.refused`.
        if let Some(limiter) = self.limiter
            && !limiter.try_take()
        {
            return Err(limiter.not_free());
        }
        let slot = match self.bulkhead {
            None => None,
            Some(bulkhead) => Some(bulkhead.try_enter().ok_or_else(|| bulkhead.full())?),
        };
        Ok(Admitted {
            permit,
            _slot: slot,
            since: now,
        })
    }

    #[inline]
    fn permit(&self, now: u64) -> Result<Option<Permit<'a>>, Error> {
        match self.breaker {
            Some(breaker) => match breaker.admit_at(now) {
                Ok(permit) => Ok(Some(permit)),
                Err(rejected) => {
                    self.probe.not_permitted();
                    Err(rejected.into_error())
                }
            },
            None => Ok(None),
        }
    }

    /// One attempt, admitted and bounded: the guard, then `attempt` cut at
    /// the attempt timeout or the deadline.
    // NOTE: stages pass the attempt *function* down and only the innermost
    // one makes the future: an `async fn` keeps a future it is given as an
    // argument apart from the one it awaits (rust-lang/rust#62958), so
    // passing futures made every stage double the call's future (4.4 KB
    // against 1.1 KB).
    #[inline]
    pub(crate) async fn guarded<T, F, Fut>(&self, now: u64, attempt: &F) -> Result<T, Error>
    where
        F: Fn(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let admitted = self.admit(now).await?;
        // `Admitted::run`, written out: one state machine fewer per call.
        let (limit, info) = admitted.start(self);
        let elapsed = || self.deadline.elapsed(limit, self.attempt_timeout());
        let result = self.watch.bound(limit, attempt(info), elapsed).await;
        admitted.finish(self, &result);
        result
    }

    fn attempt_timeout(&self) -> Option<std::time::Duration> {
        self.policy.retry.and_then(|r| r.attempt_timeout)
    }
}

impl Admitted<'_> {
    /// Runs `attempt` under the attempt timeout and the deadline, then
    /// records its outcome (and duration since admission) with the breaker.
    #[inline]
    pub(crate) async fn run<T, F, Fut>(self, call: &PolicyCall<'_>, attempt: &F) -> Result<T, Error>
    where
        F: Fn(AttemptInfo) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let (limit, info) = self.start(call);
        let elapsed = || call.deadline.elapsed(limit, call.attempt_timeout());
        let result = call.watch.bound(limit, attempt(info), elapsed).await;
        self.finish(call, &result);
        result
    }

    /// Counts the attempt as started; returns its limit (ticks) and what
    /// the attempt is told of itself.
    #[inline]
    fn start(&self, call: &PolicyCall<'_>) -> (u64, AttemptInfo) {
        let number = call.started.fetch_add(1, Ordering::Relaxed);
        let limit = call.deadline.limit(self.since, call.attempt_timeout());
        (limit, AttemptInfo { number, limit })
    }

    /// Records the attempt's outcome (and its duration since admission)
    /// with the breaker; gives the bulkhead slot back.
    #[inline]
    fn finish<T>(self, call: &PolicyCall<'_>, result: &Result<T, Error>) {
        let outcome = outcome(result);
        call.probe.outcome(outcome);
        if let Some(permit) = self.permit {
            let end = clock::now();
            permit.record_at(outcome, end.saturating_sub(self.since), end);
            #[cfg(feature = "metrics")]
            if let Some(breaker) = call.breaker {
                call.probe.breaker_rates(breaker.window_counts());
            }
        }
        #[cfg(feature = "metrics")]
        if let Some(bulkhead) = call.bulkhead {
            drop(self._slot);
            call.probe
                .bulkhead(bulkhead.available(), bulkhead.max_concurrent());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::circuit::Force;
    use crate::policy::fixture::{Attempts, GET, Method};
    use crate::policy::{BulkheadPolicy, MethodPolicy};

    /// The guard alone: an open breaker refuses before the attempt runs,
    /// and the refusal is no attempt.
    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_refuses_without_running_the_attempt() {
        let m = Method::new(|p| p.circuit = MethodPolicy::resolve(&GET, &[]).circuit);
        if let Some(breaker) = &m.breaker {
            breaker.force(Force::Open);
        }
        let attempts = Attempts::default();
        let call = m.call();
        let result = call
            .guarded(clock::now(), &|_| {
                attempts.next();
                async { Ok::<_, Error>(()) }
            })
            .await;
        assert!(result.is_err_and(|e| e.is_circuit_open()));
        assert_eq!((attempts.made(), call.started()), (0, 0));
    }

    /// A full bulkhead refuses at once with no `max_wait`; with one, the
    /// attempt waits for the slot and runs when it is given back.
    #[tokio::test(start_paused = true)]
    async fn a_full_bulkhead_refuses_or_waits_for_its_slot() {
        let bulkhead = |max_wait| {
            Method::new(move |p| {
                p.bulkhead = Some(BulkheadPolicy {
                    max_concurrent: 1,
                    max_wait,
                });
            })
        };
        let attempts = Attempts::default();
        let attempt = |_| {
            attempts.next();
            async { Ok::<_, Error>(()) }
        };

        let m = bulkhead(Duration::ZERO);
        let (holder, call) = (m.call(), m.call());
        let slot = holder.admit(clock::now()).await;
        let refused = call.guarded(clock::now(), &attempt).await;
        assert!(refused.is_err_and(|e| e.is_bulkhead_full()));
        assert_eq!(attempts.made(), 0);
        drop(slot);
        assert!(call.guarded(clock::now(), &attempt).await.is_ok());

        let m = bulkhead(Duration::from_millis(100));
        let (holder, call) = (m.call(), m.call());
        let slot = holder.admit(clock::now()).await;
        let start = tokio::time::Instant::now();
        let release = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(slot);
        };
        let (_, waited) = tokio::join!(release, call.guarded(clock::now(), &attempt));
        assert!(waited.is_ok());
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        assert_eq!(attempts.made(), 2);
    }
}
