//! Hooks that see, and may change, every outgoing request.
//!
//! Like Feign's `RequestInterceptor`: an interceptor runs once per attempt,
//! after the instance is picked (so it sees the final URL) and before the
//! request is sent. It can add or replace headers (authentication, tracing,
//! propagated context) or refuse the request. Interceptors run in the order
//! they were added to the builder.
//!
//! Two kinds, so that the common synchronous case costs no allocation:
//!
//! - [`Interceptor`]: synchronous; a plain closure is one too.
//! - [`AsyncInterceptor`]: may await (fetch an OAuth2 token, a signing key
//!   from a vault). Write `async fn intercept` under
//!   [`#[courier::async_trait]`](macro@async_trait::async_trait). Its
//!   future is boxed, once per attempt. An interceptor that takes longer
//!   than what is left of the call's deadline (or the attempt timeout) is cut
//!   by it like everything else; the call then fails with a timeout.
//!
//! ```
//! use courier::{Interceptor, Outgoing};
//!
//! struct Tenant(&'static str);
//!
//! impl Interceptor for Tenant {
//!     fn intercept(&self, request: &mut Outgoing<'_>) -> Result<(), courier::BoxError> {
//!         request.set_header("x-tenant", self.0)?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! ```
//! use courier::{AsyncInterceptor, Outgoing};
//!
//! struct Signed;
//!
//! #[courier::async_trait]
//! impl AsyncInterceptor for Signed {
//!     async fn intercept(&self, request: &mut Outgoing<'_>) -> Result<(), courier::BoxError> {
//!         let signature = tokio::task::yield_now().await; // fetch a key, say
//!         let _ = signature;
//!         request.set_header("x-signature", "…")?;
//!         Ok(())
//!     }
//! }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use crate::error::BoxError;
use crate::request::header_value;
use crate::{Error, ErrorKind};

/// A synchronous hook that runs on every outgoing request (once per
/// attempt).
///
/// Returning an error stops the call before anything is sent; the call fails
/// with [`ErrorKind::Interceptor`] and your
/// error as its source.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a courier interceptor",
    note = "implement `courier::Interceptor` (or `courier::AsyncInterceptor` and add it with \
            `async_interceptor`), or pass a closure \
            `|req: &mut courier::Outgoing<'_>| -> Result<(), courier::BoxError> {{ … }}`"
)]
pub trait Interceptor: Send + Sync + 'static {
    /// Inspects or changes the request about to be sent.
    ///
    /// # Errors
    /// Any error refuses the request; nothing is sent.
    fn intercept(&self, request: &mut Outgoing<'_>) -> Result<(), BoxError>;
}

impl<F> Interceptor for F
where
    F: Fn(&mut Outgoing<'_>) -> Result<(), BoxError> + Send + Sync + 'static,
{
    fn intercept(&self, request: &mut Outgoing<'_>) -> Result<(), BoxError> {
        self(request)
    }
}

/// A hook that may await, run on every outgoing request (once per attempt).
/// Implement it with `#[courier::async_trait]`; add it with
/// [`ClientBuilder::async_interceptor`](crate::ClientBuilder::async_interceptor).
///
/// Returning an error stops the call before anything is sent; the call fails
/// with [`ErrorKind::Interceptor`] and your
/// error as its source.
#[async_trait::async_trait]
pub trait AsyncInterceptor: Send + Sync + 'static {
    /// Inspects or changes the request about to be sent.
    ///
    /// # Errors
    /// Any error refuses the request; nothing is sent.
    async fn intercept(&self, request: &mut Outgoing<'_>) -> Result<(), BoxError>;
}

/// An interceptor of either kind, in the builder's list.
#[derive(Clone)]
pub(crate) enum Hook {
    Sync(Arc<dyn Interceptor>),
    Async(Arc<dyn AsyncInterceptor>),
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Sync(_) => "Interceptor",
            Hook::Async(_) => "AsyncInterceptor",
        })
    }
}

/// Runs every hook in order on `request`.
///
/// # Errors
/// The first refusal, as an [`ErrorKind::Interceptor`] error.
pub(crate) async fn run(hooks: &[Hook], request: &mut Outgoing<'_>) -> Result<(), Error> {
    for hook in hooks {
        let outcome = match hook {
            Hook::Sync(hook) => hook.intercept(request),
            Hook::Async(hook) => hook.intercept(request).await,
        };
        outcome.map_err(refusal)?;
    }
    Ok(())
}

/// The error of a hook that failed. Credentials that could not be had
/// (`.auth(…)`'s hook) keep their own kind, [`ErrorKind::Auth`]; anything
/// else is an interceptor's refusal with the hook's error as its source.
fn refusal(e: BoxError) -> Error {
    match e.downcast::<Error>() {
        Ok(ours) if ours.kind() == ErrorKind::Auth => *ours,
        Ok(ours) => Error::new(ErrorKind::Interceptor, "").with_source(*ours),
        Err(e) => Error::new(ErrorKind::Interceptor, "").with_source(e),
    }
}

// ===== what the hooks leave besides headers =====

/// Credentials that can be had again: asked on a 401 to drop the token of
/// `generation` (unless a newer one replaced it already).
#[cfg_attr(not(feature = "auth"), allow(dead_code))]
pub(crate) trait Refresh: Send + Sync + 'static {
    /// Drops the token of `generation`; true when sending the request again
    /// with a fresh one may succeed.
    fn refresh(&self, generation: u64) -> bool;
}

/// Which token a request was signed with, and who can replace it.
#[cfg_attr(not(feature = "auth"), allow(dead_code))]
pub(crate) struct Ticket {
    pub(crate) credential: Arc<dyn Refresh>,
    pub(crate) generation: u64,
}

/// What the hooks left on a request besides its headers: query parameters
/// to append (an API key in the URL) and, when refreshable credentials
/// signed it, their [`Ticket`].
#[derive(Default)]
pub(crate) struct Signed {
    query: String,
    ticket: Option<Ticket>,
}

impl Signed {
    /// The URL to send: `url` with the hooks' query parameters appended.
    #[inline]
    pub(crate) fn url<'u>(&self, url: &'u str) -> Cow<'u, str> {
        if self.query.is_empty() {
            return Cow::Borrowed(url);
        }
        let separator = if url.contains('?') { '&' } else { '?' };
        Cow::Owned(format!("{url}{separator}{}", self.query))
    }

    /// On a 401: drops the token the request carried; true when the request
    /// may be sent once more, with fresh credentials.
    pub(crate) fn refresh(&self) -> bool {
        self.ticket
            .as_ref()
            .is_some_and(|t| t.credential.refresh(t.generation))
    }
}

/// The request an interceptor sees: which call it belongs to, its URL, and
/// headers it may change.
pub struct Outgoing<'a> {
    pub(crate) http_method: &'a Method,
    pub(crate) url: &'a str,
    pub(crate) headers: &'a mut HeaderMap,
    pub(crate) service: &'static str,
    pub(crate) method: &'static str,
    pub(crate) signed: Signed,
}

impl<'a> Outgoing<'a> {
    pub(crate) fn new(
        http_method: &'a Method,
        url: &'a str,
        headers: &'a mut HeaderMap,
        service: &'static str,
        method: &'static str,
    ) -> Self {
        Outgoing {
            http_method,
            url,
            headers,
            service,
            method,
            signed: Signed::default(),
        }
    }

    /// What the hooks left besides headers.
    pub(crate) fn into_signed(self) -> Signed {
        self.signed
    }

    /// Appends `name=value`, each percent-encoded, to the query of the URL
    /// that is sent ([`url`](Self::url) does not show it: it may be a
    /// secret).
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) fn append_query(&mut self, name: &str, value: &str) {
        let query = &mut self.signed.query;
        if !query.is_empty() {
            query.push('&');
        }
        crate::url::push_encoded(query, name);
        query.push('=');
        crate::url::push_encoded(query, value);
    }

    /// Records which credentials signed the request, for a 401.
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) fn set_ticket(&mut self, ticket: Ticket) {
        self.signed.ticket = Some(ticket);
    }
}

impl Outgoing<'_> {
    /// The logical service name of the client (`#[client(name = …)]`).
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The name of the trait method being called.
    pub fn method_name(&self) -> &'static str {
        self.method
    }

    /// The HTTP method.
    pub fn http_method(&self) -> &Method {
        self.http_method
    }

    /// The full URL about to be requested (the picked instance's, with a
    /// discovery), query string included.
    pub fn url(&self) -> &str {
        self.url
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        self.headers
    }

    /// The request headers, to change at will. Values inserted here are not
    /// checked beyond what [`HeaderValue`] guarantees; prefer
    /// [`set_header`](Self::set_header) for values built from strings.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers
    }

    /// Sets (replaces) a header from strings, checking both name and value.
    /// Values of secret-bearing headers (`authorization`, `cookie`, names with
    /// `token`, `secret`, `api-key`…) are marked sensitive.
    ///
    /// # Errors
    /// When the name is not a valid header name, or the value holds CR, LF,
    /// NUL or another control character.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) -> Result<(), BoxError> {
        let name = HeaderName::try_from(name)
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        let value: HeaderValue = header_value(&name, value.into())?;
        self.headers.insert(name, value);
        Ok(())
    }
}

impl fmt::Debug for Outgoing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self
            .url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("/");
        let path = path.split(['?', '#']).next().unwrap_or(path);
        f.debug_struct("Outgoing")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("http_method", self.http_method)
            .field("path", &path)
            .field("headers", self.headers)
            .finish()
    }
}
