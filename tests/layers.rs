//! The transport as a tower service: user layers around every attempt, and
//! interceptors that await.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use courier::{AsyncInterceptor, BoxError, Error, ErrorKind, Outgoing, client};
use http::header::{HeaderName, HeaderValue};
use tower_http::decompression::DecompressionLayer;
use tower_http::set_header::SetRequestHeaderLayer;
use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::{fail_then_ok, received};

#[client(name = "ledger")]
#[retry(backoff = "1ms..2ms")]
#[circuit_breaker(disabled)]
trait Ledger {
    #[get("/ok")]
    async fn entry(&self) -> Result<String, Error>;

    #[get("/ok")]
    #[timeout("300ms")]
    async fn quick(&self) -> Result<String, Error>;
}

/// A layer of our own: counts the requests that pass through it.
#[derive(Clone)]
struct Counting(Arc<AtomicUsize>);

impl<S> tower::Layer<S> for Counting {
    type Service = CountingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountingService {
            inner,
            count: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct CountingService<S> {
    inner: S,
    count: Arc<AtomicUsize>,
}

impl<S, B> tower::Service<http::Request<B>> for CountingService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.inner.call(request)
    }
}

fn set(name: &'static str, value: &'static str) -> SetRequestHeaderLayer<HeaderValue> {
    SetRequestHeaderLayer::overriding(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

fn header_of(request: &wiremock::Request, name: &str) -> Option<String> {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// tower-http's layer and one of our own see every attempt, retries
/// included, and apply in the order added (the first is the outermost, so
/// the last one to set a header wins).
#[tokio::test]
async fn layers_see_every_attempt_in_the_order_added() {
    let server = MockServer::start().await;
    fail_then_ok(&server, "/ok", 503, 2).await;
    let count = Arc::new(AtomicUsize::new(0));
    let ledger = support::builder::<LedgerClient>()
        .base_url(server.uri())
        .layer(set("x-layer", "yes"))
        .layer(set("x-order", "outer"))
        .layer(Counting(count.clone()))
        .layer(set("x-order", "inner"))
        .build()
        .expect("valid");
    assert_eq!(ledger.entry().await.ok().as_deref(), Some("ok"));
    assert_eq!(count.load(Ordering::SeqCst), 3, "two 503s and the answer");
    let requests = server.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(header_of(request, "x-layer").as_deref(), Some("yes"));
        assert_eq!(header_of(request, "x-order").as_deref(), Some("inner"));
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

async fn gzip_server(plain: &[u8]) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-encoding", "gzip")
                .set_body_bytes(gzip(plain)),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn tower_http_decompression_reads_a_gzip_body() {
    let server = gzip_server(b"the ledger balances").await;
    let ledger = support::builder::<LedgerClient>()
        .base_url(server.uri())
        .layer(DecompressionLayer::new())
        .build()
        .expect("valid");
    assert_eq!(
        ledger.entry().await.ok().as_deref(),
        Some("the ledger balances")
    );
    let requests = server.received_requests().await.unwrap_or_default();
    let accepted = requests
        .first()
        .and_then(|r| header_of(r, "accept-encoding"));
    assert!(accepted.is_some_and(|a| a.contains("gzip")));

    // Without the layer the body stays compressed: not UTF-8 text.
    let plain = support::builder::<LedgerClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    let err = plain.entry().await.expect_err("gzip bytes");
    assert!(err.is_decode(), "{err}");
}

/// The size limit applies to what the layers hand back: a small gzip body
/// that expands past the limit fails as too large, without buffering it.
#[tokio::test]
async fn the_size_limit_applies_to_the_decompressed_body() {
    let server = gzip_server(&vec![b'0'; 4 << 20]).await;
    let ledger = support::builder::<LedgerClient>()
        .base_url(server.uri())
        .layer(DecompressionLayer::new())
        .max_response_bytes(64 * 1024)
        .build()
        .expect("valid");
    let err = ledger.entry().await.expect_err("too large once decoded");
    assert_eq!(err.kind(), ErrorKind::Body, "{err}");
    assert!(err.to_string().contains("max_response_bytes"), "{err}");
    assert_eq!(received(&server).await, 1, "not retried");
}

/// Fetches a token from an in-process token server on every attempt.
struct FetchedToken {
    url: String,
    http: reqwest::Client,
}

#[courier::async_trait]
impl AsyncInterceptor for FetchedToken {
    async fn intercept(&self, request: &mut Outgoing<'_>) -> Result<(), BoxError> {
        let token = self.http.get(&self.url).send().await?.text().await?;
        request.set_header("authorization", format!("Bearer {token}"))?;
        Ok(())
    }
}

#[tokio::test]
async fn an_async_interceptor_awaits_a_value_on_every_attempt() {
    let tokens = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_string("t-42"))
        .mount(&tokens)
        .await;
    let server = MockServer::start().await;
    fail_then_ok(&server, "/ok", 503, 1).await;
    let ledger = support::builder::<LedgerClient>()
        .base_url(server.uri())
        .async_interceptor(FetchedToken {
            url: format!("{}/token", tokens.uri()),
            http: reqwest::Client::new(),
        })
        .build()
        .expect("valid");
    assert_eq!(ledger.entry().await.ok().as_deref(), Some("ok"));
    assert_eq!(received(&tokens).await, 2, "one token fetch per attempt");
    let requests = server.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| header_of(r, "authorization").as_deref() == Some("Bearer t-42"))
    );
}

struct Hangs;

#[courier::async_trait]
impl AsyncInterceptor for Hangs {
    async fn intercept(&self, _: &mut Outgoing<'_>) -> Result<(), BoxError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

struct Refuses;

#[courier::async_trait]
impl AsyncInterceptor for Refuses {
    async fn intercept(&self, _: &mut Outgoing<'_>) -> Result<(), BoxError> {
        tokio::task::yield_now().await;
        Err("no credentials today".into())
    }
}

#[tokio::test]
async fn a_hanging_interceptor_is_cut_by_the_deadline_and_a_refusal_sends_nothing() {
    let server = support::healthy("ok").await;
    let hanging = support::builder::<LedgerClient>()
        .base_url(server.uri())
        .async_interceptor(Hangs)
        .build()
        .expect("valid");
    let start = Instant::now();
    let err = hanging.quick().await.expect_err("cut by the timeout");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.attempts(), 0, "nothing was sent");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    let refusing = support::builder::<LedgerClient>()
        .base_url(server.uri())
        .async_interceptor(Refuses)
        .build()
        .expect("valid");
    let err = refusing.entry().await.expect_err("refused");
    assert!(err.is_interceptor(), "{err}");
    assert_eq!(err.attempts(), 0);
    let shown = format!("{:?}", std::error::Error::source(&err));
    assert!(shown.contains("no credentials today"), "{shown}");
    assert_eq!(received(&server).await, 0);
}
