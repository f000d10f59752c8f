use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[gett("/users")]
    async fn users(&self) -> Result<(), Error>;
}

fn main() {}
