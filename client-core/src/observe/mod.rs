//! Seeing into a client: events, tracing spans, metrics, HTTP logs, live
//! statistics.
//!
//! courier knows at compile time the service name, the method name and the
//! path *template* of every call, so everything it reports is labelled
//! with those (`GET /api/v1/users/{id}`, never the raw path or a query
//! value): the number of series stays fixed however many ids are called.
//!
//! - **Events** ([`Event`]): a breaker changed state, a retry is about to
//!   be made, a hedge was sent, an instance was ejected, the retry budget ran
//!   out, a fallback answered. Each goes to the builder's callback
//!   ([`ClientBuilder::on_event`](crate::ClientBuilder::on_event)), to
//!   `tracing` at a fitting level (a breaker opening and an ejection are
//!   warnings), to the metrics, and to the live statistics. Events are rare,
//!   so this fan-out sits off the happy path.
//! - **Spans** (`trace.rs`): one span per call, one OpenTelemetry CLIENT span
//!   per attempt, following the stable HTTP client conventions; with the
//!   `opentelemetry` feature, `traceparent`/`tracestate` carry the attempt's
//!   span context to the called service.
//! - **Metrics** (`metrics.rs`, feature `metrics`): the `metrics` facade,
//!   with the OpenTelemetry request-duration histogram and Resilience4j's
//!   families under courier names.
//! - **HTTP logs** (`log.rs`): Feign's levels, per client and method,
//!   through `tracing`, with secrets masked.
//! - **Live statistics** (`stats.rs`, feature `dashboard`): per-method
//!   counts, latencies and recent transitions of every built client, for
//!   the dashboard.
//!
//! With no tracing subscriber and no metrics recorder, all of this costs a
//! few branches per call (measured in the overhead benchmark).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod log;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
pub(crate) mod probe;
#[cfg(feature = "dashboard")]
pub mod stats;
pub(crate) mod trace;

pub use log::{LogLevel, LogPolicy};
#[cfg(feature = "metrics")]
pub use metrics::DURATION_BUCKETS;

use crate::ErrorKind;

/// Something worth knowing that happened inside a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A method's circuit breaker changed state.
    #[non_exhaustive]
    CircuitStateChanged {
        /// The breaker's name, `<service>#<method>`.
        breaker: &'a str,
        /// The logical service name.
        service: &'a str,
        /// The trait method.
        method: &'a str,
        /// The state it left.
        from: CircuitState,
        /// The state it entered.
        to: CircuitState,
    },
    /// A failed attempt is about to be tried again.
    #[non_exhaustive]
    Retry {
        /// The logical service name.
        service: &'a str,
        /// The trait method.
        method: &'a str,
        /// Attempts made so far.
        attempts: u32,
        /// The kind of the failure being retried.
        cause: ErrorKind,
        /// Its status, if the service answered.
        status: Option<u16>,
        /// How long the call waits before the retry.
        wait: Duration,
        /// Whether the wait came from the service's `Retry-After`.
        retry_after: bool,
    },
    /// A hedged attempt was sent, the first answer being late.
    #[non_exhaustive]
    HedgeSent {
        /// The logical service name.
        service: &'a str,
        /// The trait method.
        method: &'a str,
        /// Attempts in flight with it.
        in_flight: u32,
    },
    /// The retry budget refused a retry (or a hedge).
    #[non_exhaustive]
    BudgetExhausted {
        /// The logical service name.
        service: &'a str,
        /// The trait method whose retry was refused.
        method: &'a str,
    },
    /// An instance was ejected for failing.
    #[non_exhaustive]
    Ejected {
        /// The logical service name.
        service: &'a str,
        /// The instance's id.
        instance: &'a str,
        /// How long it is ejected for.
        duration: Duration,
    },
    /// A call failed and the fallback answered instead.
    #[non_exhaustive]
    FallbackUsed {
        /// The logical service name.
        service: &'a str,
        /// The trait method.
        method: &'a str,
        /// The kind of the failure the fallback stood in for.
        cause: crate::ErrorKind,
    },
    /// An OAuth2 token request failed (feature `auth`): the calls waiting
    /// for it fail with [`ErrorKind::Auth`].
    #[non_exhaustive]
    TokenRequestFailed {
        /// The logical service name of the client.
        service: &'a str,
        /// The token URL, without its query.
        endpoint: &'a str,
        /// The OAuth2 `error` code of the answer, if it had one.
        code: Option<&'a str>,
    },
    /// A JWT verifier could not reach its revocation store (feature
    /// `jwt`): the request was refused with 503 (fail closed, the default)
    /// or let through (`failed_open`).
    #[non_exhaustive]
    RevocationsUnavailable {
        /// Whether the request was let through unchecked.
        failed_open: bool,
    },
    /// A JWT verifier could not fetch or read its JWKS (feature `jwt`); it
    /// keeps the keys it had.
    #[non_exhaustive]
    KeysUnavailable {
        /// The JWKS URL.
        url: &'a str,
    },
    /// A discovery could not reach or read its source (DNS, etcd), or an
    /// etcd registration could not renew its lease. A discovery keeps
    /// serving the last set it had (before its first answer: no instances,
    /// so calls fail fast) and tries again; this says that it happened and
    /// why. Delivered to the discovery's own `.on_event(…)` (a discovery
    /// serves many clients) and, like every event, to `tracing` (a
    /// warning) and the metrics.
    #[non_exhaustive]
    DiscoveryFailed {
        /// The logical service whose instances were asked for (or that
        /// was registered).
        service: &'a str,
        /// Where: the DNS name, or the etcd endpoint(s).
        source: &'a str,
        /// What went wrong, in words (at most a few hundred bytes).
        error: &'a str,
    },
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::CircuitStateChanged {
                breaker, from, to, ..
            } => write!(f, "circuit breaker {breaker}: {from} -> {to}"),
            Event::Retry {
                service,
                method,
                attempts,
                cause,
                wait,
                ..
            } => write!(
                f,
                "{service}#{method}: retrying after attempt {attempts} ({cause:?}) in {wait:?}"
            ),
            Event::HedgeSent {
                service,
                method,
                in_flight,
            } => write!(
                f,
                "{service}#{method}: hedge sent ({in_flight} attempts in flight)"
            ),
            Event::BudgetExhausted { service, method } => {
                write!(f, "{service}#{method}: retry budget exhausted")
            }
            Event::Ejected {
                service,
                instance,
                duration,
            } => write!(f, "{service}: instance {instance} ejected for {duration:?}"),
            Event::FallbackUsed {
                service,
                method,
                cause,
            } => write!(
                f,
                "fallback answered for {service}#{method} (cause: {cause:?})"
            ),
            Event::TokenRequestFailed {
                service,
                endpoint,
                code,
            } => {
                write!(f, "token request for {service} to {endpoint} failed")?;
                match code {
                    Some(code) => write!(f, ": {code}"),
                    None => Ok(()),
                }
            }
            Event::RevocationsUnavailable { failed_open: true } => {
                f.write_str("revocation store unavailable: request let through (fail open)")
            }
            Event::RevocationsUnavailable { failed_open: false } => {
                f.write_str("revocation store unavailable: request refused (fail closed)")
            }
            Event::KeysUnavailable { url } => write!(f, "JWKS {url} could not be fetched"),
            Event::DiscoveryFailed {
                service,
                source,
                error,
            } => write!(f, "discovery of {service} from {source} failed: {error}"),
        }
    }
}

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

impl CircuitState {
    /// The state as a label value: `closed`, `open`, `half_open`.
    pub const fn as_label(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
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

type Callback = dyn for<'e> Fn(&Event<'e>) + Send + Sync;

/// Where a client's events go: the user's callback, if any, and always
/// `tracing`, the metrics (feature `metrics`) and the live statistics
/// (feature `dashboard`).
#[derive(Clone, Default)]
#[doc(hidden)] // machinery, not API: reachable (unstable) through `__private`
pub struct EventSink(Option<Arc<Callback>>);

impl EventSink {
    /// A sink that calls `callback` for every event.
    pub fn new(callback: impl for<'e> Fn(&Event<'e>) + Send + Sync + 'static) -> Self {
        EventSink(Some(Arc::new(callback)))
    }

    /// A sink without a callback (events still reach tracing and metrics).
    pub fn none() -> Self {
        EventSink(None)
    }

    /// Hands `event` to the callback, tracing, the metrics and the
    /// statistics.
    #[cold]
    pub fn emit(&self, event: &Event<'_>) {
        trace::event(event);
        #[cfg(feature = "metrics")]
        metrics::event(event);
        #[cfg(feature = "dashboard")]
        stats::event(event);
        if let Some(callback) = &self.0 {
            callback(event);
        }
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "EventSink(callback)"
        } else {
            "EventSink(none)"
        })
    }
}
