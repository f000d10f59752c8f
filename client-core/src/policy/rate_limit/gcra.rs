//! The rate limiter's state on its own: GCRA with reservations, one atomic
//! word, no clock (ticks are passed in), only atomics through
//! `crate::sync`, so that the model checker runs this very file (see
//! `client-core/tests/loom.rs`).
//!
//! GCRA (the generic cell rate algorithm) keeps one number, the
//! theoretical arrival time `tat`: the instant at which the limiter would
//! be exactly "full" again. With an emission interval `T` (one permit every
//! `T` ticks) and a tolerance `τ = T·(burst − 1)`, a permit asked for at
//! `now` is the one due at `max(tat, now) − τ`; taking it moves `tat` to
//! `max(tat, now) + T`. A permit due at or before `now` is free; one due
//! later may be **reserved**: `tat` moves on at once and the caller waits
//! until its permit is due. So waiters queue by reservation: the n-th one
//! knows its own turn the moment it asks, a turn too late is refused at
//! once, and no waiter wakes for a permit another will take.
//!
//! ## Invariants (checked under loom)
//!
//! 1. No permit is handed out twice: every reservation is one successful
//!    compare-and-swap from the `tat` it read, so reservations that race
//!    get distinct, `T`-spaced due times.
//! 2. A refusal changes nothing: only a granted reservation writes `tat`.
//! 3. Over any span of `d` ticks, at most `burst + d / T` permits fall due
//!    (the rate); arithmetic saturates, so no input overflows.

use crate::sync::atomic::{AtomicU64, Ordering};

/// GCRA state and its two constants, in ticks.
#[derive(Debug)]
pub(crate) struct Gcra {
    /// The theoretical arrival time.
    tat: AtomicU64,
    /// `T`: ticks between two permits.
    interval: u64,
    /// `τ`: how far ahead of `tat` a permit may be taken (`T·(burst − 1)`).
    tolerance: u64,
}

impl Gcra {
    /// A limiter of one permit every `interval` ticks (at least 1), `burst`
    /// of them at once (at least 1), starting full.
    pub(crate) fn new(interval: u64, burst: u32) -> Self {
        let interval = interval.max(1);
        Gcra {
            tat: AtomicU64::new(0),
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1)) - 1),
        }
    }

    /// Reserves the next permit if it falls due no later than `latest`:
    /// `Ok(due)`, the tick from which it may be used (at most `now` when it
    /// is free at once); `Err(due)`, when it would fall due, if it is later
    /// (nothing reserved).
    pub(crate) fn reserve(&self, now: u64, latest: u64) -> Result<u64, u64> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            let due = start.saturating_sub(self.tolerance);
            if due > latest {
                return Err(due);
            }
            let next = start.saturating_add(self.interval);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(due),
                Err(seen) => tat = seen,
            }
        }
    }
}
