use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/a")]
    async fn plain(&self) -> u32;

    #[get("/b")]
    async fn borrowed(&self) -> Result<&'static str, Error>;

    #[get("/c")]
    async fn nothing(&self);

    #[head("/d")]
    async fn head_body(&self) -> Result<String, Error>;
}

fn main() {}
