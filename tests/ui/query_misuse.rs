use courier::{client, Error};

#[derive(serde::Serialize)]
struct Filter {
    q: String,
}

#[client(name = "svc")]
trait Svc {
    #[get("/a")]
    async fn a(&self, #[query("f", map)] f: &Filter) -> Result<(), Error>;

    #[get("/b")]
    async fn b(&self, #[query(map, "f")] f: &Filter) -> Result<(), Error>;

    #[get("/c")]
    async fn c(&self, #[query(nested = "dots")] q: &str) -> Result<(), Error>;

    #[get("/d")]
    async fn d(&self, #[query(format = "csv")] q: u32) -> Result<(), Error>;

    #[get("/e")]
    async fn e(&self, #[query(format = "tsv")] q: &[u32]) -> Result<(), Error>;

    #[get("/f")]
    async fn f(&self, #[query(map, nested = "colons")] f: &Filter) -> Result<(), Error>;

    #[get("/g")]
    async fn g(&self, #[query(mapp)] f: &Filter) -> Result<(), Error>;

    #[get("/h")]
    async fn h(&self, #[query(map)] f: Vec<Filter>) -> Result<(), Error>;

    #[get("/i")]
    async fn i(&self, #[query(map)] f: Option<&str>) -> Result<(), Error>;

    #[get("/j")]
    async fn j(&self, #[query(format = "csv", format = "multi")] q: &[u32]) -> Result<(), Error>;
}

fn main() {}
