//! Compressed request bodies (`#[compress]`, `#[compress(min_size = …)]`,
//! `compress.*` in the config): what the server receives, decoded with
//! flate2, against wiremock.

use std::io::Read as _;

use courier::{Config, Error, Inspect, client};
use serde::Serialize;
use wiremock::{MockServer, ResponseTemplate};

mod support;
use support::answering;

#[derive(Serialize)]
struct Report {
    lines: Vec<String>,
}

fn report(lines: usize) -> Report {
    Report {
        lines: (0..lines)
            .map(|i| format!("line {i} of the report"))
            .collect(),
    }
}

#[client(name = "uploads")]
#[retry(disabled)]
#[compress(min_size = "1KiB")]
trait Uploads {
    /// The trait's default: compressed from 1 KiB.
    #[post("/reports")]
    async fn send(&self, #[body] report: &Report) -> Result<(), Error>;

    /// Already encoded by the caller: never compressed twice.
    #[post("/reports")]
    async fn send_encoded(
        &self,
        #[body] report: &Report,
        #[header("Content-Encoding")] encoding: &str,
    ) -> Result<(), Error>;

    /// Opted out.
    #[post("/reports")]
    #[compress(disabled)]
    async fn send_plain(&self, #[body] report: &Report) -> Result<(), Error>;

    /// A retried call sends the same compressed body every time.
    #[put("/reports/{id}")]
    #[retry(max_attempts = 2, backoff = "1ms..2ms")]
    async fn replace(&self, id: u32, #[body] report: &Report) -> Result<(), Error>;
}

fn uploads(server: &MockServer) -> UploadsClient {
    support::builder::<UploadsClient>()
        .base_url(server.uri())
        .build()
        .expect("valid")
}

/// Each request's `Content-Encoding` and its body as JSON (gunzipped when
/// it says gzip).
async fn received(server: &MockServer) -> Vec<(Option<String>, serde_json::Value)> {
    let requests = server.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .map(|r| {
            let encoding = r
                .headers
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            if encoding.as_deref() == Some("gzip") {
                let _ = flate2::read::GzDecoder::new(&r.body[..]).read_to_end(&mut body);
            } else {
                body = r.body.clone();
            }
            (encoding, serde_json::from_slice(&body).unwrap_or_default())
        })
        .collect()
}

fn json(report: &Report) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_default()
}

#[tokio::test]
async fn a_body_over_min_size_is_sent_gzipped_and_a_small_one_as_it_is() {
    let server = answering(ResponseTemplate::new(204)).await;
    let c = uploads(&server);
    let (big, small) = (report(100), report(2));
    c.send(&big).await.expect("sent");
    c.send(&small).await.expect("sent");
    let got = received(&server).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (Some("gzip".into()), json(&big)));
    assert_eq!(got[1], (None, json(&small)), "under 1 KiB");
    let requests = server.received_requests().await.unwrap_or_default();
    let wire = requests.first().map_or(0, |r| r.body.len());
    let plain = serde_json::to_vec(&big).map_or(0, |b| b.len());
    assert!(wire * 4 < plain, "{wire} bytes on the wire for {plain}");
}

#[tokio::test]
async fn never_twice_never_when_opted_out_and_the_same_on_every_attempt() {
    let server = MockServer::start().await;
    support::fail_then_ok(&server, "/reports/7", 503, 1).await;
    wiremock::Mock::given(wiremock::matchers::path("/reports"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let c = uploads(&server);
    let big = report(100);
    c.send_encoded(&big, "identity").await.expect("sent");
    c.send_plain(&big).await.expect("sent");
    c.replace(7, &big).await.expect("retried");
    let got = received(&server).await;
    assert_eq!(got.len(), 4);
    assert_eq!(got[0], (Some("identity".into()), json(&big)), "not twice");
    assert_eq!(got[1], (None, json(&big)), "opted out");
    assert_eq!(got[2], (Some("gzip".into()), json(&big)), "attempt 1");
    assert_eq!(got[3], got[2], "attempt 2, the same");
}

#[tokio::test]
async fn the_config_switches_it_and_sets_the_size() {
    let server = answering(ResponseTemplate::new(204)).await;
    let config = Config::from_toml_str(
        "[clients.uploads.methods.send]\ncompress.min_size = \"64KiB\"\n\
         [clients.uploads.methods.send_plain]\ncompress.min_size = 16\n",
    )
    .expect("valid");
    let c = support::builder::<UploadsClient>()
        .base_url(server.uri())
        .config(&config)
        .build()
        .expect("valid");
    assert_eq!(
        c.method_policy("send").and_then(|p| p.compress),
        Some(64 << 10)
    );
    let big = report(100);
    c.send(&big).await.expect("sent");
    c.send_plain(&big).await.expect("sent");
    let got = received(&server).await;
    assert_eq!(got[0].0, None, "under the config's 64 KiB");
    assert_eq!(got[1].0.as_deref(), Some("gzip"), "the config turned it on");
}
