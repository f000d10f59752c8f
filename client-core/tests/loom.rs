//! Model checking of courier's lock-free state machines with loom: every
//! interleaving of a few threads (bounded preemptions), not the few that a
//! stress test happens to hit.
//!
//! The state-machine files are compiled here a second time, against loom's
//! atomics: each names its atomics only as `crate::sync::…`, and this test
//! crate's `sync` module is loom's. Normal builds are untouched (no cfg flag,
//! no second build of the dependencies).
//!
//! Each model states the invariant it checks; the invariants are written
//! down in the files themselves.

#![allow(dead_code, unreachable_pub, missing_docs)]

mod sync {
    pub(crate) use loom::sync::Mutex;
    pub(crate) use loom::sync::atomic;
}

#[path = "../src/policy/circuit/state.rs"]
mod circuit;

#[path = "../src/policy/budget/ring.rs"]
mod budget;

#[path = "../src/balance/health.rs"]
mod health;

#[path = "../src/policy/rate_limit/gcra.rs"]
mod gcra;

use loom::sync::Arc;
use loom::thread;

use circuit::{Phase, Settings, State};

/// Explores interleavings with at most `bound` preemptions per execution
/// (loom's advice: 2–3 finds almost every bug at a fraction of the cost).
fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    builder.check(f);
}

// ===== circuit breaker =====

const OPEN_FOR: u64 = 10;

fn settings(half_open_calls: u32) -> Settings {
    Settings {
        window: 2,
        min_calls: 1,
        failure_rate: 50,
        slow_rate: 100,
        open_for: OPEN_FOR,
        half_open_calls,
    }
}

/// A breaker that opened at time 0.
fn opened(half_open_calls: u32) -> State {
    let state = State::new(settings(half_open_calls));
    let granted = state.admit(0, |_, _| {});
    if let Ok(g) = granted {
        state.record_closed(g.generation, true, false, 0, |_, _| {});
    }
    assert_eq!(state.phase(), Phase::Open);
    state
}

/// What a thread does with the permit it gets.
#[derive(Clone, Copy)]
enum Trial {
    Succeed,
    Fail,
    Cancel,
}

/// Transitions one thread reported, in its order.
type Seen = Vec<(Phase, Phase)>;

fn run_trial(state: &State, at: u64, what: Trial) -> Seen {
    let mut seen = Seen::new();
    if let Ok(g) = state.admit(at, |f, t| seen.push((f, t))) {
        let outcome = match what {
            Trial::Succeed => Some(true),
            Trial::Fail => Some(false),
            Trial::Cancel => None,
        };
        if g.trial {
            state.record_trial(g.generation, outcome, at, |f, t| seen.push((f, t)));
        } else if let Some(ok) = outcome {
            state.record_closed(g.generation, !ok, false, at, |f, t| seen.push((f, t)));
        }
    }
    seen
}

/// The transitions reported by all threads must form one consistent story:
/// each state is left as often as it is entered (± the one it ends in), and
/// the phase at the end is the one the story ends in.
fn check_story(seen: &[(Phase, Phase)], start: Phase, end: Phase) {
    for phase in [Phase::Closed, Phase::Open, Phase::HalfOpen] {
        let entered =
            seen.iter().filter(|(_, t)| *t == phase).count() as i64 + i64::from(start == phase);
        let left = seen.iter().filter(|(f, _)| *f == phase).count() as i64;
        let expected = i64::from(end == phase);
        assert_eq!(
            entered - left,
            expected,
            "{phase:?}: entered {entered}, left {left}, ends {end:?}; {seen:?}"
        );
    }
}

/// Invariant 2: once every trial has been recorded or released, the breaker
/// is not stuck: after `open_for` a call is admitted. This is the defect of
/// the first breaker (a failing trial that lost its CAS to a concurrent
/// success gave up, leaving every trial slot issued).
fn half_open_always_ends(trials: [Trial; 3], half_open_calls: u32) {
    model(2, move || {
        let state = Arc::new(opened(half_open_calls));
        let handles: Vec<_> = trials
            .iter()
            .map(|&what| {
                let state = state.clone();
                thread::spawn(move || run_trial(&state, OPEN_FOR, what))
            })
            .collect();
        let mut seen = Seen::new();
        for h in handles {
            seen.extend(h.join().unwrap_or_default());
        }
        let end = state.phase();
        check_story(&seen, Phase::Open, end);
        // Later than any reopening (each reopening is at OPEN_FOR at most).
        let later = 3 * OPEN_FOR;
        assert!(
            state.admit(later, |_, _| {}).is_ok(),
            "stuck in {end:?} after every trial ended; {seen:?}"
        );
    });
}

#[test]
fn loom_failure_racing_successes_never_sticks_half_open() {
    half_open_always_ends([Trial::Fail, Trial::Succeed, Trial::Succeed], 3);
}

#[test]
fn loom_failure_racing_a_release_never_sticks_half_open() {
    half_open_always_ends([Trial::Fail, Trial::Cancel, Trial::Succeed], 2);
}

#[test]
fn loom_successes_racing_to_close_close_exactly_once() {
    half_open_always_ends([Trial::Succeed, Trial::Succeed, Trial::Cancel], 2);
}

/// Invariant 4: at quiescence the running counts equal the flagged slots,
/// even when records wrap the window concurrently (the first and the third
/// record share a slot: with the same outcome, the third may leave the slot
/// as it finds it); and a breaker fed only successes never opens.
#[test]
fn loom_window_counts_match_the_slots_after_racing_records() {
    for outcomes in [[true, false, true], [false, true, false]] {
        window_counts_match_the_slots(outcomes);
    }
    model(2, || {
        let state = Arc::new(State::new(settings(1)));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let state = state.clone();
                thread::spawn(move || {
                    if let Ok(g) = state.admit(0, |_, _| {}) {
                        state.record_closed(g.generation, false, false, 0, |_, _| {});
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        assert_eq!(state.phase(), Phase::Closed, "successes never open");
        assert_eq!(state.window_counts().0, 0);
    });
}

/// Three records racing over a window of two, with these outcomes (`true`
/// failed): at quiescence, if still closed, the counts match the slots.
fn window_counts_match_the_slots(outcomes: [bool; 3]) {
    model(2, move || {
        let state = Arc::new(State::new(Settings {
            window: 2,
            min_calls: 2,
            failure_rate: 100,
            slow_rate: 100,
            open_for: OPEN_FOR,
            half_open_calls: 1,
        }));
        let handles: Vec<_> = outcomes
            .into_iter()
            .map(|failed| {
                let state = state.clone();
                thread::spawn(move || {
                    if let Ok(g) = state.admit(0, |_, _| {}) {
                        state.record_closed(g.generation, failed, false, 0, |_, _| {});
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        if state.phase() == Phase::Closed {
            let (failures, slow, filled) = state.window_counts();
            let (f2, s2, filled2) = state.recount();
            assert_eq!((failures, slow, filled), (f2, s2, filled2));
        }
    });
}

/// A closed-period failure that opens the breaker, racing a trial-period
/// story of another generation and a late closed permit: every transition
/// is reported once and the story is consistent.
#[test]
fn loom_opening_races_are_reported_once() {
    model(2, || {
        let state = Arc::new(State::new(settings(1)));
        let handles: Vec<_> = [Trial::Fail, Trial::Fail, Trial::Succeed]
            .into_iter()
            .map(|what| {
                let state = state.clone();
                thread::spawn(move || run_trial(&state, 0, what))
            })
            .collect();
        let mut seen = Seen::new();
        for h in handles {
            seen.extend(h.join().unwrap_or_default());
        }
        check_story(&seen, Phase::Closed, state.phase());
        let openings = seen
            .iter()
            .filter(|(f, t)| *f == Phase::Closed && *t == Phase::Open)
            .count();
        assert!(openings <= 1, "{seen:?}");
    });
}

// ===== retry budget =====

/// Invariants 1 and 2: with a reserve of one token and racing deposits and
/// withdrawals, at most the tokens there are get granted, none is lost, and
/// the balance never ends below zero.
#[test]
fn loom_budget_grants_no_more_than_it_has_and_loses_nothing() {
    model(2, || {
        let ring = Arc::new(budget::Ring::new(10, budget::SCALE));
        let withdrawers: Vec<_> = (0..2)
            .map(|_| {
                let ring = ring.clone();
                thread::spawn(move || ring.withdraw(0))
            })
            .collect();
        let depositor = {
            let ring = ring.clone();
            thread::spawn(move || ring.add(0, budget::SCALE / 2))
        };
        let granted = withdrawers
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .filter(|ok| *ok)
            .count() as i64;
        let _ = depositor.join();
        // One token of reserve plus half a token deposited: one whole token.
        assert!(granted <= 1, "granted {granted} of 1.5 tokens");
        let balance = ring.balance(0);
        assert_eq!(
            balance,
            budget::SCALE + budget::SCALE / 2 - granted * budget::SCALE
        );
        assert!(balance >= 0);
    });
}

// ===== balancer health =====

/// Every in-flight count comes back to zero, and however failures race, no
/// more than the allowed share of the set is ejected.
#[test]
fn loom_ejection_never_exceeds_the_cap_and_in_flight_returns_to_zero() {
    model(2, || {
        let policy = health::Ejection {
            consecutive_failures: 1,
            base: 100,
            max: 1000,
            max_percent: 50,
        };
        let set: Arc<Vec<health::Health>> =
            Arc::new((0..2).map(|_| health::Health::new()).collect());
        let guard = Arc::new(health::Ejector::new());
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let set = set.clone();
                let guard = guard.clone();
                thread::spawn(move || {
                    set[i].enter();
                    guard.failed(&set[i], set.iter(), &policy, 0);
                    set[i].leave();
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        let ejected = set.iter().filter(|h| h.is_ejected(0)).count();
        assert!(ejected <= 1, "{ejected} of 2 ejected with a 50 % cap");
        assert!(set.iter().all(|h| h.in_flight() == 0));
    });
}

// ===== rate limiter =====

/// Invariants 1 and 2 of `gcra.rs`: reservations that race get distinct
/// permits, spaced by the interval, whatever the order; a refusal writes
/// nothing.
#[test]
fn loom_racing_reservations_never_share_a_permit() {
    model(3, || {
        // One permit every 10 ticks, a burst of 2, asked for at tick 100.
        let limiter = Arc::new(gcra::Gcra::new(10, 2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let limiter = limiter.clone();
                thread::spawn(move || limiter.reserve(100, 1000))
            })
            .collect();
        let mine = limiter.reserve(100, 1000);
        let mut due: Vec<u64> = racers
            .into_iter()
            .map(|h| h.join().ok().and_then(Result::ok).unwrap_or(u64::MAX))
            .chain([mine.unwrap_or(u64::MAX)])
            .collect();
        due.sort_unstable();
        // The burst of two is free at once (due by tick 100); the third
        // waits its interval.
        assert_eq!(due, [90, 100, 110]);
        // Refused (due at 120, later than 105), and nothing reserved: the
        // same permit is still the next one.
        assert_eq!(limiter.reserve(100, 105), Err(120));
        assert_eq!(limiter.reserve(100, 120), Ok(120));
    });
}
