//! The per-method circuit breaker.
//!
//! The model is Resilience4j's count-based breaker: a sliding window of the
//! last `window` attempts, each a success or a failure (see
//! [`classify`](super::classify)) and possibly slow. With at least
//! `min_calls` in the window and a failure rate (or slow-call rate) at or
//! above its threshold, the breaker **opens**: calls fail at once with
//! [`ErrorKind::CircuitOpen`], without I/O.
//! After `open_for`, the next call moves it to **half-open**, where exactly
//! `half_open_calls` trial calls are let through and every other call is
//! rejected; if all trials succeed it **closes** (with an empty window),
//! and the first trial that fails reopens it for another `open_for`.
//!
//! ## Why not the `failsafe` crate
//!
//! failsafe was the first candidate. Its half-open state lets every
//! concurrent call through instead of a fixed number of trials; asking
//! whether a call is permitted already moves it from open to half-open; its
//! clock ignores tokio's paused time, so its timing cannot be tested without
//! sleeping; and its default policy costs about 109 ns per call. The breaker
//! here is one small module instead:
//!
//! - The state machine (`state.rs`) is lock-free and knows nothing but
//!   atomics: the state, the generation and the half-open trial counts share
//!   one `AtomicU64`, so every transition is a single compare-and-swap, a
//!   CAS that loses re-reads and decides again, and exactly one caller
//!   performs a transition (and emits its event). A trial that belongs to an
//!   older generation can no longer move the state, and an outcome from an
//!   earlier closed period is not counted in a later one. Its invariants are
//!   written down in `state.rs` and checked under the loom model checker
//!   (`client-core/tests/loom.rs`), which tries every interleaving of a few
//!   threads.
//! - The window is a ring of `AtomicU8` outcomes with running counts of
//!   failures and slow calls; recording a success into a healthy window is
//!   one load, one `fetch_add` and one `swap`. Rates are only computed when
//!   a failure or a slow call is recorded, since nothing else can raise them.
//! - A trial call whose future is dropped (cancelled) gives its trial slot
//!   back, so a half-open breaker never waits for an answer that will not
//!   come.
//! - Time comes from the caller (tokio's clock), so tests pause it.
//! - `min_calls` above `window` could never be reached; it is clamped to the
//!   window, as Resilience4j does.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::CircuitPolicy;
use super::classify::Outcome;
use crate::clock;
pub use crate::observe::CircuitState;
use crate::observe::{Event, EventSink};
use crate::{Error, ErrorKind};

mod state;

use state::{Granted, Phase, Refused, Settings, State};

/// The largest window (and number of half-open trials) a breaker accepts.
pub const MAX_WINDOW: u32 = state::MAX_COUNT;

impl From<Phase> for CircuitState {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open => CircuitState::Open,
            Phase::HalfOpen => CircuitState::HalfOpen,
        }
    }
}

/// An operator's override of a breaker (the dashboard's actions;
/// Resilience4j's `FORCED_OPEN` and `DISABLED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Force {
    /// Back to automatic.
    Auto,
    /// Reject every call, as if open, until set back to `Auto`.
    Open,
    /// Close now with an empty window (and stay automatic).
    Close,
    /// Let every call through and count nothing, until set back to `Auto`.
    Disable,
}

const AUTO: u8 = 0;
const FORCED_OPEN: u8 = 1;
const DISABLED: u8 = 2;

/// One method's circuit breaker; see the [module docs](self).
#[doc(hidden)] // machinery, not API: reachable (unstable) through `__private`
pub struct CircuitBreaker {
    name: Box<str>,
    service: &'static str,
    method: &'static str,
    /// An operator's override: `AUTO`, `FORCED_OPEN` or `DISABLED`.
    forced: AtomicU8,
    policy: CircuitPolicy,
    /// `policy.slow_call` in ticks.
    slow_call: u64,
    state: State,
    events: EventSink,
}

impl CircuitBreaker {
    /// A closed breaker for `service#method`. Out-of-range settings are
    /// clamped: the window to 1–[`MAX_WINDOW`], `min_calls` to the window (as
    /// Resilience4j does), `half_open_calls` to 1–[`MAX_WINDOW`].
    pub fn new(
        service: &'static str,
        method: &'static str,
        policy: CircuitPolicy,
        events: EventSink,
    ) -> Self {
        let state = State::new(Settings {
            window: policy.window,
            min_calls: policy.min_calls,
            failure_rate: policy.failure_rate,
            slow_rate: policy.slow_call_rate,
            open_for: u64::try_from(policy.open_for.as_nanos()).unwrap_or(u64::MAX),
            half_open_calls: policy.half_open_calls,
        });
        let clamped = state.settings();
        let policy = CircuitPolicy {
            window: clamped.window,
            min_calls: clamped.min_calls,
            half_open_calls: clamped.half_open_calls,
            ..policy
        };
        CircuitBreaker {
            name: format!("{service}#{method}").into_boxed_str(),
            service,
            method,
            forced: AtomicU8::new(AUTO),
            slow_call: clock::of(policy.slow_call),
            policy,
            state,
            events,
        }
    }

    /// The breaker's name: `<service>#<method>`, as events report it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy in use (after clamping).
    pub fn policy(&self) -> &CircuitPolicy {
        &self.policy
    }

    /// The current state, read without changing it. (An open breaker whose
    /// `open_for` has passed reads as open until the next call moves it to
    /// half-open.)
    pub fn state(&self) -> CircuitState {
        self.state.phase().into()
    }

    /// `(failures, slow calls, outcomes)` in the sliding window now.
    pub fn window_counts(&self) -> (u64, u64, u64) {
        self.state.window_counts()
    }

    fn emit(&self, from: Phase, to: Phase) {
        self.events.emit(&Event::CircuitStateChanged {
            breaker: &self.name,
            service: self.service,
            method: self.method,
            from: from.into(),
            to: to.into(),
        });
    }

    /// An operator's override; see [`Force`].
    pub fn force(&self, force: Force) {
        match force {
            Force::Auto => self.forced.store(AUTO, Ordering::Release),
            Force::Open => self.forced.store(FORCED_OPEN, Ordering::Release),
            Force::Disable => self.forced.store(DISABLED, Ordering::Release),
            Force::Close => {
                self.forced.store(AUTO, Ordering::Release);
                self.state.force_close(|from, to| self.emit(from, to));
            }
        }
    }

    /// The operator's override now: [`Force::Auto`], [`Force::Open`] or
    /// [`Force::Disable`].
    pub fn forced(&self) -> Force {
        match self.forced.load(Ordering::Acquire) {
            FORCED_OPEN => Force::Open,
            DISABLED => Force::Disable,
            _ => Force::Auto,
        }
    }

    /// Asks to make one attempt.
    ///
    /// # Errors
    /// A [`Rejected`] (no allocation) when the breaker is open, or half-open
    /// with all its trial calls already in flight; it turns into an
    /// [`ErrorKind::CircuitOpen`] error with [`Rejected::into_error`].
    #[inline]
    pub fn admit(&self, now: Instant) -> Result<Permit<'_>, Rejected<'_>> {
        self.admit_at(clock::ticks(now))
    }

    /// [`admit`](Self::admit) at `now` in ticks (the call's one clock
    /// reading, shared by its stages).
    ///
    /// # Errors
    /// As [`admit`](Self::admit).
    #[inline]
    pub(crate) fn admit_at(&self, now: u64) -> Result<Permit<'_>, Rejected<'_>> {
        let forced = self.forced.load(Ordering::Relaxed);
        if forced != AUTO {
            return self.admit_forced(forced);
        }
        match self.state.admit(now, |from, to| self.emit(from, to)) {
            Ok(granted) => Ok(Permit {
                breaker: self,
                granted,
                done: false,
            }),
            Err(refused) => Err(Rejected {
                breaker: self,
                refused,
            }),
        }
    }
}

impl CircuitBreaker {
    #[cold]
    fn admit_forced(&self, forced: u8) -> Result<Permit<'_>, Rejected<'_>> {
        if forced == FORCED_OPEN {
            return Err(Rejected {
                breaker: self,
                refused: Refused::Forced,
            });
        }
        // Disabled: a permit that counts nothing.
        Ok(Permit {
            breaker: self,
            granted: Granted {
                generation: u64::MAX,
                trial: false,
            },
            done: true,
        })
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("policy", &self.policy)
            .finish()
    }
}

/// A call the breaker turned away. Cheap (no allocation); the call
/// pipeline turns it into an error.
#[derive(Clone, Copy)]
#[doc(hidden)] // machinery, not API: reachable (unstable) through `__private`
pub struct Rejected<'a> {
    breaker: &'a CircuitBreaker,
    refused: Refused,
}

impl fmt::Debug for Rejected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("breaker", &self.breaker.name)
            .field("refused", &self.refused)
            .finish()
    }
}

impl Rejected<'_> {
    /// The [`ErrorKind::CircuitOpen`] error for this rejection.
    #[cold]
    pub fn into_error(self) -> Error {
        let name = &self.breaker.name;
        let message = match self.refused {
            Refused::Open { left } => format!(
                "`{name}` rejects calls for another {:?}",
                Duration::from_nanos(left)
            ),
            Refused::TrialsBusy => format!(
                "`{name}` is half-open and its {} trial calls are in flight",
                self.breaker.policy.half_open_calls
            ),
            Refused::Forced => format!("`{name}` is forced open by an operator"),
        };
        Error::new(ErrorKind::CircuitOpen, message)
    }
}

/// Leave to make one attempt; record its outcome with [`Permit::record`].
/// Dropping it unrecorded (a cancelled call) gives a half-open trial slot
/// back.
#[must_use = "record the attempt's outcome"]
#[doc(hidden)] // machinery, not API: reachable (unstable) through `__private`
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    granted: Granted,
    done: bool,
}

impl Permit<'_> {
    /// Records the attempt's outcome and how long it took.
    #[inline]
    pub fn record(self, outcome: Outcome, elapsed: Duration, now: Instant) {
        self.record_at(outcome, clock::of(elapsed), clock::ticks(now));
    }

    /// [`record`](Self::record) with the duration and the time in ticks.
    #[inline]
    pub(crate) fn record_at(mut self, outcome: Outcome, elapsed: u64, now: u64) {
        if self.granted.generation == u64::MAX {
            return; // a disabled breaker's permit counts nothing
        }
        self.done = true;
        let b = self.breaker;
        let emit = |from, to| b.emit(from, to);
        let generation = self.granted.generation;
        let slow = elapsed >= b.slow_call;
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => {
                if self.granted.trial {
                    b.state.record_trial(generation, None, now, emit);
                }
                return;
            }
        };
        if self.granted.trial {
            b.state
                .record_trial(generation, Some(!(failed || slow)), now, emit);
        } else {
            b.state.record_closed(generation, failed, slow, now, emit);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.granted.trial && !self.done {
            let b = self.breaker;
            b.state
                .record_trial(self.granted.generation, None, clock::now(), |f, t| {
                    b.emit(f, t)
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            window: 10,
            min_calls: 4,
            failure_rate: 50,
            slow_call: Duration::from_secs(2),
            slow_call_rate: 100,
            open_for: Duration::from_secs(5),
            half_open_calls: 2,
        }
    }

    type Seen = Arc<Mutex<Vec<(CircuitState, CircuitState)>>>;

    fn recorder() -> (EventSink, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink = EventSink::new(move |e: &Event<'_>| {
            if let Event::CircuitStateChanged { from, to, .. } = e {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((*from, *to));
            }
        });
        (sink, seen)
    }

    const FAST: Duration = Duration::from_millis(1);

    fn call(b: &CircuitBreaker, outcome: Outcome) -> Result<(), Error> {
        let now = Instant::now();
        b.admit(now)
            .map_err(Rejected::into_error)?
            .record(outcome, FAST, now);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_failure_rate_once_min_calls_are_in() {
        let b = CircuitBreaker::new("svc", "m", policy(), EventSink::none());
        for _ in 0..3 {
            assert!(call(&b, Outcome::Failure).is_ok());
        }
        assert_eq!(b.state(), CircuitState::Closed, "3 < min_calls");
        assert!(call(&b, Outcome::Failure).is_ok());
        assert_eq!(b.state(), CircuitState::Open);
        let err = call(&b, Outcome::Success).err();
        assert!(err.is_some_and(|e| e.is_circuit_open()));
    }

    #[tokio::test(start_paused = true)]
    async fn stays_closed_below_the_rate() {
        let b = CircuitBreaker::new("svc", "m", policy(), EventSink::none());
        for i in 0..40 {
            let outcome = if i % 4 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert!(call(&b, outcome).is_ok());
        }
        assert_eq!(b.state(), CircuitState::Closed, "at most 30% < 50%");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides_old_failures_out() {
        let b = CircuitBreaker::new("svc", "m", policy(), EventSink::none());
        for _ in 0..4 {
            let _ = call(&b, Outcome::Success);
        }
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure);
        }
        assert_eq!(b.state(), CircuitState::Open, "4 of 8 = 50%");
        let b = CircuitBreaker::new("svc", "m", policy(), EventSink::none());
        for _ in 0..3 {
            let _ = call(&b, Outcome::Failure);
        }
        for _ in 0..10 {
            let _ = call(&b, Outcome::Success);
        }
        // The 3 failures slid out; 4 new ones are 40% of the window of 10.
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        let _ = call(&b, Outcome::Failure);
        assert_eq!(b.state(), CircuitState::Open, "5 of 10");
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_the_trials_through_then_closes() {
        let (sink, seen) = recorder();
        let b = CircuitBreaker::new("svc", "m", policy(), sink);
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(b.admit(Instant::now()).is_err(), "still open");
        tokio::time::advance(Duration::from_millis(1)).await;
        let now = Instant::now();
        let first = b.admit(now).ok();
        let second = b.admit(now).ok();
        assert!(b.admit(now).is_err(), "only two trials");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        if let Some(p) = first {
            p.record(Outcome::Success, FAST, now);
        }
        assert_eq!(b.state(), CircuitState::HalfOpen);
        if let Some(p) = second {
            p.record(Outcome::Success, FAST, now);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        let events = seen.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(
            events,
            [
                (CircuitState::Closed, CircuitState::Open),
                (CircuitState::Open, CircuitState::HalfOpen),
                (CircuitState::HalfOpen, CircuitState::Closed),
            ]
        );
        // Closed with an empty window: one failure does not reopen it.
        let _ = call(&b, Outcome::Failure);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_and_stale_trials_change_nothing() {
        let b = CircuitBreaker::new("svc", "m", policy(), EventSink::none());
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        let a = b.admit(now).ok();
        let late = b.admit(now).ok();
        if let Some(p) = a {
            p.record(Outcome::Failure, FAST, now);
        }
        assert_eq!(b.state(), CircuitState::Open);
        // The other trial answers after the breaker reopened: ignored.
        if let Some(p) = late {
            p.record(Outcome::Success, FAST, now);
        }
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.admit(now).is_err(), "open for another 5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_trial_gives_its_slot_back() {
        let b = CircuitBreaker::new("svc", "m", policy(), EventSink::none());
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        let first = b.admit(now).ok();
        let second = b.admit(now).ok();
        assert!(b.admit(now).is_err());
        drop(first);
        let third = b.admit(now);
        assert!(third.is_ok(), "the dropped trial's slot is free again");
        drop((second, third));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_open_at_the_slow_rate() {
        let p = CircuitPolicy {
            slow_call: Duration::from_millis(100),
            slow_call_rate: 50,
            ..policy()
        };
        let b = CircuitBreaker::new("svc", "m", p, EventSink::none());
        let now = Instant::now();
        for _ in 0..4 {
            if let Ok(permit) = b.admit(now) {
                permit.record(Outcome::Success, Duration::from_millis(150), now);
            }
        }
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn many_threads_record_without_losing_counts() {
        let p = CircuitPolicy {
            window: 1000,
            min_calls: 1,
            failure_rate: 100,
            ..policy()
        };
        let b = Arc::new(CircuitBreaker::new("svc", "m", p, EventSink::none()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        let now = Instant::now();
                        if let Ok(permit) = b.admit(now) {
                            permit.record(Outcome::Success, FAST, now);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        assert_eq!(b.window_counts(), (0, 0, 1000));
        assert_eq!(b.state.recount(), (0, 0, 1000));
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn min_calls_above_the_window_is_clamped_so_the_breaker_can_open() {
        let p = CircuitPolicy {
            window: 4,
            min_calls: 10,
            ..policy()
        };
        let b = CircuitBreaker::new("svc", "m", p, EventSink::none());
        assert_eq!(b.policy().min_calls, 4);
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure);
        }
        assert_eq!(b.state(), CircuitState::Open, "4 failures of a window of 4");
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_from_an_earlier_closed_period_is_not_counted() {
        let b = CircuitBreaker::new("svc", "m", policy(), EventSink::none());
        let now = Instant::now();
        // Admitted while closed; answers only after the breaker opened and
        // closed again.
        let late = b.admit(now).ok();
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..2 {
            let _ = call(&b, Outcome::Success);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        if let Some(p) = late {
            p.record(Outcome::Failure, FAST, Instant::now());
        }
        assert_eq!(b.window_counts(), (0, 0, 0), "the stale failure is ignored");
    }

    /// The defect report's reproduction: many tasks on several threads push
    /// a breaker with three trials and a tiny `open_for` through every
    /// transition with mixed outcomes. Before trial transitions looped on a
    /// lost compare-and-swap, a failing trial could lose its CAS to a
    /// concurrent success and leave the breaker half-open with every trial
    /// issued, rejecting every call forever. (The loom test proves it for
    /// every interleaving of three threads; this one runs the real thing.)
    #[test]
    fn concurrent_trials_never_leave_the_breaker_stuck_half_open() {
        let p = CircuitPolicy {
            window: 4,
            min_calls: 2,
            failure_rate: 50,
            open_for: Duration::from_micros(50),
            half_open_calls: 3,
            ..policy()
        };
        let b = Arc::new(CircuitBreaker::new("svc", "m", p, EventSink::none()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let now = Instant::now();
                        let Ok(permit) = b.admit(now) else { continue };
                        match (i.wrapping_mul(2_654_435_761) ^ t) % 3 {
                            0 => permit.record(Outcome::Success, FAST, Instant::now()),
                            1 => permit.record(Outcome::Failure, FAST, Instant::now()),
                            _ => drop(permit), // cancelled
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        // Every trial has ended. Once open_for has passed, calls must be let
        // through again and three successes must close the breaker.
        let later = Instant::now() + Duration::from_millis(1);
        for _ in 0..3 {
            match b.admit(later) {
                Ok(permit) => permit.record(Outcome::Success, FAST, later),
                Err(rejected) => panic!("stuck: {}", rejected.into_error()),
            }
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
