//! Discovery through a real etcd server (Debian's `etcd-server`; `.ci/run`
//! installs it), started by the test on free loopback ports in a temp dir.
//! Not a mock: registration with leases, the watch, etcd going away and
//! coming back.
#![cfg(feature = "etcd")]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier::discovery::etcd::EtcdDiscovery;
use courier::{Balance, Error, Inspect, Instance, client};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

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

async fn count(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

/// Waits (up to 15 s) until the client's balancer holds exactly `ids`.
async fn until_instances(client: &OrdersClient, ids: &[&str]) {
    let balancer = client.balancer().expect("a discovery client");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut now: Vec<String> = balancer
            .endpoints()
            .iter()
            .map(|e| e.instance().id.clone())
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
    let registry = EtcdDiscovery::new([etcd.url()]).expect("valid endpoint");
    let ttl = Duration::from_secs(5);
    let reg_a = registry
        .register("orders", Instance::new("a", a.uri()), ttl)
        .await
        .expect("registered");
    let _reg_b = registry
        .register("orders", Instance::new("b", b.uri()).with_zone("z1"), ttl)
        .await
        .expect("registered");

    let client = OrdersClient::builder()
        .discovery(EtcdDiscovery::new([etcd.url()]).expect("valid endpoint"))
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

    // etcd goes away: the client keeps working on the last set.
    etcd.stop();
    for id in 0..10 {
        assert_eq!(client.order(id).await.ok().as_deref(), Some("b"));
    }

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
    let client = OrdersClient::builder()
        .discovery(EtcdDiscovery::new([etcd]).expect("valid endpoint"))
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
}
