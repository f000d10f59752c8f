//! OAuth2 client credentials (RFC 6749 §4.4): a service asks the
//! authorization server's token endpoint for an access token in its own
//! name, and sends it as a bearer token (RFC 6750).
//!
//! ## Why not the `oauth2` crate
//!
//! The `oauth2` crate (5.0) sends through its own reqwest 0.12 (its
//! `reqwest` feature), a second HTTP stack next to courier's reqwest 0.13;
//! without that feature it takes any async function as its client, so it
//! would fit. What it would do here is build a form and parse a JSON
//! answer, about sixty lines; what the issue needs around that it does not
//! have (the cache, single-flight, the 401 resend, `private_key_jwt`
//! assertions, an audience), and it would bring chrono, rand 0.8, sha2 and
//! serde_path_to_error for it. So the RFC is spoken here, through the
//! client's own reqwest client (its TLS roots, proxy and pool; not through
//! the client's tower layers, which wrap calls to the service).
//!
//! ## The exchange
//!
//! `POST` to the token URL, `application/x-www-form-urlencoded`:
//! `grant_type=client_credentials`, `scope` (space-separated), `audience`
//! (Auth0, Okta and others), `resource` (RFC 8707) and any extra parameter;
//! the client authenticates with HTTP Basic (`client_secret_basic`, the
//! default: RFC 6749 §2.3.1 says servers must support it; id and secret are
//! form-encoded first, as it requires), in the form (`client_secret_post`)
//! or with a JWT it signs (`private_key_jwt`, RFC 7523 §2.2, feature
//! `jwt`). The answer is JSON: `access_token`, `token_type` (must be
//! `Bearer` when given), `expires_in` (seconds; a number or a numeric
//! string; when absent, [`OAuth2::default_lifetime`]). An error answer's
//! `error` code (RFC 6749 §5.2: `invalid_client`, `invalid_scope`, …) is
//! named in the call's error; its `error_description` is not (it is the
//! server's text, of any length). The answer's body is never quoted: it may
//! hold a token.
//!
//! The token request has its own timeout ([`OAuth2::token_timeout`], 5 s),
//! and a caller never waits past its call's deadline for it: the request
//! runs on a task of its own, so a call cut short does not waste the token
//! it was fetching.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use super::Secret;
use super::token::{Fresh, Source};
use crate::Error;
use crate::observe::{Event, EventSink};

/// The largest token endpoint answer read: 64 KiB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// OAuth2 client credentials: give it to
/// [`ClientBuilder::auth`](crate::ClientBuilder::auth). See the
/// [module docs](self).
///
/// ```no_run
/// use courier::auth::{OAuth2, Secret};
///
/// let oauth2 = OAuth2::client_credentials(
///     "https://auth.example.com/oauth2/token",
///     "billing-service",
///     Secret::new("s3cr3t"),
/// )
/// .scopes(["ledger.read", "ledger.write"])
/// .audience("https://ledger.example.com")
/// .param("tenant", "eu-1")
/// .token_timeout(std::time::Duration::from_secs(2));
/// println!("{oauth2:?}"); // the secret prints as [redacted]
/// ```
#[derive(Clone)]
pub struct OAuth2 {
    token_url: Result<url::Url, String>,
    client_id: String,
    client_auth: ClientAuth,
    scopes: Vec<String>,
    audience: Option<String>,
    resources: Vec<String>,
    params: Vec<(String, String)>,
    token_timeout: Duration,
    skew: Duration,
    default_lifetime: Duration,
}

/// How the client proves who it is to the token endpoint.
#[derive(Clone)]
enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret.
    SecretBasic(Secret),
    /// `client_id` and `client_secret` in the form.
    SecretPost(Secret),
    /// A JWT signed with the client's key (RFC 7523).
    #[cfg(feature = "jwt")]
    PrivateKeyJwt(super::jwt::SigningKey),
}

impl OAuth2 {
    /// Client credentials with a client secret, sent with HTTP Basic
    /// (`client_secret_basic`; see
    /// [`client_secret_post`](Self::client_secret_post)). An invalid token
    /// URL (not absolute `http(s)`, or with credentials or a fragment) is
    /// reported by the client builder's `build()`.
    pub fn client_credentials(
        token_url: impl AsRef<str>,
        client_id: impl Into<String>,
        client_secret: impl Into<Secret>,
    ) -> Self {
        OAuth2::with(
            token_url.as_ref(),
            client_id.into(),
            ClientAuth::SecretBasic(client_secret.into()),
        )
    }

    /// Client credentials where the client authenticates with a JWT it
    /// signs (`private_key_jwt`, RFC 7523 §2.2): `iss` and `sub` are the
    /// client id, `aud` the token URL, with a unique `jti` and a one-minute
    /// lifetime, signed with `key` (its `kid` in the header).
    ///
    /// ```
    /// # fn demo() -> Result<(), courier::Error> {
    /// use courier::auth::OAuth2;
    /// use courier::auth::jwt::SigningKey;
    ///
    /// let key = SigningKey::generate_es256()?.with_key_id("billing-2024");
    /// let oauth2 = OAuth2::private_key_jwt("https://auth.example.com/token", "billing", key);
    /// # let _ = oauth2; Ok(()) }
    /// ```
    #[cfg(feature = "jwt")]
    pub fn private_key_jwt(
        token_url: impl AsRef<str>,
        client_id: impl Into<String>,
        key: super::jwt::SigningKey,
    ) -> Self {
        OAuth2::with(
            token_url.as_ref(),
            client_id.into(),
            ClientAuth::PrivateKeyJwt(key),
        )
    }

    fn with(token_url: &str, client_id: String, client_auth: ClientAuth) -> Self {
        OAuth2 {
            token_url: check_token_url(token_url),
            client_id,
            client_auth,
            scopes: Vec::new(),
            audience: None,
            resources: Vec::new(),
            params: Vec::new(),
            token_timeout: Duration::from_secs(5),
            skew: Duration::from_secs(30),
            default_lifetime: Duration::from_secs(300),
        }
    }

    /// Sends the client id and secret in the form body
    /// (`client_secret_post`) instead of HTTP Basic. No effect with
    /// `private_key_jwt`.
    ///
    /// Default is HTTP Basic (`client_secret_basic`).
    pub fn client_secret_post(mut self) -> Self {
        if let ClientAuth::SecretBasic(secret) = self.client_auth {
            self.client_auth = ClientAuth::SecretPost(secret);
        }
        self
    }

    /// Asks for `scope` too (scopes are sent space-separated).
    ///
    /// Default is none (the server's default scope).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Asks for each of `scopes` too.
    ///
    /// Default is none.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// The `audience` parameter: the API the token is for (Auth0, Okta,
    /// Keycloak's token exchange and others name it so).
    ///
    /// Default is none.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// A `resource` parameter (RFC 8707): the URI of the service the token
    /// is for; may be given several times.
    ///
    /// Default is none.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// Any other form parameter of the token request.
    ///
    /// Default is none.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// How long a token request may take before it fails with
    /// [`ErrorKind::Auth`](crate::ErrorKind::Auth). A call's own deadline
    /// still bounds how long the call waits for it.
    ///
    /// Default is 5 s.
    pub fn token_timeout(mut self, timeout: Duration) -> Self {
        self.token_timeout = timeout;
        self
    }

    /// How long before its expiry a token is no longer used (at most half
    /// its lifetime).
    ///
    /// Default is 30 s.
    pub fn expiry_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// How long a token is taken to be valid when the answer has no
    /// `expires_in`.
    ///
    /// Default is 5 minutes.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    pub(crate) fn skew(&self) -> Duration {
        self.skew
    }

    /// The token source for a built client of `service`.
    pub(crate) fn source(
        &self,
        service: &'static str,
        http: reqwest::Client,
        events: EventSink,
    ) -> Result<TokenEndpoint, Error> {
        let url = self.token_url.clone().map_err(Error::builder)?;
        let mut endpoint = url.clone();
        endpoint.set_query(None);
        #[cfg(feature = "jwt")]
        if let ClientAuth::PrivateKeyJwt(key) = &self.client_auth {
            // A key that cannot sign fails the build, not the first call.
            super::jwt::client_assertion(key, &self.client_id, url.as_str())
                .map_err(|e| Error::builder(format!("auth: private_key_jwt: {e}")))?;
        }
        Ok(TokenEndpoint(Arc::new(Endpoint {
            url,
            endpoint: endpoint.to_string(),
            oauth2: self.clone(),
            service,
            http,
            events,
        })))
    }

    /// The form of a token request, and the Basic credentials if any.
    fn form(&self, url: &str) -> Result<(String, Option<HeaderValue>), Error> {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        let scope = self.scopes.join(" ");
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        if let Some(audience) = &self.audience {
            form.push(("audience", audience));
        }
        for resource in &self.resources {
            form.push(("resource", resource));
        }
        for (name, value) in &self.params {
            form.push((name, value));
        }
        #[cfg(not(feature = "jwt"))]
        let _ = url;
        #[cfg(feature = "jwt")]
        let assertion;
        let basic = match &self.client_auth {
            ClientAuth::SecretBasic(secret) => {
                // RFC 6749 §2.3.1: form-encode id and secret, then Base64.
                let pair = format!(
                    "{}:{}",
                    form_encode(&self.client_id),
                    form_encode(secret.expose())
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
                    .map_err(|_| Error::auth("the client id cannot be sent in a header"))?;
                value.set_sensitive(true);
                Some(value)
            }
            ClientAuth::SecretPost(secret) => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret.expose()));
                None
            }
            #[cfg(feature = "jwt")]
            ClientAuth::PrivateKeyJwt(key) => {
                assertion = super::jwt::client_assertion(key, &self.client_id, url)?;
                form.push(("client_id", &self.client_id));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                form.push(("client_assertion", assertion.expose()));
                None
            }
        };
        let body = serde_urlencoded::to_string(&form)
            .map_err(|e| Error::auth("the token request could not be encoded").with_source(e))?;
        Ok((body, basic))
    }
}

impl fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match &self.client_auth {
            ClientAuth::SecretBasic(_) => "client_secret_basic",
            ClientAuth::SecretPost(_) => "client_secret_post",
            #[cfg(feature = "jwt")]
            ClientAuth::PrivateKeyJwt(_) => "private_key_jwt",
        };
        let url = match &self.token_url {
            Ok(url) => url.as_str(),
            Err(_) => "(invalid)",
        };
        f.debug_struct("OAuth2")
            .field("token_url", &url)
            .field("client_id", &self.client_id)
            .field("client_auth", &method)
            .field("client_secret", &"[redacted]")
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("resources", &self.resources)
            .field(
                "params",
                &self.params.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("token_timeout", &self.token_timeout)
            .finish()
    }
}

fn check_token_url(raw: &str) -> Result<url::Url, String> {
    let invalid = |why: &str| format!("auth: the OAuth2 token URL {why}");
    let url = url::Url::parse(raw).map_err(|_| invalid("is not a valid URL"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid("must be an absolute http:// or https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not hold credentials"));
    }
    if url.fragment().is_some() {
        return Err(invalid("must not have a fragment"));
    }
    Ok(url)
}

fn form_encode(value: &str) -> String {
    serde_urlencoded::to_string([("", value)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

// ===== the token endpoint as a source =====

/// A token endpoint bound to a built client.
#[derive(Clone)]
pub(crate) struct TokenEndpoint(Arc<Endpoint>);

struct Endpoint {
    url: url::Url,
    /// The URL without its query, as errors name it.
    endpoint: String,
    oauth2: OAuth2,
    service: &'static str,
    http: reqwest::Client,
    events: EventSink,
}

impl Source for TokenEndpoint {
    fn fetch(&self) -> BoxFuture<'static, Result<Fresh, Error>> {
        let endpoint = Arc::clone(&self.0);
        Box::pin(async move {
            let result =
                match tokio::time::timeout(endpoint.oauth2.token_timeout, endpoint.request()).await
                {
                    Ok(result) => result,
                    Err(_) => Err(Failed::new(format!(
                        "did not answer within {:?} (token_timeout)",
                        endpoint.oauth2.token_timeout
                    ))),
                };
            result.map_err(|failed| {
                endpoint.events.emit(&Event::TokenRequestFailed {
                    service: endpoint.service,
                    endpoint: &endpoint.endpoint,
                    code: failed.code.as_deref(),
                });
                let error = Error::auth(format!(
                    "token endpoint {}: {}",
                    endpoint.endpoint, failed.what
                ));
                match failed.cause {
                    Some(cause) => error.with_source(cause),
                    None => error,
                }
            })
        })
    }
}

/// Why a token request failed, before it becomes an [`Error`].
struct Failed {
    what: String,
    code: Option<String>,
    cause: Option<crate::BoxError>,
}

impl Failed {
    fn new(what: impl Into<String>) -> Self {
        Failed {
            what: what.into(),
            code: None,
            cause: None,
        }
    }
}

/// A successful answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct Granted {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
}

/// An error answer (RFC 6749 §5.2).
#[derive(Deserialize)]
struct Refused {
    error: Option<String>,
}

impl Endpoint {
    async fn request(&self) -> Result<Fresh, Failed> {
        let (body, basic) = self
            .oauth2
            .form(self.url.as_str())
            .map_err(|e| Failed::new(e.to_string()))?;
        let mut request = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(body);
        if let Some(basic) = basic {
            request = request.header(AUTHORIZATION, basic);
        }
        let mut response = request.send().await.map_err(|e| {
            let what = if e.is_connect() {
                "could not connect"
            } else {
                "the request failed"
            };
            Failed {
                cause: Some(Box::new(e.without_url())),
                ..Failed::new(what)
            }
        })?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| Failed {
            cause: Some(Box::new(e.without_url())),
            ..Failed::new(format!("answered {status}, and its body broke off"))
        })? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Failed::new(format!(
                    "answered {status} with a body over {MAX_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            self.granted(status, &body)
        } else {
            Err(refused(status, &body))
        }
    }

    fn granted(&self, status: StatusCode, body: &[u8]) -> Result<Fresh, Failed> {
        let granted: Granted = serde_json::from_slice(body).map_err(|_| {
            Failed::new(format!(
                "answered {status} with a body that is not a token response (JSON with an \
                 access_token)"
            ))
        })?;
        let token = granted
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failed::new(format!("answered {status} without an access_token")))?;
        if let Some(kind) = &granted.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            let shown = if is_code(kind) { kind.as_str() } else { "?" };
            return Err(Failed::new(format!(
                "answered a token of type `{shown}`; only Bearer tokens are supported"
            )));
        }
        let mut header = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            Failed::new(format!(
                "answered {status} with an access_token that cannot be sent in a header"
            ))
        })?;
        header.set_sensitive(true);
        let lifetime = granted
            .expires_in
            .as_ref()
            .and_then(seconds)
            .unwrap_or(self.oauth2.default_lifetime);
        Ok(Fresh { header, lifetime })
    }
}

/// The failure for an answer that is not a success: its status and, when
/// the body is an RFC 6749 error, its `error` code.
fn refused(status: StatusCode, body: &[u8]) -> Failed {
    let code = serde_json::from_slice::<Refused>(body)
        .ok()
        .and_then(|r| r.error)
        .filter(|code| is_code(code));
    let what = match &code {
        Some(code) => format!("answered {status}: {code}"),
        None => format!("answered {status}"),
    };
    Failed {
        code,
        ..Failed::new(what)
    }
}

/// An OAuth2 error code as RFC 6749 §5.2 allows it (printable ASCII but `"`
/// and `\`), and short: anything else is not shown.
fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// `expires_in` as a duration: a number of seconds, or a numeric string
/// (some servers send one); negative is 0; absurd values are capped later.
fn seconds(value: &serde_json::Value) -> Option<Duration> {
    let secs = match value {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !secs.is_finite() {
        return None;
    }
    Some(Duration::from_secs_f64(
        secs.clamp(0.0, 10.0 * 365.0 * 24.0 * 3600.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basic_credentials_are_form_encoded_first() {
        let oauth2 = OAuth2::client_credentials("http://a/token", "id:with space", "s&e:c");
        let (body, basic) = oauth2.form("http://a/token").unwrap_or_default();
        assert_eq!(body, "grant_type=client_credentials");
        let basic = basic.map(|b| b.to_str().map(str::to_owned).unwrap_or_default());
        let decoded = basic
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim_start_matches("Basic "))
                    .ok()
            })
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        assert_eq!(decoded.as_deref(), Some("id%3Awith+space:s%26e%3Ac"));
    }

    #[test]
    fn the_form_carries_scopes_audience_resources_and_params() {
        let oauth2 = OAuth2::client_credentials("http://a/token", "billing", "s")
            .client_secret_post()
            .scopes(["a", "b"])
            .audience("ledger")
            .resource("https://ledger/")
            .param("tenant", "eu 1");
        let (body, basic) = oauth2.form("http://a/token").unwrap_or_default();
        assert!(basic.is_none());
        assert_eq!(
            body,
            "grant_type=client_credentials&scope=a+b&audience=ledger&\
             resource=https%3A%2F%2Fledger%2F&tenant=eu+1&client_id=billing&client_secret=s"
        );
    }

    #[test]
    fn error_codes_are_shown_only_when_they_are_codes() {
        let failed = refused(StatusCode::UNAUTHORIZED, br#"{"error":"invalid_client"}"#);
        assert_eq!(failed.code.as_deref(), Some("invalid_client"));
        assert_eq!(failed.what, "answered 401 Unauthorized: invalid_client");
        let hostile = refused(StatusCode::BAD_REQUEST, b"{\"error\":\"a\\nb\"}");
        assert_eq!(hostile.code, None);
        let garbage = refused(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(garbage.what, "answered 502 Bad Gateway");
    }

    #[test]
    fn expires_in_is_read_leniently_and_bounded() {
        let s = |v: serde_json::Value| seconds(&v);
        assert_eq!(s(serde_json::json!(3600)), Some(Duration::from_secs(3600)));
        assert_eq!(s(serde_json::json!("60")), Some(Duration::from_secs(60)));
        assert_eq!(s(serde_json::json!(-5)), Some(Duration::ZERO));
        assert_eq!(s(serde_json::json!(null)), None);
        assert_eq!(s(serde_json::json!("soon")), None);
        assert!(s(serde_json::json!(1e300)).is_some_and(|d| d.as_secs() < 400_000_000));
    }

    #[test]
    fn a_bad_token_url_is_a_build_error() {
        for bad in [
            "not a url",
            "ftp://a/token",
            "http://u:p@a/token",
            "http://a/t#x",
        ] {
            assert!(check_token_url(bad).is_err(), "{bad}");
        }
        assert!(check_token_url("https://auth.example.com/oauth2/token?x=1").is_ok());
    }
}
