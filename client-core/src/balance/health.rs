//! What the balancer counts per instance (calls in flight, consecutive
//! failures, ejections) and the ejection decision, on their own: no clock,
//! only atomics and one lock (through `crate::sync`, so that the model
//! checker can run this very file; see `client-core/tests/loom.rs`).
//!
//! ## Invariants (checked under loom)
//!
//! 1. Every call counted in flight is counted out once: the balancer's
//!    pick guard calls [`Health::leave`] on drop, whatever happens to the
//!    call.
//! 2. However failures race, no more than `max_percent` of the set is
//!    ejected at once (Envoy's `max_ejection_percent`). Deciding an
//!    ejection reads every instance's state and then writes one, which no
//!    single CAS can make atomic; ejections are rare, so the decision takes
//!    a short lock that only failing calls at the threshold ever touch (the
//!    happy path never does).

use crate::sync::Mutex;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// When an instance is ejected, in the caller's clock units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ejection {
    /// Consecutive failures that eject.
    pub(crate) consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times this.
    pub(crate) base: u64,
    /// The longest ejection.
    pub(crate) max: u64,
    /// The most of the set that may be ejected at once, in percent.
    pub(crate) max_percent: u8,
}

/// One instance's counters.
#[derive(Debug)]
pub(crate) struct Health {
    in_flight: AtomicU32,
    failures: AtomicU32,
    /// Ejected until this time; 0 when never.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl Health {
    pub(crate) fn new() -> Health {
        Health {
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    /// Counts a call in flight.
    #[inline]
    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call out.
    #[inline]
    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Calls in flight now.
    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the instance is ejected at `now`.
    #[inline]
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now
    }

    /// Times the instance was ejected.
    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// A success: the failure streak ends.
    #[inline]
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }
}

/// Decides ejections, one at a time.
#[derive(Debug)]
pub(crate) struct Ejector {
    deciding: Mutex<()>,
}

impl Ejector {
    pub(crate) fn new() -> Ejector {
        Ejector {
            deciding: Mutex::new(()),
        }
    }

    /// Counts a failure of `health`, one of `all`; ejects it when its streak
    /// reaches the policy's and the cap allows. `true` if it was ejected.
    pub(crate) fn failed<'a>(
        &self,
        health: &Health,
        all: impl IntoIterator<Item = &'a Health>,
        policy: &Ejection,
        now: u64,
    ) -> bool {
        let failures = health
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures < policy.consecutive_failures || health.is_ejected(now) {
            return false;
        }
        let _deciding = self.deciding.lock().unwrap_or_else(|p| p.into_inner());
        if health.is_ejected(now) {
            return false; // ejected by a racing failure meanwhile
        }
        let (mut ejected, mut total) = (0usize, 0usize);
        for h in all {
            total += 1;
            ejected += usize::from(h.is_ejected(now));
        }
        if (ejected + 1) * 100 > total * usize::from(policy.max_percent) {
            return false; // would eject too much of the set
        }
        let times = health
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let length = policy.base.saturating_mul(u64::from(times)).min(policy.max);
        health
            .ejected_until
            .store(now.saturating_add(length), Ordering::Release);
        health.failures.store(0, Ordering::Relaxed);
        true
    }
}
