// Generated code must not depend on the user's imports or names: it reaches
// the runtime through `::courier::__private` and std through `::core`.
#![allow(dead_code)]

// Names that shadow what a careless expansion would use.
struct Option;
struct Result;
struct Ok;
struct Err;
struct Json;
struct RequestParts;
struct Runtime;
mod async_trait {}
mod http {}

#[::courier::client(name = "svc", path = "/api")]
trait Svc {
    #[get("/users/{id}")]
    async fn get(&self, id: u64) -> ::core::result::Result<::core::option::Option<::std::string::String>, ::courier::Error>;

    #[post("/users")]
    async fn create(&self, #[body] body: &::std::collections::BTreeMap<::std::string::String, u32>, #[header("x-key")] key: ::core::option::Option<&str>) -> ::core::result::Result<(), ::courier::Error>;
}

fn main() {
    let _ = SvcClient::builder();
}
