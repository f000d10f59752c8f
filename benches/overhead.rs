//! courier's overhead benchmark: what the resilience costs next to the
//! network.
//!
//! `cargo bench --bench overhead` (about three minutes), or with
//! `COURIER_BENCH_QUICK=1` (a few seconds; CI runs it so this never rots, and
//! does not judge the numbers).
//!
//! An in-process hyper server on 127.0.0.1, on its own runtime thread,
//! answers `GET /users/{id}` with a ~100-byte JSON body and echoes
//! `POST /users`. Clients run on a separate single-thread runtime. Every
//! stack makes the same typed call (GET, decode into `User`):
//!
//! 1. raw hyper-util client (the floor),
//! 2. raw reqwest (the baseline),
//! 3. courier with every default policy on (deadline, retry with budget,
//!    circuit breaker),
//! 4. courier with everything on (plus a bulkhead and a fallback),
//! 5. reqwest-middleware + reqwest-retry (what users would glue together).
//!
//! Stacks are interleaved round by round (A B C … A B C …) at concurrency 1
//! and 64, so machine noise hits all alike; the report gives the median and
//! min–max of requests/s over the rounds, latency percentiles over all
//! requests, and throughput ratios to raw reqwest and raw hyper.
//!
//! Then, without I/O: the circuit breaker's closed-state admit + record and
//! its open-state rejection (ns/call), the whole policy pipeline around an
//! attempt that answers at once, the same for a 1-method and a 50-method
//! trait with 200 other clients alive, and allocations per call (a counting
//! global allocator, counting only on the client thread).
//!
//! The pipeline lines use `courier::__private` (hidden, unstable API) to run
//! a method's policies around a closure; nothing else here does.

#![allow(unsafe_code)] // the counting allocator below
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
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

#[allow(clippy::large_enum_variant)] // five values, made once
enum Stack {
    Hyper(HyperClient<HttpConnector, Empty<Bytes>>, String),
    Reqwest(reqwest::Client, String),
    Courier(BenchClient),
    CourierAll(BenchClient),
    Middleware(reqwest_middleware::ClientWithMiddleware, String),
}

impl Stack {
    fn name(&self) -> &'static str {
        match self {
            Stack::Hyper(..) => "raw hyper-util",
            Stack::Reqwest(..) => "raw reqwest",
            Stack::Courier(_) => "courier, default policies",
            Stack::CourierAll(_) => "courier, everything on",
            Stack::Middleware(..) => "reqwest-middleware + retry",
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
            Stack::Courier(client) | Stack::CourierAll(client) => client.get(id).await.is_ok(),
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
    ]
}

// ===== load rounds =====

#[derive(Default)]
struct Samples {
    /// Requests per second, one entry per round.
    rps: Vec<f64>,
    /// Latency of every successful request, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
}

async fn round(stack: &Arc<Stack>, concurrency: usize, length: Duration, into: &mut Samples) {
    let start = Instant::now();
    let end = start + length;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let stack = Arc::clone(stack);
        tasks.spawn(async move {
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
            (latencies, errors)
        });
    }
    let mut done = 0u64;
    while let Some(joined) = tasks.join_next().await {
        if let Ok((latencies, errors)) = joined {
            done += latencies.len() as u64;
            into.latencies.extend(latencies);
            into.errors += errors;
        }
    }
    into.rps.push(done as f64 / start.elapsed().as_secs_f64());
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
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

/// `COURIER_BENCH_STACK=<0..4> COURIER_BENCH_CALLS=<n>`: make `n` calls on
/// one stack (`COURIER_BENCH_CONCURRENCY` at a time, default 1) and exit; for instruction counts under
/// `valgrind --tool=callgrind`, which are repeatable on a noisy machine.
/// Run twice with different `n`; the difference over the difference in
/// calls is the instructions per call (client and server threads).
fn profile_one(stack: usize, calls: u64) {
    let addr = start_server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let stacks = stacks(addr);
        let Some(stack) = stacks.get(stack) else {
            eprintln!("no stack {stack}: 0 to {}", stacks.len() - 1);
            return;
        };
        let concurrency: u64 = std::env::var("COURIER_BENCH_CONCURRENCY")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..concurrency {
            let stack = Arc::clone(stack);
            tasks.spawn(async move {
                let mut failed = 0u64;
                for id in (t..calls).step_by(concurrency as usize) {
                    if !stack.get(id).await {
                        failed += 1;
                    }
                }
                failed
            });
        }
        let mut failed = 0;
        while let Some(done) = tasks.join_next().await {
            failed += done.unwrap_or(0);
        }
        println!("{}: {calls} calls, {failed} failed", stack.name());
    });
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
    let (mut rounds, length, micro_n) = if quick {
        (1, Duration::from_millis(200), 200_000)
    } else {
        (5, Duration::from_secs(2), 20_000_000)
    };
    if let Some(n) = std::env::var("COURIER_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        rounds = n;
    }
    let addr = start_server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    println!(
        "courier overhead benchmark ({} mode): {rounds} round(s) of {length:?} per stack and \
         concurrency, interleaved; server {addr} on its own thread, clients on one thread\n",
        if quick { "quick" } else { "full" }
    );

    rt.block_on(async {
        // Knobs for digging into one case: COURIER_BENCH_STACKS=1,2 keeps
        // those stacks (ratios need 0 and 1), COURIER_BENCH_CONCURRENCY=64.
        let list = |var: &str| -> Option<Vec<usize>> {
            let text = std::env::var(var).ok()?;
            Some(text.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        };
        let mut stacks = stacks(addr);
        let filtered = std::env::var_os("COURIER_BENCH_STACKS").is_some();
        if let Some(keep) = list("COURIER_BENCH_STACKS") {
            let mut i = 0;
            stacks.retain(|_| {
                i += 1;
                keep.contains(&(i - 1))
            });
        }
        let concurrencies = list("COURIER_BENCH_CONCURRENCY").unwrap_or_else(|| vec![1, 64]);
        let mut results: Vec<Vec<Samples>> = concurrencies
            .iter()
            .map(|_| stacks.iter().map(|_| Samples::default()).collect())
            .collect();
        // Warm-up: connections for 64 concurrent calls on every stack.
        for stack in &stacks {
            let mut scratch = Samples::default();
            round(stack, 64, Duration::from_millis(100), &mut scratch).await;
        }
        for _ in 0..rounds {
            for (c, &concurrency) in concurrencies.iter().enumerate() {
                for (s, stack) in stacks.iter().enumerate() {
                    round(stack, concurrency, length, &mut results[c][s]).await;
                }
            }
        }
        for (c, concurrency) in concurrencies.iter().enumerate() {
            println!("### Concurrency {concurrency}\n");
            println!(
                "| stack | req/s median (min–max) | p50 µs | p99 µs | p99.9 µs | vs reqwest | vs hyper |"
            );
            println!("|---|---|---|---|---|---|---|");
            let med = |name: &str| {
                stacks
                    .iter()
                    .position(|s| s.name() == name)
                    .map_or(f64::NAN, |s| median(&results[c][s].rps))
            };
            let (hyper_rps, reqwest_rps) = (med("raw hyper-util"), med("raw reqwest"));
            for (s, stack) in stacks.iter().enumerate() {
                let samples = &mut results[c][s];
                samples.latencies.sort_unstable();
                let (lo, hi) = samples
                    .rps
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
                let m = median(&samples.rps);
                println!(
                    "| {} | {:.0} ({:.0}–{:.0}) | {:.1} | {:.1} | {:.1} | {:.3}× | {:.3}× |{}",
                    stack.name(),
                    m,
                    lo,
                    hi,
                    percentile(&samples.latencies, 0.5),
                    percentile(&samples.latencies, 0.99),
                    percentile(&samples.latencies, 0.999),
                    m / reqwest_rps,
                    m / hyper_rps,
                    if samples.errors > 0 {
                        format!(" {} errors", samples.errors)
                    } else {
                        String::new()
                    }
                );
            }
            println!();
        }

        if filtered {
            return; // the sections below need every stack
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
        if let (Stack::Reqwest(client, base), Stack::Courier(courier)) = (&*stacks[1], &*stacks[2])
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
            println!(
                "\nPOST with a JSON body: raw reqwest {:.1}, courier {:.1} allocations/call",
                raw as f64 / calls as f64,
                ours as f64 / calls as f64
            );
        }
        println!();

        println!("### Without I/O\n");
        println!("| what | ns/call | allocations/call |");
        println!("|---|---|---|");
        let now = tokio::time::Instant::now();
        let elapsed = Duration::from_micros(300);
        let breaker = CircuitBreaker::new("bench#closed", circuit_policy(), Default::default());
        let (ns, allocs) = per_call(micro_n, || {
            if let Ok(permit) = breaker.admit(black_box(now)) {
                permit.record(black_box(Outcome::Success), elapsed, now);
            }
        });
        println!("| breaker, closed: admit + record | {ns:.1} | {allocs:.2} |");
        let open = CircuitBreaker::new("bench#open", circuit_policy(), Default::default());
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

        for (n, kind) in [1usize, 10, 1000]
            .into_iter()
            .flat_map(|n| [(n, courier::Balance::PeakEwma), (n, courier::Balance::RoundRobin)])
        {
            let balancer = courier::__private::Balancer::new("bench", kind, Default::default());
            let instances: Vec<courier::Instance> = (0..n)
                .map(|i| courier::Instance::new(format!("i{i}"), format!("http://10.0.{}.{}:80", i / 250, i % 250)))
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
