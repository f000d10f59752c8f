use courier::{client, Error};

#[client(name = "svc")]
#[timeout("3 parsecs")]
trait Svc {
    #[get("/a")]
    #[retry(backoff = "1s..50ms")]
    async fn a(&self) -> Result<(), Error>;

    #[get("/b")]
    #[timeout("0s")]
    async fn b(&self) -> Result<(), Error>;

    #[get("/c")]
    #[circuit_breaker(open_for = 5)]
    async fn c(&self) -> Result<(), Error>;
}

fn main() {}
