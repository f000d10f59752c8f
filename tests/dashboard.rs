//! The dashboard over HTTP, mounted as a service mounts it
//! (`nest("/courier", …)`), with real generated clients: the snapshot
//! shows each method's effective policy after attributes and config, the
//! stream's rates add up to the calls made, and the operator's action
//! reaches the breaker only when it was enabled. (The page itself is
//! tested in Chromium, `tests/dashboard_browser.rs`.)
#![cfg(feature = "dashboard")]

use std::net::Ipv4Addr;
use std::time::Duration;

use courier::dashboard::Dashboard;
use courier::{Config, Error, client};
use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[client(name = "dash-catalog")]
#[timeout("4s")]
#[retry(max_attempts = 2, backoff = "1ms..2ms")]
trait Catalog {
    /// (Only the policies of this trait are inspected.)
    #[allow(dead_code)]
    #[get("/items/{id}")]
    #[circuit_breaker(window = 10, min_calls = 10, open_for = "30s")]
    async fn item(&self, id: u64) -> Result<String, Error>;

    #[allow(dead_code)]
    #[post("/items")]
    #[bulkhead(max_concurrent = 3, max_wait = "10ms")]
    async fn add(&self) -> Result<String, Error>;
}

#[client(name = "dash-stream")]
#[circuit_breaker(disabled)]
trait Items {
    #[get("/items/{id}")]
    async fn item(&self, id: u64) -> Result<String, Error>;
}

#[client(name = "dash-forced")]
#[retry(disabled)]
trait Orders {
    #[get("/orders/{id}")]
    async fn order(&self, id: u64) -> Result<String, Error>;
}

/// Serves `router` on a free loopback port under `/courier`; the base URL.
async fn mount(router: axum::Router) -> String {
    let app = axum::Router::new().nest("/courier", router);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a loopback port");
    let url = format!(
        "http://{}/courier",
        listener.local_addr().expect("its address")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn method<'r>(report: &'r Value, service: &str, name: &str) -> &'r Value {
    report["clients"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["service"] == service))
        .and_then(|c| c["methods"].as_array())
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("{service}#{name} in {report}"))
}

async fn snapshot(base: &str) -> Value {
    reqwest::get(format!("{base}/snapshot"))
        .await
        .expect("the snapshot answers")
        .text()
        .await
        .ok()
        .and_then(|body| serde_json::from_str(&body).ok())
        .expect("the snapshot is JSON")
}

/// The actuator view: what applies after attributes, config and defaults,
/// not what the source says.
#[tokio::test]
async fn the_snapshot_shows_each_methods_effective_policy_and_state() {
    let config = Config::from_toml_str(
        r#"
        [clients.dash-catalog.methods.item]
        timeout = "750ms"
        circuit_breaker.failure_rate = 30
        "#,
    )
    .expect("valid config");
    let _catalog = support::builder::<CatalogClient>()
        .base_url("http://127.0.0.1:9")
        .config(&config)
        .build()
        .expect("a client");
    let base = mount(courier::dashboard::router()).await;

    let report = snapshot(&base).await;
    assert_eq!(report["operator_actions"], false);
    assert_eq!(report["interval_ms"], Value::Null);
    let item = method(&report, "dash-catalog", "item");
    assert_eq!(item["verb"], "GET");
    assert_eq!(item["path"], "/items/{id}");
    let policy = &item["policy"];
    assert_eq!(policy["timeout"], "750ms", "config method level");
    assert_eq!(
        policy["retry"],
        json!({ "max_attempts": 2, "backoff": "1ms..2ms", "on": [429, 502, 503, 504],
                "attempt_timeout": null }),
        "trait attribute"
    );
    assert_eq!(policy["circuit"]["failure_rate"], 30, "config");
    assert_eq!(policy["circuit"]["window"], 10, "method attribute");
    assert_eq!(policy["circuit"]["open_for"], "30s", "method attribute");
    assert_eq!(policy["circuit"]["half_open_calls"], 3, "default");
    assert_eq!(
        item["circuit"],
        json!({ "state": "closed", "forced": "auto", "failures": 0, "slow": 0, "calls": 0,
                "transitions": [] })
    );
    assert_eq!(item["rates"], Value::Null, "a snapshot has no rates");

    let add = method(&report, "dash-catalog", "add");
    assert_eq!(add["policy"]["idempotent"], false);
    assert_eq!(add["policy"]["timeout"], "4s", "trait attribute");
    assert_eq!(
        add["bulkhead"],
        json!({ "max_concurrent": 3, "available": 3, "in_use": 0 })
    );
    assert_eq!(
        add["policy"]["bulkhead"],
        json!({ "max_concurrent": 3, "max_wait": "10ms" })
    );
}

/// The next `n` events of a stream, as reports.
async fn events(response: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut buffer = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                out.push(serde_json::from_str(data).expect("an event is JSON"));
            }
        }
        if out.len() >= n {
            break;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .expect("the stream is not over");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
    out
}

/// Whatever interval the calls fall in, the rates of consecutive events
/// add up to the calls made and their failures.
#[tokio::test]
async fn the_streams_rates_add_up_to_the_calls_made() {
    let server = MockServer::start().await;
    Mock::given(path("/items/1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("one"))
        .mount(&server)
        .await;
    Mock::given(path("/items/2"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let items = support::builder::<ItemsClient>()
        .base_url(server.uri())
        .build()
        .expect("a client");
    let base = mount(
        Dashboard::new()
            .interval(Duration::from_millis(200))
            .router(),
    )
    .await;
    let mut stream = reqwest::get(format!("{base}/stream"))
        .await
        .expect("the stream answers");
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let first = events(&mut stream, 1).await.remove(0);
    assert_eq!(method(&first, "dash-stream", "item")["rates"], Value::Null);

    // 12 calls, 4 of them failing (a 500 is not retried).
    for id in [1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2] {
        let _ = items.item(id).await;
    }

    let (mut calls, mut failed) = (0.0, 0.0);
    let mut seen = 0;
    for _ in 0..50 {
        let report = events(&mut stream, 1).await.remove(0);
        let m = method(&report, "dash-stream", "item");
        let seconds = report["interval_ms"].as_f64().expect("an interval") / 1e3;
        let rates = &m["rates"];
        let n = rates["calls_per_s"].as_f64().expect("calls/s") * seconds;
        calls += n;
        failed += rates["error_pct"].as_f64().unwrap_or(0.0) / 100.0 * n;
        if n > 0.0 {
            assert!(
                rates["p50_ms"].as_f64().is_some(),
                "latency of the interval's calls"
            );
        }
        seen = m["totals"]["calls"].as_u64().expect("totals");
        if seen == 12 && (calls - 12.0).abs() < 1e-6 {
            break;
        }
    }
    assert_eq!(seen, 12, "totals");
    assert!((calls - 12.0).abs() < 1e-6, "calls from the rates: {calls}");
    assert!(
        (failed - 4.0).abs() < 1e-6,
        "failures from the rates: {failed}"
    );
}

/// axum's `nest` serves the page at the mount point itself.
#[tokio::test]
async fn the_page_is_served_at_the_mount_point() {
    let base = mount(courier::dashboard::router()).await;
    let page = reqwest::get(&base).await.expect("the page answers");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.expect("a body");
    assert!(html.contains("<title>courier"), "{html}");
}

/// Forcing a breaker open is a real override: calls fail fast without
/// reaching the dependency until the operator sets it back.
#[tokio::test]
async fn an_operator_forces_a_breaker_open_and_back_only_when_enabled() {
    let server = support::healthy("an order").await;
    let orders = support::builder::<OrdersClient>()
        .base_url(server.uri())
        .build()
        .expect("a client");
    let http = reqwest::Client::new();
    let force = |base: &str, body: Value| {
        http.post(format!("{base}/breakers/dash-forced/order"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };

    let read_only = mount(courier::dashboard::router()).await;
    let refused = force(&read_only, json!({ "force": "open" }))
        .await
        .expect("an answer");
    assert_eq!(refused.status(), 404, "no such route unless enabled");
    orders.order(1).await.expect("the breaker was not touched");

    let operated = mount(Dashboard::new().operator_actions(true).router()).await;
    let wrong_verb = http
        .get(format!("{operated}/breakers/dash-forced/order"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(wrong_verb.status(), 405);
    let done = force(&operated, json!({ "force": "open" }))
        .await
        .expect("an answer");
    assert_eq!(done.status(), 200);
    let done: Value = serde_json::from_str(&done.text().await.expect("a body")).expect("JSON");
    assert_eq!(
        done,
        json!({ "breaker": "dash-forced#order", "force": "open", "clients": 1 })
    );

    let before = support::received(&server).await;
    let err = orders.order(2).await.expect_err("forced open");
    assert!(err.is_circuit_open(), "{err}");
    assert_eq!(support::received(&server).await, before, "nothing sent");
    let state = snapshot(&operated).await;
    let circuit = &method(&state, "dash-forced", "order")["circuit"];
    assert_eq!(
        (&circuit["state"], &circuit["forced"]),
        (&json!("closed"), &json!("open"))
    );

    let back = force(&operated, json!({ "force": "auto" }))
        .await
        .expect("an answer");
    assert_eq!(back.status(), 200);
    orders.order(3).await.expect("automatic again");
}
