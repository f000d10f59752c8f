//! Helpers shared by the integration tests: client builders on the
//! transport under test, servers that answer, fail or wait as a case needs,
//! request counts, and waiting for a condition with a deadline (never
//! sleeping and hoping).
#![allow(dead_code)] // each test file uses some of them

use std::future::Future;
use std::time::{Duration, Instant};

use courier::ClientBuilder;
// NOTE: the bound of `ClientBuilder<C>`; hidden API, fine for our tests.
use courier::__private::ClientSpec;

use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

// ===== the transport under test =====

/// The transports the suite runs on: each integration test that builds a
/// client builds it with [`builder`], and `scripts/test` runs the suite
/// once per transport (`COURIER_TEST_TRANSPORT` set for the run). The
/// choice is the tests', never the library's: a client built outside the
/// tests always gets the transport its builder was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// reqwest, the default (`COURIER_TEST_TRANSPORT` unset or `reqwest`).
    Reqwest,
    /// The lean transport (`COURIER_TEST_TRANSPORT=hyper`).
    Hyper,
}

/// The transport this run of the suite tests.
///
/// # Panics
/// On a value other than `reqwest` or `hyper`: a typo must not quietly
/// test reqwest twice.
pub(crate) fn transport() -> Transport {
    match std::env::var("COURIER_TEST_TRANSPORT").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "reqwest") => Transport::Reqwest,
        Ok("hyper") => Transport::Hyper,
        other => panic!("COURIER_TEST_TRANSPORT is `reqwest` or `hyper`, not {other:?}"),
    }
}

/// `C::builder()` on the transport under test: what every test that sends
/// starts from (`tests/matrix.rs` checks that they do).
///
/// Response decompression is off: the suite runs with every feature, and
/// with it on every client would take the layered path, leaving untested
/// the direct one that users without a compression feature get.
/// `tests/compression.rs` turns it back on.
pub(crate) fn builder<C: ClientSpec>() -> ClientBuilder<C> {
    let builder = ClientBuilder::<C>::new();
    #[cfg(any(
        feature = "gzip",
        feature = "deflate",
        feature = "brotli",
        feature = "zstd"
    ))]
    let builder = builder.decompression(false);
    match transport() {
        Transport::Reqwest => builder,
        Transport::Hyper => builder.hyper_transport(courier::transport::HyperTransport::new()),
    }
}

// ===== servers =====

/// Requests the server has received so far.
pub(crate) async fn received(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

/// A server answering every request with `template`.
pub(crate) async fn answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

/// A server answering every request 200 with `body`.
pub(crate) async fn healthy(body: &str) -> MockServer {
    answering(ResponseTemplate::new(200).set_body_string(body)).await
}

/// A server answering every request 200 with `body` after `delay`.
pub(crate) async fn slow(body: &str, delay: Duration) -> MockServer {
    answering(
        ResponseTemplate::new(200)
            .set_body_string(body)
            .set_delay(delay),
    )
    .await
}

/// Mounts: `status` for the first `n` requests to `route`, then 200 "ok".
pub(crate) async fn fail_then_ok(server: &MockServer, route: &str, status: u16, n: u64) {
    Mock::given(path(route))
        .respond_with(ResponseTemplate::new(status))
        .up_to_n_times(n)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(path(route))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .with_priority(2)
        .mount(server)
        .await;
}

/// Polls `condition` every 5 ms until it holds or `within` passes; returns
/// whether it held.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ===== real peers: an axum app on a loopback port, an OAuth2 token endpoint =====

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Serves `app` on a free loopback port until the test ends; its base URL.
pub(crate) async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// What a token request carried.
#[derive(Debug, Clone)]
pub(crate) struct TokenRequest {
    /// The form, in order.
    pub(crate) form: Vec<(String, String)>,
    /// The `Authorization` header, if any.
    pub(crate) authorization: Option<String>,
}

impl TokenRequest {
    /// The first value of a form field.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the token endpoint answers the next requests.
#[derive(Debug, Clone)]
pub(crate) enum TokenAnswer {
    /// 200 with `{"access_token":"tok-<n>","token_type":"Bearer","expires_in":…}`.
    Token { expires_in: Option<u64> },
    /// An RFC 6749 §5.2 error: `{"error": code, "error_description": …}`.
    Error { status: u16, code: &'static str },
    /// Any status and body.
    Raw { status: u16, body: &'static str },
}

/// An OAuth2 token endpoint speaking RFC 6749 (client credentials): it
/// issues `tok-1`, `tok-2`, …, records every request, and answers as told,
/// after an optional delay.
#[derive(Clone)]
pub(crate) struct TokenServer {
    pub(crate) url: String,
    answer: Arc<Mutex<(TokenAnswer, Duration)>>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    issued: Arc<AtomicU64>,
    count: Arc<AtomicUsize>,
}

impl TokenServer {
    /// A token endpoint at `<url>/oauth2/token` issuing tokens that expire
    /// in `expires_in` seconds.
    pub(crate) async fn start(expires_in: u64) -> TokenServer {
        let server = TokenServer {
            url: String::new(),
            answer: Arc::new(Mutex::new((
                TokenAnswer::Token {
                    expires_in: Some(expires_in),
                },
                Duration::ZERO,
            ))),
            requests: Arc::default(),
            issued: Arc::default(),
            count: Arc::default(),
        };
        let state = server.clone();
        let app = axum::Router::new().route(
            "/oauth2/token",
            axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move { state.handle(&headers, &body).await }
            }),
        );
        let base = serve(app).await;
        TokenServer {
            url: format!("{base}/oauth2/token"),
            ..server
        }
    }

    async fn handle(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> (
        http::StatusCode,
        [(http::HeaderName, &'static str); 1],
        String,
    ) {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(TokenRequest {
                form,
                authorization,
            });
        self.count.fetch_add(1, Ordering::SeqCst);
        let (answer, delay) = self
            .answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tokio::time::sleep(delay).await;
        let json = [(http::header::CONTENT_TYPE, "application/json")];
        let status = |code: u16| http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
        match answer {
            TokenAnswer::Token { expires_in } => {
                let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
                let mut token = serde_json::json!({
                    "access_token": format!("tok-{n}"),
                    "token_type": "Bearer",
                });
                if let Some(expires_in) = expires_in {
                    token["expires_in"] = expires_in.into();
                }
                (http::StatusCode::OK, json, token.to_string())
            }
            TokenAnswer::Error {
                status: code,
                code: error,
            } => {
                let body = serde_json::json!({
                    "error": error,
                    "error_description": "client authentication failed (PLANTED-DESCRIPTION)",
                });
                (status(code), json, body.to_string())
            }
            TokenAnswer::Raw { status: code, body } => (status(code), json, body.to_owned()),
        }
    }

    /// Answers the next requests with `answer`.
    pub(crate) fn answer(&self, answer: TokenAnswer) {
        self.answer.lock().unwrap_or_else(PoisonError::into_inner).0 = answer;
    }

    /// Answers after `delay`.
    pub(crate) fn delay(&self, delay: Duration) {
        self.answer.lock().unwrap_or_else(PoisonError::into_inner).1 = delay;
    }

    /// Token requests received so far.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// The token requests received so far.
    pub(crate) fn requests(&self) -> Vec<TokenRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The `Authorization` headers a wiremock server saw, in order (`-` for
/// none).
pub(crate) async fn authorizations(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            r.headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        })
        .collect()
}
