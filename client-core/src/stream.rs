//! Bodies as streams: a method returning [`BodyStream`] (or
//! `Option<BodyStream>`, `courier::Response<BodyStream>`) reads the
//! response as it arrives; a `#[body] data: BodyStream` parameter sends the
//! request body as it is produced (see [Request bodies](#request-bodies)).
//!
//! ```
//! use courier::{BodyStream, Error, client};
//! use futures_util::StreamExt;
//!
//! #[client(name = "archive")]
//! trait Archive {
//!     #[get("/exports/{id}")]
//!     #[timeout("5s")]   // until the headers; then each chunk within 5s
//!     async fn export(&self, id: u64) -> Result<BodyStream, Error>;
//! }
//!
//! async fn save(
//!     archive: &ArchiveClient,
//!     file: &mut tokio::fs::File,
//! ) -> Result<u64, Box<dyn std::error::Error>> {
//!     use tokio::io::AsyncWriteExt;
//!     let mut body = archive.export(7).await?.max_bytes(8 << 30); // up to 8 GiB
//!     let mut written = 0;
//!     while let Some(chunk) = body.next().await {
//!         let chunk = chunk?;
//!         written += chunk.len() as u64;
//!         file.write_all(&chunk).await?;
//!     }
//!     Ok(written)
//! }
//! ```
//!
//! ## What covers what
//!
//! - **The call** (deadline, retries, hedges, breaker, bulkhead, rate
//!   limit, fallback) ends when the response's headers arrive: the
//!   method's `timeout` is the time to first byte. An error status is still
//!   an error (its body read for the snippet, retried as usual); a success
//!   hands over the stream, and the breaker records it as a success then.
//!   A bulkhead permit is given back at that point too, so a slow reader
//!   does not hold one.
//! - **The rest of the body** is read at the caller's pace. Each chunk must
//!   arrive within the *idle timeout*, by default the method's `timeout`
//!   ([`idle_timeout`](BodyStream::idle_timeout) changes it); a stall is
//!   an [`ErrorKind::Timeout`] item. A body
//!   that breaks off is an [`ErrorKind::Body`]
//!   item. Neither is retried: the caller holds the part already read.
//! - **The size limit** is a running total: the client's
//!   `max_response_bytes` unless [`max_bytes`](BodyStream::max_bytes) sets
//!   another for this body; a declared length over it fails at once, a
//!   stream as soon as it passes it, with a `Body` error item
//!   ([`Error::is_too_large`]).
//!
//! After an error item the stream ends. Nothing is buffered beyond the
//! chunk being handed over: memory stays flat however long the body
//! (`tests/streaming.rs` streams 1 GiB and checks the resident set).
//!
//! ## Request bodies
//!
//! `#[body] data: BodyStream` sends the stream as it is read: chunked, or
//! with `Content-Length` when it declares its length
//! ([`with_length`](BodyStream::with_length)), with `content-type:
//! application/octet-stream` unless a `#[header("Content-Type")]` sets
//! one. Make one from any stream of `Result<Bytes, E>` with
//! [`from_stream`](BodyStream::from_stream) (a file through
//! `tokio_util::io::ReaderStream`, say), or pass a downloaded
//! `BodyStream` straight on: a proxy that never holds the whole body.
//!
//! A stream is read once, so such a method is never retried or hedged
//! (a method-level `#[retry]` or `#[hedge]` is a compile error; a
//! trait-level or configured one does not apply to it), has no fallback
//! (the body is gone), does not follow a 307/308 redirect (which would
//! send the body again) nor resend after a `401` with refreshed
//! credentials. A stream that fails while it is sent fails the call with
//! [`ErrorKind::InvalidRequest`] saying so (the caller's stream failed,
//! not the service: the breaker does not count it).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body::Body as _;
use tokio::time::{Instant, Sleep};

use crate::{BoxError, Error, ErrorKind};

/// The transport's response body (`transport::ResponseBody`), named here
/// so that this lower layer does not import the transport.
type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A response body read chunk by chunk: a `Stream` of
/// `Result<Bytes, courier::Error>`. See the [module docs](self) for the
/// timeouts and the size limit that apply.
pub struct BodyStream {
    body: ResponseBody,
    /// Bytes handed over so far.
    read: u64,
    limit: u64,
    /// The length the response declared, if any.
    declared: Option<u64>,
    idle: Option<Duration>,
    /// The idle timer, made at the first wait and reused.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current wait: it starts when a poll
    /// finds no data, not when the last chunk was handed over, so a slow
    /// reader is not taken for a stalled server.
    waiting: bool,
    done: bool,
}

impl BodyStream {
    pub(crate) fn new(
        body: ResponseBody,
        limit: usize,
        declared: Option<u64>,
        idle: Duration,
    ) -> Self {
        BodyStream {
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
            declared,
            idle: Some(idle),
            ..BodyStream::unlimited(body)
        }
    }

    /// A body with no size limit, no declared length and no idle timeout.
    fn unlimited(body: ResponseBody) -> Self {
        BodyStream {
            body,
            read: 0,
            limit: u64::MAX,
            declared: None,
            idle: None,
            timer: None,
            waiting: false,
            done: false,
        }
    }

    /// A body read from `stream`: to send as a request body (`#[body]`,
    /// read once, so the method is never retried or hedged), or to return
    /// from a fake or a fallback. No size limit and no idle timeout unless
    /// set; the length is unknown (sent chunked) unless
    /// [`with_length`](Self::with_length) gives it.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use courier::BodyStream;
    ///
    /// let lines = futures_util::stream::iter(
    ///     ["a\n", "b\n"].map(|line| Ok::<_, std::io::Error>(Bytes::from(line))),
    /// );
    /// let body = BodyStream::from_stream(lines).with_length(4);
    /// assert_eq!(body.declared_length(), Some(4));
    /// ```
    pub fn from_stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        use futures_util::TryStreamExt as _;
        let frames = stream.map_ok(http_body::Frame::data).map_err(Into::into);
        let body = http_body_util::StreamBody::new(frames);
        BodyStream::unlimited(http_body_util::BodyExt::boxed_unsync(body))
    }

    /// Declares the body's length, sent as `Content-Length` when this is a
    /// request body (otherwise it is sent chunked). A stream that then ends
    /// early or runs long fails its request as
    /// [`ErrorKind::InvalidRequest`] saying which (never a truncated body
    /// sent as if whole).
    #[must_use]
    pub fn with_length(mut self, len: u64) -> Self {
        self.declared = Some(len);
        self
    }

    /// A stream of these chunks, e.g. in a fake or a fallback.
    pub fn from_chunks<I>(chunks: I) -> Self
    where
        I: IntoIterator<Item = Bytes>,
    {
        let chunks: Vec<Result<Bytes, std::convert::Infallible>> =
            chunks.into_iter().map(Ok).collect();
        BodyStream::from_stream(futures_util::stream::iter(chunks))
    }

    /// Sets the size limit of this body (instead of the client's
    /// `max_response_bytes`), before reading it.
    #[must_use]
    pub fn max_bytes(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Sets how long to wait for each chunk (by default the method's
    /// `timeout`); `None` waits as long as the server takes.
    #[must_use]
    pub fn idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle = idle;
        self.timer = None;
        self.waiting = false;
        self
    }

    /// The length the response declared (`Content-Length`), if any.
    pub fn declared_length(&self) -> Option<u64> {
        self.declared
    }

    /// Bytes handed over so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Ends the stream with `error`.
    fn fail(&mut self, error: Error) -> Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        self.timer = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.read == 0
            && let Some(declared) = this.declared
            && declared > this.limit
        {
            let limit = this.limit;
            return this.fail(too_large(&declared.to_string(), limit));
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.done = true;
                    this.timer = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    let kind = if is_timeout(&*e) {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::Body
                    };
                    return this
                        .fail(Error::new(kind, "the response body broke off").with_source(e));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(chunk) = frame.into_data() else {
                        continue; // trailers
                    };
                    if chunk.is_empty() {
                        continue;
                    }
                    let total = this.read.saturating_add(chunk.len() as u64);
                    if total > this.limit {
                        let limit = this.limit;
                        return this.fail(too_large(&format!("more than {limit}"), limit));
                    }
                    this.read = total;
                    this.waiting = false;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Pending => {
                    let Some(idle) = this.idle else {
                        return Poll::Pending;
                    };
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    if !this.waiting {
                        // An idle timeout past the clock's range is none.
                        let Some(deadline) = Instant::now().checked_add(idle) else {
                            return Poll::Pending;
                        };
                        timer.as_mut().reset(deadline);
                        this.waiting = true;
                    }
                    ready!(timer.as_mut().poll(cx));
                    let waited = humantime::format_duration(idle);
                    return this.fail(Error::new(
                        ErrorKind::Timeout,
                        format!("no data from the response body for {waited} (idle timeout)"),
                    ));
                }
            }
        }
    }
}

impl fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyStream")
            .field("read", &self.read)
            .field("limit", &self.limit)
            .field("declared", &self.declared)
            .field("idle", &self.idle)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

fn too_large(len: &str, limit: u64) -> Error {
    Error::new(
        ErrorKind::Body,
        format!(
            "the response body ({len} bytes) is larger than the limit of {limit} bytes \
             (max_response_bytes, or BodyStream::max_bytes)"
        ),
    )
    .too_large()
}

/// A [`BodyStream`] as an outgoing `http_body::Body`: `Sync` (transports
/// ask for it; the stream is only ever polled through `&mut`), its length
/// declared when known.
pub(crate) struct Outgoing {
    stream: sync_wrapper::SyncWrapper<BodyStream>,
    /// The declared length, sent as `Content-Length`: the stream is held to
    /// it, since hyper would cut a longer one short without a word.
    len: Option<u64>,
    sent: u64,
}

impl Outgoing {
    pub(crate) fn new(stream: BodyStream) -> Self {
        Outgoing {
            len: stream.declared,
            stream: sync_wrapper::SyncWrapper::new(stream),
            sent: 0,
        }
    }
}

impl http_body::Body for Outgoing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let stream = this.stream.get_mut();
        match ready!(Pin::new(stream).poll_next(cx)) {
            None => match this.len {
                Some(len) if this.sent < len => Poll::Ready(Some(Err(UploadFailed::boxed(
                    format!("it ended after {} of its declared {len} bytes", this.sent),
                )))),
                _ => Poll::Ready(None),
            },
            Some(Ok(chunk)) => {
                this.sent = this.sent.saturating_add(chunk.len() as u64);
                match this.len {
                    Some(len) if this.sent > len => Poll::Ready(Some(Err(UploadFailed::boxed(
                        format!("it ran past its declared length of {len} bytes"),
                    )))),
                    _ => Poll::Ready(Some(Ok(http_body::Frame::data(chunk)))),
                }
            }
            Some(Err(e)) => Poll::Ready(Some(Err(UploadFailed::from_item(&e)))),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // (`SyncWrapper` gives no shared access: the length was read when
        // the body was made.)
        match self.len {
            Some(len) => http_body::SizeHint::with_exact(len),
            None => http_body::SizeHint::default(),
        }
    }
}

/// Why a streamed request body failed, marked so that the transport's
/// error says the caller's stream failed, not the service.
#[derive(Debug)]
pub(crate) struct UploadFailed(String);

impl UploadFailed {
    fn boxed(what: String) -> BoxError {
        BoxError::from(UploadFailed(what))
    }

    /// From the stream's error item: its own error when there is one (a
    /// caller's stream), or what went wrong reading it (a proxied download
    /// that stalled).
    fn from_item(e: &Error) -> BoxError {
        let what = match std::error::Error::source(e) {
            Some(cause) => cause.to_string(),
            None => e.to_string(),
        };
        UploadFailed::boxed(what)
    }
}

impl fmt::Display for UploadFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the streamed request body failed: {}", self.0)
    }
}

impl std::error::Error for UploadFailed {}

/// When a transport error comes from a streamed request body that failed,
/// the error to return: [`ErrorKind::InvalidRequest`] (the caller's
/// stream, not the service, failed; part of the body may have been sent),
/// saying so.
pub(crate) fn upload_failure(e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(failed) = e.downcast_ref::<UploadFailed>() {
            return Some(Error::invalid_request(failed.to_string()));
        }
        cause = e.source();
    }
    None
}

/// Whether a body error is a timeout of the transport's own.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(e) = e.downcast_ref::<reqwest::Error>()
            && e.is_timeout()
        {
            return true;
        }
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = e.source();
    }
    false
}
