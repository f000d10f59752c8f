use courier::{client, Error};

// A rate limit on the trait is the client's one limiter: it must name its
// rate (a method's own rate limit may take it from the trait or a config).
#[client(name = "svc")]
#[rate_limit(max_wait = "1s")]
trait Svc {
    #[get("/a")]
    #[rate_limit(per_second = 0)]
    async fn a(&self) -> Result<(), Error>;

    #[get("/b")]
    #[rate_limit(per_second = 5, burst = 2000000)]
    async fn b(&self) -> Result<(), Error>;

    #[get("/c")]
    #[rate_limit(limit_for_period = 5)]
    async fn c(&self) -> Result<(), Error>;

    #[get("/d")]
    #[rate_limit(per_second = 5, max_wait = "forever")]
    async fn d(&self) -> Result<(), Error>;
}

fn main() {}
