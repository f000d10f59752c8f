//! The receiving side (feature `jwt`): `VerifyJwt` in front of an axum
//! service, keys given or from a JWKS server that rotates, and every kind
//! of bad token the issue lists. Tokens are made (and forged) with
//! `jsonwebtoken` directly, not with courier's minting code.
#![cfg(feature = "jwt")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::routing::get;
use base64::Engine as _;
use courier::Event;
use courier::auth::jwt::{Algorithm, ServiceJwt, SigningKey};
use courier::auth::verify::{Claims, Jwks, Keys, VerifyJwt, VerifyingKey};
use http::HeaderValue;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

mod support;
use support::serve;

const RSA: &[u8] = include_bytes!("support/keys/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("support/keys/rsa.pub.pem");
const RSA_OTHER: &[u8] = include_bytes!("support/keys/rsa-other.pem");
const EC: &[u8] = include_bytes!("support/keys/ec.pem");
const EC_PUB: &[u8] = include_bytes!("support/keys/ec.pub.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Claims a good token has, with `changes` applied (`null` removes one).
fn claims(changes: Value) -> Value {
    let mut claims = json!({
        "iss": "billing", "sub": "billing", "aud": "ledger",
        "iat": now(), "nbf": now(), "exp": now() + 300, "jti": "j-1",
    });
    if let (Value::Object(claims), Value::Object(changes)) = (&mut claims, changes) {
        for (name, value) in changes {
            if value.is_null() {
                claims.remove(&name);
            } else {
                claims.insert(name, value);
            }
        }
    }
    claims
}

fn sign(
    alg: jsonwebtoken::Algorithm,
    key: &EncodingKey,
    kid: Option<&str>,
    claims: &Value,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signed")
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA).expect("an RSA key")
}

fn rs256(kid: &str, claims: &Value) -> String {
    sign(jsonwebtoken::Algorithm::RS256, &rsa(), Some(kid), claims)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::try_from(format!("Bearer {token}")).expect("a header value")
}

/// The ledger's verifier: its RSA and EC keys, by key id.
fn verifier() -> VerifyJwt {
    let keys: Keys = [
        VerifyingKey::rsa_pem(RSA_PUB)
            .expect("a key")
            .with_key_id("rsa-1"),
        VerifyingKey::ec_pem(EC_PUB)
            .expect("a key")
            .with_key_id("ec-1"),
    ]
    .into_iter()
    .collect();
    VerifyJwt::new(keys, "ledger")
        .issuer("billing")
        .realm("ledger")
}

async fn reason(verify: &VerifyJwt, token: &str) -> &'static str {
    match verify.verify(Some(&bearer(token))).await {
        Ok(_) => "accepted",
        Err(rejection) => rejection.reason(),
    }
}

/// The issue's table of bad input: each is refused, for its own reason, and
/// nothing panics. (The reason is for logs; the caller sees only 401.)
#[tokio::test]
async fn bad_tokens_are_refused_each_for_its_reason() {
    let verify = verifier();
    let good = claims(json!({}));
    let header = |h: Value| b64(h.to_string().as_bytes());
    let payload = b64(good.to_string().as_bytes());
    let cases: Vec<(&str, String, &str)> = vec![
        ("a good RS256 token", rs256("rsa-1", &good), "accepted"),
        (
            "a good ES256 token",
            sign(
                jsonwebtoken::Algorithm::ES256,
                &EncodingKey::from_ec_pem(EC).expect("an EC key"),
                Some("ec-1"),
                &good,
            ),
            "accepted",
        ),
        ("not a JWT", "abc".into(), "malformed token"),
        ("two parts", "a.b".into(), "malformed token"),
        (
            "four parts",
            format!("{}.x", rs256("rsa-1", &good)),
            "malformed token",
        ),
        (
            "a header that is not JSON",
            format!("{}.{payload}.c2ln", b64(b"{nope")),
            "malformed token",
        ),
        ("garbage Base64", "!!!.???.***".into(), "malformed token"),
        (
            "a payload that is not JSON",
            {
                let t = rs256("rsa-1", &good);
                let parts: Vec<&str> = t.split('.').collect();
                format!("{}.{}.{}", parts[0], b64(b"[1,2"), parts[2])
            },
            "bad signature",
        ),
        (
            "wrong aud",
            rs256("rsa-1", &claims(json!({"aud": "payroll"}))),
            "wrong audience",
        ),
        (
            "no aud",
            rs256("rsa-1", &claims(json!({"aud": null}))),
            "wrong audience",
        ),
        (
            "wrong iss",
            rs256("rsa-1", &claims(json!({"iss": "mallory"}))),
            "wrong issuer",
        ),
        (
            "expired",
            rs256("rsa-1", &claims(json!({"exp": now() - 3600}))),
            "expired",
        ),
        (
            "no exp",
            rs256("rsa-1", &claims(json!({"exp": null}))),
            "malformed token",
        ),
        (
            "a future nbf",
            rs256("rsa-1", &claims(json!({"nbf": now() + 3600}))),
            "not yet valid",
        ),
        ("an unknown kid", rs256("rsa-9", &good), "unknown key"),
        (
            "signed by another key under a known kid",
            sign(
                jsonwebtoken::Algorithm::RS256,
                &EncodingKey::from_rsa_pem(RSA_OTHER).expect("a key"),
                Some("rsa-1"),
                &good,
            ),
            "bad signature",
        ),
        (
            "alg: none",
            format!(
                "{}.{payload}.",
                header(json!({"alg": "none", "kid": "rsa-1"}))
            ),
            "algorithm not allowed",
        ),
        (
            "HS256 signed with the RSA public key (algorithm confusion)",
            sign(
                jsonwebtoken::Algorithm::HS256,
                &EncodingKey::from_secret(RSA_PUB).expect("a key"),
                Some("rsa-1"),
                &good,
            ),
            "algorithm not allowed",
        ),
        (
            "ES256 claimed with the RSA key",
            sign(
                jsonwebtoken::Algorithm::ES256,
                &EncodingKey::from_ec_pem(EC).expect("an EC key"),
                Some("rsa-1"),
                &good,
            ),
            "algorithm not allowed",
        ),
        (
            "a crit extension",
            format!(
                "{}.{payload}.c2ln",
                header(json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}))
            ),
            "malformed token",
        ),
        ("a 1 MB token", "a".repeat(1024 * 1024), "token too large"),
    ];
    for (what, token, expected) in cases {
        assert_eq!(reason(&verify, &token).await, expected, "{what}");
    }
}

/// Not a bearer token at all, or none, or two.
#[tokio::test]
async fn the_authorization_header_must_be_one_bearer_token() {
    let verify = verifier();
    let reason_of = |value: Option<HeaderValue>| {
        let verify = verify.clone();
        async move {
            verify
                .verify(value.as_ref())
                .await
                .err()
                .map(|r| r.reason())
        }
    };
    assert_eq!(reason_of(None).await, Some("no bearer token"));
    let basic = HeaderValue::from_static("Basic YmlsbGluZzpzZWNyZXQ=");
    assert_eq!(reason_of(Some(basic)).await, Some("not a bearer token"));
    let lower = bearer(&rs256("rsa-1", &claims(json!({}))))
        .to_str()
        .map(|v| v.replace("Bearer", "bearer"))
        .ok()
        .and_then(|v| HeaderValue::try_from(v).ok());
    assert_eq!(
        reason_of(lower).await,
        None,
        "the scheme is case-insensitive"
    );
}

/// Only the algorithms allowed: an ES256 token is refused when only RS256
/// is.
#[tokio::test]
async fn the_algorithm_allow_list_is_enforced() {
    let verify = verifier().algorithms([Algorithm::RS256]);
    let es = sign(
        jsonwebtoken::Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC).expect("an EC key"),
        Some("ec-1"),
        &claims(json!({})),
    );
    assert_eq!(reason(&verify, &es).await, "algorithm not allowed");
    assert_eq!(
        reason(&verify, &rs256("rsa-1", &claims(json!({})))).await,
        "accepted"
    );
}

/// Through HTTP: the handler gets the claims; a refusal is a 401 with an
/// RFC 6750 challenge that tells nothing; a huge header never reaches a
/// handler and the server keeps serving.
#[tokio::test]
async fn over_http_a_refusal_is_a_401_challenge_and_claims_reach_the_handler() {
    let app = axum::Router::new()
        .route(
            "/whoami",
            get(|Extension(claims): Extension<Claims>| async move {
                format!(
                    "{} {}",
                    claims.subject().unwrap_or("?"),
                    claims.jti().unwrap_or("?")
                )
            }),
        )
        .layer(verifier());
    let base = serve(app).await;
    let http = reqwest::Client::new();
    let call = |token: Option<String>| {
        let mut request = http.get(format!("{base}/whoami"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send()
    };

    let ok = call(Some(rs256("rsa-1", &claims(json!({})))))
        .await
        .expect("answered");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap_or_default(), "billing j-1");

    let none = call(None).await.expect("answered");
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers().get("www-authenticate"),
        Some(&HeaderValue::from_static("Bearer realm=\"ledger\""))
    );
    let expired = call(Some(rs256("rsa-1", &claims(json!({"exp": now() - 3600})))))
        .await
        .expect("answered");
    assert_eq!(expired.status(), 401);
    assert_eq!(
        expired.headers().get("www-authenticate"),
        Some(&HeaderValue::from_static(
            "Bearer realm=\"ledger\", error=\"invalid_token\""
        ))
    );
    assert_eq!(expired.text().await.unwrap_or_default(), "", "no detail");

    let huge = call(Some("a".repeat(1024 * 1024))).await;
    assert!(huge.is_err() || huge.is_ok_and(|r| r.status() != 200));
    let again = call(Some(rs256("rsa-1", &claims(json!({})))))
        .await
        .expect("answered");
    assert_eq!(again.status(), 200, "still serving");
}

// ===== JWKS =====

/// A JWKS server whose document can be changed; it counts fetches.
#[derive(Clone)]
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        let body = Arc::new(Mutex::new(body));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (b, f) = (Arc::clone(&body), Arc::clone(&fetches));
        let app = axum::Router::new().route(
            "/jwks.json",
            get(move || {
                let (b, f) = (Arc::clone(&b), Arc::clone(&f));
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    b.lock().unwrap_or_else(PoisonError::into_inner).clone()
                }
            }),
        );
        let base = serve(app).await;
        JwksServer {
            url: format!("{base}/jwks.json"),
            body,
            fetches,
        }
    }

    fn set(&self, body: String) {
        *self.body.lock().unwrap_or_else(PoisonError::into_inner) = body;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// The public JWK of the RSA test key as a set, under `kid`.
fn rsa_jwks(kids: &[&str]) -> String {
    let key = SigningKey::rs256_pem(RSA).expect("a key");
    let keys: Vec<Value> = kids
        .iter()
        .map(|kid| {
            let set: Value =
                serde_json::from_str(&key.clone().with_key_id(*kid).jwks().expect("a JWKS"))
                    .expect("JSON");
            set["keys"][0].clone()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// Keys by `kid` from a JWKS URL, fetched once; a rotated-in key is found
/// by fetching again when a token names it.
#[tokio::test]
async fn jwks_keys_are_found_by_kid_and_rotation_refetches() {
    let jwks = JwksServer::start(rsa_jwks(&["k1"])).await;
    let verify = VerifyJwt::new(
        Jwks::new(&jwks.url)
            .expect("a URL")
            .min_refetch_interval(Duration::ZERO),
        "ledger",
    );
    let good = claims(json!({}));

    for _ in 0..3 {
        assert_eq!(reason(&verify, &rs256("k1", &good)).await, "accepted");
    }
    assert_eq!(jwks.fetches(), 1, "fetched once, then cached");

    jwks.set(rsa_jwks(&["k1", "k2"]));
    assert_eq!(reason(&verify, &rs256("k2", &good)).await, "accepted");
    assert_eq!(jwks.fetches(), 2, "an unknown kid fetched the set again");
}

/// Made-up `kid`s cannot make the verifier hammer the key server: at most
/// one fetch per interval.
#[tokio::test]
async fn refetching_for_unknown_kids_is_rate_limited() {
    let jwks = JwksServer::start(rsa_jwks(&["k1"])).await;
    let verify = VerifyJwt::new(
        Jwks::new(&jwks.url)
            .expect("a URL")
            .min_refetch_interval(Duration::from_secs(3600)),
        "ledger",
    );
    let good = claims(json!({}));
    assert_eq!(reason(&verify, &rs256("k1", &good)).await, "accepted");
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let verify = verify.clone();
            let token = rs256(&format!("made-up-{i}"), &good);
            tokio::spawn(async move { reason(&verify, &token).await })
        })
        .collect();
    for attempt in attempts {
        assert_eq!(attempt.await.ok(), Some("unknown key"));
    }
    assert_eq!(jwks.fetches(), 1);
}

/// A JWKS that is garbage (or too big, or offers an HMAC secret) gives no
/// key and no panic; an event says so; a fixed set is picked up.
#[tokio::test]
async fn a_garbage_jwks_gives_no_keys_and_no_panic() {
    let jwks = JwksServer::start("this is not JSON".into()).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let verify = VerifyJwt::new(
        Jwks::new(&jwks.url)
            .expect("a URL")
            .min_refetch_interval(Duration::ZERO),
        "ledger",
    )
    .on_event(move |e: &Event<'_>| {
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(e.to_string());
    });
    let good = claims(json!({}));

    for garbage in [
        "this is not JSON".to_owned(),
        r#"{"keys": "nope"}"#.to_owned(),
        json!({"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB", "kid": "k1"}]}).to_string(),
        format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(2 * 1024 * 1024)),
    ] {
        jwks.set(garbage);
        assert_eq!(reason(&verify, &rs256("k1", &good)).await, "unknown key");
    }
    // An HMAC secret in a published set is never a key: a token signed with
    // it is refused.
    let secret = b"a secret that should never be published";
    jwks.set(json!({"keys": [{"kty": "oct", "k": b64(secret), "kid": "k1"}]}).to_string());
    let forged = sign(
        jsonwebtoken::Algorithm::HS256,
        &EncodingKey::from_secret(secret).expect("a key"),
        Some("k1"),
        &good,
    );
    assert_eq!(reason(&verify, &forged).await, "unknown key");

    jwks.set(rsa_jwks(&["k1"]));
    assert_eq!(reason(&verify, &rs256("k1", &good)).await, "accepted");
    let events = events
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(events.len() >= 3, "{events:?}");
    assert!(events[0].contains(&jwks.url), "{events:?}");
}

/// End to end with courier's own parts: a client minting with a generated
/// key, a verifier reading that key's JWKS.
#[tokio::test]
async fn a_generated_keys_jwks_verifies_what_it_signs() {
    for key in [SigningKey::generate_es256(), SigningKey::generate_ed25519()] {
        let key = key.expect("a key").with_key_id("gen-1");
        let jwks = JwksServer::start(key.jwks().expect("a JWKS")).await;
        let verify =
            VerifyJwt::new(Jwks::new(&jwks.url).expect("a URL"), "ledger").issuer("billing");
        let token = ServiceJwt::new("billing", key.clone())
            .mint("ledger")
            .expect("minted");
        assert_eq!(reason(&verify, token.expose()).await, "accepted");
        let local = VerifyJwt::new(key.verifying_key().expect("its public half"), "ledger");
        assert_eq!(reason(&local, token.expose()).await, "accepted");
        let other = ServiceJwt::new("billing", key)
            .mint("payroll")
            .expect("minted");
        assert_eq!(reason(&verify, other.expose()).await, "wrong audience");
    }
}
