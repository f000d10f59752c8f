//! A generated client against each fault of `courier::testing::FaultServer`:
//! the error a user gets, the attempts made, and what the server saw.
//!
//! Real time with short durations; bounds on elapsed time are generous, and
//! what is asserted exactly is counted by the server.
#![cfg(feature = "testing")]

use std::future::Future;
use std::time::{Duration, Instant};

use courier::testing::{Fault, FaultServer};
use courier::{Error, ErrorKind, Response, client};
use http::StatusCode;

mod support;

#[client(name = "stock")]
#[timeout("5s")]
#[retry(max_attempts = 3, backoff = "10ms..20ms")]
#[circuit_breaker(disabled)]
trait Stock {
    #[get("/stock/{sku}")]
    async fn get(&self, sku: &str) -> Result<String, Error>;

    #[post("/stock")]
    async fn put_back(&self, #[body] sku: &str) -> Result<String, Error>;

    #[head("/stock/{sku}")]
    async fn exists(&self, sku: &str) -> Result<Response<()>, Error>;

    #[get("/stock/{sku}")]
    #[timeout("300ms")]
    async fn get_quick(&self, sku: &str) -> Result<String, Error>;

    #[get("/stock/{sku}")]
    #[retry(attempt_timeout = "150ms")]
    async fn get_per_attempt(&self, sku: &str) -> Result<String, Error>;
}

/// Answers when the stock service fails.
struct NoStock;

#[courier::async_trait]
impl Stock for NoStock {
    async fn get(&self, _: &str) -> Result<String, Error> {
        Ok("fallback".into())
    }
    async fn put_back(&self, _: &str) -> Result<String, Error> {
        Ok("fallback".into())
    }
    async fn exists(&self, _: &str) -> Result<Response<()>, Error> {
        unreachable!("not called by these tests")
    }
    async fn get_quick(&self, _: &str) -> Result<String, Error> {
        Ok("fallback".into())
    }
    async fn get_per_attempt(&self, _: &str) -> Result<String, Error> {
        Ok("fallback".into())
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn client(base: &str) -> StockClient {
    support::builder::<StockClient>()
        .base_url(base)
        .build()
        .expect("valid settings")
}

/// `future`, or a panic if it takes longer than a few seconds: waiting on
/// the server never hangs a test.
async fn soon<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("in time")
}

#[tokio::test]
async fn two_scripted_503s_then_200_take_three_requests_on_one_connection() {
    // The canonical retry case, counted exactly: kept-alive connections
    // must not blur the count.
    let server = FaultServer::start().await.expect("bind");
    server
        .script([Fault::status(503), Fault::status(503)])
        .then(Fault::ok("12"));
    let c = client(&server.url());

    assert_eq!(c.get("sku-1").await.ok().as_deref(), Some("12"));
    assert_eq!(server.requests(), 3);
    assert_eq!(server.connections(), 1, "reqwest reuses the connection");
    // After the script, the default answers.
    assert_eq!(c.get("sku-1").await.ok().as_deref(), Some("12"));
    assert_eq!(server.requests(), 4);
}

#[tokio::test]
async fn a_post_is_not_retried_after_a_503() {
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::status(503).body("busy"));
    let err = client(&server.url())
        .put_back("sku-1")
        .await
        .expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.body_snippet(), Some("busy"));
    assert_eq!(err.attempts(), 1);
    assert_eq!(server.requests(), 1);
    assert_eq!(server.received()[0].body().as_ref(), b"\"sku-1\"");
}

#[tokio::test]
async fn retry_after_is_waited_for_before_the_retry() {
    let server = FaultServer::start().await.expect("bind");
    server
        .script([Fault::status(503).retry_after("1")])
        .then(Fault::ok("12"));
    let start = Instant::now();
    let answer = client(&server.url()).get("sku-1").await;
    assert_eq!(answer.ok().as_deref(), Some("12"));
    assert!(start.elapsed() >= ms(900), "{:?}", start.elapsed());
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn a_black_hole_ends_in_a_timeout_and_the_connection_is_let_go() {
    // A hung dependency: only the deadline ends the call, and the client
    // must not keep the dead connection.
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::black_hole());
    let c = client(&server.url());

    let start = Instant::now();
    let err = c.get_quick("sku-1").await.expect_err("never answered");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.attempts(), 1, "the one attempt used the whole deadline");
    assert_eq!(server.requests(), 1);
    soon(server.wait_until_idle()).await;
}

#[tokio::test]
async fn a_port_that_refuses_is_a_connect_error_retried_even_for_a_post() {
    // Nothing was sent, so even a POST may be tried again.
    let down = FaultServer::refusing().expect("bind");
    let c = client(&down.url());
    for err in [
        c.get("sku-1").await.expect_err("refused"),
        c.put_back("sku-1").await.expect_err("refused"),
    ] {
        assert!(err.is_connect(), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Connect);
        assert_eq!(err.attempts(), 3);
    }
}

#[tokio::test]
async fn a_connection_reset_on_accept_is_retried_for_a_get_but_not_for_a_post() {
    // TCP connected, then RST: the client cannot know whether the request
    // left, so only an idempotent method is tried again.
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::refuse());
    let c = client(&server.url());

    let err = c.get("sku-1").await.expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err:?}");
    assert!(!err.is_connect());
    assert_eq!(err.attempts(), 3);
    assert_eq!(server.connections(), 3);

    let err = c.put_back("sku-1").await.expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err:?}");
    assert_eq!(err.attempts(), 1);
    assert_eq!(server.connections(), 4);
    assert_eq!(server.requests(), 0, "no request was read");
}

#[tokio::test]
async fn two_refused_connections_then_an_answer() {
    let server = FaultServer::start().await.expect("bind");
    server
        .script([Fault::refuse(), Fault::refuse()])
        .then(Fault::ok("12"));
    let answer = client(&server.url()).get("sku-1").await;
    assert_eq!(answer.ok().as_deref(), Some("12"));
    assert_eq!(server.connections(), 3, "one connection per attempt");
    assert_eq!(server.requests(), 1, "refused connections carry no request");
}

#[tokio::test]
async fn no_answer_is_a_transport_error_retried_only_when_idempotent() {
    // Each fault reads the request and then fails to answer it.
    let faults = [
        ("close", Fault::close()),
        ("reset before headers", Fault::reset_before_headers()),
        ("garbage", Fault::garbage("SSH-2.0-OpenSSH_9.6\r\n")),
    ];
    for (name, fault) in faults {
        let server = FaultServer::start().await.expect("bind");
        server.set(fault);
        let c = client(&server.url());

        let err = c.get("sku-1").await.expect_err(name);
        assert_eq!(err.kind(), ErrorKind::Transport, "{name}: {err:?}");
        assert_eq!(err.attempts(), 3, "{name}");
        assert_eq!(server.requests(), 3, "{name}");

        let err = c.put_back("sku-1").await.expect_err(name);
        assert_eq!(err.kind(), ErrorKind::Transport, "{name}: {err:?}");
        assert_eq!(err.attempts(), 1, "{name}: a POST may have been applied");
        assert_eq!(server.requests(), 4, "{name}");
    }
}

#[tokio::test]
async fn a_body_broken_off_after_the_headers_is_a_body_error_and_retried() {
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::ok("x".repeat(4096)).reset_after_headers());
    let c = client(&server.url());

    let err = c.get("sku-1").await.expect_err("broken off");
    assert_eq!(err.kind(), ErrorKind::Body, "{err:?}");
    assert!(err.is_body());
    assert_eq!(err.status(), Some(StatusCode::OK), "the head had arrived");
    assert_eq!(err.attempts(), 3);
    assert_eq!(server.requests(), 3);

    let err = c.put_back("sku-1").await.expect_err("broken off");
    assert_eq!(err.kind(), ErrorKind::Body, "{err:?}");
    assert_eq!(err.attempts(), 1);
}

#[tokio::test]
async fn trickled_headers_hit_the_attempt_timeout() {
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::ok("12").trickle_headers(ms(50)));
    let start = Instant::now();
    let err = client(&server.url())
        .get_per_attempt("sku-1")
        .await
        .expect_err("too slow");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.attempts(), 3, "each attempt timed out and was retried");
    assert_eq!(server.requests(), 3);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_trickled_body_arrives_whole_or_times_out() {
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::ok("abcdef").trickle_body(ms(10)));
    let c = client(&server.url());
    assert_eq!(c.get("sku-1").await.ok().as_deref(), Some("abcdef"));

    server.set(Fault::ok("x".repeat(1000)).trickle_body(ms(10)));
    let err = c.get_quick("sku-1").await.expect_err("10 s of body");
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn an_endless_body_stops_at_the_size_limit_without_retry() {
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::ok("").endless_body());
    let c = support::builder::<StockClient>()
        .base_url(server.url())
        .max_response_bytes(64 * 1024)
        .build()
        .expect("valid");
    let err = c.get("sku-1").await.expect_err("endless");
    assert_eq!(err.kind(), ErrorKind::Body, "{err:?}");
    assert!(err.to_string().contains("65536"), "{err}");
    assert_eq!(
        err.attempts(),
        1,
        "a body over the limit would be as long again"
    );
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn an_oversized_body_is_refused_whether_declared_or_chunked() {
    let server = FaultServer::start().await.expect("bind");
    let c = support::builder::<StockClient>()
        .base_url(server.url())
        .max_response_bytes(1024)
        .build()
        .expect("valid");

    server.set(Fault::ok("").oversized_body(2048));
    let err = c.get("sku-1").await.expect_err("declared too large");
    assert_eq!(err.kind(), ErrorKind::Body, "{err:?}");
    assert!(err.to_string().contains("2048"), "declared: {err}");

    server.set(Fault::ok("").oversized_body(2048).chunked());
    let err = c.get("sku-1").await.expect_err("streamed too large");
    assert_eq!(err.kind(), ErrorKind::Body, "{err:?}");
    assert!(
        err.to_string().contains("more than 1024"),
        "streamed: {err}"
    );
    assert_eq!(server.requests(), 2, "neither was retried");

    server.set(Fault::ok("").oversized_body(1024).chunked());
    let body = c.get("sku-1").await.expect("exactly at the limit");
    assert_eq!(body, "x".repeat(1024));
}

#[tokio::test]
async fn a_late_answer_is_abandoned_by_the_attempt_timeout_and_retried() {
    let server = FaultServer::start().await.expect("bind");
    server
        .script([Fault::ok("late").delay(Duration::from_secs(2))])
        .then(Fault::ok("on time"));
    let answer = client(&server.url()).get_per_attempt("sku-1").await;
    assert_eq!(answer.ok().as_deref(), Some("on time"));
    assert_eq!(server.requests(), 2);
    assert_eq!(
        server.connections(),
        2,
        "the abandoned connection is not reused"
    );
}

#[tokio::test]
async fn paths_have_their_own_plans() {
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::ok("default"));
    server
        .on("/stock/a")
        .script([Fault::status(502)])
        .then(Fault::ok("a"));
    server.on("/stock/b").script([Fault::status(503)]);
    let c = client(&server.url());

    assert_eq!(c.get("a").await.ok().as_deref(), Some("a"));
    assert_eq!(c.get("b").await.ok().as_deref(), Some("default"));
    assert_eq!(c.get("c").await.ok().as_deref(), Some("default"));
    assert_eq!(server.requests_to("/stock/a"), 2);
    assert_eq!(server.requests_to("/stock/b"), 2);
    assert_eq!(server.requests_to("/stock/c"), 1);
}

#[tokio::test]
async fn requests_are_recorded_with_connection_headers_and_body() {
    let server = FaultServer::start().await.expect("bind");
    let c = support::builder::<StockClient>()
        .base_url(server.url())
        .default_header("X-Tenant", "acme")
        .build()
        .expect("valid");
    for _ in 0..3 {
        c.get("sku 1").await.expect("200");
    }
    c.put_back("sku-2").await.expect("200");

    let received = server.received();
    assert_eq!(received.len(), 4);
    assert!(received.iter().all(|r| r.connection() == 1), "kept alive");
    assert_eq!(received[0].method(), http::Method::GET);
    assert_eq!(received[0].path(), "/stock/sku%201");
    assert_eq!(received[0].header("x-tenant"), Some("acme"));
    assert_eq!(received[3].method(), http::Method::POST);
    assert_eq!(received[3].body().as_ref(), b"\"sku-2\"");

    server.reset_counts();
    assert_eq!((server.requests(), server.connections()), (0, 0));
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn head_gets_no_body_and_the_connection_stays_usable() {
    // A server that sent a body after HEAD would corrupt the next answer
    // on the same connection.
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::ok("in stock").header("x-count", "12"));
    let c = client(&server.url());

    let head = c.exists("sku-1").await.expect("200");
    assert_eq!(
        head.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some("8")
    );
    assert_eq!(
        head.headers().get("x-count").and_then(|v| v.to_str().ok()),
        Some("12")
    );
    assert_eq!(c.get("sku-1").await.ok().as_deref(), Some("in stock"));
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn dropping_the_server_ends_its_connections() {
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::black_hole());
    let c = client(&server.url());
    let call = tokio::spawn(async move {
        let start = Instant::now();
        (c.get("sku-1").await, start.elapsed())
    });
    soon(server.wait_for_requests(1)).await;
    drop(server);

    let (answer, elapsed) = soon(call).await.expect("not panicked");
    let err = answer.expect_err("the server is gone");
    assert!(
        !err.is_timeout(),
        "ended by the server, not the 5 s deadline: {err:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

// ===== after the status-first classification fix =====

#[tokio::test]
async fn a_5xx_with_an_oversized_body_is_a_status_error() {
    // The status says what happened; the body is only its detail, so a
    // 503 with a huge body is a 503 (retried, fallback-eligible), not a
    // body error.
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::status(503).oversized_body(4096));
    let c = support::builder::<StockClient>()
        .base_url(server.url())
        .max_response_bytes(1024)
        .build()
        .expect("valid");
    let err = c.get("sku-1").await.expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Status, "{err:?}");
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
}

#[tokio::test]
async fn a_body_broken_off_midway_gets_the_fallback() {
    // A response that breaks off is the dependency failing, as a reset
    // before the headers is: the fallback answers both.
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::ok("x".repeat(4096)).reset_after_headers());
    let c = support::builder::<StockClient>()
        .base_url(server.url())
        .fallback(NoStock)
        .build()
        .expect("valid");
    assert_eq!(c.get("sku-1").await.ok().as_deref(), Some("fallback"));
    assert_eq!(server.requests(), 3, "retried before falling back");
}
