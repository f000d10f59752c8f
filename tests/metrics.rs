//! Metrics through the `metrics` facade, read back with metrics-util's
//! debugging recorder: values, not just names, and a number of series that
//! stays fixed however many ids are called.
#![cfg(feature = "metrics")]

use std::collections::HashMap;

use courier::{Error, client};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[client(name = "ledger")]
#[retry(backoff = "1ms..2ms")]
trait Ledger {
    #[get("/entries/{id}")]
    #[circuit_breaker(disabled)]
    async fn entry(&self, id: u64) -> Result<String, Error>;

    #[get("/flaky")]
    #[retry(disabled)]
    #[circuit_breaker(window = 2, min_calls = 2, failure_rate = 100, open_for = "10s")]
    #[bulkhead(max_concurrent = 4)]
    async fn flaky(&self) -> Result<String, Error>;
}

struct Cached;

#[courier::async_trait]
impl Ledger for Cached {
    async fn entry(&self, _: u64) -> Result<String, Error> {
        Ok("cached".into())
    }
    async fn flaky(&self) -> Result<String, Error> {
        Ok("cached".into())
    }
}

/// Every series: (name, sorted labels) → value.
type Series = HashMap<(String, Vec<(String, String)>), DebugValue>;

fn series(snapshotter: &Snapshotter) -> Series {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn find<'s>(series: &'s Series, name: &str, labels: &[(&str, &str)]) -> Vec<&'s DebugValue> {
    series
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, v)| v)
        .collect()
}

fn counter(series: &Series, name: &str, labels: &[(&str, &str)]) -> u64 {
    find(series, name, labels)
        .iter()
        .map(|v| match v {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

fn gauge(series: &Series, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    find(series, name, labels).iter().find_map(|v| match v {
        DebugValue::Gauge(g) => Some(g.into_inner()),
        _ => None,
    })
}

fn samples(series: &Series, name: &str, labels: &[(&str, &str)]) -> usize {
    find(series, name, labels)
        .iter()
        .map(|v| match v {
            DebugValue::Histogram(h) => h.len(),
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "current_thread")]
async fn calls_retries_durations_and_breaker_states_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let server = MockServer::start().await;
    support::fail_then_ok(&server, "/entries/1", 503, 1).await;
    Mock::given(path("/entries/2"))
        .respond_with(ResponseTemplate::new(200).set_body_string("two"))
        .mount(&server)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let ledger = support::builder::<LedgerClient>()
        .base_url(server.uri())
        .fallback(Cached)
        .build()
        .expect("valid");

    assert_eq!(ledger.entry(1).await.ok().as_deref(), Some("ok"));
    for _ in 0..3 {
        assert_eq!(ledger.entry(2).await.ok().as_deref(), Some("two"));
    }
    // Two 500s open the breaker (the fallback answers), a third is not
    // permitted.
    for _ in 0..3 {
        assert_eq!(ledger.flaky().await.ok().as_deref(), Some("cached"));
    }
    let s = series(&snapshotter);
    let entry = [("courier.client", "ledger"), ("courier.method", "entry")];
    let flaky = [("courier.client", "ledger"), ("courier.method", "flaky")];
    let with = |base: &[(&'static str, &'static str)], extra: (&'static str, &'static str)| {
        let mut v = base.to_vec();
        v.push(extra);
        v
    };

    assert_eq!(
        counter(
            &s,
            "courier.retry.calls",
            &with(&entry, ("kind", "successful_with_retry"))
        ),
        1
    );
    assert_eq!(
        counter(
            &s,
            "courier.retry.calls",
            &with(&entry, ("kind", "successful_without_retry"))
        ),
        3
    );
    assert_eq!(
        counter(
            &s,
            "courier.retry.calls",
            &with(&flaky, ("kind", "failed_without_retry"))
        ),
        3
    );
    let template = ("url.template", "/entries/{id}");
    assert_eq!(
        samples(
            &s,
            "http.client.request.duration",
            &[template, ("http.response.status_code", "503")]
        ),
        1
    );
    assert_eq!(
        samples(
            &s,
            "http.client.request.duration",
            &[template, ("http.response.status_code", "200")]
        ),
        4
    );
    assert_eq!(
        samples(
            &s,
            "http.client.request.duration",
            &[
                ("url.template", "/flaky"),
                ("http.response.status_code", "500")
            ]
        ),
        2
    );
    assert_eq!(
        counter(
            &s,
            "courier.circuitbreaker.calls",
            &with(&flaky, ("kind", "failed"))
        ),
        2
    );
    assert_eq!(
        counter(
            &s,
            "courier.circuitbreaker.calls",
            &with(&flaky, ("kind", "not_permitted"))
        ),
        1
    );
    assert_eq!(
        gauge(
            &s,
            "courier.circuitbreaker.state",
            &with(&flaky, ("state", "open"))
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            &s,
            "courier.circuitbreaker.state",
            &with(&flaky, ("state", "closed"))
        ),
        Some(0.0)
    );
    assert_eq!(
        gauge(&s, "courier.circuitbreaker.failure_rate", &flaky),
        Some(100.0)
    );
    assert_eq!(
        gauge(&s, "courier.bulkhead.available_concurrent_calls", &flaky),
        Some(4.0)
    );
    assert_eq!(
        gauge(&s, "courier.bulkhead.max_allowed_concurrent_calls", &flaky),
        Some(4.0)
    );
    assert_eq!(
        counter(
            &s,
            "courier.fallback.calls",
            &with(&flaky, ("cause", "status"))
        ),
        2
    );
    assert_eq!(
        counter(
            &s,
            "courier.fallback.calls",
            &with(&flaky, ("cause", "circuit_open"))
        ),
        1
    );
    // Every label value is a compile-time name, a status, a kind or a
    // state: never the raw path.
    for (_, labels) in s.keys() {
        for (_, value) in labels {
            assert!(
                !value.contains("/entries/1") && !value.contains("/entries/2"),
                "{value}"
            );
        }
    }
}

/// 1,000 distinct ids make no new series: labels carry the template.
#[tokio::test(flavor = "current_thread")]
async fn the_number_of_series_stays_fixed_whatever_the_ids() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = support::healthy("x").await;
    let ledger = support::builder::<LedgerClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    for id in 0..10 {
        ledger.entry(id).await.expect("answered");
    }
    let before = series(&snapshotter).len();
    for id in 10..1010 {
        ledger.entry(id).await.expect("answered");
    }
    let after = series(&snapshotter);
    assert_eq!(after.len(), before, "no series per id");
    assert_eq!(
        samples(
            &after,
            "http.client.request.duration",
            &[("url.template", "/entries/{id}")]
        ),
        1000
    );
}

/// A permit the rate limiter refuses is counted, per client and method,
/// and the refused attempt is never sent, so it has no duration sample.
#[tokio::test(flavor = "current_thread")]
async fn rate_limiter_refusals_are_counted() {
    #[client(name = "metered")]
    #[retry(disabled)]
    trait Metered {
        #[get("/m")]
        #[rate_limit(per_second = 1, burst = 2)]
        async fn m(&self) -> Result<String, Error>;
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = support::healthy("m").await;
    let metered = support::builder::<MeteredClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    let mut refused = 0;
    for _ in 0..5 {
        if metered.m().await.is_err_and(|e| e.is_rate_limited()) {
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    let s = series(&snapshotter);
    let labels = [("courier.client", "metered"), ("courier.method", "m")];
    assert_eq!(counter(&s, "courier.ratelimiter.refused", &labels), 3);
    assert_eq!(samples(&s, "http.client.request.duration", &labels), 2);
}

/// A discovery that cannot reach its source counts it, labelled by the
/// service looked up (the call itself fails fast with no instances).
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "current_thread")]
async fn discovery_failures_are_counted() {
    use courier::discovery::etcd::EtcdDiscovery;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let ledger = support::builder::<LedgerClient>()
        .discovery(EtcdDiscovery::new([format!("http://127.0.0.1:{port}")]).expect("valid"))
        .build()
        .expect("valid");
    let e = ledger.entry(1).await.expect_err("no etcd, no instances");
    assert!(e.is_no_instances(), "{e}");
    let s = series(&snapshotter);
    assert!(
        counter(
            &s,
            "courier.discovery.errors",
            &[("courier.client", "ledger")]
        ) >= 1
    );
}

/// The families the first test does not reach: a call that failed after
/// retrying, the retry budget running dry, and the balancer's set and
/// ejections.
#[tokio::test(flavor = "current_thread")]
async fn budget_balancer_and_failed_with_retry_are_counted() {
    use courier::{Balance, Instance, OutlierEjection, StaticDiscovery};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // One instance always 503, two healthy ones: RoundRobin sends every
    // third first attempt to the bad one, whose retry goes elsewhere, until
    // five failures in a row eject it.
    let bad = support::answering(ResponseTemplate::new(503)).await;
    let (b, c) = (support::healthy("b").await, support::healthy("c").await);
    let discovery = StaticDiscovery::new().with(
        "ledger",
        [
            Instance::new("bad", bad.uri()),
            Instance::new("b", b.uri()),
            Instance::new("c", c.uri()),
        ],
    );
    let ledger = support::builder::<LedgerClient>()
        .discovery(discovery)
        .balance(Balance::RoundRobin)
        .outlier_ejection(OutlierEjection::default())
        .build()
        .expect("valid");
    for id in 0..30 {
        ledger.entry(id).await.expect("retried elsewhere");
    }
    let s = series(&snapshotter);
    let client = [("courier.client", "ledger")];
    assert_eq!(gauge(&s, "courier.balancer.instances", &client), Some(3.0));
    assert_eq!(gauge(&s, "courier.balancer.ejected", &client), Some(1.0));
    assert_eq!(
        counter(
            &s,
            "courier.balancer.ejections",
            &[("courier.client", "ledger"), ("courier.instance", "bad")]
        ),
        1
    );
    let entry = [("courier.client", "ledger"), ("courier.method", "entry")];
    let with = |kind| [entry[0], entry[1], ("kind", kind)];
    assert_eq!(
        counter(&s, "courier.retry.calls", &with("successful_with_retry")),
        5
    );

    // A dependency that is down, behind a budget of 10 % with no reserve:
    // the budget runs dry, and calls fail after their retries while it has
    // some.
    let down = support::answering(ResponseTemplate::new(503)).await;
    let ledger = support::builder::<LedgerClient>()
        .base_url(down.uri())
        .retry_budget(0.1, 0)
        .build()
        .expect("valid");
    for id in 0..40 {
        let e = ledger.entry(id).await.expect_err("503");
        assert!(e.is_status(), "{e}");
    }
    let s = series(&snapshotter);
    let failed_with = counter(&s, "courier.retry.calls", &with("failed_with_retry"));
    let failed_without = counter(&s, "courier.retry.calls", &with("failed_without_retry"));
    let exhausted = counter(&s, "courier.retry_budget.exhausted", &entry);
    assert_eq!(failed_with + failed_without, 40);
    assert!(
        failed_with >= 1,
        "some calls retried while the budget lasted"
    );
    // Every call that did not retry was refused by the budget (a 503 is
    // retryable), and no call is refused twice.
    assert!(
        exhausted >= failed_without && exhausted <= 40,
        "exhausted {exhausted}, failed with {failed_with}, without {failed_without}"
    );
    assert_eq!(
        gauge(&s, "courier.retry_budget.remaining", &client),
        Some(0.0)
    );
}
