//! The server on the wire: raw bytes in, raw bytes out, so framing, keep-alive
//! and resets are checked byte for byte (the integration tests in
//! `tests/fault_server.rs` check what a courier client makes of them).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Fault, FaultServer};

const GET_CLOSE: &[u8] = b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

/// Writes `request`, reads until the server closes; the bytes read and how
/// the read ended.
async fn exchange(server: &FaultServer, request: &[u8]) -> io::Result<(Vec<u8>, io::Result<()>)> {
    let mut stream = TcpStream::connect(server.addr()).await?;
    stream.write_all(request).await?;
    Ok(read_to_end(&mut stream).await)
}

async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
    (got, ended)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn answers_with_content_length_and_honours_connection_close() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server.set(Fault::ok("hello").header("x-a", "1"));
    let (got, ended) = exchange(&server, GET_CLOSE).await?;
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(
        text(&got),
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\nx-a: 1\r\n\
         content-length: 5\r\nconnection: close\r\n\r\nhello"
    );
    assert_eq!(server.bytes_sent(), got.len() as u64);
    Ok(())
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_are_answered_in_order() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server
        .script([Fault::ok("one"), Fault::status(503)])
        .then(Fault::ok("three"));
    let requests = b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\n\
                     POST /2 HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc\
                     GET /3 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let (got, _) = exchange(&server, requests).await?;
    let got = text(&got);
    let one = got.find("one").unwrap_or(usize::MAX);
    let unavailable = got.find("503 Service Unavailable").unwrap_or(usize::MAX);
    let three = got.find("three").unwrap_or(usize::MAX);
    assert!(one < unavailable && unavailable < three, "{got}");
    assert_eq!(server.requests(), 3);
    assert_eq!(server.connections(), 1);
    let received = server.received();
    assert_eq!(received[1].body().as_ref(), b"abc");
    assert!(received.iter().all(|r| r.connection() == 1));
    Ok(())
}

#[tokio::test]
async fn a_chunked_request_body_is_decoded_after_100_continue() -> io::Result<()> {
    let server = FaultServer::start().await?;
    let mut stream = TcpStream::connect(server.addr()).await?;
    stream
        .write_all(
            b"PUT /up?x=1 HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\
              transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        )
        .await?;
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await?;
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream
        .write_all(b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n")
        .await?;
    let (got, _) = read_to_end(&mut stream).await;
    assert!(
        text(&got).starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        text(&got)
    );
    let received = server.received();
    assert_eq!(received[0].body().as_ref(), b"abcde");
    assert_eq!(received[0].path(), "/up");
    assert_eq!(received[0].query(), Some("x=1"));
    assert_eq!(server.requests_to("/up"), 1);
    Ok(())
}

#[tokio::test]
async fn http_1_0_closes_unless_asked_to_keep_alive() -> io::Result<()> {
    let server = FaultServer::start().await?;
    let (got, ended) = exchange(&server, b"GET / HTTP/1.0\r\n\r\n").await?;
    assert!(ended.is_ok());
    assert!(text(&got).contains("connection: close"), "{}", text(&got));
    Ok(())
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused_and_not_counted() -> io::Result<()> {
    let server = FaultServer::start().await?;
    let cases: [(Vec<u8>, &str); 5] = [
        (b"NONSENSE\r\n\r\n".to_vec(), "400"),
        (b"GET / HTTP/2.0\r\n\r\n".to_vec(), "505"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), "400"),
        (
            b"POST / HTTP/1.1\r\ncontent-length: 99999999999\r\n\r\n".to_vec(),
            "413",
        ),
        (
            [
                b"GET / HTTP/1.1\r\nx: ".as_slice(),
                &[b'a'; 70_000],
                b"\r\n\r\n",
            ]
            .concat(),
            "431",
        ),
    ];
    for (request, status) in cases {
        let (got, _) = exchange(&server, &request).await?;
        assert!(
            text(&got).starts_with(&format!("HTTP/1.1 {status} ")),
            "{status}: {}",
            text(&got)
        );
    }
    assert_eq!(server.requests(), 0);
    assert_eq!(server.connections(), 5);
    Ok(())
}

#[tokio::test]
async fn chunked_answers_and_filler_bodies_are_framed() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server.set(Fault::status(201).body("hello").chunked());
    let (got, _) = exchange(&server, GET_CLOSE).await?;
    assert!(
        text(&got).ends_with(
            "transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ),
        "{}",
        text(&got)
    );

    server.set(Fault::ok("").oversized_body(40_000));
    let (got, _) = exchange(&server, GET_CLOSE).await?;
    let got = text(&got);
    assert!(got.contains("content-length: 40000\r\n"), "{got}");
    let body = got.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(body, "x".repeat(40_000));
    Ok(())
}

#[tokio::test]
async fn no_body_and_no_length_for_204_and_for_head() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server.set(Fault::status(204).body("ignored"));
    let (got, _) = exchange(&server, GET_CLOSE).await?;
    assert_eq!(
        text(&got),
        "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
    );

    server.set(Fault::ok("hello"));
    let (got, _) = exchange(&server, b"HEAD / HTTP/1.1\r\nconnection: close\r\n\r\n").await?;
    assert!(text(&got).ends_with("content-length: 5\r\nconnection: close\r\n\r\n"));
    Ok(())
}

#[tokio::test]
async fn framing_headers_of_the_fault_replace_the_servers() -> io::Result<()> {
    // A declared length the body does not have: the client waits for the
    // rest, and the server closes after the short body.
    let server = FaultServer::start().await?;
    server.set(Fault::ok("short").header("content-length", "100"));
    let (got, _) = exchange(&server, GET_CLOSE).await?;
    let got = text(&got);
    assert_eq!(got.matches("content-length").count(), 1, "{got}");
    assert!(
        got.ends_with("content-length: 100\r\nconnection: close\r\n\r\nshort"),
        "{got}"
    );
    Ok(())
}

#[tokio::test]
async fn refuse_resets_the_connection_before_any_byte() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server.set(Fault::refuse());
    let mut stream = TcpStream::connect(server.addr()).await?;
    let (got, ended) = read_to_end(&mut stream).await;
    assert!(got.is_empty());
    assert_eq!(
        ended.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(server.connections(), 1);
    Ok(())
}

#[tokio::test]
async fn reset_after_headers_sends_half_the_declared_body_then_resets() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server.set(Fault::ok("0123456789").reset_after_headers());
    let (got, ended) = exchange(&server, GET_CLOSE).await?;
    assert!(text(&got).ends_with("content-length: 10\r\nconnection: close\r\n\r\n01234"));
    assert_eq!(
        ended.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );

    // An empty body gets filler, so there is something to break off.
    server.set(Fault::status(503).reset_after_headers());
    let (got, _) = exchange(&server, GET_CLOSE).await?;
    let got = text(&got);
    assert!(got.contains("content-length: 1024\r\n"), "{got}");
    assert!(got.ends_with(&"x".repeat(512)), "{got}");
    Ok(())
}

#[tokio::test]
async fn close_and_garbage_end_with_a_clean_close() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server.script([Fault::close(), Fault::garbage("not http")]);
    let (got, ended) = exchange(&server, GET_CLOSE).await?;
    assert!(got.is_empty() && ended.is_ok(), "{got:?} {ended:?}");
    let (got, ended) = exchange(&server, GET_CLOSE).await?;
    assert_eq!(got, b"not http");
    assert!(ended.is_ok());
    assert_eq!(server.requests(), 2);
    Ok(())
}

#[tokio::test]
async fn a_black_hole_holds_the_connection_until_the_client_hangs_up() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server.set(Fault::black_hole());
    let mut stream = TcpStream::connect(server.addr()).await?;
    stream.write_all(GET_CLOSE).await?;
    tokio::time::timeout(Duration::from_secs(5), server.wait_for_requests(1)).await?;
    assert_eq!(server.open_connections(), 1);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
    assert!(read.is_err(), "nothing was sent: {read:?}");
    drop(stream);
    tokio::time::timeout(Duration::from_secs(5), server.wait_until_idle()).await?;
    Ok(())
}

#[tokio::test]
async fn a_path_script_falls_back_to_the_server_plan() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server.set(Fault::status(202));
    server.on("/a").script([Fault::status(418)]);
    let status = |got: Vec<u8>| text(&got).get(9..12).map(str::to_owned);
    assert_eq!(
        status(exchange(&server, GET_CLOSE).await?.0).as_deref(),
        Some("418")
    );
    assert_eq!(
        status(exchange(&server, GET_CLOSE).await?.0).as_deref(),
        Some("202")
    );
    Ok(())
}

#[tokio::test]
async fn a_closed_port_refuses_connections() -> io::Result<()> {
    let down = FaultServer::refusing()?;
    let refused = TcpStream::connect(down.addr()).await.map(drop);
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused)
    );
    assert!(down.url().starts_with("http://127.0.0.1:"));
    Ok(())
}

#[tokio::test]
async fn dropping_the_server_closes_the_port_and_its_connections() -> io::Result<()> {
    let server = FaultServer::start().await?;
    server.set(Fault::black_hole());
    let addr = server.addr();
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(GET_CLOSE).await?;
    tokio::time::timeout(Duration::from_secs(5), server.wait_for_requests(1)).await?;
    drop(server);
    let (_, ended) = read_to_end(&mut stream).await;
    assert!(ended.is_ok(), "closed, not timed out: {ended:?}");
    let refused = TcpStream::connect(addr).await.map(drop);
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused)
    );
    Ok(())
}
