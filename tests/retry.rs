//! Deadlines, retries, Retry-After and the retry budget, against wiremock.
//!
//! Real time with short durations (wiremock and tokio's paused clock do not
//! mix); every bound on elapsed time has a generous margin, and what is
//! asserted exactly is what the server received.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use courier::{Error, ErrorKind, Inspect, client};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::{fail_then_ok, received};

#[client(name = "orders")]
#[retry(backoff = "10ms..20ms")]
#[circuit_breaker(disabled)]
trait Orders {
    #[get("/orders/{id}")]
    async fn get(&self, id: u64) -> Result<String, Error>;

    #[get("/slow")]
    #[timeout("300ms")]
    #[retry(attempt_timeout = "100ms", max_attempts = 10, backoff = "10ms..20ms")]
    async fn slow(&self) -> Result<String, Error>;

    #[get("/hung")]
    #[timeout("300ms")]
    async fn hung(&self) -> Result<String, Error>;

    #[post("/orders")]
    async fn create(&self, #[body] order: &str) -> Result<String, Error>;

    #[post("/orders/{id}/confirm")]
    #[idempotent]
    async fn confirm(&self, id: u64) -> Result<String, Error>;

    #[get("/limited")]
    #[timeout("300ms")]
    async fn limited_short(&self) -> Result<String, Error>;

    #[get("/limited")]
    #[timeout("3s")]
    async fn limited_long(&self) -> Result<String, Error>;

    #[get("/orders/{id}")]
    #[retry(disabled)]
    async fn get_once(&self, id: u64) -> Result<String, Error>;
}

fn client(server: &MockServer) -> OrdersClient {
    support::builder::<OrdersClient>()
        .base_url(server.uri())
        .build()
        .expect("valid")
}

#[tokio::test]
async fn a_get_recovers_from_two_503s_with_exactly_three_requests() {
    let server = MockServer::start().await;
    fail_then_ok(&server, "/orders/1", 503, 2).await;
    let answer = client(&server).get(1).await;
    assert_eq!(answer.ok().as_deref(), Some("ok"));
    assert_eq!(received(&server).await, 3);
}

#[tokio::test]
async fn a_get_gives_up_after_max_attempts_with_the_last_error() {
    let server = MockServer::start().await;
    fail_then_ok(&server, "/orders/1", 503, 100).await;
    let err = client(&server).get(1).await.expect_err("always 503");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(err.attempts(), 3);
    assert!(!err.is_budget_exhausted());
    assert_eq!(received(&server).await, 3);
}

#[tokio::test]
async fn statuses_outside_the_retry_list_are_not_retried() {
    // Why: a 500 or a 404 is an answer, not a passing condition.
    for status in [500, 404, 400] {
        let server = MockServer::start().await;
        fail_then_ok(&server, "/orders/1", status, 100).await;
        let err = client(&server).get(1).await.expect_err("fails");
        assert_eq!(err.attempts(), 1, "{status}");
        assert_eq!(received(&server).await, 1, "{status}");
    }
}

#[tokio::test]
async fn a_post_is_sent_once_on_503_unless_marked_idempotent() {
    // Why: replaying a POST that reached the service can duplicate a write.
    let server = MockServer::start().await;
    fail_then_ok(&server, "/orders", 503, 100).await;
    let err = client(&server).create("o-1").await.expect_err("503");
    assert_eq!(err.attempts(), 1);
    assert_eq!(received(&server).await, 1);

    let server = MockServer::start().await;
    fail_then_ok(&server, "/orders/7/confirm", 503, 2).await;
    let ok = client(&server).confirm(7).await;
    assert_eq!(ok.ok().as_deref(), Some("ok"));
    assert_eq!(received(&server).await, 3, "#[idempotent] POST is retried");
}

#[tokio::test]
async fn a_post_is_retried_when_the_connection_was_refused() {
    // Nothing listens on the port: no byte of the POST was sent, so
    // retrying cannot duplicate it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let c = support::builder::<OrdersClient>()
        .base_url(format!("http://127.0.0.1:{port}"))
        .build()
        .expect("valid");
    let err = c.create("o-1").await.expect_err("nobody listens");
    assert!(err.is_connect());
    assert_eq!(err.attempts(), 3);
}

/// A cleartext HTTP/2 server (prior knowledge) on 127.0.0.1, answering each
/// request as `answer` says from its method: `None` refuses the stream
/// (`REFUSED_STREAM`), `Some((status, location))` answers with that status
/// (and `Location`), body `ok`. Its base URL.
async fn h2_server(
    answer: impl Fn(&http::Method) -> Option<(u16, Option<&'static str>)> + Send + Sync + 'static,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let Some((status, location)) = answer(request.method()) else {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    };
                    let mut head = http::Response::builder()
                        .status(status)
                        .header("content-type", "text/plain");
                    if let Some(location) = location {
                        head = head.header("location", location);
                    }
                    let head = head.body(()).unwrap_or_default();
                    if let Ok(mut body) = respond.send_response(head, false) {
                        let _ = body.send_data(bytes::Bytes::from_static(b"ok"), true);
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// An HTTP/2 server that refuses its first `refuse` streams and answers the
/// rest 200 `ok`; its base URL and the streams it saw.
async fn refusing_h2(refuse: usize) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&seen);
    let base = h2_server(move |_| {
        (counted.fetch_add(1, Ordering::SeqCst) >= refuse).then_some((200, None))
    })
    .await;
    (base, seen)
}

/// A client on the hyper transport speaking HTTP/2 with prior knowledge.
fn h2_on_hyper(base: &str) -> OrdersClient {
    // not the matrix: HTTP/2 with prior knowledge is each transport's own setting
    OrdersClient::builder()
        .base_url(base)
        .hyper_transport(courier::transport::HyperTransport::new().http2_prior_knowledge())
        .build()
        .expect("valid")
}

/// A client on a reqwest client of the caller's, speaking HTTP/2 with prior
/// knowledge, with `retry` as reqwest's own retry (`None`: reqwest's
/// default, which resends HTTP/2 refusals).
fn h2_on_reqwest(base: &str, retry: Option<reqwest::retry::Builder>) -> OrdersClient {
    // not the matrix: a reqwest client of the caller's, speaking HTTP/2
    let http = reqwest::Client::builder().http2_prior_knowledge();
    let http = match retry {
        Some(retry) => http.retry(retry),
        None => http,
    };
    let http = http.build().expect("reqwest client");
    // not the matrix: HTTP/2 with prior knowledge is each transport's own setting
    OrdersClient::builder()
        .base_url(base)
        .http_client(http)
        .build()
        .expect("valid")
}

/// A POST the service refused before processing it (HTTP/2
/// `REFUSED_STREAM`) did nothing there, so it is sent again like one whose
/// connection was refused (on the hyper transport; courier's own reqwest
/// client speaks HTTP/2 only over TLS). Through a reqwest client of the
/// caller's, which may follow redirects itself, courier cannot tell which
/// request was refused: there the refusal is a plain transport error, and
/// reqwest's own retry (on by default) is what resends it. With retry
/// disabled the refusal is the answer, and says what it was.
#[tokio::test]
async fn a_post_the_service_refused_unprocessed_is_sent_again() {
    let (base, seen) = refusing_h2(2).await;
    let on_hyper = h2_on_hyper(&base);
    assert_eq!(on_hyper.create("o-1").await.ok().as_deref(), Some("ok"));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "two refused, the third answered"
    );

    let (base, seen) = refusing_h2(1).await;
    let off = Some(reqwest::retry::never().max_retries_per_request(0));
    let err = h2_on_reqwest(&base, off)
        .create("o-1")
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert_eq!((err.attempts(), seen.load(Ordering::SeqCst)), (1, 1));
    let (base, seen) = refusing_h2(1).await;
    let resent = h2_on_reqwest(&base, None).create("o-1").await;
    assert_eq!(resent.ok().as_deref(), Some("ok"));
    assert_eq!(seen.load(Ordering::SeqCst), 2, "reqwest resent it");

    let (base, seen) = refusing_h2(1).await;
    let once = h2_on_hyper(&base);
    let err = once.get_once(1).await.expect_err("refused, not retried");
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(
        err.to_string().contains("did not process the request"),
        "{err}"
    );
    assert_eq!((err.attempts(), seen.load(Ordering::SeqCst)), (1, 1));
}

/// An HTTP/2 server for post/redirect/get: `POST /orders` makes an order
/// and answers 303 to `/orders/1`; the first `refuse` requests that follow
/// are refused (`REFUSED_STREAM`), the rest answered 200 `ok`. Its base URL
/// and how many orders it made.
async fn prg_h2(refuse: usize) -> (String, Arc<AtomicUsize>) {
    let made = Arc::new(AtomicUsize::new(0));
    let refused = AtomicUsize::new(0);
    let counted = Arc::clone(&made);
    let base = h2_server(move |method| {
        if *method == http::Method::POST {
            counted.fetch_add(1, Ordering::SeqCst);
            Some((303, Some("/orders/1")))
        } else {
            (refused.fetch_add(1, Ordering::SeqCst) >= refuse).then_some((200, None))
        }
    })
    .await;
    (base, made)
}

/// Post/redirect/get: the POST was processed (it made the order and
/// answered 303); only the GET that follows the 303 was refused unprocessed.
/// Sending the call again replays the POST from the start, and makes a
/// second order: "unprocessed" is true of the last hop only, not of the
/// call, so it must not make a non-idempotent call retryable once a hop
/// was answered.
#[tokio::test]
async fn a_post_answered_303_is_not_sent_again_when_the_get_after_it_is_refused() {
    let (base, made) = prg_h2(1).await;
    let on_hyper = h2_on_hyper(&base);
    let _ = on_hyper.create("o-1").await;
    let on_hyper_made = made.load(Ordering::SeqCst);

    let (base, made) = prg_h2(1).await;
    let off = Some(reqwest::retry::never().max_retries_per_request(0));
    let on_reqwest = h2_on_reqwest(&base, off);
    let _ = on_reqwest.create("o-1").await;
    let on_reqwest_made = made.load(Ordering::SeqCst);
    assert_eq!(
        (on_hyper_made, on_reqwest_made),
        (1, 1),
        "orders made (hyper transport, reqwest)"
    );
}

/// The same with a connection refused: a POST answered 303, whose redirect
/// (followed anywhere) leads to where nothing listens, is not sent again:
/// the connect failure is the second request's, the POST was answered.
#[tokio::test]
async fn a_post_answered_303_is_not_sent_again_when_the_redirect_cannot_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/orders"))
        .respond_with(
            ResponseTemplate::new(303)
                .insert_header("location", format!("http://127.0.0.1:{port}/orders/1")),
        )
        .mount(&server)
        .await;
    let c = support::builder::<OrdersClient>()
        .base_url(server.uri())
        .redirects(courier::Redirects::any(3))
        .build()
        .expect("valid");
    let err = c.create("o-1").await.expect_err("nobody listens there");
    assert!(err.is_connect(), "{err}");
    assert_eq!(err.attempts(), 1);
    assert_eq!(received(&server).await, 1, "the POST was sent once");
}

#[tokio::test]
async fn a_hung_dependency_times_out_within_the_deadline_with_retries_in_between() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&server)
        .await;
    let start = Instant::now();
    let err = client(&server).slow().await.expect_err("hung");
    let elapsed = start.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(600),
        "{elapsed:?}: over the 300ms timeout"
    );
    // 100ms attempts with short back-off: two or three fit in 300ms.
    let sent = received(&server).await;
    assert!((2..=3).contains(&sent), "{sent} attempts");
    assert_eq!(err.attempts() as usize, sent);
}

#[tokio::test]
async fn the_deadline_also_cuts_a_single_slow_attempt_and_its_body() {
    let server = MockServer::start().await;
    Mock::given(path("/hung"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&server)
        .await;
    let start = Instant::now();
    let err = client(&server).hung().await.expect_err("hung");
    assert!(err.is_timeout());
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("300ms"), "{err}");
    assert!(start.elapsed() < Duration::from_millis(600));
    assert_eq!(received(&server).await, 1, "no time left to retry");
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_fails_at_once() {
    let server = MockServer::start().await;
    Mock::given(path("/limited"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .mount(&server)
        .await;
    let start = Instant::now();
    let err = client(&server).limited_short().await.expect_err("429");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(429));
    assert!(!err.is_timeout(), "ends with the 429, not a timeout");
    assert!(start.elapsed() < Duration::from_millis(250), "did not wait");
    assert_eq!(received(&server).await, 1);
}

/// The defect: `Retry-After: 9999999999999999999` on a 503 panicked the
/// caller's task ("overflow when adding duration to instant"). Whatever a
/// server sends, the call ends with its status, at once.
#[tokio::test]
async fn an_absurd_retry_after_ends_the_call_without_a_panic() {
    for value in [
        "9999999999999999999",
        "18446744073709551615",
        "99999999999999999999999",
    ] {
        let server = MockServer::start().await;
        Mock::given(path("/limited"))
            .respond_with(ResponseTemplate::new(503).insert_header("retry-after", value))
            .mount(&server)
            .await;
        let c = client(&server);
        let start = Instant::now();
        // On its own task, so a panic would show as a JoinError.
        let answer = tokio::spawn(async move { c.limited_long().await }).await;
        let err = answer.expect("no panic").expect_err("503");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(503), "{value}");
        assert!(start.elapsed() < Duration::from_millis(500), "did not wait");
        assert_eq!(received(&server).await, 1, "{value}");
    }
}

#[tokio::test]
async fn retry_after_within_the_deadline_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(path("/limited"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/limited"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .with_priority(2)
        .mount(&server)
        .await;
    let start = Instant::now();
    let ok = client(&server).limited_long().await;
    let elapsed = start.elapsed();
    assert_eq!(ok.ok().as_deref(), Some("ok"));
    assert!(elapsed >= Duration::from_millis(950), "waited {elapsed:?}");
    assert!(elapsed < Duration::from_millis(2500), "waited {elapsed:?}");
    assert_eq!(received(&server).await, 2);
}

#[tokio::test]
async fn retry_disabled_on_a_method_sends_once() {
    let server = MockServer::start().await;
    fail_then_ok(&server, "/orders/1", 503, 100).await;
    let err = client(&server).get_once(1).await.expect_err("503");
    assert_eq!(err.attempts(), 1);
    assert_eq!(received(&server).await, 1);
}

#[tokio::test]
async fn a_sustained_outage_stays_within_the_retry_budget() {
    // Why: without a budget, 100 calls × 3 attempts = 300 requests hit a
    // service that is already down. With 20 % and a reserve of 1/s × 10 s,
    // at most 100 × 1.2 + 10 may.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let c = support::builder::<OrdersClient>()
        .base_url(server.uri())
        .retry_budget(0.2, 1)
        .build()
        .expect("valid");
    let calls = 100;
    let mut exhausted = 0;
    for wave in 0..10 {
        let results =
            futures::future::join_all((0..calls / 10).map(|i| c.get(wave * 10 + i))).await;
        exhausted += results
            .iter()
            .filter(|r| r.as_ref().err().is_some_and(Error::is_budget_exhausted))
            .count();
    }
    let sent = received(&server).await as u64;
    assert!(sent >= calls, "every call is tried once: {sent}");
    assert!(
        sent <= calls * 12 / 10 + 10,
        "{sent} requests for {calls} calls"
    );
    assert!(exhausted > 0, "some calls stopped on the budget");
    assert_eq!(c.retry_budget_remaining(), Some(0));
}

#[tokio::test]
async fn without_a_budget_every_retry_is_made() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let c = support::builder::<OrdersClient>()
        .base_url(server.uri())
        .no_retry_budget()
        .build()
        .expect("valid");
    let results = futures::future::join_all((0..20).map(|i| c.get(i))).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().err().is_some_and(|e| e.attempts() == 3))
    );
    assert_eq!(received(&server).await, 60);
}

/// The deadline and wakers whose clones live elsewhere (found in review of
/// 841eb0c). The watch kept only the addresses of the last poll's waker,
/// the slab a clone of it. A waker's clone need not live at the borrowed
/// waker's address (the `RawWakerVTable` contract lets `clone` make a new
/// `RawWaker`), so a later, different waker could come at that address and
/// be taken for the kept one: the task polling then was never woken at the
/// limit, and its timeout never fired. The watch now compares the poll's
/// waker with the clone it keeps (`Waker::will_wake`).
#[allow(unsafe_code)] // a waker whose clone is not at the borrowed one's address
mod foreign_wakers {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    use std::time::Duration;

    use courier::{Error, client};

    use super::support;

    #[client(name = "hung")]
    #[retry(disabled)]
    #[circuit_breaker(disabled)]
    trait Hung {
        #[get("/hung")]
        #[timeout("300ms")]
        async fn hung(&self) -> Result<String, Error>;
    }

    /// The borrowed waker's data: a slot naming the flag its wake sets (an
    /// executor's per-poll slot, reused).
    type Holder = Mutex<Arc<AtomicBool>>;

    static BORROWED: RawWakerVTable =
        RawWakerVTable::new(borrowed_clone, borrowed_wake, borrowed_wake, noop);
    static OWNED: RawWakerVTable =
        RawWakerVTable::new(owned_clone, owned_wake, owned_wake_by_ref, owned_drop);

    fn flag_of(data: *const ()) -> Arc<AtomicBool> {
        // SAFETY: `data` is the test's `Holder`, alive for the whole test.
        let holder = unsafe { &*data.cast::<Holder>() };
        holder.lock().map(|f| Arc::clone(&f)).unwrap_or_default()
    }

    unsafe fn borrowed_clone(data: *const ()) -> RawWaker {
        RawWaker::new(Arc::into_raw(flag_of(data)).cast(), &OWNED)
    }

    unsafe fn borrowed_wake(data: *const ()) {
        flag_of(data).store(true, Ordering::SeqCst);
    }

    unsafe fn noop(_: *const ()) {}

    unsafe fn owned_clone(data: *const ()) -> RawWaker {
        // SAFETY: `data` came from `Arc::into_raw`.
        unsafe { Arc::increment_strong_count(data.cast::<AtomicBool>()) };
        RawWaker::new(data, &OWNED)
    }

    unsafe fn owned_wake(data: *const ()) {
        // SAFETY: `data` came from `Arc::into_raw`; this consumes that count.
        unsafe { Arc::from_raw(data.cast::<AtomicBool>()) }.store(true, Ordering::SeqCst);
    }

    unsafe fn owned_wake_by_ref(data: *const ()) {
        // SAFETY: `data` came from `Arc::into_raw` and is alive.
        unsafe { &*data.cast::<AtomicBool>() }.store(true, Ordering::SeqCst);
    }

    unsafe fn owned_drop(data: *const ()) {
        // SAFETY: `data` came from `Arc::into_raw`; this consumes that count.
        drop(unsafe { Arc::from_raw(data.cast::<AtomicBool>()) });
    }

    fn borrowed(holder: &Holder) -> Waker {
        let data: *const Holder = holder;
        // SAFETY: the vtable's functions keep the contract for this data.
        unsafe { Waker::from_raw(RawWaker::new(data.cast(), &BORROWED)) }
    }

    /// Polled first by one task's waker, then by another's at the same address
    /// (the first waker gone): the one that polled last must be woken at the
    /// call's limit, so that its timeout fires.
    #[tokio::test]
    async fn the_waker_of_the_last_poll_is_woken_at_the_limit() {
        // A service that takes the request and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client = support::builder::<HungClient>()
            .base_url(format!("http://{addr}"))
            .build()
            .expect("valid");
        let mut call = pin!(client.hung());

        let first = Arc::new(AtomicBool::new(false));
        let holder: Box<Holder> = Box::new(Mutex::new(Arc::clone(&first)));
        // The first task polls until the request is out and nothing more wakes it.
        for _ in 0..20 {
            first.store(false, Ordering::SeqCst);
            let waker = borrowed(&holder);
            let polled = call.as_mut().poll(&mut Context::from_waker(&waker));
            assert!(polled.is_pending(), "no answer yet");
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !first.load(Ordering::SeqCst) {
                break;
            }
        }
        // Another task, whose waker is given at the same address, polls it.
        let second = Arc::new(AtomicBool::new(false));
        if let Ok(mut flag) = holder.lock() {
            *flag = Arc::clone(&second);
        }
        let waker = borrowed(&holder);
        let polled = call.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending(), "no answer yet");

        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            second.load(Ordering::SeqCst),
            "the task polling now was not woken at the 300 ms limit (the first: {})",
            first.load(Ordering::SeqCst)
        );
        let waker = borrowed(&holder);
        let polled = call.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(
            matches!(polled, Poll::Ready(Err(ref e)) if e.is_timeout()),
            "{polled:?}"
        );
    }
}
