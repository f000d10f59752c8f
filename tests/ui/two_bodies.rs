use courier::{client, Error};

#[client(name = "svc")]
trait Svc {
    #[post("/users")]
    async fn create(&self, #[body] a: &str, #[body] b: &str) -> Result<(), Error>;

    #[post("/login")]
    async fn login(&self, #[body] a: &str, #[form] b: &[(&str, &str)]) -> Result<(), Error>;
}

fn main() {}
