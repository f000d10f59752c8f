//! A loopback HTTP server that fails on purpose, to test a client against
//! the faults of real networks from inside `cargo test` (feature
//! `testing`).
//!
//! A resilient client is only as good as its handling of failures, and the
//! failures that matter are hard to produce with a well-behaved mock: a
//! service that accepts and never answers, a connection reset halfway
//! through a body, headers that arrive a byte a second, a body that never
//! ends. [`FaultServer`] produces each of them exactly, one [`Fault`] per
//! request, and counts the connections and requests it saw, so a test can
//! assert what the client did in numbers: how many attempts, on how many
//! connections, with which error.
//!
//! Toxiproxy does this as a separate proxy server; this runs in the test's
//! own tokio runtime, on `127.0.0.1` only, and stops when dropped.
//!
//! ```
//! use std::time::Duration;
//! use courier::testing::{Fault, FaultServer};
//! use courier::{client, Error, ErrorKind};
//!
//! #[client(name = "inventory")]
//! #[timeout("2s")]
//! #[retry(max_attempts = 3, backoff = "10ms..50ms")]
//! trait Inventory {
//!     #[get("/stock/{sku}")]
//!     async fn stock(&self, sku: &str) -> Result<String, Error>;
//!
//!     #[get("/stock/{sku}")]
//!     #[timeout("200ms")]
//!     async fn stock_now(&self, sku: &str) -> Result<String, Error>;
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = FaultServer::start().await?;
//! let inventory = InventoryClient::builder().base_url(server.url()).build()?;
//!
//! // Two 503s, then an answer: a GET is retried, three requests in all,
//! // on one kept-alive connection.
//! server
//!     .script([Fault::status(503), Fault::status(503)])
//!     .then(Fault::ok("12"));
//! assert_eq!(inventory.stock("sku-1").await?, "12");
//! assert_eq!(server.requests(), 3);
//! assert_eq!(server.connections(), 1);
//!
//! // A hung service: only the deadline ends the call.
//! server.set(Fault::black_hole());
//! let err = inventory.stock_now("sku-1").await.unwrap_err();
//! assert!(err.is_timeout());
//!
//! // A response that breaks off after its headers.
//! server.set(Fault::ok("x".repeat(1000)).reset_after_headers());
//! let err = inventory.stock("sku-1").await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Body);
//! assert_eq!(err.attempts(), 3);
//! # Ok(()) }
//! ```
//!
//! # Faults
//!
//! | fault | the server | the client sees |
//! |---|---|---|
//! | [`Fault::ok`], [`Fault::json`], [`Fault::status`] | answers (with [`retry_after`](Fault::retry_after), [`header`](Fault::header), [`body`](Fault::body), [`chunked`](Fault::chunked)) | a response |
//! | [`delay`](Fault::delay)`(d)` on any fault | waits `d` after reading the request, then does the rest | a slow answer |
//! | [`Fault::black_hole`] | reads the request, never answers, keeps the connection open | a timeout |
//! | [`Fault::refuse`] | resets (RST) the connection as soon as it is accepted | a transport error |
//! | [`FaultServer::refusing`] | (a port where nothing listens) | a connect error |
//! | [`Fault::close`] | reads the request, closes the connection (FIN) | a transport error |
//! | [`Fault::reset_before_headers`] | reads the request, resets (RST) | a transport error |
//! | [`reset_after_headers`](Fault::reset_after_headers) | sends the head and half the body, resets | a body error |
//! | [`trickle_headers`](Fault::trickle_headers)`(every)` | sends the head a byte at a time | a timeout, or a slow answer |
//! | [`trickle_body`](Fault::trickle_body)`(every)` | sends the body a byte at a time | a timeout, or a slow answer |
//! | [`Fault::garbage`] | sends bytes that are not HTTP, closes | a transport error |
//! | [`endless_body`](Fault::endless_body) | streams a chunked body that never ends | the response size limit |
//! | [`oversized_body`](Fault::oversized_body)`(n)` | sends `n` filler bytes, declared or [`chunked`](Fault::chunked) | the response size limit |
//!
//! # Plans and counts
//!
//! [`set`](FaultServer::set) answers every request alike;
//! [`script`](FaultServer::script) answers the next requests one fault each,
//! then the default (`.then(…)`); [`on`](FaultServer::on) gives one path a
//! plan of its own. [`requests`](FaultServer::requests),
//! [`connections`](FaultServer::connections),
//! [`requests_to`](FaultServer::requests_to) and
//! [`received`](FaultServer::received) say what arrived;
//! [`wait_for_requests`](FaultServer::wait_for_requests) and
//! [`wait_until_idle`](FaultServer::wait_until_idle) wait for it, so a test
//! never sleeps and hopes.
//!
//! The server speaks HTTP/1.1 only (no TLS, no HTTP/2), keeps connections
//! alive as the client asks, and reads request bodies sent with a
//! `Content-Length` or chunked (up to 16 MiB, heads up to 64 KiB; larger is
//! answered 413 or 431). It is written on tokio's sockets rather than on
//! hyper because it has to send what a correct HTTP library will not.

mod conn;
mod fault;
mod server;
#[cfg(test)]
mod tests;

pub use conn::Received;
pub use fault::Fault;
pub use server::{ClosedPort, FaultServer, Route, Scripted};
