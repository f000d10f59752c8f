//! The client-side rate limiter (`#[rate_limit]`): permits per second with a
//! burst, shared by a client's methods and clones unless a method names its
//! own rate; a wait bounded by `max_wait` and the deadline; refusals that
//! send nothing, are not retried, are ignored by the breaker and may be
//! answered by the fallback; retries and hedges take permits too.
//!
//! Real time against wiremock, with generous margins: the rate itself is
//! measured over more than a second; the paused-clock unit tests in
//! `policy/rate_limit.rs` pin the exact schedule.

use std::time::{Duration, Instant};

use courier::{CircuitState, Config, Error, Inspect, client};
use wiremock::ResponseTemplate;

mod support;
use support::{answering, healthy, received, slow};

#[client(name = "partner")]
#[retry(disabled)]
#[rate_limit(per_second = 5, burst = 2)]
trait Partner {
    /// Takes the client's permits, failing at once when none is free.
    #[get("/a")]
    async fn a(&self) -> Result<String, Error>;

    /// Takes the client's permits too.
    #[get("/b")]
    async fn b(&self) -> Result<String, Error>;

    /// The client's permits, waiting up to two seconds for one.
    #[get("/a")]
    #[rate_limit(max_wait = "2s")]
    async fn patient(&self) -> Result<String, Error>;

    /// A limiter of its own.
    #[get("/a")]
    #[rate_limit(per_second = 1000, burst = 1000)]
    async fn own(&self) -> Result<String, Error>;

    /// No limit at all.
    #[get("/a")]
    #[rate_limit(disabled)]
    async fn exempt(&self) -> Result<String, Error>;

    /// Would wait, but the call's deadline comes first: a limiter of its
    /// own, one permit a second, and half a second to live.
    #[get("/a")]
    #[timeout("500ms")]
    #[rate_limit(per_second = 1, burst = 1, max_wait = "5s")]
    async fn hurried(&self) -> Result<String, Error>;
}

fn partner(server: &wiremock::MockServer) -> PartnerClient {
    support::builder::<PartnerClient>()
        .base_url(server.uri())
        .build()
        .expect("valid")
}

fn limited(results: &[Result<String, Error>]) -> usize {
    results
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .is_some_and(|e| e.is_rate_limited() && e.attempts() == 0)
        })
        .count()
}

#[tokio::test]
async fn the_burst_goes_and_the_rest_fail_at_once_without_being_sent() {
    let server = healthy("ok").await;
    let c = partner(&server);
    let start = Instant::now();
    let results = futures::future::join_all((0..5).map(|_| c.a())).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        2,
        "{results:?}"
    );
    assert_eq!(limited(&results), 3, "{results:?}");
    assert_eq!(
        received(&server).await,
        2,
        "a refused attempt sends nothing"
    );
    assert!(start.elapsed() < Duration::from_secs(2), "nothing waited");
    let e = results.into_iter().find_map(Result::err);
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("5/s") && text.contains("partner"), "{text}");
}

#[tokio::test]
async fn methods_and_clones_share_the_clients_limiter_unless_they_have_their_own() {
    let server = healthy("ok").await;
    let c = partner(&server);
    let clone = c.clone();
    assert!(c.a().await.is_ok());
    assert!(clone.b().await.is_ok());
    // The burst of two is spent, by two methods on two clones.
    let e = c.b().await.err();
    assert!(e.is_some_and(|e| e.is_rate_limited()));
    assert!(clone.a().await.err().is_some_and(|e| e.is_rate_limited()));
    // A limiter of its own, and no limiter, are not touched by that.
    for _ in 0..20 {
        assert!(c.own().await.is_ok());
        assert!(c.exempt().await.is_ok());
    }
    // A second client built from the same trait has a limiter of its own.
    let other = partner(&server);
    assert!(other.a().await.is_ok());
}

#[tokio::test]
async fn a_waiting_call_gets_the_next_permit() {
    let server = healthy("ok").await;
    let c = partner(&server);
    // Spend the burst, then three more calls wait their turn: one permit
    // every 200 ms, so the last goes about 600 ms after the first.
    assert!(c.a().await.is_ok() && c.a().await.is_ok());
    let start = Instant::now();
    let results = futures::future::join_all((0..3).map(|_| c.patient())).await;
    let elapsed = start.elapsed();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        elapsed >= Duration::from_millis(450),
        "three permits at 5/s cannot come in {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn a_permit_due_after_the_deadline_fails_at_once() {
    let server = healthy("ok").await;
    let c = partner(&server);
    assert!(c.hurried().await.is_ok());
    // The next permit is due in a second, past the 500 ms deadline.
    let start = Instant::now();
    let e = c.hurried().await.err();
    assert!(e.as_ref().is_some_and(|e| e.is_rate_limited()), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "no waiting for a permit the deadline would not see"
    );
    assert_eq!(received(&server).await, 1);
}

/// The rate, measured: 30 calls through a 20/s limiter (burst 1) take at
/// least 29/20 s, and no second of them holds more than its share.
#[tokio::test]
async fn the_rate_holds_over_more_than_a_second() {
    #[client(name = "metered")]
    #[retry(disabled)]
    #[circuit_breaker(disabled)]
    #[rate_limit(per_second = 20, burst = 1, max_wait = "5s")]
    trait Metered {
        #[get("/m")]
        async fn m(&self) -> Result<String, Error>;
    }
    let server = healthy("ok").await;
    let c = support::builder::<MeteredClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    let start = Instant::now();
    let done = futures::future::join_all((0..30).map(|_| {
        let c = c.clone();
        async move { c.m().await.map(|_| start.elapsed()) }
    }))
    .await;
    let mut at: Vec<Duration> = done
        .into_iter()
        .map(|r| r.expect("every call waits for its permit"))
        .collect();
    at.sort();
    let total = at.last().copied().unwrap_or_default();
    assert!(
        total >= Duration::from_millis(1300),
        "30 permits at 20/s need 1.45 s, done in {total:?}"
    );
    assert!(total < Duration::from_secs(5), "{total:?}");
    // Any one-second window holds at most the rate plus the burst (and a
    // generous margin for scheduling).
    for (i, first) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|t| **t < *first + Duration::from_secs(1))
            .count();
        assert!(within <= 23, "{within} calls within a second of {first:?}");
    }
    assert_eq!(received(&server).await, 30);
}

#[client(name = "flaky")]
#[circuit_breaker(window = 4, min_calls = 4)]
#[retry(max_attempts = 4, backoff = "1ms..2ms")]
#[rate_limit(per_second = 1, burst = 2)]
trait Flaky {
    #[get("/f")]
    async fn f(&self) -> Result<String, Error>;
}

fn flaky(server: &wiremock::MockServer) -> FlakyClient {
    support::builder::<FlakyClient>()
        .base_url(server.uri())
        .build()
        .expect("valid")
}

#[tokio::test]
async fn retries_take_permits_and_stop_when_there_is_none() {
    let server = answering(ResponseTemplate::new(503)).await;
    let c = flaky(&server);
    let e = c.f().await.err();
    // Two permits: the first attempt and one retry went; the second retry
    // found no permit, so the call ends there with four attempts allowed.
    assert_eq!(received(&server).await, 2);
    let e = e.expect("503, then no permit");
    assert!(e.is_rate_limited(), "{e}");
    assert_eq!(e.attempts(), 2);
}

#[tokio::test]
async fn refusals_are_ignored_by_the_breaker() {
    let server = healthy("ok").await;
    let c = flaky(&server);
    assert!(c.f().await.is_ok() && c.f().await.is_ok());
    for _ in 0..10 {
        assert!(c.f().await.err().is_some_and(|e| e.is_rate_limited()));
    }
    assert_eq!(c.circuit_state("f"), Some(CircuitState::Closed));
}

#[tokio::test]
async fn a_hedge_takes_a_permit_only_if_one_is_free() {
    #[client(name = "hedged")]
    #[retry(disabled)]
    #[rate_limit(per_second = 1, burst = 1)]
    trait Hedged {
        #[get("/h")]
        #[hedge(delay = "50ms")]
        async fn h(&self) -> Result<String, Error>;

        #[get("/h")]
        #[hedge(delay = "50ms")]
        #[rate_limit(per_second = 1, burst = 2)]
        async fn roomy(&self) -> Result<String, Error>;
    }
    let server = slow("ok", Duration::from_millis(300)).await;
    let c = support::builder::<HedgedClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    // One permit: the first attempt takes it, the hedge finds none and is
    // not sent; the call still answers.
    assert_eq!(c.h().await.ok().as_deref(), Some("ok"));
    assert_eq!(received(&server).await, 1);
    // Two permits: the hedge goes too.
    assert_eq!(c.roomy().await.ok().as_deref(), Some("ok"));
    assert_eq!(received(&server).await, 3);
}

#[tokio::test]
async fn the_fallback_answers_a_refused_call() {
    struct Cached;
    #[courier::async_trait]
    impl Partner for Cached {
        async fn a(&self) -> Result<String, Error> {
            Ok("cached".into())
        }
        async fn b(&self) -> Result<String, Error> {
            Ok("cached".into())
        }
        async fn patient(&self) -> Result<String, Error> {
            Ok("cached".into())
        }
        async fn own(&self) -> Result<String, Error> {
            Ok("cached".into())
        }
        async fn exempt(&self) -> Result<String, Error> {
            Ok("cached".into())
        }
        async fn hurried(&self) -> Result<String, Error> {
            Ok("cached".into())
        }
    }
    let server = healthy("live").await;
    let c = support::builder::<PartnerClient>()
        .base_url(server.uri())
        .fallback(Cached)
        .build()
        .expect("valid");
    let answers = futures::future::join_all((0..4).map(|_| c.a())).await;
    let answers: Vec<_> = answers.into_iter().map(Result::ok).collect();
    let live = answers
        .iter()
        .filter(|a| a.as_deref() == Some("live"))
        .count();
    let cached = answers
        .iter()
        .filter(|a| a.as_deref() == Some("cached"))
        .count();
    assert_eq!((live, cached), (2, 2), "{answers:?}");
}

#[tokio::test]
async fn config_sets_the_rate_per_client_and_per_method() {
    let server = healthy("ok").await;
    let config = Config::from_toml_str(
        "[clients.partner]\nrate_limit.burst = 4\n\
         [clients.partner.methods.exempt]\nrate_limit.per_second = 1\n",
    )
    .expect("valid config");
    let c = support::builder::<PartnerClient>()
        .base_url(server.uri())
        .config(&config)
        .build()
        .expect("valid");
    let policy = c.method_policy("a").and_then(|p| p.rate_limit);
    assert_eq!(policy.map(|r| (r.per_second, r.burst)), Some((5, 4)));
    let results = futures::future::join_all((0..6).map(|_| c.a())).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    // The config's method level re-enabled a limit the attribute disabled:
    // a limiter of its own, 1/s with the client's burst of 4.
    let results = futures::future::join_all((0..6).map(|_| c.exempt())).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    assert_eq!(limited(&results), 2);
}

/// An operator who switches the client's limiter off in the config switches
/// it off for the methods that wait on it (a method's `max_wait` does not
/// make it a limiter of its own); a method with its own rate keeps it.
#[tokio::test]
async fn switching_the_clients_limiter_off_reaches_the_methods_that_share_it() {
    let server = healthy("ok").await;
    let config = Config::from_toml_str("[clients.partner]\nrate_limit.disabled = true\n")
        .expect("valid config");
    let c = support::builder::<PartnerClient>()
        .base_url(server.uri())
        .config(&config)
        .build()
        .expect("valid");
    for method in ["a", "b", "patient"] {
        let policy = c.method_policy(method).map(|p| p.rate_limit);
        assert_eq!(policy, Some(None), "{method}");
    }
    let results = futures::future::join_all((0..10).map(|_| c.patient())).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10);
    let own = c.method_policy("own").and_then(|p| p.rate_limit);
    assert_eq!(own.map(|r| r.per_second), Some(1000));
}

#[tokio::test]
async fn a_rate_limit_without_a_rate_is_refused_when_built() {
    #[client(name = "rateless")]
    trait Rateless {
        #[get("/r")]
        #[rate_limit(max_wait = "1s")]
        async fn r(&self) -> Result<(), Error>;
    }
    let e = support::builder::<RatelessClient>()
        .base_url("http://127.0.0.1:9")
        .build()
        .expect_err("no rate anywhere");
    let text = e.to_string();
    assert!(
        text.contains("rateless.r") && text.contains("per_second"),
        "{text}"
    );
    // A config may give it the rate.
    let config = Config::from_toml_str("[clients.rateless]\nrate_limit.per_second = 3\n")
        .expect("valid config");
    let server = answering(ResponseTemplate::new(204)).await;
    let c = support::builder::<RatelessClient>()
        .base_url(server.uri())
        .config(&config)
        .build()
        .expect("the config names the rate");
    let policy = c.method_policy("r").and_then(|p| p.rate_limit);
    assert_eq!(policy.map(|r| r.per_second), Some(3));
    assert!(c.r().await.is_ok());
}
