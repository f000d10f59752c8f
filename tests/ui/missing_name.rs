use courier::{client, Error};

#[client(path = "/api")]
trait Svc {
    #[get("/users")]
    async fn users(&self) -> Result<(), Error>;
}

fn main() {}
