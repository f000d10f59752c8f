//! Codecs (`#[codec(…)]` on a trait or a method): what goes on the wire
//! (`Content-Type`, `Accept`, the bytes, decoded on the server side with the
//! format's own library), what comes back, and the errors when a value has
//! no form in the format. Against wiremock.
#![cfg(feature = "msgpack")]

use bytes::Bytes;
use courier::codec::{Binary, Codec, Decoder, Encoder, Json, MessagePack, Text};
use courier::{BoxError, Error, client};
use serde::{Deserialize, Serialize};
use wiremock::matchers::{body_bytes, header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

mod support;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
    note: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Receipt {
    order: u64,
    total_cents: i64,
}

/// Comma-separated numbers: a codec of the user's own.
struct Csv;

impl Codec for Csv {
    const CONTENT_TYPE: &'static str = "text/csv";
}

impl Encoder<[u32]> for Csv {
    fn encode(value: &[u32]) -> Result<Bytes, BoxError> {
        let line: Vec<String> = value.iter().map(u32::to_string).collect();
        Ok(Bytes::from(line.join(",")))
    }
}

impl Decoder<Vec<u32>> for Csv {
    fn decode(body: &Bytes) -> Result<Vec<u32>, BoxError> {
        let text = std::str::from_utf8(body)?;
        Ok(text.split(',').map(str::parse).collect::<Result<_, _>>()?)
    }
}

#[client(name = "orders")]
#[codec(MessagePack)]
#[retry(disabled)]
trait Orders {
    /// The trait's codec: MessagePack both ways.
    #[post("/orders")]
    async fn place(&self, #[body] order: &Order) -> Result<Receipt, Error>;

    /// Inside `Option` and `Response` too.
    #[get("/orders/{id}")]
    async fn find(&self, id: u64) -> Result<Option<Order>, Error>;

    /// The method's codec wins over the trait's.
    #[put("/orders/{id}")]
    #[codec(Json)]
    async fn replace(&self, id: u64, #[body] order: &Order) -> Result<Receipt, Error>;

    /// Plain text: `Display` out, `FromStr` back.
    #[post("/orders/{id}/count")]
    #[codec(Text)]
    async fn add(&self, id: u64, #[body] by: u32) -> Result<u64, Error>;

    /// Raw bytes.
    #[put("/orders/{id}/scan")]
    #[codec(Binary)]
    async fn scan(&self, id: u64, #[body] image: &[u8]) -> Result<Vec<u8>, Error>;

    /// The user's own codec.
    #[post("/sums")]
    #[codec(Csv)]
    async fn running_sums(&self, #[body] values: &[u32]) -> Result<Vec<u32>, Error>;

    /// `String` is the body as it is, whatever the codec: no codec `Accept`.
    #[get("/orders/{id}/raw")]
    async fn raw(&self, id: u64) -> Result<String, Error>;

    /// A form cannot hold a nested list of structs.
    #[post("/orders/form")]
    #[codec(courier::codec::Form)]
    async fn as_form(&self, #[body] order: &Nested) -> Result<(), Error>;
}

#[derive(Serialize)]
struct Nested {
    lines: Vec<Order>,
}

fn orders(server: &MockServer) -> OrdersClient {
    support::builder::<OrdersClient>()
        .base_url(server.uri())
        .build()
        .expect("valid")
}

fn order() -> Order {
    Order {
        id: 7,
        items: vec!["tea".into(), "crème brûlée".into()],
        note: None,
    }
}

/// Answers a MessagePack order with a MessagePack receipt computed from it,
/// so a wrong encoding cannot pass.
struct PriceOrder;

impl Respond for PriceOrder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let Ok(order) = rmp_serde::from_slice::<Order>(&request.body) else {
            return ResponseTemplate::new(400).set_body_string("not a MessagePack order");
        };
        #[derive(Serialize)]
        struct Out {
            order: u64,
            total_cents: i64,
        }
        let out = Out {
            order: order.id,
            total_cents: 250 * order.items.len() as i64,
        };
        let body = rmp_serde::to_vec_named(&out).expect("encodes");
        ResponseTemplate::new(200).set_body_raw(body, "application/msgpack")
    }
}

#[tokio::test]
async fn message_pack_round_trip_with_its_content_type_and_accept() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .and(header("content-type", "application/msgpack"))
        .and(header("accept", "application/msgpack"))
        .respond_with(PriceOrder)
        .expect(1)
        .mount(&server)
        .await;
    let receipt = orders(&server).place(&order()).await.expect("answered");
    assert_eq!(
        receipt,
        Receipt {
            order: 7,
            total_cents: 500
        }
    );
}

#[tokio::test]
async fn the_codec_reaches_inside_option_and_a_404_is_still_none() {
    let server = MockServer::start().await;
    let body = rmp_serde::to_vec_named(&order()).expect("encodes");
    Mock::given(path("/orders/7"))
        .and(header("accept", "application/msgpack"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/msgpack"))
        .mount(&server)
        .await;
    Mock::given(path("/orders/8"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let client = orders(&server);
    assert_eq!(client.find(7).await.expect("found"), Some(order()));
    assert_eq!(client.find(8).await.expect("answered"), None);
}

#[tokio::test]
async fn a_method_codec_wins_over_the_trait_codec() {
    let server = MockServer::start().await;
    Mock::given(path("/orders/7"))
        .and(header("content-type", "application/json"))
        .and(header("accept", "application/json"))
        .and(body_bytes(serde_json::to_vec(&order()).expect("json")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"order": 7, "total_cents": 1})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let receipt = orders(&server)
        .replace(7, &order())
        .await
        .expect("answered");
    assert_eq!(receipt.total_cents, 1);
}

#[tokio::test]
async fn text_writes_display_and_parses_the_answer() {
    let server = MockServer::start().await;
    Mock::given(path("/orders/7/count"))
        .and(header("content-type", "text/plain; charset=utf-8"))
        .and(header("accept", "text/plain; charset=utf-8"))
        .and(body_bytes("41"))
        .respond_with(ResponseTemplate::new(200).set_body_string("42"))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(orders(&server).add(7, 41).await.expect("answered"), 42);
}

#[tokio::test]
async fn a_decode_error_names_the_type_and_the_codec_and_keeps_the_snippet() {
    let server = support::answering(ResponseTemplate::new(200).set_body_string("forty-two")).await;
    let err = orders(&server).add(7, 41).await.expect_err("not a number");
    assert!(err.is_decode(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("expected text for `u64`"), "{shown}");
    assert!(shown.contains("invalid digit"), "{shown}");
    assert_eq!(err.body_snippet(), Some("forty-two"));

    // MessagePack: JSON is not MessagePack.
    let server = support::answering(
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"order": 1})),
    )
    .await;
    let err = orders(&server)
        .place(&order())
        .await
        .expect_err("not msgpack");
    assert!(err.is_decode(), "{err}");
    assert!(
        err.to_string()
            .contains("expected MessagePack for `codecs::Receipt`"),
        "{err}"
    );
}

#[tokio::test]
async fn binary_sends_the_bytes_as_they_are() {
    let image: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let server = MockServer::start().await;
    Mock::given(path("/orders/7/scan"))
        .and(header("content-type", "application/octet-stream"))
        .and(header("accept", "application/octet-stream"))
        .and(body_bytes(image.clone()))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![0, 159, 146, 150]))
        .expect(1)
        .mount(&server)
        .await;
    let back = orders(&server).scan(7, &image).await.expect("answered");
    assert_eq!(back, vec![0, 159, 146, 150]);
}

#[tokio::test]
async fn a_users_own_codec_plugs_in_the_same_way() {
    let server = MockServer::start().await;
    Mock::given(path("/sums"))
        .and(header("content-type", "text/csv"))
        .and(header("accept", "text/csv"))
        .and(body_bytes("1,2,3"))
        .respond_with(ResponseTemplate::new(200).set_body_string("1,3,6"))
        .expect(1)
        .mount(&server)
        .await;
    let sums = orders(&server)
        .running_sums(&[1, 2, 3])
        .await
        .expect("answered");
    assert_eq!(sums, vec![1, 3, 6]);

    let server = support::answering(ResponseTemplate::new(200).set_body_string("1,x")).await;
    let err = orders(&server)
        .running_sums(&[1])
        .await
        .expect_err("bad csv");
    assert!(err.is_decode(), "{err}");
    assert!(
        err.to_string()
            .contains("expected text/csv for `alloc::vec::Vec<u32>`"),
        "{err}"
    );
}

#[tokio::test]
async fn raw_return_values_ignore_the_codec() {
    let server = MockServer::start().await;
    Mock::given(path("/orders/7/raw"))
        .respond_with(ResponseTemplate::new(200).set_body_string("as it is"))
        .mount(&server)
        .await;
    assert_eq!(orders(&server).raw(7).await.expect("answered"), "as it is");
    let requests = server.received_requests().await.expect("recorded");
    let accept = requests[0].headers.get("accept");
    // (reqwest sends `*/*` of its own; the hyper transport nothing.)
    assert!(
        accept.is_none_or(|v| v == "*/*"),
        "the codec's media type was asked for: {accept:?}"
    );
}

#[tokio::test]
async fn a_value_the_codec_cannot_write_fails_before_sending() {
    let server = support::answering(ResponseTemplate::new(200)).await;
    let nested = Nested {
        lines: vec![order()],
    };
    let err = orders(&server).as_form(&nested).await.expect_err("no form");
    assert!(err.is_invalid_request(), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains(
            "the body (codecs::Nested) could not be encoded as application/x-www-form-urlencoded"
        ),
        "{shown}"
    );
    assert_eq!(support::received(&server).await, 0);
}
