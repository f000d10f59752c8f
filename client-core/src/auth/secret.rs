//! [`Secret`]: a value that is never printed.

use std::fmt;

use zeroize::Zeroizing;

/// A secret (a client secret, an API key, a static token, an HMAC key):
/// `Debug` and `Display` print `[redacted]`, so it cannot reach a log, an
/// error or the `Debug` of a builder or client by accident. Its memory is
/// overwritten when it is dropped.
///
/// ```
/// use courier::auth::Secret;
///
/// let secret = Secret::new("s3cr3t");
/// assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
/// assert_eq!(secret.expose(), "s3cr3t");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// Reads the secret environment variable `name`: `None` when it is unset
    /// or not UTF-8.
    ///
    /// ```
    /// # use courier::auth::Secret;
    /// let secret = Secret::from_env("BILLING_CLIENT_SECRET");
    /// # let _ = secret;
    /// ```
    pub fn from_env(name: &str) -> Option<Self> {
        std::env::var(name).ok().map(Secret::new)
    }

    /// The secret itself. Named so that every place that reads it stands
    /// out in review.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}
