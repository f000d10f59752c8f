use courier::codec::{Binary, Text};
use courier::{Error, client};

struct Point {
    x: i32,
}

#[derive(serde::Deserialize)]
struct Answer {
    ok: bool,
}

#[client(name = "c")]
trait Points {
    /// `Text` writes `Display` values; `Point` is not one.
    #[post("/points")]
    #[codec(Text)]
    async fn add(&self, #[body] p: Point) -> Result<(), Error>;

    /// `Binary` reads bytes, not a struct.
    #[get("/answer")]
    #[codec(Binary)]
    async fn answer(&self) -> Result<Answer, Error>;
}

fn main() {}
