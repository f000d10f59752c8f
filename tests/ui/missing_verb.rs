use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    async fn users(&self) -> Result<(), Error>;
}

fn main() {}
