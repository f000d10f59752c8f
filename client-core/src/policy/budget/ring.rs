//! The budget's lock-free ring of one-second slots, on its own: no clock,
//! only atomics (through `crate::sync`, so that the model checker can run
//! this very file; see `client-core/tests/loom.rs`).
//!
//! Each slot is one `AtomicU64` holding the second it belongs to (high 32
//! bits) and its balance in thousandths of a token (low 32 bits, signed).
//! Adding to a slot that still holds an older second starts it afresh.
//!
//! ## Invariants (checked under loom)
//!
//! 1. No deposit or withdrawal is lost: every `add` is a CAS loop that
//!    re-reads on failure, so at quiescence the balance is the reserve plus
//!    every deposit minus every granted withdrawal (within the window).
//! 2. The budget never goes negative at quiescence: a withdrawal is granted
//!    only if the balance it saw after taking its token was at least 0, and
//!    an overdrawn one gives its token back. While withdrawals race, one may
//!    see another's token taken and be refused although the sum would have
//!    allowed both: the error is always towards fewer retries.

use crate::sync::atomic::{AtomicU64, Ordering};

/// Tokens are counted in thousandths so that a deposit of 0.2 is exact.
pub(crate) const SCALE: i64 = 1000;

/// Number of one-second slots: the window is at most this long.
pub(crate) const SLOTS: usize = 60;

/// `(second << 32) | (balance as u32)`, second modulo 2^32.
fn pack(second: u64, balance: i32) -> u64 {
    ((second & u64::from(u32::MAX)) << 32) | u64::from(balance as u32)
}

fn unpack(word: u64) -> (u64, i32) {
    (word >> 32, word as u32 as i32)
}

/// The ring of slots and the always-available reserve.
pub(crate) struct Ring {
    window_secs: u64,
    /// Always available, in thousandths.
    reserve: i64,
    slots: Box<[AtomicU64]>,
}

impl Ring {
    /// A ring counting over `window_secs` (clamped to 1–[`SLOTS`]) with
    /// `reserve` thousandths always available.
    pub(crate) fn new(window_secs: u64, reserve: i64) -> Ring {
        Ring {
            window_secs: window_secs.clamp(1, SLOTS as u64),
            reserve,
            // Second 0 is a real second: start the slots "long ago" (u32::MAX).
            slots: (0..SLOTS)
                .map(|_| AtomicU64::new(pack(u64::from(u32::MAX), 0)))
                .collect(),
        }
    }

    /// The window in seconds.
    pub(crate) fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// The reserve in thousandths.
    pub(crate) fn reserve(&self) -> i64 {
        self.reserve
    }

    /// Adds `amount` (thousandths) to `second`'s slot, starting it afresh if
    /// it last held an older second. Saturates at the `i32` range.
    pub(crate) fn add(&self, second: u64, amount: i64) {
        let second = second & u64::from(u32::MAX);
        let slot = &self.slots[(second % SLOTS as u64) as usize];
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            let (held, balance) = unpack(word);
            let base = if held == second {
                i64::from(balance)
            } else {
                0
            };
            let next = (base + amount).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
            match slot.compare_exchange_weak(
                word,
                pack(second, next),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(current) => word = current,
            }
        }
    }

    /// Sum of the slots within the window ending at `second`, plus the
    /// reserve, in thousandths.
    pub(crate) fn balance(&self, second: u64) -> i64 {
        let second = second & u64::from(u32::MAX);
        let live = self.slots.iter().filter_map(|slot| {
            let (held, balance) = unpack(slot.load(Ordering::Acquire));
            let age = second.wrapping_sub(held) & u64::from(u32::MAX);
            (age < self.window_secs).then_some(i64::from(balance))
        });
        self.reserve + live.sum::<i64>()
    }

    /// Takes one whole token at `second`; `false` (and nothing taken) when
    /// that would overdraw the budget.
    pub(crate) fn withdraw(&self, second: u64) -> bool {
        self.add(second, -SCALE);
        if self.balance(second) >= 0 {
            return true;
        }
        self.add(second, SCALE);
        false
    }
}
