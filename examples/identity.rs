//! Service identity end to end: an edge stand-in calls service A for a
//! user; A verifies the edge's JWT, passes the user on, and calls service B
//! with a JWT it mints itself; B verifies that token against A's published
//! key and checks it against a revocation list in Redis. Then the demo
//! revokes the token A used, and shows B refusing it.
//!
//! ```text
//! edge ──(edge JWT, x-user-id: alice)──▶ A ──(A's minted JWT, x-user-id)──▶ B
//!                                        │ serves its JWKS ◀── B fetches it
//!                                                            B ──▶ Redis (revoked jti?)
//! ```
//!
//! Run it with `cargo run --example identity --features redis`. It starts
//! its own `redis-server` (Debian's `redis-server` package) on a free
//! loopback port; without one installed it says so and exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use courier::auth::jwt::{ServiceJwt, SigningKey};
use courier::auth::revocation::{RedisRevocations, Revocations};
use courier::auth::verify::{Claims, Jwks, VerifyJwt, VerifyingKey};
use courier::context::ContextLayer;
use courier::{Error, client};
use http::HeaderName;

/// Service B's API, as A calls it.
#[client(name = "service-b")]
#[timeout("2s")]
pub trait ServiceB {
    /// Who B thinks is calling, and for whom.
    #[get("/whoami")]
    async fn whoami(&self) -> Result<String, Error>;
}

/// The secret the edge gateway and A share (the edge's tokens are HS256).
const EDGE_SECRET: &str = "edge and service A share this secret, 32+ bytes";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(redis) = LocalRedis::start().await? else {
        println!(
            "This demo needs redis-server (Debian: `apt-get install redis-server`); \
             it starts one of its own on a free loopback port. Not found: exiting."
        );
        return Ok(());
    };
    println!("redis-server on {}", redis.url);

    // Ports first: A and B must know each other's addresses.
    let a_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (a_url, b_url) = (url(a_listener.local_addr()?), url(b_listener.local_addr()?));

    // ===== service B: verifies A's JWTs, checks revocations =====
    let revocations = Arc::new(RedisRevocations::new(&redis.url)?);
    let b_state = BState::default();
    let verify_a = VerifyJwt::new(
        Jwks::new(format!("{a_url}/.well-known/jwks.json"))?,
        "service-b",
    )
    .issuer("service-a")
    .realm("service-b")
    .revocations(Arc::clone(&revocations));
    let b_app = Router::new()
        .route("/whoami", get(b_whoami))
        .layer(verify_a)
        .layer(ContextLayer::new().allow(HeaderName::from_static("x-user-id")))
        .layer(middleware::from_fn_with_state(
            b_state.clone(),
            count_refusals,
        ))
        .with_state(b_state.clone());
    tokio::spawn(async move { axum::serve(b_listener, b_app).await });

    // ===== service A: verifies the edge's JWT, mints its own for B =====
    let a_key = SigningKey::generate_es256()?.with_key_id("service-a-1");
    let a_jwks = a_key.jwks()?;
    let to_b = Arc::new(
        ServiceBClient::builder()
            .base_url(&b_url)
            .auth(ServiceJwt::new("service-a", a_key)) // aud: "service-b"
            .build()?,
    );
    let verify_edge = VerifyJwt::new(VerifyingKey::hs256(EDGE_SECRET)?, "service-a").issuer("edge");
    let a_app = Router::new()
        .route("/hello", get(a_hello))
        .layer(verify_edge)
        .layer(ContextLayer::new().allow(HeaderName::from_static("x-user-id")))
        .with_state(to_b)
        // The public key, outside the verifying layer: anyone may read it.
        .route(
            "/.well-known/jwks.json",
            get(move || {
                let jwks = a_jwks.clone();
                async move { jwks }
            }),
        );
    tokio::spawn(async move { axum::serve(a_listener, a_app).await });

    // ===== the edge stand-in =====
    let edge_jwt = ServiceJwt::new("edge", SigningKey::hs256(EDGE_SECRET)?);
    let http = reqwest::Client::new();
    let edge = |token: Option<String>| {
        let mut request = http
            .get(format!("{a_url}/hello"))
            .header("x-user-id", "alice")
            .header("x-request-id", "req-1")
            .header("cookie", "session=stays-at-the-edge");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        }
    };

    println!("\n1. the edge calls A for alice, with its JWT");
    let (status, body) = edge(Some(edge_jwt.mint("service-a")?.expose().to_owned())).await?;
    println!("   A answered {status}: {body}");

    println!("\n2. the edge calls A without a token");
    let (status, _) = edge(None).await?;
    println!("   A answered {status} (WWW-Authenticate: Bearer)");

    println!("\n3. revoke the token A used to call B (by its jti, until it expires)");
    let (used_token, used_claims) = b_state.last_seen().ok_or("B saw no token")?;
    revocations.revoke_token(&used_claims).await?;
    println!(
        "   revoked jti {} (Redis key {})",
        used_claims.jti().unwrap_or("?"),
        revocations.key(used_claims.jti().unwrap_or_default())
    );

    println!("\n4. someone replays that token to B");
    let replay = http
        .get(format!("{b_url}/whoami"))
        .bearer_auth(&used_token)
        .send()
        .await?;
    println!("   B answered {}", replay.status());

    println!("\n5. the edge calls A again; A's cached token is the revoked one");
    let refused_before = b_state.refusals.load(Ordering::SeqCst);
    let (status, body) = edge(Some(edge_jwt.mint("service-a")?.expose().to_owned())).await?;
    let refused = b_state.refusals.load(Ordering::SeqCst) - refused_before;
    let (_, fresh) = b_state.last_seen().ok_or("B saw no token")?;
    println!(
        "   B refused the revoked token {refused} time(s); A's client minted a new one \
         (jti {}) and sent the request once more",
        fresh.jti().unwrap_or("?")
    );
    println!("   A answered {status}: {body}");
    println!(
        "\nA revoked token is dead wherever it went; its signer is not: to shut A \
         out, B would stop trusting A's key."
    );
    Ok(())
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

// ===== service A =====

/// A's handler: runs in the request's context (x-user-id, x-request-id),
/// so its call to B carries them; the client adds A's own JWT.
async fn a_hello(
    State(b): State<Arc<ServiceBClient>>,
    Extension(caller): Extension<Claims>,
) -> Result<String, (StatusCode, String)> {
    let answer = b
        .whoami()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(format!(
        "A (called by {}) asked B: {answer}",
        caller.issuer().unwrap_or("?")
    ))
}

// ===== service B =====

/// What B remembers, for the demo: the last token it accepted, and how many
/// requests it refused.
#[derive(Clone, Default)]
struct BState {
    last: Arc<Mutex<Option<(String, Claims)>>>,
    refusals: Arc<AtomicUsize>,
}

impl BState {
    fn last_seen(&self) -> Option<(String, Claims)> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn b_whoami(
    State(state): State<BState>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
) -> String {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let user = headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nobody")
        .to_owned();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let cookie = if headers.contains_key("cookie") {
        "a cookie leaked!"
    } else {
        "no cookie"
    };
    let answer = format!(
        "B was called by {} for user {user} (request {request_id}, {cookie})",
        claims.subject().unwrap_or("?")
    );
    *state.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((token, claims));
    answer
}

/// Counts B's 401s (refusals by the verifying layer never reach a handler).
async fn count_refusals(State(state): State<BState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        state.refusals.fetch_add(1, Ordering::SeqCst);
    }
    response
}

// ===== a redis-server of our own =====

/// A redis-server on a free loopback port, in a temp dir, killed on drop.
struct LocalRedis {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl LocalRedis {
    /// `None` when `redis-server` is not installed.
    async fn start() -> Result<Option<LocalRedis>, Box<dyn std::error::Error + Send + Sync>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("courier-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = match Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let redis = LocalRedis {
            child,
            dir,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err("redis-server did not start in 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Some(redis))
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
