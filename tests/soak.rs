//! A soak: many calls through every policy against three instances that
//! fail at random in every way the fault server knows, on 64 concurrent
//! tasks over two worker threads. Whatever happens, nothing panics, every
//! failure the fallback may answer is answered, attempts stay within what
//! the policies allow, and at the end every bulkhead slot and in-flight
//! count is back, every breaker recovers, and memory did not grow.
//!
//! Short by default (CI); `COURIER_SOAK_CALLS=100000 cargo test --release
//! --all-features --test soak -- --nocapture` is the full run.
#![cfg(feature = "testing")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::testing::{Fault, FaultServer};
use courier::{Balance, Error, Inspect, Instance, OutlierEjection, StaticDiscovery, client};

mod support;

#[client(name = "soaked")]
#[timeout("250ms")]
#[retry(max_attempts = 3, backoff = "1ms..4ms", attempt_timeout = "60ms")]
#[circuit_breaker(
    window = 20,
    min_calls = 10,
    failure_rate = 60,
    open_for = "50ms",
    half_open_calls = 3
)]
trait Soaked {
    #[get("/plain/{id}")]
    async fn plain(&self, id: u64) -> Result<String, Error>;

    #[get("/guarded/{id}")]
    #[bulkhead(max_concurrent = 16, max_wait = "5ms")]
    async fn guarded(&self, id: u64) -> Result<String, Error>;

    #[get("/hedged/{id}")]
    #[hedge(delay = "20ms", max_extra = 1)]
    #[bulkhead(max_concurrent = 24)]
    async fn hedged(&self, id: u64) -> Result<String, Error>;
}

struct Fallback;

#[courier::async_trait]
impl Soaked for Fallback {
    async fn plain(&self, _: u64) -> Result<String, Error> {
        Ok("fallback".into())
    }
    async fn guarded(&self, _: u64) -> Result<String, Error> {
        Ok("fallback".into())
    }
    async fn hedged(&self, _: u64) -> Result<String, Error> {
        Ok("fallback".into())
    }
}

fn faults() -> Vec<(u32, Fault)> {
    vec![
        (70, Fault::ok("fine")),
        (6, Fault::status(503)),
        (4, Fault::status(500).body("<html>oops</html>")),
        (3, Fault::status(429).retry_after("0")),
        (3, Fault::reset_before_headers()),
        (3, Fault::ok("x".repeat(2000)).reset_after_headers()),
        (2, Fault::ok("late").delay(Duration::from_millis(100))),
        (2, Fault::garbage("SSH-2.0-OpenSSH\r\n")),
        (2, Fault::ok("").oversized_body(64 * 1024)),
        (2, Fault::status(503).oversized_body(64 * 1024)),
        (2, Fault::close()),
        (1, Fault::black_hole()),
    ]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// What one batch of calls came to.
#[derive(Default)]
struct Tally {
    ok: u64,
    fallback: u64,
    errors: BTreeMap<String, u64>,
}

async fn run(client: &SoakedClient, calls: u64, tasks: u64) -> Tally {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let client = client.clone();
        set.spawn(async move {
            let mut tally = Tally::default();
            for id in (t..calls).step_by(tasks as usize) {
                let (result, max_attempts) = match id % 3 {
                    0 => (client.plain(id).await, 3),
                    1 => (client.guarded(id).await, 3),
                    // Each loop round races at most two attempts.
                    _ => (client.hedged(id).await, 4),
                };
                match result {
                    Ok(answer) if answer == "fallback" => tally.fallback += 1,
                    Ok(_) => tally.ok += 1,
                    Err(e) => {
                        assert!(e.attempts() <= max_attempts, "{e:?}");
                        assert!(
                            !courier::policy::classify::is_fallback_eligible(&e),
                            "the fallback should have answered: {e:?}"
                        );
                        let key = format!("{:?} {:?}", e.kind(), e.status().map(|s| s.as_u16()));
                        *tally.errors.entry(key).or_default() += 1;
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(done) = set.join_next().await {
        let tally = done.expect("no task panicked");
        total.ok += tally.ok;
        total.fallback += tally.fallback;
        for (k, v) in tally.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_of_random_faults_leaves_nothing_behind() {
    let calls: u64 = std::env::var("COURIER_SOAK_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6_000);
    let started = Instant::now();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let server = FaultServer::start().await.expect("bind");
        server.keep_requests(false);
        server.mix(faults());
        servers.push(server);
    }
    let discovery = StaticDiscovery::new().with(
        "soaked",
        servers
            .iter()
            .enumerate()
            .map(|(i, s)| Instance::new(format!("i{i}"), s.url())),
    );
    let client = support::builder::<SoakedClient>()
        .discovery(discovery)
        .balance(Balance::PeakEwma)
        .outlier_ejection(OutlierEjection {
            base_time: Duration::from_millis(100),
            ..Default::default()
        })
        .max_response_bytes(16 * 1024)
        .fallback(Fallback)
        .build()
        .expect("valid");

    // Warm up (pools, allocator), then measure the rest.
    let warm = run(&client, calls / 5, 64).await;
    let rss_before = rss_kib();
    let tally = run(&client, calls - calls / 5, 64).await;
    let rss_after = rss_kib();
    let sent: usize = servers.iter().map(FaultServer::requests).sum();
    eprintln!(
        "soak: {calls} calls in {:?}: {} answered, {} by the fallback, errors {:?}; \
         {sent} requests reached the servers; RSS {rss_before} KiB -> {rss_after} KiB",
        started.elapsed(),
        warm.ok + tally.ok,
        warm.fallback + tally.fallback,
        tally.errors,
    );
    assert!(
        tally.ok > 0 && tally.fallback > 0,
        "both paths were exercised"
    );
    assert!(
        sent as u64 <= calls * 4,
        "{sent} requests for {calls} calls"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );

    // Everything held was given back.
    let snapshot = client.snapshot();
    for method in &snapshot.methods {
        if let Some(bulkhead) = method.bulkhead {
            assert_eq!(
                bulkhead.available, bulkhead.max_concurrent as usize,
                "{}: every slot back",
                method.name
            );
        }
    }
    let instances = client.instances().expect("discovery");
    assert!(instances.iter().all(|i| i.in_flight == 0), "{instances:?}");

    // The dependency heals: every breaker lets calls through again and
    // closes (no breaker is stuck half-open), and every call answers.
    for server in &servers {
        server.mix([]);
        server.set(Fault::ok("healed"));
    }
    let healed = Arc::new(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answers =
            futures::future::join3(healed.plain(1), healed.guarded(2), healed.hedged(3)).await;
        let all = [answers.0, answers.1, answers.2];
        let closed = ["plain", "guarded", "hedged"]
            .iter()
            .all(|m| healed.circuit_state(m) == Some(courier::CircuitState::Closed));
        if closed && all.iter().all(|a| a.as_deref().ok() == Some("healed")) {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded: {:?}",
        started.elapsed()
    );
}
