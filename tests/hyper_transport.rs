//! The lean transport's own settings (the rest of the suite runs on it too:
//! see tests/matrix.rs). HTTP/2 with prior knowledge is checked against a
//! server that says which version it was spoken to in.

use std::net::SocketAddr;
use std::time::Duration;

use courier::transport::HyperTransport;
use courier::{Error, client};

#[client(name = "versions")]
trait Versions {
    #[get("/version")]
    async fn version(&self) -> Result<String, Error>;
}

/// An axum server (HTTP/1.1 and h2c, as hyper-util's auto server speaks
/// both) answering the HTTP version of each request.
async fn version_server() -> SocketAddr {
    let app = axum::Router::new().route(
        "/version",
        axum::routing::get(|version: http::Version| async move { format!("{version:?}") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn client(addr: SocketAddr, transport: HyperTransport) -> VersionsClient {
    client_at(&format!("http://{addr}"), transport)
}

fn client_at(base: &str, transport: HyperTransport) -> VersionsClient {
    VersionsClient::builder()
        .base_url(base)
        .hyper_transport(transport)
        .build()
        .expect("valid")
}

#[tokio::test]
async fn plain_http_is_http_1_1_and_prior_knowledge_is_h2c() {
    let addr = version_server().await;
    let h1 = client(addr, HyperTransport::new());
    assert_eq!(h1.version().await.ok().as_deref(), Some("HTTP/1.1"));
    let h2 = client(addr, HyperTransport::new().http2_prior_knowledge());
    // Several calls, concurrently: they share one HTTP/2 connection.
    let answers = futures::future::join_all((0..8).map(|_| h2.version())).await;
    for answer in answers {
        assert_eq!(answer.ok().as_deref(), Some("HTTP/2.0"));
    }
}

#[tokio::test]
async fn prior_knowledge_against_an_http_1_only_server_fails_as_a_transport_error() {
    // wiremock speaks both; a server that only speaks HTTP/1.1 sees the
    // HTTP/2 preface as garbage. The call fails, it never hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let c = client(addr, HyperTransport::new().http2_prior_knowledge());
    let err = c.version().await.expect_err("HTTP/1.1 only");
    assert_eq!(err.kind(), courier::ErrorKind::Transport, "{err:?}");
    assert!(!err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn pool_settings_are_accepted_and_calls_go_through() {
    let addr = version_server().await;
    let c = client(
        addr,
        HyperTransport::new()
            .pool_idle_timeout(None)
            .pool_max_idle_per_host(1)
            .tcp_nodelay(false),
    );
    for _ in 0..3 {
        assert_eq!(c.version().await.ok().as_deref(), Some("HTTP/1.1"));
    }
}

#[cfg(feature = "testing")] // the fault server; CI tests with all features
#[tokio::test]
async fn an_idle_pooled_connection_is_closed_after_the_pool_idle_timeout() {
    use courier::testing::{Fault, FaultServer};
    let server = FaultServer::start().await.expect("bind");
    server.set(Fault::ok("HTTP/1.1"));
    let short = client_at(
        &server.url(),
        HyperTransport::new().pool_idle_timeout(Some(Duration::from_millis(50))),
    );
    short.version().await.expect("200");
    // Idle for well past the timeout: the next call needs a new connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    short.version().await.expect("200");
    assert_eq!(server.connections(), 2);

    let kept = client_at(&server.url(), HyperTransport::new());
    kept.version().await.expect("200");
    tokio::time::sleep(Duration::from_millis(300)).await;
    kept.version().await.expect("200");
    assert_eq!(server.connections(), 3, "the default keeps it for 90 s");
}
