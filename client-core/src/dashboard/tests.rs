//! The report's JSON, the rates between two samples, the stream's events
//! and the routes, against a fake client registered like a built one (no
//! browser, no network).

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::report::{Sampler, client_report, rates};
use super::*;
use crate::inspect::Observed;
use crate::inspect::{
    BulkheadSnapshot, CircuitSnapshot, ClientSnapshot, InstanceSnapshot, MethodSnapshot,
};
use crate::observe::CircuitState;
use crate::observe::stats::{MethodStatsSnapshot, Transition};
use crate::policy::MethodPolicy;
use crate::spec::{Key, MethodDef, Overrides, Value as SpecValue, Verb};

// ===== a fake client =====

const GET: MethodDef = MethodDef {
    name: "get",
    verb: Verb::Get,
    path: "/api/v1/users/{id}",
    idempotent: false,
    auth: true,
    replayable: true,
    policy: Overrides::NONE,
};

/// A client the registry lists, with counters the test sets.
struct Fake {
    service: &'static str,
    stats: Mutex<MethodStatsSnapshot>,
    forced: Mutex<Vec<(String, Force)>>,
}

fn stats(calls: u64, failed: u64, retries: u64, latency: &[(usize, u64)]) -> MethodStatsSnapshot {
    let mut buckets = vec![0; 48];
    for &(i, n) in latency {
        buckets[i] = n;
    }
    MethodStatsSnapshot {
        method: "get",
        calls,
        failed,
        fallbacks: 0,
        retries,
        latency: buckets,
        transitions: vec![Transition {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            from: CircuitState::Closed,
            to: CircuitState::Open,
        }],
    }
}

impl Fake {
    fn registered(service: &'static str) -> Arc<Fake> {
        let fake = Arc::new(Fake {
            service,
            stats: Mutex::new(stats(0, 0, 0, &[])),
            forced: Mutex::new(Vec::new()),
        });
        let weak: Weak<dyn Observed> = Arc::downgrade(&fake) as _;
        crate::inspect::register_observed(weak);
        fake
    }

    fn set(&self, stats: MethodStatsSnapshot) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = stats;
    }

    fn forced(&self) -> Vec<(String, Force)> {
        self.forced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn client_snapshot(service: &'static str) -> ClientSnapshot {
    let method_level = Overrides::NONE
        .with(
            Key::Timeout,
            SpecValue::Duration(Duration::from_millis(300)),
        )
        .with(Key::BulkheadEnabled, SpecValue::Switch(true))
        .with(Key::BulkheadMaxConcurrent, SpecValue::Count(4));
    ClientSnapshot {
        service,
        methods: vec![MethodSnapshot {
            name: "get",
            verb: Verb::Get,
            path: GET.path,
            policy: MethodPolicy::resolve(&GET, &[&method_level]),
            circuit: Some(CircuitSnapshot {
                state: CircuitState::Open,
                forced: Force::Auto,
                failures: 11,
                slow: 0,
                calls: 20,
            }),
            bulkhead: Some(BulkheadSnapshot {
                max_concurrent: 4,
                available: 1,
            }),
        }],
        retry_budget_remaining: Some(7),
        instances: Some(vec![InstanceSnapshot {
            id: "a".into(),
            url: "http://10.0.0.1:8080".into(),
            zone: Some("eu-1".into()),
            in_flight: 2,
            rtt: Duration::from_micros(2500),
            ejected: true,
            ejections: 1,
        }]),
    }
}

impl Observed for Fake {
    fn snapshot(&self) -> ClientSnapshot {
        client_snapshot(self.service)
    }

    fn stats(&self) -> Vec<MethodStatsSnapshot> {
        vec![
            self.stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        ]
    }

    fn force(&self, method: &str, force: Force) -> bool {
        if method != "get" {
            return false;
        }
        self.forced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((method.to_owned(), force));
        true
    }
}

fn client_in<'r>(report: &'r Value, service: &str) -> &'r Value {
    report["clients"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["service"] == service))
        .unwrap_or_else(|| panic!("{service} in {report}"))
}

// ===== the JSON =====

/// The snapshot is the actuator view: the effective policy as the
/// attributes write it, and the live state next to it.
#[test]
fn the_report_shows_the_effective_policy_and_the_live_state() {
    let snapshot = client_snapshot("json-svc");
    let counters = stats(40, 10, 3, &[(10, 30), (20, 10)]);
    let report = client_report(&snapshot, &[counters], None);
    let json = serde_json::to_value(&report).unwrap_or_default();
    let method = &json["methods"][0];

    assert_eq!(json["service"], "json-svc");
    assert_eq!(json["retry_budget_remaining"], 7);
    assert_eq!(
        json["instances"][0],
        json!({ "id": "a", "url": "http://10.0.0.1:8080", "zone": "eu-1",
                "in_flight": 2, "rtt_ms": 2.5, "ejected": true, "ejections": 1 })
    );
    assert_eq!(method["name"], "get");
    assert_eq!(method["verb"], "GET");
    assert_eq!(method["path"], "/api/v1/users/{id}");
    // Attribute (300ms, bulkhead 4) over the defaults (retry, breaker).
    assert_eq!(
        method["policy"],
        json!({
            "timeout": "300ms", "idempotent": true,
            "retry": { "max_attempts": 3, "backoff": "50ms..1s", "on": [429, 502, 503, 504],
                       "attempt_timeout": null },
            "circuit": { "window": 20, "min_calls": 10, "failure_rate": 50, "slow_call": "2s",
                         "slow_call_rate": 100, "open_for": "5s", "half_open_calls": 3 },
            "rate_limit": null,
            "bulkhead": { "max_concurrent": 4, "max_wait": "0s" },
            "hedge": null,
            "log": { "level": "none", "body_limit": 4096 },
        })
    );
    assert_eq!(
        method["circuit"],
        json!({ "state": "open", "forced": "auto", "failures": 11, "slow": 0, "calls": 20,
                "transitions": [ { "at_ms": 1_767_225_600_000_u64, "from": "closed", "to": "open" } ] })
    );
    assert_eq!(
        method["bulkhead"],
        json!({ "max_concurrent": 4, "available": 1, "in_use": 3 })
    );
    assert_eq!(method["totals"]["calls"], 40);
    assert_eq!(method["totals"]["failed"], 10);
    assert_eq!(method["totals"]["retries"], 3);
    assert!(method["totals"]["p50_ms"].as_f64().is_some());
    assert_eq!(method["rates"], Value::Null, "one sample has no rates");
}

// ===== rates =====

/// Rates are differences of counters over the time between two samples;
/// quantiles come from the latency buckets filled in between only.
#[test]
fn rates_come_from_two_samples() {
    // 50 µs × 2^(i/2): bucket 10 ends at 1.6 ms, bucket 20 at 51.2 ms.
    let before = stats(10, 0, 1, &[(20, 10)]);
    let after = stats(30, 5, 5, &[(10, 19), (20, 11)]);
    let r = rates(&before, &after, Duration::from_secs(2)).unwrap_or_else(|| panic!("rates"));
    assert_eq!(r.calls_per_s, 10.0);
    assert_eq!(r.error_pct, Some(25.0));
    assert_eq!(r.retries_per_s, 2.0);
    assert_eq!(r.fallbacks_per_s, 0.0);
    // 20 calls in between: 19 in bucket 10, one in bucket 20 (the old
    // ten slow calls are not counted again).
    assert_eq!(r.p50_ms, Some(1.6));
    let p99 = r.p99_ms.unwrap_or_default();
    assert!((p99 - 51.2).abs() < 1e-9, "{p99}");
}

#[test]
fn no_calls_in_between_means_no_error_rate_and_no_latency() {
    let same = stats(10, 2, 0, &[(5, 10)]);
    let r = rates(&same, &same, Duration::from_secs(1)).unwrap_or_else(|| panic!("rates"));
    assert_eq!(
        (r.calls_per_s, r.error_pct, r.p50_ms, r.p99_ms),
        (0.0, None, None, None)
    );
    assert_eq!(rates(&same, &same, Duration::ZERO), None, "no time passed");
}

/// A sampler remembers each client: its second report of the same client
/// has rates; a client it has not seen before has none.
#[tokio::test(start_paused = true)]
async fn a_sampler_reports_rates_from_its_previous_sample() {
    let fake = Fake::registered("sampler-svc");
    let clients: Vec<Arc<dyn Observed>> = vec![fake.clone()];
    let mut sampler = Sampler::default();
    let first = serde_json::to_value(sampler.sample(&clients, false)).unwrap_or_default();
    assert_eq!(first["interval_ms"], Value::Null);
    assert_eq!(first["clients"][0]["methods"][0]["rates"], Value::Null);

    fake.set(stats(50, 25, 0, &[(10, 50)]));
    tokio::time::advance(Duration::from_millis(500)).await;
    let second = serde_json::to_value(sampler.sample(&clients, false)).unwrap_or_default();
    assert_eq!(second["interval_ms"], 500.0);
    let rates = &second["clients"][0]["methods"][0]["rates"];
    assert_eq!(rates["calls_per_s"], 100.0);
    assert_eq!(rates["error_pct"], 50.0);
}

// ===== the routes =====

async fn send(
    router: Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap_or_default();
    let response = router.oneshot(request).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The next event's report.
async fn next_report(body: &mut Body) -> Value {
    let frame = body.frame().await;
    let data = frame
        .and_then(Result::ok)
        .and_then(|f| f.into_data().ok())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&data).into_owned();
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("an event with data, got {text:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// The stream's events are reports, one per interval, the first at once;
/// each later one carries the rates since the one before.
#[tokio::test(start_paused = true)]
async fn the_stream_sends_a_report_per_interval_with_the_rates_in_between() {
    let fake = Fake::registered("stream-svc");
    let router: Router = Dashboard::new().router();
    let request = Request::get("/stream")
        .body(Body::empty())
        .unwrap_or_default();
    let response = router.oneshot(request).await.unwrap_or_else(|e| match e {});
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();

    let first = next_report(&mut body).await;
    assert_eq!(
        client_in(&first, "stream-svc")["methods"][0]["rates"],
        Value::Null
    );

    fake.set(stats(20, 5, 2, &[(10, 20)]));
    let second = next_report(&mut body).await;
    assert_eq!(second["interval_ms"], 1000.0);
    let rates = &client_in(&second, "stream-svc")["methods"][0]["rates"];
    assert_eq!(rates["calls_per_s"], 20.0);
    assert_eq!(rates["error_pct"], 25.0);
    assert_eq!(rates["retries_per_s"], 2.0);
    assert_eq!(rates["p50_ms"], 1.6);

    // Nothing in the next interval: zero rates, no error percentage.
    let third = next_report(&mut body).await;
    let rates = &client_in(&third, "stream-svc")["methods"][0]["rates"];
    assert_eq!(rates["calls_per_s"], 0.0);
    assert_eq!(rates["error_pct"], Value::Null);
    assert_eq!(
        client_in(&third, "stream-svc")["methods"][0]["totals"]["calls"],
        20
    );
}

#[tokio::test]
async fn the_snapshot_is_the_report_as_json() {
    let _fake = Fake::registered("snapshot-svc");
    let (status, body) = send(router(), Method::GET, "/snapshot", None).await;
    assert_eq!(status, StatusCode::OK);
    let json: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(json["operator_actions"], false);
    let client = client_in(&json, "snapshot-svc");
    assert_eq!(client["methods"][0]["circuit"]["state"], "open");
}

/// The page is one self-contained document: nothing loaded from elsewhere,
/// and it may not be framed.
#[tokio::test]
async fn the_page_needs_nothing_from_elsewhere() {
    let request = Request::get("/").body(Body::empty()).unwrap_or_default();
    let response = router::<()>()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let html = String::from_utf8_lossy(&body);
    assert!(html.starts_with("<!doctype html>"));
    for external in ["src=", "href=", "@import", "url(", "http://", "https://"] {
        assert!(
            !html.contains(external),
            "the page loads something: {external}"
        );
    }
    assert!(html.contains("new EventSource(base + \"stream\")"));
}

const OPEN: &str = r#"{"force":"open"}"#;

/// Forcing a breaker changes what callers get, so the route exists only
/// when the router was asked for it.
#[tokio::test]
async fn operator_actions_are_refused_unless_enabled() {
    let fake = Fake::registered("refused-svc");
    let off: Router = router();
    let (status, _) = send(
        off.clone(),
        Method::POST,
        "/breakers/refused-svc/get",
        Some(OPEN),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(off, Method::GET, "/breakers/refused-svc/get", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(fake.forced().is_empty(), "nothing forced");
}

#[tokio::test]
async fn operator_actions_force_a_breaker_when_enabled() {
    let fake = Fake::registered("forced-svc");
    let on: Router = Dashboard::new().operator_actions(true).router();

    let (status, body) = send(
        on.clone(),
        Method::POST,
        "/breakers/forced-svc/get",
        Some(OPEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(
        json,
        json!({ "breaker": "forced-svc#get", "force": "open", "clients": 1 })
    );
    let (status, _) = send(
        on.clone(),
        Method::POST,
        "/breakers/forced-svc/get",
        Some(r#"{"force":"auto"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fake.forced(),
        vec![
            ("get".to_owned(), Force::Open),
            ("get".to_owned(), Force::Auto)
        ]
    );

    // Anything else is refused, and forces nothing.
    let cases = [
        (
            Method::GET,
            "/breakers/forced-svc/get",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::POST,
            "/breakers/forced-svc/nope",
            Some(OPEN),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/breakers/no-such-svc/get",
            Some(OPEN),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/breakers/forced-svc/get",
            Some(r#"{"force":"explode"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (method, uri, body, expected) in cases {
        let (status, text) = send(on.clone(), method.clone(), uri, body).await;
        assert_eq!(status, expected, "{method} {uri} {body:?}: {text}");
    }
    // A cross-site form cannot send JSON: without the content type, 415.
    let request = Request::post("/breakers/forced-svc/get")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("force=open"))
        .unwrap_or_default();
    let response = on.oneshot(request).await.unwrap_or_else(|e| match e {});
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(fake.forced().len(), 2, "no refused request forced anything");
}
