//! Fallback, Hystrix-style: when a call fails because the dependency failed
//! or is protected (timeout, connect, 5xx, open circuit, full bulkhead,
//! exhausted retry budget: see
//! [`classify::is_fallback_eligible`](super::classify::is_fallback_eligible)),
//! the fallback's same method is called with the same arguments and its
//! result returned. Never for 4xx or decode errors: those are the caller's
//! mistakes or bugs, and hiding them behind a default answer would make them
//! invisible.
//!
//! A fallback is any implementation of the client trait (a cache, defaults,
//! another region's client), given to the builder with `.fallback(…)`, or
//! made per failure by `.fallback_factory(|cause| …)`, which sees the error.

use std::fmt;
use std::sync::Arc;

use crate::Error;

use super::classify::is_fallback_eligible;

type Factory<A> = dyn Fn(&Error) -> Arc<A> + Send + Sync;

/// Where a client's fallback comes from.
pub enum Fallback<A: ?Sized> {
    /// One fallback for every failure.
    Instance(Arc<A>),
    /// A fallback made for each failure, seeing its cause.
    Factory(Arc<Factory<A>>),
}

impl<A: ?Sized> Fallback<A> {
    /// The fallback to answer for a call that failed with `cause`, if the
    /// cause is one a fallback may hide.
    pub fn for_error(&self, cause: &Error) -> Option<Arc<A>> {
        if !is_fallback_eligible(cause) {
            return None;
        }
        Some(match self {
            Fallback::Instance(api) => Arc::clone(api),
            Fallback::Factory(make) => make(cause),
        })
    }
}

impl<A: ?Sized> Clone for Fallback<A> {
    fn clone(&self) -> Self {
        match self {
            Fallback::Instance(a) => Fallback::Instance(Arc::clone(a)),
            Fallback::Factory(f) => Fallback::Factory(Arc::clone(f)),
        }
    }
}

impl<A: ?Sized> fmt::Debug for Fallback<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fallback::Instance(_) => "Fallback::Instance",
            Fallback::Factory(_) => "Fallback::Factory",
        })
    }
}
