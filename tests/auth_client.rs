//! Credentials on every call (`.auth(…)`, feature `auth`): static tokens and
//! API keys, and OAuth2 client credentials against a real token endpoint
//! (an axum server speaking RFC 6749: tokens, `invalid_client`, garbage,
//! slow answers): caching, single-flight, the 401 resend, what a failing
//! token endpoint means for the breaker and retries, and secrets that never
//! show.
#![cfg(feature = "auth")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use courier::auth::{Auth, OAuth2, Secret};
use courier::{BoxError, CircuitState, Error, ErrorKind, Event, Inspect, Outgoing, client};
use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::{TokenAnswer, TokenServer, authorizations, eventually, healthy, received};

#[client(name = "ledger")]
#[retry(max_attempts = 3, backoff = "1ms..2ms")]
trait Ledger {
    #[get("/entries")]
    async fn entries(&self) -> Result<String, Error>;

    #[post("/entries")]
    async fn add(&self, #[body] entry: &str) -> Result<String, Error>;

    #[get("/health")]
    #[auth(none)]
    async fn health(&self) -> Result<String, Error>;

    #[get("/entries")]
    #[timeout("150ms")]
    async fn quick(&self) -> Result<String, Error>;
}

fn oauth2(tokens: &TokenServer) -> OAuth2 {
    OAuth2::client_credentials(&tokens.url, "billing", Secret::new("s3cr3t"))
}

fn ledger(service: &MockServer, auth: impl Into<Auth>) -> LedgerClient {
    support::builder::<LedgerClient>()
        .base_url(service.uri())
        .auth(auth)
        .build()
        .expect("a client")
}

fn query_of(request: &wiremock::Request) -> String {
    request.url.query().unwrap_or_default().to_owned()
}

// ===== static credentials =====

/// The simplest credentials go on every call but the public one.
#[tokio::test]
async fn a_static_bearer_token_goes_on_every_call_but_public_ones() {
    let service = healthy("ok").await;
    let client = ledger(&service, Auth::bearer("t-42"));

    client.entries().await.expect("ok");
    client.add("x").await.expect("ok");
    client.health().await.expect("ok");

    assert_eq!(
        authorizations(&service).await,
        ["Bearer t-42", "Bearer t-42", "-"],
        "#[auth(none)] sends nothing"
    );
}

/// API keys where the service wants them: a header of its choice, or the
/// query string (next to the call's own parameters).
#[tokio::test]
async fn api_keys_go_in_a_header_or_the_query() {
    let service = healthy("ok").await;
    ledger(&service, Auth::api_key("X-Api-Key", "k-7"))
        .entries()
        .await
        .expect("ok");
    ledger(&service, Auth::api_key_query("api_key", "k 8&x"))
        .entries()
        .await
        .expect("ok");

    let requests = service.received_requests().await.unwrap_or_default();
    let key = requests[0].headers.get("x-api-key").map(|v| v.as_bytes());
    assert_eq!(key, Some(&b"k-7"[..]));
    assert_eq!(query_of(&requests[0]), "");
    assert_eq!(
        query_of(&requests[1]),
        "api_key=k%208%26x",
        "encoded as one value"
    );
    assert!(requests[1].headers.get("x-api-key").is_none());
}

/// `.auth` runs after the user's interceptors: the client's credentials win.
#[tokio::test]
async fn the_clients_credentials_win_over_an_interceptor() {
    let service = healthy("ok").await;
    let client = support::builder::<LedgerClient>()
        .base_url(service.uri())
        .interceptor(|r: &mut Outgoing<'_>| -> Result<(), BoxError> {
            r.set_header("authorization", "Bearer from-interceptor")?;
            r.set_header("x-tenant", "eu")?;
            Ok(())
        })
        .auth(Auth::bearer("from-auth"))
        .build()
        .expect("a client");

    client.entries().await.expect("ok");

    assert_eq!(authorizations(&service).await, ["Bearer from-auth"]);
    let requests = service.received_requests().await.unwrap_or_default();
    assert!(
        requests[0].headers.get("x-tenant").is_some(),
        "the rest stays"
    );
}

/// Bad settings fail the build, and the error does not echo the secret.
#[test]
fn bad_credentials_fail_the_build_without_echoing_them() {
    let build = |auth: Auth| {
        support::builder::<LedgerClient>()
            .base_url("http://127.0.0.1:1")
            .auth(auth)
            .build()
            .err()
    };
    for (auth, says) in [
        (Auth::bearer("PLANTED\r\nX-Evil: 1"), "control character"),
        (Auth::api_key("bad header", "k"), "not a valid header name"),
        (Auth::api_key_query("", "k"), "needs a name"),
        (
            OAuth2::client_credentials("ftp://auth/token", "id", "s").into(),
            "token URL",
        ),
    ] {
        let err = build(auth).expect("a build error");
        assert!(err.is_builder());
        let shown = format!("{err} {err:?}");
        assert!(shown.contains(says), "{shown}");
        assert!(
            !shown.contains("PLANTED") && !shown.contains("Evil"),
            "{shown}"
        );
    }
}

/// A static token that the service refuses is not sent again: it would be
/// the same token.
#[tokio::test]
async fn a_refused_static_token_is_not_sent_again() {
    let service = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(401))
        .mount(&service)
        .await;
    let err = ledger(&service, Auth::bearer("t-42"))
        .entries()
        .await
        .expect_err("401");
    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_eq!(received(&service).await, 1);
}

// ===== OAuth2 client credentials =====

/// RFC 6749 §4.4 with `client_secret_basic`: the form and the Basic
/// credentials (form-encoded, then Base64, as §2.3.1 says).
#[tokio::test]
async fn oauth2_asks_the_token_endpoint_with_basic_credentials_and_the_form() {
    let tokens = TokenServer::start(3600).await;
    let service = healthy("ok").await;
    let client = ledger(
        &service,
        OAuth2::client_credentials(&tokens.url, "billing:eu", Secret::new("s3 cr&t"))
            .scopes(["ledger.read", "ledger.write"])
            .audience("https://ledger")
            .resource("https://ledger/api")
            .param("tenant", "eu-1"),
    );

    client.entries().await.expect("ok");

    assert_eq!(authorizations(&service).await, ["Bearer tok-1"]);
    let request = &tokens.requests()[0];
    assert_eq!(request.field("grant_type"), Some("client_credentials"));
    assert_eq!(request.field("scope"), Some("ledger.read ledger.write"));
    assert_eq!(request.field("audience"), Some("https://ledger"));
    assert_eq!(request.field("resource"), Some("https://ledger/api"));
    assert_eq!(request.field("tenant"), Some("eu-1"));
    assert_eq!(request.field("client_secret"), None, "not in the form");
    let basic = request
        .authorization
        .as_deref()
        .and_then(|b| b.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    assert_eq!(basic.as_deref(), Some("billing%3Aeu:s3+cr%26t"));
}

/// `client_secret_post`: id and secret in the form, no Basic header.
#[tokio::test]
async fn oauth2_can_send_the_secret_in_the_form() {
    let tokens = TokenServer::start(3600).await;
    let service = healthy("ok").await;
    ledger(&service, oauth2(&tokens).client_secret_post())
        .entries()
        .await
        .expect("ok");

    let request = &tokens.requests()[0];
    assert_eq!(request.field("client_id"), Some("billing"));
    assert_eq!(request.field("client_secret"), Some("s3cr3t"));
    assert_eq!(request.authorization, None);
}

/// A token is cached for its lifetime: ten calls, one token request.
#[tokio::test]
async fn a_token_is_cached_and_shared_by_clones() {
    let tokens = TokenServer::start(3600).await;
    let service = healthy("ok").await;
    let client = ledger(&service, oauth2(&tokens));
    for _ in 0..5 {
        client.entries().await.expect("ok");
        client.clone().entries().await.expect("ok");
    }
    assert_eq!(tokens.count(), 1);
    assert!(
        authorizations(&service)
            .await
            .iter()
            .all(|a| a == "Bearer tok-1")
    );
}

/// The issue's case: 100 calls at once with an expired token cause exactly
/// one token request, and all of them go out with the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_calls_with_an_expired_token_cause_one_token_request() {
    let tokens = TokenServer::start(1).await; // usable for half a second
    let service = healthy("ok").await;
    let client = ledger(&service, oauth2(&tokens));
    client.entries().await.expect("ok");
    assert_eq!(tokens.count(), 1);

    // The next token lives long, and takes a while to come: every call
    // below finds the request in flight.
    tokens.answer(TokenAnswer::Token {
        expires_in: Some(3600),
    });
    tokens.delay(Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(700)).await; // past tok-1's use
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.entries().await })
        })
        .collect();
    for call in calls {
        call.await.expect("joined").expect("ok");
    }

    assert_eq!(tokens.count(), 2, "one token request for 100 calls");
    let sent = authorizations(&service).await;
    assert_eq!(sent.len(), 101);
    assert_eq!(sent.iter().filter(|a| *a == "Bearer tok-2").count(), 100);
}

/// Refreshed ahead: once most of its life is gone, a call still uses the
/// valid token and a new one is fetched in the background.
#[tokio::test]
async fn a_token_is_refreshed_ahead_of_expiry_without_making_a_call_wait() {
    let tokens = TokenServer::start(2).await;
    let service = healthy("ok").await;
    // 2 s, no skew: used for 2 s, refreshed after 1.5 s.
    let client = ledger(&service, oauth2(&tokens).expiry_skew(Duration::ZERO));
    client.entries().await.expect("ok");
    tokio::time::sleep(Duration::from_millis(1600)).await;

    client.entries().await.expect("ok");
    assert_eq!(
        authorizations(&service).await,
        ["Bearer tok-1", "Bearer tok-1"],
        "the call went on with the valid token"
    );
    // The refresh runs in the background; calls pick up its token.
    let refreshed = eventually(Duration::from_secs(2), || async {
        client.entries().await.is_ok()
            && authorizations(&service).await.last().map(String::as_str) == Some("Bearer tok-2")
    })
    .await;
    assert!(refreshed, "{:?}", authorizations(&service).await);
    assert_eq!(tokens.count(), 2);
}

/// A 401 drops the token and sends the request once more with a fresh one:
/// also a POST (a 401 is refused before processing).
#[tokio::test]
async fn a_401_drops_the_token_and_resends_once_with_a_fresh_one() {
    let tokens = TokenServer::start(3600).await;
    let service = MockServer::start().await;
    Mock::given(path("/entries"))
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
    let client = ledger(&service, oauth2(&tokens));

    assert_eq!(client.add("x").await.expect("resent"), "ok");

    assert_eq!(
        authorizations(&service).await,
        ["Bearer tok-1", "Bearer tok-2"]
    );
    assert_eq!(tokens.count(), 2);
    let bodies: Vec<_> = service
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(bodies[0], bodies[1], "the same request, body included");
}

/// Never more than once: a service that keeps refusing gets two requests.
#[tokio::test]
async fn a_401_is_resent_once_never_more() {
    let tokens = TokenServer::start(3600).await;
    let service = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(401).set_body_string("who are you"))
        .mount(&service)
        .await;

    let err = ledger(&service, oauth2(&tokens))
        .entries()
        .await
        .expect_err("refused");

    assert_eq!(err.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_eq!(err.attempts(), 1, "the resend is part of its attempt");
    assert_eq!(received(&service).await, 2);
    assert_eq!(tokens.count(), 2);
}

/// `invalid_client`: an `Auth` error naming the endpoint and the code,
/// never the secret nor the server's description; nothing sent.
#[tokio::test]
async fn a_refusing_token_endpoint_is_an_auth_error_naming_endpoint_and_code() {
    let tokens = TokenServer::start(3600).await;
    tokens.answer(TokenAnswer::Error {
        status: 401,
        code: "invalid_client",
    });
    let service = healthy("ok").await;
    let client = ledger(
        &service,
        OAuth2::client_credentials(&tokens.url, "billing", "PLANTED-SECRET"),
    );

    let err = client.entries().await.expect_err("no token");

    assert!(err.is_auth());
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(!err.is_status() && !err.is_interceptor());
    assert_eq!(err.attempts(), 0);
    let shown = err.to_string();
    assert!(shown.contains(&tokens.url), "{shown}");
    assert!(shown.contains("invalid_client"), "{shown}");
    let everything = format!("{err} {err:?}");
    assert!(!everything.contains("PLANTED"), "{everything}");
    assert_eq!(received(&service).await, 0);
    assert_eq!(tokens.count(), 1, "not retried by the retry policy");
}

/// A token endpoint answering 200 with something that is no token.
#[tokio::test]
async fn a_200_without_a_usable_token_is_an_auth_error() {
    let tokens = TokenServer::start(3600).await;
    let service = healthy("ok").await;
    let client = ledger(&service, oauth2(&tokens));
    for (body, says) in [
        ("<html>maintenance</html>", "not a token response"),
        (
            r#"{"token_type":"Bearer","expires_in":60}"#,
            "without an access_token",
        ),
        (
            r#"{"access_token":"","token_type":"Bearer"}"#,
            "without an access_token",
        ),
        (
            r#"{"access_token":"a\nb","token_type":"Bearer"}"#,
            "cannot be sent",
        ),
        (r#"{"access_token":"x","token_type":"mac"}"#, "only Bearer"),
        ("", "not a token response"),
    ] {
        tokens.answer(TokenAnswer::Raw { status: 200, body });
        let err = client.entries().await.expect_err(body);
        assert!(err.is_auth(), "{body}: {err}");
        assert!(err.to_string().contains(says), "{body}: {err}");
    }
    assert_eq!(received(&service).await, 0);
}

/// The token request has its own timeout, inside the call's deadline; and
/// a call whose deadline is shorter than that ends at its deadline.
#[tokio::test]
async fn a_slow_token_endpoint_is_cut_by_the_token_timeout_or_the_deadline() {
    let tokens = TokenServer::start(3600).await;
    tokens.delay(Duration::from_secs(3));
    let service = healthy("ok").await;

    let client = ledger(
        &service,
        oauth2(&tokens).token_timeout(Duration::from_millis(200)),
    );
    let started = Instant::now();
    let err = client.entries().await.expect_err("token timeout");
    assert!(err.is_auth() && !err.is_timeout(), "{err}");
    assert!(err.to_string().contains("did not answer within"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let client = ledger(&service, oauth2(&tokens));
    let started = Instant::now();
    let err = client.quick().await.expect_err("the call's deadline");
    assert!(err.is_timeout(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(received(&service).await, 0);
}

/// A failing token endpoint is not the called service's failure: its
/// breaker stays closed, and the retry policy does not repeat the call.
#[tokio::test]
async fn a_failing_token_endpoint_neither_opens_the_breaker_nor_is_retried() {
    #[client(name = "ledger")]
    #[retry(max_attempts = 3, backoff = "1ms..2ms")]
    #[circuit_breaker(window = 4, min_calls = 2, failure_rate = 50)]
    trait Strict {
        #[get("/entries")]
        async fn entries(&self) -> Result<String, Error>;
    }

    let tokens = TokenServer::start(3600).await;
    tokens.answer(TokenAnswer::Raw {
        status: 503,
        body: "down",
    });
    let service = healthy("ok").await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let client = support::builder::<StrictClient>()
        .base_url(service.uri())
        .auth(oauth2(&tokens))
        .on_event(move |e: &Event<'_>| {
            if let Ok(mut seen) = seen.lock() {
                seen.push(e.to_string());
            }
        })
        .build()
        .expect("a client");

    for _ in 0..10 {
        let err = client.entries().await.expect_err("no token");
        assert!(err.is_auth(), "{err}");
    }

    assert_eq!(client.circuit_state("entries"), Some(CircuitState::Closed));
    assert_eq!(tokens.count(), 10, "one token request per call");
    assert_eq!(received(&service).await, 0);
    let events = events.lock().map(|e| e.clone()).unwrap_or_default();
    assert_eq!(events.len(), 10, "{events:?}");
    assert!(events[0].contains("token request for ledger"), "{events:?}");
}

/// A token endpoint that is not there at all.
#[tokio::test]
async fn an_unreachable_token_endpoint_is_an_auth_error() {
    let service = healthy("ok").await;
    let client = ledger(
        &service,
        OAuth2::client_credentials("http://127.0.0.1:1/token", "billing", "s"),
    );
    let err = client.entries().await.expect_err("no token");
    assert!(err.is_auth());
    assert!(err.to_string().contains("could not connect"), "{err}");
}

// ===== secrets never show =====

/// Planted secrets and tokens appear in no `Debug` or `Display` of the
/// builder, the client, errors or events.
#[tokio::test]
async fn secrets_and_tokens_never_show_in_debug_errors_or_events() {
    let tokens = TokenServer::start(3600).await;
    let service = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(401))
        .mount(&service)
        .await;
    let events = Arc::new(Mutex::new(String::new()));
    let seen = Arc::clone(&events);
    let builder = support::builder::<LedgerClient>()
        .base_url(service.uri())
        .on_event(move |e: &Event<'_>| {
            if let Ok(mut seen) = seen.lock() {
                seen.push_str(&format!("{e} {e:?}\n"));
            }
        })
        .auth(OAuth2::client_credentials(
            &tokens.url,
            "billing",
            "PLANTED-CLIENT-SECRET",
        ));
    let mut shown = format!("{builder:?}\n");
    let client = builder.build().expect("a client");
    shown.push_str(&format!("{client:?}\n"));
    let err = client.entries().await.expect_err("401");
    shown.push_str(&format!("{err} {err:?}\n"));
    // A refusing token endpoint: its error and its event.
    tokens.answer(TokenAnswer::Error {
        status: 400,
        code: "invalid_scope",
    });
    let seen = Arc::clone(&events);
    let refused = support::builder::<LedgerClient>()
        .base_url(service.uri())
        .on_event(move |e: &Event<'_>| {
            if let Ok(mut seen) = seen.lock() {
                seen.push_str(&format!("{e} {e:?}\n"));
            }
        })
        .auth(oauth2(&tokens).param("x", "PLANTED-PARAM"))
        .build()
        .expect("a client");
    let err = refused.entries().await.expect_err("invalid_scope");
    assert!(err.is_auth());
    shown.push_str(&format!("{err} {err:?}\n"));

    for auth in [
        Auth::bearer("PLANTED-BEARER"),
        Auth::api_key("x-api-key", "PLANTED-KEY"),
        Auth::api_key_query("key", "PLANTED-QUERY-KEY"),
    ] {
        shown.push_str(&format!("{auth:?}\n"));
        let client = ledger(&service, auth);
        shown.push_str(&format!("{client:?}\n"));
        let err = client.entries().await.expect_err("401");
        shown.push_str(&format!("{err} {err:?}\n"));
    }
    shown.push_str(&format!(
        "{:?} {}",
        Secret::new("PLANTED-SECRET"),
        Secret::new("PLANTED-SECRET")
    ));
    let events = events.lock().map(|e| e.clone()).unwrap_or_default();
    assert!(events.contains("invalid_scope"), "{events}");
    shown.push_str(&events);

    // The tokens the service saw are the real ones…
    let sent = authorizations(&service).await;
    assert!(sent.contains(&"Bearer tok-1".to_owned()), "{sent:?}");
    assert!(
        sent.contains(&"Bearer PLANTED-BEARER".to_owned()),
        "{sent:?}"
    );
    // …and none of them, nor any secret, was ever shown.
    assert!(!shown.contains("PLANTED"), "{shown}");
    assert!(
        !shown.contains("tok-1") && !shown.contains("tok-2"),
        "{shown}"
    );
}
