//! Discovery through a real etcd server (Debian's `etcd-server`; `.ci/run`
//! installs it), started by the test on free loopback ports in a temp dir.
//! Not a mock: registration with leases, the watch, etcd going away and
//! coming back. Faults that a real server cannot be asked for (a frozen
//! connection) come from a loopback TCP proxy between the client and etcd.
#![cfg(feature = "etcd")]

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use courier::discovery::Subscription;
use courier::discovery::etcd::EtcdDiscovery;
use courier::{Balance, Discovery, Error, Event, Inspect, Instance, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::received as count;

#[client(name = "orders")]
#[circuit_breaker(disabled)]
#[retry(backoff = "1ms..2ms")]
trait Orders {
    #[get("/orders/{id}")]
    async fn order(&self, id: u64) -> Result<String, Error>;
}

/// An etcd server of our own, killed and its data removed on drop.
struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Etcd {
    async fn start() -> Etcd {
        let dir = std::env::temp_dir().join(format!(
            "courier-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.launch().await;
        etcd
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    async fn launch(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=courier-test")
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=courier-test={peer}"))
            // Progress notifications on quiet watches twice a second (etcd's
            // default is every 10 minutes).
            .arg("--experimental-watch-progress-notify-interval=500ms")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd must be installed (Debian's etcd-server; .ci/run installs it)");
        self.child = Some(child);
        // Ready when the JSON gateway answers a read.
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .post(format!("{}/v3/kv/range", self.url()))
                .body(r#"{"key":"AA=="}"#)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not start in 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn instance(name: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string(name))
        .mount(&server)
        .await;
    server
}

/// A loopback TCP proxy in front of etcd that can freeze its connections:
/// stop passing bytes either way without closing anything, as a hung server
/// or a half-open connection does. It tells which connections carried a
/// watch and whether they are still open.
struct Proxy {
    port: u16,
    state: Arc<Mutex<Conns>>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Conns {
    next: u64,
    /// Open connections, and when they opened.
    open: HashMap<u64, Instant>,
    /// Connections that carried a `/v3/watch` request, open or not.
    watches: HashSet<u64>,
    frozen: HashSet<u64>,
}

impl Proxy {
    async fn start(upstream_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let state = Arc::new(Mutex::new(Conns::default()));
        let conns = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream_port, Arc::clone(&conns)));
            }
        });
        Proxy {
            port,
            state,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every connection open now stops passing bytes; later ones work.
    fn freeze(&self) {
        let mut conns = self.conns();
        conns.frozen = conns.open.keys().copied().collect();
    }

    /// Watch connections ever made.
    fn watches(&self) -> usize {
        self.conns().watches.len()
    }

    /// Watch connections open now.
    fn open_watches(&self) -> usize {
        let conns = self.conns();
        conns
            .watches
            .iter()
            .filter(|id| conns.open.contains_key(id))
            .count()
    }

    /// How long the oldest open watch connection has been open.
    fn oldest_open_watch(&self) -> Duration {
        let conns = self.conns();
        conns
            .watches
            .iter()
            .filter_map(|id| conns.open.get(id))
            .map(Instant::elapsed)
            .max()
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Passes bytes between `client` and etcd until either side closes; on a
/// frozen connection, reads and drops them (so a close is still seen).
async fn relay(client: tokio::net::TcpStream, upstream_port: u16, state: Arc<Mutex<Conns>>) {
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let id = {
        let mut conns = lock();
        conns.next += 1;
        let id = conns.next;
        conns.open.insert(id, Instant::now());
        id
    };
    let frozen = || lock().frozen.contains(&id);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        // The end of the previous read, so a path cut in two is still seen.
        let mut seen: Vec<u8> = Vec::new();
        while let Ok(n) = client_read.read(&mut buffer).await
            && n > 0
        {
            seen.extend_from_slice(&buffer[..n]);
            if seen.windows(9).any(|w| w == b"/v3/watch") {
                lock().watches.insert(id);
            }
            seen.drain(..seen.len().saturating_sub(8));
            if !frozen() && server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    let downstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n) = server_read.read(&mut buffer).await
            && n > 0
        {
            if !frozen() && client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
    lock().open.remove(&id);
}

/// Discovery failures as reported: (service, source, error).
#[derive(Clone, Default)]
struct Failures(Arc<Mutex<Vec<(String, String, String)>>>);

impl Failures {
    fn record(&self) -> impl for<'e> Fn(&Event<'e>) + Send + Sync + 'static {
        let failures = self.clone();
        move |event| {
            if let Event::DiscoveryFailed {
                service,
                source,
                error,
                ..
            } = *event
            {
                failures
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((service.to_owned(), source.to_owned(), error.to_owned()));
            }
        }
    }

    fn any(&self, service: &str, source: &str, error_contains: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(s, src, e)| s == service && src == source && e.contains(error_contains))
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Waits (up to `within`) until `condition` holds.
async fn until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids a subscription holds now (`None` before the first answer).
fn ids(subscription: &Subscription) -> Option<Vec<String>> {
    subscription.borrow().as_ref().map(|set| {
        let mut ids: Vec<String> = set.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        ids
    })
}

/// The lease `key` is stored with, if it is stored.
async fn lease_of(etcd: &Etcd, key: &str) -> Option<i64> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let answer = reqwest::Client::new()
        .post(format!("{}/v3/kv/range", etcd.url()))
        .body(serde_json::json!({ "key": b64.encode(key) }).to_string())
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let read: serde_json::Value = serde_json::from_slice(&answer).ok()?;
    let lease = read.pointer("/kvs/0/lease")?;
    lease
        .as_str()
        .and_then(|l| l.parse().ok())
        .or_else(|| lease.as_i64())
}

/// Waits (up to 15 s) until the client's balancer holds exactly `ids`.
async fn until_instances(client: &OrdersClient, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut now: Vec<String> = client
            .instances()
            .expect("a discovery client")
            .into_iter()
            .map(|i| i.id)
            .collect();
        now.sort();
        if now == ids {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "instances {now:?}, wanted {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_instances_are_called_and_follow_leases_and_outages() {
    let mut etcd = Etcd::start().await;
    let (a, b, c) = (
        instance("a").await,
        instance("b").await,
        instance("c").await,
    );
    let registry_failures = Failures::default();
    let registry = EtcdDiscovery::new([etcd.url()])
        .expect("valid endpoint")
        .on_event(registry_failures.record());
    let ttl = Duration::from_secs(5);
    let reg_a = registry
        .register("orders", Instance::new("a", a.uri()), ttl)
        .await
        .expect("registered");
    let _reg_b = registry
        .register("orders", Instance::new("b", b.uri()).with_zone("z1"), ttl)
        .await
        .expect("registered");

    let failures = Failures::default();
    let client = OrdersClient::builder()
        .discovery(
            EtcdDiscovery::new([etcd.url()])
                .expect("valid endpoint")
                .on_event(failures.record()),
        )
        .balance(Balance::RoundRobin)
        .build()
        .expect("valid");

    // Both registered instances get calls.
    until_instances(&client, &["a", "b"]).await;
    for id in 0..10 {
        client.order(id).await.expect("served");
    }
    assert_eq!((count(&a).await, count(&b).await), (5, 5));

    // Revoking a's lease moves all traffic to b.
    reg_a.deregister().await.expect("revoked");
    until_instances(&client, &["b"]).await;
    for id in 0..10 {
        assert_eq!(client.order(id).await.ok().as_deref(), Some("b"));
    }
    assert_eq!(count(&a).await, 5);
    assert_eq!(failures.count(), 0, "nothing failed while etcd was up");

    // etcd goes away: the client keeps working on the last set, and the
    // discovery says that it lost its source (the re-read after the watch
    // broke), as does the registration's keep-alive.
    etcd.stop();
    for id in 0..10 {
        assert_eq!(client.order(id).await.ok().as_deref(), Some("b"));
    }
    let read_failed = "read of /services/orders/ failed";
    until(Duration::from_secs(10), "the lost etcd reported", || {
        failures.any("orders", &etcd.url(), read_failed)
    })
    .await;
    until(
        Duration::from_secs(10),
        "the failed keep-alive reported",
        || registry_failures.any("orders", &etcd.url(), "keep-alive failed"),
    )
    .await;
    assert_eq!(client.order(99).await.ok().as_deref(), Some("b"));

    // etcd comes back: the watch resumes and sees a new instance.
    etcd.launch().await;
    let _reg_c = registry
        .register("orders", Instance::new("c", c.uri()), ttl)
        .await
        .expect("registered after the restart");
    until_instances(&client, &["b", "c"]).await;
    for id in 0..10 {
        client.order(id).await.expect("served");
    }
    assert_eq!(count(&c).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_registration_removes_the_instance() {
    let etcd = Etcd::start().await;
    let a = instance("a").await;
    let registry = EtcdDiscovery::new([etcd.url()]).expect("valid endpoint");
    let client = OrdersClient::builder()
        .discovery(registry.clone())
        .build()
        .expect("valid");
    let registration = registry
        .register(
            "orders",
            Instance::new("a", a.uri()),
            Duration::from_secs(30),
        )
        .await
        .expect("registered");
    until_instances(&client, &["a"]).await;
    assert_eq!(client.order(1).await.ok().as_deref(), Some("a"));
    drop(registration); // revokes the lease in the background
    until_instances(&client, &[]).await;
    let err = client.order(2).await.expect_err("nobody left");
    assert!(err.is_no_instances(), "{err}");
}

#[tokio::test]
async fn an_unreachable_etcd_fails_calls_fast_instead_of_hanging_them() {
    // Nothing listens on this port: the first read fails, and calls get a
    // clear error at once rather than wait out their deadline.
    let etcd = format!("http://127.0.0.1:{}", free_port());
    let failures = Failures::default();
    let client = OrdersClient::builder()
        .discovery(
            EtcdDiscovery::new([etcd.as_str()])
                .expect("valid endpoint")
                .on_event(failures.record()),
        )
        .build()
        .expect("valid");
    let start = Instant::now();
    let err = client.order(1).await.expect_err("no instances");
    assert!(err.is_no_instances(), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // Not silently: the failed read was reported before the calls gave up.
    assert!(
        failures.any("orders", &etcd, "read of /services/orders/ failed"),
        "{:?}",
        failures.0.lock().map(|f| f.clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_watch_is_made_again_after_the_idle_timeout() {
    // A hung etcd or a half-open connection never closes the watch: only
    // the idle timeout notices, and the new watch sees what changed.
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.client_port).await;
    let registry = EtcdDiscovery::new([etcd.url()]).expect("valid endpoint");
    let discovery = EtcdDiscovery::new([proxy.url()])
        .expect("valid endpoint")
        .watch_idle_timeout(Duration::from_secs(1));
    let subscription = discovery.subscribe("orders");
    let ttl = Duration::from_secs(30);
    let _a = registry
        .register("orders", Instance::new("a", "http://127.0.0.1:1"), ttl)
        .await
        .expect("registered");
    until(Duration::from_secs(10), "a is seen", || {
        ids(&subscription) == Some(vec!["a".into()])
    })
    .await;
    until(Duration::from_secs(10), "a watch is open", || {
        proxy.open_watches() == 1
    })
    .await;

    proxy.freeze();
    let _b = registry
        .register("orders", Instance::new("b", "http://127.0.0.1:2"), ttl)
        .await
        .expect("registered");

    until(
        Duration::from_secs(15),
        "b is seen after the freeze",
        || ids(&subscription) == Some(vec!["a".into(), "b".into()]),
    )
    .await;
    // The re-read that publishes b comes before the new watch request, so
    // the watch is waited for, not expected at the very moment b is seen.
    until(
        Duration::from_secs(5),
        "a new watch connection is made",
        || proxy.watches() >= 2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_lives_on_progress_notifications() {
    // Nothing changes under the prefix, yet etcd's progress notifications
    // keep the watch from looking idle: one connection, well past the idle
    // timeout.
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.client_port).await;
    let idle = Duration::from_secs(2);
    let discovery = EtcdDiscovery::new([proxy.url()])
        .expect("valid endpoint")
        .watch_idle_timeout(idle);
    let subscription = discovery.subscribe("orders");
    until(Duration::from_secs(10), "the empty set is seen", || {
        ids(&subscription) == Some(vec![])
    })
    .await;
    until(
        Duration::from_secs(15),
        "a watch lives twice the idle timeout",
        || proxy.oldest_open_watch() > 2 * idle,
    )
    .await;
    assert_eq!(proxy.watches(), 1, "the watch was never made again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_subscriber_closes_the_watch() {
    // A client that is gone must not leave a watch (a connection and a
    // task) behind for the life of the process.
    let etcd = Etcd::start().await;
    let proxy = Proxy::start(etcd.client_port).await;
    let discovery = EtcdDiscovery::new([proxy.url()]).expect("valid endpoint");
    let first = discovery.subscribe("orders");
    let second = discovery.subscribe("orders");
    until(Duration::from_secs(10), "a watch is open", || {
        proxy.open_watches() == 1 && ids(&first).is_some()
    })
    .await;

    // One subscriber left: the watch stays.
    drop(first);
    assert_eq!(ids(&second), Some(vec![]));
    assert_eq!(proxy.open_watches(), 1);

    drop(second);
    until(
        Duration::from_secs(2),
        "the watch connection closes",
        || proxy.open_watches() == 0,
    )
    .await;
    assert_eq!(proxy.watches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_replaced_and_the_key_put_again() {
    // etcd forgets a lease (it expired during an outage, or an operator
    // revoked it) and deletes its key; the serving process is still alive
    // and must be found again.
    let etcd = Etcd::start().await;
    let registry = EtcdDiscovery::new([etcd.url()]).expect("valid endpoint");
    let registration = registry
        .register(
            "orders",
            Instance::new("a", "http://127.0.0.1:1"),
            Duration::from_secs(2),
        )
        .await
        .expect("registered");
    let key = registration.key().to_owned();
    let first = registration.lease();
    assert_eq!(lease_of(&etcd, &key).await, Some(first));

    let revoked = reqwest::Client::new()
        .post(format!("{}/v3/lease/revoke", etcd.url()))
        .body(format!(r#"{{"ID":{first}}}"#))
        .send()
        .await
        .expect("revoke sent");
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_ne!(
        lease_of(&etcd, &key).await,
        Some(first),
        "the key went with it"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = registration.lease();
        if now != first && lease_of(&etcd, &key).await == Some(now) {
            break;
        }
        assert!(Instant::now() < deadline, "the key did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The new lease is kept alive, and deregistering revokes it.
    registration.deregister().await.expect("revoked");
    assert_eq!(lease_of(&etcd, &key).await, None);
}
