use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[post("/orders")]
    #[retry(max_attempts = 3)]
    async fn create(&self, #[body] order: &str) -> Result<(), Error>;

    #[patch("/orders/{id}")]
    #[hedge(delay = "50ms")]
    async fn update(&self, id: u64, #[body] order: &str) -> Result<(), Error>;

    // Fine: marked idempotent, or retry turned off.
    #[post("/orders/{id}/confirm")]
    #[idempotent]
    #[retry(max_attempts = 5)]
    async fn confirm(&self, id: u64) -> Result<(), Error>;

    #[post("/orders/{id}/cancel")]
    #[retry(disabled)]
    async fn cancel(&self, id: u64) -> Result<(), Error>;
}

fn main() {}
