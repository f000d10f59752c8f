//! Hooks that see, and may change, every outgoing request.
//!
//! Like Feign's `RequestInterceptor`: an [`Interceptor`] runs once per
//! attempt, after the request is built from the call's arguments and before it
//! is sent. It can add or replace headers (authentication, tracing,
//! propagated context) or refuse the request. Interceptors run in the order
//! they were added to the builder. A plain closure is an interceptor too.
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

use std::fmt;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use crate::error::BoxError;
use crate::request::header_value;

/// A hook that runs on every outgoing request (once per attempt).
///
/// Returning an error stops the call before anything is sent; the call fails
/// with [`ErrorKind::Interceptor`](crate::ErrorKind::Interceptor) and your
/// error as its source.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a courier interceptor",
    note = "implement `courier::Interceptor`, or pass a closure \
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

/// The request an [`Interceptor`] sees: which call it belongs to, its URL, and
/// headers it may change.
pub struct Outgoing<'a> {
    pub(crate) request: &'a mut reqwest::Request,
    pub(crate) service: &'static str,
    pub(crate) method: &'static str,
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
        self.request.method()
    }

    /// The full URL about to be requested.
    pub fn url(&self) -> &url::Url {
        self.request.url()
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    /// The request headers, to change at will. Values inserted here are not
    /// checked beyond what [`HeaderValue`] guarantees; prefer
    /// [`set_header`](Self::set_header) for values built from strings.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.request.headers_mut()
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
        self.request.headers_mut().insert(name, value);
        Ok(())
    }
}

impl fmt::Debug for Outgoing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("http_method", self.request.method())
            .field("path", &self.request.url().path())
            .field("headers", self.request.headers())
            .finish()
    }
}
