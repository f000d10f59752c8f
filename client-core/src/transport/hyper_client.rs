//! The lean transport (feature `hyper-transport`): hyper-util's pooled
//! client straight on hyper, behind the same stage boundary as reqwest.
//! Only the send and the body's chunks are here; interceptors, tower
//! layers (this client is then the service at the bottom of the stack),
//! redirects, the size limit and decoding are shared with reqwest in
//! `transport.rs`, and the errors map onto the same kinds.
//!
//! Why it is faster than reqwest on the same hyper-util pool: a call
//! through reqwest parses its URL with `url::Url`, turns it back into an
//! `http::Uri`, fills reqwest's own header maps and keeps reqwest's pool
//! bookkeeping on top of hyper-util's. Here the base URL is parsed once,
//! when the client is built, into a scheme and an authority ([`Origin`]);
//! a call's path and query, already percent-encoded by `RequestParts`,
//! become the request's `PathAndQuery` (checked by `http`'s own parser) and
//! are joined to the kept scheme and authority with `Uri::from_parts`. A
//! URL that does not start with the base (an instance from discovery, a
//! redirect to another origin) is parsed as an `http::Uri`, never as a
//! `url::Url`.
//!
//! [`Origin`] is the one hand-written piece: `http::Uri` has no "base plus
//! path" join, and `url::Url` (which has one) is the per-call parse this
//! transport exists to avoid.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{Body, HttpRequest, HttpResponse};
use crate::{BoxError, Error, ErrorKind};

#[cfg(feature = "rustls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "rustls"))]
type Connector = HttpConnector;

/// A response as hyper hands it over.
pub(crate) type HyperResponse = http::Response<hyper::body::Incoming>;

/// How long a TCP connection may be silent before keepalive probes start,
/// as reqwest's default.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

// ===== the settings =====

/// The settings of the lean transport: hyper-util's pooled client straight
/// on hyper, without reqwest (feature `hyper-transport`). Pass it to
/// [`ClientBuilder::hyper_transport`](crate::ClientBuilder::hyper_transport);
/// courier builds the client from it, with the builder's
/// [`connect_timeout`](crate::ClientBuilder::connect_timeout).
///
/// **Why:** a call through it costs about half the client instructions of
/// one through reqwest (no URL parse per call, no second set of header maps
/// and pool bookkeeping on top of hyper-util's), within about 5 % of raw
/// hyper-util's; see the README's Performance section for the numbers.
///
/// **The same behaviour:** interceptors, tower layers, redirects, the size
/// limit and decoding are the ones every courier client has, and failures
/// have the same kinds: a connection that could not be made (refused, DNS,
/// TLS handshake, connect timeout) is [`Connect`](crate::ErrorKind::Connect),
/// any other failure before the response head is
/// [`Transport`](crate::ErrorKind::Transport), a body that breaks off is
/// [`Body`](crate::ErrorKind::Body). Connections are made as reqwest makes
/// them by default: TCP_NODELAY, TCP keepalive every 15 s, idle pooled
/// connections closed after 90 s; `https://` through rustls with the
/// `rustls` feature (the same rustls, aws-lc-rs provider and platform
/// verifier as reqwest's, so no second crypto backend), offering HTTP/2 and
/// HTTP/1.1 by ALPN; `http://` speaks HTTP/1.1, or HTTP/2 with prior
/// knowledge (h2c). A call without an `accept` header of its own sends
/// `accept: */*`, as reqwest does.
///
/// **What it lacks:** proxies (`HTTP_PROXY` is not read), cookies, client
/// certificates and custom root certificates, and a client of your own
/// (there is no counterpart of [`http_client`](crate::ClientBuilder::http_client)).
/// Keep reqwest, the default, for those.
///
/// ```no_run
/// # #[courier::client(name = "user-service")]
/// # pub trait Users {
/// #     #[get("/ping")]
/// #     async fn ping(&self) -> Result<(), courier::Error>;
/// # }
/// # fn demo() -> Result<(), courier::Error> {
/// use courier::transport::HyperTransport;
/// use std::time::Duration;
///
/// let users = UsersClient::builder()
///     .base_url("http://users.internal:8080")
///     .hyper_transport(
///         HyperTransport::new()
///             .http2_prior_knowledge()
///             .pool_idle_timeout(Some(Duration::from_secs(30))),
///     )
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HyperTransport {
    http2_prior_knowledge: bool,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    tcp_nodelay: bool,
}

impl Default for HyperTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl HyperTransport {
    /// Every setting at its default.
    pub fn new() -> Self {
        HyperTransport {
            http2_prior_knowledge: false,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            tcp_nodelay: true,
        }
    }

    /// Speaks HTTP/2 only: to an `http://` service with prior knowledge
    /// (h2c, no upgrade), to an `https://` one by offering only `h2` in ALPN.
    /// Many calls then share one connection per instance.
    ///
    /// Default is off: HTTP/1.1 for `http://`, HTTP/2 or HTTP/1.1 by ALPN
    /// for `https://`.
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.http2_prior_knowledge = true;
        self
    }

    /// How long an idle pooled connection is kept; `None` keeps it until
    /// the service closes it.
    ///
    /// Default is 90 s (reqwest's).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// At most this many idle connections are kept per instance.
    ///
    /// Default is no limit (reqwest's).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Sets TCP_NODELAY on new connections, so a small request is sent at
    /// once rather than held back by Nagle's algorithm.
    ///
    /// Default is on.
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.tcp_nodelay = on;
        self
    }

    /// The client these settings describe; `base` is the client's fixed
    /// base URL, if it has one (normalised, no trailing slash).
    pub(crate) fn build(
        &self,
        connect_timeout: Duration,
        base: Option<&str>,
    ) -> Result<HyperSender, Error> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(self.tcp_nodelay);
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_keepalive_interval(Some(TCP_KEEPALIVE));
        http.set_keepalive_retries(Some(3));
        let connector = self.connector(http)?;
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .http2_only(self.http2_prior_knowledge)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host);
        // With HTTP/2 the origin is named in `:authority`; hyper-util
        // sends no `Host` there, and neither does courier.
        let with_host = !self.http2_prior_knowledge;
        Ok(HyperSender {
            client: builder.build(connector),
            origin: base.and_then(|base| Origin::parse(base, with_host)),
        })
    }

    #[cfg(feature = "rustls")]
    fn connector(&self, mut http: HttpConnector) -> Result<Connector, Error> {
        use std::sync::Arc;
        // The process's default provider if one was installed, else
        // aws-lc-rs (what reqwest uses): never rustls's panicking lookup.
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(provider)
            .map_err(|e| {
                Error::builder("could not set up TLS for the hyper transport").with_source(e)
            })?
            .https_or_http();
        http.enforce_http(false);
        Ok(if self.http2_prior_knowledge {
            tls.enable_http2().wrap_connector(http)
        } else {
            tls.enable_http1().enable_http2().wrap_connector(http)
        })
    }

    #[cfg(not(feature = "rustls"))]
    fn connector(&self, http: HttpConnector) -> Result<Connector, Error> {
        Ok(http)
    }
}

// ===== the client =====

/// A built lean transport: the pooled client and the client's base URL,
/// parsed once.
#[derive(Clone)]
pub(crate) struct HyperSender {
    client: Client<Connector, Body>,
    origin: Option<Origin>,
}

impl fmt::Debug for HyperSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hyper-util")
    }
}

impl HyperSender {
    /// The request for `url`, built without a URL parse when `url` starts
    /// with the client's base URL (see [`Origin`]), with the origin's
    /// `Host` made once (see [`Origin::host`]). Adds `accept: */*` when the
    /// call set no `accept`, as reqwest does.
    pub(crate) fn request(
        &self,
        method: &Method,
        url: &str,
        mut headers: HeaderMap,
        body: Body,
    ) -> Result<http::Request<Body>, Error> {
        let (uri, host) = match &self.origin {
            Some(origin) => origin.join(url),
            None => url.parse().map(|uri| (uri, None)).map_err(BoxError::from),
        }
        .map_err(|e| Error::invalid_request("the request URL is not valid").with_source(e))?;
        if let Some(host) = host
            && let http::header::Entry::Vacant(slot) = headers.entry(HOST)
        {
            slot.insert(host.clone());
        }
        accept_anything_by_default(&mut headers);
        let mut request = http::Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Sends a request; its future is hyper-util's (boxed once there).
    pub(crate) fn send(
        &self,
        request: http::Request<Body>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        self.client.request(request)
    }

    /// This client as the service at the bottom of a layered stack.
    pub(crate) fn into_service(self: Box<Self>) -> HyperService {
        HyperService(*self)
    }
}

/// The scheme and authority of a client's base URL, parsed once, and its
/// text: a URL that starts with that text needs only its path and query
/// checked to become an `http::Uri`.
#[derive(Clone, Debug)]
struct Origin {
    /// `scheme://authority`, as the URL texts of calls start.
    text: Box<str>,
    scheme: Scheme,
    authority: Authority,
    /// The `Host` of a request to a plain `http://` origin, made once.
    ///
    /// hyper-util sets `Host` on every HTTP/1 request that has none: it
    /// formats `host:port` into a new string and checks it as a header
    /// value, about 2,300 instructions and an allocation per request
    /// (callgrind, the overhead benchmark's GET), for a value that never
    /// changes. It keeps a `Host` that is already there, so this one, the
    /// same text, is what goes out. Not for `https://` (the connection may
    /// turn out HTTP/2, which names the origin in `:authority` and sends no
    /// `Host`), nor with HTTP/2 prior knowledge.
    host: Option<HeaderValue>,
}

impl Origin {
    /// The origin of a normalised base URL; `None` if it has none (then
    /// every URL is parsed whole, which is still correct).
    fn parse(base: &str, with_host: bool) -> Option<Origin> {
        let (scheme, rest) = base.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let text = &base[..scheme.len() + 3 + authority.len()];
        let scheme = Scheme::try_from(scheme).ok()?;
        let authority = Authority::try_from(authority).ok()?;
        let host = (with_host && scheme == Scheme::HTTP)
            .then(|| host_header(&authority))
            .flatten();
        Some(Origin {
            text: text.into(),
            scheme,
            authority,
            host,
        })
    }

    /// `url` as an `http::Uri`: the kept scheme and authority and the
    /// checked path and query when `url` starts with this origin, with the
    /// origin's `Host`; else `url` parsed whole, and no `Host`.
    fn join(&self, url: &str) -> Result<(Uri, Option<&HeaderValue>), BoxError> {
        let rest = match url.strip_prefix(&*self.text) {
            Some(rest) if rest.is_empty() || rest.starts_with(['/', '?']) => rest,
            _ => return Ok((url.parse()?, None)),
        };
        let path_and_query = match rest {
            "" => PathAndQuery::from_static("/"),
            rest if rest.starts_with('?') => PathAndQuery::try_from(format!("/{rest}"))?,
            rest => PathAndQuery::try_from(rest)?,
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Ok((Uri::from_parts(parts)?, self.host.as_ref()))
    }
}

/// `Host` for an `http://` authority, as hyper-util writes it: the host
/// (an IPv6 address in brackets), and the port unless it is 80.
fn host_header(authority: &Authority) -> Option<HeaderValue> {
    let host = authority.host();
    let text = match authority.port_u16() {
        Some(port) if port != 80 => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    crate::url::host_value(text)
}

/// `accept: */*` unless the call set an `accept`: what reqwest sends, so a
/// service sees the same request whichever transport sent it.
fn accept_anything_by_default(headers: &mut HeaderMap) {
    if !headers.contains_key(ACCEPT) {
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    }
}

// ===== errors and the body =====

/// Classifies a failure to get a response head, as `transport_error` does
/// for reqwest's: no connection is `Connect` (a connect timeout too, and
/// `is_timeout()` sees its `TimedOut` cause), hyper's own timeout is
/// `Timeout`, anything else `Transport`. hyper-util's errors carry no URL.
pub(crate) fn send_error(e: hyper_util::client::legacy::Error) -> Error {
    if let Some(failed) = crate::stream::upload_failure(&e) {
        return failed;
    }
    if e.is_connect() {
        let what = if has_io_timeout(&e) {
            "connect timed out"
        } else {
            "could not connect"
        };
        return Error::new(ErrorKind::Connect, what).with_source(e);
    }
    let timed_out = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_timeout);
    if timed_out {
        Error::new(ErrorKind::Timeout, "no answer in time").with_source(e)
    } else if super::unprocessed(&e) {
        Error::new(ErrorKind::Transport, super::UNPROCESSED)
            .unprocessed()
            .with_source(e)
    } else {
        Error::new(ErrorKind::Transport, "").with_source(e)
    }
}

fn has_io_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The next chunk of a response body (trailers skipped); a body that
/// breaks off is `Body`, as with reqwest (`Timeout` if hyper timed it out).
pub(crate) async fn chunk(r: &mut HyperResponse) -> Result<Option<Bytes>, Error> {
    loop {
        match r.body_mut().frame().await {
            None => return Ok(None),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => return Ok(Some(data)),
                Err(_) => continue, // trailers
            },
            Some(Err(e)) => {
                let kind = if e.is_timeout() {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Body
                };
                return Err(Error::new(kind, "the response body broke off").with_source(e));
            }
        }
    }
}

// ===== at the bottom of a tower stack =====

/// The lean transport as an [`HttpService`](super::HttpService): the
/// bottom of a layered stack when the client has tower layers.
#[derive(Clone, Debug)]
pub(crate) struct HyperService(HyperSender);

impl tower::Service<HttpRequest> for HyperService {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: HttpRequest) -> Self::Future {
        accept_anything_by_default(request.headers_mut());
        let response = self.0.send(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(base: &str) -> Origin {
        Origin::parse(base, true).unwrap_or_else(|| panic!("{base} has an origin"))
    }

    fn joined(base: &str, url: &str) -> String {
        origin(base)
            .join(url)
            .map_or_else(|e| format!("error: {e}"), |(uri, _)| uri.to_string())
    }

    /// The `Host` a request gets: hyper-util's text for it (host, port
    /// unless 80), only on the origin, only for `http://`.
    #[test]
    fn a_request_on_an_http_origin_gets_the_origins_host() {
        let host = |base: &str, url: &str| {
            let o = origin(base);
            let joined = o.join(url).ok();
            joined.and_then(|(_, h)| h.and_then(|h| h.to_str().ok().map(str::to_owned)))
        };
        let cases = [
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/x",
                Some("127.0.0.1:8080"),
            ),
            (
                "http://gw.local/api",
                "http://gw.local/api/x?q=1",
                Some("gw.local"),
            ),
            ("http://h:80", "http://h:80/x", Some("h")),
            (
                "http://[::1]:9000",
                "http://[::1]:9000/x",
                Some("[::1]:9000"),
            ),
            ("http://h", "http://other/x", None),
            ("http://h:81", "http://h:8181/x", None),
            ("https://h", "https://h/x", None),
        ];
        for (base, url, want) in cases {
            assert_eq!(host(base, url).as_deref(), want, "{url} on {base}");
        }
        // With HTTP/2 prior knowledge: never.
        let h2 = Origin::parse("http://h:81", false)
            .and_then(|o| o.join("http://h:81/x").ok().map(|(_, host)| host.is_some()));
        assert_eq!(h2, Some(false));
    }

    #[test]
    fn a_url_under_the_base_keeps_its_path_and_query_exactly() {
        let base = "http://127.0.0.1:8080/gateway";
        assert_eq!(
            joined(
                base,
                "http://127.0.0.1:8080/gateway/users/a%2Fb%20c?q=x%26y&t=1"
            ),
            "http://127.0.0.1:8080/gateway/users/a%2Fb%20c?q=x%26y&t=1"
        );
        assert_eq!(
            joined("http://h", "http://h"),
            "http://h/",
            "an empty path is `/`"
        );
        assert_eq!(joined("http://h", "http://h?x=1"), "http://h/?x=1");
        assert_eq!(
            joined("https://[::1]:8443", "https://[::1]:8443/x"),
            "https://[::1]:8443/x"
        );
    }

    #[test]
    fn another_origin_is_parsed_whole() {
        // A longer port, another host, another scheme: not under the base.
        assert_eq!(joined("http://h:80", "http://h:8080/x"), "http://h:8080/x");
        assert_eq!(joined("http://h", "http://other/x"), "http://other/x");
        assert_eq!(joined("http://h", "https://h/x"), "https://h/x");
    }

    #[test]
    fn a_path_http_refuses_is_an_error_not_a_panic() {
        for bad in ["http://h/a b", "http://h/\u{7f}", "http://h/x\ny"] {
            assert!(
                joined("http://h", bad).starts_with("error"),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn origins_come_from_normalised_base_urls() {
        let o = origin("http://gw.local:81/users-api");
        assert_eq!(&*o.text, "http://gw.local:81");
        assert_eq!(o.authority.as_str(), "gw.local:81");
        assert_eq!(o.scheme, Scheme::HTTP);
        assert!(Origin::parse("no scheme", true).is_none());
    }
}
