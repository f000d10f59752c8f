use courier::{client, Error};

struct Id;

#[client(name = "svc")]
trait Svc {
    #[get("/users/{id}")]
    async fn user(&self, id: Id) -> Result<(), Error>;
}

fn main() {}
