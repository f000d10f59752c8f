//! Per-method resilience policies, and how their settings are resolved.
//!
//! A setting can come from five places. Most specific first:
//!
//! 1. the config file, method level (`[clients.<name>.methods.<method>]`),
//! 2. the method's attribute (`#[retry(max_attempts = 5)]` on the method),
//! 3. the config file, client level (`[clients.<name>]`),
//! 4. the trait's attribute (on the trait, after `#[client]`),
//! 5. the built-in default (the schema's, [`crate::spec::KEYS`]).
//!
//! Levels combine *key by key*: a level that names `max_attempts` overrides
//! only that key, and every other key comes from the next level that names
//! it. Each level is an [`Overrides`] value in which
//! every key is optional; [`MethodPolicy::resolve`] walks the levels once,
//! when the client is built, so a call never looks anything up. The keys,
//! their kinds, limits and defaults are defined once, in the policy schema
//! ([`crate::spec`]), which the macro, the config and this module share.
//!
//! Whether a policy is on is a key too (its switch): naming any key of a
//! policy at a level turns it on at that level, and `disabled` turns it off.
//! So a method-level `#[circuit_breaker(window = 50)]` re-enables a breaker
//! that the trait level disabled. `min_calls` above the resolved `window`
//! could never be reached; it is clamped to the window, as Resilience4j
//! does (at one level, the macro and the config refuse it outright).
//!
//! The policies themselves, one module each, outer to inner as a call meets
//! them: [`fallback`], the deadline (`deadline.rs`), [`retry`] (the loop)
//! with its [`budget`], [`hedge`] (the race), the guard of each attempt
//! (`guard.rs`: [`circuit`], then [`rate_limit`], then [`bulkhead`]); [`classify`] is the one
//! place that decides what a failure is, for breaker, retry and fallback
//! alike. Each stage owns its flow and its state and is tested alone under
//! tokio's paused clock.

pub mod budget;
pub mod bulkhead;
pub mod circuit;
pub mod classify;
pub(crate) mod deadline;
pub mod fallback;
pub(crate) mod guard;
pub mod hedge;
pub mod rate_limit;
pub mod retry;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::observe::probe::Probe;
use crate::observe::{EventSink, LogLevel, LogPolicy};
use crate::spec::{Key, MethodDef, Overrides, StatusSet, Value};
use budget::RetryBudget;
use bulkhead::Bulkhead;
use circuit::CircuitBreaker;
use deadline::{Deadline, Watch};
pub use rate_limit::RateLimitPolicy;
use rate_limit::RateLimiter;

/// What the policy stages of one call share: the method's resolved policy,
/// its breaker, bulkhead and probe, the client's retry budget and events,
/// the call's deadline and how many attempts it has started.
pub(crate) struct PolicyCall<'a> {
    pub(crate) policy: &'a MethodPolicy,
    pub(crate) probe: &'a Probe,
    pub(crate) events: &'a EventSink,
    pub(crate) breaker: Option<&'a CircuitBreaker>,
    pub(crate) bulkhead: Option<&'a Bulkhead>,
    /// The method's rate limiter (its own or the client's), if any.
    pub(crate) limiter: Option<&'a RateLimiter>,
    pub(crate) budget: Option<&'a RetryBudget>,
    pub(crate) deadline: Deadline,
    /// The client's watch, which cuts attempts at their limit.
    pub(crate) watch: &'a std::sync::Arc<Watch>,
    /// Attempts admitted so far, hedges included (for `max_attempts`).
    started: AtomicU32,
}

impl<'a> PolicyCall<'a> {
    /// A call starting at `start` (ticks).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        policy: &'a MethodPolicy,
        probe: &'a Probe,
        events: &'a EventSink,
        breaker: Option<&'a CircuitBreaker>,
        bulkhead: Option<&'a Bulkhead>,
        limiter: Option<&'a RateLimiter>,
        budget: Option<&'a RetryBudget>,
        watch: &'a std::sync::Arc<Watch>,
        start: u64,
    ) -> Self {
        PolicyCall {
            policy,
            probe,
            events,
            breaker,
            bulkhead,
            limiter,
            budget,
            deadline: Deadline::new(start, policy.timeout),
            watch,
            started: AtomicU32::new(0),
        }
    }

    /// Attempts admitted so far.
    pub(crate) fn started(&self) -> u32 {
        self.started.load(Ordering::Relaxed)
    }
}

/// The retry budget's defaults (per built client, not per method).
pub mod defaults {
    use std::time::Duration;

    /// Retry budget: retries may add this share to the calls of the window.
    pub const BUDGET_RATIO: f32 = 0.2;
    /// Retry budget: retries always allowed per second, whatever the ratio.
    pub const BUDGET_MIN_PER_SEC: u32 = 10;
    /// Retry budget: the window calls and retries are counted over.
    pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);
}

// ===== resolved policy =====

/// Retry settings after resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub max_attempts: u32,
    /// First back-off.
    pub backoff_base: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// Statuses that are retried.
    pub on: StatusSet,
    /// Limit of one attempt, if any.
    pub attempt_timeout: Option<Duration>,
}

/// Circuit-breaker settings after resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitPolicy {
    /// Attempts in the sliding window.
    pub window: u32,
    /// Attempts needed in the window before the rates count.
    pub min_calls: u32,
    /// Failure percentage that opens the breaker.
    pub failure_rate: u8,
    /// Duration from which an attempt counts as slow.
    pub slow_call: Duration,
    /// Slow percentage that opens the breaker.
    pub slow_call_rate: u8,
    /// How long the breaker stays open.
    pub open_for: Duration,
    /// Trial calls let through when half-open.
    pub half_open_calls: u32,
}

/// Bulkhead settings after resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkheadPolicy {
    /// Calls of the method in flight at most.
    pub max_concurrent: u32,
    /// How long a call waits for a slot.
    pub max_wait: Duration,
}

/// Hedging settings after resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    /// Wait this long for an answer before sending another attempt.
    pub delay: Duration,
    /// Extra attempts at most.
    pub max_extra: u32,
}

/// Every policy of one method, resolved from all levels.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct MethodPolicy {
    /// The whole call's limit.
    pub timeout: Duration,
    /// Whether a replayed request is harmless (verb, or `#[idempotent]`).
    pub idempotent: bool,
    /// `None` when retries are disabled.
    pub retry: Option<RetryPolicy>,
    /// `None` when the breaker is disabled.
    pub circuit: Option<CircuitPolicy>,
    /// `None` when the method has no rate limit. `per_second` is 0 only
    /// when a level turned the limit on without any level naming a rate,
    /// which `build()` refuses.
    pub rate_limit: Option<RateLimitPolicy>,
    /// `None` when there is no bulkhead.
    pub bulkhead: Option<BulkheadPolicy>,
    /// `None` when hedging is off (always for non-idempotent methods).
    pub hedge: Option<HedgePolicy>,
    /// What the HTTP log shows of each attempt.
    pub log: LogPolicy,
    /// `Some(min_size)` when request bodies of at least `min_size` bytes
    /// are sent gzip-compressed (`#[compress]`).
    pub compress: Option<u32>,
}

/// Resolves keys over levels, most specific first, then the default.
struct Levels<'a>(&'a [&'a Overrides]);

impl Levels<'_> {
    fn value(&self, key: Key) -> Option<Value> {
        self.0
            .iter()
            .find_map(|level| level.get(key))
            .or(key.info().default)
    }

    fn switch(&self, key: Key) -> bool {
        matches!(self.value(key), Some(Value::Switch(true)))
    }

    fn duration(&self, key: Key) -> Option<Duration> {
        match self.value(key) {
            Some(Value::Duration(d)) => Some(d),
            _ => None,
        }
    }

    fn count(&self, key: Key) -> u32 {
        match self.value(key) {
            Some(Value::Count(n)) => n,
            _ => 1,
        }
    }

    fn rate(&self, key: Key) -> u8 {
        match self.value(key) {
            Some(Value::Rate(n)) => n,
            _ => 100,
        }
    }
}

impl MethodPolicy {
    /// Resolves a method's policy. `levels` are ordered most specific first
    /// (config method, method attribute, config client, trait attribute);
    /// the schema's defaults come last. Values are already in range:
    /// attributes are checked at compile time, config values when the
    /// config is parsed, both against the same schema.
    pub fn resolve(def: &MethodDef, levels: &[&Overrides]) -> MethodPolicy {
        let l = Levels(levels);
        let idempotent = def.idempotent || def.verb.is_idempotent();
        let retry = (def.replayable && l.switch(Key::RetryEnabled)).then(|| {
            let (backoff_base, backoff_max) = match l.value(Key::RetryBackoff) {
                Some(Value::Backoff(a, b)) => (a, b),
                _ => (Duration::ZERO, Duration::ZERO),
            };
            RetryPolicy {
                max_attempts: l.count(Key::RetryMaxAttempts),
                backoff_base,
                backoff_max,
                on: match l.value(Key::RetryOn) {
                    Some(Value::Codes(set)) => set,
                    _ => StatusSet::EMPTY,
                },
                attempt_timeout: l.duration(Key::RetryAttemptTimeout),
            }
        });
        let circuit = l.switch(Key::CircuitEnabled).then(|| {
            let window = l.count(Key::CircuitWindow);
            CircuitPolicy {
                window,
                min_calls: l.count(Key::CircuitMinCalls).min(window),
                failure_rate: l.rate(Key::CircuitFailureRate),
                slow_call: l.duration(Key::CircuitSlowCall).unwrap_or(Duration::MAX),
                slow_call_rate: l.rate(Key::CircuitSlowCallRate),
                open_for: l.duration(Key::CircuitOpenFor).unwrap_or_default(),
                half_open_calls: l.count(Key::CircuitHalfOpenCalls),
            }
        });
        let rate_limit = rate_limit_of(&l);
        let bulkhead = l.switch(Key::BulkheadEnabled).then(|| BulkheadPolicy {
            max_concurrent: l.count(Key::BulkheadMaxConcurrent),
            max_wait: l.duration(Key::BulkheadMaxWait).unwrap_or_default(),
        });
        let hedge =
            (idempotent && def.replayable && l.switch(Key::HedgeEnabled)).then(|| HedgePolicy {
                delay: l.duration(Key::HedgeDelay).unwrap_or_default(),
                max_extra: l.count(Key::HedgeMaxExtra),
            });
        let log = LogPolicy {
            level: match l.value(Key::LogLevel) {
                Some(Value::Choice(i)) => LogLevel::from_index(i),
                _ => LogLevel::None,
            },
            body_limit: match l.value(Key::LogBodyLimit) {
                Some(Value::Count(n)) => n,
                _ => 0,
            },
        };
        let compress = l
            .switch(Key::CompressEnabled)
            .then(|| l.count(Key::CompressMinSize));
        MethodPolicy {
            timeout: l
                .duration(Key::Timeout)
                .unwrap_or(crate::spec::MAX_DURATION),
            idempotent,
            retry,
            circuit,
            rate_limit,
            bulkhead,
            hedge,
            log,
            compress,
        }
    }
}

/// The rate limit `levels` resolve to (most specific first): what a method
/// uses, and, over the client's levels alone, the limiter its methods
/// share.
pub(crate) fn rate_limit(levels: &[&Overrides]) -> Option<RateLimitPolicy> {
    rate_limit_of(&Levels(levels))
}

fn rate_limit_of(l: &Levels<'_>) -> Option<RateLimitPolicy> {
    l.switch(Key::RateLimitEnabled).then(|| {
        let count = |key| match l.value(key) {
            Some(Value::Count(n)) => Some(n),
            _ => None,
        };
        let per_second = count(Key::RateLimitPerSecond).unwrap_or(0);
        RateLimitPolicy {
            per_second,
            burst: count(Key::RateLimitBurst).unwrap_or(per_second),
            max_wait: l.duration(Key::RateLimitMaxWait).unwrap_or_default(),
        }
    })
}

/// What a stage's unit test needs to run it alone: a method's resolved
/// policy (change its fields), its state, and a [`PolicyCall`] over them.
#[cfg(test)]
pub(crate) mod fixture {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::clock;
    use crate::spec::Verb;
    use crate::{Error, ErrorKind};

    pub(crate) static GET: MethodDef = MethodDef {
        name: "get",
        verb: Verb::Get,
        path: "/x",
        idempotent: false,
        auth: true,
        replayable: true,
        policy: Overrides::NONE,
    };

    /// One method: its policy (every default; no breaker unless asked for)
    /// and its state.
    pub(crate) struct Method {
        pub(crate) policy: MethodPolicy,
        pub(crate) probe: Probe,
        pub(crate) events: EventSink,
        pub(crate) breaker: Option<CircuitBreaker>,
        pub(crate) bulkhead: Option<Bulkhead>,
        pub(crate) budget: Option<RetryBudget>,
        pub(crate) watch: Arc<Watch>,
    }

    impl Method {
        /// GET's defaults with `change` applied; a breaker, bulkhead as the
        /// changed policy says; no budget.
        pub(crate) fn new(change: impl FnOnce(&mut MethodPolicy)) -> Method {
            let mut policy = MethodPolicy::resolve(&GET, &[]);
            policy.circuit = None;
            change(&mut policy);
            let events = EventSink::none();
            Method {
                probe: Probe::new("svc", &GET, policy.log),
                breaker: policy
                    .circuit
                    .map(|c| CircuitBreaker::new("svc", "get", c, events.clone())),
                bulkhead: policy.bulkhead.map(Bulkhead::new),
                budget: None,
                watch: Watch::new(),
                events,
                policy,
            }
        }

        /// A call starting now.
        pub(crate) fn call(&self) -> PolicyCall<'_> {
            PolicyCall::new(
                &self.policy,
                &self.probe,
                &self.events,
                self.breaker.as_ref(),
                self.bulkhead.as_ref(),
                None,
                self.budget.as_ref(),
                &self.watch,
                clock::now(),
            )
        }
    }

    /// An answer with this status.
    pub(crate) fn status(code: u16) -> Error {
        let s = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::IM_A_TEAPOT);
        Error::new(ErrorKind::Status, "").with_status(s)
    }

    /// Counts the attempts a stage starts.
    #[derive(Default)]
    pub(crate) struct Attempts(AtomicU32);

    impl Attempts {
        /// Counts one, and returns its number (0 for the first).
        pub(crate) fn next(&self) -> u32 {
            self.0.fetch_add(1, Ordering::SeqCst)
        }

        pub(crate) fn made(&self) -> u32 {
            self.0.load(Ordering::SeqCst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Verb;

    const GET: MethodDef = MethodDef {
        name: "get",
        verb: Verb::Get,
        path: "/x",
        idempotent: false,
        auth: true,
        replayable: true,
        policy: Overrides::NONE,
    };
    const POST: MethodDef = MethodDef {
        name: "create",
        verb: Verb::Post,
        path: "/x",
        idempotent: false,
        auth: true,
        replayable: true,
        policy: Overrides::NONE,
    };

    fn resolve(def: &MethodDef, levels: &[&Overrides]) -> MethodPolicy {
        MethodPolicy::resolve(def, levels)
    }

    const fn ms(n: u64) -> Value {
        Value::Duration(Duration::from_millis(n))
    }

    #[test]
    fn defaults_apply_when_no_level_sets_anything() {
        let p = resolve(&GET, &[]);
        assert_eq!(p.timeout, Duration::from_secs(10));
        assert!(p.idempotent);
        let retry = p.retry.unwrap_or_else(|| panic!("retry on by default"));
        assert_eq!(retry.max_attempts, 3);
        assert!(retry.on.contains(503) && retry.on.contains(429) && !retry.on.contains(500));
        assert_eq!(
            (retry.backoff_base, retry.backoff_max),
            (Duration::from_millis(50), Duration::from_secs(1))
        );
        assert_eq!(p.circuit.map(|c| (c.window, c.min_calls)), Some((20, 10)));
        assert_eq!(p.bulkhead, None);
        assert_eq!(p.hedge, None);
        assert!(!resolve(&POST, &[]).idempotent);
    }

    #[test]
    fn levels_combine_key_by_key_most_specific_first() {
        let trait_level = Overrides::NONE
            .with(Key::Timeout, ms(2000))
            .with(Key::RetryEnabled, Value::Switch(true))
            .with(Key::RetryMaxAttempts, Value::Count(5))
            .with(
                Key::RetryBackoff,
                Value::Backoff(Duration::from_millis(10), Duration::from_millis(20)),
            );
        let method_level = Overrides::NONE
            .with(Key::RetryEnabled, Value::Switch(true))
            .with(Key::RetryMaxAttempts, Value::Count(2));
        let p = resolve(&GET, &[&method_level, &trait_level]);
        let retry = p.retry.unwrap_or_else(|| panic!("on"));
        assert_eq!(retry.max_attempts, 2, "method level wins");
        assert_eq!(
            retry.backoff_base,
            Duration::from_millis(10),
            "rest from trait"
        );
        assert_eq!(p.timeout, Duration::from_secs(2));
    }

    #[test]
    fn naming_a_key_reenables_a_policy_disabled_below() {
        let trait_level = Overrides::NONE.with(Key::CircuitEnabled, Value::Switch(false));
        let method_level = Overrides::NONE
            .with(Key::CircuitEnabled, Value::Switch(true))
            .with(Key::CircuitWindow, Value::Count(50));
        assert_eq!(resolve(&GET, &[&trait_level]).circuit, None);
        let p = resolve(&GET, &[&method_level, &trait_level]);
        assert_eq!(p.circuit.map(|c| (c.window, c.min_calls)), Some((50, 10)));
    }

    /// The defect: `#[circuit_breaker(window = 4)]` inherited the default
    /// `min_calls = 10` and could never open.
    #[test]
    fn an_inherited_min_calls_above_the_window_is_clamped_to_it() {
        let method_level = Overrides::NONE
            .with(Key::CircuitEnabled, Value::Switch(true))
            .with(Key::CircuitWindow, Value::Count(4));
        let p = resolve(&GET, &[&method_level]);
        assert_eq!(p.circuit.map(|c| (c.window, c.min_calls)), Some((4, 4)));
    }

    #[test]
    fn a_rate_limit_resolves_key_by_key_and_burst_defaults_to_the_rate() {
        assert_eq!(resolve(&GET, &[]).rate_limit, None, "off by default");
        let trait_level = Overrides::NONE
            .with(Key::RateLimitEnabled, Value::Switch(true))
            .with(Key::RateLimitPerSecond, Value::Count(100));
        let method_level = Overrides::NONE
            .with(Key::RateLimitEnabled, Value::Switch(true))
            .with(Key::RateLimitMaxWait, ms(250));
        let p = resolve(&GET, &[&method_level, &trait_level]);
        assert_eq!(
            p.rate_limit,
            Some(RateLimitPolicy {
                per_second: 100,
                burst: 100,
                max_wait: Duration::from_millis(250)
            })
        );
        let off = Overrides::NONE.with(Key::RateLimitEnabled, Value::Switch(false));
        assert_eq!(resolve(&GET, &[&off, &trait_level]).rate_limit, None);
        let unnamed = resolve(&GET, &[&method_level]).rate_limit;
        assert_eq!(unnamed.map(|r| r.per_second), Some(0), "build() refuses it");
    }

    #[test]
    fn hedging_never_applies_to_non_idempotent_methods() {
        let hedge = Overrides::NONE.with(Key::HedgeEnabled, Value::Switch(true));
        assert!(resolve(&GET, &[&hedge]).hedge.is_some());
        assert!(resolve(&POST, &[&hedge]).hedge.is_none());
    }
}
