//! Hedged requests: for an idempotent method, if no answer came after
//! `delay`, send another attempt (up to `max_extra` more); the first good
//! answer wins and the others are cancelled by dropping them.
//!
//! From "The Tail at Scale" (Dean and Barroso, 2013): a hedge sent at about
//! the 95th-percentile latency cuts the tail at the cost of a few percent
//! more requests. Each hedge is a full attempt (breaker, bulkhead,
//! interceptors) and takes a token from the retry budget, so hedging can
//! never multiply the load on a struggling service. The race itself runs in
//! the call pipeline (`call.rs`); non-idempotent methods never hedge.

pub use super::HedgePolicy;
