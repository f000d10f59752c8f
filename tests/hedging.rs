//! Hedged requests: a slow first attempt is overtaken by a second one.

use std::time::{Duration, Instant};

use courier::{Error, client};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[client(name = "search")]
#[circuit_breaker(disabled)]
trait Search {
    #[get("/q")]
    #[hedge(delay = "50ms", max_extra = 1)]
    async fn hedged(&self) -> Result<String, Error>;

    #[get("/q")]
    async fn plain(&self) -> Result<String, Error>;
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
    SearchClient::builder()
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
    let c = SearchClient::builder()
        .base_url(server.uri())
        .retry_budget(0.0, 0)
        .build()
        .expect("valid");
    let answer = c.hedged().await;
    assert_eq!(answer.ok().as_deref(), Some("slow"));
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 1);
}
