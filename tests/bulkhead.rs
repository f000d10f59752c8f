//! The per-method bulkhead: at most N calls in flight, the rest fail fast
//! (or wait `max_wait`), and a cancelled call gives its slot back.

use std::time::{Duration, Instant};

use courier::{Error, client};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::received;

#[client(name = "reports")]
#[retry(disabled)]
#[circuit_breaker(disabled)]
trait Reports {
    #[get("/report")]
    #[bulkhead(max_concurrent = 3)]
    async fn report(&self) -> Result<String, Error>;

    #[get("/report")]
    #[bulkhead(max_concurrent = 1, max_wait = "2s")]
    async fn patient(&self) -> Result<String, Error>;

    #[get("/report")]
    async fn unlimited(&self) -> Result<String, Error>;

    #[get("/report")]
    #[bulkhead(max_concurrent = 1, max_wait = "5s")]
    #[circuit_breaker(window = 2, min_calls = 2, slow_call = "500ms", slow_call_rate = 50)]
    async fn queued(&self) -> Result<String, Error>;
}

async fn slow_server(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/report"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("done")
                .set_delay(delay),
        )
        .mount(&server)
        .await;
    server
}

fn client(server: &MockServer) -> ReportsClient {
    support::builder::<ReportsClient>()
        .base_url(server.uri())
        .build()
        .expect("valid")
}

#[tokio::test]
async fn only_max_concurrent_calls_are_in_flight_and_the_rest_fail_fast() {
    let server = slow_server(Duration::from_millis(300)).await;
    let c = client(&server);
    let start = Instant::now();
    let results = futures::future::join_all((0..8).map(|_| c.report())).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let full: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ok, 3);
    assert_eq!(full.len(), 5);
    assert!(
        full.iter()
            .all(|e| e.is_bulkhead_full() && e.attempts() == 0)
    );
    assert_eq!(received(&server).await, 3);
    assert!(start.elapsed() < Duration::from_secs(2));
    // Without a bulkhead, all of them go.
    let results = futures::future::join_all((0..8).map(|_| c.unlimited())).await;
    assert!(results.iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_waiting_call_gets_the_slot_when_it_frees() {
    let server = slow_server(Duration::from_millis(200)).await;
    let c = client(&server);
    let results = futures::future::join_all((0..3).map(|_| c.patient())).await;
    assert!(
        results.iter().all(Result::is_ok),
        "each waited for the one slot"
    );
    assert_eq!(received(&server).await, 3);
}

#[tokio::test]
async fn cancelled_calls_release_their_slots() {
    let server = slow_server(Duration::from_secs(10)).await;
    let c = client(&server);
    // Fill the bulkhead with calls that will never finish, then drop them.
    let stuck: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.report().await })
        })
        .collect();
    // Wait until all three are at the server (the slots are taken).
    let deadline = Instant::now() + Duration::from_secs(5);
    while received(&server).await < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = c.report().await.expect_err("full");
    assert!(err.is_bulkhead_full());
    for task in &stuck {
        task.abort();
    }
    for task in stuck {
        let _ = task.await;
    }
    // The slots are free again: three more calls are let through to the
    // (still slow) server instead of failing as full.
    let again = futures::future::join_all(
        (0..3).map(|_| tokio::time::timeout(Duration::from_millis(300), c.report())),
    )
    .await;
    assert!(
        again.iter().all(|r| r.is_err()),
        "let through, then cut by the test"
    );
    assert_eq!(received(&server).await, 6);
}

/// The defect: the breaker's slow-call clock started before the wait for a
/// bulkhead slot, so local queueing counted as the dependency's slowness and
/// could open the breaker. Two calls through a bulkhead of one, each
/// answered in 300 ms: the second waits 300 ms for the slot, yet neither is
/// slow (500 ms), and the breaker stays closed.
#[tokio::test]
async fn time_spent_waiting_for_a_slot_is_not_a_slow_call() {
    let server = slow_server(Duration::from_millis(300)).await;
    let c = client(&server);
    let start = Instant::now();
    let results = futures::future::join_all((0..2).map(|_| c.queued())).await;
    assert!(results.iter().all(Result::is_ok));
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "the second queued"
    );
    let snapshot = courier::Inspect::snapshot(&c);
    let queued = snapshot
        .methods
        .iter()
        .find(|m| m.name == "queued")
        .and_then(|m| m.circuit)
        .expect("a breaker");
    assert_eq!((queued.calls, queued.slow), (2, 0), "{queued:?}");
    assert_eq!(queued.state, courier::CircuitState::Closed);
}
