use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/users/{id")]
    async fn unclosed(&self, id: u64) -> Result<(), Error>;

    #[get("/users/{}")]
    async fn empty(&self) -> Result<(), Error>;

    #[get("/users/{id}/{id}")]
    async fn twice(&self, id: u64) -> Result<(), Error>;

    #[get("/users?active=true")]
    async fn query(&self) -> Result<(), Error>;

    #[get("users")]
    async fn relative(&self) -> Result<(), Error>;
}

fn main() {}
