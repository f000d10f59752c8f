//! What goes on the wire: every verb and parameter kind, checked against the
//! exact request a wiremock server received.

use courier::{Error, client};
use serde::Serialize;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

#[derive(Serialize)]
struct NewUser<'a> {
    name: &'a str,
    tags: Vec<&'a str>,
}

#[derive(Serialize)]
struct Login<'a> {
    user: &'a str,
    note: &'a str,
}

/// A `Display` type that is not a string, to show path params take any.
enum Region {
    Eu,
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Region::Eu => f.write_str("eu west"),
        }
    }
}

#[client(name = "wire", path = "/api/v1")]
trait Wire {
    #[get("/users/{id}")]
    async fn get(&self, id: u64) -> Result<(), Error>;

    #[post("/users")]
    async fn post(&self, #[body] user: &NewUser<'_>) -> Result<(), Error>;

    #[put("/users/{id}")]
    async fn put(&self, id: u64, #[body] user: NewUser<'_>) -> Result<(), Error>;

    #[patch("/users/{id}")]
    async fn patch(&self, id: u64, #[form] login: &Login<'_>) -> Result<(), Error>;

    #[delete("/users/{id}")]
    async fn delete(&self, id: u64) -> Result<(), Error>;

    #[head("/users/{id}")]
    async fn head(&self, id: u64) -> Result<(), Error>;

    #[get("/files/{name}")]
    async fn file(&self, name: &str) -> Result<(), Error>;

    #[get("/regions/{region}/v{version}.json")]
    async fn region(&self, region: Region, version: u32) -> Result<(), Error>;

    #[get("/things/{thing}")]
    async fn renamed(&self, #[path("thing")] id: &str) -> Result<(), Error>;

    #[get("/search")]
    async fn search(
        &self,
        #[query] q: &str,
        #[query("p")] page: Option<u32>,
        #[query] tag: &[&str],
        #[query] extra: Option<Vec<String>>,
    ) -> Result<(), Error>;

    #[get("/echo")]
    async fn headers(
        &self,
        #[header("X-Request-Id")] id: &str,
        #[header("X-Tenant")] tenant: Option<&str>,
        #[header("X-Count")] count: u32,
    ) -> Result<(), Error>;

    #[get("/json")]
    async fn json(&self) -> Result<serde_json::Value, Error>;
}

async fn server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("null"))
        .mount(&server)
        .await;
    server
}

fn client(server: &MockServer) -> WireClient {
    support::builder::<WireClient>()
        .base_url(server.uri())
        .build()
        .expect("valid settings")
}

/// The single request the server received.
async fn only(server: &MockServer) -> wiremock::Request {
    let mut requests = server.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 1, "expected exactly one request");
    requests.remove(0)
}

/// The request target as sent: path plus raw query.
fn target(req: &wiremock::Request) -> String {
    match req.url.query() {
        Some(q) => format!("{}?{q}", req.url.path()),
        None => req.url.path().to_owned(),
    }
}

fn header<'a>(req: &'a wiremock::Request, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn each_verb_sends_its_method_and_path() {
    type Call = for<'a> fn(&'a WireClient) -> futures::future::BoxFuture<'a, Result<(), Error>>;
    let cases: [(&str, &str, Call); 6] = [
        ("GET", "/api/v1/users/7", |c| Box::pin(c.get(7))),
        ("POST", "/api/v1/users", |c| {
            Box::pin(async move {
                c.post(&NewUser {
                    name: "a",
                    tags: vec![],
                })
                .await
            })
        }),
        ("PUT", "/api/v1/users/7", |c| {
            Box::pin(c.put(
                7,
                NewUser {
                    name: "a",
                    tags: vec![],
                },
            ))
        }),
        ("PATCH", "/api/v1/users/7", |c| {
            Box::pin(async move {
                c.patch(
                    7,
                    &Login {
                        user: "a",
                        note: "",
                    },
                )
                .await
            })
        }),
        ("DELETE", "/api/v1/users/7", |c| Box::pin(c.delete(7))),
        ("HEAD", "/api/v1/users/7", |c| Box::pin(c.head(7))),
    ];
    for (verb, path, call) in cases {
        let server = server().await;
        call(&client(&server)).await.expect(verb);
        let req = only(&server).await;
        assert_eq!(req.method.as_str(), verb);
        assert_eq!(target(&req), path, "{verb}");
    }
}

#[tokio::test]
async fn path_params_are_encoded_as_one_segment() {
    // Why: a value with `/`, `?` or `#` must not add segments, start a query
    // or cut the URL; the server must see exactly one segment.
    let cases = [
        ("a/b", "/api/v1/files/a%2Fb"),
        ("a b", "/api/v1/files/a%20b"),
        ("q?x=1#frag", "/api/v1/files/q%3Fx%3D1%23frag"),
        ("100%", "/api/v1/files/100%25"),
        ("naïve", "/api/v1/files/na%C3%AFve"),
        ("...", "/api/v1/files/..."),
        ("a.b-c_d~e", "/api/v1/files/a.b-c_d~e"),
    ];
    for (value, expected) in cases {
        let server = server().await;
        client(&server).file(value).await.expect(value);
        assert_eq!(target(&only(&server).await), expected, "{value:?}");
    }
}

#[tokio::test]
async fn any_display_type_fills_a_placeholder_even_mid_segment() {
    let server = server().await;
    let c = client(&server);
    c.region(Region::Eu, 3).await.expect("sent");
    c.renamed("x/y").await.expect("sent");
    let reqs = server.received_requests().await.unwrap_or_default();
    let targets: Vec<String> = reqs.iter().map(target).collect();
    assert_eq!(
        targets,
        ["/api/v1/regions/eu%20west/v3.json", "/api/v1/things/x%2Fy"]
    );
}

#[tokio::test]
async fn query_params_optional_repeated_and_encoded() {
    let server = server().await;
    let c = client(&server);
    c.search("a b&c=d+e", Some(2), &["x", "y/z"], None)
        .await
        .expect("sent");
    c.search("", None, &[], Some(vec!["1".into(), "2".into()]))
        .await
        .expect("sent");
    let reqs = server.received_requests().await.unwrap_or_default();
    let targets: Vec<String> = reqs.iter().map(target).collect();
    assert_eq!(
        targets,
        [
            "/api/v1/search?q=a%20b%26c%3Dd%2Be&p=2&tag=x&tag=y%2Fz",
            "/api/v1/search?q=&extra=1&extra=2",
        ]
    );
}

#[tokio::test]
async fn header_params_and_default_headers() {
    let server = server().await;
    let c = support::builder::<WireClient>()
        .base_url(server.uri())
        .default_header("X-Caller", "billing")
        .default_header("X-Tenant", "default-tenant")
        .build()
        .expect("valid");
    c.headers("req-1", Some("acme"), 3).await.expect("sent");
    c.headers("req-2", None, 4).await.expect("sent");
    let reqs = server.received_requests().await.unwrap_or_default();
    assert_eq!(reqs.len(), 2);
    assert_eq!(header(&reqs[0], "x-request-id"), Some("req-1"));
    assert_eq!(header(&reqs[0], "x-count"), Some("3"));
    assert_eq!(header(&reqs[0], "x-caller"), Some("billing"));
    // A call's own header wins over the default of the same name...
    assert_eq!(header(&reqs[0], "x-tenant"), Some("acme"));
    // ...and the default applies when the call leaves it out.
    assert_eq!(header(&reqs[1], "x-tenant"), Some("default-tenant"));
    assert_eq!(header(&reqs[1], "x-request-id"), Some("req-2"));
    assert_eq!(
        reqs[0].headers.get_all("x-tenant").iter().count(),
        1,
        "the default must not be sent next to the call's value"
    );
}

#[tokio::test]
async fn json_body_bytes_and_content_type() {
    let server = server().await;
    client(&server)
        .post(&NewUser {
            name: "Zoë \"Z\"",
            tags: vec!["a", "b"],
        })
        .await
        .expect("sent");
    let req = only(&server).await;
    assert_eq!(header(&req, "content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8_lossy(&req.body),
        r#"{"name":"Zoë \"Z\"","tags":["a","b"]}"#
    );
}

#[tokio::test]
async fn form_body_bytes_and_content_type() {
    let server = server().await;
    client(&server)
        .patch(
            1,
            &Login {
                user: "a b",
                note: "x&y=z",
            },
        )
        .await
        .expect("sent");
    let req = only(&server).await;
    assert_eq!(
        header(&req, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8_lossy(&req.body),
        "user=a+b&note=x%26y%3Dz"
    );
}

#[tokio::test]
async fn requests_without_body_have_none_and_json_returns_ask_for_json() {
    let server = server().await;
    let c = client(&server);
    c.get(1).await.expect("sent");
    c.json().await.expect("sent");
    let reqs = server.received_requests().await.unwrap_or_default();
    assert!(reqs[0].body.is_empty());
    assert_eq!(header(&reqs[0], "content-type"), None);
    // `()` takes any format (reqwest's default); a JSON return type asks for JSON.
    assert_eq!(header(&reqs[0], "accept"), Some("*/*"));
    assert_eq!(header(&reqs[1], "accept"), Some("application/json"));
}

#[tokio::test]
async fn base_url_path_prefix_is_kept() {
    let server = server().await;
    let c = support::builder::<WireClient>()
        .base_url(format!("{}/gateway/", server.uri()))
        .build()
        .expect("valid");
    c.get(5).await.expect("sent");
    assert_eq!(target(&only(&server).await), "/gateway/api/v1/users/5");
}
