//! courier's metrics exported as Prometheus text: a service with one
//! flaky dependency, called through a generated client, its metrics served
//! at `http://127.0.0.1:<port>/metrics` and printed once.
//!
//! `cargo run --example prometheus --features metrics`

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::routing::get;
use courier::{Error, client};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

#[client(name = "inventory")]
#[retry(backoff = "1ms..5ms")]
trait Inventory {
    #[get("/stock/{sku}")]
    async fn stock(&self, sku: &str) -> Result<String, Error>;
}

/// The dependency: every third request answers 503.
async fn inventory_service() -> Result<String, Box<dyn std::error::Error>> {
    let seen = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/stock/{sku}",
        get(move || {
            let n = seen.fetch_add(1, Ordering::Relaxed);
            async move {
                if n % 3 == 2 {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
                } else {
                    (axum::http::StatusCode::OK, "42")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// A free loopback port for the exporter's listener.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Install the exporter before building clients: their handles are
    // registered when they are built.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full("http.client.request.duration".into()),
            courier::observe::DURATION_BUCKETS,
        )?
        .build()?;
    metrics::set_global_recorder(recorder)?;
    tokio::spawn(exporter);

    let inventory = InventoryClient::builder()
        .base_url(inventory_service().await?)
        .build()?;
    for sku in ["a-1", "b-2", "c-3", "d-4", "e-5", "f-6"] {
        inventory.stock(sku).await?;
    }

    let scraped = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    println!("metrics at http://{addr}/metrics:\n");
    for line in scraped
        .lines()
        .filter(|l| l.contains("inventory") && !l.starts_with('#'))
    {
        println!("{line}");
    }
    Ok(())
}
