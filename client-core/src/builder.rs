//! [`ClientBuilder`]: where a generated client gets its target (a base URL
//! or a discovery), its transport (reqwest, tower layers, redirects, the
//! size limit), its default headers and interceptors, its config overrides,
//! retry budget, fallback and event callback. `build()` resolves every
//! method's policy once (see [`crate::policy`]).
//!
//! As in `reqwest::ClientBuilder`, a setter that receives a bad value records
//! the problem and [`build`](ClientBuilder::build) returns it, so setter
//! chains need no `?`. Only the first problem is kept.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::HeaderName;

use bytes::Bytes;

use crate::BoxError;
use crate::balance::{Balance, Balancer, OutlierEjection};
use crate::client::{ClientSpec, IntoFallback, MethodRuntime, Runtime, Shared, Target};
use crate::config::{ClientConfig, Config};
use crate::discovery::Discovery;
use crate::interceptor::{AsyncInterceptor, Hook, Interceptor};
use crate::observe::probe::Probe;
use crate::observe::trace::Server;
use crate::observe::{Event, EventSink};
use crate::policy::budget::RetryBudget;
use crate::policy::bulkhead::Bulkhead;
use crate::policy::circuit::CircuitBreaker;
use crate::policy::deadline::{Watch, WatchHandle};
use crate::policy::fallback::Fallback;
use crate::policy::rate_limit::RateLimiter;
use crate::policy::{MethodPolicy, defaults};
use crate::request::header_value;
use crate::spec::{Key, Overrides, Value, method_of};
use crate::transport::{self, HttpRequest, HttpService, Redirects, Transport};
use crate::url::normalize_base_url;
use crate::{Error, ErrorKind};

/// The default limit on a response body: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The default connect timeout: 1 s, as Finagle's. A service in the same
/// data centre that takes longer to accept a connection is better treated as
/// down.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Builds a generated client: `UsersClient::builder()…build()`.
///
/// ```no_run
/// # #[courier::client(name = "user-service")]
/// # pub trait Users {
/// #     #[get("/ping")]
/// #     async fn ping(&self) -> Result<(), courier::Error>;
/// # }
/// # fn demo() -> Result<(), courier::Error> {
/// let users = UsersClient::builder()
///     .base_url("http://127.0.0.1:8080")
///     .default_header("x-caller", "billing")
///     .build()?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build()` is called"]
pub struct ClientBuilder<C: ClientSpec> {
    base_url: Option<String>,
    http_client: Option<reqwest::Client>,
    #[cfg(feature = "hyper-transport")]
    hyper: Option<transport::HyperTransport>,
    default_headers: HeaderMap,
    connect_timeout: Option<Duration>,
    max_response_bytes: usize,
    interceptors: Vec<Hook>,
    layers: Vec<Box<dyn FnOnce(HttpService) -> HttpService + Send>>,
    #[cfg(feature = "decompression")]
    decompression: bool,
    redirects: Redirects,
    config: Option<(String, ClientConfig)>,
    budget: Option<(f32, u32)>,
    fallback: Option<Fallback<C::Api>>,
    events: EventSink,
    discovery: Option<Arc<dyn Discovery>>,
    balance: Balance,
    ejection: Option<OutlierEjection>,
    #[cfg(feature = "auth")]
    auth: Option<crate::auth::Auth>,
    error: Option<Error>,
    _client: PhantomData<fn() -> C>,
}

impl<C: ClientSpec> Default for ClientBuilder<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: ClientSpec> ClientBuilder<C> {
    /// A builder with every setting at its default. Same as
    /// `<Trait>Client::builder()`.
    pub fn new() -> Self {
        ClientBuilder {
            base_url: None,
            http_client: None,
            #[cfg(feature = "hyper-transport")]
            hyper: None,
            default_headers: HeaderMap::new(),
            connect_timeout: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            interceptors: Vec::new(),
            layers: Vec::new(),
            #[cfg(feature = "decompression")]
            decompression: true,
            redirects: Redirects::default(),
            config: None,
            budget: Some((defaults::BUDGET_RATIO, defaults::BUDGET_MIN_PER_SEC)),
            fallback: None,
            events: EventSink::none(),
            discovery: None,
            balance: Balance::default(),
            ejection: Some(OutlierEjection::default()),
            #[cfg(feature = "auth")]
            auth: None,
            error: None,
            _client: PhantomData,
        }
    }

    fn fail(&mut self, error: Error) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// The URL every call's path is appended to: scheme, host, port and an
    /// optional path prefix (`http://gateway.local/users-api`). It must not
    /// carry a query, a fragment or credentials.
    ///
    /// Default is the trait's `#[client(url = …)]`; without either, `build()`
    /// fails.
    pub fn base_url(mut self, url: impl AsRef<str>) -> Self {
        match normalize_base_url(url.as_ref()) {
            Ok(url) => self.base_url = Some(url),
            Err(e) => self.fail(e),
        }
        self
    }

    /// The reqwest client to send with, e.g. one shared by several courier
    /// clients, or with TLS roots or a proxy of your own. Its connection pool
    /// is shared by every clone of the built client. Build it with
    /// `redirect(reqwest::redirect::Policy::none())`, so that courier's
    /// [`redirects`](Self::redirects) policy decides (otherwise reqwest
    /// follows redirects before courier sees them).
    ///
    /// Default is a new reqwest client with courier's connect timeout, no
    /// user agent, no redirects of its own and no `Referer`. Creating one costs milliseconds (mostly loading TLS
    /// roots), so a program that builds many courier clients can pass one
    /// shared reqwest client here. (Not shared by default: a reqwest client
    /// must not be used from two tokio runtimes.)
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Sends with the lean transport, hyper-util's pooled client straight on
    /// hyper, built from these settings (with this builder's
    /// [`connect_timeout`](Self::connect_timeout)), instead of reqwest. A
    /// call costs about half the client instructions; it has no proxy,
    /// cookie or custom-TLS settings. See
    /// [`HyperTransport`](crate::transport::HyperTransport). `build()` fails
    /// if [`http_client`](Self::http_client) is given too. Feature
    /// `hyper-transport`.
    ///
    /// Default is reqwest.
    #[cfg(feature = "hyper-transport")]
    pub fn hyper_transport(mut self, transport: transport::HyperTransport) -> Self {
        self.hyper = Some(transport);
        self
    }

    /// A header sent with every call (unless the call sets the same header
    /// itself). Values of secret-bearing headers (`authorization`, `cookie`,
    /// names containing `token`, `secret`, `api-key`…) are marked sensitive
    /// and never printed.
    ///
    /// Default is none.
    pub fn default_header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        let parsed = HeaderName::try_from(name)
            .map_err(|_| Error::builder(format!("`{name}` is not a valid header name")))
            .and_then(|name| {
                let value = header_value(&name, value.as_ref().to_owned())
                    .map_err(|e| Error::builder(format!("default header: {e}")))?;
                Ok((name, value))
            });
        match parsed {
            Ok((name, value)) => {
                self.default_headers.insert(name, value);
            }
            Err(e) => self.fail(e),
        }
        self
    }

    /// How long to wait for a TCP (and TLS) connection to be made. Applies to
    /// the HTTP client courier creates; with [`http_client`](Self::http_client),
    /// set it on your reqwest client instead (`build()` fails if both are
    /// given, rather than ignore one).
    ///
    /// Default is 1 s ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The largest response body a call reads. A longer body fails the call
    /// with [`ErrorKind::Body`] as soon as it is
    /// known to be too long, without buffering it.
    ///
    /// Default is 16 MiB ([`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Adds a hook that sees, and may change, every outgoing request (once
    /// per attempt, after the instance is picked). Interceptors of both
    /// kinds run in the order they were added.
    ///
    /// Default is none.
    pub fn interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors.push(Hook::Sync(Arc::new(interceptor)));
        self
    }

    /// Adds a hook that may await (fetch a token, a signing key), run like
    /// [`interceptor`](Self::interceptor)s and in one order with them. The
    /// call's deadline cuts it like any other wait.
    ///
    /// Default is none.
    pub fn async_interceptor(mut self, interceptor: impl AsyncInterceptor) -> Self {
        self.interceptors.push(Hook::Async(Arc::new(interceptor)));
        self
    }

    /// The client's credentials, put on every attempt (feature `auth`): a
    /// static bearer token or API key ([`Auth`](crate::auth::Auth)), OAuth2
    /// client credentials ([`OAuth2`](crate::auth::OAuth2)) or JWTs the
    /// service mints ([`ServiceJwt`](crate::auth::jwt::ServiceJwt), feature
    /// `jwt`). They run after the [`interceptor`](Self::interceptor)s, so
    /// they win over an `Authorization` an interceptor set or one
    /// propagated from the request being served; methods marked
    /// `#[auth(none)]` go without them. See [`crate::auth`].
    ///
    /// ```no_run
    /// # #[courier::client(name = "ledger")]
    /// # pub trait Ledger {
    /// #     #[get("/ping")]
    /// #     async fn ping(&self) -> Result<(), courier::Error>;
    /// # }
    /// use courier::auth::Auth;
    ///
    /// # fn demo() -> Result<(), courier::Error> {
    /// let ledger = LedgerClient::builder()
    ///     .base_url("http://ledger.internal:8080")
    ///     .auth(Auth::api_key("x-api-key", "k-7"))
    ///     .build()?;
    /// # let _ = ledger; Ok(()) }
    /// ```
    ///
    /// Default is none.
    #[cfg(feature = "auth")]
    pub fn auth(mut self, auth: impl Into<crate::auth::Auth>) -> Self {
        self.auth = Some(auth.into());
        self
    }

    /// Adds a tower layer around the transport: it sees every attempt's
    /// `http::Request<courier::transport::Body>` (retries and hedges
    /// included) and its response, like tower-http's `SetRequestHeaderLayer`,
    /// `DecompressionLayer` or `TraceLayer`, or a layer of your own. Layers
    /// apply in the order added: the first added is the outermost (as in
    /// `tower::ServiceBuilder`). The response body may change type (a
    /// decompressed body, say); the size limit applies to what the layers
    /// hand back.
    ///
    /// With no layer, courier sends through reqwest directly and nothing is
    /// boxed; with layers, the stack is boxed once and cloned per attempt.
    ///
    /// Default is none.
    pub fn layer<L, S, B>(mut self, layer: L) -> Self
    where
        L: tower::Layer<HttpService, Service = S> + Send + 'static,
        S: tower::Service<HttpRequest, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.layers.push(boxed_layer(layer));
        self
    }

    /// Whether compressed responses are decoded (features `gzip`,
    /// `deflate`, `brotli`, `zstd`): requests then say `Accept-Encoding`
    /// with the enabled encodings, and a response in one of them is
    /// decoded before the size limit and the decoder see it (a small
    /// body that expands past `max_response_bytes` fails as too large, its
    /// expansion never buffered). The decoder is tower-http's
    /// `DecompressionLayer`, innermost around the transport, so the layers
    /// added with [`layer`](Self::layer) see decoded responses; it puts
    /// every call on the layered path (one boxed service per attempt).
    ///
    /// Default is on when any of those features is.
    #[cfg(feature = "decompression")]
    pub fn decompression(mut self, on: bool) -> Self {
        self.decompression = on;
        self
    }

    /// Which redirects are followed: [`Redirects::same_origin`]`(n)`,
    /// [`Redirects::any`]`(n)` or [`Redirects::none`]. A redirect to
    /// another origin is never given the caller's headers or a `Referer`;
    /// one that is not followed ends the call as a `Status` error with the
    /// 3xx. See [`crate::transport`].
    ///
    /// Default is [`Redirects::same_origin`]`(5)`.
    pub fn redirects(mut self, redirects: Redirects) -> Self {
        self.redirects = redirects;
        self
    }

    /// Policy overrides from a config file or string: this client's section
    /// (`[clients.<name>]`, by the trait's `name`) and its methods' sections
    /// take precedence over the attributes, as described in
    /// [`crate::policy`]. Sections of other clients are ignored. `build()`
    /// fails if the section names a method the trait does not have.
    ///
    /// Default is no config.
    pub fn config(mut self, config: &Config) -> Self {
        self.config = config
            .client(C::DEF.name)
            .map(|section| (config.source().to_owned(), section.clone()));
        self
    }

    /// The client's retry budget: retries (and hedges) may add at most
    /// `ratio` (0.2 = 20 %) to the calls of the last 10 s, with at least
    /// `min_per_sec` retries per second always allowed. One budget serves
    /// all methods of the built client and its clones. See
    /// [`crate::policy::budget`].
    ///
    /// Default is 20 % with 10 retries per second (Finagle's).
    pub fn retry_budget(mut self, ratio: f32, min_per_sec: u32) -> Self {
        if !(ratio.is_finite() && ratio >= 0.0) {
            self.fail(Error::builder(format!(
                "retry budget ratio must be a number 0 or above, not {ratio}"
            )));
        }
        self.budget = Some((ratio, min_per_sec));
        self
    }

    /// Turns the retry budget off: every retryable failure is retried up to
    /// `max_attempts`, however many fail at once. Only for tests, or behind
    /// a limit of your own.
    ///
    /// Default is a budget (see [`retry_budget`](Self::retry_budget)).
    pub fn no_retry_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// A fallback: any implementation of the client trait. When a call fails
    /// because the service failed or is protected (timeout, connect error,
    /// 5xx, open circuit, full bulkhead, exhausted budget), the fallback's
    /// same method is called with the same arguments and its result
    /// returned. Never for 4xx or decode errors.
    ///
    /// Default is none.
    pub fn fallback<F>(mut self, fallback: F) -> Self
    where
        C: IntoFallback<F>,
    {
        self.fallback = Some(Fallback::Instance(C::into_api(fallback)));
        self
    }

    /// Like [`fallback`](Self::fallback), but the fallback is made for each
    /// failure by `make`, which sees the cause.
    ///
    /// Default is none.
    pub fn fallback_factory<F, R>(mut self, make: F) -> Self
    where
        F: Fn(&Error) -> R + Send + Sync + 'static,
        C: IntoFallback<R>,
    {
        self.fallback = Some(Fallback::Factory(Arc::new(move |cause: &Error| {
            C::into_api(make(cause))
        })));
        self
    }

    /// A callback for the client's [`Event`]s: circuit-breaker state changes
    /// and fallbacks taking over. It runs on the calling task, so keep it
    /// short (send to a channel, bump a metric).
    ///
    /// Default is none.
    pub fn on_event(
        mut self,
        callback: impl for<'e> Fn(&Event<'e>) + Send + Sync + 'static,
    ) -> Self {
        self.events = EventSink::new(callback);
        self
    }

    /// Where the instances of the service come from, by the trait's `name`.
    /// Calls are balanced over them ([`balance`](Self::balance)), a retry
    /// goes to another instance when there is one, and failing instances
    /// are ejected for a while ([`outlier_ejection`](Self::outlier_ejection)).
    /// An explicit [`base_url`](Self::base_url), or the trait's `url`, wins
    /// over discovery, as Feign's `url` does. The client must be built inside
    /// a tokio runtime: it follows the discovery's changes on a task.
    ///
    /// Default is none.
    pub fn discovery(mut self, discovery: impl Discovery) -> Self {
        self.discovery = Some(Arc::new(discovery));
        self
    }

    /// How calls are spread over discovered instances.
    ///
    /// Default is [`Balance::PeakEwma`] (power of two choices over peak-EWMA
    /// latency weighted by in-flight calls).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// When a discovered instance is ejected for failing.
    ///
    /// Default is [`OutlierEjection::default`]: 5 consecutive failures, 30 s
    /// × the times ejected, at most 300 s, at most half the set.
    pub fn outlier_ejection(mut self, ejection: OutlierEjection) -> Self {
        if ejection.consecutive_failures == 0 {
            self.fail(Error::builder(
                "outlier ejection needs at least 1 consecutive failure",
            ));
        }
        self.ejection = Some(ejection);
        self
    }

    /// Never ejects instances.
    ///
    /// Default is ejection on (see [`outlier_ejection`](Self::outlier_ejection)).
    pub fn no_outlier_ejection(mut self) -> Self {
        self.ejection = None;
        self
    }

    /// Resolves each method's policy and creates its breaker, bulkhead and
    /// rate limiter (or hands it the client's).
    fn methods(&self) -> Result<Box<[MethodRuntime]>, Error> {
        let def = C::DEF;
        let none = Overrides::NONE;
        let (source, section) = match &self.config {
            Some((source, section)) => (source.as_str(), Some(section)),
            None => ("", None),
        };
        if let Some(section) = section
            && let Some(unknown) = section
                .methods
                .keys()
                .find(|name| !def.methods.iter().any(|m| m.name == name.as_str()))
        {
            let known: Vec<_> = def.methods.iter().map(|m| m.name).collect();
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{source}: `clients.{}.methods.{unknown}`: the client has no method \
                     `{unknown}` (it has {})",
                    def.name,
                    known.join(", ")
                ),
            ));
        }
        let client_level = section.map_or(&none, |s| &s.overrides);
        // The limiter the methods share: one per built client.
        let shared_limiter = crate::policy::rate_limit(&[client_level, &def.policy])
            .filter(|r| r.per_second > 0)
            .map(|r| Arc::new(RateLimiter::new(r.per_second, r.burst)));
        let methods = def.methods.iter().map(|m| {
            let method_level = section.and_then(|s| s.methods.get(m.name)).unwrap_or(&none);
            let mut policy =
                MethodPolicy::resolve(m, &[method_level, &m.policy, client_level, &def.policy]);
            let limiter = match policy.rate_limit {
                None => None,
                Some(r) if r.per_second == 0 => {
                    // The config's fault if it is what switched the limit on.
                    let by_config = [method_level, client_level]
                        .iter()
                        .any(|l| l.get(Key::RateLimitEnabled) == Some(Value::Switch(true)));
                    let (kind, at) = if by_config {
                        (ErrorKind::Config, format!("{source}: "))
                    } else {
                        (ErrorKind::Builder, String::new())
                    };
                    return Err(Error::new(
                        kind,
                        format!(
                            "{at}the rate limit of `{}.{}` names no rate: set \
                             `rate_limit.per_second` (or `#[rate_limit(per_second = …)]`) \
                             on the method or the client",
                            def.name, m.name
                        ),
                    ));
                }
                Some(r) => {
                    // A method naming its own rate or burst gets its own
                    // limiter; otherwise it waits on the client's, and has
                    // none when the client's is switched off (a config's
                    // `rate_limit.disabled` at the client level is not
                    // undone by a method's `max_wait`).
                    let own = [method_level, &m.policy].iter().any(|level| {
                        level.get(Key::RateLimitPerSecond).is_some()
                            || level.get(Key::RateLimitBurst).is_some()
                    });
                    if own {
                        Some(Arc::new(RateLimiter::new(r.per_second, r.burst)))
                    } else {
                        let shared = shared_limiter.as_ref().map(Arc::clone);
                        if shared.is_none() {
                            policy.rate_limit = None; // what the snapshot shows
                        }
                        shared
                    }
                }
            };
            let probe = Probe::new(def.name, m, policy.log);
            let breaker = policy.circuit.map(|c| {
                probe.breaker_started();
                CircuitBreaker::new(def.name, m.name, c, self.events.clone())
            });
            let bulkhead = policy.bulkhead.map(|b| {
                probe.bulkhead(b.max_concurrent as usize, b.max_concurrent);
                Bulkhead::new(b)
            });
            Ok(MethodRuntime {
                def: m,
                verb: method_of(m.verb),
                breaker,
                bulkhead,
                limiter,
                policy,
                probe,
            })
        });
        methods.collect()
    }

    /// Builds the client.
    ///
    /// # Errors
    /// The first bad setting given to this builder, or a missing base URL, or
    /// a failure to create the HTTP client (all of kind
    /// [`ErrorKind::Builder`]); a config section naming a method the trait
    /// lacks ([`ErrorKind::Config`]).
    pub fn build(self) -> Result<C, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let def = C::DEF;
        let methods = self.methods()?;
        let target = match (self.base_url, def.url, self.discovery) {
            (Some(url), _, _) => fixed(url),
            (None, Some(url), _) => fixed(normalize_base_url(url)?),
            (None, None, Some(discovery)) => Target::Balanced(balancer(
                def.name,
                &*discovery,
                self.balance,
                self.ejection,
                self.events.clone(),
            )?),
            (None, None, None) => {
                return Err(Error::builder(format!(
                    "no base URL for service `{}`: call `.base_url(…)` or `.discovery(…)` \
                     on the builder, or set `url = \"…\"` in `#[client(…)]`",
                    def.name
                )));
            }
        };
        #[cfg(feature = "hyper-transport")]
        let hyper = match (self.hyper, &self.http_client, &target) {
            (Some(_), Some(_), _) => {
                return Err(Error::builder(
                    "`hyper_transport` and `http_client` name two transports: keep one",
                ));
            }
            (Some(hyper), None, target) => {
                let timeout = self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
                let base = match target {
                    Target::Fixed(base, _) => Some(&**base),
                    Target::Balanced(_) => None,
                };
                Some(Transport::Hyper(Box::new(hyper.build(timeout, base)?)))
            }
            (None, ..) => None,
        };
        #[cfg(not(feature = "hyper-transport"))]
        let hyper = None;
        let transport = match hyper {
            Some(hyper) => hyper,
            None => {
                // A client of the caller's may speak HTTP/2 to an `http://`
                // origin (prior knowledge), and follow redirects or resend
                // by itself: courier then leaves `Host` to it, and does not
                // take an HTTP/2 refusal through it for the refusal of the
                // request courier sent (`transport::unprocessed`).
                let (client, own) = match (self.http_client, self.connect_timeout) {
                    (Some(_), Some(_)) => {
                        return Err(Error::builder(
                            "`connect_timeout` would be ignored with `http_client`: \
                             set it on the reqwest::Client you pass instead",
                        ));
                    }
                    (Some(client), None) => (client, false),
                    (None, timeout) => (
                        new_http_client(timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))?,
                        true,
                    ),
                };
                let origin = match &target {
                    Target::Fixed(base, _) => crate::url::Origin::parse(base).map(Box::new),
                    Target::Balanced(_) => None,
                };
                Transport::Reqwest(client, origin, own)
            }
        };
        #[cfg_attr(not(feature = "auth"), allow(unused_mut))]
        let mut hooks = self.interceptors;
        #[cfg(feature = "auth")]
        if let Some(auth) = self.auth {
            // Last, so the client's own credentials win.
            // Token requests go through the client's reqwest pool; on the
            // hyper transport they get a reqwest client of their own, made
            // only for OAuth2 (the one credential that fetches).
            let connect_timeout = self.connect_timeout;
            let http = || match &transport {
                Transport::Reqwest(client, ..) => Ok(client.clone()),
                _ => new_http_client(connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)),
            };
            let hook = auth.into_hook(def, http, &self.events)?;
            hooks.push(Hook::Async(Arc::new(hook)));
        }
        // Whether a stack over the transport would be direct: no layer of
        // the caller's (one may follow redirects or resend) over a client
        // courier made (see `transport::unprocessed`).
        let direct = self.layers.is_empty()
            && match &transport {
                Transport::Reqwest(_, _, own) => *own,
                #[cfg(feature = "hyper-transport")]
                Transport::Hyper(_) => true,
                Transport::Layered(..) => false,
            };
        #[cfg_attr(not(feature = "decompression"), allow(unused_mut))]
        let mut layers = self.layers;
        #[cfg(feature = "decompression")]
        if self.decompression {
            // Added last, so innermost: the user's layers see decoded bodies.
            layers.push(boxed_layer(
                tower_http::decompression::DecompressionLayer::new(),
            ));
        }
        let transport = match layers.is_empty() {
            true => transport,
            false => {
                // The first layer added is the outermost: wrap in reverse.
                let mut service = transport.into_service();
                for layer in layers.into_iter().rev() {
                    service = layer(service);
                }
                Transport::Layered(service, direct)
            }
        };
        let shared = Shared {
            target,
            transport: transport::Settings {
                service: def.name,
                transport,
                default_headers: self.default_headers,
                hooks: hooks.into_boxed_slice(),
                max_response_bytes: self.max_response_bytes,
                redirects: self.redirects,
            },
            budget: self
                .budget
                .map(|(ratio, min)| RetryBudget::new(ratio, min, defaults::BUDGET_WINDOW)),
            events: self.events,
            watch: WatchHandle(Watch::new()),
        };
        let runtime = Runtime::new(shared, methods, self.fallback);
        #[cfg(feature = "dashboard")]
        crate::inspect::register(&runtime);
        Ok(C::from_runtime(runtime))
    }
}

/// A tower layer as a step of the transport stack: its service, with the
/// response body and error boxed so every step has one type.
fn boxed_layer<L, S, B>(layer: L) -> Box<dyn FnOnce(HttpService) -> HttpService + Send>
where
    L: tower::Layer<HttpService, Service = S> + Send + 'static,
    S: tower::Service<HttpRequest, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    Box::new(move |inner: HttpService| {
        let service = layer
            .layer(inner)
            .map_response(|response: http::Response<B>| {
                response.map(|body| body.map_err(Into::into).boxed_unsync())
            })
            .map_err(Into::into);
        HttpService::new(service)
    })
}

/// A balancer fed by `discovery`, kept up to date by a task on the current
/// runtime until the client (its last clone) is dropped or the discovery
/// closes its channel.
fn balancer(
    service: &'static str,
    discovery: &dyn Discovery,
    kind: Balance,
    ejection: Option<OutlierEjection>,
    events: EventSink,
) -> Result<Arc<Balancer>, Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::builder(
            "a client with discovery must be built inside a tokio runtime: \
             it follows the instance set on a task",
        )
    })?;
    Ok(Balancer::following(
        service,
        kind,
        ejection,
        discovery.subscribe(service),
        &runtime,
        events,
    ))
}

/// A fixed target, with its host and port parsed once.
fn fixed(url: String) -> Target {
    let server = Server::of(&url);
    Target::Fixed(url.into_boxed_str(), server)
}

fn new_http_client(connect_timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        // courier follows redirects itself (see `transport`), and never
        // sends a Referer: it would carry the original query string.
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        // reqwest retries HTTP/2 requests the service did not process, and
        // to that end clones every request before sending it (its headers,
        // about 700 instructions and two allocations per call, for a retry
        // that HTTP/1.1 never makes). Courier's retry stage retries those
        // answers instead (`transport::unprocessed`): no clone, and the
        // retries are counted, budgeted and observed like any other.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .build()
        .map_err(|e| Error::builder("could not create the HTTP client").with_source(e))
}

impl<C: ClientSpec> ClientBuilder<C> {
    fn transport_name(&self) -> &'static str {
        #[cfg(feature = "hyper-transport")]
        if self.hyper.is_some() {
            return "hyper-util";
        }
        "reqwest"
    }
}

impl<C: ClientSpec> fmt::Debug for ClientBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientBuilder");
        d.field("base_url", &self.base_url)
            .field("default_headers", &self.default_headers)
            .field("connect_timeout", &self.connect_timeout)
            .field("transport", &self.transport_name())
            .field("max_response_bytes", &self.max_response_bytes)
            .field("interceptors", &self.interceptors.len())
            .field("layers", &self.layers.len())
            .field("redirects", &self.redirects)
            .field("config", &self.config.as_ref().map(|(source, _)| source))
            .field("retry_budget", &self.budget)
            .field("fallback", &self.fallback)
            .field("discovery", &self.discovery.is_some())
            .field("balance", &self.balance);
        #[cfg(feature = "auth")]
        d.field("auth", &self.auth);
        d.field("error", &self.error).finish_non_exhaustive()
    }
}
