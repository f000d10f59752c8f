//! What the dashboard serves, as JSON: every built client's effective
//! policies and live state ([`ClientSnapshot`]) merged with its counters
//! ([`MethodStatsSnapshot`]), and, when a previous sample of the same
//! client is at hand, the rates between the two.
//!
//! The JSON is the contract (the page, scripts and the tests read it), so
//! the types here are a plain mapping owned by the dashboard rather than
//! `Serialize` derives spread over the policy and inspection types: the
//! Rust types stay free to change, and durations are written the way the
//! attributes take them (`"300ms"`, `"50ms..1s"`).

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;

use crate::inspect::Observed;
use crate::inspect::{ClientSnapshot, InstanceSnapshot, MethodSnapshot};
use crate::observe::stats::{MethodStatsSnapshot, Transition};
use crate::observe::{CircuitState, LogLevel};
use crate::policy::MethodPolicy;
use crate::policy::circuit::Force;

// ===== the document =====

/// Every client at one moment.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// When it was sampled (milliseconds since the Unix epoch).
    pub(crate) at_ms: u64,
    /// Time since the sample the rates are computed against; `None` when
    /// there was none (a snapshot, or a stream's first event).
    pub(crate) interval_ms: Option<f64>,
    /// Whether the router accepts operator actions.
    pub(crate) operator_actions: bool,
    pub(crate) clients: Vec<ClientReport>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ClientReport {
    pub(crate) service: &'static str,
    pub(crate) retry_budget_remaining: Option<u64>,
    pub(crate) instances: Option<Vec<InstanceReport>>,
    pub(crate) methods: Vec<MethodReport>,
}

#[derive(Debug, Serialize)]
pub(crate) struct InstanceReport {
    id: String,
    url: String,
    zone: Option<String>,
    in_flight: u32,
    rtt_ms: f64,
    ejected: bool,
    ejections: u32,
}

#[derive(Debug, Serialize)]
pub(crate) struct MethodReport {
    pub(crate) name: &'static str,
    verb: &'static str,
    path: &'static str,
    policy: PolicyReport,
    pub(crate) circuit: Option<CircuitReport>,
    bulkhead: Option<BulkheadReport>,
    /// Counters since the client was built.
    pub(crate) totals: Totals,
    /// Per second over the last interval; `None` without a previous sample.
    pub(crate) rates: Option<Rates>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CircuitReport {
    /// The breaker's own state: `closed`, `open`, `half_open`.
    pub(crate) state: &'static str,
    /// An operator's override: `auto`, `open`, `disable`.
    pub(crate) forced: &'static str,
    failures: u64,
    slow: u64,
    calls: u64,
    /// The last transitions, oldest first.
    pub(crate) transitions: Vec<TransitionReport>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TransitionReport {
    at_ms: u64,
    from: &'static str,
    to: &'static str,
}

#[derive(Debug, Serialize)]
struct BulkheadReport {
    max_concurrent: u32,
    available: usize,
    in_use: usize,
}

#[derive(Debug, PartialEq, Serialize)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failed: u64,
    pub(crate) fallbacks: u64,
    pub(crate) retries: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

#[derive(Debug, PartialEq, Serialize)]
pub(crate) struct Rates {
    pub(crate) calls_per_s: f64,
    /// Failed calls as a share of the calls ended in the interval; `None`
    /// when none ended.
    pub(crate) error_pct: Option<f64>,
    pub(crate) retries_per_s: f64,
    pub(crate) fallbacks_per_s: f64,
    /// Latency quantiles of the calls ended in the interval.
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

// ===== policies, as the attributes write them =====

#[derive(Debug, Serialize)]
struct PolicyReport {
    timeout: String,
    idempotent: bool,
    retry: Option<RetryReport>,
    circuit: Option<CircuitPolicyReport>,
    rate_limit: Option<RateLimitReport>,
    bulkhead: Option<BulkheadPolicyReport>,
    hedge: Option<HedgeReport>,
    log: LogReport,
}

#[derive(Debug, Serialize)]
struct RateLimitReport {
    per_second: u32,
    burst: u32,
    max_wait: String,
}

#[derive(Debug, Serialize)]
struct RetryReport {
    max_attempts: u32,
    backoff: String,
    on: Vec<u16>,
    attempt_timeout: Option<String>,
}

#[derive(Debug, Serialize)]
struct CircuitPolicyReport {
    window: u32,
    min_calls: u32,
    failure_rate: u8,
    /// `None` when no call counts as slow.
    slow_call: Option<String>,
    slow_call_rate: u8,
    open_for: String,
    half_open_calls: u32,
}

#[derive(Debug, Serialize)]
struct BulkheadPolicyReport {
    max_concurrent: u32,
    max_wait: String,
}

#[derive(Debug, Serialize)]
struct HedgeReport {
    delay: String,
    max_extra: u32,
}

#[derive(Debug, Serialize)]
struct LogReport {
    level: &'static str,
    body_limit: u32,
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<&MethodPolicy> for PolicyReport {
    fn from(p: &MethodPolicy) -> Self {
        PolicyReport {
            timeout: duration(p.timeout),
            idempotent: p.idempotent,
            retry: p.retry.as_ref().map(|r| RetryReport {
                max_attempts: r.max_attempts,
                backoff: format!("{}..{}", duration(r.backoff_base), duration(r.backoff_max)),
                on: r.on.codes().collect(),
                attempt_timeout: r.attempt_timeout.map(duration),
            }),
            circuit: p.circuit.as_ref().map(|c| CircuitPolicyReport {
                window: c.window,
                min_calls: c.min_calls,
                failure_rate: c.failure_rate,
                slow_call: (c.slow_call <= crate::spec::MAX_DURATION)
                    .then(|| duration(c.slow_call)),
                slow_call_rate: c.slow_call_rate,
                open_for: duration(c.open_for),
                half_open_calls: c.half_open_calls,
            }),
            rate_limit: p.rate_limit.as_ref().map(|r| RateLimitReport {
                per_second: r.per_second,
                burst: r.burst,
                max_wait: duration(r.max_wait),
            }),
            bulkhead: p.bulkhead.as_ref().map(|b| BulkheadPolicyReport {
                max_concurrent: b.max_concurrent,
                max_wait: duration(b.max_wait),
            }),
            hedge: p.hedge.as_ref().map(|h| HedgeReport {
                delay: duration(h.delay),
                max_extra: h.max_extra,
            }),
            log: LogReport {
                level: match p.log.level {
                    LogLevel::None => "none",
                    LogLevel::Basic => "basic",
                    LogLevel::Headers => "headers",
                    LogLevel::Full => "full",
                },
                body_limit: p.log.body_limit,
            },
        }
    }
}

/// The name of an override in the JSON and in the operator action's body.
pub(crate) fn force_label(force: Force) -> &'static str {
    match force {
        Force::Auto => "auto",
        Force::Open => "open",
        Force::Close => "close",
        Force::Disable => "disable",
    }
}

fn state_label(state: CircuitState) -> &'static str {
    state.as_label()
}

impl From<&Transition> for TransitionReport {
    fn from(t: &Transition) -> Self {
        TransitionReport {
            at_ms: unix_ms(t.at),
            from: state_label(t.from),
            to: state_label(t.to),
        }
    }
}

impl From<&InstanceSnapshot> for InstanceReport {
    fn from(i: &InstanceSnapshot) -> Self {
        InstanceReport {
            id: i.id.clone(),
            url: i.url.clone(),
            zone: i.zone.clone(),
            in_flight: i.in_flight,
            rtt_ms: millis(i.rtt),
            ejected: i.ejected,
            ejections: i.ejections,
        }
    }
}

fn quantile_ms(latency: &[u64], q: f64) -> Option<f64> {
    MethodStatsSnapshot::latency_quantile(latency, q).map(millis)
}

impl From<&MethodStatsSnapshot> for Totals {
    fn from(s: &MethodStatsSnapshot) -> Self {
        Totals {
            calls: s.calls,
            failed: s.failed,
            fallbacks: s.fallbacks,
            retries: s.retries,
            p50_ms: quantile_ms(&s.latency, 0.5),
            p99_ms: quantile_ms(&s.latency, 0.99),
        }
    }
}

// ===== rates from two samples =====

/// The rates between two samples of one method's counters taken `elapsed`
/// apart; `None` when no time passed. Counters only grow, so a difference
/// is what happened in between (saturating, should a sample be torn).
pub(crate) fn rates(
    before: &MethodStatsSnapshot,
    after: &MethodStatsSnapshot,
    elapsed: Duration,
) -> Option<Rates> {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return None;
    }
    let calls = after.calls.saturating_sub(before.calls);
    let failed = after.failed.saturating_sub(before.failed);
    let latency: Vec<u64> = after
        .latency
        .iter()
        .zip(before.latency.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    Some(Rates {
        calls_per_s: calls as f64 / secs,
        error_pct: (calls > 0).then(|| 100.0 * failed.min(calls) as f64 / calls as f64),
        retries_per_s: after.retries.saturating_sub(before.retries) as f64 / secs,
        fallbacks_per_s: after.fallbacks.saturating_sub(before.fallbacks) as f64 / secs,
        p50_ms: quantile_ms(&latency, 0.5),
        p99_ms: quantile_ms(&latency, 0.99),
    })
}

fn method_report(
    m: &MethodSnapshot,
    stats: Option<&MethodStatsSnapshot>,
    rates: Option<Rates>,
) -> MethodReport {
    let transitions =
        stats.map_or_else(Vec::new, |s| s.transitions.iter().map(Into::into).collect());
    MethodReport {
        name: m.name,
        verb: m.verb.as_str(),
        path: m.path,
        policy: (&m.policy).into(),
        circuit: m.circuit.map(|c| CircuitReport {
            state: state_label(c.state),
            forced: force_label(c.forced),
            failures: c.failures,
            slow: c.slow,
            calls: c.calls,
            transitions,
        }),
        bulkhead: m.bulkhead.map(|b| BulkheadReport {
            max_concurrent: b.max_concurrent,
            available: b.available,
            in_use: usize::try_from(b.max_concurrent)
                .unwrap_or(usize::MAX)
                .saturating_sub(b.available),
        }),
        totals: stats.map_or(
            Totals {
                calls: 0,
                failed: 0,
                fallbacks: 0,
                retries: 0,
                p50_ms: None,
                p99_ms: None,
            },
            Totals::from,
        ),
        rates,
    }
}

/// One client's report; `before` is its previous sample, if any, taken
/// `elapsed` ago.
pub(crate) fn client_report(
    snapshot: &ClientSnapshot,
    stats: &[MethodStatsSnapshot],
    before: Option<(&[MethodStatsSnapshot], Duration)>,
) -> ClientReport {
    let find = |list: &'_ [MethodStatsSnapshot], name: &str| -> Option<usize> {
        list.iter().position(|s| s.method == name)
    };
    ClientReport {
        service: snapshot.service,
        retry_budget_remaining: snapshot.retry_budget_remaining,
        instances: snapshot
            .instances
            .as_ref()
            .map(|list| list.iter().map(Into::into).collect()),
        methods: snapshot
            .methods
            .iter()
            .map(|m| {
                let now = find(stats, m.name).map(|i| &stats[i]);
                let rates = match (now, before) {
                    (Some(now), Some((prev, elapsed))) => {
                        find(prev, m.name).and_then(|i| rates(&prev[i], now, elapsed))
                    }
                    _ => None,
                };
                method_report(m, now, rates)
            })
            .collect(),
    }
}

// ===== sampling =====

/// A client's previous sample. The `Weak` keeps the client's allocation
/// (not the client) alive, so its address cannot be reused by another
/// client while it is remembered: comparing addresses is comparing clients.
struct Previous {
    client: Weak<dyn Observed>,
    at: Instant,
    stats: Vec<MethodStatsSnapshot>,
}

/// Samples every client and remembers the last sample of each, so the next
/// report has rates (one per stream: each viewer's interval is its own).
#[derive(Default)]
pub(crate) struct Sampler {
    last: Option<Instant>,
    previous: Vec<Previous>,
}

impl Sampler {
    /// A report of `clients` now, with rates against this sampler's
    /// previous sample of each.
    pub(crate) fn sample(
        &mut self,
        clients: &[Arc<dyn Observed>],
        operator_actions: bool,
    ) -> Report {
        let now = Instant::now();
        let mut next = Vec::with_capacity(clients.len());
        let mut reports = Vec::with_capacity(clients.len());
        for client in clients {
            let snapshot = client.snapshot();
            let stats = client.stats();
            let before = self
                .previous
                .iter()
                .find(|p| std::ptr::addr_eq(p.client.as_ptr(), Arc::as_ptr(client)))
                .map(|p| (p.stats.as_slice(), now.saturating_duration_since(p.at)));
            reports.push(client_report(&snapshot, &stats, before));
            next.push(Previous {
                client: Arc::downgrade(client),
                at: now,
                stats,
            });
        }
        self.previous = next;
        let interval = self
            .last
            .replace(now)
            .map(|last| millis(now.saturating_duration_since(last)));
        Report {
            at_ms: unix_ms(SystemTime::now()),
            interval_ms: interval,
            operator_actions,
            clients: reports,
        }
    }
}
