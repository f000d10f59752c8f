//! Query maps (`#[query(map)]`: a `Serialize` struct's fields as the query
//! pairs) and collection formats (`#[query(format = "csv")]`), against
//! wiremock: the query string the server receives, byte for byte.

use courier::{Error, client};
use serde::Serialize;
use wiremock::{MockServer, ResponseTemplate};

mod support;
use support::{answering, received};

#[derive(Serialize)]
struct Page {
    size: u32,
    cursor: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    OnHold,
}

#[derive(Serialize)]
struct Filter {
    name: Option<String>,
    status: Status,
    tags: Vec<String>,
    page: Page,
    #[serde(rename = "min-age")]
    min_age: Option<u32>,
}

fn filter() -> Filter {
    Filter {
        name: Some("Ann Lee".into()),
        status: Status::OnHold,
        tags: vec!["a".into(), "b,c".into()],
        page: Page {
            size: 20,
            cursor: None,
        },
        min_age: None,
    }
}

#[client(name = "people")]
#[retry(disabled)]
trait People {
    #[get("/people")]
    async fn search(&self, #[query(map)] filter: &Filter) -> Result<String, Error>;

    #[get("/people")]
    async fn bracketed(
        &self,
        #[query(map, nested = "brackets", format = "csv")] filter: &Filter,
    ) -> Result<String, Error>;

    #[get("/people")]
    async fn maybe(
        &self,
        #[query] q: &str,
        #[query(map)] filter: Option<&Filter>,
    ) -> Result<String, Error>;

    #[get("/people")]
    async fn ids(
        &self,
        #[query(format = "csv")] id: &[u32],
        #[query("tag", format = "csv")] tags: Option<Vec<String>>,
    ) -> Result<String, Error>;

    #[get("/people")]
    async fn nested(
        &self,
        #[query(map, nested = "brackets")] filter: &Filter,
    ) -> Result<String, Error>;

    #[get("/people")]
    async fn any(&self, #[query(map)] filter: &serde_json::Value) -> Result<String, Error>;

    #[get("/people")]
    async fn any_bracketed(
        &self,
        #[query(map, nested = "brackets")] filter: &serde_json::Value,
    ) -> Result<String, Error>;
}

fn people(server: &MockServer) -> PeopleClient {
    support::builder::<PeopleClient>()
        .base_url(server.uri())
        .build()
        .expect("valid")
}

/// The raw query string of the last request (`None` when it had none).
async fn last_query(server: &MockServer) -> Option<String> {
    let requests = server.received_requests().await.unwrap_or_default();
    requests
        .last()
        .and_then(|r| r.url.query().map(str::to_owned))
}

#[tokio::test]
async fn a_struct_flattens_into_pairs_with_dotted_nesting() {
    let server = answering(ResponseTemplate::new(200)).await;
    let c = people(&server);
    c.search(&filter()).await.expect("sent");
    // Fields in name order; None left out; the sequence repeated (its
    // comma percent-encoded); the enum by its serde name; the nested
    // struct dotted; the renamed field (None) left out.
    assert_eq!(
        last_query(&server).await.as_deref(),
        Some("name=Ann%20Lee&page.size=20&status=on_hold&tags=a&tags=b%2Cc")
    );
}

#[tokio::test]
async fn brackets_and_csv_are_chosen_per_parameter() {
    let server = answering(ResponseTemplate::new(200)).await;
    let c = people(&server);
    let mut f = filter();
    f.min_age = Some(30);
    f.page.cursor = Some("x/y".into());
    c.bracketed(&f).await.expect("sent");
    assert_eq!(
        last_query(&server).await.as_deref(),
        Some(
            "min-age=30&name=Ann%20Lee&page%5Bcursor%5D=x%2Fy&page%5Bsize%5D=20\
             &status=on_hold&tags=a,b%2Cc"
        )
    );
}

#[tokio::test]
async fn an_absent_map_adds_nothing() {
    let server = answering(ResponseTemplate::new(200)).await;
    let c = people(&server);
    c.maybe("x", None).await.expect("sent");
    assert_eq!(last_query(&server).await.as_deref(), Some("q=x"));
    c.maybe("x", Some(&filter())).await.expect("sent");
    let query = last_query(&server).await.unwrap_or_default();
    assert!(query.starts_with("q=x&name=Ann%20Lee&"), "{query}");
}

#[tokio::test]
async fn csv_joins_a_sequence_and_an_empty_one_is_left_out() {
    let server = answering(ResponseTemplate::new(200)).await;
    let c = people(&server);
    c.ids(&[1, 2, 3], Some(vec!["x".into(), "y z".into()]))
        .await
        .expect("sent");
    assert_eq!(
        last_query(&server).await.as_deref(),
        Some("id=1,2,3&tag=x,y%20z")
    );
    c.ids(&[], None).await.expect("sent");
    assert_eq!(last_query(&server).await, None, "no `?` at all");
}

/// What has no query form is an error naming the parameter and the key,
/// and nothing is sent.
#[tokio::test]
async fn what_has_no_query_form_is_refused_before_sending() {
    let server = answering(ResponseTemplate::new(200)).await;
    let c = people(&server);
    let e = c.any(&serde_json::json!(5)).await.expect_err("a number");
    assert!(e.is_invalid_request(), "{e}");
    assert!(
        e.to_string()
            .contains("`filter` must serialize to a struct"),
        "{e}"
    );
    let nested = serde_json::json!({ "ok": 1, "rows": [{ "a": 1 }] });
    let e = c.any(&nested).await.expect_err("a sequence of structs");
    assert!(
        e.to_string()
            .contains("`rows` is a sequence holding a struct"),
        "{e}"
    );
    assert_eq!(received(&server).await, 0);
}

/// With brackets, a sequence's key is `key[]`: Rails, Rack and PHP keep
/// only the last of repeated plain keys.
#[tokio::test]
async fn brackets_write_a_sequence_as_a_list_rails_and_php_read_whole() {
    let server = answering(ResponseTemplate::new(200)).await;
    let c = people(&server);
    c.nested(&filter()).await.expect("sent");
    assert_eq!(
        last_query(&server).await.as_deref(),
        Some("name=Ann%20Lee&page%5Bsize%5D=20&status=on_hold&tags%5B%5D=a&tags%5B%5D=b%2Cc")
    );
}

/// Keys a server would misread are refused: two fields that come out as
/// one key, an empty name, a bracket in a name under brackets; a null
/// (an `Option` the macro could not see) adds nothing.
#[tokio::test]
async fn ambiguous_keys_are_refused_and_a_null_adds_nothing() {
    let server = answering(ResponseTemplate::new(200)).await;
    let c = people(&server);
    let twice = serde_json::json!({ "page.size": 1, "page": { "size": 2 } });
    let e = c.any(&twice).await.expect_err("one key from two fields");
    assert!(e.to_string().contains("`page.size`"), "{e}");
    let empty = serde_json::json!({ "a": { "": 1 } });
    let e = c.any(&empty).await.expect_err("an empty name");
    assert!(e.to_string().contains("empty name"), "{e}");
    let bracket = serde_json::json!({ "a]b": 1 });
    let e = c.any_bracketed(&bracket).await.expect_err("a bracket");
    assert!(e.to_string().contains("`a]b`"), "{e}");
    assert_eq!(received(&server).await, 0, "nothing sent");

    c.any(&serde_json::Value::Null).await.expect("sent");
    assert_eq!(last_query(&server).await, None);
}
