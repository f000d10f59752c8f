use courier::multipart::StreamPart;
use courier::{BodyStream, Error, client};

#[client(name = "c")]
trait Store {
    /// A stream is read once: it cannot be sent again.
    #[put("/objects/{key}")]
    #[retry(max_attempts = 3)]
    async fn put(&self, key: &str, #[body] data: BodyStream) -> Result<(), Error>;

    /// Nor hedged.
    #[put("/objects/{key}")]
    #[hedge(delay = "50ms")]
    async fn put_hedged(&self, key: &str, #[body] data: BodyStream) -> Result<(), Error>;

    /// It is given by value.
    #[put("/objects/{key}")]
    async fn put_ref(&self, key: &str, #[body] data: &BodyStream) -> Result<(), Error>;

    /// A streamed multipart part is read once too.
    #[post("/uploads")]
    #[idempotent]
    #[retry(max_attempts = 2)]
    async fn upload(&self, #[multipart] file: StreamPart) -> Result<(), Error>;
}

fn main() {}
