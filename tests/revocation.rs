//! Revocation by `jti` in a real Redis (Debian's `redis-server`;
//! `scripts/test` installs it), started by the test on a free loopback port
//! in a temp dir: revoking keeps the id exactly as long as the token lives,
//! the verifier refuses a revoked token, and when Redis goes away it fails
//! closed (503) or open, as chosen, with an event, and recovers when Redis
//! comes back.
#![cfg(feature = "redis")]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::routing::get;
use courier::Event;
use courier::auth::revocation::{RedisRevocations, Revocations};
use courier::auth::verify::{VerifyJwt, VerifyingKey};
use http::HeaderValue;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

mod support;
use support::{eventually, serve};

const SECRET: &str = "an HMAC secret of at least 32 bytes, for tests";

/// A redis-server of our own, killed and its files removed on drop. Its
/// append-only file is synced on every write, so revocations survive a
/// crash (`kill -9`) as they must in production.
struct Redis {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Redis {
    async fn start() -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("courier-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut redis = Redis {
            child: None,
            dir,
            port,
        };
        redis.launch().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server must be installed (Debian's redis-server; scripts/test installs it)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        client.get_multiplexed_async_connection().await.ok()
    }

    async fn ping(&self) -> bool {
        match self.connection().await {
            Some(mut c) => redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok(),
            None => false,
        }
    }

    async fn ttl(&self, key: &str) -> i64 {
        let mut c = self.connection().await.expect("connected");
        redis::cmd("TTL")
            .arg(key)
            .query_async(&mut c)
            .await
            .expect("TTL")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn token(jti: &str, lifetime: u64) -> String {
    let claims = json!({
        "iss": "billing", "aud": "ledger", "iat": now(), "exp": now() + lifetime, "jti": jti,
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("a key");
    jsonwebtoken::encode(&Header::default(), &claims, &key).expect("signed")
}

fn verifier(revocations: &Arc<RedisRevocations>) -> VerifyJwt {
    let key = VerifyingKey::hs256(SECRET).expect("a key");
    VerifyJwt::new(key, "ledger").revocations(Arc::clone(revocations))
}

async fn verdict(verify: &VerifyJwt, token: &str) -> &'static str {
    let value = HeaderValue::try_from(format!("Bearer {token}")).expect("a header");
    match verify.verify(Some(&value)).await {
        Ok(_) => "accepted",
        Err(rejection) => rejection.reason(),
    }
}

/// Revoking keeps the id exactly as long as its token would live: the
/// store stays as small as the set of live revoked tokens.
#[tokio::test]
async fn a_revoked_id_is_kept_as_long_as_its_token_lives() {
    let redis = Redis::start().await;
    let revocations = RedisRevocations::new(&redis.url()).expect("a URL");

    let expires = SystemTime::now() + Duration::from_secs(120);
    revocations
        .revoke("j-live", expires)
        .await
        .expect("revoked");
    revocations
        .revoke("j-dead", SystemTime::now() - Duration::from_secs(1))
        .await
        .expect("nothing to do");

    let ttl = redis.ttl(&revocations.key("j-live")).await;
    assert!((118..=120).contains(&ttl), "TTL {ttl}");
    assert_eq!(
        redis.ttl(&revocations.key("j-dead")).await,
        -2,
        "never stored"
    );
    assert!(revocations.is_revoked("j-live").await.expect("answered"));
    assert!(!revocations.is_revoked("j-other").await.expect("answered"));
}

/// Through the layer: the token works, is revoked (from its claims), and
/// is refused from then on; other tokens are not affected.
#[tokio::test]
async fn a_revoked_token_is_refused_and_others_are_not() {
    let redis = Redis::start().await;
    let revocations = Arc::new(RedisRevocations::new(&redis.url()).expect("a URL"));
    let verify = verifier(&revocations);
    let (first, second) = (token("j-1", 300), token("j-2", 300));
    let app = axum::Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(verify.clone());
    let base = serve(app).await;
    let call = |token: String| {
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .get(&base)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };

    assert_eq!(call(first.clone()).await, 200);
    let claims = verify
        .verify(
            HeaderValue::try_from(format!("Bearer {first}"))
                .ok()
                .as_ref(),
        )
        .await
        .expect("valid");
    revocations.revoke_token(&claims).await.expect("revoked");

    assert_eq!(call(first.clone()).await, 401);
    assert_eq!(verdict(&verify, &first).await, "revoked");
    assert_eq!(call(second).await, 200);
    let ttl = redis.ttl(&revocations.key("j-1")).await;
    assert!((298..=300).contains(&ttl), "TTL {ttl}");
    // With revocations on, a token must have an id to be revocable.
    let no_jti = jsonwebtoken::encode(
        &Header::default(),
        &json!({"aud": "ledger", "exp": now() + 60}),
        &EncodingKey::from_secret(SECRET.as_bytes()).expect("a key"),
    )
    .expect("signed");
    assert_eq!(verdict(&verify, &no_jti).await, "no jti");
}

/// Redis goes down: fail closed (503, at once) by default, fail open by
/// choice, with an event either way; Redis comes back: revoked tokens are
/// refused again (the append-only file kept them) and good ones pass.
#[tokio::test]
async fn redis_going_down_fails_closed_or_open_and_coming_back_recovers() {
    let mut redis = Redis::start().await;
    let revocations = Arc::new(RedisRevocations::new(&redis.url()).expect("a URL"));
    let events = Arc::new(Mutex::new(Vec::new()));
    let (closed_seen, open_seen) = (Arc::clone(&events), Arc::clone(&events));
    let closed = verifier(&revocations).on_event(move |e: &Event<'_>| {
        closed_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(e.to_string());
    });
    let open = verifier(&revocations)
        .fail_open()
        .on_event(move |e: &Event<'_>| {
            open_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e.to_string());
        });
    let (good, revoked) = (token("j-good", 300), token("j-revoked", 300));
    revocations
        .revoke("j-revoked", SystemTime::now() + Duration::from_secs(300))
        .await
        .expect("revoked");
    assert_eq!(verdict(&closed, &good).await, "accepted");
    assert_eq!(verdict(&closed, &revoked).await, "revoked");

    redis.stop();
    let started = Instant::now();
    assert_eq!(
        verdict(&closed, &good).await,
        "revocation store unavailable"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(verdict(&open, &good).await, "accepted", "fail open");
    assert_eq!(
        verdict(&open, &revoked).await,
        "accepted",
        "the price of failing open"
    );
    let app = axum::Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(closed.clone());
    let base = serve(app).await;
    let response = reqwest::Client::new()
        .get(&base)
        .bearer_auth(&good)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers().get("retry-after"),
        Some(&HeaderValue::from_static("1"))
    );
    {
        let events = events.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            events.iter().any(|e| e.contains("refused (fail closed)")),
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| e.contains("let through (fail open)")),
            "{events:?}"
        );
    }

    redis.launch().await; // the same port and directory
    let recovered = eventually(Duration::from_secs(10), || async {
        verdict(&closed, &good).await == "accepted"
    })
    .await;
    assert!(recovered, "the verifier reconnects by itself");
    assert_eq!(
        verdict(&closed, &revoked).await,
        "revoked",
        "kept across the crash"
    );
    assert_eq!(verdict(&open, &revoked).await, "revoked");
}
