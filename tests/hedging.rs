//! Hedged requests: a slow first attempt is overtaken by a second one.

use std::time::{Duration, Instant};

use courier::{Error, client};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[client(name = "search")]
#[circuit_breaker(disabled)]
trait Search {
    #[get("/q")]
    #[hedge(delay = "50ms", max_extra = 1)]
    async fn hedged(&self) -> Result<String, Error>;

    #[get("/q")]
    async fn plain(&self) -> Result<String, Error>;

    #[get("/q")]
    #[hedge(delay = "50ms", max_extra = 2)]
    #[bulkhead(max_concurrent = 1)]
    async fn hedged_in_a_bulkhead(&self) -> Result<String, Error>;

    #[get("/q")]
    #[hedge(delay = "50ms", max_extra = 2)]
    #[circuit_breaker(
        window = 2,
        min_calls = 2,
        failure_rate = 100,
        open_for = "100ms",
        half_open_calls = 1
    )]
    async fn hedged_behind_a_breaker(&self) -> Result<String, Error>;
}

/// The first request takes 1.5 s; every later one answers at once.
async fn first_is_slow() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/q"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("slow")
                .set_delay(Duration::from_millis(1500)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/q"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fast"))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

fn client(server: &MockServer) -> SearchClient {
    support::builder::<SearchClient>()
        .base_url(server.uri())
        .build()
        .expect("valid")
}

#[tokio::test]
async fn a_hedge_cuts_the_latency_of_a_slow_first_attempt() {
    let server = first_is_slow().await;
    let start = Instant::now();
    let answer = client(&server).hedged().await;
    let elapsed = start.elapsed();
    assert_eq!(answer.ok().as_deref(), Some("fast"), "the hedge won");
    assert!(
        elapsed >= Duration::from_millis(45),
        "{elapsed:?}: hedge waits its delay"
    );
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 2);

    // The same server without hedging waits for the slow answer.
    let server = first_is_slow().await;
    let start = Instant::now();
    let answer = client(&server).plain().await;
    assert_eq!(answer.ok().as_deref(), Some("slow"));
    assert!(start.elapsed() >= Duration::from_millis(1400));
}

#[tokio::test]
async fn a_fast_answer_sends_no_hedge() {
    let server = MockServer::start().await;
    Mock::given(path("/q"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fast"))
        .mount(&server)
        .await;
    let c = client(&server);
    for _ in 0..5 {
        assert_eq!(c.hedged().await.ok().as_deref(), Some("fast"));
    }
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 5);
}

#[tokio::test]
async fn hedges_take_from_the_retry_budget() {
    // A budget with no reserve and no share: no hedge may be sent.
    let server = first_is_slow().await;
    let c = support::builder::<SearchClient>()
        .base_url(server.uri())
        .retry_budget(0.0, 0)
        .build()
        .expect("valid");
    let answer = c.hedged().await;
    assert_eq!(answer.ok().as_deref(), Some("slow"));
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 1);
}

/// The first request takes 300 ms; every later one answers at once.
async fn first_takes_300ms() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/q"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("first")
                .set_delay(Duration::from_millis(300)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/q"))
        .respond_with(ResponseTemplate::new(200).set_body_string("later"))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

/// The defect: a hedge that hit the full bulkhead (its only slot held by
/// the slow first attempt) returned `BulkheadFull` at once and dropped the
/// first attempt, which would have answered. A hedge refused locally is not
/// sent; the call waits for the attempt in flight.
#[tokio::test]
async fn a_hedge_refused_by_a_full_bulkhead_is_not_sent_and_the_first_attempt_answers() {
    let server = first_takes_300ms().await;
    let answer = client(&server).hedged_in_a_bulkhead().await;
    assert_eq!(answer.ok().as_deref(), Some("first"));
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 1);
}

/// The same with a half-open breaker whose only trial is the first attempt:
/// the hedge is refused (trials busy), not sent, and the trial's answer
/// closes the breaker.
#[tokio::test]
async fn a_hedge_refused_by_a_half_open_breaker_is_not_sent() {
    let server = MockServer::start().await;
    Mock::given(path("/q"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/q"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("trial")
                .set_delay(Duration::from_millis(300)),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    let c = support::builder::<SearchClient>()
        .base_url(server.uri())
        .no_retry_budget()
        .build()
        .expect("valid");
    // Two 500s (each retried? 500 is not in `on`: no) open the breaker.
    for _ in 0..2 {
        assert!(c.hedged_behind_a_breaker().await.is_err());
    }
    assert_eq!(
        courier::Inspect::circuit_state(&c, "hedged_behind_a_breaker"),
        Some(courier::CircuitState::Open)
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let answer = c.hedged_behind_a_breaker().await;
    assert_eq!(answer.ok().as_deref(), Some("trial"));
    assert_eq!(
        server.received_requests().await.map_or(0, |r| r.len()),
        3,
        "two failures and the trial; no hedge"
    );
    assert_eq!(
        courier::Inspect::circuit_state(&c, "hedged_behind_a_breaker"),
        Some(courier::CircuitState::Closed)
    );
}
