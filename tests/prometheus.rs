//! The metrics exported as Prometheus text and scraped over HTTP, as a
//! Prometheus server would (the setup of `examples/prometheus.rs`).
#![cfg(feature = "metrics")]

use std::net::{Ipv4Addr, SocketAddr};

use courier::{Error, client};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

mod support;

#[client(name = "inventory")]
#[retry(backoff = "1ms..2ms")]
#[circuit_breaker(disabled)]
trait Inventory {
    #[get("/stock/{sku}")]
    async fn stock(&self, sku: &str) -> Result<String, Error>;
}

#[tokio::test]
async fn a_prometheus_scrape_shows_the_call_metrics() {
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full("http.client.request.duration".into()),
            courier::observe::DURATION_BUCKETS,
        )
        .expect("buckets")
        .build()
        .expect("exporter");
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
    tokio::spawn(exporter);

    let server = wiremock::MockServer::start().await;
    support::fail_then_ok(&server, "/stock/a-1", 503, 1).await;
    let inventory = support::builder::<InventoryClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    assert_eq!(inventory.stock("a-1").await.ok().as_deref(), Some("ok"));

    let mut scraped = String::new();
    // The listener is spawned: scrape until it answers.
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(format!("http://{addr}/metrics")).await {
            scraped = r.text().await.unwrap_or_default();
            if !scraped.is_empty() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let has = |needle: &str| {
        scraped
            .lines()
            .any(|l| needle.split('*').all(|p| l.contains(p)))
    };
    assert!(
        has("courier_retry_calls*courier_client=\"inventory\"*kind=\"successful_with_retry\"*} 1"),
        "{scraped}"
    );
    assert!(
        has(
            "http_client_request_duration_bucket*url_template=\"/stock/{sku}\"*http_response_status_code=\"503\"*le=\"+Inf\"} 1"
        ),
        "{scraped}"
    );
    assert!(
        has("http_client_request_duration_count*http_response_status_code=\"200\"*} 1"),
        "{scraped}"
    );
    assert!(!scraped.contains("a-1"), "no raw path in any label");
}
