use courier::{Error, client};

struct Scan {
    pages: u32,
}

#[client(name = "c")]
trait Uploads {
    #[post("/scans")]
    async fn upload(&self, #[multipart] scan: Scan) -> Result<(), Error>;
}

fn main() {}
