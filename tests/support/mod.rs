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
pub(crate) fn builder<C: ClientSpec>() -> ClientBuilder<C> {
    let builder = ClientBuilder::<C>::new();
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
