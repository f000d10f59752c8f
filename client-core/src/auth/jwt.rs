//! Service JWTs (feature `jwt`): a calling service signs a short-lived JWT
//! in its own name for each service it calls, instead of asking a token
//! endpoint. The receiving service checks it with
//! [`VerifyJwt`](super::verify::VerifyJwt), against the caller's public key
//! (published as a JWKS with [`SigningKey::jwks`]) or a shared secret.
//!
//! A minted token carries `iss` (the calling service), `sub` (the same,
//! unless set), `aud` (the called service: its `#[client(name)]`, unless
//! set), `iat`, `nbf`, `exp` (5 minutes by default), a unique `jti` (128
//! random bits, so it can be revoked alone) and the key's `kid` in its
//! header. It is cached and re-minted before it expires, like an OAuth2
//! token (see [`crate::auth`]), and re-minted at once when the service
//! answers 401 to it.
//!
//! Signing and verifying use the `jsonwebtoken` crate with the aws-lc-rs
//! backend, the crypto library reqwest's rustls already brings; keys can
//! also be generated in-process ([`SigningKey::generate_es256`],
//! [`SigningKey::generate_ed25519`]) for services that publish a fresh
//! key at every start.
//!
//! ```no_run
//! use courier::auth::jwt::{ServiceJwt, SigningKey};
//! use courier::{client, Error};
//!
//! #[client(name = "ledger")]
//! pub trait Ledger {
//!     #[get("/entries/{id}")]
//!     async fn entry(&self, id: u64) -> Result<String, Error>;
//! }
//!
//! # fn demo() -> Result<(), Error> {
//! let key = SigningKey::generate_es256()?.with_key_id("billing-1");
//! let jwks = key.jwks()?; // serve at /.well-known/jwks.json for the ledger to verify
//! let ledger = LedgerClient::builder()
//!     .base_url("http://ledger.internal:8080")
//!     .auth(ServiceJwt::new("billing", key))      // aud = "ledger"
//!     .build()?;
//! # let _ = (ledger, jwks); Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use http::HeaderValue;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};

use super::Secret;
use super::token::{Fresh, Source};
use crate::Error;

/// The default lifetime of a minted token: 5 minutes.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// A JWS signature algorithm (RFC 7518). `none` is not one: an unsigned
/// token is never made nor accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC with SHA-256 (a shared secret).
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// Which kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// Its name in a JWT header (`"RS256"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The algorithm of a header's `alg`; `None` for `none` and anything
    /// unknown.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub(crate) const fn family(self) -> Family {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Family::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
            Algorithm::EdDSA => Family::Ed,
        }
    }

    pub(crate) const fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::HS256 => J::HS256,
            Algorithm::HS384 => J::HS384,
            Algorithm::HS512 => J::HS512,
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes sure `jsonwebtoken` has a crypto provider: aws-lc-rs, unless the
/// program installed another. (With both of its backends enabled somewhere
/// in a dependency tree, `jsonwebtoken` picks none and would panic.)
pub(crate) fn ensure_provider() {
    use jsonwebtoken::crypto::CryptoProvider;
    if CryptoProvider::try_get_default().is_none() {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 128 random bits as 32 hex digits, from the OS's generator.
pub(crate) fn random_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| Error::auth("the system's random generator failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

// ===== keys =====

/// A key that signs JWTs, with its algorithm and an optional key id
/// (`kid`). `Debug` shows the algorithm and the key id, never the key.
///
/// ```
/// # fn demo() -> Result<(), courier::Error> {
/// use courier::auth::jwt::{Algorithm, SigningKey};
///
/// let shared = SigningKey::hs256("a secret of at least thirty-two bytes!")?;
/// let generated = SigningKey::generate_ed25519()?.with_key_id("k-2024-06");
/// assert_eq!(generated.algorithm(), Algorithm::EdDSA);
/// // let from_pem = SigningKey::rs256_pem(&std::fs::read("key.pem")?)?;
/// # let _ = shared; Ok(()) }
/// ```
#[derive(Clone)]
pub struct SigningKey {
    pub(crate) key: EncodingKey,
    pub(crate) algorithm: Algorithm,
    pub(crate) kid: Option<String>,
    /// For a key generated here: its public JWK parameters.
    public: Option<Arc<Value>>,
}

impl SigningKey {
    /// An HMAC-SHA-256 key: a secret the verifying service shares. RFC 7518
    /// §3.2 requires at least 32 bytes; shorter secrets are refused.
    ///
    /// # Errors
    /// A secret shorter than 32 bytes.
    pub fn hs256(secret: impl Into<Secret>) -> Result<SigningKey, Error> {
        let secret = secret.into();
        if secret.expose().len() < 32 {
            return Err(Error::builder(
                "an HS256 key must be at least 32 bytes long (RFC 7518 §3.2)",
            ));
        }
        let key = EncodingKey::from_secret(secret.expose().as_bytes())
            .map_err(|e| Error::builder("the HS256 key could not be used").with_source(e))?;
        SigningKey::checked(key, Algorithm::HS256, None)
    }

    /// An RSA private key in PEM (PKCS#1 or PKCS#8), for RS256.
    ///
    /// # Errors
    /// When the PEM holds no RSA private key that can sign.
    pub fn rs256_pem(pem: &[u8]) -> Result<SigningKey, Error> {
        let key = EncodingKey::from_rsa_pem(pem).map_err(|e| pem_error("RSA", e))?;
        SigningKey::checked(key, Algorithm::RS256, None)
    }

    /// A P-256 private key in PEM (PKCS#8), for ES256.
    ///
    /// # Errors
    /// When the PEM holds no P-256 private key that can sign.
    pub fn es256_pem(pem: &[u8]) -> Result<SigningKey, Error> {
        let key = EncodingKey::from_ec_pem(pem).map_err(|e| pem_error("EC", e))?;
        SigningKey::checked(key, Algorithm::ES256, None)
    }

    /// An Ed25519 private key in PEM (PKCS#8), for EdDSA.
    ///
    /// # Errors
    /// When the PEM holds no Ed25519 private key that can sign.
    pub fn ed25519_pem(pem: &[u8]) -> Result<SigningKey, Error> {
        let key = EncodingKey::from_ed_pem(pem).map_err(|e| pem_error("Ed25519", e))?;
        SigningKey::checked(key, Algorithm::EdDSA, None)
    }

    /// A new P-256 key pair for ES256, from the OS's random generator.
    ///
    /// # Errors
    /// When the generator fails.
    pub fn generate_es256() -> Result<SigningKey, Error> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| Error::builder("could not generate a P-256 key"))?;
        let der = pair
            .to_pkcs8v1()
            .map_err(|_| Error::builder("could not encode a P-256 key"))?;
        // The public point: 0x04 ‖ x ‖ y.
        let point = pair.public_key().as_ref().to_vec();
        let (x, y) = match point.split_first() {
            Some((4, xy)) if xy.len() == 64 => xy.split_at(32),
            _ => return Err(Error::builder("unexpected P-256 public key encoding")),
        };
        let public = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y),
        });
        let key = EncodingKey::from_ec_der(der.as_ref());
        SigningKey::checked(key, Algorithm::ES256, Some(Arc::new(public)))
    }

    /// A new Ed25519 key pair for EdDSA, from the OS's random generator.
    ///
    /// # Errors
    /// When the generator fails.
    pub fn generate_ed25519() -> Result<SigningKey, Error> {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
        let pair = Ed25519KeyPair::generate()
            .map_err(|_| Error::builder("could not generate an Ed25519 key"))?;
        let der = pair
            .to_pkcs8v1()
            .map_err(|_| Error::builder("could not encode an Ed25519 key"))?;
        let public = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref()),
        });
        let key = EncodingKey::from_ed_der(der.as_ref());
        SigningKey::checked(key, Algorithm::EdDSA, Some(Arc::new(public)))
    }

    /// A key that has signed once: one that cannot is refused here, not at
    /// the first call.
    fn checked(
        key: EncodingKey,
        algorithm: Algorithm,
        public: Option<Arc<Value>>,
    ) -> Result<SigningKey, Error> {
        ensure_provider();
        jsonwebtoken::crypto::sign(b"courier", &key, algorithm.to_jwt()).map_err(|e| {
            Error::builder(format!("the key cannot sign {algorithm}")).with_source(e)
        })?;
        Ok(SigningKey {
            key,
            algorithm,
            kid: None,
            public,
        })
    }

    /// Names the key: its `kid`, put in the header of every token it signs
    /// and in its JWKS entry, so verifiers find it among several.
    ///
    /// Default is no key id.
    pub fn with_key_id(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The algorithm it signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Its key id, if it has one.
    pub fn key_id(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The public half as a JWK Set (RFC 7517), to serve at a JWKS URL for
    /// verifiers: `{"keys":[{"kty":…,"kid":…,"use":"sig","alg":…}]}`.
    ///
    /// # Errors
    /// For an HMAC key: a shared secret is never published.
    pub fn jwks(&self) -> Result<String, Error> {
        let mut jwk = self.public_jwk()?;
        if let Value::Object(map) = &mut jwk {
            if let Some(kid) = &self.kid {
                map.insert("kid".into(), Value::String(kid.clone()));
            }
            map.insert("use".into(), Value::String("sig".into()));
            map.insert("alg".into(), Value::String(self.algorithm.as_str().into()));
        }
        Ok(serde_json::json!({ "keys": [jwk] }).to_string())
    }

    pub(crate) fn public_jwk(&self) -> Result<Value, Error> {
        if self.algorithm.family() == Family::Hmac {
            return Err(Error::builder(
                "an HMAC key is a shared secret: it has no public half to publish",
            ));
        }
        if let Some(public) = &self.public {
            return Ok((**public).clone());
        }
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.key, self.algorithm.to_jwt())
            .map_err(|e| Error::builder("could not derive the public key").with_source(e))?;
        let mut value = serde_json::to_value(jwk)
            .map_err(|e| Error::builder("could not encode the public key").with_source(e))?;
        if let Value::Object(map) = &mut value {
            map.retain(|name, _| matches!(name.as_str(), "kty" | "crv" | "x" | "y" | "n" | "e"));
        }
        Ok(value)
    }

    /// Signs `claims` into a compact JWT.
    pub(crate) fn sign(&self, claims: &Map<String, Value>) -> Result<Secret, Error> {
        let mut header = Header::new(self.algorithm.to_jwt());
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key)
            .map(Secret::new)
            .map_err(|e| Error::auth("could not sign a JWT").with_source(e))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .finish()
    }
}

fn pem_error(kind: &str, e: jsonwebtoken::errors::Error) -> Error {
    // The error names what went wrong with the PEM, never its content.
    Error::builder(format!("could not read the {kind} private key (PEM)")).with_source(e)
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ===== minted tokens =====

/// JWTs a service mints in its own name for the services it calls: give it
/// to [`ClientBuilder::auth`](crate::ClientBuilder::auth). See the
/// [module docs](self).
///
/// ```
/// # fn demo() -> Result<(), courier::Error> {
/// use courier::auth::jwt::{ServiceJwt, SigningKey};
/// use std::time::Duration;
///
/// let jwt = ServiceJwt::new("billing", SigningKey::generate_ed25519()?)
///     .lifetime(Duration::from_secs(120))
///     .claim("scope", "ledger.read");
/// let token = jwt.mint("ledger")?; // what a client sends, minted by hand
/// assert_eq!(token.expose().split('.').count(), 3);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceJwt {
    key: SigningKey,
    issuer: String,
    subject: Option<String>,
    audience: Option<String>,
    lifetime: Duration,
    claims: Map<String, Value>,
}

/// The claims a minted token sets itself; [`ServiceJwt::claim`] cannot
/// replace them.
const REGISTERED: [&str; 7] = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"];

impl ServiceJwt {
    /// Tokens issued by `issuer` (the calling service's name), signed with
    /// `key`.
    pub fn new(issuer: impl Into<String>, key: SigningKey) -> Self {
        ServiceJwt {
            key,
            issuer: issuer.into(),
            subject: None,
            audience: None,
            lifetime: DEFAULT_LIFETIME,
            claims: Map::new(),
        }
    }

    /// The `sub` claim.
    ///
    /// Default is the issuer.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The `aud` claim, for every client this is given to.
    ///
    /// Default is the called service's `#[client(name = …)]`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// How long a token is valid (`exp` − `iat`). Clients re-mint a token
    /// before it expires (see [`crate::auth`]).
    ///
    /// Default is 5 minutes ([`DEFAULT_LIFETIME`]).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Another claim in every token (`scope`, `tenant`, …). The registered
    /// claims courier sets (`iss`, `sub`, `aud`, `iat`, `nbf`, `exp`,
    /// `jti`) cannot be replaced this way.
    ///
    /// Default is none.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        if !REGISTERED.contains(&name.as_str()) {
            self.claims.insert(name, value.into());
        }
        self
    }

    /// A new token for `audience`, valid from now for the lifetime.
    ///
    /// # Errors
    /// When signing fails or the OS's random generator does.
    pub fn mint(&self, audience: &str) -> Result<Secret, Error> {
        let now = now_secs();
        let mut claims = self.claims.clone();
        let subject = self.subject.as_deref().unwrap_or(&self.issuer);
        claims.insert("iss".into(), self.issuer.clone().into());
        claims.insert("sub".into(), subject.into());
        claims.insert("aud".into(), audience.into());
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert(
            "exp".into(),
            now.saturating_add(self.lifetime.as_secs()).into(),
        );
        claims.insert("jti".into(), random_id()?.into());
        self.key.sign(&claims)
    }

    pub(crate) fn skew(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// The token source for a built client of `service`.
    pub(crate) fn source(&self, service: &'static str) -> Result<Minter, Error> {
        let audience = self.audience.clone().unwrap_or_else(|| service.to_owned());
        if self.lifetime < Duration::from_secs(1) {
            return Err(Error::builder(
                "auth: a service JWT's lifetime must be at least 1 s",
            ));
        }
        let minter = Minter(Arc::new((self.clone(), audience)));
        minter
            .mint()
            .map_err(|e| Error::builder(format!("auth: could not mint a service JWT: {e}")))?;
        Ok(minter)
    }
}

impl fmt::Debug for ServiceJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceJwt")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("key", &self.key)
            .finish()
    }
}

/// A [`ServiceJwt`] bound to the audience of a built client.
pub(crate) struct Minter(Arc<(ServiceJwt, String)>);

impl Minter {
    fn mint(&self) -> Result<Fresh, Error> {
        let (jwt, audience) = &*self.0;
        let token = jwt.mint(audience)?;
        let mut header = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| Error::auth("a minted JWT cannot be sent in a header"))?;
        header.set_sensitive(true);
        Ok(Fresh {
            header,
            lifetime: jwt.lifetime,
        })
    }
}

impl Source for Minter {
    fn fetch(&self) -> BoxFuture<'static, Result<Fresh, Error>> {
        let result = self.mint();
        Box::pin(async move { result })
    }
}

/// A `private_key_jwt` client assertion (RFC 7523 §3): `iss` and `sub` the
/// client id, `aud` the token endpoint, one minute of life, a unique `jti`.
pub(crate) fn client_assertion(
    key: &SigningKey,
    client_id: &str,
    token_url: &str,
) -> Result<Secret, Error> {
    let now = now_secs();
    let mut claims = Map::new();
    claims.insert("iss".into(), client_id.into());
    claims.insert("sub".into(), client_id.into());
    claims.insert("aud".into(), token_url.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(60).into());
    claims.insert("jti".into(), random_id()?.into());
    key.sign(&claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_none_is_not_one() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.as_str()), Some(alg));
        }
        assert_eq!(Algorithm::from_name("none"), None);
        assert_eq!(Algorithm::from_name("hs256"), None);
    }

    #[test]
    fn short_hmac_secrets_are_refused() {
        assert!(SigningKey::hs256("too short").is_err());
        assert!(SigningKey::hs256("x".repeat(32)).is_ok());
    }

    #[test]
    fn a_pem_of_the_wrong_kind_is_an_error_that_does_not_quote_it() {
        let garbage = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
        for result in [
            SigningKey::rs256_pem(garbage),
            SigningKey::es256_pem(garbage),
            SigningKey::ed25519_pem(garbage),
        ] {
            let shown = result
                .err()
                .map(|e| format!("{e} {e:?}"))
                .unwrap_or_default();
            assert!(shown.contains("private key"), "{shown}");
            assert!(!shown.contains("bm90IGEga2V5"), "{shown}");
        }
    }

    #[test]
    fn generated_keys_publish_their_public_half_only() {
        for key in [SigningKey::generate_es256(), SigningKey::generate_ed25519()] {
            let key = key.map(|k| k.with_key_id("k1"));
            let jwks = key
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|k| k.jwks().map_err(|e| e.to_string()));
            let jwks: Value = jwks
                .ok()
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default();
            let jwk = &jwks["keys"][0];
            assert_eq!(jwk["kid"], "k1");
            assert_eq!(jwk["use"], "sig");
            assert!(jwk.get("d").is_none(), "no private part: {jwk}");
        }
        let hmac = SigningKey::hs256("x".repeat(32)).map(|k| k.jwks().is_err());
        assert_eq!(hmac.ok(), Some(true));
    }

    #[test]
    fn minted_tokens_carry_the_registered_claims_and_unique_ids() {
        let jwt = SigningKey::hs256("k".repeat(32)).map(|k| {
            ServiceJwt::new("billing", k.with_key_id("h1"))
                .claim("exp", 1)
                .claim("scope", "x")
        });
        let Ok(jwt) = jwt else { panic!("an HS256 key") };
        let claims = |t: &Secret| -> Map<String, Value> {
            let payload = t.expose().split('.').nth(1).unwrap_or_default();
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        };
        let (a, b) = (jwt.mint("ledger"), jwt.mint("ledger"));
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("minting works")
        };
        let (ca, cb) = (claims(&a), claims(&b));
        assert_eq!(ca["iss"], "billing");
        assert_eq!(ca["sub"], "billing");
        assert_eq!(ca["aud"], "ledger");
        assert_eq!(ca["scope"], "x");
        let iat = ca["iat"].as_u64().unwrap_or(0);
        assert_eq!(
            ca["exp"].as_u64(),
            Some(iat + 300),
            "`claim(\"exp\")` cannot replace it"
        );
        assert_ne!(ca["jti"], cb["jti"]);
        assert_eq!(ca["jti"].as_str().map(str::len), Some(32));
    }
}
