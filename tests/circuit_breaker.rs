//! The per-method circuit breaker against a real (wiremock) server: opening
//! on a 5xx burst, failing fast without I/O, letting exactly the trial calls
//! through when half-open, closing again, and ignoring 4xx.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::{CircuitState, Error, Event, Inspect, client};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::received;

#[client(name = "stock")]
#[retry(disabled)]
#[circuit_breaker(
    window = 4,
    min_calls = 4,
    failure_rate = 50,
    open_for = "300ms",
    half_open_calls = 2
)]
trait Stock {
    #[get("/items/{id}")]
    async fn item(&self, id: u64) -> Result<String, Error>;

    #[get("/other")]
    async fn other(&self) -> Result<String, Error>;

    #[get("/items/{id}")]
    #[circuit_breaker(disabled)]
    async fn unguarded(&self, id: u64) -> Result<String, Error>;
}

type Transitions = Arc<Mutex<Vec<(String, CircuitState, CircuitState)>>>;

fn client(server: &MockServer) -> (StockClient, Transitions) {
    let seen: Transitions = Arc::default();
    let sink = seen.clone();
    let c = support::builder::<StockClient>()
        .base_url(server.uri())
        .on_event(move |e: &Event<'_>| {
            if let Event::CircuitStateChanged {
                breaker, from, to, ..
            } = e
            {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push((
                    breaker.to_string(),
                    *from,
                    *to,
                ));
            }
        })
        .build()
        .expect("valid");
    (c, seen)
}

/// `status` for the first `n` requests, then 200 after `delay`.
async fn burst_then_ok(server: &MockServer, status: u16, n: u64, delay: Duration) {
    Mock::given(path("/items/1"))
        .respond_with(ResponseTemplate::new(status))
        .up_to_n_times(n)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(path("/items/1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("in stock")
                .set_delay(delay),
        )
        .with_priority(2)
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_5xx_burst_opens_the_breaker_then_trials_close_it() {
    let server = MockServer::start().await;
    burst_then_ok(&server, 503, 4, Duration::ZERO).await;
    let (c, seen) = client(&server);

    for _ in 0..4 {
        let err = c.item(1).await.expect_err("503");
        assert!(err.is_status());
    }
    assert_eq!(c.circuit_state("item"), Some(CircuitState::Open));

    // Open: fail fast, and the server sees nothing more.
    for _ in 0..10 {
        let err = c.item(1).await.expect_err("open");
        assert!(err.is_circuit_open(), "{err}");
        assert_eq!(err.attempts(), 0);
    }
    assert_eq!(received(&server).await, 4);
    // Another method has its own breaker.
    Mock::given(path("/other"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fine"))
        .mount(&server)
        .await;
    assert_eq!(c.other().await.ok().as_deref(), Some("fine"));
    assert_eq!(c.circuit_state("other"), Some(CircuitState::Closed));

    tokio::time::sleep(Duration::from_millis(400)).await; // past open_for
    assert_eq!(c.item(1).await.ok().as_deref(), Some("in stock"));
    assert_eq!(c.circuit_state("item"), Some(CircuitState::HalfOpen));
    assert_eq!(c.item(1).await.ok().as_deref(), Some("in stock"));
    assert_eq!(c.circuit_state("item"), Some(CircuitState::Closed));
    assert_eq!(
        received(&server).await,
        4 + 1 + 2,
        "/other once, and exactly the two trials"
    );

    let events = seen.lock().map(|v| v.clone()).unwrap_or_default();
    use CircuitState::{Closed, HalfOpen, Open};
    let name = "stock#item".to_string();
    assert_eq!(
        events,
        [
            (name.clone(), Closed, Open),
            (name.clone(), Open, HalfOpen),
            (name, HalfOpen, Closed),
        ]
    );
}

#[tokio::test]
async fn half_open_under_concurrency_lets_exactly_the_trials_through() {
    // Why: a recovering service must see a trickle, not the whole backlog.
    let server = MockServer::start().await;
    burst_then_ok(&server, 500, 4, Duration::from_millis(300)).await;
    let (c, _) = client(&server);
    for _ in 0..4 {
        let _ = c.item(1).await;
    }
    assert_eq!(c.circuit_state("item"), Some(CircuitState::Open));
    tokio::time::sleep(Duration::from_millis(400)).await;

    let results = futures::future::join_all((0..20).map(|_| c.item(1))).await;
    let passed = results.iter().filter(|r| r.is_ok()).count();
    let rejected = results
        .iter()
        .filter(|r| r.as_ref().err().is_some_and(Error::is_circuit_open))
        .count();
    assert_eq!((passed, rejected), (2, 18));
    assert_eq!(received(&server).await, 4 + 2);
    assert_eq!(c.circuit_state("item"), Some(CircuitState::Closed));
}

#[tokio::test]
async fn a_failed_trial_reopens_the_breaker() {
    let server = MockServer::start().await;
    burst_then_ok(&server, 502, 5, Duration::ZERO).await;
    let (c, _) = client(&server);
    for _ in 0..4 {
        let _ = c.item(1).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = c.item(1).await.expect_err("the trial gets the 5th 502");
    assert!(err.is_status());
    assert_eq!(c.circuit_state("item"), Some(CircuitState::Open));
    assert!(c.item(1).await.err().is_some_and(|e| e.is_circuit_open()));
    assert_eq!(received(&server).await, 5);
}

#[tokio::test]
async fn a_4xx_burst_never_opens_the_breaker() {
    // Why: 4xx are the caller's mistakes; counting them would let bad input
    // cut everyone off from a healthy service.
    for status in [404, 400, 422] {
        let server = MockServer::start().await;
        burst_then_ok(&server, status, 50, Duration::ZERO).await;
        let (c, seen) = client(&server);
        for _ in 0..50 {
            let err = c.item(1).await.expect_err("4xx");
            assert!(!err.is_circuit_open());
        }
        assert_eq!(
            c.circuit_state("item"),
            Some(CircuitState::Closed),
            "{status}"
        );
        assert!(seen.lock().map(|v| v.is_empty()).unwrap_or(false));
        assert_eq!(received(&server).await, 50);
    }
}

#[tokio::test]
async fn breakers_belong_to_the_built_client_and_are_shared_by_clones() {
    let server = MockServer::start().await;
    burst_then_ok(&server, 503, 100, Duration::ZERO).await;
    let (a, _) = client(&server);
    let a_clone = a.clone();
    let (b, _) = client(&server);
    for _ in 0..4 {
        let _ = a.item(1).await;
    }
    assert_eq!(a_clone.circuit_state("item"), Some(CircuitState::Open));
    assert!(
        a_clone
            .item(1)
            .await
            .err()
            .is_some_and(|e| e.is_circuit_open())
    );
    assert_eq!(b.circuit_state("item"), Some(CircuitState::Closed));
    assert!(b.item(1).await.err().is_some_and(|e| e.is_status()));
    // A disabled breaker has no state and never stops a call.
    assert_eq!(a.circuit_state("unguarded"), None);
    assert!(a.unguarded(1).await.err().is_some_and(|e| e.is_status()));
}
