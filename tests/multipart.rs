//! `#[multipart]` parameters, parsed by a real server: an axum handler
//! reads every part with axum's `Multipart` extractor (multer) and answers
//! with what it found, so the assertions are about what a server sees.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use courier::multipart::{Part, StreamPart};
use courier::{BodyStream, Error, client};
use serde::{Deserialize, Serialize};

mod support;

/// One part as the server parsed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Server {
    requests: AtomicUsize,
    /// Answer 503 to this many requests first.
    fail_first: usize,
}

async fn parse(State(state): State<Arc<Server>>, mut form: Multipart) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    let mut seen = Vec::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(str::to_owned);
                let Ok(body) = field.bytes().await else {
                    return (StatusCode::BAD_REQUEST, "a part broke off").into_response();
                };
                seen.push(Seen {
                    name,
                    file_name,
                    content_type,
                    body: body.to_vec(),
                });
            }
            Ok(None) => break,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }
    if n < state.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(seen).into_response()
}

async fn serve(fail_first: usize) -> (String, Arc<Server>) {
    let state = Arc::new(Server {
        requests: AtomicUsize::new(0),
        fail_first,
    });
    let app = Router::new()
        .route("/documents", post(parse).put(parse))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

#[client(name = "documents")]
#[retry(disabled)]
trait Documents {
    #[post("/documents")]
    async fn upload(
        &self,
        #[multipart] title: &str,
        #[multipart] pages: u32,
        #[multipart("file")] files: Vec<Part>,
        #[multipart] cover: Option<Part>,
        #[multipart("tag")] tags: &[&str],
    ) -> Result<Vec<Seen>, Error>;

    /// Retried: every attempt sends the same parts.
    #[put("/documents")]
    #[idempotent]
    #[retry(max_attempts = 3, backoff = "1ms..2ms")]
    async fn replace(&self, #[multipart] file: Part) -> Result<Vec<Seen>, Error>;
}

/// A streamed part: read as it is sent, once.
#[client(name = "bulk")]
#[retry(max_attempts = 3, backoff = "1ms..2ms")]
trait Bulk {
    #[post("/documents")]
    async fn upload(
        &self,
        #[multipart] title: &str,
        #[multipart("file")] file: StreamPart,
    ) -> Result<Vec<Seen>, Error>;
}

fn documents(url: &str) -> DocumentsClient {
    support::builder::<DocumentsClient>()
        .base_url(url)
        .build()
        .expect("valid")
}

fn text(name: &str, value: &str) -> Seen {
    Seen {
        name: name.into(),
        file_name: None,
        content_type: None,
        body: value.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn text_fields_files_and_repeated_names_reach_the_server_in_order() {
    let (url, _) = serve(0).await;
    let dir = std::env::temp_dir().join(format!("courier-multipart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let notes_path = dir.join("notes.txt");
    std::fs::write(&notes_path, "first line\r\nsecond line\n").expect("write");

    // Bytes that look like a delimiter and hold CRLFs and every byte value.
    let mut tricky = b"--courier-\r\n--\r\n\r\n".to_vec();
    tricky.extend(0..=255u8);
    let scan = Part::bytes(tricky.clone())
        .file_name("scan \"final\".pdf")
        .content_type("application/pdf");
    let notes = Part::file(&notes_path).await.expect("readable");

    let seen = documents(&url)
        .upload("Q3 — report", 12, vec![scan, notes], None, &["a", "b"])
        .await
        .expect("parsed");
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(
        seen,
        vec![
            text("title", "Q3 — report"),
            text("pages", "12"),
            Seen {
                name: "file".into(),
                // The quote travels as %22, which the server keeps as is.
                file_name: Some("scan %22final%22.pdf".into()),
                content_type: Some("application/pdf".into()),
                body: tricky,
            },
            Seen {
                name: "file".into(),
                file_name: Some("notes.txt".into()),
                content_type: Some("text/plain".into()),
                body: b"first line\r\nsecond line\n".to_vec(),
            },
            text("tag", "a"),
            text("tag", "b"),
        ]
    );
}

#[tokio::test]
async fn an_optional_part_is_sent_when_present_and_an_empty_list_sends_nothing() {
    let (url, _) = serve(0).await;
    let cover = Part::bytes(vec![0x89, b'P', b'N', b'G']).file_name("cover.png");
    let seen = documents(&url)
        .upload("t", 1, vec![], Some(cover), &[])
        .await
        .expect("parsed");
    let names: Vec<&str> = seen.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["title", "pages", "cover"]);
    assert_eq!(seen[2].file_name.as_deref(), Some("cover.png"));
    assert_eq!(seen[2].body, vec![0x89, b'P', b'N', b'G']);
}

#[tokio::test]
async fn every_attempt_of_a_retried_call_sends_the_same_parts() {
    let (url, state) = serve(2).await;
    let file = Part::bytes(vec![7u8; 100_000]).file_name("big.bin");
    let seen = documents(&url).replace(file).await.expect("third attempt");
    assert_eq!(state.requests.load(Ordering::SeqCst), 3);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, vec![7u8; 100_000]);
    assert_eq!(seen[0].file_name.as_deref(), Some("big.bin"));
}

#[tokio::test]
async fn a_part_that_cannot_be_written_fails_before_sending() {
    let (url, state) = serve(0).await;
    let bad = Part::bytes("x").file_name("a\0b");
    let err = documents(&url)
        .upload("t", 1, vec![bad], None, &[])
        .await
        .expect_err("refused");
    assert!(err.is_invalid_request(), "{err}");
    assert!(err.to_string().contains("multipart part `file`"), "{err}");

    let bad = Part::bytes("x").content_type("text/plain\r\nX-Evil: 1");
    let err = documents(&url).replace(bad).await.expect_err("refused");
    assert!(err.to_string().contains("content type"), "{err}");
    assert_eq!(state.requests.load(Ordering::SeqCst), 0);

    let missing = Part::file("/nonexistent/courier/scan.pdf").await;
    let err = missing.expect_err("no such file");
    assert!(err.is_invalid_request(), "{err}");
    assert!(
        err.to_string().contains("`/nonexistent/courier/scan.pdf`"),
        "{err}"
    );
}

fn streamed(chunks: &[&'static [u8]]) -> StreamPart {
    let items: Vec<Result<bytes::Bytes, std::io::Error>> = chunks
        .iter()
        .map(|c| Ok(bytes::Bytes::from_static(c)))
        .collect();
    StreamPart::new(BodyStream::from_stream(futures::stream::iter(items)))
        .file_name("dump.bin")
        .content_type("application/octet-stream")
}

#[tokio::test]
async fn a_streamed_part_is_sent_as_it_is_read_and_parsed_whole() {
    let (url, state) = serve(0).await;
    let client = support::builder::<BulkClient>()
        .base_url(&url)
        .build()
        .expect("valid");
    let seen = client
        .upload("dump", streamed(&[b"first\r\n--", b"second"]))
        .await
        .expect("parsed");
    assert_eq!(
        seen,
        vec![
            text("title", "dump"),
            Seen {
                name: "file".into(),
                file_name: Some("dump.bin".into()),
                content_type: Some("application/octet-stream".into()),
                body: b"first\r\n--second".to_vec(),
            },
        ]
    );
    assert_eq!(state.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_with_a_streamed_part_is_not_retried() {
    let (url, state) = serve(1).await;
    let client = support::builder::<BulkClient>()
        .base_url(&url)
        .build()
        .expect("valid");
    let err = client
        .upload("dump", streamed(&[b"x"]))
        .await
        .expect_err("503, not retried");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(err.attempts(), 1);
    assert_eq!(state.requests.load(Ordering::SeqCst), 1);
}
