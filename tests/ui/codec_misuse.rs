use courier::codec::{Json, Text};
use courier::{Error, client};

#[client(name = "c")]
#[codec]
trait NoType {
    #[get("/a")]
    async fn a(&self) -> Result<u64, Error>;
}

#[client(name = "c")]
trait Twice {
    #[post("/a")]
    #[codec(Json)]
    #[codec(Text)]
    async fn a(&self, #[body] n: u64) -> Result<(), Error>;
}

#[client(name = "c")]
trait NothingToDo {
    #[get("/a")]
    #[codec(Text)]
    async fn raw(&self) -> Result<String, Error>;
}

#[client(name = "c")]
trait NotAType {
    #[get("/a")]
    #[codec("text/plain")]
    async fn a(&self) -> Result<u64, Error>;
}

fn main() {}
