//! The per-method bulkhead: at most `max_concurrent` attempts of a method in
//! flight; the next waits up to `max_wait` for a slot, then fails with
//! [`ErrorKind::BulkheadFull`].
//!
//! Resilience4j's semaphore bulkhead, on tokio's `Semaphore` (fair, and its
//! permit is a guard: a dropped call future gives its slot back at any
//! point, waiting or in flight). A wait never outlasts the call's deadline.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::BulkheadPolicy;
use super::deadline::after;
use crate::{Error, ErrorKind};

/// One method's bulkhead.
#[derive(Debug)]
#[doc(hidden)] // machinery, not API: reachable (unstable) through `__private`
pub struct Bulkhead {
    slots: Semaphore,
    policy: BulkheadPolicy,
}

impl Bulkhead {
    /// A bulkhead with `policy.max_concurrent` free slots.
    pub fn new(policy: BulkheadPolicy) -> Self {
        Bulkhead {
            slots: Semaphore::new(policy.max_concurrent as usize),
            policy,
        }
    }

    /// Takes a slot, waiting up to `max_wait` (and never past `deadline`).
    ///
    /// # Errors
    /// [`ErrorKind::BulkheadFull`] when no slot came free in time.
    pub async fn enter(&self, deadline: Instant) -> Result<SemaphorePermit<'_>, Error> {
        match self.try_enter() {
            Some(permit) => Ok(permit),
            None => self.wait(deadline).await,
        }
    }

    /// Takes a free slot, if there is one: the fast path, no future.
    #[inline]
    pub fn try_enter(&self) -> Option<SemaphorePermit<'_>> {
        self.slots.try_acquire().ok()
    }

    /// Waits up to `max_wait` (never past `deadline`) for a slot.
    ///
    /// # Errors
    /// [`ErrorKind::BulkheadFull`] when no slot came free in time.
    pub async fn wait(&self, deadline: Instant) -> Result<SemaphorePermit<'_>, Error> {
        if !self.policy.max_wait.is_zero() {
            let until = after(Instant::now(), self.policy.max_wait)
                .map_or(deadline, |end| end.min(deadline));
            if let Ok(Ok(permit)) = tokio::time::timeout_at(until, self.slots.acquire()).await {
                return Ok(permit);
            }
        }
        Err(self.full())
    }

    /// The error of a full bulkhead.
    #[cold]
    pub fn full(&self) -> Error {
        Error::new(
            ErrorKind::BulkheadFull,
            format!(
                "{} calls already in flight (waited {:?})",
                self.policy.max_concurrent, self.policy.max_wait
            ),
        )
    }

    /// Its size.
    pub fn max_concurrent(&self) -> u32 {
        self.policy.max_concurrent
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// The configured wait.
    pub fn max_wait(&self) -> Duration {
        self.policy.max_wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn full_fails_at_once_without_wait_and_after_max_wait_with_one() {
        let far = Instant::now() + Duration::from_secs(60);
        let b = Bulkhead::new(BulkheadPolicy {
            max_concurrent: 1,
            max_wait: Duration::ZERO,
        });
        let held = b.enter(far).await;
        assert!(held.is_ok());
        let err = b.enter(far).await.err();
        assert!(err.is_some_and(|e| e.is_bulkhead_full()));
        drop(held);
        assert!(b.enter(far).await.is_ok(), "slot returned on drop");

        let b = Bulkhead::new(BulkheadPolicy {
            max_concurrent: 1,
            max_wait: Duration::from_millis(100),
        });
        let _held = b.enter(far).await;
        let start = Instant::now();
        assert!(b.enter(far).await.is_err());
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // The deadline is shorter than max_wait: it wins.
        let start = Instant::now();
        assert!(b.enter(start + Duration::from_millis(30)).await.is_err());
        assert_eq!(start.elapsed(), Duration::from_millis(30));
    }
}
