//! The retry budget: retries may add at most a share of the calls.
//!
//! A fixed "retry 3 times" is safe when one call fails and dangerous when a
//! dependency is down: every caller triples its load on the service that is
//! already struggling, a retry storm. A budget caps retries as a share of
//! recent traffic instead. Each call deposits `ratio` of a token, each retry
//! (and each hedged attempt) withdraws a whole one, and deposits expire after
//! the window, so over any window retries add at most `ratio` to the calls,
//! plus a small reserve (`min_per_sec` × window) so that a client with little
//! traffic can still retry at all. Defaults are Finagle's: 20 % over 10 s,
//! with at least 10 retries per second
//! (<https://twitter.github.io/finagle/guide/Clients.html#retries>; tower's
//! `TpsBudget` is the same model).
//!
//! ## Why not tower's `TpsBudget`
//!
//! It locks a mutex on every deposit, and every call deposits: all calls of
//! a client would contend on one lock. Here the window is a ring of
//! one-second slots, each one `AtomicU64` holding the slot's second and its
//! balance; a deposit is one compare-and-swap on the current slot. A
//! withdrawal sums the ring (sixty loads) and happens only on the retry path.
//! Time is read from tokio's clock, so tests can pause it. The ring is in
//! `ring.rs`, with its invariants, checked under the loom model checker.

use std::time::Duration;

use tokio::time::Instant;

use crate::clock;

mod ring;

use ring::{Ring, SCALE};

/// A per-client retry budget; see the [module docs](self).
#[doc(hidden)] // machinery, not API: reachable (unstable) through `__private`
pub struct RetryBudget {
    /// Ticks when it was made: its seconds count from here.
    start: u64,
    /// What one call deposits, in thousandths of a retry.
    deposit: i64,
    ring: Ring,
}

impl RetryBudget {
    /// A budget letting retries add `ratio` (0.0–1.0 and beyond) to the
    /// calls of the last `window`, with `min_per_sec` retries per second
    /// always allowed. `window` is rounded to whole seconds, 1 to 60.
    pub fn new(ratio: f32, min_per_sec: u32, window: Duration) -> RetryBudget {
        let window_secs = window.as_secs().clamp(1, ring::SLOTS as u64);
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        RetryBudget {
            start: clock::now(),
            deposit: (f64::from(ratio) * SCALE as f64).round() as i64,
            ring: Ring::new(
                window_secs,
                i64::from(min_per_sec).saturating_mul(window_secs as i64 * SCALE),
            ),
        }
    }

    #[inline]
    fn second(&self, now: u64) -> u64 {
        now.saturating_sub(self.start) / 1_000_000_000
    }

    /// Records a call (not a retry). On every call: one CAS.
    #[inline]
    pub fn deposit(&self, now: Instant) {
        self.deposit_at(clock::ticks(now));
    }

    /// [`deposit`](Self::deposit) at `now` in ticks.
    #[inline]
    pub(crate) fn deposit_at(&self, now: u64) {
        if self.deposit > 0 {
            self.ring.add(self.second(now), self.deposit);
        }
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self, now: Instant) -> bool {
        self.withdraw_at(clock::ticks(now))
    }

    /// [`withdraw`](Self::withdraw) at `now` in ticks.
    pub(crate) fn withdraw_at(&self, now: u64) -> bool {
        self.ring.withdraw(self.second(now))
    }

    /// Retries that could be taken now (rounded down).
    pub fn remaining(&self, now: Instant) -> u64 {
        self.remaining_at(clock::ticks(now))
    }

    /// [`remaining`](Self::remaining) at `now` in ticks.
    pub(crate) fn remaining_at(&self, now: u64) -> u64 {
        u64::try_from(self.ring.balance(self.second(now)) / SCALE).unwrap_or(0)
    }
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &(self.deposit as f64 / SCALE as f64))
            .field("reserve", &(self.ring.reserve() / SCALE))
            .field("window_secs", &self.ring.window_secs())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reserve_allows_min_per_sec_times_window() {
        let budget = RetryBudget::new(0.0, 2, Duration::from_secs(3));
        let now = Instant::now();
        let taken = (0..100).take_while(|_| budget.withdraw(now)).count();
        assert_eq!(taken, 6, "2/s over 3 s");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_add_at_most_the_ratio_of_calls() {
        let budget = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        let now = Instant::now();
        for _ in 0..100 {
            budget.deposit(now);
        }
        let taken = (0..1000).take_while(|_| budget.withdraw(now)).count();
        assert_eq!(taken, 20);
        assert!(!budget.withdraw(now));
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_with_the_window() {
        let budget = RetryBudget::new(0.5, 0, Duration::from_secs(2));
        for _ in 0..10 {
            budget.deposit(Instant::now());
        }
        assert_eq!(budget.remaining(Instant::now()), 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(budget.remaining(Instant::now()), 5, "still in the window");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(budget.remaining(Instant::now()), 0, "expired");
        assert!(!budget.withdraw(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_is_reused_after_it_wraps_around() {
        let budget = RetryBudget::new(1.0, 0, Duration::from_secs(1));
        budget.deposit(Instant::now());
        assert_eq!(budget.remaining(Instant::now()), 1);
        tokio::time::advance(Duration::from_secs(ring::SLOTS as u64)).await;
        // Same slot index, a later second: the old balance must not count.
        assert_eq!(budget.remaining(Instant::now()), 0);
        budget.deposit(Instant::now());
        assert_eq!(budget.remaining(Instant::now()), 1);
    }

    #[test]
    fn concurrent_deposits_are_all_counted() {
        let budget = std::sync::Arc::new(RetryBudget::new(1.0, 0, Duration::from_secs(60)));
        let now = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = budget.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        b.deposit(now);
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        assert_eq!(budget.remaining(now), 40_000);
    }
}
