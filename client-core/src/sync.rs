//! The atomics and locks the lock-free state machines are written against.
//!
//! Here they are std's. The model-checking tests (`client-core/tests/loom.rs`)
//! compile the same state-machine files against loom's types instead, by
//! including them with `#[path]` next to a `sync` module of their own; so
//! a state-machine file names its atomics only as `crate::sync::…` and
//! depends on nothing else of the crate.

pub(crate) use std::sync::Mutex;
pub(crate) use std::sync::atomic;
