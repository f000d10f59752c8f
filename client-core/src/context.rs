//! The call context: headers of the request being served, carried onward by
//! every courier call made while serving it.
//!
//! A request that enters a system of services carries who and what it is
//! for: a request id, a W3C trace context (`traceparent`, `tracestate`,
//! `baggage`), the end user as the edge gateway established it. A service
//! that calls others on its behalf should pass those on, and nothing else:
//! OpenFeign users have asked for "propagate the incoming headers" since
//! 2015 (OpenFeign #214) and still wire a `RequestInterceptor` by hand.
//!
//! Here the receiving service adds one tower layer, [`ContextLayer`]
//! (axum's `Router::layer` takes it), naming an **allow-list** of headers.
//! For each request, the layer copies those headers, and only those, into a
//! task-local [`Context`] that lives as long as the handler's future; every
//! courier call made inside it adds them to its request, in the transport
//! stage, unless the call sets the same header itself (its own headers, the
//! client's default headers and its interceptors and credentials all win).
//! Deny by default: a header not on the list is never forwarded, so a
//! caller's `Cookie` or `Authorization` does not leak to every service
//! behind this one unless you allow it.
//!
//! A task-local does not follow `tokio::spawn`: spawn with [`spawn`] (it
//! takes the current context along), or wrap a future in [`scope`] with a
//! context of your choosing (a background job acting for a request).
//!
//! ```
//! use axum::{Router, routing::get};
//! use courier::context::ContextLayer;
//! use http::HeaderName;
//!
//! let app: Router = Router::new()
//!     .route("/orders", get(|| async { "…calls other services through courier…" }))
//!     .layer(
//!         ContextLayer::new() // x-request-id, traceparent, tracestate, baggage
//!             .allow(HeaderName::from_static("x-user-id")),
//!     );
//! ```
//!
//! Cost: a courier call checks one process-wide flag, set once any context
//! exists, before it looks for a context at all; a program that never uses
//! this module pays one atomic load per attempt.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use http::{HeaderMap, HeaderName, Request};
use tokio::task::JoinHandle;
use tokio::task::futures::TaskLocalFuture;

use crate::request::is_secret_header;

tokio::task_local! {
    static CURRENT: Context;
}

/// Set once a context has been entered anywhere in the process: until then
/// a call does not look for one.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The headers a courier call made in this context carries onward: what a
/// [`ContextLayer`] captured from the request being served, or what you put
/// in with [`Context::with_header`]. Cheap to clone.
///
/// ```
/// use courier::context::{self, Context};
/// use http::{HeaderName, HeaderValue};
///
/// # async fn demo() {
/// let ctx = Context::new().with_header(
///     HeaderName::from_static("x-request-id"),
///     HeaderValue::from_static("req-7"),
/// );
/// context::scope(ctx, async {
///     let id = Context::current().and_then(|c| c.headers().get("x-request-id").cloned());
///     assert_eq!(id.as_ref().map(|v| v.as_bytes()), Some(&b"req-7"[..]));
///     // …every courier call made here sends `x-request-id: req-7`
/// })
/// .await;
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Context {
    headers: Arc<HeaderMap>,
}

impl Context {
    /// An empty context: calls made in it carry nothing extra.
    pub fn new() -> Self {
        Context::default()
    }

    /// This context with `name: value` added (a second value of the same
    /// name is kept next to the first). Values of secret-bearing headers
    /// (`authorization`, `cookie`, names with `token`, `secret`, `api-key`…)
    /// are marked sensitive, so `Debug` never prints them.
    pub fn with_header(mut self, name: HeaderName, mut value: http::HeaderValue) -> Self {
        if is_secret_header(&name) {
            value.set_sensitive(true);
        }
        Arc::make_mut(&mut self.headers).append(name, value);
        self
    }

    /// The headers calls made in this context carry.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The context of the current task, if it runs inside one (a request
    /// passing a [`ContextLayer`], [`scope`] or [`spawn`]).
    pub fn current() -> Option<Context> {
        if !ACTIVE.load(Ordering::Relaxed) {
            return None;
        }
        CURRENT.try_with(Context::clone).ok()
    }

    /// Adds this context's headers to `headers`, except names already set
    /// (a name with several values gets all of them).
    fn fill(&self, headers: &mut HeaderMap) {
        for name in self.headers.keys() {
            if headers.contains_key(name) {
                continue;
            }
            for value in self.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

impl fmt::Debug for Context {
    /// Header names only: the values may identify a user.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Adds the current context's headers to an outgoing request (those it
/// does not set itself). Called by the transport stage for every request
/// sent to the call's own origin.
#[inline]
pub(crate) fn propagate(headers: &mut HeaderMap) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    let _ = CURRENT.try_with(|context| context.fill(headers));
}

/// Runs `future` in `context`: every courier call it makes carries the
/// context's headers. Contexts do not nest: inside, `context` replaces the
/// outer one.
///
/// ```
/// use courier::context::{self, Context};
///
/// # async fn demo(ctx: Context) {
/// // A background job acting for a request: keep its request id.
/// let job = context::scope(ctx, async { /* courier calls */ });
/// tokio::spawn(job);
/// # }
/// ```
pub fn scope<F: Future>(context: Context, future: F) -> TaskLocalFuture<Context, F> {
    activate();
    CURRENT.scope(context, future)
}

/// Spawns `future` on the current tokio runtime, in the current task's
/// context (if any): `tokio::spawn` that keeps the propagated headers.
///
/// # Panics
/// Like `tokio::spawn`, when called outside a tokio runtime.
///
/// ```
/// # async fn demo() {
/// // Inside a handler behind a `ContextLayer`:
/// let handle = courier::context::spawn(async {
///     // courier calls here carry the request's x-request-id, traceparent, …
/// });
/// let _ = handle.await;
/// # }
/// ```
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match Context::current() {
        Some(context) => tokio::spawn(CURRENT.scope(context, future)),
        None => tokio::spawn(future),
    }
}

fn activate() {
    if !ACTIVE.load(Ordering::Relaxed) {
        ACTIVE.store(true, Ordering::Relaxed);
    }
}

// ===== the layer =====

/// The headers a [`ContextLayer`] captures unless told otherwise: a request
/// id and the W3C trace context.
pub const DEFAULT_ALLOWED: [&str; 4] = ["x-request-id", "traceparent", "tracestate", "baggage"];

/// Headers a [`ContextLayer`] never captures, even when allowed: they
/// belong to the inbound message (its host, body framing, connection), not
/// to the request's context.
pub const NEVER_PROPAGATED: [&str; 12] = [
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// A tower layer for a receiving service (axum, hyper, tonic): captures an
/// allow-list of the inbound request's headers into the [`Context`] its
/// handler runs in, so courier calls made while serving it carry them. See
/// the [module docs](self).
///
/// ```
/// use courier::context::ContextLayer;
/// use http::HeaderName;
///
/// // The defaults plus the user the edge gateway authenticated.
/// let layer = ContextLayer::new().allow(HeaderName::from_static("x-user-id"));
/// // Only what you name.
/// let strict = ContextLayer::none().allow(HeaderName::from_static("x-request-id"));
/// # let _ = (layer, strict);
/// ```
#[derive(Clone)]
pub struct ContextLayer {
    allowed: Arc<[HeaderName]>,
}

impl ContextLayer {
    /// Captures [`DEFAULT_ALLOWED`]: `x-request-id`, `traceparent`,
    /// `tracestate` and `baggage`.
    pub fn new() -> Self {
        ContextLayer {
            allowed: DEFAULT_ALLOWED
                .iter()
                .map(|name| HeaderName::from_static(name))
                .collect(),
        }
    }

    /// Captures nothing until headers are [`allow`](Self::allow)ed.
    pub fn none() -> Self {
        ContextLayer {
            allowed: Arc::new([]),
        }
    }

    /// Captures `name` too (for example `x-user-id`, or `authorization` to
    /// pass the caller's token on; a client with `.auth(…)` still sends its
    /// own). Headers that describe the inbound message itself rather than
    /// the request's context ([`NEVER_PROPAGATED`]: `host`,
    /// `content-length`, `connection`, …) are never captured: forwarded,
    /// they would break the next request.
    ///
    /// Default is [`DEFAULT_ALLOWED`] only.
    pub fn allow(self, name: HeaderName) -> Self {
        if self.allowed.contains(&name) || NEVER_PROPAGATED.contains(&name.as_str()) {
            return self;
        }
        let mut allowed = self.allowed.to_vec();
        allowed.push(name);
        ContextLayer {
            allowed: allowed.into(),
        }
    }

    /// The headers this layer captures.
    pub fn allowed(&self) -> &[HeaderName] {
        &self.allowed
    }
}

impl Default for ContextLayer {
    fn default() -> Self {
        ContextLayer::new()
    }
}

impl fmt::Debug for ContextLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextLayer")
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl<S> tower::Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContextService {
            inner,
            allowed: self.allowed.clone(),
        }
    }
}

/// The service of a [`ContextLayer`]: runs the inner service's future in
/// the context captured from its request.
#[derive(Clone)]
pub struct ContextService<S> {
    inner: S,
    allowed: Arc<[HeaderName]>,
}

impl<S> fmt::Debug for ContextService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextService")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl<S, B> tower::Service<Request<B>> for ContextService<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Context, S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut context = Context::new();
        for name in self.allowed.iter() {
            for value in request.headers().get_all(name) {
                context = context.with_header(name.clone(), value.clone());
            }
        }
        scope(context, self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ctx(pairs: &[(&'static str, &'static str)]) -> Context {
        pairs.iter().fold(Context::new(), |c, (n, v)| {
            c.with_header(HeaderName::from_static(n), HeaderValue::from_static(v))
        })
    }

    #[test]
    fn a_header_the_call_sets_wins_and_repeated_values_are_kept() {
        let context = ctx(&[
            ("x-request-id", "inbound"),
            ("baggage", "a=1"),
            ("baggage", "b=2"),
        ]);
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("own"));
        context.fill(&mut headers);
        let ids: Vec<_> = headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids, ["own"]);
        let baggage: Vec<_> = headers.get_all("baggage").iter().collect();
        assert_eq!(baggage, ["a=1", "b=2"]);
    }

    #[test]
    fn secret_values_are_never_printed() {
        let context = ctx(&[("authorization", "Bearer hunter2")]);
        let shown = format!("{context:?} {:?}", context.headers());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
    }

    #[test]
    fn headers_of_the_inbound_message_itself_are_never_allowed() {
        let layer = ContextLayer::none()
            .allow(HeaderName::from_static("host"))
            .allow(HeaderName::from_static("content-length"))
            .allow(HeaderName::from_static("x-user-id"))
            .allow(HeaderName::from_static("x-user-id"));
        assert_eq!(layer.allowed(), [HeaderName::from_static("x-user-id")]);
    }

    #[tokio::test]
    async fn spawn_keeps_the_context_and_plain_tasks_do_not() {
        let context = ctx(&[("x-request-id", "r-1")]);
        let seen = scope(context, async {
            let kept = spawn(async { Context::current().map(|c| c.headers().clone()) });
            let lost = tokio::spawn(async { Context::current().is_some() });
            (kept.await.ok().flatten(), lost.await.ok())
        })
        .await;
        let kept = seen.0.and_then(|h| h.get("x-request-id").cloned());
        assert_eq!(kept, Some(HeaderValue::from_static("r-1")));
        assert_eq!(seen.1, Some(false));
        assert!(Context::current().is_none(), "outside every scope");
    }
}
