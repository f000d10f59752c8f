use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/builder")]
    async fn builder(&self) -> Result<(), Error>;
}

fn main() {}
