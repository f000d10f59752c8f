//! The receiving side (feature `jwt`): [`VerifyJwt`], a tower layer (axum,
//! hyper, tonic) that lets a request through only with a valid bearer JWT,
//! and hands its [`Claims`] to the handler in the request's extensions.
//!
//! What is checked, in this order, cheapest first, so that garbage never
//! costs a key fetch or a revocation lookup:
//!
//! 1. an `Authorization: Bearer …` header, once, with a token of at most
//!    [`max_token_bytes`](VerifyJwt::max_token_bytes) (8 KiB);
//! 2. the header: a known `alg` on the allow-list ([`VerifyJwt::algorithms`];
//!    by default every algorithm of the key's kind), never `none`; no
//!    `crit` extension (RFC 7515 §4.1.11: we understand none);
//! 3. the key: found by `kid` ([`Keys`]: keys given, or a JWKS URL refetched,
//!    rate-limited, when a `kid` is unknown, so keys can rotate); its kind
//!    must match the algorithm, so an `HS256` token "signed" with an RSA
//!    public key never meets an HMAC check (the classic algorithm confusion);
//!    a JWKS entry that names its `alg` accepts only that one, and a JWKS
//!    never supplies HMAC secrets;
//! 4. the signature (`jsonwebtoken`, aws-lc-rs);
//! 5. the claims: `exp` required, `nbf` and `iat` if present, all within a
//!    [`leeway`](VerifyJwt::leeway) (30 s) for clock skew; `aud` must name
//!    this service; `iss` one of the [`issuers`](VerifyJwt::issuer) when set;
//! 6. revocation, when a [`Revocations`] store is given: the token's `jti`
//!    (then required) must not be revoked. A store that does not answer
//!    within [`revocation_timeout`](VerifyJwt::revocation_timeout) fails
//!    closed (503) unless [`fail_open`](VerifyJwt::fail_open) was chosen;
//!    either way an [`Event::RevocationsUnavailable`] says so.
//!
//! A refused request gets `401` with `WWW-Authenticate: Bearer` (RFC 6750
//! §3): without any error code when it had no token, with
//! `error="invalid_token"` otherwise, and never with a description: which
//! check failed helps an attacker more than a legitimate caller, whose
//! logs at home say why. [`VerifyJwt::verify`] gives the reason
//! ([`Rejection::reason`]) to your own code and tests.
//!
//! ```no_run
//! use axum::{Extension, Router, routing::get};
//! use courier::auth::verify::{Claims, Jwks, VerifyJwt};
//!
//! # fn demo() -> Result<(), courier::Error> {
//! let verify = VerifyJwt::new(Jwks::new("http://billing.internal/.well-known/jwks.json")?, "ledger")
//!     .issuer("billing");
//! let app: Router = Router::new()
//!     .route("/entries", get(|Extension(claims): Extension<Claims>| async move {
//!         format!("hello {}", claims.subject().unwrap_or("?"))
//!     }))
//!     .layer(verify);
//! # let _ = app; Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::Secret;
use super::jwt::{Algorithm, Family, ensure_provider, now_secs};
use crate::observe::{Event, EventSink};
use crate::{BoxError, Error};

/// The default largest token accepted: 8 KiB.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The default clock-skew allowance on `exp`, `nbf` and `iat`: 30 s.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

// ===== keys =====

/// A key that verifies JWT signatures: an HMAC secret, or the public half
/// of an RSA, EC (P-256, P-384) or Ed25519 key. `Debug` shows its kind and
/// key id, never the key.
///
/// ```
/// # fn demo() -> Result<(), courier::Error> {
/// use courier::auth::verify::VerifyingKey;
///
/// let shared = VerifyingKey::hs256("a secret of at least thirty-two bytes!")?;
/// // let public = VerifyingKey::rsa_pem(&std::fs::read("billing.pub.pem")?)?.with_key_id("b1");
/// # let _ = shared; Ok(()) }
/// ```
#[derive(Clone)]
pub struct VerifyingKey {
    key: DecodingKey,
    family: Family,
    /// The only algorithm it accepts, when known (a JWKS entry's `alg`).
    algorithm: Option<Algorithm>,
    kid: Option<String>,
}

impl VerifyingKey {
    /// An HMAC secret shared with the signer (HS256, HS384, HS512). At
    /// least 32 bytes, as RFC 7518 §3.2 requires.
    ///
    /// # Errors
    /// A secret shorter than 32 bytes.
    pub fn hs256(secret: impl Into<Secret>) -> Result<VerifyingKey, Error> {
        let secret = secret.into();
        if secret.expose().len() < 32 {
            return Err(Error::builder(
                "an HMAC key must be at least 32 bytes long (RFC 7518 §3.2)",
            ));
        }
        VerifyingKey::from_hmac_bytes(secret.expose().as_bytes())
    }

    pub(crate) fn from_hmac_bytes(bytes: &[u8]) -> Result<VerifyingKey, Error> {
        let key = DecodingKey::from_secret(bytes)
            .map_err(|e| Error::builder("the HMAC key could not be used").with_source(e))?;
        Ok(VerifyingKey::new(key, Family::Hmac))
    }

    /// An RSA public key in PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    ///
    /// # Errors
    /// When the PEM holds no RSA public key.
    pub fn rsa_pem(pem: &[u8]) -> Result<VerifyingKey, Error> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| pem_error("RSA", e))?;
        Ok(VerifyingKey::new(key, Family::Rsa))
    }

    /// An EC public key in PEM (P-256 or P-384).
    ///
    /// # Errors
    /// When the PEM holds no EC public key.
    pub fn ec_pem(pem: &[u8]) -> Result<VerifyingKey, Error> {
        let key = DecodingKey::from_ec_pem(pem).map_err(|e| pem_error("EC", e))?;
        Ok(VerifyingKey::new(key, Family::Ec))
    }

    /// An Ed25519 public key in PEM.
    ///
    /// # Errors
    /// When the PEM holds no Ed25519 public key.
    pub fn ed25519_pem(pem: &[u8]) -> Result<VerifyingKey, Error> {
        let key = DecodingKey::from_ed_pem(pem).map_err(|e| pem_error("Ed25519", e))?;
        Ok(VerifyingKey::new(key, Family::Ed))
    }

    /// A public key from one JWK (RFC 7517) as JSON; its `kid` and `alg`, if
    /// present, are kept. Symmetric (`oct`) keys are refused: publish a
    /// public key, never a secret.
    ///
    /// # Errors
    /// When the JSON is not a supported public JWK.
    pub fn from_jwk(json: &str) -> Result<VerifyingKey, Error> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::builder("the JWK is not JSON").with_source(e))?;
        VerifyingKey::from_jwk_value(&value)
    }

    pub(crate) fn from_jwk_value(value: &Value) -> Result<VerifyingKey, Error> {
        let jwk: Jwk = serde_json::from_value(value.clone())
            .map_err(|e| Error::builder("not a JWK").with_source(e))?;
        from_jwk(&jwk).ok_or_else(|| Error::builder("not a supported public JWK"))
    }

    fn new(key: DecodingKey, family: Family) -> Self {
        ensure_provider();
        VerifyingKey {
            key,
            family,
            algorithm: None,
            kid: None,
        }
    }

    /// Names the key: tokens whose header has this `kid` are checked with it.
    ///
    /// Default is no key id (the key checks tokens without a `kid`, or any
    /// token when it is the only key).
    pub fn with_key_id(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Accepts only `algorithm` with this key (of the key's kind).
    ///
    /// Default is any algorithm of the key's kind that the verifier allows.
    pub fn for_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// Its key id, if it has one.
    pub fn key_id(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    fn accepts(&self, algorithm: Algorithm) -> bool {
        algorithm.family() == self.family && self.algorithm.is_none_or(|a| a == algorithm)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kind", &self.family)
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn pem_error(kind: &str, e: jsonwebtoken::errors::Error) -> Error {
    Error::builder(format!("could not read the {kind} public key (PEM)")).with_source(e)
}

/// A public key from a JWK: `None` for symmetric keys, keys for encryption,
/// curves we do not verify, and anything malformed.
fn from_jwk(jwk: &Jwk) -> Option<VerifyingKey> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Family::Rsa,
        AlgorithmParameters::EllipticCurve(ec)
            if matches!(ec.curve, EllipticCurve::P256 | EllipticCurve::P384) =>
        {
            Family::Ec
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Family::Ed,
        // `oct` (an HMAC secret in a published set) and anything else.
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        Some(alg) => {
            let name = serde_json::to_value(alg).ok()?;
            let algorithm = Algorithm::from_name(name.as_str()?)?;
            if algorithm.family() != family {
                return None;
            }
            Some(algorithm)
        }
        None => None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let mut key = VerifyingKey::new(key, family);
    key.algorithm = algorithm;
    key.kid = jwk.common.key_id.clone();
    Some(key)
}

/// Where a verifier's keys come from: keys given up front, or a [`Jwks`]
/// URL. Made with `From` (`VerifyingKey`, `Jwks`) or collected from keys.
#[derive(Clone, Debug)]
pub struct Keys(KeySource);

#[derive(Clone, Debug)]
enum KeySource {
    Fixed(Arc<[VerifyingKey]>),
    Jwks(Jwks),
}

impl From<VerifyingKey> for Keys {
    fn from(key: VerifyingKey) -> Self {
        Keys(KeySource::Fixed(Arc::new([key])))
    }
}

impl From<Jwks> for Keys {
    fn from(jwks: Jwks) -> Self {
        Keys(KeySource::Jwks(jwks))
    }
}

impl FromIterator<VerifyingKey> for Keys {
    fn from_iter<I: IntoIterator<Item = VerifyingKey>>(keys: I) -> Self {
        Keys(KeySource::Fixed(keys.into_iter().collect()))
    }
}

/// Picks the key for a token's `kid` from `keys`: the one named so, or,
/// for a token without a `kid`, the only key there is.
fn pick<'k>(keys: &'k [VerifyingKey], kid: Option<&str>) -> Option<&'k VerifyingKey> {
    match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        None => match keys {
            [only] => Some(only),
            _ => keys.iter().find(|k| k.kid.is_none()),
        },
    }
}

// ===== JWKS =====

/// Keys from a JWKS URL (RFC 7517 §5), fetched on first use, again when it
/// is older than [`max_age`](Jwks::max_age), and again when a token names
/// a `kid` it lacks (key rotation), at most once per
/// [`min_refetch_interval`](Jwks::min_refetch_interval) so that made-up
/// `kid`s cannot hammer the key server. A fetch that fails, or returns
/// something that is not a JWK Set, keeps the keys it had (and emits
/// [`Event::KeysUnavailable`]). Clones share one cache.
///
/// ```
/// # fn demo() -> Result<(), courier::Error> {
/// use courier::auth::verify::Jwks;
/// use std::time::Duration;
///
/// let jwks = Jwks::new("https://auth.example.com/.well-known/jwks.json")?
///     .min_refetch_interval(Duration::from_secs(30));
/// # let _ = jwks; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Jwks(Arc<JwksInner>);

struct JwksInner {
    url: String,
    http: reqwest::Client,
    min_refetch_interval: Duration,
    max_age: Duration,
    fetch_timeout: Duration,
    state: Mutex<JwksState>,
    /// One fetch at a time.
    gate: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct JwksState {
    keys: Arc<[VerifyingKey]>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

/// The largest JWKS read: 1 MiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

impl Jwks {
    /// Keys from `url` (`http` or `https`).
    ///
    /// # Errors
    /// An invalid URL, or no HTTP client could be made.
    pub fn new(url: impl AsRef<str>) -> Result<Jwks, Error> {
        let url = url.as_ref();
        let parsed =
            url::Url::parse(url).map_err(|_| Error::builder("the JWKS URL is not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::builder("the JWKS URL must be http:// or https://"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::builder("could not create the HTTP client").with_source(e))?;
        Ok(Jwks(Arc::new(JwksInner {
            url: parsed.to_string(),
            http,
            min_refetch_interval: Duration::from_secs(10),
            max_age: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(5),
            state: Mutex::new(JwksState::default()),
            gate: tokio::sync::Mutex::new(()),
        })))
    }

    fn with(self, change: impl FnOnce(&mut JwksInner)) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                change(&mut inner);
                Jwks(Arc::new(inner))
            }
            // Shared already: settings are fixed once in use.
            Err(shared) => Jwks(shared),
        }
    }

    /// The shortest time between two fetches for an unknown `kid`.
    ///
    /// Default is 10 s.
    pub fn min_refetch_interval(self, interval: Duration) -> Self {
        self.with(|j| j.min_refetch_interval = interval)
    }

    /// How long fetched keys are used before they are fetched again on the
    /// next request.
    ///
    /// Default is 1 hour.
    pub fn max_age(self, age: Duration) -> Self {
        self.with(|j| j.max_age = age)
    }

    /// How long one fetch may take.
    ///
    /// Default is 5 s.
    pub fn fetch_timeout(self, timeout: Duration) -> Self {
        self.with(|j| j.fetch_timeout = timeout)
    }

    /// The reqwest client to fetch with (TLS roots, proxy).
    ///
    /// Default is a client of its own with a 2 s connect timeout.
    pub fn http_client(self, http: reqwest::Client) -> Self {
        self.with(|j| j.http = http)
    }

    /// The key for `kid`, fetching the set when it is missing, stale or
    /// lacks the key (each at most once per refetch interval).
    async fn key(&self, kid: Option<&str>, events: &EventSink) -> Option<VerifyingKey> {
        let inner = &self.0;
        let (keys, fresh) = {
            let state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            let fresh = state.fetched.is_some_and(|at| at.elapsed() < inner.max_age);
            (Arc::clone(&state.keys), fresh)
        };
        if fresh && let Some(key) = pick(&keys, kid) {
            return Some(key.clone());
        }
        self.refetch(events).await;
        let state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        pick(&state.keys, kid).cloned()
    }

    /// Fetches the set again unless a fetch was attempted within the
    /// refetch interval (or one is running: then waits for it).
    async fn refetch(&self, events: &EventSink) {
        let inner = &self.0;
        if self.attempted_recently() {
            // The common case while the key server is down, or a `kid` is
            // made up: no waiting on the gate.
            return;
        }
        let _one_at_a_time = inner.gate.lock().await;
        {
            let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state
                .attempted
                .is_some_and(|at| at.elapsed() < inner.min_refetch_interval)
            {
                return;
            }
            state.attempted = Some(Instant::now());
        }
        match tokio::time::timeout(inner.fetch_timeout, self.fetch()).await {
            Ok(Some(keys)) => {
                let mut state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.keys = keys.into();
                state.fetched = Some(Instant::now());
            }
            _ => events.emit(&Event::KeysUnavailable { url: &inner.url }),
        }
    }

    fn attempted_recently(&self) -> bool {
        let inner = &self.0;
        let state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .attempted
            .is_some_and(|at| at.elapsed() < inner.min_refetch_interval)
    }

    /// One fetch: the usable keys of the set, or `None` when it could not
    /// be fetched or is not a JWK Set.
    async fn fetch(&self) -> Option<Vec<VerifyingKey>> {
        let inner = &self.0;
        let mut response = inner.http.get(&inner.url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.ok()? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// The usable public keys of a JWK Set; `None` when it is not one. Entries
/// that are not usable public signing keys are skipped.
fn parse_jwks(body: &[u8]) -> Option<Vec<VerifyingKey>> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).ok()?;
    let keys = raw
        .keys
        .iter()
        .filter_map(|value| {
            let set: JwkSet =
                serde_json::from_value(serde_json::json!({ "keys": [value] })).ok()?;
            set.keys.first().and_then(from_jwk)
        })
        .collect();
    Some(keys)
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.0.url)
            .field("min_refetch_interval", &self.0.min_refetch_interval)
            .field("max_age", &self.0.max_age)
            .finish_non_exhaustive()
    }
}

// ===== claims =====

/// The claims of a verified token, put in the request's extensions for the
/// handler (`Extension<Claims>` in axum).
///
/// ```
/// use courier::auth::verify::Claims;
///
/// fn who(claims: &Claims) -> String {
///     format!("{} (token {})", claims.subject().unwrap_or("?"), claims.jti().unwrap_or("-"))
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// `sub`.
    pub fn subject(&self) -> Option<&str> {
        self.0.get("sub").and_then(Value::as_str)
    }

    /// `iss`.
    pub fn issuer(&self) -> Option<&str> {
        self.0.get("iss").and_then(Value::as_str)
    }

    /// `aud`, whether a string or a list.
    pub fn audiences(&self) -> Vec<&str> {
        match self.0.get("aud") {
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// `jti`, the token's id: what a revocation names.
    pub fn jti(&self) -> Option<&str> {
        self.0.get("jti").and_then(Value::as_str)
    }

    /// `exp` as a time.
    pub fn expires_at(&self) -> Option<SystemTime> {
        let exp = numeric_date(self.0.get("exp")?)?;
        UNIX_EPOCH.checked_add(Duration::from_secs(exp))
    }

    /// Any claim.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// All claims.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// A NumericDate (RFC 7519 §2) as whole seconds; `None` when it is not a
/// non-negative finite number.
fn numeric_date(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(secs) => Some(secs),
            None => n
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f.min(u64::MAX as f64) as u64),
        },
        _ => None,
    }
}

/// What the claims must satisfy.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub(crate) audiences: Arc<[String]>,
    pub(crate) issuers: Option<Arc<[String]>>,
    pub(crate) leeway: u64,
    pub(crate) require_jti: bool,
}

/// The claim checks, at `now` (seconds since the epoch).
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    rules: &Rules,
    now: u64,
) -> Result<(), Reason> {
    let exp = claims
        .get("exp")
        .ok_or(Reason::Malformed)
        .and_then(|v| numeric_date(v).ok_or(Reason::Malformed))?;
    if exp.saturating_add(rules.leeway) < now {
        return Err(Reason::Expired);
    }
    for not_before in ["nbf", "iat"] {
        if let Some(value) = claims.get(not_before) {
            let at = numeric_date(value).ok_or(Reason::Malformed)?;
            if at > now.saturating_add(rules.leeway) {
                return Err(Reason::NotYetValid);
            }
        }
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => rules.audiences.iter().any(|a| a == aud),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| rules.audiences.iter().any(|a| a == aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(Reason::WrongAudience);
    }
    if let Some(issuers) = &rules.issuers {
        let iss = claims.get("iss").and_then(Value::as_str);
        if !iss.is_some_and(|iss| issuers.iter().any(|i| i == iss)) {
            return Err(Reason::WrongIssuer);
        }
    }
    if rules.require_jti {
        let jti = claims.get("jti").and_then(Value::as_str);
        if !jti.is_some_and(|j| !j.is_empty() && j.len() <= 256) {
            return Err(Reason::NoJti);
        }
    }
    Ok(())
}

// ===== rejections =====

/// Why a token was refused: for your logs and tests, never for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Missing,
    NotBearer,
    TooLarge,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    NoJti,
    Revoked,
    RevocationsUnavailable,
}

/// A refused request: what [`VerifyJwt::verify`] returns, and what the
/// layer answers (`401` with `WWW-Authenticate`, or `503` when the
/// revocation store is unavailable and the verifier fails closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection(Reason);

impl Rejection {
    /// Why, in a few words (`"expired"`, `"wrong audience"`, `"unknown
    /// key"`, …): for logs and tests. Never sent to the caller.
    pub fn reason(&self) -> &'static str {
        match self.0 {
            Reason::Missing => "no bearer token",
            Reason::NotBearer => "not a bearer token",
            Reason::TooLarge => "token too large",
            Reason::Malformed => "malformed token",
            Reason::AlgorithmNotAllowed => "algorithm not allowed",
            Reason::UnknownKey => "unknown key",
            Reason::BadSignature => "bad signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not yet valid",
            Reason::WrongAudience => "wrong audience",
            Reason::WrongIssuer => "wrong issuer",
            Reason::NoJti => "no jti",
            Reason::Revoked => "revoked",
            Reason::RevocationsUnavailable => "revocation store unavailable",
        }
    }

    /// The status answered: 503 when the revocation store could not be
    /// asked (fail closed), 401 otherwise.
    pub fn status(&self) -> StatusCode {
        match self.0 {
            Reason::RevocationsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The answer to the caller: the status, and `WWW-Authenticate` for a
    /// 401 (RFC 6750 §3) with no detail.
    fn response<B: Default>(&self, realm: Option<&str>) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        let mut challenge = String::from("Bearer");
        if let Some(realm) = realm {
            challenge.push_str(&format!(" realm=\"{realm}\""));
        }
        if self.0 != Reason::Missing {
            if realm.is_some() {
                challenge.push(',');
            }
            challenge.push_str(" error=\"invalid_token\"");
        }
        if let Ok(value) = HeaderValue::try_from(challenge) {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token refused: {}", self.reason())
    }
}

impl std::error::Error for Rejection {}

// ===== the layer =====

/// A tower layer that lets requests through only with a valid bearer JWT;
/// see the [module docs](self). Cheap to clone; clones share the key cache.
#[derive(Clone)]
pub struct VerifyJwt {
    inner: Arc<Verifier>,
}

#[derive(Clone)]
struct Verifier {
    keys: Keys,
    rules: Rules,
    algorithms: Option<Arc<[Algorithm]>>,
    max_token_bytes: usize,
    revocations: Option<Arc<dyn Revocations>>,
    revocation_timeout: Duration,
    fail_open: bool,
    realm: Option<String>,
    events: EventSink,
}

impl VerifyJwt {
    /// Verifies tokens signed with `keys` and meant for `audience` (this
    /// service's name: the `aud` a courier client puts in by default).
    pub fn new(keys: impl Into<Keys>, audience: impl Into<String>) -> Self {
        ensure_provider();
        VerifyJwt {
            inner: Arc::new(Verifier {
                keys: keys.into(),
                rules: Rules {
                    audiences: Arc::new([audience.into()]),
                    issuers: None,
                    leeway: DEFAULT_LEEWAY.as_secs(),
                    require_jti: false,
                },
                algorithms: None,
                max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
                revocations: None,
                revocation_timeout: Duration::from_millis(500),
                fail_open: false,
                realm: None,
                events: EventSink::none(),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Verifier)) -> Self {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// Accepts tokens for `audience` too.
    ///
    /// Default is the audience given to [`new`](Self::new) only.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        let audience = audience.into();
        self.with(|v| {
            let mut all = v.rules.audiences.to_vec();
            all.push(audience);
            v.rules.audiences = all.into();
        })
    }

    /// Accepts tokens issued by `issuer` (may be given several times); once
    /// set, `iss` is required.
    ///
    /// Default is any issuer (the key decides who may sign).
    pub fn issuer(self, issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        self.with(|v| {
            let mut all = v
                .rules
                .issuers
                .as_deref()
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            all.push(issuer);
            v.rules.issuers = Some(all.into());
        })
    }

    /// The algorithms accepted (each still only with a key of its kind).
    ///
    /// Default is every algorithm of the kind of the key that matches.
    pub fn algorithms(self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        let algorithms: Arc<[Algorithm]> = algorithms.into_iter().collect();
        self.with(|v| v.algorithms = Some(algorithms))
    }

    /// How far `exp`, `nbf` and `iat` may be off, for clock skew.
    ///
    /// Default is 30 s ([`DEFAULT_LEEWAY`]).
    pub fn leeway(self, leeway: Duration) -> Self {
        self.with(|v| v.rules.leeway = leeway.as_secs())
    }

    /// The longest token accepted; a longer one is refused before it is
    /// read.
    ///
    /// Default is 8 KiB ([`DEFAULT_MAX_TOKEN_BYTES`]).
    pub fn max_token_bytes(self, limit: usize) -> Self {
        self.with(|v| v.max_token_bytes = limit)
    }

    /// Checks every token's `jti` against `revocations`; tokens without a
    /// `jti` are then refused.
    ///
    /// Default is no revocation check.
    pub fn revocations(self, revocations: impl Revocations) -> Self {
        let revocations: Arc<dyn Revocations> = Arc::new(revocations);
        self.with(|v| {
            v.revocations = Some(revocations);
            v.rules.require_jti = true;
        })
    }

    /// How long the revocation store may take to answer before it is taken
    /// as unavailable.
    ///
    /// Default is 500 ms.
    pub fn revocation_timeout(self, timeout: Duration) -> Self {
        self.with(|v| v.revocation_timeout = timeout)
    }

    /// Lets requests through, unchecked for revocation, when the
    /// revocation store is unavailable (an
    /// [`Event::RevocationsUnavailable`] with `failed_open: true` says so).
    /// Choose it when availability matters more than a revoked token being
    /// honoured for the length of an outage.
    ///
    /// Default is fail closed: such requests are answered 503.
    pub fn fail_open(self) -> Self {
        self.with(|v| v.fail_open = true)
    }

    /// The `realm` of the `WWW-Authenticate` challenge. Characters other
    /// than printable ASCII without `"` and `\` are dropped.
    ///
    /// Default is no realm.
    pub fn realm(self, realm: &str) -> Self {
        let realm: String = realm
            .chars()
            .filter(|c| (c.is_ascii_graphic() && *c != '"' && *c != '\\') || *c == ' ')
            .collect();
        self.with(|v| v.realm = Some(realm))
    }

    /// A callback for [`Event::RevocationsUnavailable`] and
    /// [`Event::KeysUnavailable`].
    ///
    /// Default is none.
    pub fn on_event(self, callback: impl for<'e> Fn(&Event<'e>) + Send + Sync + 'static) -> Self {
        let events = EventSink::new(callback);
        self.with(|v| v.events = events)
    }

    /// Verifies the value of an `Authorization` header (`None` when there
    /// is none): the claims, or why not. What the layer does for each
    /// request, for use outside tower.
    ///
    /// # Errors
    /// The [`Rejection`]; see the [module docs](self) for the checks.
    pub async fn verify(&self, authorization: Option<&HeaderValue>) -> Result<Claims, Rejection> {
        self.inner.verify(authorization).await.map_err(Rejection)
    }
}

impl fmt::Debug for VerifyJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.inner;
        f.debug_struct("VerifyJwt")
            .field("keys", &v.keys)
            .field("audiences", &v.rules.audiences)
            .field("issuers", &v.rules.issuers)
            .field("algorithms", &v.algorithms)
            .field("leeway_secs", &v.rules.leeway)
            .field("revocations", &v.revocations.is_some())
            .field("fail_open", &v.fail_open)
            .finish_non_exhaustive()
    }
}

/// A JWT's header, as far as we read it.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

impl Verifier {
    async fn verify(&self, authorization: Option<&HeaderValue>) -> Result<Claims, Reason> {
        let token = bearer(authorization, self.max_token_bytes)?;
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::Malformed);
        };
        let header: JoseHeader = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(Reason::Malformed)?;
        if header.crit.is_some() {
            return Err(Reason::Malformed);
        }
        let algorithm = Algorithm::from_name(&header.alg)
            .filter(|a| {
                self.algorithms
                    .as_ref()
                    .is_none_or(|allowed| allowed.contains(a))
            })
            .ok_or(Reason::AlgorithmNotAllowed)?;
        let key = self
            .key(header.kid.as_deref())
            .await
            .ok_or(Reason::UnknownKey)?;
        if !key.accepts(algorithm) {
            return Err(Reason::AlgorithmNotAllowed);
        }
        let mut validation = jsonwebtoken::Validation::new(algorithm.to_jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Reason::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Reason::AlgorithmNotAllowed,
                _ => Reason::Malformed,
            })?;
        check_claims(&data.claims, &self.rules, now_secs())?;
        let claims = Claims(data.claims);
        if let Some(revocations) = &self.revocations {
            let jti = claims.jti().unwrap_or_default();
            let answer = tokio::time::timeout(self.revocation_timeout, revocations.is_revoked(jti));
            match answer.await {
                Ok(Ok(true)) => return Err(Reason::Revoked),
                Ok(Ok(false)) => {}
                Ok(Err(_)) | Err(_) => {
                    self.events.emit(&Event::RevocationsUnavailable {
                        failed_open: self.fail_open,
                    });
                    if !self.fail_open {
                        return Err(Reason::RevocationsUnavailable);
                    }
                }
            }
        }
        Ok(claims)
    }

    async fn key(&self, kid: Option<&str>) -> Option<VerifyingKey> {
        match &self.keys.0 {
            KeySource::Fixed(keys) => pick(keys, kid).cloned(),
            KeySource::Jwks(jwks) => jwks.key(kid, &self.events).await,
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(value: Option<&HeaderValue>, limit: usize) -> Result<&str, Reason> {
    let value = value.ok_or(Reason::Missing)?;
    if value.len() > limit.saturating_add(7) {
        return Err(Reason::TooLarge);
    }
    let value = value.to_str().map_err(|_| Reason::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Reason::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::NotBearer);
    }
    let token = token.trim_start_matches(' ');
    // RFC 6750 §2.1: b64token.
    let b64token = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if !b64token {
        return Err(Reason::Malformed);
    }
    Ok(token)
}

impl<S> tower::Layer<S> for VerifyJwt {
    type Service = VerifyJwtService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyJwtService {
            inner,
            verifier: self.clone(),
        }
    }
}

/// The service of a [`VerifyJwt`] layer.
#[derive(Clone)]
pub struct VerifyJwtService<S> {
    inner: S,
    verifier: VerifyJwt,
}

impl<S> fmt::Debug for VerifyJwtService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyJwtService")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> tower::Service<Request<B>> for VerifyJwtService<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The service that was made ready goes with this request (tower's
        // rule); a fresh clone stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let authorization = single(request.headers()).map(|v| v.cloned());
            let verdict = match authorization {
                Ok(authorization) => verifier.inner.verify(authorization.as_ref()).await,
                Err(reason) => Err(reason),
            };
            match verdict {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(reason) => Ok(Rejection(reason).response(verifier.inner.realm.as_deref())),
            }
        })
    }
}

/// The `Authorization` value when there is at most one; several are
/// malformed.
fn single(headers: &HeaderMap) -> Result<Option<&HeaderValue>, Reason> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        (Some(_), Some(_)) | (None, Some(_)) => Err(Reason::Malformed),
    }
}

// ===== the verifying half of a signing key =====

impl super::jwt::SigningKey {
    /// The key that verifies what this one signs: the same secret for
    /// HMAC, the public half otherwise (with this key's id).
    ///
    /// # Errors
    /// When the public half cannot be derived.
    pub fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        let key = match self.algorithm.family() {
            Family::Hmac => VerifyingKey::from_hmac_bytes(self.key.as_bytes()),
            _ => VerifyingKey::from_jwk_value(&self.public_jwk()?),
        }?;
        let key = key.for_algorithm(self.algorithm);
        Ok(match &self.kid {
            Some(kid) => key.with_key_id(kid.clone()),
            None => key,
        })
    }
}

// ===== revocations (the trait; stores in `revocation.rs`) =====

/// A store of revoked token ids. Implement it for another store (a
/// database, an in-memory set for tests) with `#[courier::async_trait]`.
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::Mutex;
/// use std::time::SystemTime;
/// use courier::BoxError;
/// use courier::auth::revocation::Revocations;
///
/// #[derive(Default)]
/// struct InMemory(Mutex<HashSet<String>>);
///
/// #[courier::async_trait]
/// impl Revocations for InMemory {
///     async fn revoke(&self, jti: &str, _expires_at: SystemTime) -> Result<(), BoxError> {
///         self.0.lock().map_err(|_| "poisoned")?.insert(jti.to_owned());
///         Ok(())
///     }
///     async fn is_revoked(&self, jti: &str) -> Result<bool, BoxError> {
///         Ok(self.0.lock().map_err(|_| "poisoned")?.contains(jti))
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Revocations: Send + Sync + 'static {
    /// Revokes the token `jti`, which expires at `expires_at`: the entry
    /// needs to live until then, and no longer.
    ///
    /// # Errors
    /// When the store cannot be reached.
    async fn revoke(&self, jti: &str, expires_at: SystemTime) -> Result<(), BoxError>;

    /// Whether the token `jti` was revoked.
    ///
    /// # Errors
    /// When the store cannot be reached; the verifier then fails closed or
    /// open as configured.
    async fn is_revoked(&self, jti: &str) -> Result<bool, BoxError>;

    /// Revokes the token these claims came from (by its `jti`, until its
    /// `exp`): what a handler calls with the claims [`VerifyJwt`]
    /// gave it.
    ///
    /// # Errors
    /// A token without `jti` or `exp`, or a store that cannot be reached.
    async fn revoke_token(&self, claims: &Claims) -> Result<(), BoxError> {
        let jti = claims.jti().ok_or("the token has no jti")?;
        let expires_at = claims.expires_at().ok_or("the token has no exp")?;
        self.revoke(jti, expires_at).await
    }
}

#[async_trait::async_trait]
impl<R: Revocations + ?Sized> Revocations for Arc<R> {
    async fn revoke(&self, jti: &str, expires_at: SystemTime) -> Result<(), BoxError> {
        (**self).revoke(jti, expires_at).await
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, BoxError> {
        (**self).is_revoked(jti).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> Rules {
        Rules {
            audiences: Arc::new(["ledger".to_owned()]),
            issuers: Some(Arc::new(["billing".to_owned()])),
            leeway: 30,
            require_jti: true,
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn the_claim_checks_as_a_table() {
        let ok = serde_json::json!({
            "iss": "billing", "aud": "ledger", "exp": NOW + 60, "nbf": NOW, "iat": NOW, "jti": "j1"
        });
        let with = |name: &str, value: Value| {
            let mut c = claims(ok.clone());
            c.insert(name.into(), value);
            c
        };
        let without = |name: &str| {
            let mut c = claims(ok.clone());
            c.remove(name);
            c
        };
        let r = rules();
        let cases: Vec<(Map<String, Value>, Result<(), Reason>)> = vec![
            (claims(ok.clone()), Ok(())),
            (with("aud", serde_json::json!(["x", "ledger"])), Ok(())),
            (with("aud", "other".into()), Err(Reason::WrongAudience)),
            (
                with("aud", serde_json::json!([1, 2])),
                Err(Reason::WrongAudience),
            ),
            (without("aud"), Err(Reason::WrongAudience)),
            (with("iss", "mallory".into()), Err(Reason::WrongIssuer)),
            (without("iss"), Err(Reason::WrongIssuer)),
            (with("exp", (NOW - 31).into()), Err(Reason::Expired)),
            (with("exp", (NOW - 30).into()), Ok(())),
            (with("exp", "tomorrow".into()), Err(Reason::Malformed)),
            (with("exp", (-1).into()), Err(Reason::Malformed)),
            (without("exp"), Err(Reason::Malformed)),
            (with("nbf", (NOW + 31).into()), Err(Reason::NotYetValid)),
            (with("iat", (NOW + 3600).into()), Err(Reason::NotYetValid)),
            (with("nbf", Value::Null), Err(Reason::Malformed)),
            (without("jti"), Err(Reason::NoJti)),
            (with("jti", "x".repeat(257).into()), Err(Reason::NoJti)),
            (with("exp", serde_json::json!(1e300)), Ok(())),
        ];
        for (claims, expected) in cases {
            assert_eq!(check_claims(&claims, &r, NOW), expected, "{claims:?}");
        }
    }

    #[test]
    fn bearer_values_are_read_strictly() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(Some(&v("Bearer a.b.c")), 100), Ok("a.b.c"));
        assert_eq!(bearer(Some(&v("bearer a.b.c")), 100), Ok("a.b.c"));
        assert_eq!(bearer(None, 100), Err(Reason::Missing));
        assert_eq!(bearer(Some(&v("Basic YTpi")), 100), Err(Reason::NotBearer));
        assert_eq!(bearer(Some(&v("Bearer")), 100), Err(Reason::NotBearer));
        assert_eq!(bearer(Some(&v("Bearer a,b")), 100), Err(Reason::Malformed));
        assert_eq!(bearer(Some(&v("Bearer ")), 100), Err(Reason::Malformed));
        let long = HeaderValue::try_from(format!("Bearer {}", "a".repeat(101))).ok();
        assert_eq!(bearer(long.as_ref(), 100), Err(Reason::TooLarge));
    }

    #[test]
    fn challenges_follow_rfc_6750_without_detail() {
        let www = |reason: Reason, realm: Option<&str>| {
            let response: Response<()> = Rejection(reason).response(realm);
            let header = response.headers().get(WWW_AUTHENTICATE).cloned();
            (response.status(), header)
        };
        let (status, header) = www(Reason::Missing, None);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(header, Some(HeaderValue::from_static("Bearer")));
        let (_, header) = www(Reason::Expired, Some("ledger"));
        assert_eq!(
            header,
            Some(HeaderValue::from_static(
                "Bearer realm=\"ledger\", error=\"invalid_token\""
            ))
        );
        let (status, header) = www(Reason::RevocationsUnavailable, None);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header, None);
    }

    #[test]
    fn jwks_entries_that_are_not_public_signing_keys_are_skipped() {
        let set = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"h"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"e","use":"enc"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"s","alg":"EdDSA"},
            {"kty":"RSA","n":"x","e":"AQAB","kid":"r","alg":"ES256"},
            {"garbage":true}
        ]}"#;
        let keys = parse_jwks(set).unwrap_or_default();
        let kids: Vec<_> = keys.iter().filter_map(VerifyingKey::key_id).collect();
        assert_eq!(kids, ["s"]);
        assert!(parse_jwks(b"not json").is_none());
        assert!(parse_jwks(br#"{"keys":"x"}"#).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Time claims: a token is accepted exactly when exp + leeway ≥ now
        /// and nbf, iat ≤ now + leeway, whatever the numbers.
        #[test]
        fn time_claims_hold_exactly_within_the_leeway(
            exp in any::<u64>(), nbf in proptest::option::of(any::<u64>()),
            iat in proptest::option::of(any::<u64>()), now in any::<u64>(), leeway in 0u64..3600,
        ) {
            let mut c = claims(serde_json::json!({"aud": "ledger", "iss": "billing", "jti": "j", "exp": exp}));
            if let Some(nbf) = nbf { c.insert("nbf".into(), nbf.into()); }
            if let Some(iat) = iat { c.insert("iat".into(), iat.into()); }
            let rules = Rules { leeway, ..rules() };
            let expected = if exp.saturating_add(leeway) < now {
                Err(Reason::Expired)
            } else if nbf.into_iter().chain(iat).any(|t| t > now.saturating_add(leeway)) {
                Err(Reason::NotYetValid)
            } else {
                Ok(())
            };
            prop_assert_eq!(check_claims(&c, &rules, now), expected);
        }

        /// Any JSON in any claim: a verdict, never a panic; and `aud` or
        /// `iss` of another value than the configured one is refused.
        #[test]
        fn any_claim_values_get_a_verdict(aud in any_json(), iss in any_json(), exp in any_json(), jti in any_json()) {
            let c = claims(serde_json::json!({"aud": aud, "iss": iss, "exp": exp, "jti": jti}));
            let verdict = check_claims(&c, &rules(), NOW);
            let aud_ok = aud == "ledger" || aud.as_array().is_some_and(|l| l.iter().any(|a| a == "ledger"));
            if verdict.is_ok() {
                prop_assert!(aud_ok && iss == "billing");
            }
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![
                Just("ledger".to_owned()),
                Just("billing".to_owned()),
                ".{0,8}"
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,3}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
