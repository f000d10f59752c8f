//! Spans and events through `tracing`, after the stable OpenTelemetry HTTP
//! client conventions.
//!
//! - One span per call, `courier.call` (internal): `courier.client`,
//!   `courier.method`, and once it ends `courier.attempts`,
//!   `courier.outcome` (`ok` or the error kind) and `courier.fallback`.
//! - One CLIENT span per attempt, `courier.attempt`, whose OpenTelemetry
//!   name (`otel.name`) is `{METHOD} {url.template}`: the method's path
//!   template with its prefix (`GET /api/v1/users/{id}`), never the raw
//!   path. Fields: `http.request.method`, `url.template`, `server.address`,
//!   `server.port`, `http.response.status_code`, `error.type` (the status
//!   code, or the error kind), `http.request.resend_count` (on retries and
//!   hedges), `courier.instance` (the instance discovery picked). No field
//!   holds a query string or a header value.
//! - Events, target `courier`: a breaker opening, an ejection and an
//!   exhausted budget are warnings; a retry (with its cause, its wait and
//!   whether `Retry-After` set it), a breaker closing or half-opening and a
//!   fallback answering are info; a hedge sent is debug.
//!
//! With the `opentelemetry` feature, the attempt's span context (through
//! `tracing-opentelemetry`'s layer) is written as W3C `traceparent` and
//! `tracestate` headers, so the trace continues into the called service. The
//! two headers are written here from the span context, as the W3C Trace
//! Context spec gives them, rather than through the SDK's propagator: that
//! would make the whole OpenTelemetry SDK a dependency, and a global
//! propagator (a no-op unless configured) would decide whether courier
//! propagates.

use tracing::field::Empty;
use tracing::{Level, Span};

use super::Event;
use crate::observe::CircuitState;

/// Where an attempt goes, as OpenTelemetry names it; parsed once per base
/// URL (per instance with discovery), not per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    pub(crate) address: Box<str>,
    pub(crate) port: u16,
}

impl Server {
    /// The server of a base URL (`http://10.0.0.7:8080/prefix`).
    pub(crate) fn of(base: &str) -> Server {
        let parsed = url::Url::parse(base).ok();
        Server {
            address: parsed
                .as_ref()
                .and_then(|u| u.host_str().map(Into::into))
                .unwrap_or_default(),
            port: parsed
                .as_ref()
                .and_then(url::Url::port_or_known_default)
                .unwrap_or(0),
        }
    }
}

/// The span of one call.
#[inline]
pub(crate) fn call_span(client: &'static str, method: &'static str) -> Span {
    tracing::info_span!(
        target: "courier",
        "courier.call",
        courier.client = client,
        courier.method = method,
        courier.attempts = Empty,
        courier.outcome = Empty,
        courier.fallback = Empty,
    )
}

/// The CLIENT span of one attempt.
#[inline]
pub(crate) fn attempt_span(
    name: &str,
    verb: &'static str,
    template: &'static str,
    server: &Server,
) -> Span {
    tracing::info_span!(
        target: "courier",
        "courier.attempt",
        otel.name = name,
        otel.kind = "client",
        http.request.method = verb,
        url.template = template,
        server.address = &*server.address,
        server.port = server.port,
        http.response.status_code = Empty,
        "error.type" = Empty,
        http.request.resend_count = Empty,
        courier.instance = Empty,
    )
}

/// An event as a `tracing` event at its level.
pub(crate) fn event(event: &Event<'_>) {
    match *event {
        Event::CircuitStateChanged {
            breaker, from, to, ..
        } => {
            let (from, to) = (from.as_label(), to.as_label());
            if to == CircuitState::Open.as_label() {
                tracing::event!(target: "courier", Level::WARN, breaker, from, to, "circuit breaker opened");
            } else {
                tracing::event!(target: "courier", Level::INFO, breaker, from, to, "circuit breaker changed state");
            }
        }
        Event::Retry {
            service,
            method,
            attempts,
            cause,
            status,
            wait,
            retry_after,
        } => tracing::event!(
            target: "courier",
            Level::INFO,
            courier.client = service,
            courier.method = method,
            attempts,
            cause = ?cause,
            status,
            wait_ms = wait.as_secs_f64() * 1e3,
            retry_after,
            "retrying"
        ),
        Event::HedgeSent {
            service,
            method,
            in_flight,
        } => tracing::event!(
            target: "courier",
            Level::DEBUG,
            courier.client = service,
            courier.method = method,
            in_flight,
            "hedge sent"
        ),
        Event::BudgetExhausted { service, method } => tracing::event!(
            target: "courier",
            Level::WARN,
            courier.client = service,
            courier.method = method,
            "retry budget exhausted: not retrying"
        ),
        Event::Ejected {
            service,
            instance,
            duration,
        } => tracing::event!(
            target: "courier",
            Level::WARN,
            courier.client = service,
            courier.instance = instance,
            duration_s = duration.as_secs_f64(),
            "instance ejected"
        ),
        Event::FallbackUsed {
            service,
            method,
            cause,
        } => tracing::event!(
            target: "courier",
            Level::INFO,
            courier.client = service,
            courier.method = method,
            cause = ?cause,
            "fallback answered"
        ),
        Event::TokenRequestFailed {
            service,
            endpoint,
            code,
        } => tracing::event!(
            target: "courier",
            Level::WARN,
            courier.client = service,
            endpoint,
            code,
            "token request failed"
        ),
        Event::RevocationsUnavailable { failed_open } => tracing::event!(
            target: "courier",
            Level::WARN,
            failed_open,
            "revocation store unavailable"
        ),
        Event::KeysUnavailable { url } => tracing::event!(
            target: "courier",
            Level::WARN,
            url,
            "JWKS could not be fetched"
        ),
        Event::DiscoveryFailed {
            service,
            source,
            error,
        } => tracing::event!(
            target: "courier",
            Level::WARN,
            courier.client = service,
            source,
            error,
            "discovery failed; keeping the last known instances"
        ),
    }
}

/// Writes the attempt span's OpenTelemetry context as W3C `traceparent` and
/// `tracestate`, unless the call set them itself.
#[cfg(feature = "opentelemetry")]
pub(crate) fn inject(span: &Span, headers: &mut http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    if span.is_none() || headers.contains_key("traceparent") {
        return;
    }
    let context = span.context();
    let remote = context.span();
    let sc = remote.span_context();
    if !sc.is_valid() {
        return;
    }
    let parent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    if let Ok(value) = http::HeaderValue::from_str(&parent) {
        headers.insert("traceparent", value);
    }
    let state = sc.trace_state().header();
    if !state.is_empty()
        && let Ok(value) = http::HeaderValue::from_str(&state)
    {
        headers.insert("tracestate", value);
    }
}
