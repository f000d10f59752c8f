//! Per-method resilience policies, and how their settings are resolved.
//!
//! A setting can come from five places. Most specific first:
//!
//! 1. the config file, method level (`[clients.<name>.methods.<method>]`),
//! 2. the method's attribute (`#[retry(max_attempts = 5)]` on the method),
//! 3. the config file, client level (`[clients.<name>]`),
//! 4. the trait's attribute (on the trait, after `#[client]`),
//! 5. the built-in default ([`defaults`]).
//!
//! Levels combine *key by key*: a level that names `max_attempts` overrides
//! only that key, and every other key comes from the next level that names
//! it. Each level is an [`Overrides`] value in which every key is optional;
//! [`MethodPolicy::resolve`] walks the levels once, when the client is built,
//! so a call never looks anything up.
//!
//! Whether a policy is on is a key too (`enabled`): naming any key of a
//! policy at a level turns it on at that level, and `disabled` turns it off.
//! So a method-level `#[circuit_breaker(window = 50)]` re-enables a breaker
//! that the trait level disabled.
//!
//! The policies themselves, one module each, outer to inner as a call meets
//! them: [`fallback`], the deadline (`timeout`), [`retry`] with its
//! [`budget`], [`circuit`], [`bulkhead`], [`hedge`]; [`classify`] is the one
//! place that decides what a failure is, for retry and breaker alike.

pub mod budget;
pub mod bulkhead;
pub mod circuit;
pub mod classify;
pub mod fallback;
pub mod hedge;
pub mod retry;

use std::fmt;
use std::time::Duration;

use crate::request::MethodDef;

/// The built-in defaults of every policy setting.
pub mod defaults {
    use std::time::Duration;

    /// The whole call, retries and back-off included: 10 s.
    pub const TIMEOUT: Duration = Duration::from_secs(10);
    /// Attempts in all, the first included: 3.
    pub const MAX_ATTEMPTS: u32 = 3;
    /// First back-off: 50 ms, doubling.
    pub const BACKOFF_BASE: Duration = Duration::from_millis(50);
    /// Longest back-off: 1 s.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
    /// Statuses that are retried: 429, 502, 503, 504.
    pub const RETRY_ON: &[u16] = &[429, 502, 503, 504];
    /// Breaker window: the last 20 attempts.
    pub const WINDOW: u32 = 20;
    /// Attempts in the window before the breaker may open: 10.
    pub const MIN_CALLS: u32 = 10;
    /// Failure rate that opens the breaker: 50 %.
    pub const FAILURE_RATE: u8 = 50;
    /// An attempt slower than this is slow: 2 s.
    pub const SLOW_CALL: Duration = Duration::from_secs(2);
    /// Slow-call rate that opens the breaker: 100 %.
    pub const SLOW_CALL_RATE: u8 = 100;
    /// How long an open breaker rejects calls: 5 s.
    pub const OPEN_FOR: Duration = Duration::from_secs(5);
    /// Trial calls let through when half-open: 3.
    pub const HALF_OPEN_CALLS: u32 = 3;
    /// Bulkhead size, once a bulkhead is enabled: 10.
    pub const MAX_CONCURRENT: u32 = 10;
    /// How long a call waits for a bulkhead slot: 0 (fail at once).
    pub const MAX_WAIT: Duration = Duration::ZERO;
    /// Hedge delay, once hedging is enabled: 50 ms.
    pub const HEDGE_DELAY: Duration = Duration::from_millis(50);
    /// Extra hedged attempts, once hedging is enabled: 1.
    pub const HEDGE_MAX_EXTRA: u32 = 1;
    /// Retry budget: retries may add this share to the calls of the window.
    pub const BUDGET_RATIO: f32 = 0.2;
    /// Retry budget: retries always allowed per second, whatever the ratio.
    pub const BUDGET_MIN_PER_SEC: u32 = 10;
    /// Retry budget: the window calls and retries are counted over.
    pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);
}

/// The valid ranges, checked for attributes at compile time and for config
/// values at build time.
pub(crate) mod limits {
    /// `max_attempts`: 1 to 10.
    pub(crate) const MAX_ATTEMPTS: std::ops::RangeInclusive<u32> = 1..=10;
    /// Rates are percentages: 1 to 100.
    pub(crate) const RATE: std::ops::RangeInclusive<u8> = 1..=100;
}

// ===== StatusSet =====

/// A set of HTTP status codes (100–599), `Copy` and usable in constants.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet([u64; 8]);

impl StatusSet {
    /// The empty set.
    pub const EMPTY: StatusSet = StatusSet([0; 8]);

    /// The set of these codes; codes outside 100–599 are ignored.
    pub const fn from_codes(codes: &[u16]) -> StatusSet {
        let mut bits = [0u64; 8];
        let mut i = 0;
        while i < codes.len() {
            let code = codes[i];
            if code >= 100 && code < 600 {
                let n = (code - 100) as usize;
                bits[n / 64] |= 1 << (n % 64);
            }
            i += 1;
        }
        StatusSet(bits)
    }

    /// Whether the set holds `code`.
    #[inline]
    pub const fn contains(&self, code: u16) -> bool {
        if code < 100 || code >= 600 {
            return false;
        }
        let n = (code - 100) as usize;
        self.0[n / 64] & (1 << (n % 64)) != 0
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((100..600).filter(|c| self.contains(*c)))
            .finish()
    }
}

// ===== Overrides =====

/// The settings one level gives (an attribute, a config section); every key
/// is optional. See the [module docs](self) for how levels combine.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Overrides {
    /// `timeout`: the whole call.
    pub timeout: Option<Duration>,
    /// `retry(…)`
    pub retry: RetryOverrides,
    /// `circuit_breaker(…)`
    pub circuit: CircuitOverrides,
    /// `bulkhead(…)`
    pub bulkhead: BulkheadOverrides,
    /// `hedge(…)`
    pub hedge: HedgeOverrides,
}

/// The keys of `#[retry(…)]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetryOverrides {
    /// `Some(false)` for `disabled`, `Some(true)` when any key is named.
    pub enabled: Option<bool>,
    /// `max_attempts`
    pub max_attempts: Option<u32>,
    /// `backoff = "base..max"`
    pub backoff: Option<(Duration, Duration)>,
    /// `on = [503, …]`
    pub on: Option<StatusSet>,
    /// `attempt_timeout`
    pub attempt_timeout: Option<Duration>,
}

/// The keys of `#[circuit_breaker(…)]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CircuitOverrides {
    /// `Some(false)` for `disabled`, `Some(true)` when any key is named.
    pub enabled: Option<bool>,
    /// `window`
    pub window: Option<u32>,
    /// `min_calls`
    pub min_calls: Option<u32>,
    /// `failure_rate`
    pub failure_rate: Option<u8>,
    /// `slow_call`
    pub slow_call: Option<Duration>,
    /// `slow_call_rate`
    pub slow_call_rate: Option<u8>,
    /// `open_for`
    pub open_for: Option<Duration>,
    /// `half_open_calls`
    pub half_open_calls: Option<u32>,
}

/// The keys of `#[bulkhead(…)]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BulkheadOverrides {
    /// `Some(false)` for `disabled`, `Some(true)` when any key is named.
    pub enabled: Option<bool>,
    /// `max_concurrent`
    pub max_concurrent: Option<u32>,
    /// `max_wait`
    pub max_wait: Option<Duration>,
}

/// The keys of `#[hedge(…)]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HedgeOverrides {
    /// `Some(false)` for `disabled`, `Some(true)` when any key is named.
    pub enabled: Option<bool>,
    /// `delay`
    pub delay: Option<Duration>,
    /// `max_extra`
    pub max_extra: Option<u32>,
}

impl Overrides {
    /// No key set: a level that changes nothing.
    pub const NONE: Overrides = Overrides {
        timeout: None,
        retry: RetryOverrides {
            enabled: None,
            max_attempts: None,
            backoff: None,
            on: None,
            attempt_timeout: None,
        },
        circuit: CircuitOverrides {
            enabled: None,
            window: None,
            min_calls: None,
            failure_rate: None,
            slow_call: None,
            slow_call_rate: None,
            open_for: None,
            half_open_calls: None,
        },
        bulkhead: BulkheadOverrides {
            enabled: None,
            max_concurrent: None,
            max_wait: None,
        },
        hedge: HedgeOverrides {
            enabled: None,
            delay: None,
            max_extra: None,
        },
    };
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
pub struct MethodPolicy {
    /// The whole call's limit.
    pub timeout: Duration,
    /// Whether a replayed request is harmless (verb, or `#[idempotent]`).
    pub idempotent: bool,
    /// `None` when retries are disabled.
    pub retry: Option<RetryPolicy>,
    /// `None` when the breaker is disabled.
    pub circuit: Option<CircuitPolicy>,
    /// `None` when there is no bulkhead.
    pub bulkhead: Option<BulkheadPolicy>,
    /// `None` when hedging is off (always for non-idempotent methods).
    pub hedge: Option<HedgePolicy>,
}

/// The first level that sets a key.
macro_rules! pick {
    ($levels:expr, $($key:tt).+, $default:expr) => {
        $levels
            .iter()
            .find_map(|level| level.$($key).+)
            .unwrap_or($default)
    };
}

impl MethodPolicy {
    /// Resolves a method's policy. `levels` are ordered most specific first
    /// (config method, method attribute, config client, trait attribute);
    /// the defaults come last. Values are already in range: attributes are
    /// checked at compile time, config values when the config is parsed.
    pub fn resolve(def: &MethodDef, levels: &[&Overrides]) -> MethodPolicy {
        let idempotent = def.idempotent || def.verb.is_idempotent();
        let retry = pick!(levels, retry.enabled, true).then(|| {
            let (backoff_base, backoff_max) = pick!(
                levels,
                retry.backoff,
                (defaults::BACKOFF_BASE, defaults::BACKOFF_MAX)
            );
            RetryPolicy {
                max_attempts: pick!(levels, retry.max_attempts, defaults::MAX_ATTEMPTS),
                backoff_base,
                backoff_max,
                on: pick!(levels, retry.on, StatusSet::from_codes(defaults::RETRY_ON)),
                attempt_timeout: levels.iter().find_map(|l| l.retry.attempt_timeout),
            }
        });
        let circuit = pick!(levels, circuit.enabled, true).then(|| CircuitPolicy {
            window: pick!(levels, circuit.window, defaults::WINDOW),
            min_calls: pick!(levels, circuit.min_calls, defaults::MIN_CALLS),
            failure_rate: pick!(levels, circuit.failure_rate, defaults::FAILURE_RATE),
            slow_call: pick!(levels, circuit.slow_call, defaults::SLOW_CALL),
            slow_call_rate: pick!(levels, circuit.slow_call_rate, defaults::SLOW_CALL_RATE),
            open_for: pick!(levels, circuit.open_for, defaults::OPEN_FOR),
            half_open_calls: pick!(levels, circuit.half_open_calls, defaults::HALF_OPEN_CALLS),
        });
        let bulkhead = pick!(levels, bulkhead.enabled, false).then(|| BulkheadPolicy {
            max_concurrent: pick!(levels, bulkhead.max_concurrent, defaults::MAX_CONCURRENT),
            max_wait: pick!(levels, bulkhead.max_wait, defaults::MAX_WAIT),
        });
        let hedge = (idempotent && pick!(levels, hedge.enabled, false)).then(|| HedgePolicy {
            delay: pick!(levels, hedge.delay, defaults::HEDGE_DELAY),
            max_extra: pick!(levels, hedge.max_extra, defaults::HEDGE_MAX_EXTRA),
        });
        MethodPolicy {
            timeout: pick!(levels, timeout, defaults::TIMEOUT),
            idempotent,
            retry,
            circuit,
            bulkhead,
            hedge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Verb;

    const GET: MethodDef = MethodDef {
        name: "get",
        verb: Verb::Get,
        path: "/x",
        idempotent: false,
        policy: Overrides::NONE,
    };
    const POST: MethodDef = MethodDef {
        name: "create",
        verb: Verb::Post,
        path: "/x",
        idempotent: false,
        policy: Overrides::NONE,
    };

    fn resolve(def: &MethodDef, levels: &[&Overrides]) -> MethodPolicy {
        MethodPolicy::resolve(def, levels)
    }

    #[test]
    fn defaults_apply_when_no_level_sets_anything() {
        let p = resolve(&GET, &[]);
        assert_eq!(p.timeout, defaults::TIMEOUT);
        assert!(p.idempotent);
        let retry = p.retry.unwrap_or_else(|| panic!("retry on by default"));
        assert_eq!(retry.max_attempts, 3);
        assert!(retry.on.contains(503) && retry.on.contains(429) && !retry.on.contains(500));
        assert_eq!(p.circuit.map(|c| c.window), Some(20));
        assert_eq!(p.bulkhead, None);
        assert_eq!(p.hedge, None);
        assert!(!resolve(&POST, &[]).idempotent);
    }

    #[test]
    fn levels_combine_key_by_key_most_specific_first() {
        let trait_level = Overrides {
            timeout: Some(Duration::from_secs(2)),
            retry: RetryOverrides {
                enabled: Some(true),
                max_attempts: Some(5),
                backoff: Some((Duration::from_millis(10), Duration::from_millis(20))),
                ..Overrides::NONE.retry
            },
            ..Overrides::NONE
        };
        let method_level = Overrides {
            retry: RetryOverrides {
                enabled: Some(true),
                max_attempts: Some(2),
                ..Overrides::NONE.retry
            },
            ..Overrides::NONE
        };
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
        let trait_level = Overrides {
            circuit: CircuitOverrides {
                enabled: Some(false),
                ..Overrides::NONE.circuit
            },
            ..Overrides::NONE
        };
        let method_level = Overrides {
            circuit: CircuitOverrides {
                enabled: Some(true),
                window: Some(50),
                ..Overrides::NONE.circuit
            },
            ..Overrides::NONE
        };
        assert_eq!(resolve(&GET, &[&trait_level]).circuit, None);
        let p = resolve(&GET, &[&method_level, &trait_level]);
        assert_eq!(p.circuit.map(|c| (c.window, c.min_calls)), Some((50, 10)));
    }

    #[test]
    fn hedging_never_applies_to_non_idempotent_methods() {
        let hedge = Overrides {
            hedge: HedgeOverrides {
                enabled: Some(true),
                ..Overrides::NONE.hedge
            },
            ..Overrides::NONE
        };
        assert!(resolve(&GET, &[&hedge]).hedge.is_some());
        assert!(resolve(&POST, &[&hedge]).hedge.is_none());
    }

    #[test]
    fn status_sets() {
        const SET: StatusSet = StatusSet::from_codes(&[100, 429, 599, 600, 99]);
        assert!(SET.contains(100) && SET.contains(429) && SET.contains(599));
        assert!(!SET.contains(600) && !SET.contains(99) && !SET.contains(500));
        assert_eq!(format!("{SET:?}"), "{100, 429, 599}");
    }
}
