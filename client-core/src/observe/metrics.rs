//! Metrics through the `metrics` facade (feature `metrics`): any exporter
//! (Prometheus, StatsD, OpenTelemetry) installed as the global recorder
//! receives them.
//!
//! | metric | kind | labels | Resilience4j / OpenTelemetry equivalent |
//! |---|---|---|---|
//! | `http.client.request.duration` | histogram, seconds, per attempt | `http.request.method`, `url.template`, `server.address`, `server.port`, `http.response.status_code` or `error.type`, `courier.client`, `courier.method` | OTel `http.client.request.duration` |
//! | `courier.circuitbreaker.calls` | counter, per attempt | `courier.client`, `courier.method`, `kind` = `successful`, `failed`, `ignored`, `not_permitted` | `resilience4j.circuitbreaker.calls` |
//! | `courier.circuitbreaker.state` | gauge, 0 or 1 per state | `courier.client`, `courier.method`, `state` = `closed`, `open`, `half_open` | `resilience4j.circuitbreaker.state` |
//! | `courier.circuitbreaker.failure_rate`, `courier.circuitbreaker.slow_call_rate` | gauge, percent | `courier.client`, `courier.method` | `resilience4j.circuitbreaker.failure.rate`, `….slow.call.rate` |
//! | `courier.retry.calls` | counter, per call | `courier.client`, `courier.method`, `kind` = `successful_without_retry`, `successful_with_retry`, `failed_without_retry`, `failed_with_retry` | `resilience4j.retry.calls` |
//! | `courier.bulkhead.available_concurrent_calls`, `courier.bulkhead.max_allowed_concurrent_calls` | gauge | `courier.client`, `courier.method` | `resilience4j.bulkhead.available.concurrent.calls`, `….max.allowed.concurrent.calls` |
//! | `courier.ratelimiter.refused` | counter, per attempt refused | `courier.client`, `courier.method` | (Resilience4j's `RequestNotPermitted`, counted) |
//! | `courier.retry_budget.remaining` | gauge (at each retry asked for) | `courier.client` | (Finagle's retry budget) |
//! | `courier.retry_budget.exhausted` | counter | `courier.client`, `courier.method` | |
//! | `courier.fallback.calls` | counter | `courier.client`, `courier.method`, `cause` | Hystrix fallback success |
//! | `courier.balancer.instances`, `courier.balancer.ejected` | gauge (at each change of the set and each ejection) | `courier.client` | (Envoy's outlier detection stats) |
//! | `courier.balancer.ejections` | counter | `courier.client`, `courier.instance` | |
//! | `courier.discovery.errors` | counter | `courier.client` (the service looked up) | (Spring Cloud's discovery client logs only) |
//!
//! Label values come only from compile-time names (client, method, path
//! template), status codes, error kinds, states and instance ids: never a
//! raw path or a query value, so the number of series is fixed.
//!
//! Handles are registered when the client is built (so install the recorder
//! before building clients); a histogram per status code and server is
//! registered the first time that combination is seen and cached.

use std::sync::Arc;

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge, Histogram};

use super::Event;
use super::trace::Server;
use crate::ErrorKind;
use crate::observe::CircuitState;
use crate::policy::classify::Outcome;

/// The buckets OpenTelemetry recommends for `http.client.request.duration`
/// (seconds), for exporters that need them configured (Prometheus).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// What a duration is labelled with besides the method: a status code or an
/// error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Status(u16),
    Error(ErrorKind),
}

/// One method's handles.
pub(crate) struct MethodMetrics {
    client: &'static str,
    method: &'static str,
    verb: &'static str,
    template: &'static str,
    calls: [Counter; 4],
    retry: [Counter; 4],
    failure_rate: Gauge,
    slow_rate: Gauge,
    bulkhead_available: Gauge,
    bulkhead_max: Gauge,
    rate_limited: Counter,
    durations: ArcSwap<Vec<(Answer, Server, Histogram)>>,
}

/// Past this many (answer, server) pairs a method stops caching histograms
/// (an instance set that keeps changing would grow the cache otherwise).
const CACHED: usize = 64;

impl MethodMetrics {
    pub(crate) fn new(
        client: &'static str,
        method: &'static str,
        verb: &'static str,
        template: &'static str,
    ) -> Self {
        let calls = ["successful", "failed", "ignored", "not_permitted"].map(|kind| {
            metrics::counter!("courier.circuitbreaker.calls",
                "courier.client" => client, "courier.method" => method, "kind" => kind)
        });
        let retry = [
            "successful_without_retry",
            "successful_with_retry",
            "failed_without_retry",
            "failed_with_retry",
        ]
        .map(|kind| {
            metrics::counter!("courier.retry.calls",
                "courier.client" => client, "courier.method" => method, "kind" => kind)
        });
        let gauge = |name: &'static str| metrics::gauge!(name, "courier.client" => client, "courier.method" => method);
        MethodMetrics {
            client,
            method,
            verb,
            template,
            calls,
            retry,
            failure_rate: gauge("courier.circuitbreaker.failure_rate"),
            slow_rate: gauge("courier.circuitbreaker.slow_call_rate"),
            bulkhead_available: gauge("courier.bulkhead.available_concurrent_calls"),
            bulkhead_max: gauge("courier.bulkhead.max_allowed_concurrent_calls"),
            rate_limited: metrics::counter!("courier.ratelimiter.refused",
                "courier.client" => client, "courier.method" => method),
            durations: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Sets the breaker's gauges to its initial state.
    pub(crate) fn breaker_started(&self) {
        for state in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            state_gauge(self.client, self.method, state)
                .set(f64::from(state == CircuitState::Closed));
        }
    }

    /// An attempt's outcome, as the breaker counts it.
    #[inline]
    pub(crate) fn outcome(&self, outcome: Outcome) {
        let i = match outcome {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::Ignored => 2,
        };
        self.calls[i].increment(1);
    }

    /// An attempt the breaker did not permit.
    pub(crate) fn not_permitted(&self) {
        self.calls[3].increment(1);
    }

    /// An attempt the rate limiter refused.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.increment(1);
    }

    /// A call's end, as the retry metrics count it.
    #[inline]
    pub(crate) fn call(&self, ok: bool, retried: bool) {
        let i = usize::from(!ok) * 2 + usize::from(retried);
        self.retry[i].increment(1);
    }

    /// The breaker's rates after an outcome (percent; `None` until the
    /// window has `min_calls`).
    pub(crate) fn rates(&self, failure: f64, slow: f64) {
        self.failure_rate.set(failure);
        self.slow_rate.set(slow);
    }

    /// The bulkhead's free slots and size.
    pub(crate) fn bulkhead(&self, available: usize, max: u32) {
        self.bulkhead_available.set(available as f64);
        self.bulkhead_max.set(f64::from(max));
    }

    /// An attempt's duration.
    pub(crate) fn duration(&self, server: &Server, answer: Answer, seconds: f64) {
        let cached = self.durations.load();
        if let Some((_, _, histogram)) = cached.iter().find(|(a, s, _)| *a == answer && s == server)
        {
            histogram.record(seconds);
            return;
        }
        let histogram = self.register(server, answer);
        histogram.record(seconds);
        if cached.len() < CACHED {
            let entry = (answer, server.clone(), histogram);
            self.durations.rcu(|now| {
                let mut next = Vec::clone(now);
                next.push(entry.clone());
                Arc::new(next)
            });
        }
    }

    #[cold]
    fn register(&self, server: &Server, answer: Answer) -> Histogram {
        let (client, method, verb, template) = (self.client, self.method, self.verb, self.template);
        let address = server.address.to_string();
        let port = server.port.to_string();
        match answer {
            Answer::Status(code) => metrics::histogram!("http.client.request.duration",
                "http.request.method" => verb, "url.template" => template,
                "server.address" => address, "server.port" => port,
                "http.response.status_code" => code.to_string(),
                "courier.client" => client, "courier.method" => method),
            Answer::Error(kind) => metrics::histogram!("http.client.request.duration",
                "http.request.method" => verb, "url.template" => template,
                "server.address" => address, "server.port" => port,
                "error.type" => kind.label(),
                "courier.client" => client, "courier.method" => method),
        }
    }
}

fn state_gauge(client: &str, method: &str, state: CircuitState) -> Gauge {
    metrics::gauge!("courier.circuitbreaker.state",
        "courier.client" => client.to_owned(), "courier.method" => method.to_owned(),
        "state" => state.as_label())
}

/// The client's retry budget after a retry was asked for.
pub(crate) fn budget_remaining(client: &'static str, remaining: u64) {
    metrics::gauge!("courier.retry_budget.remaining", "courier.client" => client)
        .set(remaining as f64);
}

/// The balancer's set.
pub(crate) fn balancer(client: &'static str, instances: usize, ejected: usize) {
    metrics::gauge!("courier.balancer.instances", "courier.client" => client).set(instances as f64);
    metrics::gauge!("courier.balancer.ejected", "courier.client" => client).set(ejected as f64);
}

/// Events into metrics (events are rare: handles are looked up each time).
pub(crate) fn event(event: &Event<'_>) {
    match *event {
        Event::CircuitStateChanged {
            service,
            method,
            to,
            ..
        } => {
            for state in [
                CircuitState::Closed,
                CircuitState::Open,
                CircuitState::HalfOpen,
            ] {
                state_gauge(service, method, state).set(f64::from(state == to));
            }
        }
        Event::BudgetExhausted { service, method } => {
            metrics::counter!("courier.retry_budget.exhausted",
                "courier.client" => service.to_owned(), "courier.method" => method.to_owned())
            .increment(1);
        }
        Event::Ejected {
            service, instance, ..
        } => {
            metrics::counter!("courier.balancer.ejections",
                "courier.client" => service.to_owned(), "courier.instance" => instance.to_owned())
            .increment(1);
        }
        Event::FallbackUsed {
            service,
            method,
            cause,
        } => {
            metrics::counter!("courier.fallback.calls",
                "courier.client" => service.to_owned(), "courier.method" => method.to_owned(),
                "cause" => cause.label())
            .increment(1);
        }
        Event::DiscoveryFailed { service, .. } => {
            metrics::counter!("courier.discovery.errors", "courier.client" => service.to_owned())
                .increment(1);
        }
        _ => {}
    }
}
