//! The innermost stage: build the HTTP request from the call's
//! [`RequestParts`], run the interceptors, send it through the user's tower
//! layers and the transport service (reqwest by default), follow redirects
//! by the client's [`Redirects`] policy, map transport errors, read the body
//! under the size limit, and decode it.
//!
//! ## tower at the boundary
//!
//! The transport is a `tower::Service<http::Request<Body>>` answering
//! `http::Response<ResponseBody>` ([`HttpService`]): a user adds any
//! `tower::Layer` with [`ClientBuilder::layer`](crate::ClientBuilder::layer)
//! (tower-http's `SetRequestHeader`, `Decompression`, `Trace`, their own),
//! applied to every attempt in the order added (the first added is the
//! outermost, as in `tower::ServiceBuilder`); reqwest's client, adapted to
//! `http` types, is the service at the bottom. With no layer, the request
//! goes to reqwest directly, built as a `reqwest::Request`: nothing is boxed
//! or converted, so the call path costs what it did before the boundary
//! existed. (A layered stack is boxed once, when the client is built, and
//! cloned per attempt, as tower services are.)
//!
//! ## Redirects
//!
//! courier follows redirects itself, so that one policy applies whatever the
//! transport, and so that no secret follows a redirect to another host.
//! reqwest's own following strips only `Authorization` and `Cookie` across
//! hosts: an `X-Api-Key` set with `default_header` went along, and so did a
//! `Referer` carrying the original query string. The default here is the
//! conservative one for service-to-service calls: at most 5 redirects, to
//! the same origin (scheme, host and port) only; a redirect to another
//! origin is not followed and ends the call as a `Status` error with the
//! 3xx (a method returning `Response<()>`, `Response<Bytes>` or
//! `Response<String>` gets the 3xx response instead, `Location` header
//! included). [`Redirects::any`] follows other origins too, but sends them
//! none of the headers the caller, the client's defaults or an interceptor
//! set (only `Accept` and the body's `Content-Type`), and never a `Referer`.
//! 301, 302 and 303 turn a `POST` into a body-less `GET` (303 any method
//! but `HEAD`), as browsers do; 307 and 308 repeat the method and body.
//! Interceptors run again for a same-origin hop (an auth header is
//! recomputed), never for a hop to another origin. A redirect is part of the
//! same attempt: `attempts()` counts it once.
//!
//! ## Credentials and context
//!
//! The client's credentials (`.auth(…)`, feature `auth`) are the last hook
//! to run, so they win over a propagated or an interceptor's
//! `Authorization`. A `401` to an OAuth2 token or a minted JWT is sent
//! again once, right here, after the credentials dropped that token and
//! fetched a fresh one (any verb: a 401 was refused before processing);
//! like a redirect, the resend is part of its attempt. Headers captured
//! from the request being served ([`crate::context`]) are added after the
//! call's own and the default headers, so those win.
//!
//! With your own reqwest client ([`http_client`](crate::ClientBuilder::http_client)),
//! build it with `redirect(reqwest::redirect::Policy::none())`: otherwise
//! reqwest follows redirects before courier sees them.
//!
//! ## The body
//!
//! Read chunk by chunk under `max_response_bytes`: a declared length over
//! the limit fails before reading, a streamed body as soon as it passes the
//! limit. The status decides first: a success body over the limit is a
//! `Body` error (the service answered in full, so it is not retried), while
//! an error status keeps its status and its body is only cut short for the
//! error's snippet. A body that breaks off after the headers is a `Body`
//! error that the classifier treats like a reset (retried when idempotent,
//! counted by the breaker, fallback-eligible).
//!
//! ## The lean transport
//!
//! With the `hyper-transport` feature, `HyperTransport` sends through
//! hyper-util's pooled client straight on hyper instead of reqwest, behind
//! this same boundary: only the send and the body's chunks differ (see
//! `transport/hyper_client.rs`).

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::codec::Decode;
use crate::error::SNIPPET_BYTES;
use crate::interceptor::{self, Hook, Outgoing, Signed};
use crate::observe::log::{self, LogLevel};
use crate::observe::probe::Attempt;
use crate::policy::retry::parse_retry_after;
use crate::request::RequestParts;
use crate::stream::BodyStream;
use crate::{BoxError, Error, ErrorKind};

#[cfg(feature = "hyper-transport")]
mod hyper_client;
#[cfg(feature = "hyper-transport")]
pub use hyper_client::HyperTransport;

// ===== the types at the boundary =====

/// The body of a request at the tower boundary: the whole body, none, or
/// a stream read once (a `BodyStream` `#[body]`).
///
/// A clone of a streamed body cannot have the stream (it is read once): it
/// fails with an error when polled, so a layer that resends a clone fails
/// loudly instead of sending an empty body.
pub struct Body(Inner);

/// Two variants, so that the enum fits in `Bytes`'s niche: 32 bytes, as
/// `Option<Bytes>` was. The body is moved several times per call through
/// the transport's machinery; at 40 bytes (or 112, with the stream inline)
/// callgrind counted hundreds of instructions more per call on the hyper
/// transport.
enum Inner {
    /// Whole bytes; empty is no body.
    Full(Bytes),
    /// A stream (`Some`), or a clone of one (`None`, failing when polled).
    Stream(Box<Option<crate::stream::Outgoing>>),
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl Body {
    /// A body of these bytes (none when they are empty).
    pub fn new(bytes: Bytes) -> Self {
        Body(Inner::Full(bytes))
    }

    /// No body.
    pub fn empty() -> Self {
        Body(Inner::Full(Bytes::new()))
    }

    /// A body read from a stream, once.
    pub fn from_stream(stream: BodyStream) -> Self {
        Body(Inner::Stream(Box::new(Some(crate::stream::Outgoing::new(
            stream,
        )))))
    }

    fn of(bytes: Option<&Bytes>, stream: Option<BodyStream>) -> Self {
        match (stream, bytes) {
            (Some(stream), _) => Body::from_stream(stream),
            (None, Some(bytes)) => Body(Inner::Full(bytes.clone())),
            (None, None) => Body::empty(),
        }
    }

    /// The bytes, if the body is whole (not a stream) and not empty.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.0 {
            Inner::Full(bytes) if !bytes.is_empty() => Some(bytes),
            _ => None,
        }
    }

    /// Takes the bytes, if the body is whole (not a stream) and not empty.
    pub fn into_bytes(self) -> Option<Bytes> {
        match self.0 {
            Inner::Full(bytes) if !bytes.is_empty() => Some(bytes),
            _ => None,
        }
    }

    /// Whether the body is a stream (or a clone of one), read once.
    pub fn is_stream(&self) -> bool {
        matches!(self.0, Inner::Stream(_))
    }
}

impl Clone for Body {
    fn clone(&self) -> Self {
        Body(match &self.0 {
            Inner::Full(bytes) => Inner::Full(bytes.clone()),
            Inner::Stream(_) => Inner::Stream(Box::new(None)),
        })
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Full(bytes) if bytes.is_empty() => f.write_str("Body(empty)"),
            Inner::Full(bytes) => write!(f, "Body({} bytes)", bytes.len()),
            Inner::Stream(stream) if stream.is_some() => f.write_str("Body(stream)"),
            Inner::Stream(_) => f.write_str("Body(clone of a stream)"),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.0 {
            Inner::Full(bytes) if bytes.is_empty() => Poll::Ready(None),
            Inner::Full(bytes) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes))))),
            Inner::Stream(stream) => match &mut **stream {
                Some(stream) => Pin::new(stream).poll_frame(cx),
                None => {
                    self.0 = Inner::Full(Bytes::new());
                    Poll::Ready(Some(Err(BoxError::from(
                        "a streamed request body is read once: a clone of it cannot be sent",
                    ))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.0, Inner::Full(bytes) if bytes.is_empty())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Inner::Full(bytes) => http_body::SizeHint::with_exact(bytes.len() as u64),
            Inner::Stream(stream) => match &**stream {
                Some(stream) => stream.size_hint(),
                None => http_body::SizeHint::default(),
            },
        }
    }
}

/// The body of a response at the tower boundary.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A request at the tower boundary.
pub type HttpRequest = http::Request<Body>;

/// A response at the tower boundary.
pub type HttpResponse = http::Response<ResponseBody>;

/// The transport as a tower service, boxed: what a layer added with
/// [`ClientBuilder::layer`](crate::ClientBuilder::layer) wraps.
pub type HttpService = tower::util::BoxCloneSyncService<HttpRequest, HttpResponse, BoxError>;

/// reqwest's client as an [`HttpService`]: the bottom of a layered stack.
#[derive(Clone, Debug)]
pub struct ReqwestService(reqwest::Client);

impl ReqwestService {
    /// Wraps a reqwest client.
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService(client)
    }
}

impl tower::Service<HttpRequest> for ReqwestService {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let url = url::Url::parse(&parts.uri.to_string())?;
            let mut outgoing = reqwest::Request::new(parts.method, url);
            *outgoing.headers_mut() = parts.headers;
            *outgoing.version_mut() = parts.version;
            match body.0 {
                Inner::Full(bytes) if bytes.is_empty() => {}
                Inner::Full(bytes) => *outgoing.body_mut() = Some(bytes.into()),
                // A stream, or a clone of one (which fails when polled): never
                // dropped for an empty body.
                Inner::Stream(_) => *outgoing.body_mut() = Some(reqwest::Body::wrap(body)),
            }
            let response = client.execute(outgoing).await?;
            let response = http::Response::from(response);
            Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync()))
        })
    }
}

/// Where requests go: reqwest or hyper-util directly, or a tower stack.
#[derive(Clone)]
pub(crate) enum Transport {
    /// reqwest's client; the origin of a fixed base URL parsed once
    /// (boxed, so the enum stays a few words); and whether courier built
    /// the client. Then courier knows that it speaks HTTP/1.1 to an
    /// `http://` origin, so it may write `Host` itself
    /// ([`Origin::host_for`](crate::url::Origin::host_for)), and that it
    /// follows no redirect and resends nothing by itself, so an HTTP/2
    /// refusal through it is that of the request courier sent
    /// (`unprocessed`).
    Reqwest(reqwest::Client, Option<Box<crate::url::Origin>>, bool),
    /// Boxed: hyper-util's client is 400 bytes, reqwest's one pointer.
    #[cfg(feature = "hyper-transport")]
    Hyper(Box<hyper_client::HyperSender>),
    /// A tower stack over one of the above, and whether it is direct: only
    /// courier's own layers over courier's own reqwest client or the hyper
    /// transport, so that nothing in it follows redirects or resends.
    Layered(HttpService, bool),
}

impl Transport {
    /// This transport as the service at the bottom of a tower stack.
    pub(crate) fn into_service(self) -> HttpService {
        match self {
            Transport::Reqwest(client, ..) => HttpService::new(ReqwestService::new(client)),
            #[cfg(feature = "hyper-transport")]
            Transport::Hyper(sender) => HttpService::new(sender.into_service()),
            Transport::Layered(service, _) => service,
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Reqwest(..) => "reqwest",
            #[cfg(feature = "hyper-transport")]
            Transport::Hyper(_) => "hyper-util",
            Transport::Layered(..) => "tower layers over the transport",
        })
    }
}

// ===== redirects =====

/// Which redirects a client follows; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirects {
    follow: Follow,
    limit: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    None,
    SameOrigin,
    Any,
}

impl Redirects {
    /// Follows none: every 3xx is the answer.
    pub const fn none() -> Self {
        Redirects {
            follow: Follow::None,
            limit: 0,
        }
    }

    /// Follows up to `limit` redirects to the same origin (scheme, host,
    /// port); a redirect elsewhere is the answer. The default, with 5.
    pub const fn same_origin(limit: u8) -> Self {
        Redirects {
            follow: Follow::SameOrigin,
            limit,
        }
    }

    /// Follows up to `limit` redirects anywhere; a hop to another origin
    /// carries none of the caller's, the defaults' or the interceptors'
    /// headers, and no `Referer`.
    pub const fn any(limit: u8) -> Self {
        Redirects {
            follow: Follow::Any,
            limit,
        }
    }
}

impl Default for Redirects {
    fn default() -> Self {
        Redirects::same_origin(5)
    }
}

/// Where a followed redirect goes.
struct Hop {
    url: String,
    method: Method,
    keep_body: bool,
    same_origin: bool,
}

/// Why a 3xx is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotFollowed {
    Policy,
    OtherOrigin,
    Limit,
    NoLocation,
    /// A 307 or 308 would send a streamed body again.
    StreamedBody,
}

fn next_hop(
    policy: Redirects,
    from: &str,
    status: StatusCode,
    method: &Method,
    location: Option<&HeaderValue>,
    hops: u8,
) -> Result<Hop, NotFollowed> {
    if policy.follow == Follow::None {
        return Err(NotFollowed::Policy);
    }
    let Some(location) = location.and_then(|l| l.to_str().ok()) else {
        return Err(NotFollowed::NoLocation);
    };
    let from = url::Url::parse(from).map_err(|_| NotFollowed::NoLocation)?;
    let to = from.join(location).map_err(|_| NotFollowed::NoLocation)?;
    if !matches!(to.scheme(), "http" | "https") {
        return Err(NotFollowed::NoLocation);
    }
    let same_origin = from.origin() == to.origin();
    if !same_origin && policy.follow == Follow::SameOrigin {
        return Err(NotFollowed::OtherOrigin);
    }
    if hops >= policy.limit {
        return Err(NotFollowed::Limit);
    }
    let to_get = match status.as_u16() {
        303 => *method != Method::HEAD,
        301 | 302 => *method == Method::POST,
        _ => false,
    };
    Ok(Hop {
        url: to.into(),
        method: if to_get { Method::GET } else { method.clone() },
        keep_body: !to_get,
        same_origin,
    })
}

// ===== one exchange =====

/// What the transport stage needs of a client: shared by all its methods.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) service: &'static str,
    pub(crate) transport: Transport,
    pub(crate) default_headers: HeaderMap,
    pub(crate) hooks: Box<[Hook]>,
    pub(crate) max_response_bytes: usize,
    pub(crate) redirects: Redirects,
}

/// A response being received: from reqwest or hyper-util directly, or
/// from the stack.
enum Incoming {
    Reqwest(reqwest::Response),
    #[cfg(feature = "hyper-transport")]
    Hyper(hyper_client::HyperResponse),
    Http(HttpResponse),
}

impl Incoming {
    fn status(&self) -> StatusCode {
        match self {
            Incoming::Reqwest(r) => r.status(),
            #[cfg(feature = "hyper-transport")]
            Incoming::Hyper(r) => r.status(),
            Incoming::Http(r) => r.status(),
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            Incoming::Reqwest(r) => r.headers(),
            #[cfg(feature = "hyper-transport")]
            Incoming::Hyper(r) => r.headers(),
            Incoming::Http(r) => r.headers(),
        }
    }

    fn headers_mut(&mut self) -> &mut HeaderMap {
        match self {
            Incoming::Reqwest(r) => r.headers_mut(),
            #[cfg(feature = "hyper-transport")]
            Incoming::Hyper(r) => r.headers_mut(),
            Incoming::Http(r) => r.headers_mut(),
        }
    }

    /// Reads the body, at most `limit` bytes. Over the limit: an error,
    /// or with `cut`, the bytes read so far. One match, then a loop made
    /// for each kind of response (the chunks are collected by [`Collect`]).
    async fn read(&mut self, limit: usize, cut: bool) -> Result<Bytes, Error> {
        let mut collect = Collect::new(limit, cut, self.declared_length());
        match self {
            Incoming::Reqwest(r) => {
                while let Some(chunk) = reqwest_chunk(r).await? {
                    if let Some(done) = collect.push(chunk)? {
                        return Ok(done);
                    }
                }
            }
            #[cfg(feature = "hyper-transport")]
            Incoming::Hyper(r) => {
                while let Some(chunk) = hyper_client::chunk(r).await? {
                    if let Some(done) = collect.push(chunk)? {
                        return Ok(done);
                    }
                }
            }
            Incoming::Http(r) => {
                while let Some(chunk) = http_chunk(r).await? {
                    if let Some(done) = collect.push(chunk)? {
                        return Ok(done);
                    }
                }
            }
        }
        Ok(collect.finish())
    }

    /// The body, to be read later (a stream).
    fn into_body(self) -> ResponseBody {
        match self {
            Incoming::Reqwest(r) => http::Response::<reqwest::Body>::from(r)
                .into_body()
                .map_err(BoxError::from)
                .boxed_unsync(),
            #[cfg(feature = "hyper-transport")]
            Incoming::Hyper(r) => r.into_body().map_err(BoxError::from).boxed_unsync(),
            Incoming::Http(r) => r.into_body(),
        }
    }

    /// The body's length, when the response declared it (from the body's
    /// size hint, which hyper took from `Content-Length`: no header lookup
    /// and parse on every call).
    fn declared_length(&self) -> Option<u64> {
        match self {
            Incoming::Reqwest(r) => r.content_length(),
            #[cfg(feature = "hyper-transport")]
            Incoming::Hyper(r) => http_body::Body::size_hint(r.body()).exact(),
            Incoming::Http(r) => http_body::Body::size_hint(r.body()).exact(),
        }
    }
}

async fn reqwest_chunk(r: &mut reqwest::Response) -> Result<Option<Bytes>, Error> {
    r.chunk().await.map_err(|e| {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Body
        };
        Error::new(kind, "the response body broke off").with_source(e.without_url())
    })
}

async fn http_chunk(r: &mut HttpResponse) -> Result<Option<Bytes>, Error> {
    loop {
        match r.body_mut().frame().await {
            None => return Ok(None),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => return Ok(Some(data)),
                Err(_) => continue, // trailers
            },
            Some(Err(e)) => {
                return Err(Error::new(ErrorKind::Body, "the response body broke off")
                    .with_source(strip_url(e)));
            }
        }
    }
}

/// Collects a body's chunks under a limit. A body that arrives in one chunk
/// is returned without a copy.
struct Collect {
    limit: usize,
    cut: bool,
    hint: usize,
    first: Option<Bytes>,
    rest: BytesMut,
}

impl Collect {
    fn new(limit: usize, cut: bool, declared: Option<u64>) -> Self {
        Collect {
            limit,
            cut,
            hint: declared.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            first: None,
            rest: BytesMut::new(),
        }
    }

    /// Adds a chunk; `Some` when reading must stop here with that body
    /// (cut at the limit).
    ///
    /// # Errors
    /// Over the limit without `cut`.
    fn push(&mut self, chunk: Bytes) -> Result<Option<Bytes>, Error> {
        let limit = self.limit;
        let so_far = self.first.as_ref().map_or(0, Bytes::len) + self.rest.len();
        if so_far + chunk.len() > limit {
            if !self.cut {
                return Err(too_large(format!("more than {limit}"), limit));
            }
            let mut kept = BytesMut::with_capacity(limit);
            kept.extend_from_slice(self.first.as_deref().unwrap_or_default());
            kept.extend_from_slice(&self.rest);
            kept.extend_from_slice(&chunk[..limit - so_far]);
            return Ok(Some(kept.freeze()));
        }
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(chunk),
            None => self.rest.extend_from_slice(&chunk),
            Some(earlier) => {
                self.rest
                    .reserve((earlier.len() + chunk.len()).max(self.hint.min(limit)));
                self.rest.extend_from_slice(&earlier);
                self.rest.extend_from_slice(&chunk);
            }
        }
        Ok(None)
    }

    fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.rest.freeze())
    }
}

impl Settings {
    /// One exchange: build, intercept, send (following redirects), read,
    /// decode. `base` is the picked instance's base URL (with discovery)
    /// and its origin, parsed when the instance was discovered;
    /// `sent` counts the request once it is handed to the transport.
    pub(crate) async fn exchange<D: Decode>(
        &self,
        verb: &Method,
        observed: &Attempt<'_>,
        parts: &RequestParts,
        base: Option<(&str, Option<&crate::url::Origin>)>,
        sent: &AtomicU32,
    ) -> Result<D::Output, Error> {
        let (mut url, instance_origin): (Cow<'_, str>, _) = match base {
            None => (Cow::Borrowed(parts.url()), None),
            Some((base, origin)) => (
                Cow::Owned(format!("{base}{}", parts.path_and_query())),
                origin,
            ),
        };
        let mut method = Cow::Borrowed(verb);
        let mut body = parts.body.as_ref();
        // A streamed body (read once): sent by the first request only; a
        // redirect or a 401 that would send it again is not followed.
        let streamed = parts.stream.is_some();
        let mut stream_kept = streamed;
        let mut own_headers = true;
        let mut hops = 0u8;
        // NOTE(auth): a 401 to refreshable credentials is sent again once,
        // with a fresh token; see `auth`.
        let mut resent = false;
        loop {
            let mut headers = HeaderMap::new();
            for (name, value) in &parts.headers {
                if own_headers || (*name == CONTENT_TYPE && (body.is_some() || stream_kept)) {
                    headers.append(name.clone(), value.clone());
                }
            }
            if own_headers {
                for (name, value) in &self.default_headers {
                    if !headers.contains_key(name) {
                        headers.insert(name, value.clone());
                    }
                }
                // The inbound request's allow-listed headers (`context`).
                crate::context::propagate(&mut headers);
            }
            if body.is_none() && !stream_kept && (parts.body.is_some() || streamed) {
                // A hop turned the request into a GET without the body.
                headers.remove(CONTENT_TYPE);
            }
            if let Some(accept) = D::ACCEPT {
                headers
                    .entry(ACCEPT)
                    .or_insert(HeaderValue::from_static(accept));
            }
            let mut signed = Signed::default();
            if own_headers && !self.hooks.is_empty() {
                let mut outgoing = Outgoing::new(
                    &method,
                    &url,
                    &mut headers,
                    self.service,
                    observed.probe().method,
                );
                interceptor::run(&self.hooks, &mut outgoing).await?;
                signed = outgoing.into_signed();
            }
            #[cfg(feature = "opentelemetry")]
            crate::observe::trace::inject(&observed.span, &mut headers);
            let probe = observed.probe();
            if probe.log.level >= LogLevel::Headers {
                // The URL without the hooks' query parameters: they may be
                // secrets.
                let shown = match body {
                    Some(b) => Some(&b[..]),
                    None if stream_kept => Some(&b"(a streamed body)"[..]),
                    None => None,
                };
                log::request(&probe.line(), &url, &headers, shown);
            }
            if hops == 0 && !resent {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let target = signed.url(&url);
            let stream = if stream_kept {
                Some(parts.take_stream().ok_or_else(|| {
                    Error::invalid_request(
                        "the streamed request body was sent already: it is read once and \
                         cannot be sent again",
                    )
                })?)
            } else {
                None
            };
            // A failure after an answered request of this attempt (a hop,
            // a resend) may not make the attempt look unsent (`classify`);
            // nor may an HTTP/2 refusal that came through something which
            // may follow redirects or resend by itself (a caller's reqwest
            // client, tower layers): the refused request may not have been
            // the first.
            let followed = hops > 0 || resent;
            let after = |e: Error, direct: bool| {
                let e = if direct { e } else { e.sent_by_others() };
                if followed { e.after_answer() } else { e }
            };
            // NOTE: requests are built by plain functions and only the
            // transport's own future is awaited here: an `async fn` taking
            // the request would keep it twice in the call's future
            // (rust-lang/rust#62958), which every call pays for in copies.
            let mut incoming = match &self.transport {
                Transport::Reqwest(client, origin, own) => {
                    let request = Self::reqwest_request(
                        &method,
                        instance_origin.or(origin.as_deref()),
                        *own,
                        &target,
                        headers,
                        Body::of(body, stream),
                    )?;
                    let response = client.execute(request).await;
                    Incoming::Reqwest(response.map_err(|e| after(transport_error(e), *own))?)
                }
                #[cfg(feature = "hyper-transport")]
                Transport::Hyper(sender) => {
                    let request =
                        sender.request(&method, &target, headers, Body::of(body, stream))?;
                    let response = sender.send(request).await;
                    Incoming::Hyper(response.map_err(|e| after(hyper_client::send_error(e), true))?)
                }
                Transport::Layered(service, direct) => {
                    let request =
                        Self::http_request(&method, &target, headers, Body::of(body, stream))?;
                    // Boxed: the stack's future holds the request until the
                    // service is ready, and only layered clients pay for it.
                    let response = Box::pin(service.clone().oneshot(request)).await;
                    Incoming::Http(response.map_err(|e| after(layered_error(e), *direct))?)
                }
            };
            let status = incoming.status();
            observed.answered(status);
            if status == StatusCode::UNAUTHORIZED && !resent && !streamed && signed.refresh() {
                resent = true;
                continue;
            }
            if !status.is_redirection() {
                if D::STREAM
                    && (status.is_success()
                        || (D::NOT_FOUND_IS_VALUE && status == StatusCode::NOT_FOUND))
                {
                    return self.stream::<D>(incoming, observed, parts.stream_idle);
                }
                return self.receive::<D>(&mut incoming, observed).await;
            }
            let location = incoming.headers().get(LOCATION);
            match next_hop(self.redirects, &url, status, &method, location, hops) {
                Ok(hop) if streamed && hop.keep_body => {
                    let why = NotFollowed::StreamedBody;
                    return Err(self.unfollowed(&mut incoming, why, observed).await);
                }
                Ok(hop) => {
                    hops += 1;
                    own_headers &= hop.same_origin;
                    if !hop.keep_body {
                        body = None;
                        stream_kept = false;
                    }
                    method = Cow::Owned(hop.method);
                    url = Cow::Owned(hop.url);
                }
                // `Response<()>` and the like take the 3xx as the answer.
                Err(_) if D::REDIRECT_IS_VALUE => {
                    return self.receive::<D>(&mut incoming, observed).await;
                }
                Err(why) => return Err(self.unfollowed(&mut incoming, why, observed).await),
            }
        }
    }

    /// The request for reqwest, built directly (no `http::Request` first).
    /// With `own_client` (courier built the reqwest client), a request to
    /// the origin gets the origin's `Host`, made once, unless it has one.
    fn reqwest_request(
        method: &Method,
        origin: Option<&crate::url::Origin>,
        own_client: bool,
        url: &str,
        mut headers: HeaderMap,
        body: Body,
    ) -> Result<reqwest::Request, Error> {
        let parsed = match origin {
            Some(origin) => origin.url(url),
            None => url::Url::parse(url),
        }
        .map_err(|e| Error::invalid_request("the request URL is not valid").with_source(e))?;
        if own_client
            && let Some(host) = origin.and_then(|o| o.host_for(&parsed))
            && let http::header::Entry::Vacant(slot) = headers.entry(HOST)
        {
            slot.insert(host.clone());
        }
        let mut request = reqwest::Request::new(method.clone(), parsed);
        *request.headers_mut() = headers;
        match body.0 {
            Inner::Full(bytes) if bytes.is_empty() => {}
            Inner::Full(bytes) => *request.body_mut() = Some(bytes.into()),
            Inner::Stream(_) => *request.body_mut() = Some(reqwest::Body::wrap(body)),
        }
        Ok(request)
    }

    /// The request for a layered stack.
    fn http_request(
        method: &Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<HttpRequest, Error> {
        let mut request = http::Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = url
            .parse()
            .map_err(|e| Error::invalid_request("the request URL is not valid").with_source(e))?;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Hands a success's body over unread, as a [`BodyStream`] under the
    /// size limit and the idle timeout (a `BodyStream` return value).
    fn stream<D: Decode>(
        &self,
        mut incoming: Incoming,
        observed: &Attempt<'_>,
        idle: std::time::Duration,
    ) -> Result<D::Output, Error> {
        let status = incoming.status();
        let probe = observed.probe();
        if probe.log.is_on() {
            log::response(
                &probe.line(),
                status,
                incoming.headers(),
                b"(streamed)",
                observed.elapsed(),
            );
        }
        let declared = incoming.declared_length();
        let mut headers = std::mem::take(incoming.headers_mut());
        let body = BodyStream::new(
            incoming.into_body(),
            self.max_response_bytes,
            declared,
            idle,
        );
        D::decode_stream(status, &mut headers, body).map_err(|e| e.with_status(status))
    }

    /// Reads the body under the limit and decodes it (a success, or a 404
    /// the return type takes as a value), or makes the status error.
    async fn receive<D: Decode>(
        &self,
        incoming: &mut Incoming,
        observed: &Attempt<'_>,
    ) -> Result<D::Output, Error> {
        let status = incoming.status();
        let value = status.is_success()
            || (D::NOT_FOUND_IS_VALUE && status == StatusCode::NOT_FOUND)
            || (D::REDIRECT_IS_VALUE && status.is_redirection());
        if !value {
            return Err(self.status_error(incoming, "", observed).await);
        }
        let limit = self.max_response_bytes;
        if let Some(len) = incoming.declared_length()
            && len > limit as u64
        {
            return Err(too_large(len.to_string(), limit).with_status(status));
        }
        let body = incoming
            .read(limit, false)
            .await
            .map_err(|e| e.with_status(status))?;
        let probe = observed.probe();
        if probe.log.is_on() {
            log::response(
                &probe.line(),
                status,
                incoming.headers(),
                &body,
                observed.elapsed(),
            );
        }
        let mut headers = std::mem::take(incoming.headers_mut());
        D::decode(status, &mut headers, &body)
            .map_err(|e| e.with_status(status).with_snippet(&body))
    }

    /// The error for an answer that is not a value: its status decides; the
    /// body is read (at most up to the limit, only a snippet's worth when
    /// its declared length is over it) for the snippet.
    async fn status_error(
        &self,
        incoming: &mut Incoming,
        note: &str,
        observed: &Attempt<'_>,
    ) -> Error {
        let status = incoming.status();
        let retry_after = incoming
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let limit = match incoming.declared_length() {
            Some(len) if len > self.max_response_bytes as u64 => SNIPPET_BYTES,
            _ => self.max_response_bytes,
        };
        // A body that breaks off only shortens the snippet: the status is
        // the answer.
        let body = incoming.read(limit, true).await.unwrap_or_default();
        let probe = observed.probe();
        if probe.log.is_on() {
            log::response(
                &probe.line(),
                status,
                incoming.headers(),
                &body,
                observed.elapsed(),
            );
        }
        Error::new(
            ErrorKind::Status,
            format!("service answered {status}{note}"),
        )
        .with_status(status)
        .with_snippet(&body)
        .with_retry_after(retry_after)
    }

    async fn unfollowed(
        &self,
        incoming: &mut Incoming,
        why: NotFollowed,
        observed: &Attempt<'_>,
    ) -> Error {
        let note = match why {
            NotFollowed::Policy => " (redirects are not followed: see `redirects`)",
            NotFollowed::OtherOrigin => {
                " (a redirect to another origin, not followed: see `redirects`)"
            }
            NotFollowed::Limit => " (too many redirects)",
            NotFollowed::NoLocation => " (a redirect without a usable Location)",
            NotFollowed::StreamedBody => {
                " (a redirect that would send the streamed body again, which is read once: \
                 not followed)"
            }
        };
        self.status_error(incoming, note, observed).await
    }
}

fn too_large(len: String, limit: usize) -> Error {
    Error::new(
        ErrorKind::Body,
        format!(
            "the response body ({len} bytes) is larger than the limit of {limit} bytes \
             (max_response_bytes)"
        ),
    )
    .too_large()
}

/// Classifies a reqwest failure. The URL is stripped from it: it may carry a
/// query string with secrets.
fn transport_error(e: reqwest::Error) -> Error {
    if let Some(failed) = crate::stream::upload_failure(&e) {
        return failed;
    }
    let (kind, message) = if e.is_connect() {
        let what = if e.is_timeout() {
            "connect timed out"
        } else {
            "could not connect"
        };
        (ErrorKind::Connect, what)
    } else if e.is_timeout() {
        (ErrorKind::Timeout, "no answer in time")
    } else if e.is_body() || e.is_decode() {
        (ErrorKind::Body, "")
    } else if unprocessed(&e) {
        return Error::new(ErrorKind::Transport, UNPROCESSED)
            .unprocessed()
            .with_source(e.without_url());
    } else {
        (ErrorKind::Transport, "")
    };
    Error::new(kind, message).with_source(e.without_url())
}

/// The message of an [`unprocessed`] failure.
pub(crate) const UNPROCESSED: &str =
    "the service did not process the request (HTTP/2 stream refused or connection going away)";

/// Whether `e`, or an error under it, is HTTP/2's word that the service did
/// not process the request: the stream refused (`REFUSED_STREAM`, RFC 9113
/// §8.7) or the connection closing gracefully (`GOAWAY` with `NO_ERROR`)
/// before it. Such a request may be sent again whatever its method, as
/// after a connect failure; the retry stage does so.
///
/// reqwest retries exactly these itself (twice, on a budget of its own), by
/// cloning every request before it is sent in case it is refused; courier's
/// own reqwest client has that off (`builder::new_http_client`) and leaves
/// them to the retry stage, where they count as attempts, against the
/// retry budget, in events and spans. On the hyper transport nothing
/// retried them before.
pub(crate) fn unprocessed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<h2::Error>() {
            let reason = e.reason();
            return e.is_remote()
                && ((e.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM))
                    || (e.is_go_away() && reason == Some(h2::Reason::NO_ERROR)));
        }
        next = e.source();
    }
    false
}

/// Classifies a failure of a layered stack: reqwest's and hyper-util's own
/// errors as above, a layer's timeout as a timeout, anything else as a
/// transport error.
fn layered_error(e: BoxError) -> Error {
    if let Some(failed) = crate::stream::upload_failure(&*e) {
        return failed;
    }
    #[cfg(feature = "hyper-transport")]
    let e = match e.downcast::<hyper_util::client::legacy::Error>() {
        Ok(e) => return hyper_client::send_error(*e),
        Err(e) => e,
    };
    match e.downcast::<reqwest::Error>() {
        Ok(e) => transport_error(*e),
        Err(e) if e.is::<tower::timeout::error::Elapsed>() => {
            Error::new(ErrorKind::Timeout, "a layer's timeout elapsed").with_source(e)
        }
        Err(e) if unprocessed(&*e) => Error::new(ErrorKind::Transport, UNPROCESSED)
            .unprocessed()
            .with_source(e),
        Err(e) => Error::new(ErrorKind::Transport, "").with_source(e),
    }
}

fn strip_url(e: BoxError) -> BoxError {
    match e.downcast::<reqwest::Error>() {
        Ok(e) => Box::new(e.without_url()),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(policy: Redirects, status: u16, method: Method, to: &str) -> Result<Hop, NotFollowed> {
        let location = HeaderValue::from_str(to).ok();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
        next_hop(
            policy,
            "http://a.example:8080/x/y?secret=1",
            status,
            &method,
            location.as_ref(),
            0,
        )
    }

    /// The body at the tower boundary stays small: it is moved several
    /// times per call.
    #[test]
    fn the_request_body_stays_small() {
        assert!(
            std::mem::size_of::<Body>() <= 32,
            "{}",
            std::mem::size_of::<Body>()
        );
    }

    /// A clone of a streamed body cannot have the stream: polling it is an
    /// error, never an empty body sent as if complete.
    #[tokio::test]
    async fn a_clone_of_a_streamed_body_fails_when_polled() {
        use http_body_util::BodyExt as _;
        let stream = BodyStream::from_chunks([Bytes::from_static(b"once")]);
        let body = Body::from_stream(stream);
        let clone = body.clone();
        assert!(body.is_stream() && clone.is_stream());
        assert!(body.as_bytes().is_none());
        let sent = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(sent.ok(), Some(Bytes::from_static(b"once")));
        let resent = clone.collect().await;
        let message = resent.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("read once"), "{message}");

        let whole = Body::new(Bytes::from_static(b"twice"));
        let copy = whole.clone();
        assert_eq!(copy.as_bytes(), Some(&Bytes::from_static(b"twice")));
        assert!(!whole.is_stream());
    }

    #[test]
    fn redirects_follow_the_policy_and_the_method_rules() {
        let same = Redirects::default();
        let h = hop(same, 302, Method::GET, "/z?page=2");
        assert!(h.as_ref().is_ok_and(|h| h.same_origin
            && h.url == "http://a.example:8080/z?page=2"
            && h.method == Method::GET));
        assert_eq!(
            hop(same, 302, Method::GET, "http://b.example/").err(),
            Some(NotFollowed::OtherOrigin)
        );
        assert_eq!(
            hop(same, 302, Method::GET, "https://a.example:8080/").err(),
            Some(NotFollowed::OtherOrigin),
            "another scheme is another origin"
        );
        assert_eq!(
            hop(Redirects::none(), 302, Method::GET, "/z").err(),
            Some(NotFollowed::Policy)
        );
        let any = hop(Redirects::any(3), 307, Method::POST, "http://b.example/");
        assert!(
            any.as_ref()
                .is_ok_and(|h| !h.same_origin && h.method == Method::POST && h.keep_body)
        );
        let post_302 = hop(same, 302, Method::POST, "/z");
        assert!(post_302.is_ok_and(|h| h.method == Method::GET && !h.keep_body));
        let put_303 = hop(same, 303, Method::PUT, "/z");
        assert!(put_303.is_ok_and(|h| h.method == Method::GET && !h.keep_body));
        let put_308 = hop(same, 308, Method::PUT, "/z");
        assert!(put_308.is_ok_and(|h| h.method == Method::PUT && h.keep_body));
        assert_eq!(
            hop(same, 302, Method::GET, "ftp://a.example/").err(),
            Some(NotFollowed::NoLocation)
        );
        let limited = next_hop(
            Redirects::same_origin(2),
            "http://a.example/",
            StatusCode::FOUND,
            &Method::GET,
            HeaderValue::from_str("/b").ok().as_ref(),
            2,
        );
        assert_eq!(limited.err(), Some(NotFollowed::Limit));
    }
}
