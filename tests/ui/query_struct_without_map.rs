use courier::{client, Error};

#[derive(serde::Serialize)]
struct Filter {
    q: String,
}

#[client(name = "svc")]
trait Svc {
    #[get("/a")]
    async fn a(&self, #[query] filter: &Filter) -> Result<(), Error>;
}

fn main() {}
