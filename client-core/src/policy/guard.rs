//! The guard in front of every attempt: the method's circuit breaker, then
//! its bulkhead; after the attempt, its outcome goes to the breaker.
//!
//! The design draws the breaker and the bulkhead as two stages; they share
//! this file because an attempt needs both before it may start, a hedge must
//! be able to ask for both without waiting (a hedge refused locally is simply
//! not sent), and the breaker's clock must start only once the bulkhead let
//! the attempt through: time spent queueing for a slot is local, not the
//! dependency's slowness, and must not count as a slow call.
//!
//! Order matters: an open breaker refuses before a bulkhead slot is taken or
//! waited for, so a call to a dependency known to be down costs nothing.

use std::future::Future;
use std::sync::atomic::Ordering;

use tokio::sync::SemaphorePermit;
use tokio::time::Instant;

use super::PolicyCall;
use super::circuit::{Permit, Rejected};
use super::classify::outcome;
use crate::Error;

/// Leave to make one attempt: a breaker permit and a bulkhead slot (each
/// when the method has one). Dropping it unused gives both back.
pub(crate) struct Admitted<'a> {
    permit: Option<Permit<'a>>,
    _slot: Option<SemaphorePermit<'a>>,
    /// When the attempt may start (after any wait for a slot).
    since: Instant,
}

impl<'a> PolicyCall<'a> {
    /// Asks the breaker, then the bulkhead (waiting up to `max_wait`, never
    /// past the deadline).
    ///
    /// # Errors
    /// `CircuitOpen` or `BulkheadFull`.
    #[inline]
    pub(crate) async fn admit(&self, now: Instant) -> Result<Admitted<'a>, Error> {
        let permit = self.permit(now)?;
        let (slot, since) = match self.bulkhead {
            None => (None, now),
            Some(bulkhead) => match bulkhead.try_enter() {
                Some(slot) => (Some(slot), now),
                // Waiting is the rare path: boxed, so its timer and semaphore
                // future do not grow every call's future.
                None => {
                    let slot = Box::pin(bulkhead.wait(self.deadline.at())).await?;
                    (Some(slot), Instant::now())
                }
            },
        };
        Ok(Admitted {
            permit,
            _slot: slot,
            since,
        })
    }

    /// Like [`admit`](Self::admit) but never waits for a slot: for hedges,
    /// which are optional.
    ///
    /// # Errors
    /// `CircuitOpen` or `BulkheadFull`.
    pub(crate) fn try_admit(&self, now: Instant) -> Result<Admitted<'a>, Error> {
        let permit = self.permit(now)?;
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
    fn permit(&self, now: Instant) -> Result<Option<Permit<'a>>, Error> {
        match self.breaker {
            Some(breaker) => Ok(Some(breaker.admit(now).map_err(Rejected::into_error)?)),
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
    pub(crate) async fn guarded<T, F, Fut>(&self, now: Instant, attempt: &F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let admitted = self.admit(now).await?;
        admitted.run(self, attempt).await
    }
}

impl Admitted<'_> {
    /// Runs `attempt` under the attempt timeout and the deadline, then
    /// records its outcome (and duration since admission) with the breaker.
    #[inline]
    pub(crate) async fn run<T, F, Fut>(self, call: &PolicyCall<'_>, attempt: &F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        call.started.fetch_add(1, Ordering::Relaxed);
        let attempt_timeout = call.policy.retry.and_then(|r| r.attempt_timeout);
        let limit = call.deadline.limit(self.since, attempt_timeout);
        let result = match tokio::time::timeout_at(limit, attempt()).await {
            Ok(result) => result,
            Err(_) => Err(call.deadline.elapsed(limit, attempt_timeout)),
        };
        if let Some(permit) = self.permit {
            let end = Instant::now();
            permit.record(
                outcome(&result),
                end.saturating_duration_since(self.since),
                end,
            );
        }
        result
    }
}
