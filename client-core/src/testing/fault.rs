//! [`Fault`]: what the server does with one request.

use std::time::Duration;

use bytes::Bytes;

/// What the [`FaultServer`](super::FaultServer) does with one request: a
/// response (well-formed or damaged), or a way of not giving one.
///
/// A fault is built from a constructor and modifiers:
///
/// - **a response**: [`ok`](Self::ok), [`json`](Self::json) or
///   [`status`](Self::status), shaped by [`body`](Self::body),
///   [`content_type`](Self::content_type), [`header`](Self::header),
///   [`retry_after`](Self::retry_after), [`chunked`](Self::chunked),
///   [`oversized_body`](Self::oversized_body) and
///   [`endless_body`](Self::endless_body);
/// - **how it is delivered**, which damages it:
///   [`reset_after_headers`](Self::reset_after_headers),
///   [`trickle_headers`](Self::trickle_headers),
///   [`trickle_body`](Self::trickle_body) (the last of these wins);
/// - **no response at all**: [`black_hole`](Self::black_hole),
///   [`refuse`](Self::refuse), [`close`](Self::close),
///   [`reset_before_headers`](Self::reset_before_headers),
///   [`garbage`](Self::garbage);
/// - **when**: [`delay`](Self::delay) waits before any of the above.
///
/// ```
/// use std::time::Duration;
/// use courier::testing::Fault;
///
/// let busy = Fault::status(503).retry_after("1").body("overloaded");
/// let slow = Fault::json(r#"{"id":7}"#).delay(Duration::from_millis(200));
/// let broken = Fault::ok("x".repeat(1000)).reset_after_headers();
/// let huge = Fault::status(503).oversized_body(32 << 20).chunked();
/// let hung = Fault::black_hole();
/// # let _ = (busy, slow, broken, huge, hung);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a fault does nothing until it is given to a FaultServer"]
pub struct Fault {
    pub(super) reply: Reply,
    pub(super) delivery: Delivery,
    pub(super) delay: Duration,
}

/// The response a fault sends (or damages).
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Body,
    pub(super) chunked: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Body {
    /// These bytes.
    Bytes(Bytes),
    /// This many filler bytes, never held in memory at once.
    Filler(u64),
    /// Filler bytes, chunked, forever.
    Endless,
}

/// How the response goes out, or what happens instead.
#[derive(Debug, Clone)]
pub(super) enum Delivery {
    Answer,
    BlackHole,
    Refuse,
    Close,
    ResetBeforeHeaders,
    ResetAfterHeaders,
    TrickleHeaders(Duration),
    TrickleBody(Duration),
    Garbage(Bytes),
}

// ===== impl Fault: responses =====

impl Fault {
    fn answer(status: u16) -> Self {
        Fault {
            reply: Reply {
                status,
                headers: Vec::new(),
                body: Body::Bytes(Bytes::new()),
                chunked: false,
            },
            delivery: Delivery::Answer,
            delay: Duration::ZERO,
        }
    }

    fn without_reply(delivery: Delivery) -> Self {
        Fault {
            delivery,
            ..Fault::answer(200)
        }
    }

    /// `200 OK` with `body` as `text/plain; charset=utf-8`.
    ///
    /// ```
    /// # use courier::testing::Fault;
    /// let fine = Fault::ok("fine");
    /// # let _ = fine;
    /// ```
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Fault::answer(200)
            .content_type("text/plain; charset=utf-8")
            .body(body)
    }

    /// `200 OK` with `body` as `application/json` (sent as given, not
    /// checked).
    ///
    /// ```
    /// # use courier::testing::Fault;
    /// let user = Fault::json(r#"{"id":7,"name":"Ada"}"#);
    /// # let _ = user;
    /// ```
    pub fn json(body: impl Into<Bytes>) -> Self {
        Fault::answer(200)
            .content_type("application/json")
            .body(body)
    }

    /// A response with this status code and an empty body. Any code from 100
    /// to 999 is sent as given; 1xx, 204 and 304 are sent without a body
    /// and without framing headers, as HTTP requires.
    ///
    /// ```
    /// # use courier::testing::Fault;
    /// let unavailable = Fault::status(503);
    /// let missing = Fault::status(404).body("no such user");
    /// # let _ = (unavailable, missing);
    /// ```
    pub fn status(code: u16) -> Self {
        Fault::answer(code)
    }

    /// Sets the body, sent with a `Content-Length` (or chunked, after
    /// [`chunked`](Self::chunked)).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.reply.body = Body::Bytes(body.into());
        self
    }

    /// Sets the `Content-Type` header, replacing any earlier one.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.reply
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self.reply
            .headers
            .push(("content-type".to_owned(), content_type.into()));
        self
    }

    /// Adds a response header, sent as given (nothing is checked: a broken
    /// header is a fault too). A `content-length` or `transfer-encoding`
    /// set here replaces the framing the server would send, and the body
    /// then goes out as given: a way to lie about its length.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.reply.headers.push((name.into(), value.into()));
        self
    }

    /// Adds a `Retry-After` header: seconds (`"2"`) or an HTTP date.
    ///
    /// ```
    /// # use courier::testing::Fault;
    /// let throttled = Fault::status(429).retry_after("1");
    /// # let _ = throttled;
    /// ```
    pub fn retry_after(self, value: impl Into<String>) -> Self {
        self.header("retry-after", value)
    }

    /// Sends the body with `Transfer-Encoding: chunked` instead of a
    /// `Content-Length`, so the client learns its size only by reading it.
    pub fn chunked(mut self) -> Self {
        self.reply.chunked = true;
        self
    }

    /// Replaces the body with `len` filler bytes (`x`), streamed without
    /// being held in memory: a body as large as a test needs to pass a
    /// client's size limit. Declared with a `Content-Length` of `len`, or
    /// streamed after [`chunked`](Self::chunked).
    ///
    /// ```
    /// # use courier::testing::Fault;
    /// let declared = Fault::ok("").oversized_body(64 << 20);
    /// let streamed = Fault::ok("").oversized_body(64 << 20).chunked();
    /// # let _ = (declared, streamed);
    /// ```
    pub fn oversized_body(mut self, len: u64) -> Self {
        self.reply.body = Body::Filler(len);
        self
    }

    /// Replaces the body with a chunked stream of filler that never ends;
    /// the server writes as fast as the client reads, until it hangs up.
    pub fn endless_body(mut self) -> Self {
        self.reply.body = Body::Endless;
        self.reply.chunked = true;
        self
    }
}

// ===== impl Fault: damaged deliveries =====

impl Fault {
    /// Sends the status line, the headers (declaring the whole body) and
    /// the first half of the body, then resets the connection (RST). An
    /// empty body is first replaced by 1 KiB of filler, so that there is
    /// something to break off. The client has a response, then a body
    /// that fails while being read.
    pub fn reset_after_headers(mut self) -> Self {
        self.delivery = Delivery::ResetAfterHeaders;
        self
    }

    /// Sends the status line and headers one byte every `every`, then the
    /// body at once: a service that is slow to answer at all.
    pub fn trickle_headers(mut self, every: Duration) -> Self {
        self.delivery = Delivery::TrickleHeaders(every);
        self
    }

    /// Sends the status line and headers at once, then the body (with its
    /// chunk framing, if chunked) one byte every `every`: a response that
    /// starts well and takes forever to finish.
    pub fn trickle_body(mut self, every: Duration) -> Self {
        self.delivery = Delivery::TrickleBody(every);
        self
    }

    /// Waits `by` after the request is read, then does the rest (for a
    /// [`refuse`](Self::refuse), after the connection is accepted). Delays
    /// add up.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use courier::testing::Fault;
    /// let late = Fault::ok("late").delay(Duration::from_secs(2));
    /// # let _ = late;
    /// ```
    pub fn delay(mut self, by: Duration) -> Self {
        self.delay = self.delay.saturating_add(by);
        self
    }
}

// ===== impl Fault: no response =====

impl Fault {
    /// Reads the request and never answers, keeping the connection open
    /// until the client hangs up (or the server is dropped): a hung
    /// dependency. Only a timeout gets the client out.
    pub fn black_hole() -> Self {
        Fault::without_reply(Delivery::BlackHole)
    }

    /// Resets the connection (RST, `SO_LINGER` 0) as soon as it is
    /// accepted, before reading or sending any byte.
    ///
    /// The server takes a refusal from its own plan (not a path's) when a
    /// connection opens, so each refused connection uses up one `refuse`
    /// of a script, and the refused request is not counted. The client's
    /// TCP connect has succeeded by then, so it sees a transport error (the
    /// request may have left), not a connect error; for a port that refuses
    /// connections outright, see
    /// [`FaultServer::refusing`](super::FaultServer::refusing).
    ///
    /// Reached for a request instead (from a path's plan, or on a
    /// connection kept alive from before), it resets the connection after
    /// reading the request, as [`reset_before_headers`](Self::reset_before_headers).
    pub fn refuse() -> Self {
        Fault::without_reply(Delivery::Refuse)
    }

    /// Reads the request, then closes the connection cleanly (FIN) without
    /// a byte of response: "empty reply from server".
    pub fn close() -> Self {
        Fault::without_reply(Delivery::Close)
    }

    /// Reads the request, then resets the connection (RST) before sending
    /// any byte of response.
    pub fn reset_before_headers() -> Self {
        Fault::without_reply(Delivery::ResetBeforeHeaders)
    }

    /// Reads the request, sends `bytes` instead of an HTTP response, then
    /// closes the connection.
    ///
    /// ```
    /// # use courier::testing::Fault;
    /// let not_http = Fault::garbage("SSH-2.0-OpenSSH_9.6\r\n");
    /// # let _ = not_http;
    /// ```
    pub fn garbage(bytes: impl Into<Bytes>) -> Self {
        Fault::without_reply(Delivery::Garbage(bytes.into()))
    }

    /// True for a fault taken when a connection opens: a refusal.
    pub(super) fn is_refusal(&self) -> bool {
        matches!(self.delivery, Delivery::Refuse)
    }
}

impl Default for Fault {
    /// `200 OK` with an empty body: what a fresh server answers.
    fn default() -> Self {
        Fault::status(200)
    }
}
