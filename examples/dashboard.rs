//! The live dashboard over a demo service: two clients call their
//! dependencies (all in-process, on 127.0.0.1) under steady traffic; the
//! inventory dependency fails for 8 s out of every 20, so its breaker opens
//! and closes again, and the pricing dependency is sometimes too slow, so
//! its fallback answers. Open the printed URL and watch.
//!
//! `cargo run --example dashboard --features dashboard`
//!
//! Runs until Ctrl-C, or for `COURIER_DEMO_SECONDS` seconds (or as many as
//! the first argument says). `COURIER_DASHBOARD_PORT` picks the port (a
//! free one by default).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::{get, post};
use courier::dashboard::Dashboard;
use courier::{Error, Event, Instance, StaticDiscovery, client};

// ===== the clients: what the demo service calls =====

#[client(name = "inventory")]
#[timeout("500ms")]
#[retry(max_attempts = 2, backoff = "5ms..20ms")]
#[circuit_breaker(window = 20, min_calls = 10, failure_rate = 50, open_for = "3s")]
trait Inventory {
    /// Stock of an item: fails while the dependency is down.
    #[get("/stock/{sku}")]
    async fn stock(&self, sku: &str) -> Result<String, Error>;

    /// Holds an item: not idempotent, so never retried; at most 4 at once.
    #[post("/reservations/{sku}")]
    #[bulkhead(max_concurrent = 4)]
    async fn reserve(&self, sku: &str) -> Result<String, Error>;
}

#[client(name = "pricing")]
#[timeout("100ms")]
#[retry(disabled)]
trait Pricing {
    /// A price: sometimes slower than the timeout, then the fallback answers.
    #[get("/quote/{sku}")]
    async fn quote(&self, sku: &str) -> Result<String, Error>;
}

/// Answers for the pricing service when it cannot: the last known price.
struct LastKnownPrice;

#[courier::async_trait]
impl Pricing for LastKnownPrice {
    async fn quote(&self, _sku: &str) -> Result<String, Error> {
        Ok("9.99 (cached)".to_owned())
    }
}

// ===== the dependencies =====

/// The inventory is down from second 12 to second 20 of every 20.
const CYCLE: Duration = Duration::from_secs(20);
const UP_FOR: Duration = Duration::from_secs(12);

fn inventory_down(started: Instant) -> bool {
    let into_cycle = started.elapsed().as_millis() % CYCLE.as_millis();
    into_cycle >= UP_FOR.as_millis()
}

async fn serve(app: axum::Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// One inventory instance, answering after `delay`.
async fn inventory_instance(started: Instant, delay: Duration) -> std::io::Result<String> {
    let app = axum::Router::new()
        .route(
            "/stock/{sku}",
            get(move || async move {
                tokio::time::sleep(delay).await;
                if inventory_down(started) {
                    (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance")
                } else {
                    (StatusCode::OK, "42")
                }
            }),
        )
        .route(
            "/reservations/{sku}",
            post(move || async move {
                tokio::time::sleep(delay * 3).await;
                if inventory_down(started) {
                    (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance")
                } else {
                    (StatusCode::OK, "held")
                }
            }),
        );
    serve(app).await
}

/// The pricing service: one answer in ten takes 150 ms (over the client's
/// 100 ms timeout), the others 2 ms.
async fn pricing_service() -> std::io::Result<String> {
    let seen = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/quote/{sku}",
        get(move || {
            let n = seen.fetch_add(1, Ordering::Relaxed);
            async move {
                let ms = if n % 10 == 9 { 150 } else { 2 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "12.50"
            }
        }),
    );
    serve(app).await
}

// ===== traffic =====

/// Calls `call` every `every`, forever.
fn traffic<F, Fut>(every: Duration, mut call: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            tokio::spawn(call());
        }
    });
}

/// How long to run: the first argument or `COURIER_DEMO_SECONDS`, else
/// until Ctrl-C.
fn run_for() -> Option<Duration> {
    std::env::args()
        .nth(1)
        .or_else(|| std::env::var("COURIER_DEMO_SECONDS").ok())
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let discovery = StaticDiscovery::new().with(
        "inventory",
        [
            Instance::new(
                "a",
                inventory_instance(started, Duration::from_millis(2)).await?,
            )
            .with_zone("eu-1"),
            Instance::new(
                "b",
                inventory_instance(started, Duration::from_millis(8)).await?,
            )
            .with_zone("eu-2"),
        ],
    );
    let show_breakers = |event: &Event<'_>| {
        if let Event::CircuitStateChanged { .. } = event {
            println!("{event}");
        }
    };
    let inventory = InventoryClient::builder()
        .discovery(discovery)
        .on_event(show_breakers)
        .build()?;
    let pricing = PricingClient::builder()
        .base_url(pricing_service().await?)
        .fallback(LastKnownPrice)
        .build()?;

    let client = inventory.clone();
    traffic(Duration::from_millis(50), move || {
        let client = client.clone();
        async move {
            let _ = client.stock("sku-1").await;
        }
    });
    let client = inventory.clone();
    traffic(Duration::from_millis(100), move || {
        let client = client.clone();
        async move {
            let _ = client.reserve("sku-2").await;
        }
    });
    let client = pricing.clone();
    traffic(Duration::from_millis(40), move || {
        let client = client.clone();
        async move {
            let _ = client.quote("sku-1").await;
        }
    });

    // The dashboard. Operator actions are on because this demo listens on
    // loopback only; a real service mounts the router behind its own
    // authentication.
    let app =
        axum::Router::new().nest("/courier", Dashboard::new().operator_actions(true).router());
    let port: u16 = std::env::var("COURIER_DASHBOARD_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    println!("dashboard: http://{addr}/courier");
    println!("snapshot:  http://{addr}/courier/snapshot");
    println!(
        "the inventory fails for {}s of every {}s; Ctrl-C to stop",
        (CYCLE - UP_FOR).as_secs(),
        CYCLE.as_secs()
    );
    let server = axum::serve(listener, app);

    let limit = async {
        match run_for() {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    // Ctrl-C ends the process as usual: there is nothing to clean up.
    tokio::select! {
        served = server => served?,
        () = limit => {}
    }
    println!("stopped after {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
