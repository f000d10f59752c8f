//! Context propagation over two real hops: an edge request reaches service
//! A (axum, with `ContextLayer`), whose handler calls service B through a
//! courier client. B must see the allow-listed headers of the edge request
//! and nothing else; a header the call sets itself wins; spawned tasks keep
//! the context when spawned with `courier::context::spawn`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use courier::context::ContextLayer;
use courier::{Error, client};
use http::HeaderName;
use wiremock::MockServer;

mod support;
use support::{healthy, serve};

#[client(name = "b")]
#[retry(disabled)]
trait B {
    #[get("/echo")]
    async fn echo(&self) -> Result<String, Error>;

    #[get("/echo")]
    async fn echo_with_id(&self, #[header("x-request-id")] id: &str) -> Result<String, Error>;
}

#[derive(Clone)]
struct Clients {
    plain: Arc<BClient>,
    with_default: Arc<BClient>,
    #[cfg(feature = "auth")]
    authed: Arc<BClient>,
}

async fn plain(State(c): State<Clients>) -> String {
    c.plain.echo().await.unwrap_or_else(|e| e.to_string())
}

async fn own_id(State(c): State<Clients>) -> String {
    c.plain
        .echo_with_id("own-id")
        .await
        .unwrap_or_else(|e| e.to_string())
}

async fn with_default(State(c): State<Clients>) -> String {
    c.with_default
        .echo()
        .await
        .unwrap_or_else(|e| e.to_string())
}

async fn spawned(State(c): State<Clients>) -> String {
    let kept = courier::context::spawn(async move { c.plain.echo().await });
    match kept.await {
        Ok(Ok(body)) => body,
        _ => "failed".into(),
    }
}

async fn unspawned(State(c): State<Clients>) -> String {
    let lost = tokio::spawn(async move { c.plain.echo().await });
    match lost.await {
        Ok(Ok(body)) => body,
        _ => "failed".into(),
    }
}

#[cfg(feature = "auth")]
async fn authed(State(c): State<Clients>) -> String {
    c.authed.echo().await.unwrap_or_else(|e| e.to_string())
}

/// Service A in front of B, capturing `layer`'s headers.
async fn service_a(b: &MockServer, layer: ContextLayer) -> String {
    let client = |builder: courier::ClientBuilder<BClient>| {
        Arc::new(builder.base_url(b.uri()).build().expect("a client"))
    };
    let clients = Clients {
        plain: client(support::builder::<BClient>()),
        with_default: client(
            support::builder::<BClient>().default_header("x-user-id", "a-default"),
        ),
        #[cfg(feature = "auth")]
        authed: client(support::builder::<BClient>().auth(courier::auth::Auth::bearer("a-own"))),
    };
    let app = axum::Router::new()
        .route("/plain", get(plain))
        .route("/own-id", get(own_id))
        .route("/with-default", get(with_default))
        .route("/spawned", get(spawned))
        .route("/unspawned", get(unspawned));
    #[cfg(feature = "auth")]
    let app = app.route("/authed", get(authed));
    serve(app.layer(layer).with_state(clients)).await
}

/// The edge: a request to A carrying identity, tracing and things that
/// must stay at A.
async fn edge(a: &str, route: &str) {
    let response = reqwest::Client::new()
        .get(format!("{a}{route}"))
        .header("x-request-id", "req-1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("baggage", "tenant=eu")
        .header("x-user-id", "alice")
        .header("authorization", "Bearer edge-token")
        .header("cookie", "session=PLANTED")
        .header("x-internal", "secret-ish")
        .send()
        .await
        .expect("A answers");
    assert!(response.status().is_success(), "{}", response.status());
    let body = response.text().await.unwrap_or_default();
    assert_eq!(body, "ok", "A's call to B: {body}");
}

/// The headers of B's last request, as `name: value` lines for the names
/// asked.
async fn seen_by_b(b: &MockServer, names: &[&str]) -> Vec<String> {
    let requests = b.received_requests().await.unwrap_or_default();
    let Some(last) = requests.last() else {
        return vec!["no request".into()];
    };
    names
        .iter()
        .flat_map(|name| {
            last.headers
                .get_all(*name)
                .iter()
                .map(move |v| format!("{name}: {}", v.to_str().unwrap_or("?")))
        })
        .collect()
}

const ALL: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "baggage",
    "x-user-id",
    "authorization",
    "cookie",
    "x-internal",
];

/// Deny by default: B sees the default allow-list and the added
/// `x-user-id`, never the cookie, the caller's token or the rest.
#[tokio::test]
async fn allow_listed_headers_reach_the_next_service_and_nothing_else() {
    let b = healthy("ok").await;
    let a = service_a(
        &b,
        ContextLayer::new().allow(HeaderName::from_static("x-user-id")),
    )
    .await;

    edge(&a, "/plain").await;

    assert_eq!(
        seen_by_b(&b, ALL).await,
        [
            "x-request-id: req-1",
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "baggage: tenant=eu",
            "x-user-id: alice",
        ]
    );
}

/// With an empty allow-list nothing at all is forwarded.
#[tokio::test]
async fn an_empty_allow_list_forwards_nothing() {
    let b = healthy("ok").await;
    let a = service_a(&b, ContextLayer::none()).await;
    edge(&a, "/plain").await;
    assert_eq!(seen_by_b(&b, ALL).await, Vec::<String>::new());
}

/// The call's own header and the client's default header win over the
/// propagated ones.
#[tokio::test]
async fn a_header_the_call_or_the_client_sets_wins() {
    let b = healthy("ok").await;
    let a = service_a(
        &b,
        ContextLayer::new().allow(HeaderName::from_static("x-user-id")),
    )
    .await;

    edge(&a, "/own-id").await;
    let seen = seen_by_b(&b, &["x-request-id", "x-user-id"]).await;
    assert_eq!(seen, ["x-request-id: own-id", "x-user-id: alice"]);

    edge(&a, "/with-default").await;
    let seen = seen_by_b(&b, &["x-request-id", "x-user-id"]).await;
    assert_eq!(seen, ["x-request-id: req-1", "x-user-id: a-default"]);
}

/// A task-local does not follow `tokio::spawn`; `courier::context::spawn`
/// carries it.
#[tokio::test]
async fn spawned_tasks_keep_the_context_only_through_courier_spawn() {
    let b = healthy("ok").await;
    let a = service_a(&b, ContextLayer::new()).await;

    edge(&a, "/spawned").await;
    assert_eq!(
        seen_by_b(&b, &["x-request-id"]).await,
        ["x-request-id: req-1"]
    );

    edge(&a, "/unspawned").await;
    assert_eq!(seen_by_b(&b, &["x-request-id"]).await, Vec::<String>::new());
}

/// A caller's `authorization` may be allowed on; a client with `.auth(…)`
/// sends its own instead.
#[cfg(feature = "auth")]
#[tokio::test]
async fn the_clients_own_credentials_replace_a_propagated_authorization() {
    let b = healthy("ok").await;
    let a = service_a(
        &b,
        ContextLayer::new().allow(HeaderName::from_static("authorization")),
    )
    .await;

    edge(&a, "/plain").await;
    assert_eq!(
        seen_by_b(&b, &["authorization"]).await,
        ["authorization: Bearer edge-token"]
    );

    edge(&a, "/authed").await;
    assert_eq!(
        seen_by_b(&b, &["authorization", "x-request-id"]).await,
        ["authorization: Bearer a-own", "x-request-id: req-1"]
    );
}

/// Outside any served request, calls carry nothing extra.
#[tokio::test]
async fn calls_outside_a_request_carry_nothing() {
    let b = healthy("ok").await;
    let client = support::builder::<BClient>()
        .base_url(b.uri())
        .build()
        .expect("a client");
    client.echo().await.expect("ok");
    assert_eq!(seen_by_b(&b, ALL).await, Vec::<String>::new());
}
