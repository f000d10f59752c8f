//! The breaker's lock-free state machine, on its own: no clock, no names,
//! no events, only atomics (through `crate::sync`, so that the model checker
//! can run this very file; see `client-core/tests/loom.rs`).
//!
//! ## Invariants (checked under loom)
//!
//! 1. Every transition is one compare-and-swap on the state word, and every
//!    CAS that loses re-reads the word and decides again (never a silent
//!    give-up). Exactly one caller performs a transition and reports it.
//! 2. A half-open breaker always leaves half-open once its trials end: each
//!    trial permit is recorded or released exactly once, a failed trial
//!    reopens, `half_open_calls` successes close, a released trial frees its
//!    slot. An outcome is dropped only when the breaker has already left the
//!    half-open period that issued the trial (the generation changed).
//! 3. Outcomes of calls admitted in an earlier closed period are not
//!    counted in a later one (the permit carries its generation).
//! 4. The running failure and slow counts equal the flagged slots of the
//!    window whenever no record is in progress. While records race, a count
//!    may be off by the records in flight (never wrapping: the counts are
//!    signed and read as at least 0).
//!
//! `opened_at` lives outside the state word (there is no room for 64 bits
//! of time in it). It is raised with `fetch_max` *before* the CAS that opens
//! the breaker, so a caller that sees the open state always sees an
//! `opened_at` at least as late as that opening. A CAS that then loses (the
//! breaker moved on meanwhile) may leave `opened_at` later than the opening
//! that won, by at most the time between the loser's clock reading and its
//! CAS: microseconds of extra open time, never a shorter one.

use crate::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

// ===== the state word =====
//
// bits 0..2   state (0 closed, 1 open, 2 half-open)
// bits 2..18  trials issued and not released (half-open)
// bits 18..34 trials succeeded (half-open)
// bits 34..64 generation, bumped by every transition

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const COUNT_MASK: u64 = 0xFFFF;
const ISSUED_ONE: u64 = 1 << 2;
const SUCCEEDED_ONE: u64 = 1 << 18;
const GENERATION_MASK: u64 = (1 << 30) - 1;

/// The largest window and number of half-open trials the word can count.
pub(crate) const MAX_COUNT: u32 = 10_000;

/// The three states, as the state machine reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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
        Word::new(state, 0, 0, (self.generation() + 1) & GENERATION_MASK)
    }
    fn phase(self) -> Phase {
        match self.state() {
            CLOSED => Phase::Closed,
            OPEN => Phase::Open,
            _ => Phase::HalfOpen,
        }
    }
}

/// The numbers the machine needs, already in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Outcomes in the sliding window, 1 to [`MAX_COUNT`].
    pub(crate) window: u32,
    /// Outcomes needed in the window before a rate counts, 1 to `window`.
    pub(crate) min_calls: u32,
    /// Failure percentage that opens.
    pub(crate) failure_rate: u8,
    /// Slow percentage that opens.
    pub(crate) slow_rate: u8,
    /// How long an opening lasts, in the caller's clock units.
    pub(crate) open_for: u64,
    /// Trials let through when half-open, 1 to [`MAX_COUNT`].
    pub(crate) half_open_calls: u32,
}

/// Leave to make one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Granted {
    /// The generation it was granted in; its outcome is recorded against it.
    pub(crate) generation: u64,
    /// A half-open trial (its outcome decides the state).
    pub(crate) trial: bool,
}

/// Why an attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Open for this much longer (clock units).
    Open { left: u64 },
    /// Half-open with every trial slot taken.
    TrialsBusy,
    /// Forced open by an operator (not a state of the machine).
    Forced,
}

const FILLED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// The state word, the time of the last opening and the outcome window.
pub(crate) struct State {
    settings: Settings,
    word: AtomicU64,
    /// When the breaker last opened, in the caller's clock units.
    opened_at: AtomicU64,
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl State {
    /// A closed breaker. `settings` out of range are clamped into it.
    pub(crate) fn new(settings: Settings) -> State {
        let window = settings.window.clamp(1, MAX_COUNT);
        let settings = Settings {
            window,
            min_calls: settings.min_calls.clamp(1, window),
            half_open_calls: settings.half_open_calls.clamp(1, MAX_COUNT),
            ..settings
        };
        State {
            settings,
            word: AtomicU64::new(Word::new(CLOSED, 0, 0, 0).0),
            opened_at: AtomicU64::new(0),
            slots: (0..window).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    /// The settings in use (after clamping).
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The current phase, read without changing it.
    pub(crate) fn phase(&self) -> Phase {
        Word(self.word.load(Ordering::Acquire)).phase()
    }

    /// Asks to make one attempt at time `now`; `transition` hears of a move
    /// from open to half-open that this call made.
    #[inline]
    pub(crate) fn admit(
        &self,
        now: u64,
        transition: impl FnMut(Phase, Phase),
    ) -> Result<Granted, Refused> {
        let word = Word(self.word.load(Ordering::Acquire));
        match word.state() {
            CLOSED => Ok(Granted {
                generation: word.generation(),
                trial: false,
            }),
            // The common rejection, kept inline: one load, one subtraction.
            OPEN => match self.still_open(now) {
                Some(left) => Err(Refused::Open { left }),
                None => self.admit_slow(word, now, transition),
            },
            _ => self.admit_slow(word, now, transition),
        }
    }

    /// How much longer the breaker stays open, if its time has not passed.
    #[inline]
    fn still_open(&self, now: u64) -> Option<u64> {
        let opened = self.opened_at.load(Ordering::Acquire);
        let elapsed = now.saturating_sub(opened);
        (elapsed < self.settings.open_for).then(|| self.settings.open_for - elapsed)
    }

    #[cold]
    fn admit_slow(
        &self,
        mut word: Word,
        now: u64,
        mut transition: impl FnMut(Phase, Phase),
    ) -> Result<Granted, Refused> {
        loop {
            match word.state() {
                CLOSED => {
                    return Ok(Granted {
                        generation: word.generation(),
                        trial: false,
                    });
                }
                OPEN => {
                    if let Some(left) = self.still_open(now) {
                        return Err(Refused::Open { left });
                    }
                    let half = word.next(HALF_OPEN);
                    match self.cas(word, half) {
                        Ok(()) => {
                            transition(Phase::Open, Phase::HalfOpen);
                            word = half;
                        }
                        Err(current) => word = current,
                    }
                }
                _ => {
                    if word.issued() >= u64::from(self.settings.half_open_calls) {
                        return Err(Refused::TrialsBusy);
                    }
                    match self.cas(word, Word(word.0 + ISSUED_ONE)) {
                        Ok(()) => {
                            return Ok(Granted {
                                generation: word.generation(),
                                trial: true,
                            });
                        }
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

    /// Records the outcome of an attempt granted in a closed period:
    /// `failed` and/or `slow`. Opens the breaker when a threshold is reached.
    pub(crate) fn record_closed(
        &self,
        generation: u64,
        failed: bool,
        slow: bool,
        now: u64,
        mut transition: impl FnMut(Phase, Phase),
    ) {
        let word = Word(self.word.load(Ordering::Acquire));
        if word.state() != CLOSED || word.generation() != generation {
            // Admitted in a closed period that has ended: its outcome says
            // nothing about the window that came after.
            return;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let window = self.slots.len() as u64;
        let bits = FILLED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let slot = &self.slots[(n % window) as usize];
        // A slot that already holds this outcome (a success over a success,
        // the common case) is left as it is: no read-modify-write. Had
        // another record swapped it since the load, that one's outcome
        // stands and the counts agree with it, as if this one came first.
        let old = match slot.load(Ordering::Relaxed) {
            same if same == bits => same,
            _ => slot.swap(bits, Ordering::Relaxed),
        };
        let changed = old ^ bits;
        if changed & FAILED != 0 {
            self.failures
                .fetch_add(if failed { 1 } else { -1 }, Ordering::Relaxed);
        }
        if changed & SLOW != 0 {
            self.slow
                .fetch_add(if slow { 1 } else { -1 }, Ordering::Relaxed);
        }
        if !(failed || slow) {
            return; // a success cannot raise a rate
        }
        let total = (n + 1).min(window);
        if total < u64::from(self.settings.min_calls) {
            return;
        }
        let count = |c: &AtomicI64| u64::try_from(c.load(Ordering::Relaxed)).unwrap_or(0);
        let over = |count: u64, rate: u8| count * 100 >= u64::from(rate) * total;
        if !(over(count(&self.failures), self.settings.failure_rate)
            || over(count(&self.slow), self.settings.slow_rate))
        {
            return;
        }
        let mut word = word;
        loop {
            if word.state() != CLOSED || word.generation() != generation {
                return; // another caller opened it (and reported it)
            }
            self.opened_at.fetch_max(now, Ordering::AcqRel);
            match self.cas(word, word.next(OPEN)) {
                Ok(()) => {
                    transition(Phase::Closed, Phase::Open);
                    return;
                }
                Err(current) => word = current,
            }
        }
    }

    /// Records a half-open trial's outcome: `Some(true)` succeeded,
    /// `Some(false)` failed, `None` released without an outcome (cancelled,
    /// or an outcome that says nothing about the service).
    pub(crate) fn record_trial(
        &self,
        generation: u64,
        outcome: Option<bool>,
        now: u64,
        mut transition: impl FnMut(Phase, Phase),
    ) {
        let mut word = Word(self.word.load(Ordering::Acquire));
        loop {
            if word.state() != HALF_OPEN || word.generation() != generation {
                return; // a trial of a half-open period that has ended
            }
            let next = match outcome {
                Some(false) => {
                    self.opened_at.fetch_max(now, Ordering::AcqRel);
                    word.next(OPEN)
                }
                None => {
                    if word.issued() == 0 {
                        return; // NOTE: unreachable: this trial holds a slot
                    }
                    Word(word.0 - ISSUED_ONE)
                }
                Some(true) => {
                    if word.succeeded() + 1 >= u64::from(self.settings.half_open_calls) {
                        // Emptied before the CAS that closes, so the first
                        // call of the closed period sees an empty window
                        // (closed permits of earlier periods are ignored).
                        self.reset_window();
                        word.next(CLOSED)
                    } else {
                        Word(word.0 + SUCCEEDED_ONE)
                    }
                }
            };
            match self.cas(word, next) {
                Ok(()) => {
                    if next.state() != HALF_OPEN {
                        transition(Phase::HalfOpen, next.phase());
                    }
                    return;
                }
                Err(current) => word = current,
            }
        }
    }

    /// Moves to closed with an empty window, whatever the state (an
    /// operator's reset); reports the transition if it was not closed.
    pub(crate) fn force_close(&self, mut transition: impl FnMut(Phase, Phase)) {
        let mut word = Word(self.word.load(Ordering::Acquire));
        loop {
            self.reset_window();
            let from = word.phase();
            match self.cas(word, word.next(CLOSED)) {
                Ok(()) => {
                    if from != Phase::Closed {
                        transition(from, Phase::Closed);
                    }
                    return;
                }
                Err(current) => word = current,
            }
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

    /// `(failures, slow calls, outcomes)` in the window now.
    pub(crate) fn window_counts(&self) -> (u64, u64, u64) {
        let count = |c: &AtomicI64| u64::try_from(c.load(Ordering::Relaxed)).unwrap_or(0);
        let filled = self
            .next
            .load(Ordering::Relaxed)
            .min(self.slots.len() as u64);
        (count(&self.failures), count(&self.slow), filled)
    }

    /// Recounts the window slot by slot: `(failed, slow, filled)`. For tests
    /// of invariant 4.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn recount(&self) -> (u64, u64, u64) {
        let mut out = (0, 0, 0);
        for slot in self.slots.iter() {
            let bits = slot.load(Ordering::Relaxed);
            out.0 += u64::from(bits & FAILED != 0);
            out.1 += u64::from(bits & SLOW != 0);
            out.2 += u64::from(bits & FILLED != 0);
        }
        out
    }
}
