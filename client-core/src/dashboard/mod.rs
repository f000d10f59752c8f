//! A live dashboard of every built client (feature `dashboard`): Hystrix's
//! dashboard, made live again, as an [`axum::Router`] your service mounts.
//!
//! Why: a breaker that opens at 3 a.m. is only useful if someone can see
//! that it did, which method it guards, what its dependency is doing and
//! what the policy around it actually is after attributes, config and
//! defaults. Hystrix showed that for every command on one page; its
//! dashboard and Turbine are gone, and Resilience4j leaves the picture to a
//! Grafana you have to assemble. courier already keeps live counters of
//! every client ([`observe::stats`](crate::observe::stats)), so the page
//! needs no metrics pipeline: mount the router, open the page.
//!
//! ```no_run
//! use axum::Router;
//! use axum::extract::Request;
//! use axum::http::StatusCode;
//! use axum::middleware::{self, Next};
//! use axum::response::{IntoResponse, Response};
//!
//! /// Stands in for your service's own authentication and authorization.
//! async fn operators_only(request: Request, next: Next) -> Response {
//!     if is_operator(request.headers()) {
//!         next.run(request).await
//!     } else {
//!         StatusCode::UNAUTHORIZED.into_response()
//!     }
//! }
//! # fn is_operator(_: &axum::http::HeaderMap) -> bool { false }
//!
//! # async fn demo() -> std::io::Result<()> {
//! let app: Router = Router::new()
//!     // … your routes …
//!     .nest(
//!         "/courier",
//!         courier::dashboard::router().layer(middleware::from_fn(operators_only)),
//!     );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await // the page is at http://127.0.0.1:8080/courier
//! # }
//! ```
//!
//! | route (under the mount point) | what |
//! |---|---|
//! | `GET /` | the page: one HTML document, its CSS and JavaScript inline (no CDN, no build step; works offline) |
//! | `GET /stream` | Server-Sent Events: one JSON report per [`interval`](Dashboard::interval), with the rates since the previous one |
//! | `GET /snapshot` | the same report once, without rates: Spring's actuator `circuitbreakers`, for scripts |
//! | `POST /breakers/{service}/{method}` | an operator's override (only when [enabled](Dashboard::operator_actions)) |
//!
//! For every client and every method the page shows calls/s, error %, p50
//! and p99 latency over the last interval, the breaker's state (and an
//! operator's override) with its last transitions and its window, bulkhead
//! use, retries/s and fallbacks/s, the retry budget left, the effective
//! policy, and the instances a discovered client balances over with their
//! load (in flight, round-trip estimate) and ejections. It updates in place
//! from the stream, without reloading.
//!
//! # The report (JSON)
//!
//! `/snapshot` and every `/stream` event carry one document:
//!
//! ```json
//! { "at_ms": 1767225600000, "interval_ms": 1000.4, "operator_actions": false,
//!   "clients": [ { "service": "inventory", "retry_budget_remaining": 10,
//!     "instances": [ { "id": "a", "url": "http://10.0.0.1:8080", "zone": null,
//!                      "in_flight": 1, "rtt_ms": 2.1, "ejected": false, "ejections": 0 } ],
//!     "methods": [ { "name": "stock", "verb": "GET", "path": "/stock/{sku}",
//!       "policy": { "timeout": "2s", "idempotent": true,
//!                   "retry": { "max_attempts": 3, "backoff": "50ms..1s", "on": [429, 502, 503, 504], "attempt_timeout": null },
//!                   "circuit": { "window": 20, "min_calls": 10, "failure_rate": 50, "slow_call": "2s",
//!                                "slow_call_rate": 100, "open_for": "5s", "half_open_calls": 3 },
//!                   "rate_limit": null, "bulkhead": null, "hedge": null, "log": { "level": "none", "body_limit": 4096 } },
//!       "circuit": { "state": "open", "forced": "auto", "failures": 11, "slow": 0, "calls": 20,
//!                    "transitions": [ { "at_ms": 1767225599000, "from": "closed", "to": "open" } ] },
//!       "bulkhead": null,
//!       "totals": { "calls": 1200, "failed": 310, "fallbacks": 0, "retries": 95, "p50_ms": 1.1, "p99_ms": 45.2 },
//!       "rates": { "calls_per_s": 20.0, "error_pct": 100.0, "retries_per_s": 0.0,
//!                  "fallbacks_per_s": 0.0, "p50_ms": 0.07, "p99_ms": 0.1 } } ] } ] }
//! ```
//!
//! Policies are the effective ones, written as the attributes take them;
//! durations of the live state are in milliseconds; `totals` count since
//! the client was built; `rates` (`null` in a snapshot and a stream's
//! first event) cover the calls ended since the stream's previous event;
//! latency quantiles are bucket bounds, within a factor √2; `state` is the
//! breaker's own, and `forced` an operator's override on top of it.
//!
//! # Operator actions, and why they are off
//!
//! [`Dashboard::operator_actions`] adds `POST
//! /breakers/{service}/{method}` with a JSON body `{"force": "open"}`
//! (`"close"`, `"disable"` or `"auto"`; see
//! [`Force`]), applied to the method's
//! breaker in every live client of that service, and logged at WARN. It
//! lets whoever reaches it cut a dependency off, or let every call through
//! to a dependency that is down, so it is off unless asked for; when off,
//! the route does not exist (404).
//!
//! **The router has no authentication of its own.** Mount it behind your
//! service's authentication and authorization middleware, on an internal
//! listener, and never expose it publicly: even read-only, it shows your
//! dependencies, their addresses and their health. The action only accepts
//! `Content-Type: application/json`, which a cross-site form cannot send
//! without a CORS preflight that this router never grants, and the page
//! forbids being framed; that guards against cross-site requests riding an
//! operator's cookie, not against anyone your middleware lets in. The
//! page's stream is an `EventSource`, which sends cookies and HTTP Basic
//! credentials but no custom header: authenticate the page with a session
//! cookie, Basic auth or an authenticating proxy, not a bearer token.
//!
//! axum's `nest` serves the page at the mount point itself (`/courier`,
//! not `/courier/`); the page finds its stream either way.
//!
//! # Cost
//!
//! Nothing on the call path beyond the counters of
//! [`observe::stats`](crate::observe::stats) (a few relaxed atomic adds per
//! call). Each open stream reads every client once per interval.

mod report;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::Stream;
use serde::Deserialize;

use crate::policy::circuit::Force;
use report::Sampler;

/// The page: HTML with its CSS and JavaScript inline.
const PAGE: &str = include_str!("page.html");

/// The shortest interval between two stream events.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A dashboard's settings; [`router`](Dashboard::router) turns them into
/// the routes to mount. See the [module docs](self) for what it serves.
///
/// ```
/// use std::time::Duration;
/// use courier::dashboard::Dashboard;
///
/// let routes: axum::Router = Dashboard::new()
///     .interval(Duration::from_millis(500))
///     .operator_actions(true) // only behind your authentication!
///     .router();
/// let app: axum::Router = axum::Router::new().nest("/courier", routes);
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct Dashboard {
    operator_actions: bool,
    interval: Duration,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard::new()
    }
}

impl Dashboard {
    /// A read-only dashboard with one stream event per second.
    ///
    /// ```
    /// let routes: axum::Router = courier::dashboard::Dashboard::new().router();
    /// # let _ = routes;
    /// ```
    pub fn new() -> Self {
        Dashboard {
            operator_actions: false,
            interval: Duration::from_secs(1),
        }
    }

    /// Whether to serve `POST /breakers/{service}/{method}`, which forces a
    /// breaker open, closed, disabled or back to automatic. Mount the
    /// router behind your service's authentication when this is on (see
    /// the [module docs](self#operator-actions-and-why-they-are-off)).
    ///
    /// ```
    /// let routes: axum::Router = courier::dashboard::Dashboard::new()
    ///     .operator_actions(true)
    ///     .router();
    /// # let _ = routes;
    /// ```
    ///
    /// Default is `false`: the route does not exist.
    pub fn operator_actions(mut self, enabled: bool) -> Self {
        self.operator_actions = enabled;
        self
    }

    /// How often the stream sends a report (the rates cover this
    /// interval); at least 100 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// let routes: axum::Router = courier::dashboard::Dashboard::new()
    ///     .interval(Duration::from_secs(2))
    ///     .router();
    /// # let _ = routes;
    /// ```
    ///
    /// Default is 1 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(MIN_INTERVAL);
        self
    }

    /// The routes, to [`nest`](axum::Router::nest) under a path of your
    /// service (`/courier` in the examples), behind its authentication.
    /// Generic over your router's state, which it does not use.
    ///
    /// ```
    /// #[derive(Clone)]
    /// struct AppState;
    ///
    /// let app: axum::Router<AppState> = axum::Router::new()
    ///     .nest("/courier", courier::dashboard::Dashboard::new().router());
    /// let app: axum::Router = app.with_state(AppState);
    /// # let _ = app;
    /// ```
    pub fn router<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let actions = self.operator_actions;
        let mut routes = Router::new()
            .route("/", get(page))
            .route("/stream", get(stream))
            .route("/snapshot", get(snapshot));
        if actions {
            routes = routes.route("/breakers/{service}/{method}", post(force));
        }
        routes.with_state(Arc::new(self))
    }
}

/// A read-only dashboard's routes: `Dashboard::new().router()`.
///
/// ```
/// let app: axum::Router = axum::Router::new().nest("/courier", courier::dashboard::router());
/// # let _ = app;
/// ```
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Dashboard::new().router()
}

// ===== handlers =====

type Shared = State<Arc<Dashboard>>;

async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    let headers = response.headers_mut();
    // Everything is inline; the page talks only to its own origin and may
    // not be framed (its buttons must not be clicked through another page).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn snapshot(State(dashboard): Shared) -> Response {
    let report = Sampler::default().sample(&crate::inspect::clients(), dashboard.operator_actions);
    let mut response = Json(report).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn stream(State(dashboard): Shared) -> impl IntoResponse {
    let mut ticks = tokio::time::interval(dashboard.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = reports(ticks, dashboard.operator_actions);
    (
        // Proxies that buffer (nginx) would hold the events back.
        [("x-accel-buffering", "no")],
        Sse::new(events),
    )
}

/// One event per tick (the first at once), each a report with the rates
/// since the previous one.
fn reports(
    ticks: tokio::time::Interval,
    operator_actions: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    futures_util::stream::unfold(
        (ticks, Sampler::default()),
        move |(mut ticks, mut sampler)| async move {
            ticks.tick().await;
            let report = sampler.sample(&crate::inspect::clients(), operator_actions);
            let event = SseEvent::default()
                .json_data(&report)
                .unwrap_or_else(|_| SseEvent::default().comment("report not serializable"));
            Some((Ok(event), (ticks, sampler)))
        },
    )
}

/// The operator action's body: `{"force": "open"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceRequest {
    force: Action,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Open,
    Close,
    Disable,
    Auto,
}

impl From<Action> for Force {
    fn from(action: Action) -> Self {
        match action {
            Action::Open => Force::Open,
            Action::Close => Force::Close,
            Action::Disable => Force::Disable,
            Action::Auto => Force::Auto,
        }
    }
}

async fn force(
    Path((service, method)): Path<(String, String)>,
    Json(request): Json<ForceRequest>,
) -> Response {
    let force = Force::from(request.force);
    let forced = crate::inspect::clients()
        .iter()
        .filter(|c| c.snapshot().service == service)
        .filter(|c| c.force(&method, force))
        .count();
    let breaker = format!("{service}#{method}");
    if forced == 0 {
        let body = serde_json::json!({
            "error": format!("no client has a circuit breaker named {breaker}"),
        });
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    tracing::warn!(
        target: "courier::dashboard",
        breaker = %breaker,
        force = report::force_label(force),
        clients = forced,
        "circuit breaker forced by an operator"
    );
    Json(serde_json::json!({
        "breaker": breaker,
        "force": report::force_label(force),
        "clients": forced,
    }))
    .into_response()
}

#[cfg(test)]
mod tests;
