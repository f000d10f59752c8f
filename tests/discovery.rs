//! Discovery and client-side balancing against three wiremock instances.

use std::time::{Duration, Instant};

use courier::{Balance, Error, Inspect, Instance, OutlierEjection, StaticDiscovery, client};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::{healthy, received as count};

#[client(name = "catalog")]
#[circuit_breaker(disabled)]
#[retry(backoff = "1ms..2ms")]
trait Catalog {
    #[get("/items/{id}")]
    async fn item(&self, id: u64) -> Result<String, Error>;
}

/// What answers when no instance is known.
struct Empty;

#[courier::async_trait]
impl Catalog for Empty {
    async fn item(&self, _: u64) -> Result<String, Error> {
        Ok("from the fallback".into())
    }
}

async fn instance(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

fn discovery(servers: &[(&str, &MockServer)]) -> StaticDiscovery {
    StaticDiscovery::new().with(
        "catalog",
        servers.iter().map(|(id, s)| Instance::new(*id, s.uri())),
    )
}

fn client(discovery: &StaticDiscovery, balance: Balance) -> CatalogClient {
    support::builder::<CatalogClient>()
        .discovery(discovery.clone())
        .balance(balance)
        .build()
        .expect("valid")
}

#[tokio::test]
async fn round_robin_spreads_exactly() {
    let (a, b, c) = (healthy("a").await, healthy("b").await, healthy("c").await);
    let d = discovery(&[("a", &a), ("b", &b), ("c", &c)]);
    let client = client(&d, Balance::RoundRobin);
    for id in 0..300 {
        client.item(id).await.expect("healthy");
    }
    assert_eq!(
        (count(&a).await, count(&b).await, count(&c).await),
        (100, 100, 100)
    );
}

/// Each instance is sent its own `Host` (made once per discovered
/// instance), exactly one.
#[tokio::test]
async fn each_instance_gets_its_own_host() {
    let (a, b) = (healthy("a").await, healthy("b").await);
    let d = discovery(&[("a", &a), ("b", &b)]);
    let client = client(&d, Balance::RoundRobin);
    for id in 0..4 {
        client.item(id).await.expect("healthy");
    }
    for server in [&a, &b] {
        let requests = server.received_requests().await.unwrap_or_default();
        assert_eq!(requests.len(), 2);
        let want = server.address().to_string();
        for request in &requests {
            let hosts: Vec<_> = request.headers.get_all("host").iter().collect();
            assert_eq!(hosts, [want.as_str()], "{:?}", request.headers);
        }
    }
}

#[tokio::test]
async fn p2c_spreads_roughly_evenly_over_equal_instances() {
    let (a, b, c) = (healthy("a").await, healthy("b").await, healthy("c").await);
    let d = discovery(&[("a", &a), ("b", &b), ("c", &c)]);
    let client = client(&d, Balance::PeakEwma);
    for wave in 0..30 {
        let calls = (0..10).map(|i| client.item(wave * 10 + i));
        for r in futures::future::join_all(calls).await {
            r.expect("healthy");
        }
    }
    let counts = [count(&a).await, count(&b).await, count(&c).await];
    assert_eq!(counts.iter().sum::<usize>(), 300);
    assert!(counts.iter().all(|n| (50..=150).contains(n)), "{counts:?}");
}

#[tokio::test]
async fn retries_go_elsewhere_and_a_failing_instance_is_ejected_until_its_time_is_up() {
    let bad = instance(ResponseTemplate::new(503)).await;
    let (b, c) = (healthy("b").await, healthy("c").await);
    let d = discovery(&[("bad", &bad), ("b", &b), ("c", &c)]);
    let client = support::builder::<CatalogClient>()
        .discovery(d.clone())
        .balance(Balance::RoundRobin)
        .outlier_ejection(OutlierEjection {
            base_time: Duration::from_millis(600),
            ..OutlierEjection::default()
        })
        .build()
        .expect("valid");

    // Every call succeeds: an attempt on `bad` is retried on another one.
    for id in 0..30 {
        let answer = client.item(id).await.expect("retried elsewhere");
        assert_ne!(answer, "bad");
    }
    assert_eq!(count(&bad).await, 5, "ejected after 5 consecutive failures");
    let instances = client.instances().expect("a discovery client");
    assert!(
        instances
            .iter()
            .any(|i| i.id == "bad" && i.ejected && i.ejections == 1)
    );
    for id in 0..30 {
        client.item(id).await.expect("healthy ones");
    }
    assert_eq!(count(&bad).await, 5, "nothing while ejected");

    tokio::time::sleep(Duration::from_millis(700)).await;
    for id in 0..6 {
        client.item(id).await.expect("retried elsewhere");
    }
    assert!(count(&bad).await > 5, "back in rotation after its ejection");
}

#[tokio::test]
async fn a_slow_instance_gets_under_a_tenth_of_the_calls_after_warm_up() {
    let slow = instance(
        ResponseTemplate::new(200)
            .set_body_string("slow")
            .set_delay(Duration::from_millis(200)),
    )
    .await;
    let (b, c) = (healthy("b").await, healthy("c").await);
    let d = discovery(&[("slow", &slow), ("b", &b), ("c", &c)]);
    let client = client(&d, Balance::PeakEwma);
    // Warm-up: enough calls for every instance to have answered once.
    futures::future::join_all((0..30).map(|i| client.item(i))).await;
    let before = count(&slow).await;
    for wave in 0..10 {
        futures::future::join_all((0..10).map(|i| client.item(1000 + wave * 10 + i))).await;
    }
    let share = count(&slow).await - before;
    assert!(share < 10, "slow instance got {share} of 100 calls");
}

#[tokio::test]
async fn instances_added_and_removed_at_run_time_are_honoured() {
    let (a, b, c) = (healthy("a").await, healthy("b").await, healthy("c").await);
    let d = discovery(&[("a", &a), ("b", &b)]);
    let client = client(&d, Balance::RoundRobin);
    for id in 0..10 {
        client.item(id).await.expect("healthy");
    }
    assert_eq!((count(&a).await, count(&b).await), (5, 5));

    let (a0, b0) = (count(&a).await, count(&b).await);
    // The very next call sees the change: no waiting for the client's
    // follower task (on this one-thread runtime it has not run yet).
    d.add("catalog", Instance::new("c", c.uri()));
    d.remove("catalog", "a");
    for id in 0..20 {
        client.item(id).await.expect("healthy");
    }
    assert_eq!(count(&a).await, a0, "a was removed");
    assert_eq!(
        (count(&b).await - b0, count(&c).await),
        (10, 10),
        "c at once"
    );
}

#[tokio::test]
async fn no_instances_fails_at_once_and_the_fallback_answers() {
    let d = StaticDiscovery::new();
    let plain = client(&d, Balance::PeakEwma);
    let start = Instant::now();
    let err = plain.item(1).await.expect_err("nothing to call");
    assert!(err.is_no_instances(), "{err}");
    assert_eq!(err.attempts(), 0, "nothing was sent");
    assert!(start.elapsed() < Duration::from_millis(500));
    let with_fallback = support::builder::<CatalogClient>()
        .discovery(d)
        .fallback(Empty)
        .build()
        .expect("valid");
    assert_eq!(
        with_fallback.item(1).await.ok().as_deref(),
        Some("from the fallback")
    );
}

#[tokio::test]
async fn an_explicit_base_url_wins_over_discovery() {
    let (a, direct) = (healthy("a").await, healthy("direct").await);
    let d = discovery(&[("a", &a)]);
    let client = support::builder::<CatalogClient>()
        .discovery(d)
        .base_url(direct.uri())
        .build()
        .expect("valid");
    assert_eq!(client.item(1).await.ok().as_deref(), Some("direct"));
    assert_eq!(count(&a).await, 0);
}

#[tokio::test]
async fn errors_name_the_instance() {
    let bad = instance(ResponseTemplate::new(500)).await;
    let d = discovery(&[("only-one", &bad)]);
    let client = client(&d, Balance::RoundRobin);
    let err = client.item(1).await.expect_err("500");
    assert_eq!(err.instance(), Some("only-one"));
    assert!(err.to_string().contains("@ only-one"), "{err}");
}

/// A discovery that hands out receivers of one channel and can tell how
/// many are still held: the trait is what is under test here.
struct Counted(tokio::sync::watch::Sender<Option<courier::discovery::Instances>>);

impl courier::Discovery for Counted {
    fn subscribe(&self, _: &str) -> courier::discovery::Subscription {
        self.0.subscribe()
    }
}

#[tokio::test]
async fn a_dropped_client_lets_go_of_its_subscription_at_once() {
    let a = healthy("a").await;
    let sender = tokio::sync::watch::Sender::new(Some(vec![Instance::new("a", a.uri())].into()));
    let discovery = std::sync::Arc::new(Counted(sender.clone()));
    let client = support::builder::<CatalogClient>()
        .discovery(discovery.clone())
        .build()
        .expect("valid");
    let clone = client.clone();
    assert_eq!(client.item(1).await.ok().as_deref(), Some("a"));
    assert!(sender.receiver_count() >= 1);
    drop(client);
    assert_eq!(
        clone.item(2).await.ok().as_deref(),
        Some("a"),
        "a clone lives on"
    );
    drop(clone);
    // The follower task ends with the last clone, without waiting for the
    // discovery's next change (there is none).
    let deadline = Instant::now() + Duration::from_secs(2);
    while sender.receiver_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sender.receiver_count(), 0, "every receiver dropped");
}

#[test]
fn discovery_needs_a_runtime_and_says_so() {
    let err = support::builder::<CatalogClient>()
        .discovery(StaticDiscovery::new())
        .build()
        .expect_err("no runtime here");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
