use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/users")]
    #[auth(basic)]
    async fn users(&self) -> Result<(), Error>;

    #[get("/admins")]
    #[auth]
    async fn admins(&self) -> Result<(), Error>;

    #[get("/health")]
    #[auth(none)]
    #[auth(none)]
    async fn health(&self) -> Result<(), Error>;
}

fn main() {}
