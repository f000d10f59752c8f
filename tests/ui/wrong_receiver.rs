use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/a")]
    async fn by_value(self) -> Result<(), Error>;

    #[get("/b")]
    async fn by_mut(&mut self) -> Result<(), Error>;

    #[get("/c")]
    async fn no_self() -> Result<(), Error>;
}

fn main() {}
