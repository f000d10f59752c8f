//! DNS discovery against a local name: `localhost` resolves (through
//! /etc/hosts, as the system resolver does) to the wiremock server's address.
#![cfg(feature = "dns")]

use std::time::{Duration, Instant};

use courier::discovery::dns::DnsDiscovery;
use std::sync::{Arc, Mutex};

use courier::{Error, Event, Inspect, client};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[client(name = "inventory")]
trait Inventory {
    #[get("/stock/{sku}")]
    async fn stock(&self, sku: &str) -> Result<String, Error>;
}

#[tokio::test]
async fn localhost_with_a_port_resolves_to_the_running_instance() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("42"))
        .mount(&server)
        .await;
    let port = server.address().port();
    let client = InventoryClient::builder()
        .discovery(
            DnsDiscovery::host("localhost", port)
                .expect("resolver")
                .ipv4_only(),
        )
        .build()
        .expect("valid");

    // The first call waits for the first lookup (within its deadline).
    assert_eq!(client.stock("sku-1").await.ok().as_deref(), Some("42"));
    let ids: Vec<String> = client
        .instances()
        .expect("a discovery client")
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, [format!("127.0.0.1:{port}")]);
}

#[tokio::test]
async fn a_name_that_does_not_resolve_fails_fast_with_no_instances() {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&failures);
    let discovery = DnsDiscovery::host("no-such-host.invalid", 80)
        .expect("resolver")
        .on_event(move |event| {
            if let Event::DiscoveryFailed {
                service,
                source,
                error,
                ..
            } = *event
                && let Ok(mut f) = record.lock()
            {
                f.push(format!("{service} {source} {error}"));
            }
        });
    let client = InventoryClient::builder()
        .discovery(discovery)
        .build()
        .expect("valid");
    let start = Instant::now();
    let err = client.stock("sku-1").await.expect_err("nothing resolves");
    assert!(err.is_no_instances(), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // The failed lookup was reported, not swallowed.
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with("inventory no-such-host.invalid ")
                && f.contains("DNS lookup failed")),
        "{failures:?}"
    );
}
