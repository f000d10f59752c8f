//! Config files override attributes without recompiling, key by key, in the
//! documented precedence; bad config is rejected with a clear error.

use std::time::Duration;

use courier::{Config, Error, ErrorKind, Inspect, client};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[client(name = "inventory")]
#[timeout("4s")]
#[retry(max_attempts = 4, backoff = "10ms..20ms")]
trait Inventory {
    /// Trait level only.
    #[get("/a")]
    async fn plain(&self) -> Result<(), Error>;

    /// Its own attribute. (Only its resolved policy is inspected.)
    #[allow(dead_code)]
    #[get("/b")]
    #[timeout("3s")]
    #[retry(max_attempts = 2)]
    async fn tuned(&self) -> Result<(), Error>;

    #[post("/c")]
    async fn write(&self) -> Result<(), Error>;
}

fn secs(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_secs())
}

fn build(config: &str) -> Result<InventoryClient, Error> {
    let config = Config::from_toml_str(config)?;
    support::builder::<InventoryClient>()
        .base_url("http://127.0.0.1:9")
        .config(&config)
        .build()
}

#[test]
fn precedence_is_config_method_then_attribute_then_config_client_then_trait_then_default() {
    let none = build("").expect("empty config");
    let policy = |c: &InventoryClient, m: &str| c.method_policy(m).copied().expect("method exists");

    // Without config: method attribute, then trait attribute, then default.
    assert_eq!(policy(&none, "plain").timeout, Duration::from_secs(4));
    assert_eq!(policy(&none, "tuned").timeout, Duration::from_secs(3));
    assert_eq!(
        policy(&none, "tuned").retry.map(|r| r.max_attempts),
        Some(2)
    );
    assert_eq!(
        policy(&none, "tuned").retry.map(|r| r.backoff_base),
        Some(Duration::from_millis(10)),
        "keys the method does not name come from the trait"
    );
    assert_eq!(
        policy(&none, "plain").circuit.map(|c| c.window),
        Some(20),
        "default"
    );

    // Config client level beats the trait attribute, not the method's.
    let client_level = build(
        r#"
        [clients.inventory]
        timeout = "2s"
        circuit_breaker.window = 30
        "#,
    )
    .expect("valid");
    assert_eq!(
        policy(&client_level, "plain").timeout,
        Duration::from_secs(2)
    );
    assert_eq!(
        policy(&client_level, "tuned").timeout,
        Duration::from_secs(3)
    );
    assert_eq!(
        policy(&client_level, "tuned").circuit.map(|c| c.window),
        Some(30)
    );

    // Config method level beats everything.
    let method_level = build(
        r#"
        [clients.inventory]
        timeout = "2s"
        [clients.inventory.methods.tuned]
        timeout = "1s"
        retry.max_attempts = 5
        "#,
    )
    .expect("valid");
    assert_eq!(
        secs(method_level.method_policy("tuned").map(|p| p.timeout)),
        Some(1)
    );
    assert_eq!(
        method_level
            .method_policy("tuned")
            .and_then(|p| p.retry)
            .map(|r| r.max_attempts),
        Some(5)
    );
    assert_eq!(
        secs(method_level.method_policy("plain").map(|p| p.timeout)),
        Some(2)
    );
}

#[test]
fn other_clients_sections_are_fine_but_unknown_methods_are_not() {
    let other = build("[clients.billing]\ntimeout = \"1s\"").expect("another client's section");
    assert_eq!(
        secs(other.method_policy("plain").map(|p| p.timeout)),
        Some(4)
    );

    let err =
        build("[clients.inventory.methods.plian]\ntimeout = \"1s\"").expect_err("misspelt method");
    assert_eq!(err.kind(), ErrorKind::Config);
    let shown = err.to_string();
    assert!(
        shown.contains("plian") && shown.contains("plain, tuned, write"),
        "{shown}"
    );
}

#[test]
fn bad_config_is_rejected_naming_key_and_source() {
    let dir = std::env::temp_dir().join(format!("courier-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("courier.toml");
    std::fs::write(&file, "[clients.inventory]\nretry.max_attempts = 0\n").expect("write");
    let err = Config::from_toml_file(&file).expect_err("0 attempts");
    let shown = err.to_string();
    assert!(shown.contains("courier.toml"), "{shown}");
    assert!(
        shown.contains("clients.inventory.retry.max_attempts"),
        "{shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    for (toml, key) in [
        ("[clients.inventory]\ntimout = \"1s\"", "timout"),
        ("[clients.inventory]\ntimeout = 5", "timeout"),
        (
            "[clients.inventory]\ncircuit_breaker.failure_rate = 101",
            "failure_rate",
        ),
        (
            "[clients.inventory]\nbulkhead.max_concurrent = 0",
            "max_concurrent",
        ),
    ] {
        let err = build(toml).expect_err(toml);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[tokio::test]
async fn a_config_file_changes_behaviour_without_recompiling() {
    let server = MockServer::start().await;
    Mock::given(path("/a"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let config = Config::from_toml_str(
        r#"
        [clients.inventory.methods.plain]
        retry.disabled = true
        "#,
    )
    .expect("valid");
    let attrs_only = support::builder::<InventoryClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    let err = attrs_only.plain().await.expect_err("503");
    assert_eq!(err.attempts(), 4, "the trait's max_attempts");
    let configured = support::builder::<InventoryClient>()
        .base_url(server.uri())
        .config(&config)
        .build()
        .expect("valid");
    let err = configured.plain().await.expect_err("503");
    assert_eq!(err.attempts(), 1, "retry disabled by config");
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 5);
}

#[tokio::test]
async fn config_retry_on_a_post_still_never_replays_a_sent_write() {
    let server = MockServer::start().await;
    Mock::given(path("/c"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let config = Config::from_toml_str("[clients.inventory.methods.write]\nretry.max_attempts = 5")
        .expect("valid");
    let c = support::builder::<InventoryClient>()
        .base_url(server.uri())
        .config(&config)
        .build()
        .expect("valid");
    let err = c.write().await.expect_err("503");
    assert_eq!(err.attempts(), 1);
}
