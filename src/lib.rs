//! # courier
//!
//! A declarative, resilient service-to-service HTTP client. Describe another
//! service's HTTP API as a trait, annotate it with [`#[client]`](client), and
//! get a typed client: `<Trait>Client`, which implements the trait.
//!
//! ```no_run
//! use courier::{client, Error};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Deserialize)]
//! pub struct User { pub id: u64, pub name: String }
//!
//! #[derive(Serialize)]
//! pub struct NewUser<'a> { pub name: &'a str }
//!
//! #[client(name = "user-service", path = "/api/v1")]
//! pub trait Users {
//!     #[get("/users/{id}")]
//!     async fn get(&self, id: u64) -> Result<User, Error>;
//!
//!     #[get("/users")]
//!     async fn find(&self, #[query] name: &str, #[query("page")] page: Option<u32>)
//!         -> Result<Vec<User>, Error>;
//!
//!     #[post("/users")]
//!     async fn create(&self, #[body] user: &NewUser<'_>,
//!                     #[header("Idempotency-Key")] key: &str) -> Result<User, Error>;
//!
//!     #[get("/users/{id}")]
//!     async fn lookup(&self, id: u64) -> Result<Option<User>, Error>; // 404 -> None
//!
//!     #[delete("/users/{id}")]
//!     async fn delete(&self, id: u64) -> Result<(), Error>;
//! }
//!
//! # async fn demo() -> Result<(), Error> {
//! let users = UsersClient::builder()
//!     .base_url("http://127.0.0.1:8080")
//!     .build()?;
//! let alice = users.get(7).await?;
//! let nobody = users.lookup(404).await?;
//! assert!(nobody.is_none());
//!
//! // The trait is dyn-compatible: fakes and fallbacks are just other impls.
//! let api: std::sync::Arc<dyn Users> = std::sync::Arc::new(users);
//! # let _ = (alice, api);
//! # Ok(()) }
//! ```
//!
//! ## The trait
//!
//! `#[client(name = "…", path = "…", url = "…")]` comes **first** on the trait;
//! any other attribute of the trait follows it (Rust only lets the first
//! attribute macro see the ones after it).
//!
//! - `name` (required): the logical service name. It names the service in
//!   every error, and is the discovery key and the config key
//!   (`[clients.<name>]`).
//! - `path`: a prefix for every method's path (`/api/v1`).
//! - `url`: a default base URL; the builder's `base_url` overrides it.
//!
//! `<Trait>Client` also has each method as an inherent `async fn`, so a call
//! on the concrete client is not boxed (through `dyn Trait` it is, by
//! `async_trait`), and an inherent `builder()`; a trait method may therefore
//! not be called `builder`.
//!
//! The trait becomes `Send + Sync` and is rewritten by
//! [`async_trait`](macro@async_trait), so `Arc<dyn Trait>` works. To write
//! your own implementation (a fake for tests, a fallback), put
//! `#[courier::async_trait]` (or `#[async_trait::async_trait]`) on the impl.
//! A provided method (one with a body and no verb) is left to the trait, so
//! helpers built on the other methods are fine.
//!
//! ### Methods
//!
//! Every other method is `async fn name(&self, …) -> Result<T, E>` with one
//! verb: `#[get("/path")]`, `#[post]`, `#[put]`, `#[patch]`, `#[delete]`,
//! `#[head]`. `#[idempotent]` marks a POST or PATCH as safe to repeat.
//!
//! Path templates hold `{placeholders}`, each filled by the parameter of the
//! same name (or one marked `#[path("name")]`), which may be any `Display`
//! type. The value is percent-encoded as one segment: `/` becomes `%2F`,
//! a space `%20`, `?` and `#` are encoded; an empty value, `.` or `..` in a
//! whole segment is refused.
//!
//! ### Parameters
//!
//! | attribute             | goes to                                                          |
//! |-----------------------|------------------------------------------------------------------|
//! | (none)                | the `{placeholder}` with its name                                |
//! | `#[path("id")]`       | the `{id}` placeholder                                           |
//! | `#[query]`            | `?name=value` under the parameter's name; `Option` left out when `None`; `Vec`/slice repeated |
//! | `#[query("n")]`       | the same under the name `n`                                      |
//! | `#[query(format = "csv")]` | a sequence as one pair, `?id=1,2,3`                         |
//! | `#[query(map)]`       | a `Serialize` struct's fields as pairs, `?name=Ann&page.size=20` (`nested = "brackets"`: `page[size]=20`; see [`courier_core::query`]) |
//! | `#[header("Name")]`   | a header; `Option` left out when `None`; CR/LF/NUL refused       |
//! | `#[body]`             | the body, as JSON (`content-type: application/json`)             |
//! | `#[form]`             | the body, as `application/x-www-form-urlencoded`                 |
//!
//! Parameters may borrow (`&str`, `Option<&str>`, `&T`): the generated code
//! only reads them to build the request. A method has at most one body.
//!
//! ### Return types
//!
//! `Result<T, E>`, where `E` is [`Error`] or any type with
//! `From<courier::Error>`, and `T` is:
//!
//! | `T`                    | the answer                                                |
//! |------------------------|-----------------------------------------------------------|
//! | `()`                   | body ignored                                              |
//! | `String`               | the body as UTF-8 text                                    |
//! | `bytes::Bytes`         | the body as received                                      |
//! | `Option<U>`            | `404 Not Found` becomes `None`, otherwise `Some(U)`       |
//! | [`Response<U>`]        | status, headers and the body decoded as `U`               |
//! | any other type         | the body decoded from JSON                                |
//!
//! The choice is made from the type as written; a type alias hides it (an
//! alias of `String` is decoded as JSON). Any status other than 2xx is an
//! error of kind [`ErrorKind::Status`] (except 404 for `Option<U>`).
//!
//! Mistakes (an unknown attribute, a placeholder without a parameter, a
//! parameter used nowhere, two bodies, a method that is not
//! `async fn(&self, …)`, an unsupported return type, a malformed path) are
//! compile errors pointing at the offending token.
//!
//! ## Resilience, per method
//!
//! Attributes after `#[client]` on the trait set every method's default;
//! the same attribute on a method overrides it key by key:
//!
//! - `#[timeout("300ms")]`: the whole call, retries included (default 10 s);
//! - `#[retry(max_attempts = 3, backoff = "50ms..1s", on = [429, 502, 503, 504],
//!   attempt_timeout = "100ms")]` or `#[retry(disabled)]`: idempotent methods
//!   only (a method-level `#[retry]` on a POST without `#[idempotent]` is a
//!   compile error), capped by the client's retry budget;
//! - `#[circuit_breaker(window = 20, min_calls = 10, failure_rate = 50,
//!   slow_call = "2s", slow_call_rate = 100, open_for = "5s",
//!   half_open_calls = 3)]` or `#[circuit_breaker(disabled)]`: on by default,
//!   one per method, 4xx never count;
//! - `#[rate_limit(per_second = 100, burst = 100, max_wait = "0ms")]`: off
//!   by default; on the trait, one limiter shared by the client's methods
//!   (a method naming its own rate gets its own); a refusal is
//!   `is_rate_limited()`, nothing sent;
//! - `#[bulkhead(max_concurrent = 10, max_wait = "0ms")]`: off by default;
//! - `#[hedge(delay = "50ms", max_extra = 1)]`: off by default;
//! - `#[log(level = "basic", body_limit = 4096)]`: Feign's HTTP log levels
//!   (`none`, `basic`, `headers`, `full`), secrets masked;
//! - `#[compress(min_size = "1KiB")]`: off by default; request bodies of at
//!   least `min_size` sent gzip-compressed (`Content-Encoding: gzip`);
//! - `#[idempotent]`: a POST or PATCH that is safe to repeat.
//!
//! A [`Config`] file overrides any of them without recompiling, and the
//! builder's `.fallback(…)` answers for dependency failures. See [`policy`]
//! for the precedence and [`policy::classify`] for what counts as a failure.
//!
//! ```no_run
//! use courier::{client, Error, Inspect};
//!
//! #[client(name = "pricing")]
//! #[timeout("1s")]
//! #[retry(max_attempts = 2, backoff = "20ms..200ms")]
//! pub trait Pricing {
//!     #[get("/price/{sku}")]
//!     #[timeout("250ms")]
//!     async fn price(&self, sku: &str) -> Result<u64, Error>;
//! }
//!
//! struct ListPrice;
//!
//! #[courier::async_trait]
//! impl Pricing for ListPrice {
//!     async fn price(&self, _sku: &str) -> Result<u64, Error> { Ok(999) }
//! }
//!
//! # async fn demo() -> Result<(), Error> {
//! let pricing = PricingClient::builder()
//!     .base_url("http://pricing.internal:8080")
//!     .fallback(ListPrice)                 // on timeout, 5xx, open circuit, …
//!     .on_event(|e: &courier::Event<'_>| eprintln!("{e}"))
//!     .build()?;
//! let cents = pricing.price("sku-7").await?;
//! println!("{cents} ({:?})", pricing.circuit_state("price"));
//! # Ok(()) }
//! ```
//!
//! ## Discovery and balancing
//!
//! Instead of a base URL, `.discovery(…)` takes the instances of the
//! service (by the `#[client]` name) from a [`Discovery`]:
//! [`StaticDiscovery`], `discovery::dns::DnsDiscovery` (feature `dns`) or
//! `discovery::etcd::EtcdDiscovery` (feature `etcd`). Calls are spread by
//! power of two choices over peak-EWMA latency ([`Balance`]), a retry goes
//! to another instance, failing instances are ejected for a while
//! ([`OutlierEjection`]), and no instance at all is an error
//! ([`Error::is_no_instances`]) a fallback may answer. See [`balance`].
//!
//! ## The client
//!
//! `<Trait>Client::builder()` returns a [`ClientBuilder`]; see it for every
//! setting: the target, tower layers and interceptors (synchronous or
//! async) around the transport, the redirect policy ([`Redirects`]), the
//! size limit, config, retry budget, fallback. A client is cheap to clone,
//! and clones share one connection pool.
//!
//! ## Observing it
//!
//! Every call is a `tracing` span and every attempt an OpenTelemetry CLIENT
//! span named after the path template (`GET /api/v1/users/{id}`); with the
//! feature `opentelemetry` the trace continues into the called service
//! through `traceparent`. With the feature `metrics`, the `metrics` facade
//! gets the request-duration histogram and Resilience4j's families under
//! courier names. [`Inspect::snapshot`] reads every method's effective policy
//! and state. See [`observe`].
//!
//! ## Service identity
//!
//! With the feature `auth`, `.auth(…)` on the builder puts the client's
//! credentials on every attempt: a static bearer token or API key, OAuth2
//! client credentials (tokens cached, refreshed ahead, fetched once for any
//! number of waiting calls, resent once on a 401), or, with `jwt`, JWTs the
//! service mints itself; `#[auth(none)]` marks a public method. A failing
//! token endpoint is an [`ErrorKind::Auth`] error that never counts against
//! the called service. On the receiving side, `courier::auth::verify::VerifyJwt`
//! (feature `jwt`) is a tower layer that checks bearer JWTs against given keys
//! or a JWKS URL, and with `redis`, against revoked token ids in Redis.
//! [`context::ContextLayer`] (always available) carries an allow-list of the
//! inbound request's headers (`x-request-id`, `traceparent`, …) onto every
//! courier call made while serving it. See `courier::auth` and [`context`].
//!
//! ## Transports
//!
//! Calls go through reqwest by default. With the feature `hyper-transport`,
//! `.hyper_transport(transport::HyperTransport::new())` sends them through
//! hyper-util's pooled client straight on hyper instead: about half of
//! reqwest's client instructions per call, with the same policies, interceptors,
//! layers, redirects and errors, but no proxy, cookie or custom-TLS
//! settings.
//!
//! ## Testing against faults
//!
//! With the feature `testing`, `courier::testing::FaultServer` is a loopback
//! HTTP server, run inside the test's own runtime, that fails on purpose as
//! scripted (a hung service, a reset halfway through a body, a trickle, an
//! endless body, …) and counts the requests and connections it saw: a test
//! of a client's resilience asserts its attempts and errors in numbers.
//!
//! ## Errors
//!
//! Every failure is one [`Error`]: its [`kind`](Error::kind), the
//! [`status`](Error::status), predicates such as
//! [`is_timeout`](Error::is_timeout), and a `Display` naming the service,
//! the method, the verb and the path: `user-service#get (GET
//! /api/v1/users/7): unsuccessful status: service answered 503 Service
//! Unavailable`. Values of secret headers never appear in errors or `Debug`.

// Library code never unwraps: input and the network must not panic it.
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

pub use courier_core::{
    AsyncInterceptor, Balance, BodyStream, BoxError, CircuitState, ClientBuilder, ClientSnapshot,
    Config, Discovery, Error, ErrorKind, Event, Inspect, Instance, Interceptor, MethodPolicy,
    Outgoing, OutlierEjection, Redirects, Response, StaticDiscovery, balance, builder, codec,
    config, context, discovery, inspect, interceptor, multipart, observe, policy, request, spec,
    stream, transport,
};

#[cfg(feature = "auth")]
pub use courier_core::auth;

#[cfg(feature = "testing")]
pub use courier_core::testing;

#[cfg(feature = "dashboard")]
pub use courier_core::dashboard;

/// Turns an annotated trait into a typed HTTP client `<Trait>Client`.
///
/// See the [crate documentation](crate) for the attributes.
pub use courier_macros::client;

/// Re-exported for writing your own implementations of a client trait
/// (`#[courier::async_trait] impl Users for FakeUsers { … }`) and of
/// [`AsyncInterceptor`].
pub use courier_core::async_trait;

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// What generated code uses. Not public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use courier_core::__private::*;
    pub use courier_core::async_trait;
}
