//! Service identity: credentials on every outgoing call (feature `auth`),
//! and, for the receiving side, a layer that verifies JWTs and checks
//! revocations (features `jwt` and `redis`).
//!
//! In a system of services, a call carries who is calling. A calling
//! service sets its credentials once, on the builder, and courier puts them
//! on every attempt:
//!
//! | credentials | made with | sent as |
//! |---|---|---|
//! | a static token | [`Auth::bearer`] | `Authorization: Bearer …` |
//! | an API key | [`Auth::api_key`] / [`Auth::api_key_query`] | a header, or a query parameter |
//! | OAuth2 client credentials (RFC 6749 §4.4) | [`OAuth2`] | a bearer token from the token endpoint, cached |
//! | a JWT the service signs itself (feature `jwt`) | [`ServiceJwt`](jwt::ServiceJwt) | a bearer JWT, minted and cached |
//!
//! ```no_run
//! use courier::auth::{OAuth2, Secret};
//! use courier::{client, Error};
//!
//! #[client(name = "ledger")]
//! pub trait Ledger {
//!     #[get("/entries/{id}")]
//!     async fn entry(&self, id: u64) -> Result<String, Error>;
//!
//!     #[get("/health")]
//!     #[auth(none)]                       // a public endpoint: no credentials
//!     async fn health(&self) -> Result<(), Error>;
//! }
//!
//! # fn demo() -> Result<(), Error> {
//! let ledger = LedgerClient::builder()
//!     .base_url("http://ledger.internal:8080")
//!     .auth(
//!         OAuth2::client_credentials(
//!             "https://auth.internal/oauth2/token",
//!             "billing",
//!             Secret::from_env("BILLING_CLIENT_SECRET").unwrap_or_else(|| Secret::new("dev")),
//!         )
//!         .scope("ledger.read")
//!         .audience("ledger"),
//!     )
//!     .build()?;
//! # let _ = ledger; Ok(()) }
//! ```
//!
//! ## Both sides, complete
//!
//! The README's "Service identity" example: `billing` calls `ledger` with
//! JWTs it mints and passes its callers' context on; `ledger` verifies them
//! against billing's published key and a revocation list in Redis (features
//! `jwt` and `redis`).
//!
//! ```no_run
//! use axum::{Extension, Router, routing::get};
//! use courier::auth::jwt::{ServiceJwt, SigningKey};
//! use courier::auth::revocation::RedisRevocations;
//! use courier::auth::verify::{Claims, Jwks, VerifyJwt};
//! use courier::auth::{OAuth2, Secret};
//! use courier::context::ContextLayer;
//! use courier::{Error, client};
//! use http::HeaderName;
//!
//! #[client(name = "ledger")]
//! pub trait Ledger {
//!     #[get("/entries/{id}")]
//!     async fn entry(&self, id: u64) -> Result<String, Error>;
//!
//!     #[get("/health")]
//!     #[auth(none)]                                   // public: sent without credentials
//!     async fn health(&self) -> Result<(), Error>;
//! }
//!
//! /// billing: calls the ledger on behalf of its own callers.
//! async fn billing() -> Result<Router, Error> {
//!     // A key of its own, published for the ledger to verify with.
//!     let key = SigningKey::generate_es256()?.with_key_id("billing-1");
//!     let jwks = key.jwks()?;
//!     let ledger = LedgerClient::builder()
//!         .base_url("http://ledger.internal:8080")
//!         .auth(ServiceJwt::new("billing", key))      // iss billing, aud ledger, 5 min, jti
//!         .build()?;
//!     // …or tokens from an OAuth2 authorization server instead:
//!     let _via_oauth2 = LedgerClient::builder()
//!         .base_url("http://ledger.internal:8080")
//!         .auth(
//!             OAuth2::client_credentials(
//!                 "https://auth.internal/oauth2/token",
//!                 "billing",
//!                 Secret::from_env("BILLING_CLIENT_SECRET").unwrap_or_else(|| Secret::new("dev")),
//!             )
//!             .scope("ledger.read"),
//!         )
//!         .build()?;
//!
//!     Ok(Router::new()
//!         .route(
//!             "/invoices/{id}",
//!             get(move || async move {
//!                 // Carries the caller's x-request-id, traceparent, baggage and
//!                 // x-user-id, and billing's own JWT.
//!                 ledger.entry(7).await.unwrap_or_else(|e| e.to_string())
//!             }),
//!         )
//!         .layer(ContextLayer::new().allow(HeaderName::from_static("x-user-id")))
//!         .route("/.well-known/jwks.json", get(move || async move { jwks })))
//! }
//!
//! /// The ledger: lets in valid, unrevoked JWTs meant for it.
//! fn ledger() -> Result<Router, Error> {
//!     let verify = VerifyJwt::new(
//!         Jwks::new("http://billing.internal:8080/.well-known/jwks.json")?,
//!         "ledger",
//!     )
//!     .issuer("billing")
//!     .revocations(RedisRevocations::new("redis://127.0.0.1:6379")?); // 503 if Redis is down
//!     Ok(Router::new()
//!         .route(
//!             "/entries/{id}",
//!             get(|Extension(claims): Extension<Claims>| async move {
//!                 format!("entry for {}", claims.subject().unwrap_or("?"))
//!             }),
//!         )
//!         .layer(verify)
//!         .route("/health", get(|| async { "ok" })))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let (billing, ledger) = (billing().await?, ledger()?);
//!     let ledger_port = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     tokio::spawn(async move { axum::serve(ledger_port, ledger).await });
//!     let billing_port = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//!     axum::serve(billing_port, billing).await?;
//!     Ok(())
//! }
//! ```
//!
//! ## Where credentials go in a call
//!
//! Credentials are an async interceptor (see [`crate::interceptor`]) that
//! runs on every attempt after the instance is picked, and after the
//! interceptors you added: what `.auth(…)` sets wins over a header an
//! interceptor set or one propagated from the request being served
//! ([`crate::context`]). A method marked `#[auth(none)]` is sent without
//! them. A redirect to another origin never carries them.
//!
//! ## Tokens
//!
//! Tokens (OAuth2, minted JWTs) are cached per built client (its clones
//! share them):
//!
//! - **Skew.** A token is dropped shortly before it expires (30 s by
//!   default, at most half its lifetime): the call still has to travel, and
//!   clocks differ.
//! - **Refresh ahead.** Once three quarters of its usable life are gone, the
//!   next call starts a fetch in the background and goes on with the current
//!   token: no call waits for a token endpoint while a token is valid.
//! - **Single-flight.** When there is no valid token, the first call starts
//!   one fetch and every call that comes while it runs waits for that same
//!   answer: 100 concurrent calls after expiry cost one token request. The
//!   fetch runs on a task of its own, so a call whose deadline ends while it
//!   waits does not abort it.
//! - **Failures are shared, not cached.** Every waiting call gets the
//!   fetch's error; the next call starts a new fetch. A failed refresh
//!   ahead keeps the current, still valid token.
//!
//! When the service answers **401** to a
//! token, the token is dropped and the request sent once more with a fresh
//! one, whatever its verb (a 401 is refused before processing), never more
//! than once; a static token or key gets no second try (it would be the
//! same). A token endpoint that fails fails the call with
//! [`ErrorKind::Auth`](crate::ErrorKind::Auth) ([`Error::is_auth`](crate::Error::is_auth)),
//! naming the endpoint and the OAuth2 `error` code: it is not the called
//! service's failure, so it counts nothing on that service's circuit
//! breaker, is not retried by the retry policy, and no fallback answers
//! for it (see [`crate::policy::classify`]).
//!
//! ## Secrets
//!
//! Secrets are held in [`Secret`], whose `Debug` and `Display` print
//! `[redacted]`; tokens are kept as header values marked sensitive. No
//! secret or token appears in an error, an event, or the `Debug` of a
//! builder, a client or a credential.

pub mod oauth2;
mod secret;
mod token;

#[cfg(feature = "jwt")]
pub mod jwt;
#[cfg(feature = "jwt")]
pub mod revocation;
#[cfg(feature = "jwt")]
pub mod verify;

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use http::header::{AUTHORIZATION, HeaderName};

use crate::interceptor::{AsyncInterceptor, Outgoing, Ticket};
use crate::observe::EventSink;
use crate::request::header_value;
use crate::spec::ClientDef;
use crate::{BoxError, Error};

pub use oauth2::OAuth2;
pub use secret::Secret;
use token::TokenCache;

/// Credentials for [`ClientBuilder::auth`](crate::ClientBuilder::auth):
/// made with [`Auth::bearer`], [`Auth::api_key`], [`Auth::api_key_query`],
/// or from an [`OAuth2`] or a [`ServiceJwt`](jwt::ServiceJwt).
///
/// ```
/// use courier::auth::{Auth, Secret};
///
/// let static_token = Auth::bearer(Secret::new("t-42"));
/// let key_in_a_header = Auth::api_key("x-api-key", "k-7");
/// let key_in_the_query = Auth::api_key_query("api_key", "k-7");
/// println!("{static_token:?}"); // Bearer([redacted])
/// # let _ = (key_in_a_header, key_in_the_query);
/// ```
#[derive(Clone)]
pub struct Auth(Result<Kind, String>);

#[derive(Clone)]
enum Kind {
    Header(HeaderName, HeaderValue),
    Query(String, Secret),
    OAuth2(Box<OAuth2>),
    #[cfg(feature = "jwt")]
    Jwt(Box<jwt::ServiceJwt>),
}

impl Auth {
    /// A static bearer token: `Authorization: Bearer <token>`.
    pub fn bearer(token: impl Into<Secret>) -> Auth {
        let token = token.into();
        Auth::header_value(AUTHORIZATION, &format!("Bearer {}", token.expose()))
    }

    /// An API key in the header `name` (`x-api-key`, say). Its value is
    /// marked sensitive whatever the name.
    pub fn api_key(name: &str, key: impl Into<Secret>) -> Auth {
        match HeaderName::try_from(name) {
            Ok(name) => Auth::header_value(name, key.into().expose()),
            Err(_) => Auth(Err(format!(
                "auth: `{name}` is not a valid header name for an API key"
            ))),
        }
    }

    /// An API key in the query parameter `name` (`?api_key=…`), for services
    /// that take it nowhere else. A header is safer: a query string ends up
    /// in access logs. courier itself never shows it (errors name the path
    /// only).
    pub fn api_key_query(name: &str, key: impl Into<Secret>) -> Auth {
        if name.is_empty() {
            return Auth(Err(
                "auth: the API key's query parameter needs a name".into()
            ));
        }
        Auth(Ok(Kind::Query(name.to_owned(), key.into())))
    }

    fn header_value(name: HeaderName, value: &str) -> Auth {
        match header_value(&name, value.to_owned()) {
            Ok(mut value) => {
                value.set_sensitive(true);
                Auth(Ok(Kind::Header(name, value)))
            }
            // Never echo the value: it is the secret.
            Err(_) => Auth(Err(format!(
                "auth: the value for `{name}` holds a character a header cannot carry \
                 (CR, LF, NUL or another control character)"
            ))),
        }
    }

    /// The hook a built client runs, bound to its service and HTTP client.
    pub(crate) fn into_hook(
        self,
        def: &'static ClientDef,
        http: impl FnOnce() -> Result<reqwest::Client, Error>,
        events: &EventSink,
    ) -> Result<AuthHook, Error> {
        let kind = self.0.map_err(Error::builder)?;
        let credential = match kind {
            Kind::Header(name, value) => Credential::Header(name, value),
            Kind::Query(name, key) => Credential::Query(name, key),
            Kind::OAuth2(oauth2) => {
                let skew = oauth2.skew();
                Credential::Token(TokenCache::new(
                    oauth2.source(def.name, http()?, events.clone())?,
                    skew,
                ))
            }
            #[cfg(feature = "jwt")]
            Kind::Jwt(jwt) => {
                let skew = jwt.skew();
                Credential::Token(TokenCache::new(jwt.source(def.name)?, skew))
            }
        };
        let public = def
            .methods
            .iter()
            .filter(|m| !m.auth)
            .map(|m| m.name)
            .collect();
        Ok(AuthHook { credential, public })
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(Kind::Header(name, _)) if name == AUTHORIZATION => f.write_str("Bearer([redacted])"),
            Ok(Kind::Header(name, _)) => write!(f, "ApiKey({name}: [redacted])"),
            Ok(Kind::Query(name, _)) => write!(f, "ApiKeyQuery({name}=[redacted])"),
            Ok(Kind::OAuth2(oauth2)) => fmt::Debug::fmt(oauth2, f),
            #[cfg(feature = "jwt")]
            Ok(Kind::Jwt(jwt)) => fmt::Debug::fmt(jwt, f),
            Err(problem) => write!(f, "Invalid({problem:?})"),
        }
    }
}

impl From<OAuth2> for Auth {
    fn from(oauth2: OAuth2) -> Self {
        Auth(Ok(Kind::OAuth2(Box::new(oauth2))))
    }
}

#[cfg(feature = "jwt")]
impl From<jwt::ServiceJwt> for Auth {
    fn from(jwt: jwt::ServiceJwt) -> Self {
        Auth(Ok(Kind::Jwt(Box::new(jwt))))
    }
}

// ===== the hook =====

/// Credentials bound to a built client.
enum Credential {
    Header(HeaderName, HeaderValue),
    Query(String, Secret),
    Token(Arc<TokenCache>),
}

/// The interceptor `.auth(…)` adds, last of the client's hooks.
pub(crate) struct AuthHook {
    credential: Credential,
    /// Methods marked `#[auth(none)]`.
    public: Box<[&'static str]>,
}

#[async_trait::async_trait]
impl AsyncInterceptor for AuthHook {
    async fn intercept(&self, request: &mut Outgoing<'_>) -> Result<(), BoxError> {
        let method = request.method_name();
        if self.public.contains(&method) {
            return Ok(());
        }
        match &self.credential {
            Credential::Header(name, value) => {
                request.headers_mut().insert(name.clone(), value.clone());
            }
            Credential::Query(name, key) => request.append_query(name, key.expose()),
            Credential::Token(cache) => {
                let token = cache.get().await?;
                request
                    .headers_mut()
                    .insert(AUTHORIZATION, token.header.clone());
                request.set_ticket(Ticket {
                    credential: Arc::clone(cache) as _,
                    generation: token.generation,
                });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for AuthHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.credential {
            Credential::Header(name, _) => name.as_str(),
            Credential::Query(..) => "query",
            Credential::Token(_) => "token",
        };
        f.debug_struct("Auth")
            .field("credential", &kind)
            .field("public_methods", &self.public)
            .finish()
    }
}
