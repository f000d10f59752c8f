use courier::{client, Error};

#[client(name = "svc", base = "http://x")]
trait Svc {
    #[get("/users")]
    async fn users(&self) -> Result<(), Error>;
}

fn main() {}
