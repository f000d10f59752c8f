//! Minted service JWTs on real calls (feature `jwt`), decoded and verified
//! with `jsonwebtoken` itself, for each algorithm; cached, re-minted before
//! expiry and after a 401; and `private_key_jwt` against a token endpoint.
#![cfg(feature = "jwt")]

use std::collections::HashSet;
use std::time::Duration;

use courier::auth::OAuth2;
use courier::auth::jwt::{Algorithm, ServiceJwt, SigningKey};
use courier::{Error, client};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::{TokenServer, authorizations, healthy};

const RSA: &[u8] = include_bytes!("support/keys/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("support/keys/rsa.pub.pem");
const EC: &[u8] = include_bytes!("support/keys/ec.pem");
const EC_PUB: &[u8] = include_bytes!("support/keys/ec.pub.pem");
const ED: &[u8] = include_bytes!("support/keys/ed25519.pem");
const ED_PUB: &[u8] = include_bytes!("support/keys/ed25519.pub.pem");
const HMAC: &str = "an HMAC secret of at least 32 bytes, for tests";

#[client(name = "ledger")]
#[retry(disabled)]
trait Ledger {
    #[get("/entries")]
    async fn entries(&self) -> Result<String, Error>;
}

fn ledger(service: &MockServer, jwt: ServiceJwt) -> LedgerClient {
    support::builder::<LedgerClient>()
        .base_url(service.uri())
        .auth(jwt)
        .build()
        .expect("a client")
}

/// The bearer tokens a server saw.
async fn tokens(server: &MockServer) -> Vec<String> {
    authorizations(server)
        .await
        .into_iter()
        .map(|a| a.trim_start_matches("Bearer ").to_owned())
        .collect()
}

/// Verifies `token` as the ledger would, with `jsonwebtoken` only.
fn verified(token: &str, key: &DecodingKey, alg: jsonwebtoken::Algorithm) -> Map<String, Value> {
    let mut validation = Validation::new(alg);
    validation.set_audience(&["ledger"]);
    validation.set_issuer(&["billing"]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    validation.validate_nbf = true;
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
        Ok(data) => {
            assert_eq!(data.header.kid.as_deref(), Some("k1"), "the key id");
            data.claims
        }
        Err(e) => panic!("{alg:?}: the token does not verify: {e}"),
    }
}

/// Each algorithm the issue names: the token a call carries is a JWT that
/// `jsonwebtoken` verifies with the public key, with every claim in place.
#[tokio::test]
async fn minted_tokens_verify_with_the_public_key_for_each_algorithm() {
    let cases = [
        (
            SigningKey::hs256(HMAC),
            DecodingKey::from_secret(HMAC.as_bytes()),
            jsonwebtoken::Algorithm::HS256,
        ),
        (
            SigningKey::rs256_pem(RSA),
            DecodingKey::from_rsa_pem(RSA_PUB),
            jsonwebtoken::Algorithm::RS256,
        ),
        (
            SigningKey::es256_pem(EC),
            DecodingKey::from_ec_pem(EC_PUB),
            jsonwebtoken::Algorithm::ES256,
        ),
        (
            SigningKey::ed25519_pem(ED),
            DecodingKey::from_ed_pem(ED_PUB),
            jsonwebtoken::Algorithm::EdDSA,
        ),
    ];
    for (key, public, alg) in cases {
        let (key, public) = (key.expect("a signing key"), public.expect("a public key"));
        let service = healthy("ok").await;
        ledger(&service, ServiceJwt::new("billing", key.with_key_id("k1")))
            .entries()
            .await
            .expect("ok");

        let sent = tokens(&service).await;
        let claims = verified(&sent[0], &public, alg);
        assert_eq!(claims["aud"], "ledger", "the called service's name");
        assert_eq!(claims["sub"], "billing");
        let iat = claims["iat"].as_u64().unwrap_or(0);
        assert_eq!(claims["nbf"].as_u64(), Some(iat));
        assert_eq!(claims["exp"].as_u64(), Some(iat + 300), "5 minutes");
        let jti = claims["jti"].as_str().unwrap_or_default();
        assert!(
            jti.len() == 32 && jti.bytes().all(|b| b.is_ascii_hexdigit()),
            "{jti}"
        );
    }
}

/// The audience, subject, lifetime and extra claims can be set.
#[tokio::test]
async fn audience_subject_lifetime_and_claims_are_configurable() {
    let service = healthy("ok").await;
    let key = SigningKey::hs256(HMAC).expect("a key").with_key_id("k1");
    let jwt = ServiceJwt::new("billing", key)
        .subject("billing-worker")
        .audience("ledger.internal")
        .lifetime(Duration::from_secs(60))
        .claim("scope", "entries.read");
    ledger(&service, jwt).entries().await.expect("ok");

    let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["ledger.internal"]);
    let sent = tokens(&service).await;
    let secret = DecodingKey::from_secret(HMAC.as_bytes()).expect("a key");
    let claims = jsonwebtoken::decode::<Map<String, Value>>(&sent[0], &secret, &validation)
        .expect("verifies")
        .claims;
    assert_eq!(claims["sub"], "billing-worker");
    assert_eq!(claims["scope"], "entries.read");
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    assert_eq!(exp, iat.map(|i| i + 60));
}

/// Cached while valid, and re-minted before it expires: the new token
/// comes while the old one would still have been valid for a while.
#[tokio::test]
async fn a_minted_token_is_cached_and_reminted_before_it_expires() {
    let service = healthy("ok").await;
    // 4 s of life: used for 2 s (the skew is at most half of it).
    let key = SigningKey::generate_es256().expect("a key");
    let client = ledger(
        &service,
        ServiceJwt::new("billing", key).lifetime(Duration::from_secs(4)),
    );
    for _ in 0..3 {
        client.entries().await.expect("ok");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.entries().await.expect("ok");

    let sent = tokens(&service).await;
    let distinct: HashSet<_> = sent.iter().collect();
    assert_eq!(distinct.len(), 2, "one token for 3 calls, then a new one");
    let exp = |t: &str| {
        jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(t)
            .ok()
            .and_then(|d| d.claims["exp"].as_u64())
            .unwrap_or(0)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    assert!(exp(&sent[0]) >= now, "the first token had not expired yet");
    assert_eq!(sent[0], sent[2]);
    assert_ne!(sent[2], sent[3]);
}

/// A 401 to a minted token: a new one is minted and the request sent once
/// more (a verifier that rotated keys, or revoked that token).
#[tokio::test]
async fn a_401_to_a_minted_token_mints_a_new_one_once() {
    let service = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&service)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .with_priority(2)
        .mount(&service)
        .await;
    let key = SigningKey::generate_ed25519().expect("a key");
    let client = ledger(&service, ServiceJwt::new("billing", key));

    assert_eq!(client.entries().await.expect("resent"), "ok");
    let sent = tokens(&service).await;
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[0], sent[1], "a fresh token");
}

/// `private_key_jwt` (RFC 7523): the token request carries a client
/// assertion the authorization server can verify with the client's key.
#[tokio::test]
async fn private_key_jwt_sends_a_verifiable_client_assertion() {
    let tokens = TokenServer::start(3600).await;
    let service = healthy("ok").await;
    let key = SigningKey::rs256_pem(RSA)
        .expect("a key")
        .with_key_id("billing-1");
    let client = support::builder::<LedgerClient>()
        .base_url(service.uri())
        .auth(OAuth2::private_key_jwt(&tokens.url, "billing", key).scope("ledger.read"))
        .build()
        .expect("a client");

    client.entries().await.expect("ok");

    let request = &tokens.requests()[0];
    assert_eq!(request.authorization, None);
    assert_eq!(request.field("client_id"), Some("billing"));
    assert_eq!(request.field("scope"), Some("ledger.read"));
    assert_eq!(
        request.field("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    let assertion = request.field("client_assertion").unwrap_or_default();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[tokens.url.as_str()]);
    validation.set_issuer(&["billing"]);
    let public = DecodingKey::from_rsa_pem(RSA_PUB).expect("a key");
    let data = jsonwebtoken::decode::<Map<String, Value>>(assertion, &public, &validation)
        .expect("the assertion verifies");
    assert_eq!(data.header.kid.as_deref(), Some("billing-1"));
    assert_eq!(data.claims["sub"], "billing");
    let (iat, exp) = (data.claims["iat"].as_u64(), data.claims["exp"].as_u64());
    assert_eq!(exp, iat.map(|i| i + 60));
    assert!(data.claims["jti"].is_string());
}

/// Keys that cannot sign are refused when made, never at the first call.
#[test]
fn keys_of_the_wrong_kind_are_refused_when_made() {
    assert!(
        SigningKey::rs256_pem(EC).is_err(),
        "an EC key is no RSA key"
    );
    assert!(SigningKey::es256_pem(RSA).is_err());
    assert!(SigningKey::ed25519_pem(RSA).is_err());
    assert!(SigningKey::hs256("short").is_err(), "RFC 7518 §3.2");
    assert_eq!(
        SigningKey::rs256_pem(RSA).map(|k| k.algorithm()).ok(),
        Some(Algorithm::RS256)
    );
}
