use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/users")]
    async fn users(&self, #[querry] name: &str) -> Result<(), Error>;
}

fn main() {}
