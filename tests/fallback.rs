//! Fallbacks answer for dependency failures (timeout, open circuit, 5xx,
//! connect), never for the caller's mistakes (4xx) or bugs (decode errors).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::{Error, ErrorKind, Event, client};
use serde::Deserialize;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Price {
    cents: u64,
}

#[client(name = "pricing")]
#[retry(disabled)]
#[timeout("300ms")]
#[circuit_breaker(window = 2, min_calls = 2, open_for = "10s")]
trait Pricing {
    #[get("/price/{sku}")]
    async fn price(&self, sku: &str, #[query] currency: Option<&str>) -> Result<Price, Error>;
}

/// What a team would put behind a pricing outage: a stale catalogue price.
#[derive(Default)]
struct Catalogue {
    asked: Mutex<Vec<String>>,
}

#[courier::async_trait]
impl Pricing for Catalogue {
    async fn price(&self, sku: &str, currency: Option<&str>) -> Result<Price, Error> {
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{sku}/{}", currency.unwrap_or("-")));
        Ok(Price { cents: 999 })
    }
}

async fn answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/price/sku-1"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

fn with_fallback(server: &MockServer, fallback: Arc<Catalogue>) -> PricingClient {
    struct Shared(Arc<Catalogue>);
    #[courier::async_trait]
    impl Pricing for Shared {
        async fn price(&self, sku: &str, currency: Option<&str>) -> Result<Price, Error> {
            self.0.price(sku, currency).await
        }
    }
    support::builder::<PricingClient>()
        .base_url(server.uri())
        .fallback(Shared(fallback))
        .build()
        .expect("valid")
}

fn asked(c: &Catalogue) -> Vec<String> {
    c.asked.lock().map(|v| v.clone()).unwrap_or_default()
}

#[tokio::test]
async fn the_fallback_answers_a_5xx_with_the_same_arguments() {
    let server = answering(ResponseTemplate::new(503)).await;
    let catalogue = Arc::new(Catalogue::default());
    let c = with_fallback(&server, catalogue.clone());
    assert_eq!(
        c.price("sku-1", Some("EUR")).await.ok(),
        Some(Price { cents: 999 })
    );
    assert_eq!(asked(&catalogue), ["sku-1/EUR"]);
}

#[tokio::test]
async fn the_fallback_answers_a_timeout() {
    let server = answering(
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"cents": 1}))
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    let catalogue = Arc::new(Catalogue::default());
    let c = with_fallback(&server, catalogue.clone());
    let start = std::time::Instant::now();
    assert_eq!(
        c.price("sku-1", None).await.ok(),
        Some(Price { cents: 999 })
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(asked(&catalogue), ["sku-1/-"]);
}

#[tokio::test]
async fn the_fallback_answers_while_the_circuit_is_open_without_io() {
    let server = answering(ResponseTemplate::new(500)).await;
    let catalogue = Arc::new(Catalogue::default());
    let c = with_fallback(&server, catalogue.clone());
    for _ in 0..5 {
        assert_eq!(
            c.price("sku-1", None).await.ok(),
            Some(Price { cents: 999 })
        );
    }
    // Two 500s opened the breaker; the other three never reached the server.
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 2);
    assert_eq!(asked(&catalogue).len(), 5);
}

#[tokio::test]
async fn no_fallback_for_4xx_or_decode_errors() {
    // Why: hiding the caller's mistake or a broken contract behind a stale
    // answer would make both invisible.
    for (template, kind) in [
        (ResponseTemplate::new(404), ErrorKind::Status),
        (ResponseTemplate::new(400), ErrorKind::Status),
        (
            ResponseTemplate::new(200).set_body_string("{\"cents\":\"x\"}"),
            ErrorKind::Decode,
        ),
    ] {
        let server = answering(template).await;
        let catalogue = Arc::new(Catalogue::default());
        let c = with_fallback(&server, catalogue.clone());
        for _ in 0..5 {
            let err = c.price("sku-1", None).await.expect_err("no fallback");
            assert_eq!(err.kind(), kind);
        }
        assert!(asked(&catalogue).is_empty());
    }
}

#[tokio::test]
async fn the_factory_sees_the_cause_and_events_report_the_fallback() {
    let server = answering(ResponseTemplate::new(502)).await;
    type Causes = Arc<Mutex<Vec<(ErrorKind, Option<u16>)>>>;
    let causes: Causes = Arc::default();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let (seen, log) = (causes.clone(), events.clone());
    let c = support::builder::<PricingClient>()
        .base_url(server.uri())
        .fallback_factory(move |cause: &Error| {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((cause.kind(), cause.status().map(|s| s.as_u16())));
            Catalogue::default()
        })
        .on_event(move |e: &Event<'_>| {
            if let Event::FallbackUsed {
                service,
                method,
                cause,
                ..
            } = e
            {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("{service}#{method} {cause:?}"));
            }
        })
        .build()
        .expect("valid");
    assert!(c.price("sku-1", None).await.is_ok());
    assert!(c.price("sku-1", None).await.is_ok());
    assert!(c.price("sku-1", None).await.is_ok(), "now open");
    let causes = causes.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(
        causes,
        [
            (ErrorKind::Status, Some(502)),
            (ErrorKind::Status, Some(502)),
            (ErrorKind::CircuitOpen, None),
        ]
    );
    let events = events.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2], "pricing#price CircuitOpen");
}

#[tokio::test]
async fn without_a_fallback_the_error_comes_through() {
    let server = answering(ResponseTemplate::new(503)).await;
    let c = support::builder::<PricingClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    let err = c.price("sku-1", None).await.expect_err("503");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
}
