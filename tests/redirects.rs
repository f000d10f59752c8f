//! Redirects: followed within the same origin by default; another origin's
//! redirect is the answer; when following anywhere is allowed, no header
//! the caller, the defaults or an interceptor set goes along, and no
//! `Referer`.

use courier::{Error, ErrorKind, Redirects, Response, client};
use http::StatusCode;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::received;

#[client(name = "docs")]
#[retry(disabled)]
#[circuit_breaker(disabled)]
trait Docs {
    #[get("/old")]
    async fn old(&self, #[header("authorization")] auth: &str) -> Result<String, Error>;

    #[get("/away")]
    async fn away(
        &self,
        #[query] token: &str,
        #[header("authorization")] auth: &str,
    ) -> Result<String, Error>;

    #[get("/away")]
    async fn away_raw(&self, #[query] token: &str) -> Result<Response<()>, Error>;

    #[post("/submit")]
    async fn submit(&self, #[body] form: &serde_json::Value) -> Result<String, Error>;

    #[get("/loop")]
    async fn looping(&self) -> Result<String, Error>;
}

fn redirect(status: u16, to: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("location", to)
}

/// Origin A redirects `/old` to `/new` (same origin) and `/away` to B.
async fn origins() -> (MockServer, MockServer) {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    Mock::given(path("/old"))
        .respond_with(redirect(302, "/new"))
        .mount(&a)
        .await;
    Mock::given(path("/new"))
        .respond_with(ResponseTemplate::new(200).set_body_string("moved"))
        .mount(&a)
        .await;
    Mock::given(path("/away"))
        .respond_with(redirect(302, &format!("{}/landing", b.uri())))
        .mount(&a)
        .await;
    Mock::given(path("/landing"))
        .respond_with(ResponseTemplate::new(200).set_body_string("elsewhere"))
        .mount(&b)
        .await;
    (a, b)
}

fn client(a: &MockServer, redirects: Option<Redirects>) -> DocsClient {
    let mut builder = support::builder::<DocsClient>()
        .base_url(a.uri())
        .default_header("x-api-key", "hunter2")
        .interceptor(
            |req: &mut courier::Outgoing<'_>| -> Result<(), courier::BoxError> {
                req.set_header("x-signed", "by-interceptor")?;
                Ok(())
            },
        );
    if let Some(r) = redirects {
        builder = builder.redirects(r);
    }
    builder.build().expect("valid")
}

fn header(request: &wiremock::Request, name: &str) -> Option<String> {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn a_same_origin_redirect_is_followed_with_the_callers_headers() {
    let (a, _b) = origins().await;
    let docs = client(&a, None);
    assert_eq!(docs.old("Bearer t").await.ok().as_deref(), Some("moved"));
    let requests = a.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 2);
    let new = &requests[1];
    assert_eq!(new.url.path(), "/new");
    assert_eq!(header(new, "authorization").as_deref(), Some("Bearer t"));
    assert_eq!(header(new, "x-api-key").as_deref(), Some("hunter2"));
    assert_eq!(header(new, "x-signed").as_deref(), Some("by-interceptor"));
}

/// The defect: reqwest followed a redirect to another host and took
/// `x-api-key` (a default header) and a `Referer` with the original query
/// string along. By default such a redirect is now the answer.
#[tokio::test]
async fn a_redirect_to_another_origin_is_not_followed_by_default() {
    let (a, b) = origins().await;
    let docs = client(&a, None);
    let err = docs.away("secret", "Bearer t").await.expect_err("302");
    assert_eq!(err.kind(), ErrorKind::Status, "{err}");
    assert_eq!(err.status(), Some(StatusCode::FOUND));
    assert!(err.to_string().contains("another origin"), "{err}");
    assert_eq!(err.attempts(), 1);
    assert_eq!(received(&b).await, 0, "nothing reached the other origin");

    // A `Response<()>` sees the 3xx and where it points.
    let raw = docs.away_raw("secret").await.expect("the 302 itself");
    assert_eq!(raw.status(), StatusCode::FOUND);
    let location = raw.headers().get("location").and_then(|v| v.to_str().ok());
    assert_eq!(location, Some(format!("{}/landing", b.uri()).as_str()));
    assert_eq!(received(&b).await, 0);
}

#[tokio::test]
async fn following_anywhere_sends_none_of_the_callers_headers_elsewhere() {
    let (a, b) = origins().await;
    let docs = client(&a, Some(Redirects::any(3)));
    assert_eq!(
        docs.away("secret", "Bearer t").await.ok().as_deref(),
        Some("elsewhere")
    );
    let landed = b.received_requests().await.unwrap_or_default();
    assert_eq!(landed.len(), 1);
    let landed = &landed[0];
    for secret in [
        "authorization",
        "x-api-key",
        "x-signed",
        "referer",
        "cookie",
    ] {
        assert_eq!(header(landed, secret), None, "{secret} went along");
    }
    assert!(!format!("{:?}", landed.headers).contains("hunter2"));
    assert!(landed.url.query().is_none(), "the query stayed behind");
}

/// The `Host` values that reached `server`, one list per request.
async fn hosts(server: &MockServer) -> Vec<Vec<String>> {
    let requests = server.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .map(|r| {
            r.headers
                .get_all("host")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        })
        .collect()
}

/// Every request carries exactly one `Host`, naming the origin it goes to:
/// the base's (courier writes it, made once per client, on an `http://`
/// origin), the same after a hop within the origin, and the other origin's
/// after a hop there (written by hyper-util, as before).
#[tokio::test]
async fn every_request_names_the_origin_it_goes_to_in_one_host_header() {
    let (a, b) = origins().await;
    let docs = client(&a, Some(Redirects::any(3)));
    assert_eq!(docs.old("Bearer t").await.ok().as_deref(), Some("moved"));
    assert_eq!(
        docs.away("secret", "Bearer t").await.ok().as_deref(),
        Some("elsewhere")
    );
    let (host_a, host_b) = (a.address().to_string(), b.address().to_string());
    assert_ne!(host_a, host_b);
    assert_eq!(
        hosts(&a).await,
        vec![vec![host_a.clone()]; 3],
        "/old, /new, /away"
    );
    assert_eq!(hosts(&b).await, vec![vec![host_b]], "/landing");
    // A `Host` the caller set is kept, not doubled.
    let own = support::builder::<DocsClient>()
        .base_url(a.uri())
        .default_header("host", "gw.example")
        .build()
        .expect("valid");
    assert_eq!(own.old("Bearer t").await.ok().as_deref(), Some("moved"));
    let seen = hosts(&a).await;
    assert_eq!(
        seen[3..],
        [vec!["gw.example".to_owned()], vec!["gw.example".to_owned()]]
    );
}

#[tokio::test]
async fn a_303_turns_a_post_into_a_get_without_the_body() {
    let a = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/submit"))
        .respond_with(redirect(303, "/result"))
        .mount(&a)
        .await;
    Mock::given(method("GET"))
        .and(path("/result"))
        .respond_with(ResponseTemplate::new(200).set_body_string("done"))
        .mount(&a)
        .await;
    let docs = client(&a, None);
    let form = serde_json::json!({ "title": "x" });
    assert_eq!(docs.submit(&form).await.ok().as_deref(), Some("done"));
    let requests = a.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].body.is_empty());
    assert_eq!(header(&requests[1], "content-type"), None);
}

#[tokio::test]
async fn a_redirect_loop_stops_at_the_limit_and_none_follows_nothing() {
    let a = MockServer::start().await;
    Mock::given(path("/loop"))
        .respond_with(redirect(302, "/loop"))
        .mount(&a)
        .await;
    Mock::given(path("/old"))
        .respond_with(redirect(301, "/new"))
        .mount(&a)
        .await;
    let docs = client(&a, None);
    let err = docs.looping().await.expect_err("loop");
    assert!(err.to_string().contains("too many redirects"), "{err}");
    assert_eq!(received(&a).await, 6, "the request and 5 hops");

    let strict = client(&a, Some(Redirects::none()));
    let err = strict.old("Bearer t").await.expect_err("301 not followed");
    assert_eq!(err.status(), Some(StatusCode::MOVED_PERMANENTLY));
    assert_eq!(received(&a).await, 7);
}
