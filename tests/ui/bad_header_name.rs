use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[get("/a")]
    async fn a(&self, #[header("X Bad")] v: &str) -> Result<(), Error>;
}

fn main() {}
