//! Codec edge cases found by review: a decode error's message stays
//! bounded whatever the body, and the caller's `Content-Type` replaces the
//! codec's. (A codec whose media type is not a header value is a compile
//! error: `tests/ui/codec_bad_media_type.rs`.)

use courier::{Error, client};
use wiremock::ResponseTemplate;

mod support;

#[client(name = "codec-edges")]
#[timeout("10s")]
trait Numbers {
    #[get("/n")]
    async fn json(&self) -> Result<u64, Error>;

    /// A JSON body sent under a vendor media type of the caller's.
    #[post("/n")]
    async fn send_typed(
        &self,
        #[header("Content-Type")] content_type: &str,
        #[body] n: &u64,
    ) -> Result<(), Error>;
}

fn numbers(url: &str) -> NumbersClient {
    support::builder::<NumbersClient>()
        .base_url(url)
        .build()
        .expect("valid")
}

/// A decode error keeps "the first bytes of the body" as its snippet,
/// bounded. Its message also embeds the decoder's own error, and serde's
/// `invalid type: string "…"` quotes the whole offending string: a
/// 100 KB string (or a token the caller asked for as another type) lands
/// in `Display`, i.e. in every log line that prints the error.
#[tokio::test]
async fn a_decode_error_message_is_bounded_like_the_snippet() {
    let secret = "s".repeat(100_000);
    let server =
        support::answering(ResponseTemplate::new(200).set_body_string(format!("\"{secret}\"")))
            .await;
    let err = numbers(&server.uri()).json().await.expect_err("not a u64");
    assert!(err.is_decode(), "{err}");
    let shown = err.to_string();
    assert!(
        shown.len() < 2048,
        "the error's Display is {} bytes long (the body was 100 KB)",
        shown.len()
    );
}

/// The codec's `Content-Type` was pushed whatever the call's own
/// `#[header("Content-Type")]` said: the request carried two, in parameter
/// order, and what a server makes of that varies. Now the caller's wins.
#[tokio::test]
async fn a_callers_content_type_replaces_the_codecs() {
    let server = support::healthy("").await;
    numbers(&server.uri())
        .send_typed("application/vnd.acme+json", &7)
        .await
        .expect("sent");
    let requests = server.received_requests().await.unwrap_or_default();
    let types: Vec<String> = requests[0]
        .headers
        .get_all("content-type")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(types, vec!["application/vnd.acme+json".to_owned()]);
}
