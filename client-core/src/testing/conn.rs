//! One connection: read HTTP/1.1 requests (keep-alive, `Content-Length` and
//! chunked bodies, `Expect: 100-continue`), then perform each one's fault.
//!
//! Written by hand rather than on hyper: a fault server must send what no
//! well-behaved HTTP library lets it send (half a body then a reset, a
//! header a byte at a time, bytes that are not HTTP).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fault::{Body, Delivery, Fault, Reply};

/// The longest request head read (request line and headers); longer is
/// answered with 431 and the connection closed.
const MAX_HEAD: usize = 64 * 1024;
/// The longest request body read; longer is answered with 413.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// The longest chunk-size or trailer line of a chunked request body.
const MAX_LINE: usize = 4 * 1024;
/// Body bytes per write (and per chunk, when chunked).
const PIECE: usize = 16 * 1024;
/// Filler for generated bodies: one static piece, sent again and again.
static FILLER: [u8; PIECE] = [b'x'; PIECE];

/// A request the server read completely.
///
/// ```
/// # async fn demo(server: &courier::testing::FaultServer) {
/// for request in server.received() {
///     println!("{} {} on connection {}", request.method(), request.path(), request.connection());
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Received {
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Bytes,
    connection: u64,
}

impl Received {
    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, as sent (percent-encoded), without the query string.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The query string (after `?`), as sent, if there was one.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The first value of a header, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The request body (chunked bodies are decoded).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Which connection the request came on: 1 for the first the server
    /// accepted, 2 for the next, … (not restarted by
    /// [`reset_counts`](super::FaultServer::reset_counts)). Requests with
    /// the same number shared a kept-alive connection.
    pub fn connection(&self) -> u64 {
        self.connection
    }
}

/// A request that could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The connection failed or closed in the middle of a request.
    Closed,
    /// A malformed or too large request: answer with this status, close.
    Bad(u16, &'static str),
}

impl From<std::io::Error> for ReadError {
    fn from(_: std::io::Error) -> Self {
        ReadError::Closed
    }
}

/// What answering a request needs to know about it.
pub(super) struct Request {
    keep_alive: bool,
    is_head: bool,
}

/// What is left of the connection after a fault.
pub(super) enum After {
    /// The response is complete; the next request may follow.
    Continue,
    /// Close cleanly (FIN).
    Close,
    /// Close with a reset (RST).
    Reset,
    /// The client hung up, or the connection failed.
    Gone,
}

/// One accepted connection.
pub(super) struct Conn {
    stream: TcpStream,
    id: u64,
    input: BytesMut,
    output: Vec<u8>,
    sent: Arc<AtomicU64>,
}

// ===== reading requests =====

impl Conn {
    pub(super) fn new(stream: TcpStream, id: u64, sent: Arc<AtomicU64>) -> Self {
        // NOTE: responses go out in several writes (head, pieces, chunk
        // frames); without NODELAY, Nagle's algorithm and the client's
        // delayed ACK would add ~40 ms stalls between them.
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            id,
            input: BytesMut::with_capacity(8 * 1024),
            output: Vec::new(),
            sent,
        }
    }

    /// Reads more input; false when the peer closed its side.
    async fn fill(&mut self) -> Result<bool, ReadError> {
        self.input.reserve(8 * 1024);
        Ok(self.stream.read_buf(&mut self.input).await? > 0)
    }

    /// Reads the next request: `None` when the client closed the connection
    /// between requests.
    pub(super) async fn read_request(&mut self) -> Result<Option<(Received, Request)>, ReadError> {
        let Some(head) = self.read_head().await? else {
            return Ok(None);
        };
        let head = parse_head(&head)?;
        let framing = body_framing(&head.headers)?;
        let has_body = !matches!(framing, Framing::Length(0));
        let expects_continue = head
            .headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if has_body && expects_continue {
            self.write_now(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = match framing {
            Framing::Length(len) => self.read_exact(len).await?,
            Framing::Chunked => self.read_chunked().await?,
        };
        let keep_alive = keeps_alive(head.http10, &head.headers);
        let is_head = head.method == Method::HEAD;
        let received = Received {
            method: head.method,
            target: head.target,
            headers: head.headers,
            body,
            connection: self.id,
        };
        Ok(Some((
            received,
            Request {
                keep_alive,
                is_head,
            },
        )))
    }

    /// The bytes up to and including the blank line that ends a head.
    async fn read_head(&mut self) -> Result<Option<BytesMut>, ReadError> {
        let mut searched = 0;
        loop {
            // Robustness (RFC 9112 §2.2): empty lines before a request line
            // are ignored.
            while self.input.starts_with(b"\r\n") {
                let _ = self.input.split_to(2);
                searched = 0;
            }
            let from = searched.min(self.input.len());
            let end = find(&self.input[from..], b"\r\n\r\n").map(|at| from + at + 4);
            if end.unwrap_or(self.input.len()) > MAX_HEAD {
                return Err(ReadError::Bad(431, "request head too large"));
            }
            if let Some(end) = end {
                return Ok(Some(self.input.split_to(end)));
            }
            searched = self.input.len().saturating_sub(3);
            if !self.fill().await? {
                return if self.input.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Closed)
                };
            }
        }
    }

    async fn read_exact(&mut self, len: usize) -> Result<Bytes, ReadError> {
        while self.input.len() < len {
            if !self.fill().await? {
                return Err(ReadError::Closed);
            }
        }
        Ok(self.input.split_to(len).freeze())
    }

    /// One line without its CRLF.
    async fn read_line(&mut self) -> Result<BytesMut, ReadError> {
        loop {
            if let Some(at) = find(&self.input, b"\r\n") {
                let mut line = self.input.split_to(at + 2);
                line.truncate(at);
                return Ok(line);
            }
            if self.input.len() > MAX_LINE {
                return Err(ReadError::Bad(400, "chunk line too long"));
            }
            if !self.fill().await? {
                return Err(ReadError::Closed);
            }
        }
    }

    /// A chunked body (RFC 9112 §7.1), decoded; trailers are read and
    /// dropped.
    async fn read_chunked(&mut self) -> Result<Bytes, ReadError> {
        let mut body = BytesMut::new();
        loop {
            let line = self.read_line().await?;
            let size = line[..].split(|b| *b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or(ReadError::Bad(400, "bad chunk size"))?;
            if size == 0 {
                while !self.read_line().await?.is_empty() {}
                return Ok(body.freeze());
            }
            if body.len().saturating_add(size) > MAX_BODY {
                return Err(ReadError::Bad(413, "request body too large"));
            }
            let chunk = self.read_exact(size.saturating_add(2)).await?;
            if !chunk.ends_with(b"\r\n") {
                return Err(ReadError::Bad(400, "chunk not followed by CRLF"));
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

struct Head {
    method: Method,
    target: String,
    http10: bool,
    headers: HeaderMap,
}

enum Framing {
    Length(usize),
    Chunked,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<Head, ReadError> {
    let bad = |why| ReadError::Bad(400, why);
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or(bad("no request line"))?;
    let mut parts = request_line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    let method = Method::from_bytes(method).map_err(|_| bad("bad method"))?;
    let target = std::str::from_utf8(target)
        .ok()
        .filter(|t| !t.is_empty() && t.is_ascii())
        .ok_or(bad("bad request target"))?
        .to_owned();
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(ReadError::Bad(505, "only HTTP/1.x is served")),
    };
    let mut headers = HeaderMap::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err(bad("obsolete header line folding"));
        }
        let at = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(bad("header line without a colon"))?;
        let name = HeaderName::from_bytes(&line[..at]).map_err(|_| bad("bad header name"))?;
        let value = HeaderValue::from_bytes(line[at + 1..].trim_ascii())
            .map_err(|_| bad("bad header value"))?;
        headers.append(name, value);
    }
    Ok(Head {
        method,
        target,
        http10,
        headers,
    })
}

fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
}

fn body_framing(headers: &HeaderMap) -> Result<Framing, ReadError> {
    if headers.contains_key(TRANSFER_ENCODING) {
        // RFC 9112 §6.3: chunked must be the final coding of a request.
        return match tokens(headers, TRANSFER_ENCODING).last().as_deref() {
            Some("chunked") => Ok(Framing::Chunked),
            _ => Err(ReadError::Bad(400, "transfer coding without chunked")),
        };
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let parsed = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(ReadError::Bad(400, "bad content-length"))?;
        if length.is_some_and(|l| l != parsed) {
            return Err(ReadError::Bad(400, "conflicting content-length"));
        }
        length = Some(parsed);
    }
    match usize::try_from(length.unwrap_or(0)) {
        Ok(len) if len <= MAX_BODY => Ok(Framing::Length(len)),
        _ => Err(ReadError::Bad(413, "request body too large")),
    }
}

fn keeps_alive(http10: bool, headers: &HeaderMap) -> bool {
    let mut tokens = tokens(headers, CONNECTION);
    if http10 {
        tokens.any(|t| t == "keep-alive")
    } else {
        !tokens.any(|t| t == "close")
    }
}

// ===== writing =====

impl Conn {
    /// Queues bytes, writing when enough are queued.
    async fn queue(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.output.extend_from_slice(bytes);
        if self.output.len() >= 4 * PIECE {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.sent
                .fetch_add(self.output.len() as u64, Ordering::Relaxed);
            self.output.clear();
        }
        Ok(())
    }

    async fn write_now(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.queue(bytes).await?;
        self.flush().await
    }

    /// Sends `bytes` now, one byte every `every` if paced.
    async fn send(&mut self, bytes: &[u8], pace: Option<Duration>) -> std::io::Result<()> {
        let Some(every) = pace else {
            return self.queue(bytes).await;
        };
        self.flush().await?;
        for byte in bytes {
            tokio::time::sleep(every).await;
            self.write_now(std::slice::from_ref(byte)).await?;
        }
        Ok(())
    }

    /// Answers a request that could not be read, then the connection ends.
    pub(super) async fn refuse_request(&mut self, status: u16, why: &str) {
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{why}",
            reason(status),
            why.len()
        );
        let _ = self.write_now(head.as_bytes()).await;
        let _ = self.stream.shutdown().await;
    }

    /// Performs `fault` for `request` (its delay included).
    pub(super) async fn perform(&mut self, fault: &Fault, request: &Request) -> After {
        if !fault.delay.is_zero() {
            tokio::time::sleep(fault.delay).await;
        }
        let done = match &fault.delivery {
            Delivery::Refuse | Delivery::ResetBeforeHeaders => return After::Reset,
            Delivery::Close => return After::Close,
            Delivery::BlackHole => return self.hold_until_hang_up().await,
            Delivery::Garbage(bytes) => self.write_now(bytes).await.map(|()| After::Close),
            Delivery::Answer => self.answer(&fault.reply, request, Pace::None).await,
            Delivery::TrickleHeaders(every) => {
                self.answer(&fault.reply, request, Pace::Head(*every)).await
            }
            Delivery::TrickleBody(every) => {
                self.answer(&fault.reply, request, Pace::Body(*every)).await
            }
            Delivery::ResetAfterHeaders => self.break_off(&fault.reply, request).await,
        };
        done.unwrap_or(After::Gone)
    }

    /// Reads and drops whatever comes until the client hangs up.
    async fn hold_until_hang_up(&mut self) -> After {
        let mut scratch = [0u8; 1024];
        loop {
            match self.stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return After::Gone,
                Ok(_) => {}
            }
        }
    }

    async fn answer(
        &mut self,
        reply: &Reply,
        request: &Request,
        pace: Pace,
    ) -> std::io::Result<After> {
        let framing = ResponseFraming::of(reply);
        let head = head(reply, framing, !request.keep_alive);
        self.send(&head, pace.head()).await?;
        if !request.is_head && framing.has_body() {
            self.body(&reply.body, framing, None, pace.body()).await?;
        }
        self.flush().await?;
        Ok(if request.keep_alive {
            After::Continue
        } else {
            After::Close
        })
    }

    /// The head and half the body, then a reset.
    async fn break_off(&mut self, reply: &Reply, request: &Request) -> std::io::Result<After> {
        let mut reply = reply.clone();
        let declared = match reply.body {
            Body::Bytes(ref b) if b.is_empty() => {
                reply.body = Body::Filler(1024);
                1024
            }
            Body::Bytes(ref b) => b.len() as u64,
            Body::Filler(n) => n,
            Body::Endless => 2 * PIECE as u64,
        };
        let framing = ResponseFraming::of(&reply);
        let head = head(&reply, framing, !request.keep_alive);
        self.queue(&head).await?;
        if !request.is_head && framing.has_body() {
            self.body(&reply.body, framing, Some(declared / 2), None)
                .await?;
        }
        self.flush().await?;
        Ok(After::Reset)
    }

    /// Sends a body with its framing, stopping after `limit` body bytes
    /// (without the chunked terminator) if given.
    async fn body(
        &mut self,
        body: &Body,
        framing: ResponseFraming,
        limit: Option<u64>,
        pace: Option<Duration>,
    ) -> std::io::Result<()> {
        let mut pieces = Pieces::new(body);
        let mut sent = 0u64;
        while let Some(mut piece) = pieces.next() {
            if let Some(limit) = limit {
                let room = usize::try_from(limit.saturating_sub(sent)).unwrap_or(usize::MAX);
                if room == 0 {
                    break;
                }
                piece.truncate(room);
            }
            sent += piece.len() as u64;
            if framing == ResponseFraming::Chunked {
                self.send(format!("{:x}\r\n", piece.len()).as_bytes(), pace)
                    .await?;
                self.send(&piece, pace).await?;
                self.send(b"\r\n", pace).await?;
            } else {
                self.send(&piece, pace).await?;
            }
        }
        if framing == ResponseFraming::Chunked && limit.is_none() {
            self.send(b"0\r\n\r\n", pace).await?;
        }
        Ok(())
    }

    /// Ends the connection: cleanly, or with a reset (RST, nothing more is
    /// sent, unsent bytes are dropped).
    pub(super) async fn end(mut self, after: After) {
        match after {
            After::Reset => {
                // NOTE: a linger of zero makes close() send RST at once; it
                // never blocks (tokio deprecates set_linger for non-zero
                // values, which would block the thread; `set_zero_linger`
                // needs tokio 1.50 and this crate supports 1.40).
                #[allow(deprecated)]
                let _ = self.stream.set_linger(Some(Duration::ZERO));
            }
            After::Close => {
                let _ = self.flush().await;
                let _ = self.stream.shutdown().await;
            }
            After::Continue | After::Gone => {}
        }
    }
}

/// Resets a connection that was just accepted, before any byte.
pub(super) fn reset(stream: TcpStream) {
    #[allow(deprecated)] // see `Conn::end`
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

#[derive(Clone, Copy)]
enum Pace {
    None,
    Head(Duration),
    Body(Duration),
}

impl Pace {
    fn head(self) -> Option<Duration> {
        match self {
            Pace::Head(every) => Some(every),
            _ => None,
        }
    }

    fn body(self) -> Option<Duration> {
        match self {
            Pace::Body(every) => Some(every),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ResponseFraming {
    /// `content-length` from the body.
    Length(u64),
    Chunked,
    /// The fault set its own framing headers: the body goes out as is.
    Given,
    /// A status without a body (1xx, 204, 304).
    None,
}

impl ResponseFraming {
    fn of(reply: &Reply) -> Self {
        let framed_by_user = reply.headers.iter().any(|(name, _)| {
            name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
        });
        if framed_by_user {
            ResponseFraming::Given
        } else if (100..200).contains(&reply.status) || matches!(reply.status, 204 | 304) {
            ResponseFraming::None
        } else if reply.chunked {
            ResponseFraming::Chunked
        } else {
            match reply.body {
                Body::Bytes(ref b) => ResponseFraming::Length(b.len() as u64),
                Body::Filler(n) => ResponseFraming::Length(n),
                Body::Endless => ResponseFraming::Chunked,
            }
        }
    }

    fn has_body(self) -> bool {
        self != ResponseFraming::None
    }
}

fn head(reply: &Reply, framing: ResponseFraming, close: bool) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    match framing {
        ResponseFraming::Length(len) => head.push_str(&format!("content-length: {len}\r\n")),
        ResponseFraming::Chunked => head.push_str("transfer-encoding: chunked\r\n"),
        ResponseFraming::Given | ResponseFraming::None => {}
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// A body in pieces of at most [`PIECE`] bytes.
enum Pieces {
    Bytes(Bytes),
    Filler(u64),
    Endless,
}

impl Pieces {
    fn new(body: &Body) -> Self {
        match body {
            Body::Bytes(b) => Pieces::Bytes(b.clone()),
            Body::Filler(n) => Pieces::Filler(*n),
            Body::Endless => Pieces::Endless,
        }
    }

    fn next(&mut self) -> Option<Bytes> {
        match self {
            Pieces::Bytes(rest) if rest.is_empty() => None,
            Pieces::Bytes(rest) => Some(rest.split_to(rest.len().min(PIECE))),
            Pieces::Filler(0) => None,
            Pieces::Filler(left) => {
                let n = usize::try_from(*left).unwrap_or(PIECE).min(PIECE);
                *left -= n as u64;
                Some(Bytes::from_static(&FILLER[..n]))
            }
            Pieces::Endless => Some(Bytes::from_static(&FILLER)),
        }
    }
}
