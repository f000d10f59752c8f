//! One client, many users: `Arc<dyn Trait>`, clones across tasks, and fakes
//! written as ordinary implementations.

use std::sync::Arc;

use courier::{Error, client};
use serde::Deserialize;
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod support;

#[derive(Debug, Deserialize, PartialEq)]
struct Greeting {
    to: String,
}

#[client(name = "greeter")]
trait Greeter {
    #[get("/hello/{name}")]
    async fn hello(&self, name: &str) -> Result<Greeting, Error>;

    /// A provided method: courier leaves it to the trait.
    async fn hello_twice(&self, name: &str) -> Result<(Greeting, Greeting), Error> {
        Ok((self.hello(name).await?, self.hello(name).await?))
    }
}

/// A fake, for the tests of code that uses a `Greeter`.
struct FakeGreeter;

#[courier::async_trait]
impl Greeter for FakeGreeter {
    async fn hello(&self, name: &str) -> Result<Greeting, Error> {
        Ok(Greeting {
            to: format!("fake {name}"),
        })
    }
}

async fn echo_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path_regex("^/hello/.*"))
        .respond_with(|req: &Request| {
            let name = req.url.path().trim_start_matches("/hello/").to_owned();
            ResponseTemplate::new(200).set_body_json(serde_json::json!({ "to": name }))
        })
        .mount(&server)
        .await;
    server
}

/// Code written against the trait, not the client.
async fn greet_all(api: Arc<dyn Greeter>, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        out.push(
            api.hello(name)
                .await
                .map(|g| g.to)
                .unwrap_or_else(|e| e.to_string()),
        );
    }
    out
}

#[tokio::test]
async fn the_client_and_a_fake_both_serve_as_arc_dyn_trait() {
    let server = echo_server().await;
    let real: Arc<dyn Greeter> = Arc::new(
        support::builder::<GreeterClient>()
            .base_url(server.uri())
            .build()
            .expect("valid"),
    );
    let fake: Arc<dyn Greeter> = Arc::new(FakeGreeter);
    assert_eq!(greet_all(real, &["ann", "bo"]).await, ["ann", "bo"]);
    assert_eq!(greet_all(fake, &["ann"]).await, ["fake ann"]);
}

#[tokio::test]
async fn provided_methods_run_on_top_of_generated_ones() {
    let server = echo_server().await;
    let c = support::builder::<GreeterClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    let (a, b) = c.hello_twice("cy").await.expect("two calls");
    assert_eq!((a.to.as_str(), b.to.as_str()), ("cy", "cy"));
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_work_from_many_tasks_at_once() {
    let server = echo_server().await;
    let client = support::builder::<GreeterClient>()
        .base_url(server.uri())
        .build()
        .expect("valid");
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.hello(&format!("n{i}")).await.map(|g| g.to) })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task ran").expect("call succeeded"));
    }
    let expected: Vec<String> = (0..32).map(|i| format!("n{i}")).collect();
    assert_eq!(answers, expected);
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 32);
}
