use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[post("/a")]
    #[compress(min_size = "1 kilobyte")]
    async fn a(&self, #[body] b: &str) -> Result<(), Error>;

    #[post("/b")]
    #[compress(level = 9)]
    async fn b(&self, #[body] b: &str) -> Result<(), Error>;

    #[post("/c")]
    #[compress(min_size = "2GiB")]
    async fn c(&self, #[body] b: &str) -> Result<(), Error>;
}

fn main() {}
