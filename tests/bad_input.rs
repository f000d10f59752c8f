//! Bad input gets a clear error naming what was wrong, and nothing is sent.

use courier::{Error, ErrorKind, client};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::received;

#[client(name = "files")]
trait Files {
    #[get("/files/{name}")]
    async fn get(&self, name: &str) -> Result<(), Error>;

    #[get("/files/{name}.json")]
    async fn json(&self, name: &str) -> Result<(), Error>;

    #[get("/files/{dir}{name}")]
    async fn joined(&self, dir: &str, name: &str) -> Result<(), Error>;

    #[get("/files/{name}.")]
    async fn dotted(&self, name: &str) -> Result<(), Error>;

    #[post("/files")]
    async fn upload(&self, #[header("X-Checksum")] sum: &str) -> Result<(), Error>;

    #[post("/files")]
    async fn upload_body(&self, #[body] body: &Unserializable) -> Result<(), Error>;
}

#[client(name = "defaulted", url = "http://127.0.0.1:9")]
trait Defaulted {
    #[get("/")]
    async fn root(&self) -> Result<(), Error>;
}

/// A body whose `Serialize` fails, as a map with non-string keys does in JSON.
struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refusing on purpose"))
    }
}

async fn counting_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

fn files(server: &MockServer) -> FilesClient {
    support::builder::<FilesClient>()
        .base_url(server.uri())
        .build()
        .expect("valid")
}

#[tokio::test]
async fn dot_segments_and_empty_segments_are_refused_before_sending() {
    let server = counting_server().await;
    let c = files(&server);
    for bad in ["..", ".", ""] {
        let err = c.get(bad).await.expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{bad:?}");
        assert!(err.is_invalid_request());
        let shown = err.to_string();
        assert!(shown.contains("`name`"), "{shown}");
        assert!(shown.starts_with("files#get (GET /files/)"), "{shown}");
    }
    assert_eq!(received(&server).await, 0, "nothing may be sent");
    // Inside a segment, dots are ordinary characters.
    c.json("..").await.expect("`/files/...json` is a fine name");
    assert_eq!(received(&server).await, 1);
}

/// The defect: `/files/{dir}{name}` called with `(".", ".")` sent `GET /`,
/// since the URL parser resolves `/files/..`; each value alone was a fine
/// part of a segment. The finished segment is what is checked.
#[tokio::test]
async fn adjacent_placeholders_cannot_make_a_dot_segment_together() {
    let server = counting_server().await;
    let c = files(&server);
    for (dir, name) in [(".", "."), ("", "."), ("", "")] {
        let err = c.joined(dir, name).await.expect_err("refused");
        assert!(err.is_invalid_request(), "{dir:?}{name:?}: {err}");
        assert!(err.to_string().contains("`dir`, `name`"), "{err}");
    }
    let err = c.dotted(".").await.expect_err("`.` + `.` is `..`");
    assert!(err.is_invalid_request(), "{err}");
    assert_eq!(received(&server).await, 0, "nothing may be sent");
    c.joined("a", ".").await.expect("`a.` is a name");
    c.dotted("v1").await.expect("`v1.` is a name");
    let paths: Vec<String> = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/files/a.", "/files/v1."]);
}

#[tokio::test]
async fn header_values_with_line_breaks_or_nul_are_refused_before_sending() {
    let server = counting_server().await;
    let c = files(&server);
    for bad in ["abc\r\nX-Injected: yes", "abc\ndef", "abc\0def", "abc\rdef"] {
        let err = c.upload(bad).await.expect_err("must refuse");
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        let shown = err.to_string();
        assert!(shown.contains("`x-checksum`"), "{shown}");
        assert!(
            !shown.contains("Injected"),
            "the value is not echoed: {shown}"
        );
    }
    assert_eq!(received(&server).await, 0);
}

#[tokio::test]
async fn a_body_that_does_not_serialize_is_refused_before_sending() {
    let server = counting_server().await;
    let err = files(&server)
        .upload_body(&Unserializable)
        .await
        .expect_err("must refuse");
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.to_string().contains("Unserializable"), "{err}");
    assert_eq!(received(&server).await, 0);
}

#[test]
fn builder_errors_are_returned_by_build() {
    let no_url = support::builder::<FilesClient>()
        .build()
        .err()
        .map(|e| e.to_string());
    let no_url = no_url.unwrap_or_default();
    assert!(no_url.contains("no base URL"), "{no_url}");
    assert!(no_url.contains("`files`"), "{no_url}");

    let checks: [(courier::ClientBuilder<FilesClient>, &str); 7] = [
        (
            support::builder::<FilesClient>().base_url("not a url"),
            "not a valid URL",
        ),
        (
            support::builder::<FilesClient>().base_url("ftp://host"),
            "http or https",
        ),
        (
            support::builder::<FilesClient>().base_url("http://host/?x=1"),
            "query",
        ),
        (
            support::builder::<FilesClient>()
                .base_url("http://host")
                .default_header("X-Bad", "a\r\nb"),
            "`x-bad`",
        ),
        (
            support::builder::<FilesClient>()
                .base_url("http://host")
                .default_header("Bad Name", "v"),
            "`Bad Name`",
        ),
        (
            // not the matrix: `http_client` is reqwest's own setting.
            FilesClient::builder()
                .base_url("http://host")
                .http_client(reqwest::Client::new())
                .connect_timeout(std::time::Duration::from_secs(1)),
            "connect_timeout",
        ),
        (
            // not the matrix: two transports named on purpose.
            FilesClient::builder()
                .base_url("http://host")
                .hyper_transport(courier::transport::HyperTransport::new())
                .http_client(reqwest::Client::new()),
            "two transports",
        ),
    ];
    for (builder, needle) in checks {
        let err = builder.build().expect_err(needle);
        assert_eq!(err.kind(), ErrorKind::Builder);
        assert!(err.is_builder());
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
}

#[test]
fn the_first_bad_setting_is_reported_even_if_later_ones_are_fine() {
    let err = support::builder::<FilesClient>()
        .base_url("::")
        .base_url("http://fine")
        .build()
        .expect_err("first setting was bad");
    assert!(err.to_string().contains("`::`"), "{err}");
}

#[tokio::test]
async fn the_url_attribute_is_the_default_base_url_and_the_builder_wins() {
    let built = support::builder::<DefaultedClient>()
        .build()
        .expect("url from attribute");
    assert!(format!("{built:?}").contains("http://127.0.0.1:9"));
    let server = counting_server().await;
    let c = support::builder::<DefaultedClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    c.root().await.expect("goes to the builder's URL");
    assert_eq!(received(&server).await, 1);
}

#[cfg(feature = "testing")] // the fault server; CI tests with all features
#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    // A port held but not listening: nothing can answer there.
    let down = courier::testing::FaultServer::refusing().expect("bind");
    let c = support::builder::<FilesClient>()
        .base_url(down.url())
        .build()
        .expect("valid");
    let err = c.get("x").await.expect_err("nobody listens");
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(!err.is_status());
    assert!(
        err.to_string().starts_with("files#get (GET /files/x)"),
        "{err}"
    );
}

#[tokio::test]
async fn an_https_url_to_a_plain_http_port_fails_the_handshake_as_a_connect_error() {
    // The TLS client hello meets an HTTP answer: rustls refuses it, and the
    // call fails before a request was sent, on either transport.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let c = support::builder::<FilesClient>()
        .base_url(format!("https://127.0.0.1:{port}"))
        .build()
        .expect("valid");
    let err = c.get("x").await.expect_err("not TLS");
    assert_eq!(err.kind(), ErrorKind::Connect, "{err:?}");
    assert!(!err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn secrets_stay_out_of_debug_output() {
    let server = counting_server().await;
    let builder = support::builder::<FilesClient>()
        .base_url(server.uri())
        .default_header("Authorization", "Bearer hunter2")
        .default_header("X-Api-Key", "hunter3");
    assert!(!format!("{builder:?}").contains("hunter"));
    let c = builder.build().expect("valid");
    assert!(!format!("{c:?}").contains("hunter"), "{c:?}");
    c.get("x").await.expect("sent");
    let reqs = server.received_requests().await.unwrap_or_default();
    assert_eq!(
        reqs[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer hunter2"),
        "hidden from Debug, but sent"
    );
}

#[tokio::test]
async fn interceptors_change_requests_in_order_and_can_refuse_them() {
    let server = counting_server().await;
    let c = support::builder::<FilesClient>()
        .base_url(server.uri())
        .interceptor(
            |req: &mut courier::Outgoing<'_>| -> Result<(), courier::BoxError> {
                let tag = format!("{}#{}", req.service(), req.method_name());
                req.set_header("x-call", tag)?;
                req.set_header("x-order", "first")?;
                Ok(())
            },
        )
        .interceptor(
            |req: &mut courier::Outgoing<'_>| -> Result<(), courier::BoxError> {
                let previous = req
                    .headers()
                    .get("x-order")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                req.set_header("x-order", format!("{previous},second"))?;
                if req.url().ends_with("/forbidden") {
                    return Err("forbidden by policy".into());
                }
                Ok(())
            },
        )
        .build()
        .expect("valid");

    c.get("ok").await.expect("sent");
    let reqs = server.received_requests().await.unwrap_or_default();
    let h = |name: &str| {
        reqs[0]
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(h("x-call").as_deref(), Some("files#get"));
    assert_eq!(h("x-order").as_deref(), Some("first,second"));

    let err = c.get("forbidden").await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Interceptor);
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("forbidden by policy"));
    assert_eq!(
        received(&server).await,
        1,
        "the refused request was not sent"
    );
}

#[tokio::test]
async fn an_interceptor_cannot_smuggle_a_line_break_into_a_header() {
    let server = counting_server().await;
    let c = support::builder::<FilesClient>()
        .base_url(server.uri())
        .interceptor(
            |req: &mut courier::Outgoing<'_>| -> Result<(), courier::BoxError> {
                req.set_header("x-trace", "a\r\nb")?;
                Ok(())
            },
        )
        .build()
        .expect("valid");
    let err = c.get("x").await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Interceptor);
    assert_eq!(received(&server).await, 0);
}
