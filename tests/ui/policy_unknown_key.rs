use courier::{client, Error};

#[client(name = "svc")]
#[circuit_breaker(failure_rate = 50, open_after = "5s")]
trait Svc {
    #[get("/a")]
    #[retry(max_attemps = 3)]
    async fn a(&self) -> Result<(), Error>;

    #[get("/b")]
    #[retry(disabled, max_attempts = 2)]
    async fn b(&self) -> Result<(), Error>;

    #[get("/c")]
    #[timeout("1s")]
    #[timeout("2s")]
    async fn c(&self) -> Result<(), Error>;
}

fn main() {}
