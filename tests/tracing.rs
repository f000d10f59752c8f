//! Spans through `tracing`, exported by the OpenTelemetry SDK's in-memory
//! exporter: the conventions of HTTP client spans, and a trace that
//! continues into the called service.
#![cfg(feature = "opentelemetry")]

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::routing::get;
use courier::{Error, client};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;
use wiremock::MockServer;

mod support;

#[client(name = "user-service", path = "/api/v1")]
#[retry(backoff = "1ms..2ms")]
#[circuit_breaker(disabled)]
trait Users {
    #[get("/users/{id}")]
    async fn get(&self, id: u64, #[query] token: &str) -> Result<String, Error>;
}

fn provider() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv: &&KeyValue| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn string(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

fn int(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Value::I64(n) => Some(*n),
        other => other.as_str().parse().ok(),
    }
}

#[tokio::test]
async fn attempt_spans_follow_the_http_client_conventions() {
    let (provider, exporter) = provider();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    support::fail_then_ok(&server, "/api/v1/users/7", 503, 1).await;
    let users = support::builder::<UsersClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    assert_eq!(users.get(7, "s3cret").await.ok().as_deref(), Some("ok"));
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("spans");

    let call = spans
        .iter()
        .find(|s| s.name == "courier.call")
        .expect("a call span");
    assert_eq!(
        string(call, "courier.client").as_deref(),
        Some("user-service")
    );
    assert_eq!(string(call, "courier.method").as_deref(), Some("get"));
    assert_eq!(int(call, "courier.attempts"), Some(2));
    assert_eq!(string(call, "courier.outcome").as_deref(), Some("ok"));

    let mut attempts: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "GET /api/v1/users/{id}")
        .collect();
    attempts.sort_by_key(|s| s.start_time);
    assert_eq!(
        attempts.len(),
        2,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let port = i64::from(server.address().port());
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt.span_kind, SpanKind::Client);
        assert_eq!(attempt.parent_span_id, call.span_context.span_id());
        assert_eq!(
            string(attempt, "http.request.method").as_deref(),
            Some("GET")
        );
        assert_eq!(
            string(attempt, "url.template").as_deref(),
            Some("/api/v1/users/{id}")
        );
        assert_eq!(
            string(attempt, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(int(attempt, "server.port"), Some(port));
        let resend = int(attempt, "http.request.resend_count");
        assert_eq!(resend, (i > 0).then_some(i as i64));
    }
    assert_eq!(int(attempts[0], "http.response.status_code"), Some(503));
    assert_eq!(string(attempts[0], "error.type").as_deref(), Some("503"));
    assert_eq!(int(attempts[1], "http.response.status_code"), Some(200));
    assert_eq!(attr(attempts[1], "error.type"), None);

    // No attribute of any span holds the query value.
    for span in &spans {
        for kv in &span.attributes {
            assert!(
                !kv.value.as_str().contains("s3cret"),
                "{}: {:?}",
                span.name,
                kv
            );
        }
    }
}

/// Parses a W3C `traceparent` (`00-{trace}-{span}-{flags}`).
fn parent_of(headers: &HeaderMap) -> Option<SpanContext> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = value.split('-').collect();
    let [_, trace, span, flags] = parts.as_slice() else {
        return None;
    };
    Some(SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    ))
}

/// The called service, instrumented with the same SDK: its server span's
/// parent is whatever `traceparent` says.
async fn instrumented_service(provider: SdkTracerProvider) -> String {
    let app = axum::Router::new().route(
        "/api/v1/users/{id}",
        get(move |headers: HeaderMap| {
            let tracer = provider.tracer("server");
            async move {
                let parent = parent_of(&headers)
                    .map(|sc| Context::new().with_remote_span_context(sc))
                    .unwrap_or_default();
                let span = tracer
                    .span_builder("GET /api/v1/users/{id}")
                    .with_kind(SpanKind::Server)
                    .start_with_context(&tracer, &parent);
                drop(span);
                "alice"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test]
async fn the_trace_continues_into_the_called_service() {
    let (provider, exporter) = provider();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("client")));
    let _guard = tracing::subscriber::set_default(subscriber);
    let url = instrumented_service(provider.clone()).await;
    let users = Arc::new(
        support::builder::<UsersClient>()
            .base_url(url)
            .build()
            .expect("valid"),
    );

    let answer = users
        .get(7, "t")
        .instrument(tracing::info_span!("handling a request"))
        .await;
    assert_eq!(answer.ok().as_deref(), Some("alice"));
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("spans");
    let attempt = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .expect("the attempt span");
    let served = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .expect("the server span");
    assert_eq!(
        served.span_context.trace_id(),
        attempt.span_context.trace_id(),
        "one trace"
    );
    assert_eq!(served.parent_span_id, attempt.span_context.span_id());
    assert!(served.parent_span_is_remote);
}

#[client(name = "catalog")]
#[retry(disabled)]
#[circuit_breaker(disabled)]
trait Catalog {
    /// Hedged after 50 ms: the first attempt is slow.
    #[get("/items/{id}")]
    #[hedge(delay = "50ms", max_extra = 1)]
    async fn item(&self, id: u64) -> Result<String, Error>;

    /// Always 503: the fallback answers.
    #[get("/down")]
    async fn down(&self) -> Result<String, Error>;
}

struct Cached;

#[courier::async_trait]
impl Catalog for Cached {
    async fn item(&self, _: u64) -> Result<String, Error> {
        Ok("cached".into())
    }
    async fn down(&self) -> Result<String, Error> {
        Ok("cached".into())
    }
}

/// The fields the first test does not reach: a hedge's resend count, the
/// instance discovery picked, and a call the fallback answered.
#[tokio::test]
async fn hedges_instances_and_fallbacks_are_on_the_spans() {
    use courier::{Instance, StaticDiscovery};
    use wiremock::matchers::path;
    use wiremock::{Mock, ResponseTemplate};

    let (provider, exporter) = provider();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    // The first request to /items/1 is slow, the hedge is answered at once.
    let server = MockServer::start().await;
    Mock::given(path("/items/1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("slow")
                .set_delay(std::time::Duration::from_millis(500)),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/items/1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("fast"))
        .mount(&server)
        .await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let discovery = StaticDiscovery::new().with("catalog", [Instance::new("node-a", server.uri())]);
    let catalog = support::builder::<CatalogClient>()
        .discovery(discovery)
        .fallback(Cached)
        .build()
        .expect("valid");

    assert_eq!(catalog.item(1).await.ok().as_deref(), Some("fast"));
    assert_eq!(catalog.down().await.ok().as_deref(), Some("cached"));
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().expect("spans");

    let mut hedged: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "GET /items/{id}")
        .collect();
    hedged.sort_by_key(|s| s.start_time);
    assert_eq!(hedged.len(), 2, "the attempt and its hedge");
    assert_eq!(int(hedged[0], "http.request.resend_count"), None);
    assert_eq!(int(hedged[1], "http.request.resend_count"), Some(1));
    for attempt in &hedged {
        assert_eq!(
            string(attempt, "courier.instance").as_deref(),
            Some("node-a")
        );
    }

    let calls: Vec<&SpanData> = spans.iter().filter(|s| s.name == "courier.call").collect();
    let fell_back = calls
        .iter()
        .find(|s| string(s, "courier.method").as_deref() == Some("down"))
        .expect("the call span of down()");
    assert_eq!(
        attr(fell_back, "courier.fallback"),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        string(fell_back, "courier.outcome").as_deref(),
        Some("status")
    );
    let answered = calls
        .iter()
        .find(|s| string(s, "courier.method").as_deref() == Some("item"))
        .expect("the call span of item()");
    assert_eq!(attr(answered, "courier.fallback"), None);
}
