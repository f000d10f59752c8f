//! HTTP logs at Feign's levels, through `tracing`, captured as text: what
//! each level shows, and that no planted secret appears at any level.

use std::io::Write;
use std::sync::{Arc, Mutex};

use courier::{Config, Error, client};
use tracing_subscriber::fmt::MakeWriter;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[client(name = "vault")]
#[retry(disabled)]
#[circuit_breaker(disabled)]
trait Vault {
    #[post("/secrets/{name}")]
    #[log(level = "full", body_limit = 64)]
    async fn store(
        &self,
        name: &str,
        #[query] token: &str,
        #[header("authorization")] auth: &str,
        #[body] body: &serde_json::Value,
    ) -> Result<String, Error>;

    #[get("/secrets/{name}")]
    #[log(level = "basic")]
    async fn read(&self, name: &str, #[query] token: &str) -> Result<String, Error>;

    #[get("/secrets/{name}")]
    async fn quiet(&self, name: &str) -> Result<String, Error>;
}

/// Everything the subscriber writes, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().map(|b| b.clone()).unwrap_or_default()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_level_logs_what_it_says_and_no_secret() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(path("/secrets/db"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("set-cookie", "session=c00kie")
                .insert_header("x-served-by", "vault-7")
                .set_body_string("stored"),
        )
        .mount(&server)
        .await;
    let vault = support::builder::<VaultClient>()
        .base_url(server.uri())
        .default_header("x-api-key", "k3y-planted")
        .build()
        .expect("valid");

    let body = serde_json::json!({ "value": "visible-body" });
    vault
        .store("db", "t0ken-planted", "Bearer b3arer-planted", &body)
        .await
        .expect("stored");
    let full = captured.text();
    assert!(
        full.contains("---> POST /secrets/db?token=[redacted]"),
        "{full}"
    );
    assert!(full.contains("authorization: [redacted]"), "{full}");
    assert!(full.contains("x-api-key: [redacted]"), "{full}");
    assert!(full.contains("visible-body"), "full shows bodies: {full}");
    assert!(full.contains("<--- 200 POST /secrets/{name}"), "{full}");
    assert!(full.contains("x-served-by: vault-7"), "{full}");
    assert!(full.contains("set-cookie: [redacted]"), "{full}");

    vault.read("db", "t0ken-planted").await.expect("read");
    let basic = captured.text()[full.len()..].to_owned();
    assert!(basic.contains("<--- 200 GET /secrets/{name}"), "{basic}");
    assert!(
        !basic.contains("x-served-by"),
        "basic has no headers: {basic}"
    );

    vault.quiet("db").await.expect("read");
    let quiet = captured.text()[full.len() + basic.len()..].to_owned();
    assert!(!quiet.contains("<---"), "none logs nothing: {quiet}");

    let all = captured.text();
    for secret in ["t0ken-planted", "b3arer-planted", "k3y-planted", "c00kie"] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_level_comes_from_config_too_and_failures_are_logged() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let config = Config::from_toml_str(
        r#"
        [clients.vault.methods.quiet]
        log.level = "basic"
        "#,
    )
    .expect("valid");
    // A port nothing listens on (bound, then let go).
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| format!("http://{a}"))
        .expect("a free port");
    let vault = support::builder::<VaultClient>()
        .base_url(down)
        .config(&config)
        .build()
        .expect("valid");
    let err = vault.quiet("db").await.expect_err("nothing listens");
    assert!(err.is_connect());
    let text = captured.text();
    assert!(
        text.contains("<--- ERROR GET /secrets/{name} Connect"),
        "{text}"
    );
}

/// `headers` shows the headers and no body; `full` cuts a body at its
/// `body_limit` and says how long it was.
#[tokio::test(flavor = "current_thread")]
async fn headers_shows_no_body_and_full_cuts_bodies_at_the_limit() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let long = "0123456789".repeat(20); // 200 bytes, over store's 64
    let server = MockServer::start().await;
    Mock::given(path("/secrets/db"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-served-by", "vault-7")
                .set_body_string(long.clone()),
        )
        .mount(&server)
        .await;
    let config = Config::from_toml_str(
        r#"
        [clients.vault.methods.read]
        log.level = "headers"
        "#,
    )
    .expect("valid");
    let vault = support::builder::<VaultClient>()
        .base_url(server.uri())
        .config(&config)
        .build()
        .expect("valid");

    vault.read("db", "t").await.expect("read");
    let headers = captured.text();
    assert!(headers.contains("x-served-by: vault-7"), "{headers}");
    assert!(
        !headers.contains("0123456789"),
        "no body at headers: {headers}"
    );

    let body = serde_json::json!({ "value": long });
    vault
        .store("db", "t", "Bearer b", &body)
        .await
        .expect("stored");
    let full = captured.text()[headers.len()..].to_owned();
    // The response body: its first 64 bytes, then how long it was.
    let cut = format!("{}… (200 bytes in all)", &long[..64]);
    assert!(full.contains(&cut), "{full}");
    assert!(
        !full.contains(&long[..65]),
        "nothing past the limit: {full}"
    );
}

/// The client's events reach `tracing` at their levels (target `courier`):
/// a retry and a fallback at INFO, a hedge at DEBUG, a breaker opening at
/// WARN.
#[tokio::test(flavor = "current_thread")]
async fn events_reach_tracing_at_their_levels() {
    #[client(name = "levels")]
    #[retry(max_attempts = 2, backoff = "1ms..2ms")]
    #[circuit_breaker(window = 2, min_calls = 2, failure_rate = 100, open_for = "10s")]
    trait Levels {
        #[get("/fail")]
        async fn fail(&self) -> Result<String, Error>;

        #[get("/slow")]
        #[retry(disabled)]
        #[circuit_breaker(disabled)]
        #[hedge(delay = "20ms")]
        async fn slow(&self) -> Result<String, Error>;
    }
    struct Cached;
    #[courier::async_trait]
    impl Levels for Cached {
        async fn fail(&self) -> Result<String, Error> {
            Ok("cached".into())
        }
        async fn slow(&self) -> Result<String, Error> {
            Ok("cached".into())
        }
    }

    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = MockServer::start().await;
    Mock::given(path("/fail"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(path("/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("late")
                .set_delay(std::time::Duration::from_millis(200)),
        )
        .mount(&server)
        .await;
    let client = support::builder::<LevelsClient>()
        .base_url(server.uri())
        .fallback(Cached)
        .build()
        .expect("valid");
    // Two attempts (one retry), both failing: the breaker opens; the
    // fallback answers.
    assert_eq!(client.fail().await.ok().as_deref(), Some("cached"));
    assert_eq!(client.slow().await.ok().as_deref(), Some("late"));

    let text = captured.text();
    let line = |message: &str| {
        text.lines()
            .find(|l| l.contains(message))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no `{message}` in:\n{text}"))
    };
    for (message, level) in [
        ("retrying", " INFO "),
        ("circuit breaker opened", " WARN "),
        ("fallback answered", " INFO "),
        ("hedge sent", "DEBUG "),
    ] {
        let l = line(message);
        assert!(
            l.contains(level) && l.contains(" courier: "),
            "`{message}` not at {level} with target courier: {l}"
        );
    }
}
