use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/users/{id}/posts/{post}")]
    async fn post(&self, id: u64) -> Result<(), Error>;
}

fn main() {}
