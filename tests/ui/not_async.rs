use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/users")]
    fn users(&self) -> Result<(), Error>;
}

fn main() {}
