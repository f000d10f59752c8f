//! Events a program can subscribe to.
//!
//! Resilience4j publishes breaker transitions on an event publisher; here a
//! client takes a callback on its builder
//! ([`ClientBuilder::on_event`](crate::ClientBuilder::on_event)) and calls it
//! for every [`Event`]. Events are rare (a state change, a fallback taking
//! over), so the callback sits off the happy path; with none set, emitting
//! is a branch on `None`.

use std::fmt;
use std::sync::Arc;

/// Something worth knowing that happened inside a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A method's circuit breaker changed state.
    CircuitStateChanged {
        /// The breaker's name, `<service>#<method>`.
        breaker: &'a str,
        /// The state it left.
        from: CircuitState,
        /// The state it entered.
        to: CircuitState,
    },
    /// A call failed and the fallback answered instead.
    FallbackUsed {
        /// The logical service name.
        service: &'a str,
        /// The trait method.
        method: &'a str,
        /// The kind of the failure the fallback stood in for.
        cause: crate::ErrorKind,
    },
    /// An OAuth2 token request failed (feature `auth`): the calls waiting
    /// for it fail with [`ErrorKind::Auth`](crate::ErrorKind::Auth).
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
    RevocationsUnavailable {
        /// Whether the request was let through unchecked.
        failed_open: bool,
    },
    /// A JWT verifier could not fetch or read its JWKS (feature `jwt`); it
    /// keeps the keys it had.
    KeysUnavailable {
        /// The JWKS URL.
        url: &'a str,
    },
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::CircuitStateChanged { breaker, from, to } => {
                write!(f, "circuit breaker {breaker}: {from} -> {to}")
            }
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

/// Where a client's events go: a callback, or nowhere.
#[derive(Clone, Default)]
pub struct EventSink(Option<Arc<Callback>>);

impl EventSink {
    /// A sink that calls `callback` for every event.
    pub fn new(callback: impl for<'e> Fn(&Event<'e>) + Send + Sync + 'static) -> Self {
        EventSink(Some(Arc::new(callback)))
    }

    /// A sink that drops every event.
    pub fn none() -> Self {
        EventSink(None)
    }

    /// Hands `event` to the callback, if any.
    #[inline]
    pub fn emit(&self, event: &Event<'_>) {
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
