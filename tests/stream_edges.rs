//! Streamed-body edge cases found by review: a stream through a tower
//! layer, a stream longer or shorter than its declared length, the
//! caller's `Content-Type` after the body, a config that turns retries on
//! for a streamed method, a huge idle timeout.

use std::time::Duration;

use bytes::Bytes;
use courier::{BodyStream, Config, Error, client};
use futures::StreamExt;
use wiremock::matchers::{any, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[client(name = "review-store")]
#[retry(max_attempts = 3, backoff = "1ms..2ms")]
#[timeout("10s")]
trait Store {
    #[put("/objects/{key}")]
    async fn put(&self, key: &str, #[body] data: BodyStream) -> Result<(), Error>;

    /// The body first, the caller's content type after it.
    #[put("/objects/{key}")]
    async fn put_body_first(
        &self,
        key: &str,
        #[body] data: BodyStream,
        #[header("Content-Type")] content_type: &str,
    ) -> Result<(), Error>;
}

fn chunks(parts: &[&'static str]) -> BodyStream {
    let items: Vec<Result<Bytes, std::io::Error>> = parts
        .iter()
        .map(|p| Ok(Bytes::from_static(p.as_bytes())))
        .collect();
    BodyStream::from_stream(futures::stream::iter(items))
}

async fn ok_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

async fn bodies(server: &MockServer) -> Vec<Vec<u8>> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.body)
        .collect()
}

/// With any tower layer (or with response decompression, on by default
/// with a compression feature), every call takes the layered path. On
/// reqwest, the bottom of that stack (`ReqwestService`) only forwards a
/// whole body: a stream is dropped and the request goes out empty, and
/// the call succeeds.
#[tokio::test]
async fn a_streamed_body_reaches_the_server_through_a_tower_layer() {
    let server = ok_server().await;
    let client = support::builder::<StoreClient>()
        .base_url(server.uri())
        .layer(tower::layer::util::Identity::new())
        .build()
        .expect("valid");
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        client.put("a", chunks(&["one ", "two ", "three"])),
    )
    .await
    .expect("bounded");
    assert!(sent.is_ok(), "{sent:?}");
    assert_eq!(bodies(&server).await, vec![b"one two three".to_vec()]);
}

/// `with_length` promises "a body that then ends early or runs long fails
/// its request". A stream longer than its declared length is cut at the
/// declared length by hyper's encoder and the rest silently dropped: the
/// server stores a truncated object and the call succeeds.
#[tokio::test]
async fn a_stream_longer_than_its_declared_length_fails_the_request() {
    let server = ok_server().await;
    let client = support::builder::<StoreClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        client.put("a", chunks(&["one ", "two ", "three"]).with_length(3)),
    )
    .await
    .expect("bounded");
    let received = bodies(&server).await;
    assert!(
        sent.is_err(),
        "a 13-byte stream declared as 3 bytes was accepted; the server got {:?}",
        received
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
    );
}

/// The other half: a stream shorter than declared does fail (hyper
/// refuses to end a sized body early), but as a `Transport` error
/// ("request failed"), which the breaker counts against the service,
/// while a caller's stream that fails is an `InvalidRequest` the breaker
/// ignores (module docs of `stream`). The caller's wrong length is the
/// caller's fault too.
#[tokio::test]
async fn a_stream_shorter_than_its_declared_length_is_the_callers_error() {
    let server = ok_server().await;
    let client = support::builder::<StoreClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        client.put("a", chunks(&["one ", "two ", "three"]).with_length(20)),
    )
    .await
    .expect("bounded");
    let err = sent.expect_err("a 13-byte stream declared as 20 was sent");
    assert_eq!(err.attempts(), 1, "{err}");
    assert!(err.is_invalid_request(), "{:?}: {err}", err.kind());
}

/// `set_stream_body` adds `application/octet-stream` "unless a
/// `#[header("Content-Type")]` sets one", but only looks at the headers
/// pushed so far: parameters are filled in declaration order, so a
/// content type declared after the body goes out as a second
/// `Content-Type` header.
#[tokio::test]
async fn a_content_type_after_the_streamed_body_is_the_only_one_sent() {
    let server = ok_server().await;
    let client = support::builder::<StoreClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    client
        .put_body_first("a", chunks(&["x"]), "text/plain")
        .await
        .expect("stored");
    let requests = server.received_requests().await.unwrap_or_default();
    let types: Vec<String> = requests[0]
        .headers
        .get_all("content-type")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(types, vec!["text/plain".to_owned()]);
}

/// A config file that turns retries and hedging on for a streamed method
/// (client level and method level) changes nothing: `MethodDef.replayable`
/// keeps the stream to one send. Pinned (the config is silently ignored
/// for this method; no error or warning says so).
#[tokio::test]
async fn a_config_enabling_retry_and_hedge_still_sends_a_stream_once() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(50)))
        .mount(&server)
        .await;
    let config = Config::from_toml_str(
        r#"
        [clients.review-store]
        retry.max_attempts = 5
        hedge.delay = "1ms"
        hedge.max_extra = 2

        [clients.review-store.methods.put]
        retry.disabled = false
        retry.max_attempts = 4
        retry.backoff = "1ms..2ms"
        hedge.disabled = false
        hedge.delay = "1ms"
        "#,
    )
    .expect("a valid config");
    let client = support::builder::<StoreClient>()
        .base_url(server.uri())
        .config(&config)
        .build()
        .expect("valid");
    let err = client.put("a", chunks(&["once"])).await.expect_err("503");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503), "{err}");
    assert_eq!(err.attempts(), 1, "{err}");
    assert_eq!(support::received(&server).await, 1);
    assert_eq!(bodies(&server).await, vec![b"once".to_vec()]);
}

/// `idle_timeout(Some(d))` with a large `d` (a caller's "practically
/// forever") panics on the first wait: the timer is reset to
/// `Instant::now() + idle`, an unchecked addition.
#[tokio::test]
async fn a_huge_idle_timeout_waits_instead_of_panicking() {
    let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
    let mut body = BodyStream::from_stream(never).idle_timeout(Some(Duration::MAX));
    let waited = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_millis(100), body.next())
            .await
            .is_err()
    })
    .await;
    assert!(
        matches!(waited, Ok(true)),
        "polling a stalled body with a long idle timeout: {waited:?}"
    );
}
