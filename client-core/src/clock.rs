//! One reading of tokio's clock per point in a call, as *ticks*:
//! nanoseconds since a process-wide epoch, a plain `u64`.
//!
//! Every stage of a call needs the time: the deadline, the retry budget's
//! current second, the breaker's open period and slow-call clock, the limit
//! the watch cuts an attempt at. Each turning an `Instant` into a number of
//! its own costs a subtraction of two timespecs (and a division) per use; a
//! call read the clock twice but subtracted instants six times, about 300
//! instructions per call. Now a call reads the clock where it must (start,
//! end of an attempt), turns the reading into ticks once, and hands the
//! number to every stage; the arithmetic on it is integer arithmetic,
//! saturating.
//!
//! Time comes from tokio's clock, so tests under a paused clock control it.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// An hour before the first reading. Not the first reading itself: each
/// paused test runtime has a clock of its own, frozen at the real time it
/// was made, and one made just before the epoch was taken would read
/// "before the epoch" (0 ticks, saturated) until advanced past it.
fn epoch() -> Instant {
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

/// `at` in ticks (0 for an instant before the epoch).
#[inline]
pub(crate) fn ticks(at: Instant) -> u64 {
    let d = at.saturating_duration_since(epoch());
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// Now, in ticks.
#[inline]
pub(crate) fn now() -> u64 {
    ticks(Instant::now())
}

/// The instant `t` ticks after the epoch (far in the future for a `t` that
/// does not fit).
pub(crate) fn instant(t: u64) -> Instant {
    let e = epoch();
    e.checked_add(Duration::from_nanos(t))
        .or_else(|| e.checked_add(crate::spec::MAX_DURATION))
        .unwrap_or(e)
}

/// A duration in ticks, saturating.
#[inline]
pub(crate) fn of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_follow_tokios_clock_and_round_trip() {
        let a = now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(now() - a, 1_500_000_000);
        let t = now();
        assert_eq!(ticks(instant(t)), t);
        assert!(instant(u64::MAX) > Instant::now(), "saturates far ahead");
        assert_eq!(of(Duration::MAX), u64::MAX);
    }
}
