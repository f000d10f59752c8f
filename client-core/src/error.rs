//! The one error type of courier.
//!
//! Modelled on `reqwest::Error` and `hyper::Error`: an opaque
//! [`Error`] that is one pointer wide (`Box<Inner>`), with a public
//! [`ErrorKind`] and predicates (`is_timeout()`, `is_status()`, …). Every
//! `is_*` predicate searches the cause chain: it is true if this error or
//! any courier error among its causes has that kind (`is_timeout()` also
//! recognises I/O and reqwest timeouts among the causes). `Display` says what happened at this level, in lower case,
//! naming the service, the method, the HTTP verb and the URL path of the call
//! (never the query string, a header value or any other secret); the cause is
//! kept in [`std::error::Error::source`].

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::{Method, StatusCode};

/// A boxed error that can cross threads; the type of causes and of
/// interceptor failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How many bytes of a response body an error keeps (see
/// [`Error::body_snippet`]).
pub(crate) const SNIPPET_BYTES: usize = 512;

/// What went wrong, broadly. Match on it, or use the `is_*` predicates of
/// [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A client setting was invalid; returned by `build()`.
    Builder,
    /// The call's arguments could not form a valid request (a path parameter
    /// of `..`, a header value with a line break, a body that does not
    /// serialize). Nothing was sent; except when a streamed request body
    /// (`#[body] BodyStream`) fails while it is sent, the one case where part
    /// of it may have gone out (the message says the stream failed).
    InvalidRequest,
    /// An [`Interceptor`](crate::Interceptor) refused the request. Nothing was
    /// sent.
    Interceptor,
    /// The connection to the service could not be made.
    Connect,
    /// The call, or the connection attempt, took longer than allowed.
    Timeout,
    /// The request failed after the connection was made (reset, broken pipe,
    /// protocol error).
    Transport,
    /// The service answered with a status that is not a success.
    Status,
    /// The response body could not be read, or was larger than the limit.
    Body,
    /// The response body could not be decoded into the method's return type.
    Decode,
    /// The method's circuit breaker is open: the call failed at once, without
    /// any I/O.
    CircuitOpen,
    /// The method's bulkhead was full: too many calls of it were in flight.
    BulkheadFull,
    /// The method's rate limiter had no permit for the attempt within its
    /// `max_wait` (or before the deadline): that attempt was not sent
    /// (earlier attempts of the call, if it retried, were).
    RateLimited,
    /// The configuration file or string is malformed.
    Config,
    /// Service discovery knows no instance of the service.
    NoInstances,
    /// The client's credentials could not be had: the OAuth2 token endpoint
    /// failed, refused the client or answered something that is not a
    /// token, or a service JWT could not be signed. Nothing was sent to the
    /// service; the message names the token endpoint and the OAuth2 `error`
    /// code, never a secret.
    Auth,
}

impl ErrorKind {
    /// The kind as a field or label value (metrics, spans).
    pub(crate) fn label(self) -> &'static str {
        match self {
            ErrorKind::Builder => "builder",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Interceptor => "interceptor",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Transport => "transport",
            ErrorKind::Status => "status",
            ErrorKind::Body => "body",
            ErrorKind::Decode => "decode",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::BulkheadFull => "bulkhead_full",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Config => "config",
            ErrorKind::NoInstances => "no_instances",
            ErrorKind::Auth => "auth",
            #[allow(unreachable_patterns)] // ErrorKind is non-exhaustive
            _ => "_OTHER",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Builder => "invalid client configuration",
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::Interceptor => "request refused by an interceptor",
            ErrorKind::Connect => "connection failed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Transport => "request failed",
            ErrorKind::Status => "unsuccessful status",
            ErrorKind::Body => "could not read the response body",
            ErrorKind::Decode => "could not decode the response body",
            ErrorKind::CircuitOpen => "circuit breaker is open",
            ErrorKind::BulkheadFull => "bulkhead is full",
            ErrorKind::RateLimited => "rate limit reached",
            ErrorKind::Config => "invalid configuration",
            ErrorKind::NoInstances => "no instances",
            ErrorKind::Auth => "could not get credentials",
        }
    }
}

/// The error of every courier call and of `build()`.
///
/// It names what happened ([`kind`](Self::kind)), to which service and method
/// ([`service`](Self::service), [`method`](Self::method)), the HTTP status if
/// one came back ([`status`](Self::status)) and, for status and decode
/// errors, the first bytes of the body ([`body_snippet`](Self::body_snippet)).
///
/// ```
/// # async fn demo(result: Result<(), courier::Error>) {
/// match result {
///     Err(e) if e.status() == Some(http::StatusCode::CONFLICT) => { /* already there */ }
///     Err(e) if e.is_timeout() || e.is_connect() => { /* try later */ }
///     Err(e) => eprintln!("{e}"),
///     Ok(()) => {}
/// }
/// # }
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    call: Option<CallSite>,
    status: Option<StatusCode>,
    message: Cow<'static, str>,
    snippet: Option<Box<str>>,
    source: Option<BoxError>,
    /// Attempts made before the call ended (0 when none was sent).
    attempts: u32,
    budget_exhausted: bool,
    /// A `Retry-After` the service sent with this error.
    retry_after: Option<Duration>,
    /// The id of the instance the failing attempt went to (discovery).
    instance: Option<Box<str>>,
    /// A body error because the body was over the limit (the service
    /// answered in full), as opposed to a read that broke off.
    too_large: bool,
    /// A transport error the service gave before processing the request
    /// (HTTP/2 `REFUSED_STREAM`, a graceful `GOAWAY`): safe to send again.
    unprocessed: bool,
    /// The failing request followed an answered one in the same attempt (a
    /// redirect's next hop, the resend after a 401): what the attempt began
    /// with reached the service, whatever became of this request.
    after_answer: bool,
}

/// Where a call error happened: filled in by the call pipeline.
struct CallSite {
    service: &'static str,
    method: &'static str,
    verb: Method,
    path: Box<str>,
}

// ===== impl Error =====

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                call: None,
                status: None,
                message: message.into(),
                snippet: None,
                source: None,
                attempts: 0,
                budget_exhausted: false,
                retry_after: None,
                instance: None,
                too_large: false,
                unprocessed: false,
                after_answer: false,
            }),
        }
    }

    pub(crate) fn builder(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Builder, message)
    }

    pub(crate) fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::InvalidRequest, message)
    }

    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) fn auth(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Auth, message)
    }

    /// Its message and cause, taken apart: for an error that reaches
    /// several callers (the token cache rebuilds one for each).
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) fn into_message_and_source(self) -> (Cow<'static, str>, Option<BoxError>) {
        let inner = *self.inner;
        (inner.message, inner.source)
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn with_snippet(mut self, body: &[u8]) -> Self {
        if !body.is_empty() {
            self.inner.snippet = Some(snippet(body).into());
        }
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    pub(crate) fn with_budget_exhausted(mut self) -> Self {
        self.inner.budget_exhausted = true;
        self
    }

    pub(crate) fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.inner.retry_after = after;
        self
    }

    pub(crate) fn with_instance(mut self, id: &str) -> Self {
        if self.inner.instance.is_none() {
            self.inner.instance = Some(id.into());
        }
        self
    }

    pub(crate) fn unprocessed(mut self) -> Self {
        self.inner.unprocessed = true;
        self
    }

    /// The service refused the request before processing any of it (see
    /// `transport::unprocessed`): it may be sent again, whatever its method.
    pub(crate) fn is_unprocessed(&self) -> bool {
        self.inner.unprocessed
    }

    /// Not known to be unprocessed after all: the refusal came through a
    /// client or layer that may have sent other requests first.
    pub(crate) fn sent_by_others(mut self) -> Self {
        self.inner.unprocessed = false;
        self
    }

    pub(crate) fn after_answer(mut self) -> Self {
        self.inner.after_answer = true;
        self
    }

    /// See `Inner::after_answer`: then nothing about this request makes
    /// the attempt safe to repeat.
    pub(crate) fn is_after_answer(&self) -> bool {
        self.inner.after_answer
    }

    pub(crate) fn too_large(mut self) -> Self {
        self.inner.too_large = true;
        self
    }

    /// A body error because the body was longer than the limit
    /// (`max_response_bytes`, or a stream's `max_bytes`), not a read that
    /// broke off.
    pub fn is_too_large(&self) -> bool {
        self.inner.too_large
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    pub(crate) fn at(
        mut self,
        service: &'static str,
        method: &'static str,
        verb: &Method,
        path: &str,
    ) -> Self {
        if self.inner.call.is_none() {
            self.inner.call = Some(CallSite {
                service,
                method,
                verb: verb.clone(),
                path: path.into(),
            });
        }
        self
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The HTTP status the service answered with, for [`ErrorKind::Status`]
    /// and [`ErrorKind::Decode`] errors.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The first bytes (at most 512, cut at a character boundary, invalid
    /// UTF-8 replaced) of the response body, for status and decode errors.
    pub fn body_snippet(&self) -> Option<&str> {
        self.inner.snippet.as_deref()
    }

    /// The logical name of the service called (the `name` of `#[client]`).
    pub fn service(&self) -> Option<&'static str> {
        self.inner.call.as_ref().map(|c| c.service)
    }

    /// The name of the trait method called.
    pub fn method(&self) -> Option<&'static str> {
        self.inner.call.as_ref().map(|c| c.method)
    }

    /// The URL path of the request (after the base URL, without the query
    /// string), as sent.
    pub fn path(&self) -> Option<&str> {
        self.inner.call.as_ref().map(|c| &*c.path)
    }

    /// True if the call or its connection attempt timed out.
    pub fn is_timeout(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::Timeout, is_io_timeout)
    }

    /// True if no connection to the service could be made.
    pub fn is_connect(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::Connect, |_| false)
    }

    /// True if the service answered with an unsuccessful status.
    pub fn is_status(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::Status, |_| false)
    }

    /// True if the response body could not be decoded into the return type.
    pub fn is_decode(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::Decode, |_| false)
    }

    /// True if the response body could not be read or was over the limit.
    pub fn is_body(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::Body, |_| false)
    }

    /// True if the call's arguments could not form a valid request; nothing
    /// was sent.
    pub fn is_invalid_request(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::InvalidRequest, |_| false)
    }

    /// True if an interceptor refused the request (nothing was sent).
    pub fn is_interceptor(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::Interceptor, |_| false)
    }

    /// True if the client's credentials could not be had (the OAuth2 token
    /// endpoint failed or refused the client, a service JWT could not be
    /// signed); nothing was sent to the service.
    pub fn is_auth(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::Auth, |_| false)
    }

    /// True if the method's circuit breaker was open, so the call failed
    /// without any I/O.
    pub fn is_circuit_open(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::CircuitOpen, |_| false)
    }

    /// The id of the instance the last attempt went to, when the client
    /// balances over discovered instances.
    pub fn instance(&self) -> Option<&str> {
        self.inner.instance.as_deref()
    }

    /// True if service discovery knew no instance to call.
    pub fn is_no_instances(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::NoInstances, |_| false)
    }

    /// True if the method's bulkhead was full.
    pub fn is_bulkhead_full(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::BulkheadFull, |_| false)
    }

    /// True if the method's rate limiter refused the call's last attempt:
    /// no permit was due within its `max_wait` or before the deadline. That
    /// attempt was not sent (`attempts()` counts those that were), and it
    /// is not retried.
    pub fn is_rate_limited(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::RateLimited, |_| false)
    }

    /// True if the call stopped retrying because the client's retry budget
    /// was spent; the error is otherwise the last attempt's. Searches the
    /// cause chain like the other predicates.
    pub fn is_budget_exhausted(&self) -> bool {
        self.chain_any(|e| e.inner.budget_exhausted, |_| false)
    }

    /// How many attempts were sent before the call ended: requests handed
    /// to the transport, retries and hedges included. An attempt refused
    /// before sending (open circuit, full bulkhead, no instance, an
    /// interceptor's refusal, an invalid argument) is not counted, so this
    /// is 0 when nothing was sent.
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// True if this error came from `build()`.
    pub fn is_builder(&self) -> bool {
        self.chain_any(|e| e.kind() == ErrorKind::Builder, |_| false)
    }

    /// Walks this error and its causes; `courier` errors are tested with
    /// `ours`, any other error with `other`.
    fn chain_any(
        &self,
        ours: impl Fn(&Error) -> bool,
        other: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
    ) -> bool {
        if ours(self) {
            return true;
        }
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            if let Some(e) = e.downcast_ref::<Error>() {
                if ours(e) {
                    return true;
                }
            } else if other(e) {
                return true;
            }
            next = e.source();
        }
        false
    }
}

fn is_io_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        || e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
}

/// The first [`SNIPPET_BYTES`] of `body` as text, cut at a char boundary.
fn snippet(body: &[u8]) -> String {
    let truncated = body.len() > SNIPPET_BYTES;
    let mut head = &body[..body.len().min(SNIPPET_BYTES)];
    if truncated {
        // Do not show half of a multi-byte character as U+FFFD.
        if let Err(e) = std::str::from_utf8(head)
            && e.error_len().is_none()
        {
            head = &head[..e.valid_up_to()];
        }
    }
    let mut text = String::from_utf8_lossy(head).into_owned();
    if truncated {
        text.push('…');
    }
    text
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        if let Some(call) = &inner.call {
            write!(
                f,
                "{}#{} ({} {}",
                call.service, call.method, call.verb, call.path
            )?;
            if let Some(instance) = &inner.instance {
                write!(f, " @ {instance}")?;
            }
            f.write_str("): ")?;
        }
        f.write_str(inner.kind.describe())?;
        if !inner.message.is_empty() {
            write!(f, ": {}", inner.message)?;
        }
        match (inner.attempts, inner.budget_exhausted) {
            (0 | 1, false) => {}
            (n, false) => write!(f, " (after {n} attempts)")?,
            (n, true) => write!(f, " (after {n} attempts; retry budget exhausted)")?,
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let mut d = f.debug_struct("courier::Error");
        d.field("kind", &inner.kind);
        if let Some(call) = &inner.call {
            d.field("service", &call.service)
                .field("method", &call.method)
                .field("verb", &call.verb)
                .field("path", &call.path);
        }
        if let Some(instance) = &inner.instance {
            d.field("instance", instance);
        }
        if let Some(status) = inner.status {
            d.field("status", &status);
        }
        if inner.attempts > 0 {
            d.field("attempts", &inner.attempts);
        }
        if inner.budget_exhausted {
            d.field("budget_exhausted", &true);
        }
        if !inner.message.is_empty() {
            d.field("message", &inner.message);
        }
        if let Some(snippet) = &inner.snippet {
            d.field("body_snippet", snippet);
        }
        if let Some(source) = &inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source.as_deref().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_one_pointer_and_thread_safe() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn display_names_call_site_and_kind_without_query() {
        let e = Error::new(
            ErrorKind::Status,
            "service answered 503 Service Unavailable",
        )
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
        .at("user-service", "get", &Method::GET, "/api/users/7");
        assert_eq!(
            e.to_string(),
            "user-service#get (GET /api/users/7): unsuccessful status: \
             service answered 503 Service Unavailable"
        );
        assert_eq!(e.service(), Some("user-service"));
        assert_eq!(e.method(), Some("get"));
        assert_eq!(e.path(), Some("/api/users/7"));
        assert!(e.is_status());
        assert!(!e.is_timeout());
    }

    #[test]
    fn predicates_search_the_source_chain() {
        let inner = Error::new(ErrorKind::Timeout, "");
        let outer = Error::new(ErrorKind::Transport, "wrapped").with_source(inner);
        assert!(outer.is_timeout());
        assert!(!outer.is_connect());
        // Every predicate, on an error wrapped in another courier error.
        let wrapped = |inner: Error| Error::new(ErrorKind::Interceptor, "").with_source(inner);
        let status = Error::new(ErrorKind::Status, "").with_status(StatusCode::BAD_GATEWAY);
        assert!(wrapped(status).is_status());
        assert!(wrapped(Error::invalid_request("")).is_invalid_request());
        assert!(wrapped(Error::new(ErrorKind::NoInstances, "")).is_no_instances());
        assert!(wrapped(Error::builder("")).is_builder());
        assert!(wrapped(Error::new(ErrorKind::Connect, "")).is_connect());
        assert!(wrapped(Error::new(ErrorKind::Decode, "")).is_decode());
        assert!(wrapped(Error::new(ErrorKind::Body, "")).is_body());
        assert!(wrapped(Error::new(ErrorKind::CircuitOpen, "")).is_circuit_open());
        assert!(wrapped(Error::new(ErrorKind::BulkheadFull, "")).is_bulkhead_full());
        assert!(wrapped(Error::new(ErrorKind::RateLimited, "")).is_rate_limited());
        assert!(wrapped(Error::auth("")).is_auth());
        assert!(!wrapped(Error::new(ErrorKind::Connect, "")).is_auth());
        let spent = Error::new(ErrorKind::Status, "").with_budget_exhausted();
        assert!(wrapped(spent).is_budget_exhausted());
        assert!(!wrapped(Error::new(ErrorKind::Connect, "")).is_status());
        let io = Error::new(ErrorKind::Transport, "")
            .with_source(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(io.is_timeout());
    }

    #[test]
    fn snippet_is_bounded_and_cut_at_char_boundary() {
        let body = "é".repeat(400); // 800 bytes, 2 per char
        let e = Error::new(ErrorKind::Decode, "").with_snippet(body.as_bytes());
        let s = e.body_snippet().unwrap_or_default();
        assert!(s.ends_with('…'), "{s}");
        assert_eq!(s.trim_end_matches('…'), "é".repeat(256));
        let short = Error::new(ErrorKind::Decode, "").with_snippet(b"{\"a\":");
        assert_eq!(short.body_snippet(), Some("{\"a\":"));
        let empty = Error::new(ErrorKind::Decode, "").with_snippet(b"");
        assert_eq!(empty.body_snippet(), None);
    }
}
