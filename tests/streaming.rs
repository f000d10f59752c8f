//! Response bodies read as they arrive (`-> Result<BodyStream, Error>`),
//! against raw loopback servers that send, pause and stall exactly when a
//! test says: chunks reach the caller before the body is complete, the
//! size limit is a running total, the deadline covers the time to first
//! byte and the idle timeout each wait after it, and memory stays flat
//! over 1 GiB. Streamed request bodies (`#[body] BodyStream`) against
//! wiremock: sent as they are, once, never retried, proxied from a
//! download without buffering.

use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::{BodyStream, Error, Response, client};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

mod support;

#[client(name = "archive")]
#[retry(disabled)]
trait Archive {
    #[get("/export")]
    #[timeout("1s")]
    async fn export(&self) -> Result<BodyStream, Error>;

    #[get("/export")]
    #[timeout("1s")]
    async fn maybe(&self) -> Result<Option<BodyStream>, Error>;

    #[get("/export")]
    #[timeout("1s")]
    async fn with_headers(&self) -> Result<Response<BodyStream>, Error>;

    #[get("/export")]
    #[timeout("1s")]
    #[retry(max_attempts = 2, backoff = "1ms..2ms")]
    async fn retried(&self) -> Result<BodyStream, Error>;

    #[get("/big")]
    #[timeout("60s")]
    async fn big(&self) -> Result<BodyStream, Error>;
}

fn archive(url: &str) -> ArchiveClient {
    support::builder::<ArchiveClient>()
        .base_url(url)
        .build()
        .expect("valid")
}

/// What a scripted connection does after reading the request head.
enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Wait for the test to say go on.
    Wait,
    /// Sleep this long.
    Pause(Duration),
}

/// A server giving each connection the next script, in order of
/// arrival; `go` releases a `Wait`.
async fn scripted(scripts: Vec<Vec<Step>>) -> (String, mpsc::UnboundedSender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (go, wait) = mpsc::unbounded_channel::<()>();
    let wait = std::sync::Arc::new(tokio::sync::Mutex::new(wait));
    tokio::spawn(async move {
        for script in scripts {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(play(socket, script, wait.clone()));
        }
    });
    (url, go)
}

async fn play(
    mut socket: TcpStream,
    script: Vec<Step>,
    wait: std::sync::Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>>,
) {
    read_head(&mut socket).await;
    for step in script {
        match step {
            Step::Send(bytes) => {
                if socket.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Step::Wait => {
                let _ = wait.lock().await.recv().await;
            }
            Step::Pause(d) => tokio::time::sleep(d).await,
        }
    }
    // Keep the connection open (a stall, not an end) until the client
    // drops it.
    let mut rest = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut rest)).await;
}

async fn read_head(socket: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
}

fn chunked_head(extra: &str) -> Step {
    // One response per connection: each script is its own connection.
    Step::Send(
        format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n{extra}\r\n"
        )
        .into_bytes(),
    )
}

fn chunk(data: &[u8]) -> Step {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    Step::Send(out)
}

fn end() -> Step {
    Step::Send(b"0\r\n\r\n".to_vec())
}

#[tokio::test]
async fn chunks_reach_the_caller_before_the_body_is_complete() {
    // The server sends the second chunk only after the test has read the
    // first: a client that buffered the whole body would wait forever.
    let (url, go) = scripted(vec![vec![
        chunked_head(""),
        chunk(b"first"),
        Step::Wait,
        chunk(b"second"),
        end(),
    ]])
    .await;
    let mut body = archive(&url).export().await.expect("headers");
    let first = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("the first chunk came before the rest was sent");
    assert_eq!(first.map(|r| r.ok()), Some(Some(Bytes::from("first"))));
    go.send(()).expect("server waits");
    let second = body.next().await.map(|r| r.ok());
    assert_eq!(second, Some(Some(Bytes::from("second"))));
    assert!(body.next().await.is_none());
    assert_eq!(body.bytes_read(), 11);
}

#[tokio::test]
async fn the_size_limit_is_a_running_total() {
    let kib = vec![b'x'; 1024];
    let (url, _go) = scripted(vec![
        vec![
            chunked_head(""),
            chunk(&kib),
            chunk(&kib),
            chunk(&kib),
            end(),
        ],
        // A declared length over the limit fails at the first item.
        vec![Step::Send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 4096\r\nconnection: close\r\n\r\n".to_vec(),
        )],
    ])
    .await;
    let client = archive(&url);
    let mut body = client.export().await.expect("headers").max_bytes(2048);
    let mut got = 0;
    let mut error = None;
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => got += chunk.len(),
            Err(e) => error = Some(e),
        }
    }
    assert!(got <= 2048, "{got} bytes handed over past a 2048 limit");
    let error = error.expect("cut at the limit");
    assert!(error.is_body() && error.is_too_large(), "{error}");

    let mut body = client.export().await.expect("headers").max_bytes(2048);
    assert_eq!(body.declared_length(), Some(4096));
    let first = body.next().await.expect("an item");
    let error = first.expect_err("declared over the limit");
    assert!(error.is_too_large(), "{error}");
    assert!(error.to_string().contains("4096"), "{error}");
    assert!(
        body.next().await.is_none(),
        "the stream ends after an error"
    );
}

#[tokio::test]
async fn the_deadline_covers_the_first_byte_and_the_idle_timeout_each_wait() {
    let gap = Duration::from_millis(400);
    let (url, _go) = scripted(vec![
        // Four gaps of 400 ms: 1.6 s in all, past the 1 s timeout, but no
        // single wait is; then a stall.
        vec![
            chunked_head(""),
            chunk(b"a"),
            Step::Pause(gap),
            chunk(b"b"),
            Step::Pause(gap),
            chunk(b"c"),
            Step::Pause(gap),
            chunk(b"d"),
            Step::Pause(gap),
            chunk(b"e"),
        ],
        // Headers after 3 s: the call's 1 s deadline ends it.
        vec![Step::Pause(Duration::from_secs(3)), chunked_head("")],
    ])
    .await;
    let client = archive(&url);
    let started = Instant::now();
    let mut body = client.export().await.expect("headers");
    let mut got = Vec::new();
    let mut error = None;
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(e) => error = Some(e),
        }
    }
    let error = error.expect("the stall ends the stream");
    assert_eq!(got, b"abcde", "every chunk within the idle timeout arrived");
    assert!(error.is_timeout(), "{error}");
    assert!(error.to_string().contains("idle timeout"), "{error}");
    // 1.6 s of gaps and a 1 s stall: well past the 1 s call timeout.
    assert!(started.elapsed() >= Duration::from_millis(2400));

    let started = Instant::now();
    let err = client.export().await.expect_err("no headers in time");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_millis(2900));
}

#[tokio::test]
async fn no_idle_timeout_waits_as_long_as_the_server_takes() {
    let (url, _go) = scripted(vec![vec![
        chunked_head(""),
        Step::Pause(Duration::from_millis(1500)),
        chunk(b"late"),
        end(),
    ]])
    .await;
    let body = archive(&url).export().await.expect("headers");
    let chunks: Vec<_> = body.idle_timeout(None).collect().await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].as_ref().ok(), Some(&Bytes::from("late")));
}

#[tokio::test]
async fn an_error_status_is_an_error_and_is_retried_as_usual() {
    let (url, _go) = scripted(vec![
        vec![Step::Send(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy"
                .to_vec(),
        )],
        vec![chunked_head(""), chunk(b"ok"), end()],
    ])
    .await;
    let client = archive(&url);
    let body = client.retried().await.expect("the second attempt");
    let chunks: Vec<_> = body.collect().await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].as_ref().ok(), Some(&Bytes::from("ok")));

    let (url, _go) = scripted(vec![vec![Step::Send(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy"
            .to_vec(),
    )]])
    .await;
    let err = archive(&url).export().await.expect_err("503");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(err.body_snippet(), Some("busy"));
}

#[tokio::test]
async fn option_and_response_wrap_a_stream() {
    let (url, _go) = scripted(vec![
        vec![Step::Send(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
        )],
        vec![
            chunked_head("content-type: application/x-ndjson\r\n"),
            chunk(b"{}\n"),
            end(),
        ],
    ])
    .await;
    let client = archive(&url);
    assert!(client.maybe().await.expect("answered").is_none());
    let response = client.with_headers().await.expect("answered");
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/x-ndjson"[..])
    );
    let chunks: Vec<_> = response.into_body().collect().await;
    assert_eq!(chunks[0].as_ref().ok(), Some(&Bytes::from("{}\n")));
}

/// The resident set of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_while_streaming_one_gib() {
    const TOTAL: u64 = 1 << 30;
    const BLOCK: usize = 256 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        read_head(&mut socket).await;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {TOTAL}\r\n\r\n");
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let block = vec![0xA5u8; BLOCK];
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(BLOCK as u64) as usize;
            if socket.write_all(&block[..n]).await.is_err() {
                return;
            }
            left -= n as u64;
        }
    });

    let client = archive(&url);
    let before = rss_kib();
    let mut body = client.big().await.expect("headers").max_bytes(TOTAL);
    let mut read = 0u64;
    let mut peak = before;
    let mut next_sample = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("a chunk");
        assert!(
            chunk.first().is_none_or(|&b| b == 0xA5) && chunk.last().is_none_or(|&b| b == 0xA5)
        );
        read += chunk.len() as u64;
        if read >= next_sample {
            peak = peak.max(rss_kib());
            next_sample += 32 << 20;
        }
    }
    assert_eq!(read, TOTAL);
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!(
        "streamed 1 GiB: resident set {before} KiB before, peak {peak} KiB (+{growth_mib} MiB)"
    );
    assert!(
        growth_mib < 64,
        "the resident set grew by {growth_mib} MiB while streaming 1 GiB"
    );
}

// ===== streamed request bodies =====

#[client(name = "store")]
#[retry(max_attempts = 3, backoff = "1ms..2ms")]
trait Store {
    /// A streamed body: never retried, whatever the trait says.
    #[put("/objects/{key}")]
    async fn put(&self, key: &str, #[body] data: BodyStream) -> Result<(), Error>;

    /// With a content type of the caller's.
    #[put("/objects/{key}")]
    async fn put_typed(
        &self,
        key: &str,
        #[header("Content-Type")] content_type: &str,
        #[body] data: BodyStream,
    ) -> Result<(), Error>;
}

fn store(url: &str) -> StoreClient {
    support::builder::<StoreClient>()
        .base_url(url)
        .build()
        .expect("valid")
}

fn chunks(parts: &[&'static str]) -> BodyStream {
    let items: Vec<Result<Bytes, std::io::Error>> = parts
        .iter()
        .map(|p| Ok(Bytes::from_static(p.as_bytes())))
        .collect();
    BodyStream::from_stream(futures::stream::iter(items))
}

#[tokio::test]
async fn a_streamed_body_is_sent_chunked_or_with_its_declared_length() {
    use wiremock::matchers::{body_bytes, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/objects/a"))
        .and(body_bytes("one two three"))
        .respond_with(ResponseTemplate::new(200))
        .expect(3)
        .mount(&server)
        .await;
    let client = store(&server.uri());
    client
        .put("a", chunks(&["one ", "two ", "three"]))
        .await
        .expect("stored");
    client
        .put("a", chunks(&["one ", "two ", "three"]).with_length(13))
        .await
        .expect("stored");
    client
        .put_typed("a", "text/plain", chunks(&["one two three"]))
        .await
        .expect("stored");
    let requests = server.received_requests().await.expect("recorded");
    let header_of = |i: usize, name: &str| {
        requests[i]
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        header_of(0, "transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert_eq!(
        header_of(0, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(header_of(1, "content-length").as_deref(), Some("13"));
    assert_eq!(header_of(1, "transfer-encoding"), None);
    assert_eq!(header_of(2, "content-type").as_deref(), Some("text/plain"));
}

#[tokio::test]
async fn a_streamed_body_is_never_retried() {
    use wiremock::ResponseTemplate;
    let server = support::answering(ResponseTemplate::new(503)).await;
    let err = store(&server.uri())
        .put("a", chunks(&["x"]))
        .await
        .expect_err("503");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(err.attempts(), 1);
    assert_eq!(support::received(&server).await, 1);
}

#[tokio::test]
async fn a_redirect_that_would_resend_the_stream_is_not_followed() {
    use wiremock::ResponseTemplate;
    let server = support::answering(
        ResponseTemplate::new(307).insert_header("location", "/objects/elsewhere"),
    )
    .await;
    let err = store(&server.uri())
        .put("a", chunks(&["x"]))
        .await
        .expect_err("not followed");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(307));
    assert!(err.to_string().contains("streamed body"), "{err}");
    assert_eq!(support::received(&server).await, 1);
}

#[tokio::test]
async fn a_stream_that_fails_fails_the_request() {
    use wiremock::ResponseTemplate;
    let server = support::answering(ResponseTemplate::new(200)).await;
    let items: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"start")),
        Err(std::io::Error::other("the disk went away")),
    ];
    let err = store(&server.uri())
        .put("a", BodyStream::from_stream(futures::stream::iter(items)))
        .await
        .expect_err("the body broke");
    assert_eq!(err.attempts(), 1, "{err}");
    // The caller's stream failed, not the service: not a transport error
    // the breaker would count.
    assert!(err.is_invalid_request(), "{err}");
    assert!(
        err.to_string()
            .contains("the streamed request body failed: the disk went away"),
        "{err}"
    );
}

#[tokio::test]
async fn a_download_is_proxied_to_an_upload_without_buffering() {
    use wiremock::matchers::body_bytes;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let (source, go) = scripted(vec![vec![
        chunked_head(""),
        chunk(b"first "),
        Step::Wait,
        chunk(b"second"),
        end(),
    ]])
    .await;
    let sink = MockServer::start().await;
    Mock::given(body_bytes("first second"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&sink)
        .await;
    let download = archive(&source).export().await.expect("headers");
    // The upload runs while the source still holds back its second chunk.
    let upload = tokio::spawn({
        let sink = store(&sink.uri());
        async move { sink.put("copy", download).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!upload.is_finished(), "the upload waits for the source");
    go.send(()).expect("source waits");
    upload.await.expect("joined").expect("stored");
}
