use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/users/{id}")]
    async fn user(&self, id: u64, verbose: bool) -> Result<(), Error>;
}

fn main() {}
