//! Helpers shared by the integration tests: servers that answer, fail or
//! wait as a case needs, request counts, and waiting for a condition with
//! a deadline (never sleeping and hoping).
#![allow(dead_code)] // each test file uses some of them

use std::future::Future;
use std::time::{Duration, Instant};

use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

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
