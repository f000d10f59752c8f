//! What comes back: each return type, status errors, decode errors and the
//! response size limit, against scripted wiremock answers.

use bytes::Bytes;
use courier::{Error, ErrorKind, Response, client};
use http::StatusCode;
use serde::Deserialize;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[derive(Debug, PartialEq, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// A domain error that maps statuses, as users write them.
#[derive(Debug)]
enum UserError {
    NotFound,
    Other(Error),
}

impl From<Error> for UserError {
    fn from(e: Error) -> Self {
        if e.status() == Some(StatusCode::NOT_FOUND) {
            UserError::NotFound
        } else {
            UserError::Other(e)
        }
    }
}

#[client(name = "user-service")]
trait Users {
    #[get("/users/{id}")]
    async fn get(&self, id: u64) -> Result<User, Error>;

    #[get("/users/{id}")]
    async fn lookup(&self, id: u64) -> Result<Option<User>, Error>;

    #[get("/users/{id}")]
    async fn domain(&self, id: u64) -> Result<User, UserError>;

    #[get("/users/{id}")]
    async fn full(&self, id: u64) -> Result<Response<User>, Error>;

    #[get("/users/{id}")]
    async fn maybe_full(&self, id: u64) -> Result<Response<Option<User>>, Error>;

    #[head("/users/{id}")]
    async fn exists(&self, id: u64) -> Result<Response<()>, Error>;

    #[get("/text")]
    async fn text(&self) -> Result<String, Error>;

    #[get("/blob")]
    async fn blob(&self) -> Result<Bytes, Error>;

    #[delete("/users/{id}")]
    async fn delete(&self, id: u64) -> Result<(), Error>;

    #[get("/list")]
    async fn list(&self, #[query] token: &str) -> Result<Vec<User>, Error>;
}

fn json_user(id: u64) -> serde_json::Value {
    serde_json::json!({ "id": id, "name": format!("user-{id}") })
}

async fn client_for(server: &MockServer) -> UsersClient {
    support::builder::<UsersClient>()
        .base_url(server.uri())
        .build()
        .expect("valid settings")
}

async fn answer(server: &MockServer, route: &str, template: ResponseTemplate) {
    Mock::given(path(route))
        .respond_with(template)
        .mount(server)
        .await;
}

#[tokio::test]
async fn json_is_decoded_into_the_return_type() {
    let server = MockServer::start().await;
    answer(
        &server,
        "/users/7",
        ResponseTemplate::new(200).set_body_json(json_user(7)),
    )
    .await;
    let c = client_for(&server).await;
    assert_eq!(
        c.get(7).await.ok(),
        Some(User {
            id: 7,
            name: "user-7".into()
        })
    );
}

#[tokio::test]
async fn option_reads_404_as_none_and_other_errors_as_errors() {
    let server = MockServer::start().await;
    answer(
        &server,
        "/users/1",
        ResponseTemplate::new(200).set_body_json(json_user(1)),
    )
    .await;
    answer(
        &server,
        "/users/2",
        ResponseTemplate::new(404).set_body_string("no such user"),
    )
    .await;
    answer(&server, "/users/3", ResponseTemplate::new(500)).await;
    let c = client_for(&server).await;
    assert_eq!(c.lookup(1).await.ok().flatten().map(|u| u.id), Some(1));
    assert!(matches!(c.lookup(2).await, Ok(None)));
    let err = c.lookup(3).await.err().map(|e| e.status());
    assert_eq!(err, Some(Some(StatusCode::INTERNAL_SERVER_ERROR)));
    // Without `Option`, a 404 is a status error like any other.
    let err = c.get(2).await.err();
    assert_eq!(
        err.as_ref().and_then(Error::status),
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        err.as_ref().and_then(Error::body_snippet),
        Some("no such user")
    );
}

#[tokio::test]
async fn a_domain_error_type_receives_the_courier_error() {
    let server = MockServer::start().await;
    answer(&server, "/users/2", ResponseTemplate::new(404)).await;
    answer(&server, "/users/3", ResponseTemplate::new(503)).await;
    let c = client_for(&server).await;
    assert!(matches!(c.domain(2).await, Err(UserError::NotFound)));
    match c.domain(3).await {
        Err(UserError::Other(e)) => assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE)),
        other => panic!("expected Other(503), got {other:?}"),
    }
}

#[tokio::test]
async fn response_wrapper_gives_status_headers_and_body() {
    let server = MockServer::start().await;
    answer(
        &server,
        "/users/7",
        ResponseTemplate::new(203)
            .insert_header("etag", "\"v3\"")
            .set_body_json(json_user(7)),
    )
    .await;
    answer(&server, "/users/8", ResponseTemplate::new(404)).await;
    let c = client_for(&server).await;

    let resp = c.full(7).await.expect("203 is a success");
    assert_eq!(resp.status(), StatusCode::NON_AUTHORITATIVE_INFORMATION);
    assert_eq!(
        resp.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some("\"v3\"")
    );
    assert_eq!(resp.body().id, 7);
    assert_eq!(resp.into_body().name, "user-7");

    let missing = c.maybe_full(8).await.expect("404 is a value here");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.body().is_none());
}

#[tokio::test]
async fn head_returns_status_and_headers_without_body() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/users/7"))
        .respond_with(ResponseTemplate::new(200).insert_header("x-version", "12"))
        .mount(&server)
        .await;
    let resp = client_for(&server).await.exists(7).await.expect("exists");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("x-version")
            .and_then(|v| v.to_str().ok()),
        Some("12")
    );
}

#[tokio::test]
async fn text_bytes_and_unit_returns() {
    let server = MockServer::start().await;
    answer(
        &server,
        "/text",
        ResponseTemplate::new(200).set_body_string("héllo"),
    )
    .await;
    let binary = vec![0u8, 159, 146, 150, 255];
    answer(
        &server,
        "/blob",
        ResponseTemplate::new(200).set_body_bytes(binary.clone()),
    )
    .await;
    answer(&server, "/users/4", ResponseTemplate::new(204)).await;
    let c = client_for(&server).await;
    assert_eq!(c.text().await.ok().as_deref(), Some("héllo"));
    assert_eq!(c.blob().await.ok().as_deref(), Some(&binary[..]));
    assert!(c.delete(4).await.is_ok());
}

#[tokio::test]
async fn text_that_is_not_utf8_is_a_decode_error() {
    let server = MockServer::start().await;
    answer(
        &server,
        "/text",
        ResponseTemplate::new(200).set_body_bytes(vec![0xff, 0xfe]),
    )
    .await;
    let err = client_for(&server).await.text().await.err();
    assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Decode));
}

#[tokio::test]
async fn status_errors_name_the_call_but_not_the_query() {
    let server = MockServer::start().await;
    answer(
        &server,
        "/list",
        ResponseTemplate::new(503).set_body_string("{\"error\":\"overloaded\"}"),
    )
    .await;
    let err = client_for(&server)
        .await
        .list("s3cr3t-token")
        .await
        .expect_err("503 is an error");
    assert!(err.is_status());
    assert_eq!(err.kind(), ErrorKind::Status);
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.body_snippet(), Some("{\"error\":\"overloaded\"}"));
    assert_eq!(err.service(), Some("user-service"));
    assert_eq!(err.method(), Some("list"));
    let shown = err.to_string();
    assert_eq!(
        shown,
        "user-service#list (GET /list): unsuccessful status: service answered 503 \
         Service Unavailable (after 3 attempts)"
    );
    assert_eq!(err.attempts(), 3, "503 on a GET is retried by default");
    assert!(!format!("{err:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn wrong_json_is_a_decode_error_naming_type_status_and_body() {
    let server = MockServer::start().await;
    answer(
        &server,
        "/users/1",
        ResponseTemplate::new(200).set_body_string("{\"id\":\"one\",\"name\":\"x\"}"),
    )
    .await;
    answer(
        &server,
        "/users/2",
        ResponseTemplate::new(200).set_body_raw("{\"id\":2,\"na", "application/json"),
    )
    .await;
    answer(
        &server,
        "/users/3",
        ResponseTemplate::new(200).set_body_raw("<html>gateway</html>", "text/html"),
    )
    .await;
    let c = client_for(&server).await;
    for id in [1, 2, 3] {
        let err = c.get(id).await.expect_err("not a User");
        assert!(err.is_decode(), "{id}: {err}");
        assert_eq!(err.status(), Some(StatusCode::OK));
        assert!(err.to_string().contains("responses::User"), "{err}");
        assert!(err.body_snippet().is_some_and(|s| !s.is_empty()));
        assert!(
            std::error::Error::source(&err).is_some(),
            "serde's error is kept"
        );
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_an_error_not_an_allocation() {
    let server = MockServer::start().await;
    answer(
        &server,
        "/users/1",
        ResponseTemplate::new(200).set_body_string("x".repeat(2048)),
    )
    .await;
    answer(
        &server,
        "/users/2",
        ResponseTemplate::new(200).set_body_json(json_user(2)),
    )
    .await;
    let c = support::builder::<UsersClient>()
        .base_url(server.uri())
        .max_response_bytes(1024)
        .build()
        .expect("valid");
    let err = c.get(1).await.expect_err("over the limit");
    assert_eq!(err.kind(), ErrorKind::Body);
    assert!(err.is_body());
    assert!(err.to_string().contains("1024"), "{err}");
    // Under the limit, the same client works.
    assert_eq!(c.get(2).await.ok().map(|u| u.id), Some(2));
}

#[cfg(feature = "testing")] // the fault server; CI tests with all features
#[tokio::test]
async fn a_streamed_body_is_cut_off_at_the_limit() {
    use courier::testing::{Fault, FaultServer};
    // 256 MiB offered as a chunked stream; the client must stop after
    // about 1 MiB.
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::json("").oversized_body(256 * 1024 * 1024).chunked());
    let c = support::builder::<UsersClient>()
        .base_url(server.url())
        .max_response_bytes(1024 * 1024)
        .build()
        .expect("valid");
    let err = c.get(1).await.expect_err("over the limit");
    assert_eq!(err.kind(), ErrorKind::Body, "{err}");
    drop(c);
    // The server writes until the client hangs up.
    tokio::time::timeout(std::time::Duration::from_secs(10), server.wait_until_idle())
        .await
        .expect("the client hung up");
    let sent = server.bytes_sent();
    assert!(sent < 64 * 1024 * 1024, "server sent {sent} bytes");
}
