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
//! - The state, the generation and the half-open trial counts share one
//!   `AtomicU64`, so every transition is a single compare-and-swap and
//!   exactly one caller performs it (and emits its event). A trial that
//!   belongs to an older generation can no longer move the state.
//! - The window is a ring of `AtomicU8` outcomes with running counts of
//!   failures and slow calls; recording a success into a healthy window is
//!   one `fetch_add` and one `swap`. Rates are only computed when a failure
//!   or a slow call is recorded, since nothing else can raise them.
//! - A trial call whose future is dropped (cancelled) gives its trial slot
//!   back, so a half-open breaker never waits for an answer that will not
//!   come.
//! - Time comes from the caller (tokio's clock), so tests pause it.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::CircuitPolicy;
use super::classify::Outcome;
use crate::observe::{Event, EventSink};
use crate::{Error, ErrorKind};

/// The largest window (and number of half-open trials) a breaker accepts.
pub const MAX_WINDOW: u32 = 10_000;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls fail at once, without I/O.
    Open,
    /// A fixed number of trial calls go through; the rest fail at once.
    HalfOpen,
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        })
    }
}

// ===== the state word =====
//
// bits 0..2   state (0 closed, 1 open, 2 half-open)
// bits 2..18  trials issued (half-open)
// bits 18..34 trials succeeded (half-open)
// bits 34..64 generation, bumped by every transition

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const COUNT_MASK: u64 = 0xFFFF;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn new(state: u64, issued: u64, succeeded: u64, generation: u64) -> Word {
        Word(state | (issued << 2) | (succeeded << 18) | (generation << 34))
    }
    fn state(self) -> u64 {
        self.0 & 0b11
    }
    fn issued(self) -> u64 {
        (self.0 >> 2) & COUNT_MASK
    }
    fn succeeded(self) -> u64 {
        (self.0 >> 18) & COUNT_MASK
    }
    fn generation(self) -> u64 {
        self.0 >> 34
    }
    /// The next generation in `state`, with no trials.
    fn next(self, state: u64) -> Word {
        Word::new(state, 0, 0, (self.generation() + 1) & ((1 << 30) - 1))
    }
    fn public(self) -> CircuitState {
        match self.state() {
            CLOSED => CircuitState::Closed,
            OPEN => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }
}

const FILLED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// One method's circuit breaker; see the [module docs](self).
pub struct CircuitBreaker {
    name: Box<str>,
    policy: CircuitPolicy,
    /// `policy.open_for` in nanoseconds.
    open_for: u64,
    epoch: Instant,
    word: AtomicU64,
    /// When the breaker last opened, in nanoseconds since `epoch`.
    opened_at: AtomicU64,
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
    events: EventSink,
}

impl CircuitBreaker {
    /// A closed breaker named `name` (`<service>#<method>`).
    pub fn new(name: impl Into<Box<str>>, policy: CircuitPolicy, events: EventSink) -> Self {
        let window = policy.window.clamp(1, MAX_WINDOW) as usize;
        CircuitBreaker {
            name: name.into(),
            open_for: u64::try_from(policy.open_for.as_nanos()).unwrap_or(u64::MAX),
            policy,
            epoch: Instant::now(),
            word: AtomicU64::new(Word::new(CLOSED, 0, 0, 0).0),
            opened_at: AtomicU64::new(0),
            slots: (0..window).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            events,
        }
    }

    /// The breaker's name: `<service>#<method>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state, read without changing it. (An open breaker whose
    /// `open_for` has passed reads as open until the next call moves it to
    /// half-open.)
    pub fn state(&self) -> CircuitState {
        Word(self.word.load(Ordering::Acquire)).public()
    }

    /// Nanoseconds since the breaker was made (u64 arithmetic: 584 years).
    #[inline]
    fn nanos(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    /// Asks to make one attempt.
    ///
    /// # Errors
    /// A [`Rejected`] (no allocation) when the breaker is open, or half-open
    /// with all its trial calls already in flight; it turns into an
    /// [`ErrorKind::CircuitOpen`] error with [`Rejected::into_error`].
    #[inline]
    pub fn admit(&self, now: Instant) -> Result<Permit<'_>, Rejected<'_>> {
        let word = Word(self.word.load(Ordering::Acquire));
        match word.state() {
            CLOSED => Ok(self.permit(word, false)),
            // The common rejection, kept inline: one load, one subtraction.
            OPEN => match self.still_open(now) {
                Some(rejected) => Err(rejected),
                None => self.admit_slow(word, now),
            },
            _ => self.admit_slow(word, now),
        }
    }

    #[inline]
    fn permit(&self, word: Word, trial: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            generation: word.generation(),
            trial,
            done: false,
        }
    }

    /// The rejection of an open breaker whose `open_for` has not passed.
    #[inline]
    fn still_open(&self, now: Instant) -> Option<Rejected<'_>> {
        let opened = self.opened_at.load(Ordering::Acquire);
        let elapsed = self.nanos(now).saturating_sub(opened);
        (elapsed < self.open_for).then(|| Rejected {
            breaker: self,
            open_for_another: Some(Duration::from_nanos(self.open_for - elapsed)),
        })
    }

    #[cold]
    fn admit_slow(&self, mut word: Word, now: Instant) -> Result<Permit<'_>, Rejected<'_>> {
        loop {
            match word.state() {
                CLOSED => return Ok(self.permit(word, false)),
                OPEN => {
                    if let Some(rejected) = self.still_open(now) {
                        return Err(rejected);
                    }
                    let half = word.next(HALF_OPEN);
                    match self.cas(word, half) {
                        Ok(()) => {
                            self.emit(CircuitState::Open, CircuitState::HalfOpen);
                            word = half;
                        }
                        Err(current) => word = current,
                    }
                }
                _ => {
                    if word.issued() >= u64::from(self.policy.half_open_calls) {
                        return Err(Rejected {
                            breaker: self,
                            open_for_another: None,
                        });
                    }
                    let taken = Word(word.0 + (1 << 2));
                    match self.cas(word, taken) {
                        Ok(()) => return Ok(self.permit(word, true)),
                        Err(current) => word = current,
                    }
                }
            }
        }
    }

    fn cas(&self, from: Word, to: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Word)
    }

    fn emit(&self, from: CircuitState, to: CircuitState) {
        self.events.emit(&Event::CircuitStateChanged {
            breaker: &self.name,
            from,
            to,
        });
    }

    /// Adds an outcome to the window; opens the breaker when a threshold is
    /// reached.
    fn record_closed(&self, failed: bool, slow: bool, now: Instant) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let window = self.slots.len() as u64;
        let bits = FILLED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let old = self.slots[(n % window) as usize].swap(bits, Ordering::Relaxed);
        let changed = old ^ bits;
        if changed & FAILED != 0 {
            if failed {
                self.failures.fetch_add(1, Ordering::Relaxed);
            } else {
                self.failures.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if changed & SLOW != 0 {
            if slow {
                self.slow.fetch_add(1, Ordering::Relaxed);
            } else {
                self.slow.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if !(failed || slow) {
            return; // a success cannot raise a rate
        }
        let total = (n + 1).min(window);
        if total < u64::from(self.policy.min_calls) {
            return;
        }
        let over = |count: u64, rate: u8| count * 100 >= u64::from(rate) * total;
        if over(
            self.failures.load(Ordering::Relaxed),
            self.policy.failure_rate,
        ) || over(
            self.slow.load(Ordering::Relaxed),
            self.policy.slow_call_rate,
        ) {
            let word = Word(self.word.load(Ordering::Acquire));
            if word.state() == CLOSED {
                self.open(word, CircuitState::Closed, now);
            }
        }
    }

    /// Moves `word` to open; only the caller whose CAS wins emits the event.
    fn open(&self, word: Word, from: CircuitState, now: Instant) {
        self.opened_at.store(self.nanos(now), Ordering::Release);
        if self.cas(word, word.next(OPEN)).is_ok() {
            self.emit(from, CircuitState::Open);
        }
    }

    fn reset_window(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        self.next.store(0, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.slow.store(0, Ordering::Relaxed);
    }

    /// A trial's outcome (or its cancellation, `None`).
    fn record_trial(&self, generation: u64, outcome: Option<bool>, now: Instant) {
        let mut word = Word(self.word.load(Ordering::Acquire));
        loop {
            if word.state() != HALF_OPEN || word.generation() != generation {
                return; // a trial of an earlier half-open period
            }
            match outcome {
                Some(false) => {
                    self.open(word, CircuitState::HalfOpen, now);
                    return;
                }
                None => {
                    let released = Word(word.0 - (1 << 2));
                    match self.cas(word, released) {
                        Ok(()) => return,
                        Err(current) => word = current,
                    }
                }
                Some(true) => {
                    let succeeded = word.succeeded() + 1;
                    if succeeded >= u64::from(self.policy.half_open_calls) {
                        self.reset_window();
                        match self.cas(word, word.next(CLOSED)) {
                            Ok(()) => {
                                self.emit(CircuitState::HalfOpen, CircuitState::Closed);
                                return;
                            }
                            Err(current) => word = current,
                        }
                    } else {
                        match self.cas(word, Word(word.0 + (1 << 18))) {
                            Ok(()) => return,
                            Err(current) => word = current,
                        }
                    }
                }
            }
        }
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
#[derive(Debug, Clone, Copy)]
pub struct Rejected<'a> {
    breaker: &'a CircuitBreaker,
    /// Open: how long it stays open. `None`: half-open, trials in flight.
    open_for_another: Option<Duration>,
}

impl Rejected<'_> {
    /// The [`ErrorKind::CircuitOpen`] error for this rejection.
    #[cold]
    pub fn into_error(self) -> Error {
        let name = &self.breaker.name;
        let message = match self.open_for_another {
            Some(left) => format!("`{name}` rejects calls for another {left:?}"),
            None => format!(
                "`{name}` is half-open and its {} trial calls are in flight",
                self.breaker.policy.half_open_calls
            ),
        };
        Error::new(ErrorKind::CircuitOpen, message)
    }
}

/// Leave to make one attempt; record its outcome with [`Permit::record`].
/// Dropping it unrecorded (a cancelled call) gives a half-open trial slot
/// back.
#[must_use = "record the attempt's outcome"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    trial: bool,
    done: bool,
}

impl Permit<'_> {
    /// Records the attempt's outcome and how long it took.
    #[inline]
    pub fn record(mut self, outcome: Outcome, elapsed: Duration, now: Instant) {
        self.done = true;
        let b = self.breaker;
        let slow = elapsed >= b.policy.slow_call;
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => {
                if self.trial {
                    b.record_trial(self.generation, None, now);
                }
                return;
            }
        };
        if self.trial {
            b.record_trial(self.generation, Some(!(failed || slow)), now);
        } else {
            b.record_closed(failed, slow, now);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial && !self.done {
            self.breaker
                .record_trial(self.generation, None, Instant::now());
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

    fn recorder() -> (EventSink, Arc<Mutex<Vec<(CircuitState, CircuitState)>>>) {
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
        let b = CircuitBreaker::new("svc#m", policy(), EventSink::none());
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
        let b = CircuitBreaker::new("svc#m", policy(), EventSink::none());
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
        let b = CircuitBreaker::new("svc#m", policy(), EventSink::none());
        for _ in 0..4 {
            let _ = call(&b, Outcome::Success);
        }
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure);
        }
        assert_eq!(b.state(), CircuitState::Open, "4 of 8 = 50%");
        let b = CircuitBreaker::new("svc#m", policy(), EventSink::none());
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
        let b = CircuitBreaker::new("svc#m", policy(), sink);
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
        first.map(|p| p.record(Outcome::Success, FAST, now));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        second.map(|p| p.record(Outcome::Success, FAST, now));
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
        let b = CircuitBreaker::new("svc#m", policy(), EventSink::none());
        for _ in 0..4 {
            let _ = call(&b, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        let a = b.admit(now).ok();
        let late = b.admit(now).ok();
        a.map(|p| p.record(Outcome::Failure, FAST, now));
        assert_eq!(b.state(), CircuitState::Open);
        // The other trial answers after the breaker reopened: ignored.
        late.map(|p| p.record(Outcome::Success, FAST, now));
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.admit(now).is_err(), "open for another 5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_trial_gives_its_slot_back() {
        let b = CircuitBreaker::new("svc#m", policy(), EventSink::none());
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
        let b = CircuitBreaker::new("svc#m", p, EventSink::none());
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
        let b = Arc::new(CircuitBreaker::new("svc#m", p, EventSink::none()));
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
        assert_eq!(b.next.load(Ordering::Relaxed), 1000);
        let filled = b
            .slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) == FILLED)
            .count();
        assert_eq!(filled, 1000);
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
