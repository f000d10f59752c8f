//! courier's overhead benchmark: what the resilience costs next to the
//! network, in throughput and in the client's CPU time per call.
//!
//! `cargo bench --bench overhead` (about 4.5 minutes), or with
//! `COURIER_BENCH_QUICK=1` (a few seconds; CI runs it so this never rots, and
//! does not judge the numbers).
//!
//! An in-process hyper server on 127.0.0.1, on its own runtime thread,
//! answers `GET /users/{id}` with a ~100-byte JSON body and echoes
//! `POST /users`. Every stack makes the same typed call (GET, decode into
//! `User`):
//!
//! 0. raw hyper-util client (the floor),
//! 1. raw reqwest (the baseline),
//! 2. courier with every default policy on (deadline, retry with budget,
//!    circuit breaker),
//! 3. courier with everything on (plus a bulkhead and a fallback),
//! 4. reqwest-middleware + reqwest-retry (what users would glue together),
//! 5. courier with every default policy on, on the lean transport
//!    (`hyper_transport`: hyper-util's pooled client without reqwest).
//!
//! The clients run on two tokio runtime flavours, each with its own set of
//! the six stacks (a pooled connection belongs to the runtime that opened
//! it): a current-thread runtime driven by the main thread, and a
//! multi-thread runtime with one worker thread, which is how most services
//! run tokio (its scheduler differs: local and injection queues, a LIFO
//! slot, a worker that parks and is unparked). Slices are interleaved round
//! by round (flavour, then concurrency, then stack: A B C … A B C …) at
//! concurrency 1 and 64, so machine noise hits all alike.
//!
//! For every slice the report takes:
//!
//! - requests/s (median and min–max over the rounds), latency percentiles
//!   over all requests, and throughput ratios to raw reqwest and raw hyper;
//! - **client CPU time per call**: user + system time of the client thread
//!   (`getrusage(RUSAGE_THREAD)`), read at the start and the end of the
//!   slice, divided by the calls made in it: median and min–max over the
//!   rounds, the system part's median, and the ratio to raw reqwest taken
//!   round by round (median and min–max; the two slices of a ratio ran
//!   seconds apart, so a slow spell of the machine mostly cancels). CPU
//!   time is what a service pays for the client; requests/s also measure
//!   the server and the scheduler. The kernel samples the user/system split
//!   at the tick; their sum is exact. On a shared VM, whole rounds can cost
//!   3–4× more for every stack (how idle vCPUs wake, other tenants), hence
//!   medians over interleaved rounds.
//!
//! How the client thread is measured, and why it is the whole client: a
//! slice is one task, spawned on the runtime under test, that reads
//! `RUSAGE_THREAD` of the thread it runs on, spawns the calling tasks, joins
//! them, and reads `RUSAGE_THREAD` again. On the current-thread runtime that
//! thread is the one in `block_on`, which runs every task of the runtime,
//! its I/O driver and its timers. On the multi-thread runtime it is the one
//! worker: `block_on` only waits for the slice task (the main thread is not
//! counted, and does no client work), and with a single worker every task
//! (hyper's connection tasks included), the I/O driver and the timers run
//! there. Each calling task checks that it ran on the measured thread, and
//! the slice panics if not. The server's thread is never counted. (The
//! alternative, `RUSAGE_SELF` minus the server thread's own
//! `RUSAGE_THREAD`, would also count the main thread and any blocking-pool
//! thread, and needs the server to read its usage at the same instants.)
//! Linux only; elsewhere the CPU columns read "n/a".
//!
//! Then, on the current-thread runtime, without I/O: the circuit breaker's
//! closed-state admit + record and its open-state rejection (ns/call), the
//! whole policy pipeline around an attempt that answers at once, the same
//! for a 1-method and a 50-method trait with 200 other clients alive, and
//! allocations per call (a counting global allocator, counting only on the
//! client thread).
//!
//! The pipeline lines use `courier::__private` (hidden, unstable API) to run
//! a method's policies around a closure; nothing else here does.
//!
//! Knobs: `COURIER_BENCH_ROUNDS=<n>`, `COURIER_BENCH_SLICE_MS=<ms>`,
//! `COURIER_BENCH_STACKS=1,2` (ratios need 0 and 1),
//! `COURIER_BENCH_CONCURRENCY=1,64`, `COURIER_BENCH_FLAVOR=current,multi`.
//! The profile mode (`COURIER_BENCH_STACK`, see `profile_one`) makes a fixed
//! number of calls for callgrind or strace.

#![allow(unsafe_code)] // the counting allocator and `getrusage` below
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::__private::CircuitBreaker;
use courier::__private::ClientSpec;
use courier::policy::CircuitPolicy;
use courier::policy::classify::Outcome;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};

// ===== allocation counting =====

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds GlobalAlloc's contract; the bookkeeping only touches `const`-
// initialised thread-local `Cell`s, which never allocate or re-enter the
// allocator (and `try_with` does not panic during thread teardown).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while `f` runs.
async fn allocations<F: Future>(f: F) -> u64 {
    ALLOCS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f.await;
    COUNTING.with(|on| on.set(false));
    ALLOCS.with(Cell::get)
}

// ===== the server =====

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
    active: bool,
    team: String,
}

fn user_json(id: &str) -> String {
    format!(
        r#"{{"id":{id},"name":"user {id}","email":"user{id}@example.com","active":true,"team":"payments"}}"#
    )
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let json = |status: StatusCode, body: Bytes| {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    };
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET
        && let Some(id) = path.strip_prefix("/users/")
    {
        return json(StatusCode::OK, Bytes::from(user_json(id)));
    }
    if req.method() == Method::POST && path == "/users" {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        return json(StatusCode::OK, body.unwrap_or_default());
    }
    json(StatusCode::NOT_FOUND, Bytes::new())
}

fn start_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("address");
    std::thread::Builder::new()
        .name("bench-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service_fn(handle))
                            .await;
                    });
                }
            });
        })
        .expect("server thread");
    addr
}

// ===== the stacks =====

#[courier::client(name = "bench")]
trait Bench {
    #[get("/users/{id}")]
    async fn get(&self, id: u64) -> Result<User, courier::Error>;

    #[post("/users")]
    async fn create(&self, #[body] user: &User) -> Result<User, courier::Error>;
}

/// The fallback of the "everything on" stack (never used: the server is up).
struct Placeholder;

#[courier::async_trait]
impl Bench for Placeholder {
    async fn get(&self, id: u64) -> Result<User, courier::Error> {
        Ok(User {
            id,
            name: String::new(),
            email: String::new(),
            active: false,
            team: String::new(),
        })
    }
    async fn create(&self, user: &User) -> Result<User, courier::Error> {
        Ok(user.clone())
    }
}

#[allow(clippy::large_enum_variant)] // six values, made once
enum Stack {
    Hyper(HyperClient<HttpConnector, Empty<Bytes>>, String),
    Reqwest(reqwest::Client, String),
    Courier(BenchClient),
    CourierAll(BenchClient),
    Middleware(reqwest_middleware::ClientWithMiddleware, String),
    CourierHyper(BenchClient),
}

impl Stack {
    fn name(&self) -> &'static str {
        match self {
            Stack::Hyper(..) => "raw hyper-util",
            Stack::Reqwest(..) => "raw reqwest",
            Stack::Courier(_) => "courier, default policies",
            Stack::CourierAll(_) => "courier, everything on",
            Stack::Middleware(..) => "reqwest-middleware + retry",
            Stack::CourierHyper(_) => "courier on hyper-util, default policies",
        }
    }

    /// One typed call; `false` on any failure.
    async fn get(&self, id: u64) -> bool {
        match self {
            Stack::Hyper(client, base) => {
                let Ok(uri) = format!("{base}/users/{id}").parse::<hyper::Uri>() else {
                    return false;
                };
                let Ok(resp) = client.get(uri).await else {
                    return false;
                };
                if !resp.status().is_success() {
                    return false;
                }
                let Ok(body) = resp.into_body().collect().await else {
                    return false;
                };
                serde_json::from_slice::<User>(&body.to_bytes()).is_ok()
            }
            Stack::Reqwest(client, base) => {
                decode(client.get(format!("{base}/users/{id}")).send().await.ok()).await
            }
            Stack::Courier(client) | Stack::CourierAll(client) | Stack::CourierHyper(client) => {
                client.get(id).await.is_ok()
            }
            Stack::Middleware(client, base) => {
                decode(client.get(format!("{base}/users/{id}")).send().await.ok()).await
            }
        }
    }
}

/// What a reqwest user writes after `send()`: check the status, read,
/// decode.
async fn decode(resp: Option<reqwest::Response>) -> bool {
    let Some(resp) = resp.filter(|r| r.status().is_success()) else {
        return false;
    };
    let Ok(body) = resp.bytes().await else {
        return false;
    };
    serde_json::from_slice::<User>(&body).is_ok()
}

fn stacks(addr: SocketAddr) -> Vec<Arc<Stack>> {
    let base = format!("http://{addr}");
    let reqwest_client = || reqwest::Client::builder().build().expect("reqwest client");
    let hyper = HyperClient::builder(TokioExecutor::new()).build_http();
    let courier = BenchClient::builder()
        .base_url(&base)
        .build()
        .expect("courier client");
    let everything = courier::Config::from_toml_str(
        "[clients.bench]\nbulkhead.max_concurrent = 1000\nbulkhead.max_wait = \"10ms\"",
    )
    .expect("config");
    let courier_all = BenchClient::builder()
        .base_url(&base)
        .config(&everything)
        .fallback(Placeholder)
        .build()
        .expect("courier client");
    let courier_hyper = BenchClient::builder()
        .base_url(&base)
        .hyper_transport(courier::transport::HyperTransport::new())
        .build()
        .expect("courier client");
    let retry = reqwest_retry::RetryTransientMiddleware::new_with_policy(
        reqwest_retry::policies::ExponentialBackoff::builder().build_with_max_retries(2),
    );
    let middleware = reqwest_middleware::ClientBuilder::new(reqwest_client())
        .with(retry)
        .build();
    vec![
        Arc::new(Stack::Hyper(hyper, base.clone())),
        Arc::new(Stack::Reqwest(reqwest_client(), base.clone())),
        Arc::new(Stack::Courier(courier)),
        Arc::new(Stack::CourierAll(courier_all)),
        Arc::new(Stack::Middleware(middleware, base)),
        Arc::new(Stack::CourierHyper(courier_hyper)),
    ]
}

// ===== client CPU time =====

/// CPU time a thread has used so far.
#[derive(Clone, Copy)]
struct Cpu {
    user: Duration,
    sys: Duration,
}

/// User and system CPU time of the calling thread, or `None` where
/// `RUSAGE_THREAD` does not exist.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Option<Cpu> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` is valid for writes of one `rusage`, which is all
    // `getrusage` writes; `RUSAGE_THREAD` is a valid `who` on Linux (since
    // 2.6.26) and reports the calling thread only. A return of 0 means the
    // kernel filled the whole struct, so `assume_init` reads initialised
    // plain integers; on error we return before reading it.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(Cpu {
        user: time(usage.ru_utime),
        sys: time(usage.ru_stime),
    })
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Option<Cpu> {
    None
}

// ===== what observing costs =====

/// The added cost of a GET when a tracing subscriber (the registry, spans at
/// INFO) and a metrics recorder (metrics-util's debugging recorder) are
/// installed, against none: client CPU and allocations per call, rounds
/// interleaved, 64 calls at a time (at c=1 an exchange's wake-ups, tens of
/// µs that vary by ±10 % between rounds, drown a difference of a
/// microsecond; at 64 the client's own work dominates). The metrics only count when courier is built with
/// its `metrics` feature (`cargo bench --bench overhead --features metrics`).
async fn observing_cost(addr: SocketAddr, quick: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;

    let base = format!("http://{addr}");
    let plain = BenchClient::builder()
        .base_url(&base)
        .build()
        .expect("courier client");
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let spans = Arc::new(AtomicU64::new(0));
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(SpanCount(Arc::clone(&spans))),
    );
    // Built, and called first, with the recorder and the subscriber in
    // place. Measured: when its first call came before them (in the
    // warm-up below), every later call made 0 spans and 0 duration samples
    // although both were installed; why the first call settles it was not
    // pinned down. The "Observed:" line below proves the table is not
    // hollow.
    let observed = {
        let _metrics = metrics::set_default_local_recorder(&recorder);
        let _tracing = tracing::dispatcher::set_default(&dispatch);
        let client = BenchClient::builder()
            .base_url(&base)
            .build()
            .expect("courier client");
        black_box(client.get(0).await.is_ok());
        client
    };
    let calls: u64 = if quick { 256 } else { 64 * 160 };
    let rounds = if quick { 1 } else { 7 };
    let mut cpu = [Vec::new(), Vec::new()];
    let mut allocs = [0u64, 0u64];
    for id in 0..20 {
        black_box(plain.get(id).await.is_ok());
        let _metrics = metrics::set_default_local_recorder(&recorder);
        let _tracing = tracing::dispatcher::set_default(&dispatch);
        black_box(observed.get(id).await.is_ok());
    }
    for _ in 0..rounds {
        for (i, client) in [&plain, &observed].into_iter().enumerate() {
            let _metrics = (i == 1).then(|| metrics::set_default_local_recorder(&recorder));
            let _tracing = (i == 1).then(|| tracing::dispatcher::set_default(&dispatch));
            let before = thread_cpu();
            let n = allocations(async {
                for batch in 0..calls / 64 {
                    let gets = (0..64).map(|i| client.get(batch * 64 + i));
                    for answer in futures::future::join_all(gets).await {
                        black_box(answer.is_ok());
                    }
                }
            })
            .await;
            if let (Some(a), Some(b)) = (before, thread_cpu()) {
                let used = (b.user + b.sys).saturating_sub(a.user + a.sys);
                cpu[i].push(used.as_secs_f64() * 1e6 / calls as f64);
            }
            allocs[i] += n;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (a, b) = (median(&mut cpu[0]), median(&mut cpu[1]));
    let per = |n: u64| n as f64 / (calls * rounds) as f64;
    // Proof that the observed client was observed: the spans the subscriber
    // saw and the duration samples the recorder holds, per observed call.
    let samples: usize = recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "http.client.request.duration")
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Histogram(h) => h.len(),
            _ => 0,
        })
        .sum();
    println!("\n### What observing costs (GET, 64 at a time, client thread)\n");
    println!("| | client CPU µs/call (median of {rounds}) | allocations/call |");
    println!("|---|---|---|");
    println!(
        "| no subscriber, no recorder | {a:.2} | {:.1} |",
        per(allocs[0])
    );
    println!(
        "| tracing at INFO (registry) + metrics recorder | {b:.2} ({:+.2}) | {:.1} ({:+.1}) |",
        b - a,
        per(allocs[1]),
        per(allocs[1]) - per(allocs[0])
    );
    println!(
        "\nObserved: {:.2} spans and {:.2} duration samples per observed call.",
        per(spans.load(Ordering::Relaxed)),
        per(samples as u64)
    );
}

/// Counts the spans a subscriber is asked to make.
struct SpanCount(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanCount {
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

// ===== runtimes =====

/// The tokio runtime flavour the clients run on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// `new_current_thread`, driven by the main thread's `block_on`.
    Current,
    /// `new_multi_thread` with one worker thread.
    Multi,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Current => "current-thread runtime",
            Flavor::Multi => "multi-thread runtime, 1 worker",
        }
    }

    fn parse(text: &str) -> Option<Flavor> {
        match text.trim() {
            "current" => Some(Flavor::Current),
            "multi" => Some(Flavor::Multi),
            _ => None,
        }
    }

    fn runtime(self) -> tokio::runtime::Runtime {
        let mut builder = match self {
            Flavor::Current => tokio::runtime::Builder::new_current_thread(),
            Flavor::Multi => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(1).thread_name("bench-client");
                b
            }
        };
        builder.enable_all().build().expect("client runtime")
    }
}

/// Runs `f` as a task of `rt` and waits for it. On a current-thread
/// runtime the task runs on this thread; on a multi-thread runtime with one
/// worker, on that worker (this thread only waits).
fn run_on<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(rt.spawn(f)).expect("benchmark task panicked")
}

// ===== load rounds =====

#[derive(Default)]
struct Samples {
    /// Requests per second, one entry per round.
    rps: Vec<f64>,
    /// Client CPU time (user + sys) per call in µs, one entry per round
    /// (NaN where it could not be read, so rounds stay aligned).
    cpu_us: Vec<f64>,
    /// The system part of `cpu_us`.
    sys_us: Vec<f64>,
    /// Latency of every successful request, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
}

impl Samples {
    fn add(&mut self, slice: Slice) {
        let calls = slice.latencies.len() as u64 + slice.errors;
        self.rps
            .push(slice.latencies.len() as f64 / slice.wall.as_secs_f64());
        let per_call = |d: Option<Duration>| match d {
            Some(d) if calls > 0 => d.as_secs_f64() * 1e6 / calls as f64,
            _ => f64::NAN,
        };
        self.cpu_us
            .push(per_call(slice.cpu.map(|c| c.user + c.sys)));
        self.sys_us.push(per_call(slice.cpu.map(|c| c.sys)));
        self.latencies.extend(slice.latencies);
        self.errors += slice.errors;
    }
}

/// What one slice (one stack, one concurrency, one round) measured.
struct Slice {
    /// Latency of every successful request, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
    wall: Duration,
    /// CPU time the client thread used during the slice.
    cpu: Option<Cpu>,
}

/// `concurrency` tasks calling `stack` back to back for `length`. Spawn it
/// on the runtime under test (`run_on`): the CPU time is read on the thread
/// it runs on, which must be the one running every client task.
async fn round(stack: Arc<Stack>, concurrency: usize, length: Duration) -> Slice {
    let thread = std::thread::current().id();
    let cpu_start = thread_cpu();
    let start = Instant::now();
    let end = start + length;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let stack = Arc::clone(&stack);
        tasks.spawn(async move {
            let mut on_thread = std::thread::current().id() == thread;
            let mut latencies = Vec::with_capacity(1 << 14);
            let mut errors = 0u64;
            let mut id = t as u64 * 1_000_000;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                if stack.get(id).await {
                    latencies.push(t0.elapsed().as_nanos() as u64);
                } else {
                    errors += 1;
                }
                id += 1;
            }
            on_thread &= std::thread::current().id() == thread;
            (latencies, errors, on_thread)
        });
    }
    let mut slice = Slice {
        latencies: Vec::new(),
        errors: 0,
        wall: Duration::ZERO,
        cpu: None,
    };
    while let Some(joined) = tasks.join_next().await {
        if let Ok((latencies, errors, on_thread)) = joined {
            // NOTE: the CPU time below is only the client's if every task
            // ran on this thread; one worker (or the block_on thread) ensures it.
            assert!(on_thread, "a client task ran off the measured thread");
            slice.latencies.extend(latencies);
            slice.errors += errors;
        }
    }
    slice.wall = start.elapsed();
    let cpu_end = thread_cpu();
    assert!(
        std::thread::current().id() == thread,
        "the slice moved to another thread"
    );
    slice.cpu = cpu_start.zip(cpu_end).map(|(a, b)| Cpu {
        user: b.user.saturating_sub(a.user),
        sys: b.sys.saturating_sub(a.sys),
    });
    slice
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn median(values: &[f64]) -> f64 {
    spread(values).0
}

/// Median, min and max of the values that are not NaN; NaN for none.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(&lo), Some(&hi)) => (v[v.len() / 2], lo, hi),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

// ===== micro-benchmarks =====

fn circuit_policy() -> CircuitPolicy {
    CircuitPolicy {
        window: 20,
        min_calls: 10,
        failure_rate: 50,
        slow_call: Duration::from_secs(2),
        slow_call_rate: 100,
        open_for: Duration::from_secs(3600),
        half_open_calls: 3,
    }
}

/// ns per iteration and allocations per iteration of `f`, run `n` times.
fn per_call(n: u64, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..n / 10 {
        f();
    }
    ALLOCS.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let elapsed = start.elapsed();
    COUNTING.with(|on| on.set(false));
    let allocs = ALLOCS.with(Cell::get);
    (
        elapsed.as_nanos() as f64 / n as f64,
        allocs as f64 / n as f64,
    )
}

async fn per_call_async<F, Fut>(n: u64, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..n / 10 {
        f().await;
    }
    let start = Instant::now();
    let allocs = allocations(async {
        for _ in 0..n {
            f().await;
        }
    })
    .await;
    (
        start.elapsed().as_nanos() as f64 / n as f64,
        allocs as f64 / n as f64,
    )
}

macro_rules! wide_trait {
    ($($method:ident)*) => {
        /// A client trait with 50 methods, to show a call's cost does not
        /// grow with the number of methods.
        #[courier::client(name = "wide")]
        #[allow(dead_code)] // only the policy pipeline of one method is run
        trait Wide {
            $(
                #[get("/users/{id}")]
                async fn $method(&self, id: u64) -> Result<User, courier::Error>;
            )*
        }
    };
}

wide_trait!(
    m00 m01 m02 m03 m04 m05 m06 m07 m08 m09 m10 m11 m12 m13 m14 m15 m16 m17 m18 m19
    m20 m21 m22 m23 m24 m25 m26 m27 m28 m29 m30 m31 m32 m33 m34 m35 m36 m37 m38 m39
    m40 m41 m42 m43 m44 m45 m46 m47 m48 m49
);

#[courier::client(name = "narrow")]
#[allow(dead_code)] // only its policy pipeline is run
trait Narrow {
    #[get("/users/{id}")]
    async fn get(&self, id: u64) -> Result<User, courier::Error>;
}

/// The policy pipeline of method `index` around an attempt that answers at
/// once.
async fn pipeline<C: ClientSpec>(client: &C, index: usize, n: u64) -> (f64, f64) {
    let call = client.runtime().method(index);
    per_call_async(n, || async {
        let r = call
            .run_policies(|| async { Ok::<u64, courier::Error>(black_box(1)) })
            .await;
        black_box(r.is_ok());
    })
    .await
}

// ===== main =====

/// `COURIER_BENCH_STACK=<0..5> COURIER_BENCH_CALLS=<n>`: make `n` calls on
/// one stack (`COURIER_BENCH_CONCURRENCY` at a time, default 1; on
/// `COURIER_BENCH_FLAVOR=current|multi`, default current) and exit; for
/// instruction counts under `valgrind --tool=callgrind --separate-threads=yes`,
/// which are repeatable on a noisy machine, or syscall counts under
/// `strace -f`. Run twice with different `n`; the difference over the
/// difference in calls is the cost per call. The client thread is the main
/// thread on the current-thread runtime, the `bench-client` worker on the
/// multi-thread one; the server is the `bench-server` thread.
///
/// It prints, per call: polls of the calling future (each poll after the
/// first is a wake-up), parks of the client's worker, client CPU time and
/// wall time, and each thread's time on CPU and context switches (Linux's
/// `/proc/self/task`), so a difference between stacks can be placed: more
/// work on the client, or more sleeping and waking on either side. (Every
/// stack pays the same few instructions for the poll counter.) Under
/// `valgrind --tool=cachegrind --cache-sim=yes` it also gives instruction
/// cache misses per call, which is where courier's remaining CPU time went
/// at the time of issue 14 (README, "Performance").
fn profile_one(stack: usize, calls: u64) {
    let flavor = match std::env::var("COURIER_BENCH_FLAVOR") {
        Ok(text) => Flavor::parse(&text).expect("COURIER_BENCH_FLAVOR is current or multi"),
        Err(_) => Flavor::Current,
    };
    let concurrency: u64 = std::env::var("COURIER_BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let addr = start_server();
    let rt = flavor.runtime();
    let stacks = {
        let _runtime = rt.enter();
        stacks(addr)
    };
    let Some(stack) = stacks.get(stack).cloned() else {
        eprintln!("no stack {stack}: 0 to {}", stacks.len() - 1);
        return;
    };
    let name = stack.name();
    let threads_before = threads();
    let parks = rt.metrics().worker_park_count(0);
    let (failed, polls, cpu, wall) = run_on(&rt, async move {
        let polls = Arc::new(AtomicU64::new(0));
        let cpu_start = thread_cpu();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..concurrency {
            let stack = Arc::clone(&stack);
            let polls = Arc::clone(&polls);
            tasks.spawn(async move {
                let mut failed = 0u64;
                let mut counted = 0u64;
                for id in (t..calls).step_by(concurrency as usize) {
                    if !CountPolls(std::pin::pin!(stack.get(id)), &mut counted).await {
                        failed += 1;
                    }
                }
                polls.fetch_add(counted, Ordering::Relaxed);
                failed
            });
        }
        let mut failed = 0;
        while let Some(done) = tasks.join_next().await {
            failed += done.unwrap_or(0);
        }
        let cpu = cpu_start
            .zip(thread_cpu())
            .map(|(a, b)| (b.user + b.sys).saturating_sub(a.user + a.sys));
        (failed, polls.load(Ordering::Relaxed), cpu, start.elapsed())
    });
    let parks = rt.metrics().worker_park_count(0) - parks;
    for (tid, (comm, run, vol, invol)) in threads() {
        let (run0, vol0, invol0) = threads_before
            .get(&tid)
            .map_or((0, 0, 0), |t| (t.1, t.2, t.3));
        println!(
            "  thread {comm}: {:.2} µs on CPU/call, {:.3} voluntary and {:.3} involuntary switches/call",
            (run - run0) as f64 / 1e3 / calls as f64,
            (vol - vol0) as f64 / calls as f64,
            (invol - invol0) as f64 / calls as f64
        );
    }
    let per = |n: f64| n / calls as f64;
    println!(
        "{name} ({}): {calls} calls, {failed} failed; per call: {:.2} polls of the calling \
         future, {:.3} parks of the worker, {:.2} µs client CPU, {:.2} µs wall",
        flavor.name(),
        per(polls as f64),
        per(parks as f64),
        cpu.map_or(f64::NAN, |c| per(c.as_secs_f64() * 1e6)),
        per(wall.as_secs_f64() * 1e6),
    );
}

/// Every thread of this process: name, ns on CPU, voluntary and
/// involuntary context switches.
fn threads() -> std::collections::BTreeMap<u64, (String, u64, u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Some(tid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(path.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let run = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        out.insert(
            tid,
            (
                comm,
                run,
                field("voluntary_ctxt_switches:"),
                field("nonvoluntary_ctxt_switches:"),
            ),
        );
    }
    out
}

/// Counts the polls of the future it wraps.
struct CountPolls<'a, F>(std::pin::Pin<&'a mut F>, &'a mut u64);

impl<F: Future> Future for CountPolls<'_, F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        *self.1 += 1;
        self.0.as_mut().poll(cx)
    }
}

/// The load-round results of one runtime flavour at one concurrency, one
/// `Samples` per stack.
fn report(flavor: Flavor, concurrency: usize, stacks: &[Arc<Stack>], results: &mut [Samples]) {
    println!("### {}, concurrency {concurrency}\n", flavor.name());
    println!(
        "| stack | req/s median (min–max) | vs reqwest | vs hyper | client CPU µs/call \
         median (min–max) | of which sys | CPU vs reqwest, per round: median (min–max) \
         | p50 µs | p99 µs | p99.9 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let position = |name: &str| stacks.iter().position(|s| s.name() == name);
    let med_rps = |name: &str| position(name).map_or(f64::NAN, |s| median(&results[s].rps));
    let (hyper_rps, reqwest_rps) = (med_rps("raw hyper-util"), med_rps("raw reqwest"));
    // CPU ratios are paired by round: the two slices of a round ran seconds
    // apart, so a slow spell of the machine mostly cancels out.
    let reqwest_cpu: Vec<f64> =
        position("raw reqwest").map_or_else(Vec::new, |s| results[s].cpu_us.clone());
    for (stack, samples) in stacks.iter().zip(results.iter_mut()) {
        samples.latencies.sort_unstable();
        let (m, lo, hi) = spread(&samples.rps);
        let (cpu_m, cpu_lo, cpu_hi) = spread(&samples.cpu_us);
        let ratios: Vec<f64> = samples
            .cpu_us
            .iter()
            .zip(&reqwest_cpu)
            .map(|(ours, theirs)| ours / theirs)
            .collect();
        let (ratio_m, ratio_lo, ratio_hi) = spread(&ratios);
        let cpu_text = if cpu_m.is_nan() {
            "n/a | n/a | n/a".to_owned()
        } else {
            format!(
                "{cpu_m:.2} ({cpu_lo:.2}–{cpu_hi:.2}) | {:.2} | {ratio_m:.3}× \
                 ({ratio_lo:.2}–{ratio_hi:.2})",
                median(&samples.sys_us),
            )
        };
        println!(
            "| {} | {m:.0} ({lo:.0}–{hi:.0}) | {:.3}× | {:.3}× | {cpu_text} | {:.1} | {:.1} | {:.1} |{}",
            stack.name(),
            m / reqwest_rps,
            m / hyper_rps,
            percentile(&samples.latencies, 0.5),
            percentile(&samples.latencies, 0.99),
            percentile(&samples.latencies, 0.999),
            if samples.errors > 0 {
                format!(" {} errors", samples.errors)
            } else {
                String::new()
            }
        );
    }
    println!();
}

fn main() {
    if let (Some(stack), Some(calls)) = (
        std::env::var("COURIER_BENCH_STACK")
            .ok()
            .and_then(|s| s.parse().ok()),
        std::env::var("COURIER_BENCH_CALLS")
            .ok()
            .and_then(|s| s.parse().ok()),
    ) {
        return profile_one(stack, calls);
    }
    let quick = std::env::var_os("COURIER_BENCH_QUICK").is_some();
    // Full: 7 rounds × 1.5 s × 6 stacks × 2 concurrencies × 2 flavours ≈
    // 4.2 min of load, plus warm-up and the sections without I/O.
    let (mut rounds, mut length, micro_n) = if quick {
        (1, Duration::from_millis(100), 200_000)
    } else {
        (7, Duration::from_millis(1500), 20_000_000)
    };
    let number = |var: &str| -> Option<u64> { std::env::var(var).ok()?.trim().parse().ok() };
    if let Some(n) = number("COURIER_BENCH_ROUNDS") {
        rounds = n;
    }
    if let Some(ms) = number("COURIER_BENCH_SLICE_MS") {
        length = Duration::from_millis(ms);
    }
    // Knobs for digging into one case: COURIER_BENCH_STACKS=1,2 keeps
    // those stacks (ratios need 0 and 1), COURIER_BENCH_CONCURRENCY=64,
    // COURIER_BENCH_FLAVOR=multi.
    let list = |var: &str| -> Option<Vec<String>> {
        let text = std::env::var(var).ok()?;
        Some(text.split(',').map(|n| n.trim().to_owned()).collect())
    };
    let numbers = |var: &str| -> Option<Vec<usize>> {
        Some(list(var)?.iter().filter_map(|n| n.parse().ok()).collect())
    };
    let filtered = std::env::var_os("COURIER_BENCH_STACKS").is_some();
    let keep = numbers("COURIER_BENCH_STACKS");
    let concurrencies = numbers("COURIER_BENCH_CONCURRENCY").unwrap_or_else(|| vec![1, 64]);
    let flavors: Vec<Flavor> = list("COURIER_BENCH_FLAVOR").map_or_else(
        || vec![Flavor::Current, Flavor::Multi],
        |names| names.iter().filter_map(|n| Flavor::parse(n)).collect(),
    );

    let addr = start_server();
    println!(
        "courier overhead benchmark ({} mode): {rounds} round(s) of {length:?} per flavour, \
         concurrency and stack, interleaved; server {addr} on its own thread; clients on a \
         current-thread runtime (the main thread) and on a multi-thread runtime with one worker\n",
        if quick { "quick" } else { "full" }
    );
    // Each flavour has its own runtime and its own clients: a pooled
    // connection is a task of the runtime that opened it.
    let runtimes: Vec<(Flavor, tokio::runtime::Runtime, Vec<Arc<Stack>>)> = flavors
        .iter()
        .map(|&flavor| {
            let rt = flavor.runtime();
            let mut stacks = {
                let _runtime = rt.enter();
                stacks(addr)
            };
            if let Some(keep) = &keep {
                let mut i = 0;
                stacks.retain(|_| {
                    i += 1;
                    keep.contains(&(i - 1))
                });
            }
            (flavor, rt, stacks)
        })
        .collect();
    // results[flavour][concurrency][stack]
    let mut results: Vec<Vec<Vec<Samples>>> = runtimes
        .iter()
        .map(|(_, _, stacks)| {
            concurrencies
                .iter()
                .map(|_| stacks.iter().map(|_| Samples::default()).collect())
                .collect()
        })
        .collect();
    // Warm-up: connections for 64 concurrent calls on every stack.
    for (_, rt, stacks) in &runtimes {
        for stack in stacks {
            run_on(rt, round(Arc::clone(stack), 64, Duration::from_millis(100)));
        }
    }
    for _ in 0..rounds {
        for (f, (_, rt, stacks)) in runtimes.iter().enumerate() {
            for (c, &concurrency) in concurrencies.iter().enumerate() {
                for (s, stack) in stacks.iter().enumerate() {
                    let slice = run_on(rt, round(Arc::clone(stack), concurrency, length));
                    results[f][c][s].add(slice);
                }
            }
        }
    }
    for (f, (flavor, _, stacks)) in runtimes.iter().enumerate() {
        for (c, &concurrency) in concurrencies.iter().enumerate() {
            report(*flavor, concurrency, stacks, &mut results[f][c]);
        }
    }

    if filtered {
        return; // the sections below need every stack
    }
    // The sections below count allocations on this thread: they run on a
    // current-thread runtime of their own, driven from here, with fresh
    // clients (connected by a few calls first).
    drop(runtimes);
    let rt = Flavor::Current.runtime();
    rt.block_on(async {
        let stacks = stacks(addr);
        for stack in &stacks {
            for id in 0..10 {
                black_box(stack.get(id).await);
            }
        }
        println!("### Allocations per call (client thread only)\n");
        println!("| stack | GET allocations/call |");
        println!("|---|---|");
        let calls = if quick { 200 } else { 2000 };
        for stack in &stacks {
            let allocs = allocations(async {
                for id in 0..calls {
                    black_box(stack.get(id).await);
                }
            })
            .await;
            println!("| {} | {:.1} |", stack.name(), allocs as f64 / calls as f64);
        }
        if let (Stack::Reqwest(client, base), Stack::Courier(courier), Stack::CourierHyper(lean)) =
            (&*stacks[1], &*stacks[2], &*stacks[5])
        {
            let user = User {
                id: 1,
                name: "n".into(),
                email: "e".into(),
                active: true,
                team: "t".into(),
            };
            let raw = allocations(async {
                for _ in 0..calls {
                    let body = serde_json::to_vec(&user).unwrap_or_default();
                    let resp = client
                        .post(format!("{base}/users"))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    if let Ok(resp) = resp {
                        let bytes = resp.bytes().await.unwrap_or_default();
                        black_box(serde_json::from_slice::<User>(&bytes).is_ok());
                    }
                }
            })
            .await;
            let ours = allocations(async {
                for _ in 0..calls {
                    black_box(courier.create(&user).await.is_ok());
                }
            })
            .await;
            let on_hyper = allocations(async {
                for _ in 0..calls {
                    black_box(lean.create(&user).await.is_ok());
                }
            })
            .await;
            println!(
                "\nPOST with a JSON body: raw reqwest {:.1}, courier {:.1}, courier on hyper-util \
                 {:.1} allocations/call",
                raw as f64 / calls as f64,
                ours as f64 / calls as f64,
                on_hyper as f64 / calls as f64
            );
        }
        observing_cost(addr, quick).await;
        println!();

        println!("### Without I/O\n");
        println!("| what | ns/call | allocations/call |");
        println!("|---|---|---|");
        let now = tokio::time::Instant::now();
        let elapsed = Duration::from_micros(300);
        let breaker = CircuitBreaker::new("bench", "closed", circuit_policy(), Default::default());
        let (ns, allocs) = per_call(micro_n, || {
            if let Ok(permit) = breaker.admit(black_box(now)) {
                permit.record(black_box(Outcome::Success), elapsed, now);
            }
        });
        println!("| breaker, closed: admit + record | {ns:.1} | {allocs:.2} |");
        let open = CircuitBreaker::new("bench", "open", circuit_policy(), Default::default());
        for _ in 0..20 {
            if let Ok(permit) = open.admit(now) {
                permit.record(Outcome::Failure, elapsed, now);
            }
        }
        let (ns, allocs) = per_call(micro_n, || {
            black_box(open.admit(black_box(now)).is_err());
        });
        println!("| breaker, open: rejection | {ns:.1} | {allocs:.2} |");

        let n = micro_n / 20;
        let (ns, allocs) = per_call_async(n, || async {
            let r = async { Ok::<u64, courier::Error>(black_box(1)) }.await;
            black_box(r.is_ok());
        })
        .await;
        println!("| no policies: the bare attempt future | {ns:.1} | {allocs:.2} |");
        for stack in &stacks[2..4] {
            if let Stack::Courier(client) | Stack::CourierAll(client) = &**stack {
                let (ns, allocs) = pipeline(client, 0, n).await;
                println!(
                    "| policy pipeline, {} (attempt answers at once) | {ns:.1} | {allocs:.2} |",
                    stack.name()
                );
            }
        }
        let narrow = NarrowClient::builder()
            .base_url(format!("http://{addr}"))
            .build()
            .expect("client");
        let wide = WideClient::builder()
            .base_url(format!("http://{addr}"))
            .build()
            .expect("client");
        let (ns, _) = pipeline(&narrow, 0, n).await;
        println!("| pipeline, 1-method trait | {ns:.1} | |");
        let (ns, _) = pipeline(&wide, 49, n).await;
        println!("| pipeline, 50-method trait, its 50th method | {ns:.1} | |");
        let crowd: Vec<WideClient> = (0..200)
            .map(|_| {
                WideClient::builder()
                    .base_url(format!("http://{addr}"))
                    .build()
                    .expect("client")
            })
            .collect();
        let (ns, _) = pipeline(&wide, 49, n).await;
        println!(
            "| pipeline, 50-method trait, with {} more clients alive | {ns:.1} | |",
            crowd.len()
        );
        drop(crowd);

        for (n, kind) in [1usize, 10, 1000].into_iter().flat_map(|n| {
            [
                (n, courier::Balance::PeakEwma),
                (n, courier::Balance::RoundRobin),
            ]
        }) {
            let balancer = courier::__private::Balancer::new("bench", kind, Default::default());
            let instances: Vec<courier::Instance> = (0..n)
                .map(|i| {
                    courier::Instance::new(
                        format!("i{i}"),
                        format!("http://10.0.{}.{}:80", i / 250, i % 250),
                    )
                })
                .collect();
            balancer.update(&instances);
            let now = tokio::time::Instant::now();
            let (ns, allocs) = per_call(micro_n / 10, || {
                black_box(balancer.pick(black_box(0), now).is_some());
            });
            println!("| balancer pick ({kind:?}), {n} instances | {ns:.1} | {allocs:.2} |");
        }
    });
}
