use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/a")]
    #[retry(max_attempts = 0)]
    async fn a(&self) -> Result<(), Error>;

    #[get("/b")]
    #[retry(max_attempts = 11)]
    async fn b(&self) -> Result<(), Error>;

    #[get("/c")]
    #[circuit_breaker(failure_rate = 0)]
    async fn c(&self) -> Result<(), Error>;

    #[get("/d")]
    #[circuit_breaker(slow_call_rate = 101)]
    async fn d(&self) -> Result<(), Error>;

    #[get("/e")]
    #[retry(on = [503, 42])]
    async fn e(&self) -> Result<(), Error>;

    #[get("/f")]
    #[timeout("2days")]
    async fn f(&self) -> Result<(), Error>;

    #[get("/g")]
    #[circuit_breaker(window = 4, min_calls = 10)]
    async fn g(&self) -> Result<(), Error>;

    #[get("/h")]
    #[log(level = "loud")]
    async fn h(&self) -> Result<(), Error>;
}

fn main() {}
