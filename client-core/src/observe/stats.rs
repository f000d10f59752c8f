//! Live statistics of every built client (feature `dashboard`): what the
//! dashboard shows, kept by courier itself so that it needs no metrics
//! exporter.
//!
//! Per method: calls, failed calls, fallbacks, retries (attempts beyond the
//! first), a latency histogram of whole calls, and the breaker's last
//! transitions. A call adds to a few relaxed atomic counters of its method;
//! nothing is locked on the call path. (The process-wide list of built
//! clients a dashboard reads is [`crate::inspect::clients`].)

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use super::{CircuitState, Event};

/// Latency buckets: bucket `i` holds calls that took under
/// `BUCKET_BASE_US × 2^(i/2)` µs (two buckets per doubling), from 50 µs to
/// about 30 min; the last one takes the rest.
const BUCKETS: usize = 48;
const BUCKET_BASE_US: f64 = 50.0;

/// Transitions kept per breaker.
const TRANSITIONS: usize = 16;

/// One method's counters.
pub(crate) struct MethodStats {
    calls: AtomicU64,
    failed: AtomicU64,
    fallbacks: AtomicU64,
    retries: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    transitions: Mutex<VecDeque<Transition>>,
}

impl fmt::Debug for MethodStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodStats")
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for MethodStats {
    fn default() -> Self {
        MethodStats {
            calls: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            transitions: Mutex::new(VecDeque::new()),
        }
    }
}

fn bucket(elapsed: Duration) -> usize {
    let us = elapsed.as_secs_f64() * 1e6;
    if us <= BUCKET_BASE_US {
        return 0;
    }
    let i = (2.0 * (us / BUCKET_BASE_US).log2()).ceil();
    (i as usize).min(BUCKETS - 1)
}

fn bucket_upper(i: usize) -> Duration {
    Duration::from_secs_f64(BUCKET_BASE_US * 2f64.powf(i as f64 / 2.0) / 1e6)
}

impl MethodStats {
    /// A call's end.
    #[inline]
    pub(crate) fn call(&self, failed: bool, attempts: u32, elapsed: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if attempts > 1 {
            self.retries
                .fetch_add(u64::from(attempts - 1), Ordering::Relaxed);
        }
        self.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self, name: &'static str) -> MethodStatsSnapshot {
        let latency: Vec<u64> = self
            .latency
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let transitions = self
            .transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        MethodStatsSnapshot {
            method: name,
            calls: self.calls.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            latency,
            transitions,
        }
    }
}

/// A breaker's change of state, when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// When.
    pub at: SystemTime,
    /// The state left.
    pub from: CircuitState,
    /// The state entered.
    pub to: CircuitState,
}

/// One method's counters at one moment. Counters only grow: rates come from
/// two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodStatsSnapshot {
    /// The trait method.
    pub method: &'static str,
    /// Calls ended (answered, failed, or answered by the fallback).
    pub calls: u64,
    /// Calls that ended with an error before any fallback: a call the
    /// fallback answered counts here and in `fallbacks`.
    pub failed: u64,
    /// Calls the fallback answered.
    pub fallbacks: u64,
    /// Attempts beyond each call's first (retries and hedges).
    pub retries: u64,
    /// Calls per latency bucket (see [`latency_quantile`](Self::latency_quantile)).
    pub latency: Vec<u64>,
    /// The breaker's last transitions, oldest first.
    pub transitions: Vec<Transition>,
}

impl MethodStatsSnapshot {
    /// The latency under which `q` (0.0–1.0) of the calls counted in
    /// `latency` ended (a bucket's upper bound; within a factor √2).
    /// `None` without calls.
    pub fn latency_quantile(latency: &[u64], q: f64) -> Option<Duration> {
        let total: u64 = latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_upper(i));
            }
        }
        Some(bucket_upper(latency.len().saturating_sub(1)))
    }
}

/// Each method's stats by `(service, method)`, for events (which carry
/// names). Weak: a dropped client's stats go with it.
type ByName = Mutex<HashMap<(String, String), Weak<MethodStats>>>;

fn by_name() -> &'static ByName {
    static BY_NAME: OnceLock<ByName> = OnceLock::new();
    BY_NAME.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Stats for a method of a client being built.
pub(crate) fn method(service: &str, method: &str) -> Arc<MethodStats> {
    let stats = Arc::new(MethodStats::default());
    let mut map = by_name().lock().unwrap_or_else(PoisonError::into_inner);
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(
        (service.to_owned(), method.to_owned()),
        Arc::downgrade(&stats),
    );
    stats
}

/// Events into the stats.
pub(crate) fn event(event: &Event<'_>) {
    let (service, method) = match *event {
        Event::CircuitStateChanged {
            service, method, ..
        }
        | Event::FallbackUsed {
            service, method, ..
        } => (service, method),
        _ => return,
    };
    let stats = {
        let map = by_name().lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(service.to_owned(), method.to_owned()))
            .and_then(Weak::upgrade)
    };
    let Some(stats) = stats else {
        return;
    };
    match *event {
        Event::CircuitStateChanged { from, to, .. } => {
            let mut list = stats
                .transitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if list.len() == TRANSITIONS {
                list.pop_front();
            }
            list.push_back(Transition {
                at: SystemTime::now(),
                from,
                to,
            });
        }
        Event::FallbackUsed { .. } => {
            stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// The stats of a client's methods, in the trait's order.
pub(crate) fn snapshot(methods: &[(&'static str, &Arc<MethodStats>)]) -> Vec<MethodStatsSnapshot> {
    methods
        .iter()
        .map(|(name, stats)| stats.snapshot(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_and_quantiles() {
        let stats = MethodStats::default();
        for ms in [1u64, 1, 1, 1, 1, 1, 1, 1, 1, 100] {
            stats.call(false, 1, Duration::from_millis(ms));
        }
        let s = stats.snapshot("m");
        assert_eq!(s.calls, 10);
        let p50 = MethodStatsSnapshot::latency_quantile(&s.latency, 0.5).unwrap_or_default();
        let p99 = MethodStatsSnapshot::latency_quantile(&s.latency, 0.99).unwrap_or_default();
        assert!(
            p50 >= Duration::from_millis(1) && p50 < Duration::from_micros(1500),
            "{p50:?}"
        );
        assert!(
            p99 >= Duration::from_millis(100) && p99 < Duration::from_millis(142),
            "{p99:?}"
        );
        assert_eq!(MethodStatsSnapshot::latency_quantile(&[0; 4], 0.5), None);
    }
}
