//! Compressed responses (features `gzip`, `deflate`, `brotli`, `zstd`):
//! bodies produced by the real encoders, served by wiremock with their
//! `Content-Encoding`, decoded by the client; the size limit on the decoded
//! body, so a small bomb fails fast; and the switch to turn it off.
#![cfg(all(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]

use std::io::Write as _;

use courier::{Error, client};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[client(name = "archive")]
#[retry(disabled)]
trait Archive {
    #[get("/doc")]
    async fn doc(&self) -> Result<String, Error>;

    #[get("/doc")]
    async fn doc_stream(&self) -> Result<courier::BodyStream, Error>;
}

fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = e.write_all(plain);
    e.finish().unwrap_or_default()
}

/// HTTP's `deflate` is the zlib format (RFC 9110 § 8.4.1.2).
fn deflate(plain: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(plain);
    e.finish().unwrap_or_default()
}

fn brotli(plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        let _ = e.write_all(plain);
    }
    out
}

fn zstd(plain: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(plain, 3).unwrap_or_default()
}

async fn serving(encoding: &str, body: Vec<u8>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-encoding", encoding)
                .set_body_bytes(body),
        )
        .mount(&server)
        .await;
    server
}

/// On the transport under test, decompression on (`support::builder`
/// turns it off for every other test).
fn archive(server: &MockServer) -> courier::ClientBuilder<ArchiveClient> {
    support::builder::<ArchiveClient>()
        .base_url(server.uri())
        .decompression(true)
}

type Encoder = fn(&[u8]) -> Vec<u8>;

#[tokio::test]
async fn each_encoding_is_asked_for_and_decoded() {
    let plain = "the archive's document ".repeat(50);
    let encoders: [(&str, Encoder); 4] = [
        ("gzip", gzip),
        ("deflate", deflate),
        ("br", brotli),
        ("zstd", zstd),
    ];
    for (encoding, encode) in encoders {
        let body = encode(plain.as_bytes());
        assert!(body.len() < plain.len() / 4, "{encoding} compressed");
        let server = serving(encoding, body).await;
        let client = archive(&server).build().expect("valid");
        let answer = client.doc().await;
        assert_eq!(answer.ok().as_deref(), Some(plain.as_str()), "{encoding}");
        let requests = server.received_requests().await.unwrap_or_default();
        let accepted = requests
            .first()
            .and_then(|r| r.headers.get("accept-encoding"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        for asked in ["gzip", "deflate", "br", "zstd"] {
            assert!(accepted.contains(asked), "{asked} in {accepted:?}");
        }
    }
}

/// 16 MiB of zeros is about 16 KiB of gzip: against a 64 KiB limit the call fails
/// as a body too large once 64 KiB are decoded, never holding the rest.
#[tokio::test]
async fn the_limit_applies_to_the_decoded_size() {
    let bomb = gzip(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let server = serving("gzip", bomb).await;
    let client = archive(&server)
        .max_response_bytes(64 << 10)
        .build()
        .expect("valid");
    let e = client.doc().await.expect_err("over the limit once decoded");
    assert!(e.is_body(), "{e}");
}

/// Turned off: nothing is asked for, and a compressed body is not decoded.
#[tokio::test]
async fn decompression_can_be_turned_off() {
    let server = serving("gzip", gzip(b"plain text")).await;
    let client = archive(&server)
        .decompression(false)
        .build()
        .expect("valid");
    let e = client.doc().await.expect_err("gzip bytes are not text");
    assert!(e.is_decode(), "{e}");
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(
        requests
            .first()
            .is_some_and(|r| r.headers.get("accept-encoding").is_none())
    );
}

/// A streamed body is decoded as it arrives, and the limit is on the
/// decoded bytes: a bomb is cut, whatever its compressed size.
#[tokio::test]
async fn a_streamed_body_is_decoded_and_its_limit_is_on_decoded_bytes() {
    use futures::StreamExt;
    let plain = "streamed and compressed ".repeat(4000);
    let server = serving("gzip", gzip(plain.as_bytes())).await;
    let client = archive(&server).build().expect("valid");
    let mut got = Vec::new();
    let mut body = client.doc_stream().await.expect("headers");
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.expect("a chunk"));
    }
    assert_eq!(got, plain.as_bytes());

    let bomb = vec![0u8; 16 << 20];
    let server = serving("gzip", gzip(&bomb)).await;
    let client = archive(&server).build().expect("valid");
    let mut body = client
        .doc_stream()
        .await
        .expect("headers")
        .max_bytes(64 << 10);
    let mut read = 0;
    let mut error = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => read += chunk.len(),
            Err(e) => error = Some(e),
        }
    }
    assert!(read <= 64 << 10, "{read} decoded bytes past a 64 KiB limit");
    assert!(error.is_some_and(|e| e.is_too_large()));
}
