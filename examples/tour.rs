//! A tour of courier: starts a small user service in-process on 127.0.0.1
//! and calls it through a client generated from a trait, printing what
//! happens at each step.
//!
//! Run it with `cargo run --example tour`; it needs nothing else. With
//! `cargo run --example tour -- --hyper`, every client sends through the
//! lean transport (hyper-util without reqwest) instead: the tour reads the
//! same.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use courier::codec::Text;
use courier::multipart::Part;
use courier::{BodyStream, Error, Event, Inspect, client};
use serde::{Deserialize, Serialize};

// ===== the client: all a calling service writes =====

/// A user, as the user service returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: u64,
    /// The user's name.
    pub name: String,
}

/// A search filter, sent as query pairs; `None` fields are left out.
#[derive(Debug, Serialize)]
pub struct UserFilter {
    /// Part of the name.
    pub name: String,
    /// The page, from 1.
    pub page: Option<u32>,
}

/// What creating a user takes.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewUser {
    /// The new user's name.
    pub name: String,
}

/// The user service's HTTP API, as seen by its callers.
#[client(name = "user-service", path = "/api/v1")]
pub trait Users {
    /// One user by id.
    #[get("/users/{id}")]
    async fn get(&self, id: u64) -> Result<User, Error>;

    /// Users whose name contains `name`, a page at a time.
    #[get("/users")]
    async fn find(
        &self,
        #[query] name: &str,
        #[query("page")] page: Option<u32>,
    ) -> Result<Vec<User>, Error>;

    /// The same search, its filter a struct whose fields are the query
    /// pairs (Spring's `@SpringQueryMap`).
    #[get("/users")]
    async fn search(&self, #[query(map)] filter: &UserFilter) -> Result<Vec<User>, Error>;

    /// One user by id, at most 2 calls a second (a partner's quota): the
    /// third call in a burst fails at once, nothing sent.
    #[get("/users/{id}")]
    #[rate_limit(per_second = 2, burst = 2)]
    async fn get_metered(&self, id: u64) -> Result<User, Error>;

    /// Creates a user; the key makes a repeated request harmless.
    #[post("/users")]
    async fn create(
        &self,
        #[body] user: &NewUser,
        #[header("Idempotency-Key")] key: &str,
    ) -> Result<User, Error>;

    /// How many users there are, as plain text (`3`): another codec than
    /// JSON for this one method.
    #[get("/users/count")]
    #[codec(Text)]
    async fn count(&self) -> Result<u64, Error>;

    /// Uploads a user's avatar as `multipart/form-data`: a text field and
    /// a file part.
    #[post("/users/{id}/avatar")]
    async fn upload_avatar(
        &self,
        id: u64,
        #[multipart] caption: &str,
        #[multipart] image: Part,
    ) -> Result<String, Error>;

    /// Every user as NDJSON, streamed: read as it arrives, however large.
    #[get("/users/export")]
    async fn export(&self) -> Result<BodyStream, Error>;

    /// Imports users from NDJSON, the body streamed as it is produced
    /// (read once: never retried).
    #[post("/users/import")]
    async fn import(
        &self,
        #[header("Content-Type")] content_type: &str,
        #[body] ndjson: BodyStream,
    ) -> Result<String, Error>;

    /// One user by id, or `None` when there is no such user (404).
    #[get("/users/{id}")]
    async fn lookup(&self, id: u64) -> Result<Option<User>, Error>;

    /// The service's report, which fails today.
    #[get("/report")]
    async fn report(&self) -> Result<String, Error>;

    /// An endpoint whose JSON does not match `User`.
    #[get("/legacy/users/{id}")]
    async fn legacy(&self, id: u64) -> Result<User, Error>;

    /// An endpoint that fails twice out of three: retried with back-off.
    #[get("/flaky")]
    #[retry(max_attempts = 3, backoff = "20ms..100ms")]
    async fn flaky(&self) -> Result<String, Error>;

    /// An endpoint that hangs: the caller waits 300ms at most.
    #[get("/slow")]
    #[timeout("300ms")]
    async fn slow(&self) -> Result<String, Error>;

    /// Which of the caller's context headers reached the service.
    #[get("/whoami")]
    async fn whoami(&self) -> Result<String, Error>;
}

/// Stock levels, from the inventory service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stock {
    /// The article.
    pub sku: String,
    /// Units on hand.
    pub count: u32,
    /// True when the answer came from the fallback, not the service.
    #[serde(default)]
    pub stale: bool,
}

/// The inventory service, guarded by a breaker that opens after 4 calls of
/// which half failed, and stays open for a second.
#[client(name = "inventory", path = "/inventory/v1")]
#[retry(disabled)]
#[circuit_breaker(
    window = 4,
    min_calls = 4,
    failure_rate = 50,
    open_for = "1s",
    half_open_calls = 1
)]
pub trait Inventory {
    /// Stock of one article.
    #[get("/stock/{sku}")]
    async fn stock(&self, sku: &str) -> Result<Stock, Error>;
}

/// The pricing service, which runs as several instances found through
/// service discovery. Default policies: retry on another instance, breaker.
#[client(name = "pricing")]
pub trait Pricing {
    /// The price of an article, from whichever instance answers.
    #[get("/prices/{sku}")]
    async fn price(&self, sku: &str) -> Result<String, Error>;
}

/// What answers while the inventory service is down: "unknown, assume 0".
pub struct LastKnownStock;

#[courier::async_trait]
impl Inventory for LastKnownStock {
    async fn stock(&self, sku: &str) -> Result<Stock, Error> {
        Ok(Stock {
            sku: sku.to_owned(),
            count: 0,
            stale: true,
        })
    }
}

// ===== the demo service (what the other team runs) =====

#[derive(Default)]
struct Db {
    users: BTreeMap<u64, User>,
    next_id: u64,
    flaky_calls: u32,
    inventory_down: bool,
    inventory_calls: u32,
}

type Shared = Arc<Mutex<Db>>;

async fn get_user(State(db): State<Shared>, Path(id): Path<u64>) -> impl IntoResponse {
    let db = db.lock().unwrap_or_else(|e| e.into_inner());
    match db.users.get(&id) {
        Some(user) => Json(user.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such user").into_response(),
    }
}

#[derive(Deserialize)]
struct FindQuery {
    name: String,
    page: Option<u32>,
}

async fn find_users(State(db): State<Shared>, Query(q): Query<FindQuery>) -> Json<Vec<User>> {
    let db = db.lock().unwrap_or_else(|e| e.into_inner());
    let page = q.page.unwrap_or(1).max(1) as usize;
    let found = db
        .users
        .values()
        .filter(|u| u.name.to_lowercase().contains(&q.name.to_lowercase()))
        .skip((page - 1) * 10)
        .take(10)
        .cloned()
        .collect();
    Json(found)
}

async fn create_user(
    State(db): State<Shared>,
    headers: HeaderMap,
    Json(new): Json<NewUser>,
) -> impl IntoResponse {
    if !headers.contains_key("idempotency-key") {
        return (StatusCode::BAD_REQUEST, "Idempotency-Key required").into_response();
    }
    let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
    db.next_id += 1;
    let user = User {
        id: db.next_id,
        name: new.name,
    };
    db.users.insert(user.id, user.clone());
    (StatusCode::CREATED, Json(user)).into_response()
}

async fn count_users(State(db): State<Shared>) -> impl IntoResponse {
    let count = db.lock().unwrap_or_else(|e| e.into_inner()).users.len();
    (
        [("content-type", "text/plain; charset=utf-8")],
        count.to_string(),
    )
}

async fn upload_avatar(Path(id): Path<u64>, mut form: Multipart) -> impl IntoResponse {
    let mut seen = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        let file = field.file_name().map(str::to_owned);
        let kind = field.content_type().map(str::to_owned);
        let len = field.bytes().await.map_or(0, |b| b.len());
        seen.push(match (file, kind) {
            (Some(file), Some(kind)) => format!("{name}={file} ({kind}, {len} bytes)"),
            _ => format!("{name} ({len} bytes)"),
        });
    }
    format!("user {id}: stored {}", seen.join(", "))
}

async fn export_users(State(db): State<Shared>) -> impl IntoResponse {
    let users: Vec<User> = db
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .users
        .values()
        .cloned()
        .collect();
    // One chunk per user, as a large export would arrive.
    let lines = users.into_iter().map(|user| {
        let mut line = serde_json::to_vec(&user).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::io::Error>(line)
    });
    axum::body::Body::from_stream(futures::stream::iter(lines))
}

async fn import_users(headers: HeaderMap, body: String) -> String {
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    format!("imported {} lines of {kind}", body.lines().count())
}

async fn report() -> impl IntoResponse {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "{\"error\":\"report database is down\"}",
    )
}

async fn legacy_user(Path(id): Path<u64>) -> impl IntoResponse {
    // An old endpoint: the id is a string and the name is called `login`.
    (
        [("content-type", "application/json")],
        format!("{{\"id\":\"{id}\",\"login\":\"alice\"}}"),
    )
}

async fn flaky(State(db): State<Shared>) -> impl IntoResponse {
    let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
    db.flaky_calls += 1;
    if db.flaky_calls % 3 == 0 {
        (StatusCode::OK, format!("ok on call {}", db.flaky_calls))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "busy".to_owned())
    }
}

async fn slow() -> &'static str {
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    "finally"
}

async fn whoami(headers: HeaderMap) -> String {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    format!(
        "x-request-id={}, x-user-id={}, cookie={}",
        get("x-request-id"),
        get("x-user-id"),
        get("cookie")
    )
}

/// A gateway in front of the user service: it captures the allow-listed
/// headers of each request it serves, and its courier calls carry them.
async fn start_gateway(users: UsersClient) -> std::io::Result<String> {
    let app = axum::Router::new()
        .route(
            "/profile",
            get(move || async move { users.whoami().await.unwrap_or_else(|e| e.to_string()) }),
        )
        .layer(
            courier::context::ContextLayer::new()
                .allow(axum::http::HeaderName::from_static("x-user-id")),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

async fn stock(State(db): State<Shared>, Path(sku): Path<String>) -> impl IntoResponse {
    let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
    db.inventory_calls += 1;
    if db.inventory_down {
        return (StatusCode::INTERNAL_SERVER_ERROR, "database unreachable").into_response();
    }
    Json(Stock {
        sku,
        count: 42,
        stale: false,
    })
    .into_response()
}

/// One instance of the pricing service; `healthy: false` answers 503.
async fn start_pricing_instance(name: &'static str, healthy: bool) -> std::io::Result<String> {
    let app = axum::Router::new().route(
        "/prices/{sku}",
        get(move |Path(sku): Path<String>| async move {
            if healthy {
                (StatusCode::OK, format!("{sku}: 9.99 EUR (from {name})"))
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{name} is overloaded"),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

async fn start_demo_service() -> std::io::Result<(String, Shared)> {
    let mut db = Db::default();
    for name in ["Alice", "Bob", "Alina"] {
        db.next_id += 1;
        let id = db.next_id;
        db.users.insert(
            id,
            User {
                id,
                name: name.into(),
            },
        );
    }
    let shared: Shared = Arc::new(Mutex::new(db));
    let app = axum::Router::new()
        .route("/api/v1/users/{id}", get(get_user))
        .route("/api/v1/users", get(find_users).post(create_user))
        .route("/api/v1/users/count", get(count_users))
        .route("/api/v1/users/export", get(export_users))
        .route("/api/v1/users/import", axum::routing::post(import_users))
        .route(
            "/api/v1/users/{id}/avatar",
            axum::routing::post(upload_avatar),
        )
        .route("/api/v1/report", get(report))
        .route("/api/v1/legacy/users/{id}", get(legacy_user))
        .route("/api/v1/flaky", get(flaky))
        .route("/api/v1/slow", get(slow))
        .route("/api/v1/whoami", get(whoami))
        .route("/inventory/v1/stock/{sku}", get(stock))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("demo service stopped: {e}");
        }
    });
    Ok((format!("http://{addr}"), shared))
}

// ===== the tour =====

/// Makes `calls` price calls and counts which instance answered each.
async fn spread(pricing: &PricingClient, calls: u32) -> Result<BTreeMap<String, u32>, Error> {
    let mut answered_by = BTreeMap::new();
    for i in 0..calls {
        let answer = pricing.price(&format!("sku-{i}")).await?;
        let by = answer
            .rsplit("from ")
            .next()
            .unwrap_or("?")
            .trim_end_matches(')');
        *answered_by.entry(by.to_owned()).or_default() += 1;
    }
    Ok(answered_by)
}

fn step(title: &str) {
    println!("\n== {title}");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (base_url, service) = start_demo_service().await?;
    println!("demo user service listening on {base_url}");
    // `--hyper`: the lean transport for every client below; reqwest otherwise.
    let lean = std::env::args()
        .any(|arg| arg == "--hyper")
        .then(courier::transport::HyperTransport::new);
    println!(
        "clients send through {}",
        if lean.is_some() {
            "hyper-util (--hyper)"
        } else {
            "reqwest"
        }
    );

    let mut users = UsersClient::builder()
        .base_url(&base_url)
        .default_header("X-Caller", "tour");
    if let Some(lean) = &lean {
        users = users.hyper_transport(lean.clone());
    }
    let users = users.build()?;

    step("a typed GET: users.get(1)");
    let alice = users.get(1).await?;
    println!("-> {alice:?}");

    step("a query: users.find(\"al\", Some(1))  ->  GET /api/v1/users?name=al&page=1");
    let found = users.find("al", Some(1)).await?;
    println!("-> {} users: {found:?}", found.len());

    step(
        "a query map: users.search(&UserFilter { name: \"al\", page: None })  ->  GET /api/v1/users?name=al",
    );
    let filter = UserFilter {
        name: "al".into(),
        page: None,
    };
    let found = users.search(&filter).await?;
    println!("-> {} users: {found:?}", found.len());

    step("a POST with a JSON body and a header: users.create(&NewUser { .. }, \"key-1\")");
    let carol = users
        .create(
            &NewUser {
                name: "Carol".into(),
            },
            "key-1",
        )
        .await?;
    println!("-> created {carol:?}");

    step(
        "another codec for one method: users.count() reads the count as plain text (#[codec(Text)])",
    );
    println!("-> {} users", users.count().await?);

    step("a multipart upload: users.upload_avatar(1, \"me\", Part::bytes(png).file_name(..))");
    let png = Part::bytes(vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a])
        .file_name("avatar.png")
        .content_type("image/png");
    println!("-> {}", users.upload_avatar(1, "me", png).await?);

    step("a streamed download: users.export() read chunk by chunk as it arrives");
    let mut export = users.export().await?;
    let mut chunks = 0;
    while let Some(chunk) = futures::StreamExt::next(&mut export).await {
        chunks += 1;
        println!(
            "-> chunk {chunks}: {}",
            String::from_utf8_lossy(&chunk?).trim_end()
        );
    }

    step(
        "a streamed upload, proxied: users.import(\"application/x-ndjson\", users.export().await?)",
    );
    let export = users.export().await?;
    println!("-> {}", users.import("application/x-ndjson", export).await?);

    step("a 404 read as None: users.lookup(404)");
    let nobody = users.lookup(404).await?;
    println!("-> {nobody:?}");

    step("a status error: users.report()");
    match users.report().await {
        Ok(text) => println!("-> unexpected success: {text}"),
        Err(e) => {
            println!("-> error: {e}");
            println!(
                "   kind {:?}, status {:?}, body {:?}",
                e.kind(),
                e.status(),
                e.body_snippet().unwrap_or("")
            );
        }
    }

    step("a decode error: users.legacy(1) returns JSON that is not a User");
    match users.legacy(1).await {
        Ok(user) => println!("-> unexpected success: {user:?}"),
        Err(e) => {
            println!("-> error: {e}");
            println!("   body {:?}", e.body_snippet().unwrap_or(""));
        }
    }

    step("bad input is refused before anything is sent: a header value with CR LF");
    match users
        .create(
            &NewUser {
                name: "Mallory".into(),
            },
            "key\r\nX-Admin: true",
        )
        .await
    {
        Ok(user) => println!("-> unexpected success: {user:?}"),
        Err(e) => println!("-> error: {e}"),
    }

    step("the trait is dyn-compatible: Arc<dyn Users>");
    let api: Arc<dyn Users> = Arc::new(users.clone());
    println!("-> via dyn: {:?}", api.get(2).await?);

    println!("\n======== resilience: every method has its own policy ========");

    step("a retry recovering: users.flaky() gets 503, 503, then 200");
    let answer = users.flaky().await?;
    let calls = service.lock().map(|db| db.flaky_calls).unwrap_or(0);
    println!("-> {answer:?}, after {calls} requests (back-off with full jitter in between)");

    step("a timeout: users.slow() hangs for 5s, its #[timeout(\"300ms\")] does not");
    let started = std::time::Instant::now();
    match users.slow().await {
        Ok(text) => println!("-> unexpected success: {text}"),
        Err(e) => println!(
            "-> after {:?}: {e} (is_timeout: {})",
            started.elapsed(),
            e.is_timeout()
        ),
    }

    step(
        "a rate limit: users.get_metered(1) four times at once, #[rate_limit(per_second = 2, burst = 2)]",
    );
    let metered = futures::future::join_all((0..4).map(|_| users.get_metered(1))).await;
    for answer in &metered {
        match answer {
            Ok(user) => println!("-> {user:?}"),
            Err(e) => println!(
                "-> refused, nothing sent: {e} (is_rate_limited: {})",
                e.is_rate_limited()
            ),
        }
    }

    step("a breaker opening, then the fallback answering: the inventory service goes down");
    let mut inventory = InventoryClient::builder()
        .base_url(&base_url)
        .fallback(LastKnownStock)
        .on_event(|event: &Event<'_>| println!("   [event] {event}"));
    if let Some(lean) = &lean {
        inventory = inventory.hyper_transport(lean.clone());
    }
    let inventory = inventory.build()?;
    let set_down = |down: bool| {
        if let Ok(mut db) = service.lock() {
            db.inventory_down = down;
        }
    };
    let inventory_calls = || service.lock().map(|db| db.inventory_calls).unwrap_or(0);
    set_down(true);
    for i in 1..=6 {
        let stock = inventory.stock("sku-7").await?;
        println!(
            "-> call {i}: {stock:?}  (breaker {:?}, requests reaching the service: {})",
            inventory.circuit_state("stock"),
            inventory_calls()
        );
    }

    step("recovery after open_for: the service is back, one trial call closes the breaker");
    set_down(false);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let stock = inventory.stock("sku-7").await?;
    println!(
        "-> {stock:?}  (breaker {:?})",
        inventory.circuit_state("stock")
    );

    println!("\n======== discovery and client-side balancing ========");

    step("three instances of `pricing`, one of them failing (503); round robin");
    let discovery = courier::StaticDiscovery::new();
    let mut urls = Vec::new();
    for (name, healthy) in [("p1", true), ("p2", false), ("p3", true)] {
        let url = start_pricing_instance(name, healthy).await?;
        discovery.add("pricing", courier::Instance::new(name, &url));
        urls.push((name, url));
    }
    let mut pricing = PricingClient::builder()
        .discovery(discovery.clone())
        .balance(courier::Balance::RoundRobin)
        .outlier_ejection(courier::OutlierEjection {
            base_time: std::time::Duration::from_secs(2),
            ..Default::default()
        });
    if let Some(lean) = lean {
        pricing = pricing.hyper_transport(lean);
    }
    let pricing = pricing.build()?;
    let answered_by = spread(&pricing, 12).await?;
    println!(
        "-> 12 calls, all answered (an attempt on p2 is retried on another instance): {answered_by:?}"
    );
    let instances = pricing.instances().ok_or("pricing uses discovery")?;
    let p2_ejected = instances.iter().any(|i| i.id == "p2" && i.ejected);
    println!(
        "-> after 5 consecutive failures p2 is ejected: {p2_ejected} (for 2 s here, 30 s by default)"
    );

    step("instances change at run time: p4 joins, p1 leaves");
    let url = start_pricing_instance("p4", true).await?;
    discovery.add("pricing", courier::Instance::new("p4", &url));
    discovery.remove("pricing", "p1");
    // The very next call sees the change.
    let answered_by = spread(&pricing, 6).await?;
    println!("-> 6 calls: {answered_by:?}");

    println!("\n======== context: what a request carries, passed on ========");

    step(
        "a gateway (ContextLayer: x-request-id, traceparent, …, x-user-id) calls the user service",
    );
    let gateway = start_gateway(users.clone()).await?;
    let seen = reqwest::Client::new()
        .get(format!("{gateway}/profile"))
        .header("x-request-id", "req-42")
        .header("x-user-id", "alice")
        .header("cookie", "session=stays-at-the-gateway")
        .send()
        .await?
        .text()
        .await?;
    println!("-> the user service saw: {seen}");
    println!("   (allow-listed headers go on; everything else, the cookie too, stays behind)");

    println!("\ntour finished");
    Ok(())
}
