use courier::multipart::Part;
use courier::{Error, client};

#[client(name = "c")]
trait Uploads {
    /// Bytes are one part: a `Vec<u8>` would be a part per byte.
    #[post("/a")]
    async fn raw(&self, #[multipart] data: Vec<u8>) -> Result<(), Error>;

    /// A multipart body is the body.
    #[post("/b")]
    async fn both(&self, #[body] meta: &str, #[multipart] file: Part) -> Result<(), Error>;
}

fn main() {}
