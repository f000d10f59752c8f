//! Multipart edge cases found by review, parsed by axum's `Multipart`
//! extractor (multer) as in `tests/multipart.rs`: a file name ending in a
//! backslash, an empty list of parts.

use std::net::Ipv4Addr;

use axum::Router;
use axum::extract::Multipart;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use courier::multipart::Part;
use courier::{Error, client};
use serde::{Deserialize, Serialize};

mod support;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    name: Option<String>,
    file_name: Option<String>,
    body: Vec<u8>,
}

async fn parse(mut form: Multipart) -> Response {
    let mut seen = Vec::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().map(str::to_owned);
                let file_name = field.file_name().map(str::to_owned);
                let Ok(body) = field.bytes().await else {
                    return (StatusCode::BAD_REQUEST, "a part broke off").into_response();
                };
                seen.push(Seen {
                    name,
                    file_name,
                    body: body.to_vec(),
                });
            }
            Ok(None) => break,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }
    axum::Json(seen).into_response()
}

async fn serve() -> String {
    let app = Router::new().route("/documents", post(parse));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[client(name = "review-documents")]
#[timeout("10s")]
trait Documents {
    #[post("/documents")]
    async fn upload(&self, #[multipart("file")] files: Vec<Part>) -> Result<Vec<Seen>, Error>;
}

fn documents(url: &str) -> DocumentsClient {
    support::builder::<DocumentsClient>()
        .base_url(url)
        .build()
        .expect("valid")
}

/// A backslash was written as it is. Inside a quoted-string it escapes
/// the next character (RFC 7230 quoted-pair; multer honours it): a file
/// name ending in `\` swallowed its closing quote, and the server lost the
/// file name. It is now written `%5C`, as `"` is `%22` (the HTML standard's
/// form encoding, which servers pass through as they are): the name
/// arrives whole, in that form.
#[tokio::test]
async fn a_file_name_ending_in_a_backslash_arrives_whole() {
    let url = serve().await;
    let part = Part::bytes("x").file_name("C:\\exports\\");
    let seen = documents(&url).upload(vec![part]).await.expect("parsed");
    assert_eq!(
        seen.first().and_then(|s| s.file_name.clone()).as_deref(),
        Some("C:%5Cexports%5C"),
        "the server saw {seen:?}"
    );
}

/// A backslash in one file name leaves the next part alone.
#[tokio::test]
async fn a_backslash_in_one_file_name_does_not_corrupt_the_next_part() {
    let url = serve().await;
    let first = Part::bytes("one").file_name("a\\");
    let second = Part::bytes("two").file_name("b.txt");
    let seen = documents(&url)
        .upload(vec![first, second])
        .await
        .expect("parsed");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].file_name.as_deref(), Some("b.txt"));
    assert_eq!(seen[1].body, b"two");
}

/// No part at all (an empty sequence): the body is only the closing
/// delimiter. Pinned: the server reads it as an empty form.
#[tokio::test]
async fn an_empty_sequence_is_an_empty_form() {
    let url = serve().await;
    let seen = documents(&url).upload(Vec::new()).await;
    assert!(matches!(seen.as_deref(), Ok([])), "{seen:?}");
}
